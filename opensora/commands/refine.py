"""`python -m opensora refine`: print the refined prompt (and the dynamic motion score).

stdout gets only the result, so it can be piped; notices go to stderr. A server failure is not
an error here either: the original prompt is printed with the reason, exit status 0.
"""

from __future__ import annotations

import argparse
import sys

from opensora.errors import UserError
from opensora.refine import RefineSettings, parse_motion_setting, prepare_prompt
from opensora.refine.instructions import MODES


def _add_endpoint_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--refine-base-url",
        default=None,
        help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:11434/v1 "
        "(default: $OPENAI_BASE_URL; the key is read from $OPENAI_API_KEY only)",
    )
    parser.add_argument(
        "--refine-model", default=None, help="model name on that server (default gpt-4o)"
    )
    parser.add_argument(
        "--refine-timeout", type=float, default=None, help="seconds per request (default 30)"
    )


def add_refine_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags `generate` shares: --refine-prompt plus the endpoint flags and --refine-language."""
    parser.add_argument(
        "--refine-prompt",
        action="store_true",
        help="refine prompts with the configured server, or offline when none is configured",
    )
    _add_endpoint_arguments(parser)
    parser.add_argument(
        "--refine-language",
        choices=("keep", "english"),
        default=None,
        help="language of the refined prompt (default english, what the model was trained on)",
    )


def settings_from_args(args: argparse.Namespace) -> RefineSettings:
    """RefineSettings from the flags above (missing attributes fall back to the environment)."""
    language = getattr(args, "refine_language", None) or getattr(args, "language", None)
    return RefineSettings.from_env(
        base_url=getattr(args, "refine_base_url", None),
        model=getattr(args, "refine_model", None),
        timeout_s=getattr(args, "refine_timeout", None),
        language=language,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", required=True, help="the short idea to refine")
    parser.add_argument("--mode", choices=MODES, default="t2v",
                        help="t2v video caption, t2i first-frame caption, i2v caption from --ref")
    parser.add_argument("--ref", default=None, metavar="IMG", help="reference image for --mode i2v")
    _add_endpoint_arguments(parser)
    parser.add_argument("--language", choices=("keep", "english"), default=None,
                        help="keep the prompt's language or write English (default)")
    parser.add_argument("--motion-score", default=None, metavar="N|dynamic",
                        help="also print a motion score: 1-15, or 'dynamic' to ask the server")
    parser.add_argument("--shapes-world", action="store_true",
                        help="map the prompt onto the demo model's shapes-world vocabulary")
    parser.add_argument("--fps", type=int, default=24, help="FPS used in --show-model-text")
    parser.add_argument("--show-model-text", action="store_true",
                        help="also print the exact text the encoders get (with the suffixes)")


def run(args: argparse.Namespace) -> int:
    if args.mode == "i2v" and not args.ref and not args.shapes_world:
        raise UserError("--mode i2v needs --ref IMG (the reference image)")
    if args.ref and args.mode != "i2v":
        print(f"note: --ref is only used with --mode i2v (mode is {args.mode})", file=sys.stderr)
    motion = parse_motion_setting(args.motion_score) if args.motion_score is not None else None
    prepared = prepare_prompt(
        args.prompt,
        refine=True,
        motion_score=motion if motion is not None else 4,
        mode=args.mode,
        ref_image=args.ref if args.mode == "i2v" else None,
        settings=settings_from_args(args),
        vocabulary="shapes-world" if args.shapes_world else None,
        fps=args.fps,
    )
    for notice in prepared.notices:
        print(f"note: {notice}", file=sys.stderr)
    print(prepared.text)
    if motion is not None:
        print(f"motion score: {prepared.motion_score} ({prepared.motion_source})")
    if args.show_model_text:
        print(prepared.model_text)
    return 0
