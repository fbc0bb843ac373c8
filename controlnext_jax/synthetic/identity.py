"""Who a synthetic figure is: body proportions, skin, hair and clothes, drawn from an integer id.

The same id always gives the same identity (its own random stream, independent of any clip
seed), so a figure can be drawn in any motion, and the training and held-out sets are simply
disjoint id ranges (`dataset.SPLITS`). Colours are float RGB in [0, 1].
"""

from __future__ import annotations

import colorsys
import dataclasses

import numpy as np

PATTERNS = ("solid", "stripes", "checks", "dots")
HAIR_STYLES = ("short", "long", "bald")
_SALT = 0x5EED1D  # keeps identity streams apart from clip streams that use the same integers

# Skin tones from dark to light (RGB), interpolated: covers a wide range of people.
_SKIN_TONES = np.array([(0.36, 0.22, 0.15), (0.55, 0.36, 0.24), (0.76, 0.55, 0.40),
                        (0.90, 0.72, 0.58), (0.98, 0.84, 0.74)])
_HAIR_COLOURS = np.array([(0.08, 0.06, 0.05), (0.25, 0.15, 0.08), (0.50, 0.32, 0.15),
                          (0.80, 0.65, 0.35), (0.55, 0.18, 0.08), (0.70, 0.70, 0.70)])


@dataclasses.dataclass(frozen=True)
class Proportions:
    """Factors on the average body of `skeleton.AVERAGE_BONES` (1.0 = average)."""

    legs: float
    arms: float
    torso: float
    shoulders: float
    hips: float
    head: float
    build: float  # girth of limbs and torso


@dataclasses.dataclass(frozen=True)
class Identity:
    id: int
    proportions: Proportions
    stature: float  # relative height in the frame (children are smaller)
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    hair_style: str
    shirt: tuple[float, float, float]
    shirt_second: tuple[float, float, float]  # the pattern's second colour
    pattern: str
    pattern_scale: float  # period of the pattern in body units (figure height ~1)
    long_sleeves: bool
    pants: tuple[float, float, float]
    shorts: bool
    shoes: tuple[float, float, float]


def _colour(rng: np.random.Generator, saturation: tuple[float, float], value: tuple[float, float]):
    rgb = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(*saturation), rng.uniform(*value))
    return tuple(float(c) for c in rgb)


def _pick(rng: np.random.Generator, palette: np.ndarray, jitter: float) -> tuple[float, float, float]:
    # a random point between two neighbouring palette entries, then a small per-channel jitter
    i = rng.uniform(0, len(palette) - 1)
    lo = int(np.floor(i))
    rgb = palette[lo] + (palette[min(lo + 1, len(palette) - 1)] - palette[lo]) * (i - lo)
    return tuple(float(c) for c in np.clip(rgb + rng.normal(0, jitter, 3), 0, 1))


def make_identity(identity_id: int) -> Identity:
    """The identity of an integer id (any non-negative integer)."""
    if isinstance(identity_id, bool) or not isinstance(identity_id, int | np.integer) or identity_id < 0:
        raise ValueError(f"identity_id must be a non-negative integer, got {identity_id!r}")
    rng = np.random.default_rng([_SALT, int(identity_id)])
    proportions = Proportions(
        legs=rng.uniform(0.92, 1.08), arms=rng.uniform(0.92, 1.08), torso=rng.uniform(0.92, 1.08),
        shoulders=rng.uniform(0.85, 1.2), hips=rng.uniform(0.85, 1.2), head=rng.uniform(0.9, 1.12),
        build=rng.uniform(0.8, 1.3))
    shirt = _colour(rng, (0.3, 1.0), (0.35, 0.95))
    second = _colour(rng, (0.0, 0.8), (0.15, 1.0))
    if np.abs(np.subtract(shirt, second)).sum() < 0.5:  # a pattern must be visible
        second = tuple(float(1.0 - c) for c in shirt)
    return Identity(
        id=int(identity_id), proportions=proportions, stature=float(rng.uniform(0.85, 1.1)),
        skin=_pick(rng, _SKIN_TONES, 0.02), hair=_pick(rng, _HAIR_COLOURS, 0.03),
        hair_style=str(rng.choice(HAIR_STYLES, p=(0.5, 0.4, 0.1))),
        shirt=shirt, shirt_second=second, pattern=str(rng.choice(PATTERNS)),
        pattern_scale=float(rng.uniform(0.05, 0.1)), long_sleeves=bool(rng.uniform() < 0.5),
        pants=_colour(rng, (0.1, 0.8), (0.12, 0.7)), shorts=bool(rng.uniform() < 0.3),
        shoes=_colour(rng, (0.0, 0.6), (0.05, 0.5)))
