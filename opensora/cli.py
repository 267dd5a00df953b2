"""`python -m opensora <command>`: one small module per command under opensora/commands/."""

from opensora import subcommands
from opensora.commands import check, generate, parity, plan, refine
from opensora.commands import extend, info
from opensora.commands import fit_preview
from opensora.commands import calibrate_cache
from opensora.commands import queue

COMMANDS = {
    "generate": (generate, "generate videos from prompts (text-to-video, image/video-to-video)"),
    "check": (check, "list which official checkpoint files are present or missing"),
    "parity": (parity, "compare this implementation against an official fixture folder"),
    "refine": (refine, "refine a prompt with an OpenAI-compatible server or the offline refiner"),
    "plan": (plan, "predict GPU memory and RAM of each memory profile and pick the fastest that fits"),
    "info": (info, "print the settings a video was made with (from its mp4's metadata or its .json)"),
    "fit-preview": (fit_preview, "fit the live preview's latent -> RGB map of a preset's VAE (presets/preview/)"),
    "extend": (extend, "continue a video into a longer one (v2v_head parts from its last 33 frames)"),
    "calibrate-cache": (calibrate_cache, "measure a preset's MagCache ratios (presets/cache/P-magcache.toml) for "
                        "--cache magcache"),
    "queue": (queue, "the app's job queue: add jobs (generate's flags), run them headless, list them"),
}


def build_parser():
    return subcommands.build_parser("python -m opensora", __doc__, COMMANDS)


def main(argv: list[str] | None = None) -> int:
    return subcommands.run_command(build_parser(), COMMANDS, argv)
