"""Start Open-Sora Studio (the Gradio app): `python launch.py`, then open the printed URL.

With more than one GPU it runs itself again under torchrun, one process per GPU (`--no-parallel`:
not): rank 0 serves the app, the other ranks take part in each generation (opensora.parallel.jobs).

Also the `app_file` of the Hugging Face Space (README front matter): there GRADIO_SERVER_NAME /
GRADIO_SERVER_PORT set the address, and `spaces` (ZeroGPU) is picked up when installed.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from opensora.presets import DEFAULT_CKPT_DIR, DEFAULT_OUTPUT_DIR


DEFAULT_MAX_UPLOAD_MB = 50


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python launch.py", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                        help="port (default 7860)")
    parser.add_argument("--ckpt-dir", default=DEFAULT_CKPT_DIR, help="folder with the official checkpoints (default ./ckpts)")
    parser.add_argument("--preset", default=None, help="model preset to start with (default: official 256px if "
                        "its files are in --ckpt-dir, else the bundled demo model, else tiny-random)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    parser.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR, help="where videos, sidecars and the job queue go "
                        f"(default ./{DEFAULT_OUTPUT_DIR})")
    parser.add_argument("--runs-dir", default="runs", help="fine-tune runs; their LoRAs feed the LoRA picker")
    parser.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                        help=f"largest upload accepted, in MB (default {DEFAULT_MAX_UPLOAD_MB}: reference images and "
                        "videos are far smaller)")
    parser.add_argument("--no-parallel", action="store_true", help="one process even with several GPUs (default: "
                        "run again under torchrun, one process per GPU)")
    args = parser.parse_args(argv)
    if not args.max_upload_mb > 0:
        parser.error(f"--max-upload-mb must be > 0, got {args.max_upload_mb:g}")
    return args


def _stop_on_sigterm(signum, frame):
    # Turn SIGTERM (docker stop, Spaces restarts, test teardown) into the Ctrl-C path, so the
    # server closes and atexit stops running trainers cleanly.
    raise KeyboardInterrupt


def _follow_rank_0(args, state) -> int:
    """A torchrun rank other than 0: no UI, it takes part in every generation rank 0 starts."""
    from opensora.parallel.jobs import follow_jobs
    from opensora.parallel.process_group import destroy
    from opensora.pipeline_cache import PipelineCache

    pipelines = PipelineCache(args.ckpt_dir, device=str(state.device))
    try:
        follow_jobs(pipelines)
    finally:
        pipelines.unload()
        destroy()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from opensora.parallel.process_group import init_from_env, launched_by_torchrun, should_relaunch, torchrun_argv

    nproc = should_relaunch(args.no_parallel)
    if nproc:
        import subprocess

        print(f"{nproc} GPUs: running under torchrun, one process per GPU (--no-parallel: one process)", flush=True)
        return subprocess.call(torchrun_argv(nproc, [os.path.abspath(__file__), *(sys.argv[1:] if argv is None else argv)]))
    state = init_from_env() if launched_by_torchrun() else None
    if state is not None and not state.is_main:
        return _follow_rank_0(args, state)
    import atexit

    from opensora.logs import configure_logging

    configure_logging()

    from app.config import AppConfig
    from app.ui import CSS, allowed_paths, build_app
    from app.zerogpu import on_zero_gpu
    from opensora.errors import UserError

    config = AppConfig(output_dir=args.output_dir, ckpt_dir=args.ckpt_dir, runs_dir=args.runs_dir, preset=args.preset)
    try:
        demo, services = build_app(config)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    atexit.register(services.runs.stop_all)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)

    if on_zero_gpu():
        # ZeroGPU runs each @spaces.GPU call in a worker that inherits this process: load the
        # model now (ZeroGPU defers the actual CUDA placement) instead of once per call.
        from app.presets_info import check_selectable

        services.cache.get(check_selectable(services.default_preset, config.ckpt_dir))
    atexit.register(services.worker.stop)
    demo.queue()
    _, local_url, share_url = demo.launch(
        server_name=args.host, server_port=args.port, share=args.share or None, prevent_thread_lock=True,
        allowed_paths=allowed_paths(config), max_file_size=int(args.max_upload_mb * 1024 * 1024),
        show_error=True, quiet=True, css=CSS,
    )
    print(f"Open-Sora Studio is running on {local_url} (model preset: {services.default_preset})", flush=True)
    if share_url:
        print(f"public link: {share_url}", flush=True)
    try:
        demo.block_thread()
    finally:
        if state is not None:  # torchrun: the other ranks leave once the running job has stopped
            from opensora.parallel.jobs import stop_followers
            from opensora.parallel.process_group import destroy

            services.worker.stop()
            with services.cache.lock:
                stop_followers()
            destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
