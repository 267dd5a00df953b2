"""`python -m training demo-shard-weights --mmdit FILE --vae FILE --out DIR`: the demo weights as shards.

Writes DIR/mmdit-0000K-of-0000N.safetensors + DIR/mmdit.safetensors.index.json and the same for
the VAE, each shard under 10 MB (what a Hugging Face Space's git takes without LFS); presets/demo.toml
names the two index files. The same weights always give the same shard files.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mmdit", required=True, help="the MMDiT weights (.safetensors or a shard index)")
    parser.add_argument("--vae", required=True, help="the VAE weights (.safetensors or a shard index)")
    parser.add_argument("--out", required=True, help="folder that gets the shards and the two index files (e.g. models/demo)")


def run(args: argparse.Namespace) -> int:
    from training.demo.weight_shards import read_weights, write_shards

    for stem, source in (("mmdit", args.mmdit), ("vae", args.vae)):
        tensors, metadata = read_weights(Path(source))
        index = write_shards(tensors, metadata, Path(args.out), stem)
        print(f"{source}: {len(tensors)} tensors -> {index}")
    return 0
