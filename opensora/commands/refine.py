"""`python -m opensora refine`: print the refined prompt (and the dynamic motion score).

stdout gets only the result, so it can be piped; notices go to stderr. A server failure is not
an error here either: the original prompt is printed with the reason, exit status 0.
"""

from __future__ import annotations

import argparse
import sys

from opensora.errors import UserError
from opensora.refine import parse_motion_setting, prepare_prompt
from opensora.refine.arguments import add_endpoint_arguments, settings_from_args
from opensora.refine.instructions import MODES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", required=True, help="the short idea to refine")
    parser.add_argument("--mode", choices=MODES, default="t2v",
                        help="t2v video caption, t2i first-frame caption, i2v caption from --ref")
    parser.add_argument("--ref", default=None, metavar="IMG", help="reference image for --mode i2v")
    add_endpoint_arguments(parser)
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
