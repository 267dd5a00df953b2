"""Start `python launch.py` in a subprocess on a free port and wait for its URL (for app tests)."""

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
URL_LINE = "Open-Sora Studio is running on "


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningApp:
    url: str
    output_dir: Path
    runs_dir: Path
    log_path: Path
    process: subprocess.Popen
    startup_s: float

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM: launch.py closes the server and stops trainers
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_app(tmp: Path, *extra: str, preset: str | None = "tiny-random", timeout: float = 180) -> RunningApp:
    """preset None: launch.py picks its default (official model, else the bundled demo)."""
    port = free_port()
    output_dir, runs_dir, log_path = tmp / "outputs", tmp / "runs", tmp / "app.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OPENAI_BASE_URL": "", "OPENAI_API_KEY": ""}
    started = time.monotonic()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "launch.py", *(["--preset", preset] if preset else []), "--port", str(port),
             "--output-dir", str(output_dir), "--runs-dir", str(runs_dir), *extra],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env,
        )
    app = RunningApp("", output_dir, runs_dir, log_path, process, 0.0)
    deadline = started + timeout
    while time.monotonic() < deadline:
        for line in app.log().splitlines():
            if line.startswith(URL_LINE):
                app.url = line[len(URL_LINE):].split()[0]
                app.startup_s = time.monotonic() - started
                return app
        if process.poll() is not None:
            raise RuntimeError(f"launch.py exited with {process.returncode}:\n{app.log()}")
        time.sleep(0.2)
    app.stop()
    raise RuntimeError(f"launch.py printed no URL within {timeout} s:\n{app.log()}")
