"""Fine-tune runs for the UI: start / stop / resume `python -m training finetune` and read its files.

The trainer is a separate process (the same command as on the command line), so a crash or an
out-of-memory there never takes the app down, and Stop is a plain SIGTERM (the trainer saves a
checkpoint and writes status "stopped"). What the UI shows comes from the run folder only
(status.json, metrics.jsonl, train.log), so runs survive an app restart.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from opensora.errors import UserError
from opensora.lora import lora_preset
from opensora.presets import PRESET_DIR
from training.run_lock import lock_holder

REPO_ROOT = Path(__file__).resolve().parent.parent
TRAINER_COMMAND = (sys.executable, "-m", "training", "finetune")
LAUNCH_FILE = "app_launch.json"  # how the app started the run: Resume repeats it
CONSOLE_LOG = "console.log"  # the trainer's stdout/stderr (tracebacks before train.log exists)
LORA_FILE = "lora.safetensors"
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


# ---------------------------------------------------------------------------- training settings
@dataclass
class TrainDefaults:
    """The few values of a presets/train-NAME.toml the tab shows (the trainer reads the rest)."""

    preset: str | None
    mode: str = "lora"
    init: str = "preset"  # "preset": fine-tune the preset's weights; "random": train from scratch
    steps: int = 100
    lr: float = 1e-4
    lora_rank: int = 16

    def label(self, name: str) -> str:
        """What the settings do, for the picker: training from scratch must not look like a fine-tune."""
        if self.init == "random":
            return f"{name}: train {self.preset or 'the'} MMDiT from scratch (random weights, full)"
        what = "LoRA fine-tune" if self.mode == "lora" else "full fine-tune"
        return f"{name}: {what} of {self.preset}" if self.preset else f"{name}: {what} (any preset)"


def training_configs(folder: Path = PRESET_DIR) -> dict[str, TrainDefaults]:
    """NAME -> defaults for every presets/train-NAME.toml (the trainer's --config NAME)."""
    configs = {}
    for path in sorted(folder.glob("train-*.toml")):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError):
            continue  # the trainer reports a broken file when it is used
        configs[path.stem.removeprefix("train-")] = TrainDefaults(
            preset=data.get("preset"), mode=data.get("mode", "lora"), init=data.get("init", "preset"),
            steps=int(data.get("steps", 100)), lr=float(data.get("optim", {}).get("lr", 1e-4)),
            lora_rank=int(data.get("lora", {}).get("rank", 16)),
        )
    return configs


def config_for_preset(preset: str, configs: dict[str, TrainDefaults]) -> str | None:
    """The settings written for this preset (e.g. train-tiny.toml for tiny-random), preferring a
    LoRA fine-tune of its weights over other modes and over training from scratch; else "default"."""
    written = [name for name, d in configs.items() if d.preset == preset]
    ranked = sorted(written, key=lambda n: (configs[n].init != "preset", configs[n].mode != "lora"))
    if ranked and configs[ranked[0]].init == "preset":
        return ranked[0]
    return "default" if "default" in configs else (ranked[0] if ranked else None)


# ---------------------------------------------------------------------------- LoRA picker
def lora_choices(runs_dir: Path, keep: str = "", preset: str | None = None) -> list[tuple[str, str]]:
    """("label", path) for every finished LoRA in RUNS_DIR/*/lora.safetensors, "none" first.

    preset: only the LoRAs made for this preset (as recorded in the LoRA file; the run's launch
    settings for a file without one). `keep` (e.g. a sidecar's LoRA) stays listed regardless."""
    choices = [("none", "")]
    for path in sorted(Path(runs_dir).glob(f"*/{LORA_FILE}")):
        made_for = lora_preset(path) or (_read_json(path.parent / LAUNCH_FILE) or {}).get("preset")
        if preset is not None and made_for != preset:
            continue
        label = path.parent.name + (f" ({made_for})" if made_for else "")
        choices.append((label, str(path.resolve())))
    if keep and keep not in {value for _, value in choices}:
        choices.append((Path(keep).parent.name, keep))  # e.g. a sidecar's LoRA from elsewhere
    return choices


# ---------------------------------------------------------------------------- datasets
def check_dataset_location(source: str, roots: list[Path]) -> None:
    """Refuse a dataset outside ROOTS (the runs and data folders, uploads) with the same words
    whether or not it exists: an API caller must not learn which paths the server has."""
    text = (source or "").strip()
    if not text:
        return  # dataset_csv asks for one
    path = Path(text).expanduser()
    path = path if path.is_absolute() else Path.cwd() / path
    resolved = path.resolve()  # symlinks and ".." too
    if not any(resolved.is_relative_to(root.resolve()) for root in roots):
        raise UserError(f"dataset {text!r} is outside the folders the app trains from; put it under "
                        + " or ".join(str(root) for root in roots[:2]))


def dataset_csv(source: str, run_dir: Path) -> Path:
    """A CSV as is, or a folder of videos with same-name .txt captions -> RUN_DIR/data.csv."""
    path = Path(source.strip()).expanduser() if source and source.strip() else None
    if path is None:
        raise UserError("give a dataset: a CSV file (path,text) or a folder of videos with .txt captions")
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise UserError(f"{path} is not a .csv file; give a CSV or a folder of videos + captions")
        return path.resolve()
    if not path.is_dir():
        raise UserError(f"dataset {path} does not exist")
    videos = sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise UserError(f"{path} holds no videos ({', '.join(VIDEO_SUFFIXES)})")
    missing = [v.name for v in videos if not v.with_suffix(".txt").is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise UserError(f"every video needs a caption beside it (same name, .txt); missing for {shown}")
    run_dir.mkdir(parents=True, exist_ok=True)
    out = run_dir / "data.csv"
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "text"])
        for video in videos:
            writer.writerow([str(video.resolve()), " ".join(video.with_suffix(".txt").read_text(encoding="utf-8").split())])
    return out


# ---------------------------------------------------------------------------- runs
@dataclass
class RunSpec:
    name: str
    preset: str
    data: str  # CSV path, or a folder (turned into RUN_DIR/data.csv)
    lora_rank: int = 16  # 0: full fine-tune
    steps: int = 100
    lr: float = 1e-4
    config: str | None = None  # presets/train-NAME.toml; flags above override it
    init: str = "preset"  # "preset": start from the preset's weights; "random": train from scratch (full only)


@dataclass
class RunView:
    """Everything the tab shows about one run."""

    name: str
    state: str  # starting, running, stopping, finished, failed, stopped, exited, interrupted, not started
    step: int = 0
    total_steps: int = 0
    message: str = ""
    eta_s: float | None = None
    metrics: list[dict] = field(default_factory=list)
    log_tail: str = ""
    lora: Path | None = None

    @property
    def active(self) -> bool:
        return self.state in ("starting", "running", "stopping")


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_metrics(path: Path) -> list[dict]:
    """metrics.jsonl rows; a half-written last line (trainer mid-write) is skipped."""
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    return rows


def tail(path: Path, lines: int = 30, max_bytes: int = 64_000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class TrainingRuns:
    """The trainer processes this app started (one at a time: it shares the GPU with generation)."""

    def __init__(self, runs_dir: Path, command: tuple[str, ...] = TRAINER_COMMAND, cwd: Path = REPO_ROOT):
        self.runs_dir = Path(runs_dir).resolve()
        self.command, self.cwd = tuple(command), cwd
        self._procs: dict[str, subprocess.Popen] = {}
        self._stopping: set[str] = set()
        self._lock = threading.Lock()

    def run_dir(self, name: str) -> Path:
        if not name or not _RUN_NAME.match(name):
            raise UserError(f"run name {name!r} is not allowed: letters, digits, '.', '_' and '-', at most 64")
        return self.runs_dir / name

    def run_names(self) -> list[str]:
        if not self.runs_dir.is_dir():
            return []
        return sorted((p.name for p in self.runs_dir.iterdir() if (p / LAUNCH_FILE).is_file() or (p / "status.json").is_file()),
                      key=lambda n: -(self.runs_dir / n).stat().st_mtime)

    def running_name(self) -> str | None:
        """The run training now: one this app started, else one whose trainer holds its folder's
        lock (started before an app restart, or on the command line)."""
        with self._lock:
            for name, proc in self._procs.items():
                if proc.poll() is None:
                    return name
        for name in self.run_names():
            if lock_holder(self.runs_dir / name):
                return name
        return None

    def trainer_pid(self, name: str) -> int | None:
        """pid of the trainer working in run NAME now (ours or not), None when none is."""
        with self._lock:
            proc = self._procs.get(name)
            if proc is not None and proc.poll() is None:
                return proc.pid
        return lock_holder(self.run_dir(name))

    # ------------------------------------------------------------------ actions
    def start(self, spec: RunSpec) -> Path:
        run_dir = self.run_dir(spec.name)
        if (run_dir / LAUNCH_FILE).exists() or (run_dir / "status.json").exists():
            raise UserError(f"run {spec.name} exists already: pick another name, or Resume it")
        self._check_idle()
        if spec.steps < 1 or spec.lora_rank < 0 or not spec.lr > 0:
            raise UserError(f"steps must be >= 1 (got {spec.steps}), LoRA rank >= 0 (got {spec.lora_rank}), "
                            f"learning rate > 0 (got {spec.lr})")
        if spec.init not in ("preset", "random"):
            raise UserError(f"start from {spec.init!r}: allowed are preset (fine-tune its weights) and random (from scratch)")
        if spec.init == "random" and spec.lora_rank:
            raise UserError("training from scratch (random weights) trains every weight: choose Method Full, "
                            "or start from the preset's weights for a LoRA")
        data = dataset_csv(spec.data, run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        args = ["--config", spec.config] if spec.config else []
        args += ["--preset", spec.preset, "--init", spec.init, "--data", str(data), "--output-dir", str(run_dir),
                 "--steps", str(spec.steps), "--lr", str(spec.lr)]
        args += ["--mode", "full"] if spec.lora_rank == 0 else ["--mode", "lora", "--lora-rank", str(spec.lora_rank)]
        (run_dir / LAUNCH_FILE).write_text(json.dumps({**asdict(spec), "args": args}, indent=2) + "\n", encoding="utf-8")
        self._spawn(spec.name, args)
        return run_dir

    def resume(self, name: str) -> Path:
        run_dir = self.run_dir(name)
        pid = self.trainer_pid(name)
        if pid:  # a second trainer would repeat steps and overwrite the first one's checkpoints
            raise UserError(f"run {name} is still training (trainer pid {pid}): Stop it first, or wait for it to end")
        launch = _read_json(run_dir / LAUNCH_FILE)
        if not launch or not isinstance(launch.get("args"), list):
            raise UserError(f"run {name} was not started from this app ({run_dir / LAUNCH_FILE} is missing); "
                            "resume it on the command line with --resume auto")
        status = _read_json(run_dir / "status.json") or {}
        if status.get("state") == "finished":
            raise UserError(f"run {name} has finished already")
        self._check_idle()
        self._spawn(name, [*launch["args"], "--resume", "auto"])
        return run_dir

    def stop(self, name: str) -> bool:
        """SIGTERM: the trainer checkpoints and writes status "stopped". Also a trainer this app did
        not start (one that kept running across an app restart), found by its run folder's lock.
        False if nothing trains in that run."""
        with self._lock:
            proc = self._procs.get(name)
            if proc is not None and proc.poll() is None:
                self._stopping.add(name)
                proc.send_signal(signal.SIGTERM)
                return True
        pid = lock_holder(self.run_dir(name))
        if not pid or pid < 0:
            return False
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        with self._lock:
            self._stopping.add(name)
        return True

    def stop_all(self, wait_s: float = 30.0) -> None:
        """On app exit: stop running trainers cleanly (they would otherwise run on, orphaned)."""
        procs = [p for p in self._procs.values() if p.poll() is None]
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + wait_s
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()

    def _check_idle(self) -> None:
        running = self.running_name()
        if running:
            pid = self.trainer_pid(running)
            raise UserError(f"run {running} is still training{f' (trainer pid {pid})' if pid else ''}: "
                            "stop it first (one run at a time)")

    def _spawn(self, name: str, args: list[str]) -> None:
        run_dir = self.run_dir(name)
        console = open(run_dir / CONSOLE_LOG, "ab")
        console.write(f"\n$ {' '.join(self.command + tuple(args))}\n".encode())
        console.flush()
        with self._lock:
            # Own session: Ctrl-C in the app's terminal must not hit the trainer mid-step;
            # the app stops it with SIGTERM on exit instead (stop_all).
            self._procs[name] = subprocess.Popen(
                [*self.command, *args], cwd=self.cwd, stdout=console, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
            self._stopping.discard(name)
        console.close()  # the child holds its own copy

    # ------------------------------------------------------------------ reading
    def view(self, name: str) -> RunView:
        if not name:
            return RunView(name="", state="not started")
        run_dir = self.run_dir(name)
        status = _read_json(run_dir / "status.json") or {}
        metrics = read_metrics(run_dir / "metrics.jsonl")
        with self._lock:
            proc = self._procs.get(name)
            code = None if proc is None else proc.poll()
            stopping = name in self._stopping
        live = {proc.pid} if proc is not None and code is None else set()
        holder = lock_holder(run_dir)
        if holder:
            live.add(holder)
        state, message = status.get("state"), status.get("message") or ""
        if live:
            if status.get("pid") not in live:
                # status.json is still the previous session's (e.g. "stopped" right after Resume):
                # this trainer has not written its own yet.
                state, message = "starting", "starting the trainer"
            if stopping and state in ("starting", "running"):
                state = "stopping"
        elif proc is not None and code is not None and (state in (None, "running", "starting", "not started")
                                                        or status.get("pid") != proc.pid):  # ended without a status of its own
            state, message = "exited", f"the trainer exited with code {code} (see the log)"
        elif state == "running":  # no process and no lock: it died without a last word
            state, message = "interrupted", "the trainer is gone (killed?); Resume continues from the last checkpoint"
        state = state or "not started"
        log_name = "train.log" if (run_dir / "train.log").is_file() else CONSOLE_LOG
        log = compact_log(tail(run_dir / log_name, lines=60), keep=30)
        if state in ("exited", "failed") and log_name != CONSOLE_LOG:
            log += "\n--- console ---\n" + tail(run_dir / CONSOLE_LOG, 15)
        lora = run_dir / LORA_FILE
        return RunView(
            name=name, state=state, step=int(status.get("step") or (metrics[-1]["step"] if metrics else 0)),
            total_steps=int(status.get("total_steps") or 0), message=message,
            eta_s=metrics[-1].get("eta_s") if metrics and state == "running" else None,
            metrics=metrics, log_tail=log, lora=lora if lora.is_file() else None,
        )


_CHECKPOINT_LINE = re.compile(r"saved checkpoint |removed old checkpoint ")
# train.log's "2026-01-31 12:00:00,123 INFO training.trainer: ..." -> "12:00:00 ..." (level kept unless INFO)
_LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d (\d\d:\d\d:\d\d),\d+ (\w+) [\w.]+: ")


def compact_log(text: str, keep: int = 30) -> str:
    """The last KEEP lines for the tab: each run of checkpoint lines folded into its newest one
    (they would otherwise fill the tail of a long run), the date and logger name dropped."""
    lines = text.splitlines()
    kept = [line for i, line in enumerate(lines)
            if not (_CHECKPOINT_LINE.search(line) and i + 1 < len(lines) and _CHECKPOINT_LINE.search(lines[i + 1]))]
    short = [_LOG_PREFIX.sub(lambda m: f"{m.group(1)} " + ("" if m.group(2) == "INFO" else f"{m.group(2)} "), line)
             for line in kept[-keep:]]
    return "\n".join(short)
