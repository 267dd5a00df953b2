"""`python -m opensora parity DIR`: one JSON line of max abs errors; exit 1 when one is out of tolerance."""

import argparse
import json
from pathlib import Path

from opensora.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="fixture folder in the format of tests/fixtures/opensora_v2 "
                        "(or tests/fixtures/opensora_v1_2: stdit3, vae_v1_2_*, sampler_v1_2_* checks)")


def run(args: argparse.Namespace) -> int:
    from opensora.parity import run_parity
    from opensora.parity_v1_2 import is_v1_2_folder, run_parity_v1_2

    folder = Path(args.folder)
    if not folder.is_dir():
        raise UserError(f"fixture folder {folder} does not exist")
    errors, ok = (run_parity_v1_2 if is_v1_2_folder(folder) else run_parity)(folder)
    if not errors:
        raise UserError(f"{folder} holds no known fixture files (e.g. mmdit_tiny_io.safetensors)")
    print(json.dumps(errors))
    return 0 if ok else 1
