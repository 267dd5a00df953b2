"""The "shapes world": procedurally rendered clips the bundled demo model is trained on.

One object (circle, square or triangle) in one of eight colours on a plain black or gray
background, moving left, right, up or down at a steady speed, or standing still. The object keeps
its size and stays fully inside the frame for the whole clip; a moving object covers at least a
third of the frame. Edges are anti-aliased, interiors keep the exact colour.

Everything is drawn from a ``ClipSpec``, so a spec alone reproduces its clip and its caption.
``HELD_OUT`` lists (colour, shape, motion, background) combinations training never sees, so an
eval can test compositional generalisation on them.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np

from opensora.errors import UserError
from opensora.presets import PRESET_DIR
from opensora.refine import shapes_world as vocabulary
from opensora.refine.shapes_world import MOTIONS, SHAPES  # noqa: F401 - the words live there, re-exported
from training.buckets import load_bucket_config

# The words (and their order, which seeds draw from) come from the prompt normaliser's vocabulary;
# here only how each looks.
_RGB = {
    "red": (230, 30, 30),
    "green": (30, 200, 30),
    "blue": (40, 60, 230),
    "yellow": (240, 220, 30),
    "white": (240, 240, 240),
    "purple": (150, 50, 200),
    "orange": (250, 140, 20),
    "cyan": (30, 210, 220),
    "black": (0, 0, 0),
    "gray": (110, 110, 110),
}
COLOURS: dict[str, tuple[int, int, int]] = {name: _RGB[name] for name in vocabulary.COLOURS}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {name: _RGB[name] for name in vocabulary.BACKGROUNDS}

DEFAULT_NUM_FRAMES = 33
DEFAULT_FPS = 12.0
DEMO_BUCKETS_PATH = PRESET_DIR / "buckets-demo.toml"

MIN_TRAVEL_FRACTION = 1 / 3  # a moving object crosses at least this much of the frame
SIZE_FRACTION_RANGE = (0.2, 0.32)  # object size relative to the shorter frame side
EDGE_MARGIN = 1.0  # pixels kept free at the border, so anti-aliased edges stay inside too

# (dx, dy) per frame direction; image rows grow downward, so "up" is -y.
_DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "still": (0, 0)}


@dataclass(frozen=True)
class Combo:
    colour: str
    shape: str
    motion: str
    background: str


# Eight combinations never rendered for training: every colour once, every shape, motion and
# background at least once, so each held-out clip is made only of parts seen in training.
HELD_OUT: tuple[Combo, ...] = (
    Combo("red", "circle", "left", "black"),
    Combo("green", "square", "right", "gray"),
    Combo("blue", "triangle", "up", "black"),
    Combo("yellow", "circle", "down", "gray"),
    Combo("white", "square", "still", "black"),
    Combo("purple", "triangle", "left", "gray"),
    Combo("orange", "square", "up", "black"),
    Combo("cyan", "triangle", "down", "gray"),
)
_HELD_OUT_SET = frozenset(HELD_OUT)


@dataclass(frozen=True)
class ClipSpec:
    shape: str
    colour: str
    motion: str
    background: str
    aspect_ratio: str  # bucket name, e.g. "16:9" (width:height)
    num_frames: int
    height: int
    width: int
    size: float  # object bounding-box side, pixels
    start_x: float  # object centre in the first frame, pixels from the left edge
    start_y: float  # ... pixels from the top edge
    travel: float  # pixels moved over the whole clip along the motion direction (0 if still)
    fps: float = DEFAULT_FPS
    seed: int = 0  # seeds anything drawn later from this spec (the caption's wording)

    @property
    def combo(self) -> Combo:
        return Combo(self.colour, self.shape, self.motion, self.background)

    def to_dict(self) -> dict:
        return asdict(self)

    def centres(self) -> np.ndarray:
        """Object centre per frame, (T, 2) as (x, y): a straight line at constant speed."""
        dx, dy = _DIRECTIONS[self.motion]
        progress = np.linspace(0.0, 1.0, self.num_frames) if self.num_frames > 1 else np.zeros(1)
        x = self.start_x + dx * self.travel * progress
        y = self.start_y + dy * self.travel * progress
        return np.stack([x, y], axis=1)


@functools.lru_cache(maxsize=1)
def demo_frame_sizes() -> dict[str, tuple[int, int]]:
    """(height, width) per aspect-ratio name, from presets/buckets-demo.toml (one source of truth
    for the renderer and the demo trainer)."""
    config = load_bucket_config(DEMO_BUCKETS_PATH)
    return {ar.name: (ar.height, ar.width) for ar in config.resolutions[0].aspect_ratios}


def is_held_out(combo: Combo) -> bool:
    return combo in _HELD_OUT_SET


def sample_spec(
    rng: np.random.Generator,
    held_out: bool = False,
    num_frames: int = DEFAULT_NUM_FRAMES,
    fps: float = DEFAULT_FPS,
    aspect_ratio: str | None = None,
    frame_sizes: dict[str, tuple[int, int]] | None = None,
) -> ClipSpec:
    """Draw a random clip spec. held_out=False never yields a ``HELD_OUT`` combination;
    held_out=True yields only those. num_frames=1 (an image) always stands still."""
    if num_frames < 1:
        raise UserError(f"num_frames is {num_frames}; must be >= 1")
    sizes = frame_sizes or demo_frame_sizes()
    if aspect_ratio is not None and aspect_ratio not in sizes:
        raise UserError(f"aspect_ratio is {aspect_ratio!r}; allowed: {sorted(sizes)}")

    motions = ("still",) if num_frames == 1 else MOTIONS
    if held_out:
        candidates = [c for c in HELD_OUT if c.motion in motions]
        combo = candidates[int(rng.integers(len(candidates)))]
    else:
        while True:  # rejection: HELD_OUT is 8 of 240 combinations, so this ends fast
            combo = Combo(
                colour=str(rng.choice(list(COLOURS))),
                shape=str(rng.choice(SHAPES)),
                motion=str(rng.choice(motions)),
                background=str(rng.choice(list(BACKGROUNDS))),
            )
            if not is_held_out(combo):
                break

    ar = aspect_ratio or str(rng.choice(sorted(sizes)))
    height, width = sizes[ar]
    size = float(rng.uniform(*SIZE_FRACTION_RANGE) * min(height, width))
    start_x, start_y, travel = _sample_path(rng, combo.motion, height, width, size)
    return ClipSpec(
        shape=combo.shape,
        colour=combo.colour,
        motion=combo.motion,
        background=combo.background,
        aspect_ratio=ar,
        num_frames=num_frames,
        height=height,
        width=width,
        size=size,
        start_x=start_x,
        start_y=start_y,
        travel=travel,
        fps=fps,
        seed=int(rng.integers(2**31)),
    )


def _sample_path(
    rng: np.random.Generator, motion: str, height: int, width: int, size: float
) -> tuple[float, float, float]:
    """Start centre and travel such that the object stays inside for the whole clip."""
    lo = EDGE_MARGIN + size / 2  # lowest centre coordinate that keeps the object inside
    hi_x, hi_y = width - lo, height - lo
    dx, dy = _DIRECTIONS[motion]
    if motion == "still":
        return float(rng.uniform(lo, hi_x)), float(rng.uniform(lo, hi_y)), 0.0

    extent = width if dx else height
    room = (hi_x if dx else hi_y) - lo  # how far the centre can move along the motion axis
    min_travel = MIN_TRAVEL_FRACTION * extent
    if room < min_travel:
        raise UserError(
            f"object size {size:.1f} leaves {room:.1f} px of room in a {height}x{width} frame; "
            f"motion needs >= {min_travel:.1f} px"
        )
    travel = float(rng.uniform(min_travel, room))
    along = float(rng.uniform(lo, lo + room - travel))  # start of the trailing position
    across = float(rng.uniform(lo, hi_y if dx else hi_x))
    if dx:
        return (along if dx > 0 else along + travel), across, travel
    return across, (along if dy > 0 else along + travel), travel


# --------------------------------------------------------------------------- rendering


def render_clip(spec: ClipSpec) -> np.ndarray:
    """uint8 (T, H, W, 3) RGB frames of ``spec``."""
    alpha = render_coverage(spec)[..., None]
    background = np.array(BACKGROUNDS[spec.background], dtype=np.float32)
    colour = np.array(COLOURS[spec.colour], dtype=np.float32)
    frames = background + (colour - background) * alpha
    return np.rint(frames).astype(np.uint8)


def render_coverage(spec: ClipSpec) -> np.ndarray:
    """float32 (T, H, W): the share of each pixel the object covers, 0 to 1."""
    centres = spec.centres()
    xs = np.arange(spec.width, dtype=np.float32) + 0.5  # pixel centres
    ys = np.arange(spec.height, dtype=np.float32) + 0.5
    dx = xs[None, None, :] - centres[:, 0, None, None].astype(np.float32)  # (T, 1, W)
    dy = ys[None, :, None] - centres[:, 1, None, None].astype(np.float32)  # (T, H, 1)
    distance = _signed_distance(spec.shape, dx, dy, spec.size / 2)  # (T, H, W), < 0 inside
    # A one-pixel ramp across the edge, exactly 1 inside.
    return np.clip(0.5 - distance, 0.0, 1.0)


def _signed_distance(shape: str, dx: np.ndarray, dy: np.ndarray, half: float) -> np.ndarray:
    if shape == "circle":
        return np.sqrt(dx * dx + dy * dy) - half
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) - half
    if shape == "triangle":
        # Apex up, base at the bottom of the size x size box: inside all three edges.
        base = dy - half
        # Side edges run from the apex (0, -half) to (+-half, +half); slope 2 in |x| per y.
        norm = np.sqrt(5.0)
        side = (2.0 * np.abs(dx) - (dy + half)) / norm
        return np.maximum(base, side)
    raise UserError(f"shape is {shape!r}; allowed: {list(SHAPES)}")


# --------------------------------------------------------------------------- captions

_HORIZONTAL_PARTICIPLES = (
    "moving {d}", "moving {d}ward", "moving {d}wards", "moving to the {d}",
    "drifting {d}", "sliding to the {d}", "gliding {d}ward", "travelling {d}", "heading {d}",
)
_HORIZONTAL_VERBS = (
    "moves {d}", "moves to the {d}", "drifts {d}ward", "slides {d}", "glides {d}wards",
    "travels to the {d}", "heads {d}",
)
_HORIZONTAL_TAGS = ("moving {d}", "{d}ward", "going {d}", "{d}ward motion")

_PARTICIPLES: dict[str, tuple[str, ...]] = {
    "left": tuple(p.format(d="left") for p in _HORIZONTAL_PARTICIPLES),
    "right": tuple(p.format(d="right") for p in _HORIZONTAL_PARTICIPLES),
    "up": ("moving up", "moving upward", "moving upwards", "rising", "drifting upward",
           "floating up", "sliding up", "gliding upwards", "climbing"),
    "down": ("moving down", "moving downward", "moving downwards", "falling", "sinking",
             "drifting downward", "sliding down", "dropping down", "descending"),
    "still": ("standing still", "staying still", "not moving", "resting in place",
              "holding still", "remaining stationary", "sitting motionless"),
}
_VERBS: dict[str, tuple[str, ...]] = {
    "left": tuple(p.format(d="left") for p in _HORIZONTAL_VERBS),
    "right": tuple(p.format(d="right") for p in _HORIZONTAL_VERBS),
    "up": ("moves up", "moves upward", "rises", "drifts upward", "floats upwards", "slides up",
           "climbs"),
    "down": ("moves down", "moves downward", "falls", "sinks", "drifts downward", "slides down",
             "descends"),
    "still": ("stays still", "stands still", "does not move", "remains stationary",
              "sits motionless", "stays in place"),
}
_TAGS: dict[str, tuple[str, ...]] = {
    "left": tuple(p.format(d="left") for p in _HORIZONTAL_TAGS),
    "right": tuple(p.format(d="right") for p in _HORIZONTAL_TAGS),
    "up": ("moving up", "upward", "upwards", "going up", "rising"),
    "down": ("moving down", "downward", "downwards", "going down", "falling"),
    "still": ("static", "still", "stationary", "motionless", "not moving"),
}
_BACKGROUND_WORDS = {"black": ("black",), "gray": ("gray", "grey")}
_BACKGROUND_PHRASES = (
    "on a {bg} background", "against a {bg} background", "over a plain {bg} background",
    "in front of a {bg} backdrop", "on {bg}",
)

# Fields: a/A (article + colour), colour, shape, part (participle), verb, tag, bg, on_bg.
_VIDEO_TEMPLATES = (
    "{a} {colour} {shape} {part}",
    "{A} {colour} {shape} {verb} {on_bg}.",
    "{colour} {shape}, {tag}, {bg} background",
    "{A} {colour} {shape} {part} {on_bg}.",
    "{bg} background, {colour} {shape} {part}",
    "video of {a} {colour} {shape} {part} {on_bg}",
    "{A} {colour} {shape} {verb}.",
    "A {bg} background with {a} {colour} {shape} {part}.",
    "{colour} {shape} {part}",
    "The {colour} {shape} {verb} {on_bg}.",
    "{a} {colour} {shape} {on_bg}, {part}",
)
_IMAGE_TEMPLATES = (
    "{a} {colour} {shape} {on_bg}",
    "{A} {colour} {shape} {on_bg}.",
    "{colour} {shape}, {bg} background",
    "an image of {a} {colour} {shape} {on_bg}",
    "A {bg} background with {a} {colour} {shape}.",
    "{colour} {shape}, {tag}, {bg} background",
    "{a} {colour} {shape} {part}",
)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption(spec: ClipSpec, rng: np.random.Generator) -> str:
    """One of many phrasings of ``spec``. Always names the colour and the shape; names the
    motion with one of several synonyms (images may leave it out)."""
    def pick(options: tuple[str, ...]) -> str:
        return options[int(rng.integers(len(options)))]

    bg = pick(_BACKGROUND_WORDS[spec.background])
    article = _article(spec.colour)
    fields = {
        "a": article,
        "A": article.capitalize(),
        "colour": spec.colour,
        "shape": spec.shape,
        "part": pick(_PARTICIPLES[spec.motion]),
        "verb": pick(_VERBS[spec.motion]),
        "tag": pick(_TAGS[spec.motion]),
        "bg": bg,
        "on_bg": pick(_BACKGROUND_PHRASES).format(bg=bg),
    }
    templates = _IMAGE_TEMPLATES if spec.num_frames == 1 else _VIDEO_TEMPLATES
    text = pick(templates).format(**fields)
    return text[0].upper() + text[1:] if text.endswith(".") else text
