"""VideoTextDataset + make_dataloader: shapes, ranges, fps striding, bad files, resuming."""

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from opensora.errors import UserError
from opensora.io.video import write_video
from training.buckets import bucket_config_from_dict, load_bucket_config
from training.demo.shapes_dataset import write_dataset
from training.video_dataset import collate_samples, make_dataloader
from training.video_transforms import resize_center_crop

DEMO_BUCKETS = Path(__file__).resolve().parent.parent / "presets" / "buckets-demo.toml"


def _small_buckets(fps=12, frames=((1, 2), (9, 2))):
    """The demo sizes with small batches, so a handful of samples makes several batches."""
    demo = load_bucket_config(DEMO_BUCKETS)
    ars = [{"name": a.name, "height": a.height, "width": a.width} for a in demo.resolutions[0].aspect_ratios]
    return bucket_config_from_dict(
        {
            "fps": fps,
            "resolutions": [
                {
                    "name": "128px",
                    "aspect_ratios": ars,
                    "frames": [{"num_frames": n, "batch_size": b} for n, b in frames],
                }
            ],
        }
    )


@pytest.fixture(scope="module")
def shapes_csv(tmp_path_factory) -> Path:
    # Every clip 1:1 would be nicer for batching, but mixed ratios exercise the buckets.
    return write_dataset(tmp_path_factory.mktemp("shapes"), num_clips=12, seed=1, num_images=4, num_frames=9)


def _all_batches(loader) -> list[dict]:
    return list(loader)


def test_batches_have_bucket_shapes_and_range(shapes_csv):
    config = _small_buckets()
    loader = make_dataloader(shapes_csv, config, seed=0, drop_last=False)
    batches = _all_batches(loader)
    assert sum(len(b["text"]) for b in batches) == 16
    for batch in batches:
        video = batch["video"]
        b, c, t, h, w = video.shape
        assert c == 3 and t in (1, 9) and b == len(batch["text"]) == len(batch["path"])
        assert (h, w) in {(128, 128), (96, 160), (160, 96)}
        assert video.dtype == torch.float32 and video.min() >= -1 and video.max() <= 1
        if t > 1:
            assert batch["fps"].tolist() == [12.0] * b
        assert batch["num_skipped"] == 0
    assert min(b["video"].min() for b in batches) < -0.9  # black backgrounds reach -1
    assert loader.skipped_samples == 0
    summary = loader.summary.describe()
    assert "16 usable samples" in summary and "skipped 0 bad rows" in summary


def test_fps_striding_takes_every_other_frame_of_24fps(tmp_path):
    # Frame t is a flat gray of level 6 t, so the decoded level tells which source frame it is.
    levels = np.arange(40) * 6
    frames = np.broadcast_to(levels[:, None, None, None], (40, 128, 128, 3)).astype(np.uint8)
    write_video(tmp_path / "ramp.mp4", frames, fps=24)
    csv_path = tmp_path / "ramp.csv"
    csv_path.write_text("path,text\nramp.mp4,a ramp\n")

    loader = make_dataloader(csv_path, _small_buckets(fps=12, frames=((17, 1),)), seed=0)
    (batch,) = _all_batches(loader)
    video = batch["video"][0]  # (3, 17, 128, 128); 40 frames at 24 fps = 20 at 12 fps -> 17
    assert video.shape == (3, 17, 128, 128) and batch["fps"].tolist() == [12.0]
    decoded = ((video[:, :, 64, 64].mean(0) + 1) / 2 * 255).numpy()
    steps = np.diff(decoded)
    assert np.allclose(steps, 12, atol=2.5), steps  # two source frames per output frame
    assert decoded[0] / 6 == pytest.approx(round(decoded[0] / 6), abs=0.5)

    # Without a target fps the source rate is kept: consecutive source frames.
    loader = make_dataloader(csv_path, _small_buckets(fps=None, frames=((33, 1),)), seed=0)
    (batch,) = _all_batches(loader)
    assert batch["fps"].tolist() == [24.0]
    assert np.allclose(np.diff(((batch["video"][0, :, :, 64, 64].mean(0) + 1) / 2 * 255).numpy()), 6, atol=2.5)


def test_corrupt_file_is_skipped_and_counted(shapes_csv, tmp_path, caplog):
    rows = list(csv.DictReader(open(shapes_csv, newline="")))
    for r in rows:
        r["path"] = str(shapes_csv.parent / r["path"])
    # Declared sizes mean the CSV loader does not probe it, so the break shows up at decode time.
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x13" * 4000)
    first = rows[0]
    rows.insert(1, {**first, "path": str(tmp_path / "broken.mp4"), "text": "broken"})
    rows.append({**first, "path": str(tmp_path / "short.mp4"), "text": "too short"})  # not there
    rows.append({**first, "num_frames": "4", "text": "fits no bucket"})
    csv_path = tmp_path / "with_bad.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    videos_only = _small_buckets(frames=((9, 1),))
    with caplog.at_level(logging.WARNING):
        loader = make_dataloader(csv_path, videos_only, seed=0)
        texts = [t for batch in _all_batches(loader) for t in batch["text"]]
    assert loader.skipped_samples == 1 and loader.dataloader.dataset.skipped == 1
    assert "broken" not in texts and sorted(texts) == sorted(r["text"] for r in rows[:13] if r["text"] != "broken")
    assert len(loader.summary.csv.skipped) == 1 and len(loader.summary.assignment.unassigned) == 5
    assert "skipping sample" in caplog.text and "broken.mp4" in caplog.text
    assert "4 frames (4 usable) fit no bucket; frame buckets: [9]" in caplog.text


def test_no_usable_samples_is_a_clear_error(shapes_csv):
    with pytest.raises(UserError, match=r"no usable samples .* 9 frames \(9 usable\) fit no bucket"):
        make_dataloader(shapes_csv, _small_buckets(frames=((17, 1),)).without_image_buckets())


@pytest.mark.parametrize("num_workers", [0, 1])
def test_resume_mid_epoch_through_the_loader(shapes_csv, num_workers):
    config = _small_buckets()
    full = [b["path"] for b in _all_batches(make_dataloader(shapes_csv, config, seed=7))]
    assert len(full) >= 4

    # With a worker the DataLoader prefetches batches ahead; the state still counts only the
    # batches the training loop received.
    loader = make_dataloader(shapes_csv, config, seed=7, num_workers=num_workers)
    seen = []
    for batch in loader:
        seen.append(batch["path"])
        if len(seen) == 3:
            break
    state = loader.state_dict()
    assert state == {"epoch": 0, "batches_consumed": 3, "seed": 7}

    resumed = make_dataloader(shapes_csv, config, batch_sampler_state=state, seed=0)
    assert seen + [b["path"] for b in resumed] == full
    assert resumed.state_dict() == {"epoch": 1, "batches_consumed": 0, "seed": 7}
    # Iterating the interrupted loader again also continues after the last delivered batch.
    assert seen + [b["path"] for b in loader] == full


def test_videos_give_single_frames_to_image_buckets(shapes_csv):
    loader = make_dataloader(shapes_csv, _small_buckets(frames=((1, 4),)), seed=0)
    batches = _all_batches(loader)
    assert sum(len(b["text"]) for b in batches) >= 12  # 16 samples; partial batches dropped
    assert all(b["video"].shape[2] == 1 for b in batches)


def test_worker_processes_report_skips(shapes_csv, tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 500)
    first = next(csv.DictReader(open(shapes_csv, newline="")))
    csv_path = tmp_path / "w.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(first))
        writer.writeheader()
        writer.writerow({**first, "path": str(shapes_csv.parent / first["path"])})
        writer.writerow({**first, "path": str(tmp_path / "broken.mp4")})
    config = _small_buckets(frames=((9, 2),))
    loader = make_dataloader(csv_path, config, num_workers=1, seed=0)
    batches = _all_batches(loader)
    assert [len(b["text"]) for b in batches] == [1] and loader.skipped_samples == 1


def test_collate_of_only_failures():
    batch = collate_samples([None, None])
    assert batch["video"] is None and batch["num_skipped"] == 2 and batch["text"] == []


def test_resize_center_crop():
    frames = np.zeros((3, 50, 100, 3), dtype=np.uint8)
    frames[:, :, 25:75] = 200  # a centred bright square column
    out = resize_center_crop(frames, 32, 32)
    assert out.shape == (3, 3, 32, 32) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    # Scaled to 32x64, the centre 32 columns are exactly the bright band.
    assert torch.allclose(out[:, :, 4:-4, 4:-4], torch.tensor(200 / 255), atol=0.02)
    same = resize_center_crop(frames, 50, 100)
    assert torch.equal(same, torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255)
    tall = resize_center_crop(np.zeros((1, 300, 100, 3), dtype=np.uint8), 64, 48)
    assert tall.shape == (1, 3, 64, 48)
