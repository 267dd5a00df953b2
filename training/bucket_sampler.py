"""Batch sampler that batches only within a bucket, deterministic and resumable mid-epoch.

Each epoch's plan depends only on (seed, epoch): which samples are kept (each bucket's
keep_prob), the shuffle inside each bucket, and the order of the batches. Every rank computes the
same global plan and takes every world_size-th batch, so ranks never overlap and all ranks run the
same number of steps (leftover batches that would leave some rank idle are dropped).

Resuming: ``state_dict()`` = {epoch, batches_consumed, seed}; after ``load_state_dict`` the sampler
yields exactly the remaining batches of that epoch's plan, then continues with the next epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from opensora.errors import UserError
from training.buckets import Bucket


class BucketBatchSampler(Sampler[list[int]]):
    def __init__(
        self,
        sample_buckets: Sequence[Bucket | None],
        seed: int = 0,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ):
        """sample_buckets[i] is the bucket of dataset index i (None: never sampled)."""
        if world_size < 1:
            raise UserError(f"world_size is {world_size}; must be >= 1")
        if not 0 <= rank < world_size:
            raise UserError(f"rank is {rank}; must be in [0, {world_size - 1}] for world_size {world_size}")
        self.sample_buckets = list(sample_buckets)
        self.seed = int(seed)
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.batches_consumed = 0  # of this rank's plan for self.epoch
        self._cached_plan: tuple[int, int, list[list[int]]] | None = None  # (seed, epoch, plan)

    # ------------------------------------------------------------------ planning

    def plan(self, epoch: int) -> list[list[int]]:
        """This rank's batches for ``epoch``, in order."""
        if self._cached_plan is None or self._cached_plan[:2] != (self.seed, epoch):
            global_plan = self._global_plan(epoch)
            usable = len(global_plan) - len(global_plan) % self.world_size
            self._cached_plan = (self.seed, epoch, global_plan[self.rank : usable : self.world_size])
        return self._cached_plan[2]

    def _global_plan(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, epoch])
        keep_draws = rng.random(len(self.sample_buckets))  # one draw per sample, in index order
        members: dict[str, list[int]] = {}
        sizes: dict[str, int] = {}
        for index, bucket in enumerate(self.sample_buckets):
            if bucket is None or keep_draws[index] >= bucket.keep_prob:
                continue
            members.setdefault(bucket.key, []).append(index)
            sizes[bucket.key] = bucket.batch_size

        batches: list[list[int]] = []
        for key in sorted(members):  # sorted: the rng is consumed in the same order every run
            indices = rng.permutation(np.asarray(members[key]))
            size = sizes[key]
            for start in range(0, len(indices), size):
                batch = indices[start : start + size].tolist()
                if len(batch) == size or not self.drop_last:
                    batches.append(batch)
        order = rng.permutation(len(batches))
        return [batches[i] for i in order]

    # ------------------------------------------------------------------ iteration

    def __iter__(self) -> Iterator[list[int]]:
        plan = self.plan(self.epoch)
        for position in range(self.batches_consumed, len(plan)):
            # Counted when handed out; a DataLoader prefetches ahead of training, which is why
            # the loader wrapper (video_dataset.TrainingLoader) keeps its own count for resuming.
            self.batches_consumed = position + 1
            yield list(plan[position])
        self.epoch += 1
        self.batches_consumed = 0

    def __len__(self) -> int:
        """Batches left in the current epoch."""
        return len(self.plan(self.epoch)) - self.batches_consumed

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its first batch."""
        if epoch < 0:
            raise UserError(f"epoch is {epoch}; must be >= 0")
        self.epoch = epoch
        self.batches_consumed = 0

    # ------------------------------------------------------------------ resuming

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches_consumed": self.batches_consumed, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        missing = [k for k in ("epoch", "batches_consumed", "seed") if k not in state]
        if missing:
            raise UserError(f"sampler state is missing {missing}; has {sorted(state)}")
        epoch, consumed = int(state["epoch"]), int(state["batches_consumed"])
        if epoch < 0:
            raise UserError(f"sampler state epoch is {epoch}; must be >= 0")
        self.seed = int(state["seed"])
        total = len(self.plan(epoch))
        if not 0 <= consumed <= total:
            raise UserError(
                f"sampler state batches_consumed is {consumed}; must be in [0, {total}] "
                f"(epoch {epoch} has {total} batches on rank {self.rank}; was the dataset changed?)"
            )
        self.epoch = epoch
        self.batches_consumed = consumed
