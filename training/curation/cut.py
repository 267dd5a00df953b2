"""Write frame ranges of one video as separate clips, in one decoding pass, with PyAV (no ffmpeg
binary). Frames are streamed from the decoder to one encoder at a time, so memory stays at a
few frames however long the scenes are.

Clips are H.264 / yuv420p mp4 with the index at the front, like every video this project writes;
odd heights/widths lose their last row/column (yuv420p needs even sizes; cropping keeps every
other pixel where it was). Each clip is written under a hidden name and renamed when complete.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

# Visually lossless like opensora/io/video.py, but a faster preset: a curation run encodes every
# clip of a dataset, and the trainer decodes them rather than anyone watching them.
CRF = "18"
PRESET = "veryfast"


@dataclass(frozen=True)
class Clip:
    path: Path
    num_frames: int
    height: int
    width: int


class _ClipWriter:
    def __init__(self, target: Path, rate: Fraction, width: int, height: int, rotation: int):
        self.target = target
        self.partial = target.with_name(f".{target.name}.partial.mp4")
        self.width, self.height = width - width % 2, height - height % 2
        self.container = av.open(str(self.partial), mode="w", format="mp4", options={"movflags": "+faststart"})
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.stream.width, self.stream.height, self.stream.pix_fmt = self.width, self.height, "yuv420p"
        self.stream.options = {"crf": CRF, "preset": PRESET}
        if rotation:
            self.stream.set_display_rotation(rotation)
        self.time_base = 1 / rate
        self.frames = 0

    def write(self, frame: av.VideoFrame) -> None:
        if (frame.width, frame.height) == (self.width, self.height):
            out = frame.reformat(format="yuv420p")
        else:
            rgb = frame.to_ndarray(format="rgb24")[: self.height, : self.width]
            out = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        out.pts = self.frames  # in the stream's time base 1/rate: one tick per frame
        out.time_base = self.time_base
        self.container.mux(self.stream.encode(out))
        self.frames += 1

    def close(self) -> Clip:
        self.container.mux(self.stream.encode())  # flush delayed frames
        self.container.close()
        os.replace(self.partial, self.target)
        return Clip(self.target, self.frames, self.height, self.width)

    def abort(self) -> None:
        try:
            self.container.close()
        finally:
            self.partial.unlink(missing_ok=True)


def cut_clips(source: Path, ranges: Sequence[tuple[int, int]], targets: Sequence[Path], rotation: int = 0) -> list[Clip]:
    """ranges: sorted, non-overlapping [start, end) frame ranges; one clip per range that has
    frames (a range past the decodable end gives none)."""
    clips: list[Clip] = []
    queue = list(zip(ranges, targets))
    writer: _ClipWriter | None = None
    try:
        with av.open(str(source)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = Fraction(stream.average_rate or stream.guessed_rate).limit_denominator(1001)
            for number, frame in enumerate(container.decode(stream)):
                while queue and number >= queue[0][0][1]:  # past the current range: finish it
                    queue.pop(0)
                    if writer is not None:
                        clips.append(writer.close())
                        writer = None
                if not queue:
                    break
                (start, _), target = queue[0]
                if number >= start:
                    if writer is None:
                        target.parent.mkdir(parents=True, exist_ok=True)
                        writer = _ClipWriter(target, rate, frame.width, frame.height, rotation)
                    writer.write(frame)
            if writer is not None:  # the file ended inside the last range
                clips.append(writer.close())
                writer = None
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return clips
