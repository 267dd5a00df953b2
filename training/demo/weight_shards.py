"""Weight files as shards under a size limit, with a `from_pretrained`-style index.

A Hugging Face Space's git refuses files over 10 MB that are not in LFS, so the bundled demo
weights are stored as `STEM-0000K-of-0000N.safetensors` shards beside `STEM.safetensors.index.json`
({"metadata": {"total_size": bytes of tensor data}, "weight_map": {tensor: shard file}}).
`opensora.checkpoints.load_checked` reads either form. Tensors go to shards in sorted-name order,
a new shard whenever the next one would pass the limit, and every shard keeps the source file's
safetensors metadata (e.g. the VAE's scale_factor): the same weights give the same files, index and
tensors (safetensors may order a header's metadata keys differently from run to run).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from opensora.checkpoints import SHARD_INDEX_SUFFIX
from opensora.errors import UserError
from opensora.io.atomic import atomic_write_text, save_safetensors_atomic

MAX_SHARD_BYTES = 9_500_000  # under the Space's 10 MB, header included


def tensor_bytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def plan_shards(tensors: dict[str, torch.Tensor], max_bytes: int) -> list[list[str]]:
    """Tensor names per shard: sorted, filled greedily up to `max_bytes` of tensor data each."""
    shards: list[list[str]] = [[]]
    size = 0
    for name in sorted(tensors):
        nbytes = tensor_bytes(tensors[name])
        if nbytes > max_bytes:
            raise UserError(f"tensor {name} holds {nbytes} bytes, more than a shard may ({max_bytes})")
        if shards[-1] and size + nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards


def write_shards(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None, out_dir: Path, stem: str,
                 max_bytes: int = MAX_SHARD_BYTES) -> Path:
    """Write the shards and their index into `out_dir`; returns the index path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = plan_shards(tensors, max_bytes)
    weight_map = {}
    for number, names in enumerate(groups, start=1):
        shard = f"{stem}-{number:05d}-of-{len(groups):05d}.safetensors"
        save_safetensors_atomic({name: tensors[name].contiguous() for name in names}, out_dir / shard, metadata)
        weight_map.update({name: shard for name in names})
    index = {"metadata": {"total_size": sum(tensor_bytes(t) for t in tensors.values())}, "weight_map": weight_map}
    index_path = out_dir / f"{stem}{SHARD_INDEX_SUFFIX}"
    atomic_write_text(index_path, json.dumps(index, indent=2, sort_keys=True) + "\n")
    return index_path


def read_weights(path: Path, what: str = "weights") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and safetensors metadata of one file or of a shard index (the first shard's metadata)."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    from opensora.checkpoints import is_shard_index, shard_files

    files = shard_files(Path(path)) if is_shard_index(path) else [Path(path)]
    try:
        with safe_open(str(files[0]), "pt") as f:
            metadata = f.metadata() or {}
        return {k: v for file in files for k, v in load_file(str(file)).items()}, metadata
    except (FileNotFoundError, SafetensorError) as err:
        raise UserError(f"cannot read {what} {path}: {err}") from None
