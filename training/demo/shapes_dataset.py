"""Write a rendered shapes-world dataset to disk in the official Open-Sora CSV format.

Layout::

    out_dir/data.csv        path,text,num_frames,height,width,fps,aspect_ratio (paths relative)
    out_dir/specs.jsonl     one ClipSpec per line with its path, for evals
    out_dir/videos/*.mp4
    out_dir/images/*.png    single-frame samples (always "still")
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from opensora.errors import UserError
from opensora.io.video import write_video
from training.demo.shapes_world import DEFAULT_FPS, DEFAULT_NUM_FRAMES, caption, render_clip, sample_spec

CSV_COLUMNS = ("path", "text", "num_frames", "height", "width", "fps", "aspect_ratio")


def write_dataset(
    out_dir: str | Path,
    num_clips: int,
    seed: int,
    num_images: int = 0,
    num_frames: int = DEFAULT_NUM_FRAMES,
    fps: float = DEFAULT_FPS,
    held_out: bool = False,
) -> Path:
    """Render ``num_clips`` videos and ``num_images`` PNGs and return the path of the written
    data.csv. Same arguments, same files.

    held_out=True renders only ``HELD_OUT`` combinations (an eval set)."""
    if num_clips < 0:
        raise UserError(f"num_clips is {num_clips}; must be >= 0")
    if num_images < 0:
        raise UserError(f"num_images is {num_images}; must be >= 0")
    if num_clips + num_images == 0:
        raise UserError("nothing to render: num_clips and num_images are both 0; need at least 1")
    if num_frames < 2:
        raise UserError(f"num_frames is {num_frames}; must be >= 2 for videos (images are separate)")

    out_dir = Path(out_dir)
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    if num_images:
        (out_dir / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    rows: list[dict] = []
    specs: list[dict] = []
    for index in range(num_clips + num_images):
        is_image = index >= num_clips
        spec = sample_spec(rng, held_out=held_out, num_frames=1 if is_image else num_frames, fps=fps)
        frames = render_clip(spec)
        if is_image:
            rel = f"images/image_{index - num_clips:05d}.png"
            Image.fromarray(frames[0]).save(out_dir / rel)
        else:
            rel = f"videos/clip_{index:05d}.mp4"
            write_video(out_dir / rel, frames, fps)
        text = caption(spec, np.random.default_rng(spec.seed))
        rows.append(
            {
                "path": rel,
                "text": text,
                "num_frames": spec.num_frames,
                "height": spec.height,
                "width": spec.width,
                "fps": f"{fps:g}",
                "aspect_ratio": f"{spec.height / spec.width:.4f}",  # official: height / width
            }
        )
        specs.append({"path": rel, "text": text, **spec.to_dict()})

    csv_path = out_dir / "data.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    with open(out_dir / "specs.jsonl", "w", encoding="utf-8") as f:
        for spec_row in specs:
            f.write(json.dumps(spec_row) + "\n")
    return csv_path
