"""Start Open-Sora Studio (the Gradio app): `python launch.py`, then open the printed URL.

Also the `app_file` of the Hugging Face Space (README front matter): there GRADIO_SERVER_NAME /
GRADIO_SERVER_PORT set the address, and `spaces` (ZeroGPU) is picked up when installed.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys


DEFAULT_MAX_UPLOAD_MB = 50


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python launch.py", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                        help="port (default 7860)")
    parser.add_argument("--ckpt-dir", default="ckpts", help="folder with the official checkpoints (default ./ckpts)")
    parser.add_argument("--preset", default=None, help="model preset to start with (default: official 256px if "
                        "its files are in --ckpt-dir, else the bundled demo model, else tiny-random)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    parser.add_argument("--output-dir", default="outputs", help="where videos and sidecars go (default ./outputs)")
    parser.add_argument("--runs-dir", default="runs", help="fine-tune runs; their LoRAs feed the LoRA picker")
    parser.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                        help=f"largest upload accepted, in MB (default {DEFAULT_MAX_UPLOAD_MB}: reference images and "
                        "videos are far smaller)")
    args = parser.parse_args(argv)
    if not args.max_upload_mb > 0:
        parser.error(f"--max-upload-mb must be > 0, got {args.max_upload_mb:g}")
    return args


def _stop_on_sigterm(signum, frame):
    # Turn SIGTERM (docker stop, Spaces restarts, test teardown) into the Ctrl-C path, so the
    # server closes and atexit stops running trainers cleanly.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import atexit

    from opensora.logs import configure_logging

    configure_logging()

    from app.config import AppConfig
    from app.ui import CSS, allowed_paths, build_app
    from app.zerogpu import spaces_available
    from opensora.errors import UserError

    config = AppConfig(output_dir=args.output_dir, ckpt_dir=args.ckpt_dir, runs_dir=args.runs_dir, preset=args.preset)
    try:
        demo, services = build_app(config)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    atexit.register(services.runs.stop_all)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)

    if spaces_available():
        # ZeroGPU runs each @spaces.GPU call in a worker that inherits this process: load the
        # model now (ZeroGPU defers the actual CUDA placement) instead of once per call.
        services.cache.get(services.default_preset)
    demo.queue()
    _, local_url, share_url = demo.launch(
        server_name=args.host, server_port=args.port, share=args.share or None, prevent_thread_lock=True,
        allowed_paths=allowed_paths(config), max_file_size=int(args.max_upload_mb * 1024 * 1024),
        show_error=True, quiet=True, css=CSS,
    )
    print(f"Open-Sora Studio is running on {local_url} (model preset: {services.default_preset})", flush=True)
    if share_url:
        print(f"public link: {share_url}", flush=True)
    demo.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())
