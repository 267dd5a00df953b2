"""Shapes-world normaliser for the bundled demo model.

The demo model is trained on procedurally rendered clips of one coloured shape moving on a plain
background, captioned like "a green triangle moving right on a black background". It knows no
other words, so a free-form prompt is mapped onto that vocabulary (with common synonyms) and the
missing parts are filled deterministically from the prompt's hash.
"""

from __future__ import annotations

import hashlib
import random
import re

COLOURS = ("red", "green", "blue", "yellow", "white", "purple", "orange", "cyan")
SHAPES = ("circle", "square", "triangle")
MOTIONS = ("left", "right", "up", "down", "still")
BACKGROUNDS = ("black", "gray")

_COLOUR_WORDS = {c: c for c in COLOURS} | {
    "violet": "purple", "lilac": "purple", "aqua": "cyan", "turquoise": "cyan",
    "teal": "cyan", "crimson": "red", "scarlet": "red", "lime": "green", "navy": "blue",
    "golden": "yellow", "gold": "yellow",
}
_SHAPE_WORDS = {
    "circle": "circle", "circles": "circle", "ball": "circle", "disc": "circle",
    "disk": "circle", "dot": "circle", "round": "circle", "circular": "circle",
    "sphere": "circle", "square": "square", "squares": "square", "box": "square",
    "block": "square", "cube": "square", "triangle": "triangle", "triangles": "triangle",
    "triangular": "triangle",
}
_MOTION_WORDS = {
    "left": "left", "leftward": "left", "leftwards": "left",
    "right": "right", "rightward": "right", "rightwards": "right",
    "up": "up", "upward": "up", "upwards": "up", "rising": "up", "rises": "up", "rise": "up",
    "ascending": "up", "climbing": "up", "climbs": "up", "climb": "up",
    "down": "down", "downward": "down", "downwards": "down", "falling": "down", "falls": "down",
    "fall": "down", "descending": "down", "descends": "down", "descend": "down",
    "dropping": "down", "sinking": "down", "sinks": "down", "sink": "down",
}
_STILL_WORDS = {"still", "static", "stationary", "motionless", "unmoving", "resting", "idle"}
_STILL_PHRASES = re.compile(r"\b(not mov(e|es|ing)|doesn'?t move|in place|no motion)\b")
_BACKGROUND_WORDS = {"black": "black", "dark": "black", "gray": "gray", "grey": "gray"}
# Glue words the canonical captions use or that carry no meaning for the demo world.
_FILLER = {
    "a", "an", "the", "one", "single", "on", "in", "over", "against", "with", "to", "of", "is",
    "and", "that", "it", "its", "moving", "moves", "move", "goes", "going", "go", "travelling",
    "traveling", "sliding", "slides", "drifting", "drifts", "heading", "toward", "towards",
    "background", "backdrop", "standing", "stands", "stays", "staying", "sits", "sitting",
    "shape", "coloured", "colored", "plain", "solid", "slowly", "smoothly", "across",
    "screen", "frame", "side", "video", "image", "picture", "of", "from", "bright", "not",
    "does", "motion", "place", "front", "floating", "floats", "float", "gliding", "glides",
    "glide", "drifting", "drift", "travels", "travel", "heads", "head", "holding", "holds",
    "remaining", "remains", "remain", "stay", "sit", "stand", "slide", "slides",
    # Function words: they carry no meaning the demo world could show, so they are not "unknown".
    "at", "by", "into", "onto", "through", "around", "near", "under", "above", "below", "behind",
    "beside", "while", "as", "very", "this", "there", "here", "are", "be", "for", "then", "just",
}


def shapes_world_caption(colour: str, shape: str, motion: str, background: str) -> str:
    """The canonical caption; training can reuse it so both sides build the same text."""
    article = "an" if colour[0] in "aeiou" else "a"
    action = "standing still" if motion == "still" else f"moving {motion}"
    return f"{article} {colour} {shape} {action} on a {background} background"


def _words(prompt: str) -> list[str]:
    return re.findall(r"[a-z]+", prompt.lower())


def _background(words: list[str]) -> tuple[str | None, set[int], list[str]]:
    """Background colour, the word positions it used, and unsupported background colours."""
    for i, word in enumerate(words):
        if word not in ("background", "backdrop") or i == 0:
            continue
        before = words[i - 1]
        if before in _BACKGROUND_WORDS:
            return _BACKGROUND_WORDS[before], {i - 1}, []
        if before in _COLOUR_WORDS:  # "on a blue background": not a shape colour, not supported
            return None, {i - 1}, [f"{before} background"]
    for i, word in enumerate(words):  # "on black", "against a grey ..."
        if word in ("on", "against", "over"):
            j = i + 2 if i + 1 < len(words) and words[i + 1] in ("a", "an", "the") else i + 1
            if j < len(words) and words[j] in _BACKGROUND_WORDS:
                return _BACKGROUND_WORDS[words[j]], {j}, []
    for i, word in enumerate(words):  # a lone "black" / "grey" anywhere
        if word in ("black", "gray", "grey"):
            return _BACKGROUND_WORDS[word], {i}, []
    return None, set(), []


def normalize_to_shapes_world(prompt: str) -> tuple[str, str | None]:
    """(canonical caption, notice or None). The notice says the demo model only knows the
    shapes world; it is given when the prompt had words outside that vocabulary."""
    words = _words(prompt)
    background, used, unknown = _background(words)
    colour = shape = None
    motion = "still" if _STILL_PHRASES.search(" ".join(words)) else None
    for i, word in enumerate(words):
        if i in used:
            continue
        if word in _COLOUR_WORDS and colour is None:
            colour = _COLOUR_WORDS[word]
        elif word in _SHAPE_WORDS and shape is None:
            shape = _SHAPE_WORDS[word]
        elif word in _MOTION_WORDS and motion in (None, "still"):
            motion = _MOTION_WORDS[word]  # a direction wins over "still" ("still moving left")
        elif word in _STILL_WORDS and motion is None:
            motion = "still"
        elif word in _FILLER or word in _COLOUR_WORDS or word in _SHAPE_WORDS:
            continue  # glue, or a second colour/shape: the demo shows one shape
        elif word in _MOTION_WORDS or word in _STILL_WORDS or word in _BACKGROUND_WORDS:
            continue
        else:
            unknown.append(word)

    seed = int.from_bytes(hashlib.sha256(" ".join(words).encode()).digest()[:8], "big")
    rng = random.Random(seed)
    # Draw all four every time so a missing part does not shift the other defaults.
    default_colour, default_shape = rng.choice(COLOURS), rng.choice(SHAPES)
    default_motion, default_background = rng.choice(MOTIONS), rng.choice(BACKGROUNDS)
    caption = shapes_world_caption(
        colour or default_colour,
        shape or default_shape,
        motion or default_motion,
        background or default_background,
    )
    notice = None
    if unknown:
        shown = ", ".join(dict.fromkeys(unknown[:6]))
        notice = (
            "the demo model only knows the shapes world (colours: " + ", ".join(COLOURS)
            + "; shapes: " + ", ".join(SHAPES) + "; moving left/right/up/down or standing still;"
            + f" black or gray background); words it does not know: {shown}"
        )
    return caption, notice
