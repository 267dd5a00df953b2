"""Offline refiner: expands a prompt from a small phrase vocabulary, with no server at all.

Deterministic: the phrases are drawn with a random.Random seeded from a hash of the prompt, so
the same prompt always gives the same refinement (reproducible runs, stable tests). The user's
idea stays first and untouched; everything added is present tense and adds no on-screen text.
"""

from __future__ import annotations

import hashlib
import random
import re

SCENE = (
    "The surroundings are rich in natural detail, with clear textures and a gentle sense of depth",
    "Fine details stand out against an uncluttered background",
    "The setting feels calm and lived-in, with a softly blurred background",
    "The colours are natural and the whole scene looks true to life",
    "The environment is vivid and detailed, with subtle movement in the background",
)
CAMERA = (
    "The camera slowly pushes in toward the subject",
    "The camera tracks smoothly alongside the movement",
    "A steady wide shot keeps the whole action in frame",
    "The camera pans gently from left to right",
    "The camera holds a steady medium shot at eye level",
    "A slow, low-angle shot follows the subject",
)
FRAMING = (  # t2i describes a first frame: framing instead of camera moves
    "The subject is framed in a medium shot at eye level",
    "A wide composition shows the subject within its setting",
    "A close framing shows the subject in sharp focus",
    "The subject is seen from a slightly low angle",
)
LIGHTING = (
    "Soft golden-hour sunlight gives warm tones and long shadows",
    "Diffuse overcast light keeps the shadows soft and even",
    "Bright midday sun casts crisp, clean shadows",
    "Cool morning light gives the scene a fresh blue tint",
    "Warm, low-key light creates a quiet, cinematic mood",
)
STYLE = (
    "The footage is smooth, sharp and cinematic",
    "It looks like high-definition live-action footage",
    "The motion is fluid and the image is crisp",
)

# Skip a category when the user already said something about it.
_MENTIONS_CAMERA = re.compile(
    r"\b(camera|shot|pan|pans|zoom|tracking|close-up|aerial|drone)\b", re.I
)
_MENTIONS_LIGHT = re.compile(
    r"\b(light|lit|lighting|sun|sunny|sunlight|sunset|sunrise|dawn|dusk|night|neon|shadow|"
    r"shadows|glow|moonlight|overcast)\b",
    re.I,
)


def _rng_for(prompt: str, mode: str) -> random.Random:
    # Normalise spacing and case so trivial edits of the same idea give the same result.
    key = f"{mode}\0{' '.join(prompt.lower().split())}"
    seed = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")
    return random.Random(seed)


def offline_refine(prompt: str, mode: str = "t2v") -> str:
    """`prompt` followed by a few scene / camera / lighting / style sentences."""
    idea = prompt.strip().rstrip(".").strip()
    rng = _rng_for(idea, mode)
    sentences = [idea, rng.choice(SCENE)]
    if not _MENTIONS_CAMERA.search(idea):
        sentences.append(rng.choice(FRAMING if mode == "t2i" else CAMERA))
    if not _MENTIONS_LIGHT.search(idea):
        sentences.append(rng.choice(LIGHTING))
    if mode != "t2i":
        sentences.append(rng.choice(STYLE))
    return ". ".join(sentences) + "."
