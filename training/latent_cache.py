"""Optional on-disk caches of the frozen encoders' outputs, as safetensors.

Latents: every usable sample is decoded once (a fixed crop per sample) and its VAE posterior
(mean, log-variance) is stored, so training skips video decoding and the VAE and still draws a
fresh posterior sample each step, as the official training does with its VAE in the loop.
Text: T5 + CLIP outputs per distinct caption string.

Entries are keyed by the file (path, mtime, size), the bucket shape and the encoder fingerprint
(preset, encoder config, the VAE encoder's tensors or the text encoders' file stats), so an
edited video or another VAE encoder never hits a stale entry.
Files are written to a temp name and renamed: a crash never leaves half an entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch.utils.data import Dataset
from tqdm import tqdm

from opensora.io.outputs import save_safetensors_atomic
from opensora.models.hunyuan_vae import VAEConfig
from training.buckets import Bucket
from training.dataset_csv import SampleRecord
from training.video_dataset import VideoTextDataset

log = logging.getLogger(__name__)


def fingerprint(*parts) -> str:
    """A short stable hash of JSON-able parts (config dicts, file stats)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


VAE_ENCODER_PREFIXES = ("encoder.", "quant_conv.")  # all the posterior depends on


def tensors_digest(path: Path, prefixes: tuple[str, ...]) -> str:
    """SHA-1 of the names, dtypes, shapes and bytes of a safetensors file's tensors under `prefixes`:
    a fine-tuned VAE decoder or a touched file keeps its encoder's latent cache."""
    digest = hashlib.sha1()
    with safe_open(str(path), "pt") as f:
        for key in sorted(k for k in f.keys() if k.startswith(prefixes)):
            tensor = f.get_tensor(key)
            digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
            digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def sample_posterior(
    mean: torch.Tensor, logvar: torch.Tensor, vae_config: VAEConfig, generator: torch.Generator | None
) -> torch.Tensor:
    """Scaled latent `scale * (z - shift)` with z drawn from the posterior (noise from `generator`, CPU)."""
    noise = torch.randn(mean.shape, generator=generator, dtype=torch.float32).to(mean.device, mean.dtype)
    z = mean + torch.exp(0.5 * logvar) * noise
    return vae_config.scale_factor * (z - vae_config.shift_factor)


def posterior_mean(mean: torch.Tensor, vae_config: VAEConfig) -> torch.Tensor:
    """Scaled latent `scale * (mean - shift)`: the posterior without its noise."""
    return vae_config.scale_factor * (mean - vae_config.shift_factor)


def _load(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
    """Tensors and metadata, or None when the entry is missing or unreadable (then re-made)."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, (f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        log.warning("ignoring unreadable cache entry %s (%s)", path, err)
        return None


class LatentCache:
    """VAE posterior (mean, logvar) per (sample file, bucket), under root/<vae fingerprint>/."""

    def __init__(self, root: Path, vae_fingerprint: str):
        self.root = Path(root) / vae_fingerprint

    def entry_path(self, record: SampleRecord, bucket: Bucket, fps: float | None) -> Path:
        stat = record.path.stat()
        key = fingerprint(str(record.path), stat.st_mtime_ns, stat.st_size, bucket.key, bucket.height, bucket.width, fps)
        return self.root / key[:2] / f"{key}.safetensors"

    def load(self, record: SampleRecord, bucket: Bucket, fps: float | None) -> dict | None:
        try:
            loaded = _load(self.entry_path(record, bucket, fps))
        except OSError:  # the file vanished since the CSV was read
            return None
        if loaded is None:
            return None
        tensors, metadata = loaded
        return {"mean": tensors["mean"], "logvar": tensors["logvar"], "fps": float(metadata.get("fps", "0"))}

    def save(self, record, bucket, fps, mean: torch.Tensor, logvar: torch.Tensor, clip_fps: float) -> None:
        save_safetensors_atomic({"mean": mean, "logvar": logvar}, self.entry_path(record, bucket, fps), {"fps": repr(clip_fps)})


def fill_latent_cache(
    dataset: VideoTextDataset,
    cache: LatentCache,
    encode_moments: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    seed: int,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[int, int]:
    """Encode every usable sample not cached yet (this rank's share). Returns (encoded, failed).

    encode_moments(video (1,3,T,H,W) in [-1,1]) -> (mean, logvar) each (1,C,T',H',W')."""
    todo = [
        i for i in range(rank, len(dataset), world_size)
        if dataset.buckets[i] is not None and cache.load(dataset.records[i], dataset.buckets[i], dataset.fps) is None
    ]
    encoded = failed = 0
    for index in tqdm(todo, desc="caching latents", unit="clip", disable=not todo or rank != 0):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + index)  # the clip's temporal crop, fixed per sample
            item = dataset[index]
        if item is None:  # unreadable: logged by the dataset, and never served from the cache
            failed += 1
            continue
        with torch.no_grad():
            mean, logvar = encode_moments(item["video"][None])
        cache.save(dataset.records[index], dataset.buckets[index], dataset.fps, mean[0], logvar[0], item["fps"])
        encoded += 1
    return encoded, failed


class CachedLatentDataset(Dataset):
    """Serves cached posteriors instead of decoded videos: {"mean", "logvar", "text", "path", "fps", "motion_score"}."""

    def __init__(self, source: VideoTextDataset, cache: LatentCache):
        self.records, self.buckets, self.fps = source.records, source.buckets, source.fps
        self.cache = cache

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict | None:
        record, bucket = self.records[index], self.buckets[index]
        entry = self.cache.load(record, bucket, self.fps)
        if entry is None:  # failed to decode while the cache was filled
            return None
        return {
            "mean": entry["mean"], "logvar": entry["logvar"], "text": record.text, "path": str(record.path),
            "fps": entry["fps"], "motion_score": record.motion_score,
        }


def collate_cached(samples: list[dict | None]) -> dict:
    good = [s for s in samples if s is not None]
    return {
        "mean": torch.stack([s["mean"] for s in good]) if good else None,
        "logvar": torch.stack([s["logvar"] for s in good]) if good else None,
        "text": [s["text"] for s in good],
        "path": [s["path"] for s in good],
        "fps": torch.tensor([s["fps"] for s in good], dtype=torch.float32),
        "motion_score": [s["motion_score"] for s in good],
        "num_skipped": len(samples) - len(good),
    }


class TextEmbeddingCache:
    """T5 + CLIP outputs per caption string, one file each under root/<text fingerprint>/."""

    def __init__(self, root: Path, text_fingerprint: str):
        self.root = Path(root) / text_fingerprint

    def _path(self, text: str) -> Path:
        key = hashlib.sha1(text.encode("utf-8")).hexdigest()
        return self.root / key[:2] / f"{key}.safetensors"

    def encode(self, texts: list[str], encoder) -> tuple[torch.Tensor, torch.Tensor]:
        """Like `encoder.encode(texts)`, reading cached rows and encoding only the missing ones."""
        rows: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for text in dict.fromkeys(texts):
            loaded = _load(self._path(text))
            if loaded is not None:
                rows[text] = (loaded[0]["txt"], loaded[0]["y_vec"])
        missing = [t for t in dict.fromkeys(texts) if t not in rows]
        if missing:
            txt, y_vec = encoder.encode(missing)
            for i, text in enumerate(missing):
                rows[text] = (txt[i].cpu(), y_vec[i].cpu())
                save_safetensors_atomic({"txt": txt[i], "y_vec": y_vec[i]}, self._path(text))
        return torch.stack([rows[t][0] for t in texts]), torch.stack([rows[t][1] for t in texts])
