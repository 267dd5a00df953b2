"""`python -m opensora info VIDEO`: the settings a video was made with, read from its mp4's metadata
(written there by every generation, see `opensora.io.embedded_settings`) or from its .json sidecar.

    python -m opensora info outputs/0003.mp4      # the sidecar's JSON, even for an mp4 shared alone
"""

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", type=Path, help="an mp4 made by this app or `generate` (or its .json sidecar)")


def run(args: argparse.Namespace) -> int:
    from opensora.io.embedded_settings import settings_from_file

    print(json.dumps(settings_from_file(args.video), indent=2, ensure_ascii=False))
    return 0
