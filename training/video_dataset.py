"""Torch dataset of video/image + caption samples, cropped to their bucket, and its DataLoader.

A sample decodes at the bucket config's fps (temporal stride through ``read_video``; the source
fps when the config has none or the source is slower), takes the bucket's frame count from a
random start, resizes keeping the aspect ratio and centre-crops to the bucket size.

Unreadable or corrupt files never end a run: the dataset returns None (logged and counted), the
collate drops Nones, and ``TrainingLoader.skipped_samples`` totals them across worker processes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from opensora.errors import UserError
from opensora.io.video import read_video
from training.bucket_sampler import BucketBatchSampler
from training.buckets import Bucket, BucketAssignment, BucketConfig, assign_buckets, load_bucket_config
from training.dataset_csv import CsvDataset, SampleRecord, load_dataset_csv
from training.video_transforms import resize_center_crop

log = logging.getLogger(__name__)

# What a broken file raises while decoding: caught per sample so one file cannot stop training.
DECODE_ERRORS = (UserError, OSError, ValueError, RuntimeError, EOFError, av.FFmpegError)


class VideoTextDataset(Dataset):
    def __init__(self, records: list[SampleRecord], buckets: list[Bucket | None], fps: float | None):
        """records[i] is cropped to buckets[i]; fps is the target frame rate (None: source fps)."""
        if len(records) != len(buckets):
            raise ValueError(f"{len(records)} records but {len(buckets)} bucket entries; must match")
        self.records = records
        self.buckets = buckets
        self.fps = fps
        self.skipped = 0  # samples that failed to decode in this process

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict | None:
        record, bucket = self.records[index], self.buckets[index]
        if bucket is None:
            raise IndexError(f"sample {index} ({record.path}) has no bucket; the sampler never picks it")
        try:
            frames, fps = self._decode(record, bucket.num_frames)
            if frames.shape[0] < bucket.num_frames:
                raise UserError(
                    f"decoded {frames.shape[0]} frames; bucket {bucket.key} needs {bucket.num_frames} "
                    f"(the CSV or probe said {record.num_frames})"
                )
            video = resize_center_crop(frames[: bucket.num_frames], bucket.height, bucket.width)
        except DECODE_ERRORS as e:
            self.skipped += 1
            log.warning(
                "skipping sample %s (CSV line %d): %s: %s", record.path, record.line, type(e).__name__, e
            )
            return None
        return {
            "video": video.permute(1, 0, 2, 3).mul_(2.0).sub_(1.0),  # (3, T, H, W) in [-1, 1]
            "text": record.text,
            "path": str(record.path),
            "fps": float(fps),
            "motion_score": record.motion_score,
        }

    def _decode(self, record: SampleRecord, num_frames: int) -> tuple[np.ndarray, float]:
        if record.is_image:
            with Image.open(record.path) as img:
                return np.asarray(img.convert("RGB"))[None], record.fps
        if num_frames == 1:  # a single frame of a video, for an image bucket
            start = _random_int(record.num_frames)
            return read_video(record.path, max_frames=1, start_frame=start)
        step = record.fps / self.fps if self.fps is not None and self.fps < record.fps else 1.0
        # read_video keeps source frame round(k * step) for output frame k.
        span = math.floor((num_frames - 1) * step + 0.5) + 1
        start = _random_int(max(record.num_frames - span + 1, 1))
        return read_video(record.path, max_frames=num_frames, target_fps=self.fps, start_frame=start)


def _random_int(high: int) -> int:
    """Uniform in [0, high) from torch's RNG: the global one in the main process, seeded per
    worker by the DataLoader (from its generator) in worker processes."""
    return int(torch.randint(high, (1,)).item())


def collate_samples(samples: list[dict | None]) -> dict:
    """Stack one bucket's samples; drop the ones that failed to decode (None).

    ``num_skipped`` carries the count out of worker processes; ``video`` is None when every sample
    of the batch failed."""
    good = [s for s in samples if s is not None]
    batch = {
        "video": torch.stack([s["video"] for s in good]) if good else None,  # (B, 3, T, H, W)
        "text": [s["text"] for s in good],
        "path": [s["path"] for s in good],
        "fps": torch.tensor([s["fps"] for s in good], dtype=torch.float32),
        "motion_score": [s["motion_score"] for s in good],
        "num_skipped": len(samples) - len(good),
    }
    return batch


@dataclass
class DataSummary:
    csv: CsvDataset
    assignment: BucketAssignment

    @property
    def num_usable(self) -> int:
        return sum(b is not None for b in self.assignment.buckets)

    def describe(self) -> str:
        counts = ", ".join(f"{k}: {n}" for k, n in self.assignment.counts().items())
        return (
            f"{self.num_usable} usable samples ({counts}); skipped {len(self.csv.skipped)} bad rows, "
            f"{len(self.assignment.unassigned)} fitting no bucket"
        )


class TrainingLoader:
    """A DataLoader over bucket batches that knows how far training got.

    Its ``state_dict`` counts batches delivered to the training loop (not the ones the DataLoader
    prefetched), so saving it with a checkpoint resumes exactly after the last trained batch."""

    def __init__(self, dataloader: DataLoader, sampler: BucketBatchSampler, summary: DataSummary):
        self.dataloader = dataloader
        self.sampler = sampler
        self.summary = summary
        self.skipped_samples = 0  # failed decodes, summed over all workers
        self._position: tuple[int, int] | None = None  # (epoch, batches delivered) while iterating

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[dict]:
        if self._position is not None:
            # A previous pass may have stopped early while the DataLoader had prefetched ahead:
            # continue after the last batch actually delivered, not after the prefetched ones.
            self.sampler.load_state_dict(self.state_dict())
        epoch, delivered = self.sampler.epoch, self.sampler.batches_consumed
        self._position = (epoch, delivered)
        for batch in self.dataloader:
            delivered += 1
            self._position = (epoch, delivered)
            self.skipped_samples += batch["num_skipped"]
            if not batch["path"]:
                continue  # every sample of this batch was unreadable
            yield batch
        self._position = (epoch + 1, 0)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
        self._position = None

    def state_dict(self) -> dict[str, int]:
        if self._position is None:
            return self.sampler.state_dict()
        epoch, delivered = self._position
        return {"epoch": epoch, "batches_consumed": delivered, "seed": self.sampler.seed}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)
        self._position = None


def make_dataloader(
    csv_path: str | Path,
    bucket_config: BucketConfig | str | Path,
    batch_sampler_state: dict | None = None,
    num_workers: int = 0,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = True,
    dataset_factory: Callable[[list[SampleRecord], list[Bucket | None], float | None], Dataset] = VideoTextDataset,
    collate_fn: Callable[[list], dict] = collate_samples,
) -> TrainingLoader:
    """CSV + bucket table -> resumable bucketed loader. Raises UserError when no sample is usable.

    dataset_factory(records, buckets, fps) / collate_fn replace the video dataset and its collate
    (the trainer's latent cache serves pre-encoded latents this way; batches must keep "path"
    and "num_skipped")."""
    if not isinstance(bucket_config, BucketConfig):
        bucket_config = load_bucket_config(bucket_config)
    if num_workers < 0:
        raise UserError(f"num_workers is {num_workers}; must be >= 0")
    csv = load_dataset_csv(csv_path)
    assignment = assign_buckets(
        csv.records, bucket_config, describe=lambda r: f"{r.path} (CSV line {r.line})"
    )
    summary = DataSummary(csv=csv, assignment=assignment)
    if summary.num_usable == 0:
        raise UserError(
            f"no usable samples in {csv_path}: {len(csv.records) + len(csv.skipped)} rows, "
            f"{len(csv.skipped)} unreadable, {len(assignment.unassigned)} fitting no bucket of "
            f"{bucket_config.source}"
            + (f" (e.g. {assignment.unassigned[0][1]})" if assignment.unassigned else "")
        )
    log.info("%s: %s", csv_path, summary.describe())

    dataset = dataset_factory(csv.records, assignment.buckets, bucket_config.fps)
    sampler = BucketBatchSampler(
        assignment.buckets, seed=seed, drop_last=drop_last, rank=rank, world_size=world_size
    )
    if batch_sampler_state is not None:
        sampler.load_state_dict(batch_sampler_state)
    generator = torch.Generator().manual_seed(seed + 1000 * rank)  # seeds the temporal crops
    dataloader = DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        generator=generator,
    )
    return TrainingLoader(dataloader, sampler, summary)
