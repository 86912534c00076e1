"""Procedural image-caption pairs for the embedded tiny CLIP: scenes drawn by the demo's renderer, captions in words.

The images come from ``omniclip.data.synthetic.render_frame``, the renderer of the demo's videos, so the tiny CLIP's
features describe what those videos show. A scene holds one (sometimes two) shapes with a colour, a size
(small/medium/large) and a position on a 3 x 3 grid; a caption names some of these attributes in one of several
templates ("a photo of a small red circle on the left."). Batches are a pure function of ``(seed, index)``. Some
(shape, colour) pairs are held out of the training stream entirely, so that zero-shot accuracy on them measures
composition of seen words (CLIP, Radford et al. 2021, Sec. 3.1, zero-shot transfer with prompt ensembles).
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, replace
from typing import Literal

import numpy as np

from omniclip.data.synthetic import Shape, render_frame

Split = Literal["train", "unseen"]  # seen (shape, colour) pairs | the held-out pairs only

# Every kind and colour the demo's videos use (omniclip.data.synthetic.SHAPE_KINDS and COLORS), spelled out here so
# that a new renderer option does not silently change the pretraining stream.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "diamond")
COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow", "white", "purple", "orange", "cyan", "pink", "magenta")
# Ranges of ``Shape.scale`` (bounding-circle diameter / image side) per size word; the videos span 0.1..0.6, and the
# gaps between ranges keep the words unambiguous.
SIZES: dict[str, tuple[float, float]] = {"small": (0.12, 0.2), "medium": (0.26, 0.36), "large": (0.44, 0.6)}
# The cells of a 3 x 3 grid, left to right, top to bottom. The first phrase of each is the one zero-shot prompts use.
POSITION_PHRASES: dict[str, tuple[str, ...]] = {
    "top left": ("in the top left", "at the top left"),
    "top": ("at the top", "near the top"),
    "top right": ("in the top right", "at the top right"),
    "left": ("on the left", "at the left"),
    "centre": ("in the centre", "in the middle"),
    "right": ("on the right", "at the right"),
    "bottom left": ("in the bottom left", "at the bottom left"),
    "bottom": ("at the bottom", "near the bottom"),
    "bottom right": ("in the bottom right", "at the bottom right"),
}
# name -> (column, row) in 0..2
POSITIONS: dict[str, tuple[int, int]] = {name: (i % 3, i // 3) for i, name in enumerate(POSITION_PHRASES)}
CELL_CENTRES = (0.2, 0.5, 0.8)  # object centre per grid column/row, before jitter
CELL_JITTER = 0.08  # uniform jitter of the centre around its cell, in frame fractions
TEMPLATES: tuple[str, ...] = (
    "a photo of {}.",
    "a picture of {}.",
    "an image of {}.",
    "a rendering of {}.",
    "a drawing of {}.",
    "{}.",
    "{} on a dark background.",
    "there is {} in the picture.",
    "a video of {}.",  # the demo prompts with video templates
    "a frame of a video of {}.",
)
NOUNS = ("shape", "object")  # the noun when a caption does not name the shape
# Unseen combinations: every shape and every colour still appears in training, these pairs never do.
HELD_OUT_PAIRS: tuple[tuple[str, str], ...] = (
    ("circle", "green"),
    ("square", "purple"),
    ("triangle", "cyan"),
    ("star", "blue"),
    ("cross", "yellow"),
    ("diamond", "pink"),
)
# Every shape is drawn near upright, tilted by at most UPRIGHT_TILT degrees. A diamond is the renderer's square turned
# by 45 degrees, so those two must stay upright for the words to differ; the others are upright too: with a
# shape-only warm-up stage, upright shapes reached shape accuracy 0.59 where free rotation stayed at chance
# (docs/embedded.md, "Measured").
UPRIGHT_TILT = 15.0
MAX_SHADE = 50  # background grey level drawn uniformly in 0..MAX_SHADE, as the videos do
EMPTY_PROB = 0.03  # scenes with no object, captioned as empty (the videos' appearing/disappearing frames)
EMPTY_PHRASES = ("an empty dark background", "nothing")
# Probability that a caption names each attribute (at least one is always named).
MENTION_PROBS: dict[str, float] = {"shape": 0.8, "color": 0.5, "size": 0.4, "position": 0.6}
# Which attribute a hard-negative group varies. Colour and size are read off pixel counts and learned first; left
# alone they suppress the spatial words (shape, position), which only groups varying those make the loss need.
VARY_PROBS: dict[str, float] = {"shape": 0.4, "color": 0.1, "size": 0.1, "position": 0.4}
# The spatial stage of the curriculum: captions name only shape and position, so nothing easier can stand in for them.
SPATIAL_MENTION_PROBS: dict[str, float] = {"shape": 0.9, "color": 0.0, "size": 0.0, "position": 0.7}
SPATIAL_VARY_PROBS: dict[str, float] = {"shape": 0.5, "color": 0.0, "size": 0.0, "position": 0.5}
ATTRIBUTES = ("shape", "color", "size", "position")


@dataclass(frozen=True)
class SceneObject:
    """One object of a scene in words; ``None`` in a description means the caption leaves it unsaid."""

    shape: str | None
    color: str | None
    size: str | None
    position: str | None

    def matches(self, other: SceneObject) -> bool:
        """True when every attribute this description names equals ``other``'s."""
        return all(mine is None or mine == theirs for mine, theirs in zip(astuple(self), astuple(other), strict=True))


@dataclass
class CaptionBatch:
    """Images, captions, and what each image contains and each caption says (for the false-negative mask)."""

    images: np.ndarray  # uint8 (B, H, W, 3)
    captions: list[str]
    objects: list[tuple[SceneObject, ...]]  # per image, full descriptions
    described: list[tuple[SceneObject, ...]]  # per caption, partial descriptions

    def match_matrix(self) -> np.ndarray:
        """Bool ``(B, B)``: ``[i, j]`` when image ``i`` fits caption ``j`` (diagonal always true)."""
        return match_matrix(self.objects, self.described)


def match_matrix(objects: list[tuple[SceneObject, ...]], described: list[tuple[SceneObject, ...]]) -> np.ndarray:
    """``[i, j]`` is true when each object caption ``j`` describes is some object of image ``i``.

    A caption describing no object (an empty scene) fits only images without objects.
    """
    out = np.zeros((len(objects), len(described)), dtype=bool)
    for i, objs in enumerate(objects):
        for j, desc in enumerate(described):
            out[i, j] = all(any(d.matches(o) for o in objs) for d in desc) if desc else not objs
    return out


def noun_phrase(obj: SceneObject, noun: str = "shape", where: int = 0) -> str:
    """Words for a (partial) description: ``"a small red circle on the left"``.

    Args:
        obj: the attributes to say; ``None`` ones are left out.
        noun: the noun used when the shape is not named.
        where: which phrase of ``POSITION_PHRASES`` to use for the position.
    """
    words = [w for w in (obj.size, obj.color, obj.shape or noun) if w]
    text = f"{'an' if words[0][0] in 'aeiou' else 'a'} {' '.join(words)}"
    if obj.position:
        text += " " + POSITION_PHRASES[obj.position][where]
    return text


def allowed_pairs(split: Split) -> list[tuple[str, str]]:
    """The (shape, colour) pairs a split draws: all but the held-out ones for "train", only those for "unseen"."""
    if split == "unseen":
        return list(HELD_OUT_PAIRS)
    if split == "train":
        return [(s, c) for s in SHAPES for c in COLORS if (s, c) not in HELD_OUT_PAIRS]
    raise ValueError(f"unknown split {split!r}; expected 'train' or 'unseen'")


def class_phrases(attribute: str) -> dict[str, str]:
    """Zero-shot class name -> noun phrase naming only that attribute (``"red"`` -> ``"a red shape"``)."""
    words = {"shape": SHAPES, "color": COLORS, "size": tuple(SIZES), "position": tuple(POSITIONS)}
    if attribute not in words:
        raise ValueError(f"unknown attribute {attribute!r}; expected one of {ATTRIBUTES}")
    return {
        w: noun_phrase(SceneObject(**{a: (w if a == attribute else None) for a in ATTRIBUTES}))
        for w in words[attribute]
    }


def pair_phrases() -> dict[tuple[str, str], str]:
    """(shape, colour) -> ``"a red circle"``, for the unseen-combination test."""
    return {(s, c): noun_phrase(SceneObject(s, c, None, None)) for s in SHAPES for c in COLORS}


class CaptionGenerator:
    """Draws batches of rendered scenes and their captions; a batch depends only on ``(seed, index)``.

    Args:
        image_size: side of the square images in pixels.
        split: ``"train"`` never draws a held-out (shape, colour) pair, ``"unseen"`` draws only those.
        two_objects: probability that a scene holds a second object.
        empty: probability that a scene holds no object.
        group: consecutive scenes that differ in one attribute only (the same for the group), so that in-batch
            negatives also differ by shape or position alone, not only by the colour that is easiest to see.
        spatial: name only shape and position in captions and vary only those in groups (the curriculum's first
            stage, ``SPATIAL_MENTION_PROBS``).
    """

    def __init__(
        self,
        image_size: int = 64,
        split: Split = "train",
        two_objects: float = 0.0,
        empty: float = EMPTY_PROB,
        group: int = 1,
        spatial: bool = False,
    ) -> None:
        self.image_size = image_size
        self.split = split
        self.two_objects = two_objects
        self.empty = empty
        self.group = group
        self.mention = SPATIAL_MENTION_PROBS if spatial else MENTION_PROBS
        self.vary = SPATIAL_VARY_PROBS if spatial else VARY_PROBS
        self.pairs = allowed_pairs(split)

    def scene(self, rng: np.random.Generator) -> tuple[SceneObject, ...]:
        """No object (rarely), one, or two objects that cannot overlap (opposite sides of the grid, not large)."""
        if rng.random() < self.empty:
            return ()
        names = tuple(POSITIONS)
        positions = [names[rng.integers(len(names))]]
        if rng.random() < self.two_objects:
            col, row = POSITIONS[positions[0]]
            far = [n for n, (c, r) in POSITIONS.items() if max(abs(c - col), abs(r - row)) == 2]
            positions += [far[rng.integers(len(far))]] if far else []
        sizes = tuple(SIZES) if len(positions) == 1 else ("small", "medium")
        out = []
        for position in positions:
            shape, color = self.pairs[rng.integers(len(self.pairs))]
            out.append(SceneObject(shape, color, sizes[rng.integers(len(sizes))], position))
        return tuple(out)

    def variant(self, base: SceneObject, attribute: str, rng: np.random.Generator) -> SceneObject:
        """``base`` with another value of ``attribute`` (the shape and colour stay an allowed pair)."""
        if attribute == "shape":
            options = [s for s, c in self.pairs if c == base.color]
        elif attribute == "color":
            options = [c for s, c in self.pairs if s == base.shape]
        else:
            options = list(SIZES if attribute == "size" else POSITIONS)
        options = [o for o in options if o != getattr(base, attribute)] or options
        return replace(base, **{attribute: options[rng.integers(len(options))]})

    def render(self, objects: tuple[SceneObject, ...], rng: np.random.Generator) -> np.ndarray:
        """Draw the scene with the demo's renderer: uint8 ``(H, W, 3)``."""
        shapes = []
        for obj in objects:
            # a scene holds full descriptions: only captions leave attributes unsaid
            assert obj.shape is not None and obj.color is not None and obj.size is not None and obj.position is not None
            col, row = POSITIONS[obj.position]
            jitter = rng.uniform(-CELL_JITTER, CELL_JITTER, size=2)
            centre = (CELL_CENTRES[col] + jitter[0], CELL_CENTRES[row] + jitter[1])
            scale = rng.uniform(*SIZES[obj.size])
            angle = rng.uniform(-UPRIGHT_TILT, UPRIGHT_TILT)
            shapes.append(Shape(obj.shape, obj.color, (float(centre[0]), float(centre[1])), float(scale), float(angle)))
        shade = int(rng.integers(MAX_SHADE + 1))
        return render_frame(shapes, self.image_size, (shade, shade, shade))

    def caption(
        self, objects: tuple[SceneObject, ...], rng: np.random.Generator, must: str | None = None
    ) -> tuple[str, tuple[SceneObject, ...]]:
        """A caption naming a random subset of attributes (always ``must``), and the partial descriptions it makes."""
        template = TEMPLATES[rng.integers(len(TEMPLATES))]
        if not objects:
            return template.format(EMPTY_PHRASES[rng.integers(len(EMPTY_PHRASES))]), ()
        said = [a for a in ATTRIBUTES if rng.random() < self.mention[a] or a == must]
        if not said:
            named = [a for a in ATTRIBUTES if self.mention[a] > 0]
            said = [named[rng.integers(len(named))]]
        if len(objects) > 1 and rng.random() < 0.3:
            objects = objects[:1]  # a caption may name only one of two objects
        described = tuple(SceneObject(**{a: getattr(o, a) if a in said else None for a in ATTRIBUTES}) for o in objects)
        noun = NOUNS[rng.integers(len(NOUNS))]
        where = int(rng.integers(2))
        phrase = " and ".join(noun_phrase(d, noun, where) for d in described)
        return template.format(phrase), described

    def batch(self, seed: int, index: int, batch_size: int) -> CaptionBatch:
        """Batch ``index`` of the stream ``seed``: the same arguments always give the same batch."""
        rng = np.random.default_rng([seed, index, 0 if self.split == "train" else 1])
        images, captions, objects, described = [], [], [], []
        base: tuple[SceneObject, ...] = ()
        for i in range(batch_size):
            if i % self.group == 0:
                objs = base = self.scene(rng)
                attribute = str(rng.choice(ATTRIBUTES, p=[self.vary[a] for a in ATTRIBUTES]))
            elif len(base) == 1:
                objs = (self.variant(base[0], attribute, rng),)
            else:
                objs = self.scene(rng)  # empty and two-object scenes do not make groups
            must = attribute if len(base) == 1 and self.group > 1 else None
            images.append(self.render(objs, rng))
            text, desc = self.caption(objs, rng, must)
            objects.append(objs)
            captions.append(text)
            described.append(desc)
        return CaptionBatch(np.stack(images), captions, objects, described)
