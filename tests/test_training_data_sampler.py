"""BucketBatchSampler: one bucket per batch, deterministic, keep-probability, resumable, ranks."""

import itertools

import pytest

from opensora.errors import UserError
from training.bucket_sampler import BucketBatchSampler
from training.buckets import Bucket


def _bucket(name: str, batch_size: int, keep_prob: float = 1.0, num_frames: int = 33) -> Bucket:
    return Bucket(name, "1:1", 64, 64, num_frames, batch_size, keep_prob)


A, B, C = _bucket("a", 4), _bucket("b", 3), _bucket("c", 2, num_frames=1)


def _samples() -> list:
    # 23 x A, 14 x B, 9 x C, and some samples without a bucket, interleaved.
    pattern = [A, B, None, A, C, A, B]
    return list(itertools.islice(itertools.cycle(pattern), 70))


def test_batches_stay_within_one_bucket_and_are_full():
    samples = _samples()
    sampler = BucketBatchSampler(samples, seed=0)
    batches = list(sampler)
    assert batches and len(batches) == len(sampler.plan(0))
    seen = [i for batch in batches for i in batch]
    assert len(seen) == len(set(seen))
    for batch in batches:
        buckets = {samples[i] for i in batch}
        assert len(buckets) == 1 and None not in buckets
        assert len(batch) == buckets.pop().batch_size
    # drop_last drops at most batch_size - 1 samples per bucket
    per_bucket = {b: sum(s == b for s in samples) for b in (A, B, C)}
    for b, count in per_bucket.items():
        assert sum(samples[batch[0]] == b for batch in batches) == count // b.batch_size


def test_keep_incomplete_batches():
    samples = _samples()
    batches = list(BucketBatchSampler(samples, seed=0, drop_last=False))
    seen = sorted(i for batch in batches for i in batch)
    assert seen == [i for i, s in enumerate(samples) if s is not None]


def test_deterministic_per_seed_and_epoch():
    samples = _samples()
    first = BucketBatchSampler(samples, seed=3)
    second = BucketBatchSampler(samples, seed=3)
    epoch0 = list(first)
    assert epoch0 == list(second)
    epoch1 = list(first)  # iterating to the end moves to the next epoch
    assert first.epoch == 2 and epoch1 != epoch0
    second.set_epoch(1)
    assert list(second) == epoch1
    assert list(BucketBatchSampler(samples, seed=4)) != epoch0


def test_keep_probability_is_deterministic():
    samples = [_bucket("half", 1, keep_prob=0.5)] * 1000
    sampler = BucketBatchSampler(samples, seed=0)
    kept = [len(sampler.plan(e)) for e in range(3)]
    assert all(420 < k < 580 for k in kept)
    assert sampler.plan(0) != sampler.plan(1)
    assert BucketBatchSampler(samples, seed=0).plan(1) == sampler.plan(1)


@pytest.mark.parametrize("stop_after", [0, 1, 5])
def test_resume_mid_epoch_yields_exactly_the_rest(stop_after):
    samples = _samples()
    reference = BucketBatchSampler(samples, seed=11)
    reference.set_epoch(2)
    full_epoch = list(reference)
    next_epoch = list(reference)

    interrupted = BucketBatchSampler(samples, seed=11)
    interrupted.set_epoch(2)
    iterator = iter(interrupted)
    done = [next(iterator) for _ in range(stop_after)]
    state = interrupted.state_dict()
    assert state == {"epoch": 2, "batches_consumed": stop_after, "seed": 11}

    resumed = BucketBatchSampler(samples, seed=0)  # the seed comes from the state
    resumed.load_state_dict(state)
    assert len(resumed) == len(full_epoch) - stop_after
    assert done + list(resumed) == full_epoch
    assert list(resumed) == next_epoch


def test_ranks_split_batches_without_overlap():
    samples = _samples()
    full = BucketBatchSampler(samples, seed=5).plan(0)
    ranks = [BucketBatchSampler(samples, seed=5, rank=r, world_size=3).plan(0) for r in range(3)]
    assert len({len(p) for p in ranks}) == 1  # same number of steps on every rank
    flat = [tuple(b) for p in ranks for b in p]
    assert len(flat) == len(set(flat)) == len(full) - len(full) % 3
    assert set(flat) <= {tuple(b) for b in full}


def test_bad_arguments_and_state():
    with pytest.raises(UserError, match=r"rank is 2; must be in \[0, 1\]"):
        BucketBatchSampler(_samples(), rank=2, world_size=2)
    sampler = BucketBatchSampler(_samples())
    with pytest.raises(UserError, match="missing"):
        sampler.load_state_dict({"epoch": 0})
    with pytest.raises(UserError, match=r"batches_consumed is 999; must be in \[0, "):
        sampler.load_state_dict({"epoch": 0, "batches_consumed": 999, "seed": 0})
