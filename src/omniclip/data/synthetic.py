"""Synthetic videos whose classes differ only by motion: rendered shapes, real mp4 files, annotation lists.

Each video shows one shape (random kind, colour, background shade and position) doing what its class says:
moving left/right/up/down, growing, shrinking, appearing, disappearing, turning blue/red (red to blue and back),
brightening, darkening, or two shapes approaching/separating (also available: rotating clockwise/counterclockwise,
blinking, rotating, standing still). Paired classes visit the same positions, sizes, angles, colours, brightness and
visibility counts in opposite orders, so a frame-average model (which is permutation-invariant over frames,
METHOD.md) cannot separate them, while a model that sees temporal order can. Class names are plain words for text
prompts ("a circle moving left").

A ``Scene`` adds what makes the task harder without giving the order away: a small grey distractor moving between
two random points, drifting background stripes, per-frame brightness flicker, pixel noise, and a change that happens in
a random part of the clip at a random speed. Every addition is drawn so that a clip played backwards is as likely
as the clip itself (start and end points drawn alike, noise independent per frame), so twins stay indistinguishable
to a frame average.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from omniclip.data.encode import write_video
from omniclip.data.records import write_class_names
from omniclip.files import write_text

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 240),
    "yellow": (240, 220, 40),
    "white": (245, 245, 245),
    "purple": (150, 60, 200),
    "orange": (250, 140, 30),
    "cyan": (40, 220, 230),
    "pink": (250, 120, 190),
    "magenta": (230, 40, 220),
}
SHAPE_KINDS = ("circle", "square", "triangle", "star", "cross", "diamond")
DEFAULT_CLASSES = (
    "moving left",
    "moving right",
    "moving up",
    "moving down",
    "growing",
    "shrinking",
    "appearing",
    "disappearing",
)


@dataclass(frozen=True)
class Shape:
    """A shape to render."""

    kind: str  # circle, square, triangle, star, cross or diamond
    color: tuple[int, int, int] | str  # RGB triple or a name from ``COLORS``
    center: tuple[float, float]  # (x, y) as fractions of width and height
    scale: float  # diameter of the shape's bounding circle as a fraction of the shorter image side
    angle: float = 0.0  # rotation in degrees (counter-clockwise)


def _polygon(dx: np.ndarray, dy: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test for every pixel (vectorised over pixels)."""
    inside = np.zeros(dx.shape, dtype=bool)
    x0, y0 = verts[-1]
    for x1, y1 in verts:
        crosses = (y1 > dy) != (y0 > dy)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = (x0 - x1) * (dy - y1) / (y0 - y1) + x1
        inside ^= crosses & (dx < x_at)
        x0, y0 = x1, y1
    return inside


_TRIANGLE = np.array([[0.0, -1.0], [0.866, 0.5], [-0.866, 0.5]])
_STAR_ANGLES = -np.pi / 2 + np.arange(10) * np.pi / 5  # five points: outer and inner vertices alternate
_STAR_RADII = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
_STAR = np.stack([_STAR_RADII * np.cos(_STAR_ANGLES), _STAR_RADII * np.sin(_STAR_ANGLES)], axis=1)


def shape_mask(shape: Shape, height: int, width: int) -> np.ndarray:
    """Boolean (H, W) mask of the pixels whose centres lie inside ``shape``."""
    radius = shape.scale * min(height, width) / 2
    if radius <= 0:
        return np.zeros((height, width), dtype=bool)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    theta = np.deg2rad(shape.angle)
    rx, ry = (xs - shape.center[0] * width) / radius, (ys - shape.center[1] * height) / radius
    # Rotate the pixel grid by -angle (y points down, so this turns the shape counter-clockwise on screen).
    dx = rx * np.cos(theta) - ry * np.sin(theta)
    dy = rx * np.sin(theta) + ry * np.cos(theta)
    if shape.kind == "circle":
        return dx * dx + dy * dy <= 1.0
    if shape.kind == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= 0.7071
    if shape.kind == "diamond":
        return np.abs(dx) + np.abs(dy) <= 1.0
    if shape.kind == "cross":
        ax, ay = np.abs(dx), np.abs(dy)
        return ((ax <= 0.3) & (ay <= 0.95)) | ((ay <= 0.3) & (ax <= 0.95))
    if shape.kind == "triangle":
        return _polygon(dx, dy, _TRIANGLE)
    if shape.kind == "star":
        return _polygon(dx, dy, _STAR)
    raise ValueError(f"unknown shape kind {shape.kind!r}; choose one of {SHAPE_KINDS}")


def _rgb(color: tuple[int, int, int] | str) -> tuple[int, int, int]:
    if isinstance(color, str):
        if color not in COLORS:
            raise ValueError(f"unknown colour {color!r}; choose one of {sorted(COLORS)} or give an RGB triple")
        return COLORS[color]
    return tuple(int(c) for c in color)  # type: ignore[return-value]


def render_frame(
    shapes: Sequence[Shape],
    size: int | tuple[int, int],
    background: tuple[int, int, int] | str | np.ndarray = (0, 0, 0),
) -> np.ndarray:
    """Render shapes (later ones on top) on a background.

    Args:
        size: Side of a square image, or (height, width).
        background: RGB triple, colour name, or an (H, W, 3) image.

    Returns:
        uint8 (H, W, 3) RGB image.
    """
    height, width = (size, size) if isinstance(size, int) else size
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = np.clip(np.rint(background), 0, 255) if isinstance(background, np.ndarray) else _rgb(background)
    for shape in shapes:
        image[shape_mask(shape, height, width)] = _rgb(shape.color)
    return image


# ----------------------------------------------------------------------------------------------- motions
# A motion maps (progress p in 0..1 per frame, random generator) to per-frame (x, y, scale, angle, visible).
Track = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _track(p: np.ndarray, rng: np.random.Generator, motion: str) -> Track:
    # only the base angle of the "rotating" kinds is drawn differently, so the older classes keep their draws
    x = np.full_like(p, rng.uniform(0.3, 0.7))
    y = np.full_like(p, rng.uniform(0.3, 0.7))
    scale = np.full_like(p, rng.uniform(0.25, 0.4))
    angle = np.full_like(p, rng.uniform(0, 360) if motion != "rotating" else 0.0)
    visible = np.ones_like(p, dtype=bool)
    if motion in ("moving left", "moving right", "moving up", "moving down"):
        d = rng.uniform(0.3, 0.45)
        a = rng.uniform(0.2, 0.8 - d)
        start, end = (a + d, a) if motion in ("moving left", "moving up") else (a, a + d)
        track = start + (end - start) * p
        x, y = (track, y) if motion in ("moving left", "moving right") else (x, track)
        scale = np.full_like(p, rng.uniform(0.2, 0.3))
    elif motion in ("growing", "shrinking"):
        small, large = rng.uniform(0.1, 0.18), rng.uniform(0.45, 0.6)
        scale = small + (large - small) * (p if motion == "growing" else 1 - p)
    elif motion in ("appearing", "disappearing"):
        switch = rng.uniform(0.3, 0.7)
        visible = p >= switch if motion == "appearing" else p < 1 - switch
    elif motion in ("rotating clockwise", "rotating counterclockwise"):
        turn = rng.uniform(60, 120) * (1 if motion == "rotating counterclockwise" else -1)
        angle = angle[0] + turn * p
    elif motion in ("brightening", "darkening") or motion in COLOR_CHANGES:
        pass  # the level (``_level``) or the colour (``_colors``) changes, not the track
    elif motion in TWO_SHAPES:
        scale = np.full_like(p, rng.uniform(0.15, 0.22))
        x, y = 0.5 + (x - 0.5) / 4, 0.5 + (y - 0.5) / 4  # near the centre, so the far apart shapes stay in view
    elif motion == "blinking":
        visible = (np.arange(len(p)) // 2) % 2 == 0
    elif motion == "rotating":
        angle = p * rng.uniform(60, 120)
    elif motion != "standing still":
        raise ValueError(f"unknown synthetic class {motion!r}; choose from {list(MOTIONS)}")
    return x, y, scale, angle, visible


# Twin pairs (a class, then its time reversal) of six kinds of change: the harder benchmark's classes.
TWIN_PAIRS: tuple[tuple[str, str], ...] = (
    ("moving left", "moving right"),  # motion
    ("moving up", "moving down"),
    ("growing", "shrinking"),  # scale
    ("appearing", "disappearing"),  # appearance
    ("turning blue", "turning red"),  # colour
    ("brightening", "darkening"),  # brightness
    ("approaching", "separating"),  # two objects
)
MOTIONS: tuple[str, ...] = tuple(dict.fromkeys([*DEFAULT_CLASSES, *(c for pair in TWIN_PAIRS for c in pair)])) + (
    "rotating clockwise",  # orientation is below what the embedded CLIP sees (docs/model.md, "Runs that agree")
    "rotating counterclockwise",
    "blinking",
    "rotating",
    "standing still",
)
TWO_SHAPES = ("approaching", "separating")
COLOR_CHANGES = {"turning blue": ("red", "blue"), "turning red": ("blue", "red")}  # (first colour, last colour)


@dataclass(frozen=True)
class Scene:
    """What surrounds the class's change; the default is the plain scene (one shape on a flat background)."""

    distractor: bool = False  # a small grey shape moving in a straight line between two random points
    background_motion: float = 0.0  # amplitude (0-255 levels) of stripes drifting between two random phases; 0 = off
    flicker: float = 0.0  # std of a per-frame brightness offset, in 0-255 levels
    noise: float = 0.0  # std of per-pixel noise, in 0-255 levels
    timing: bool = False  # the change fills a random 40-100 % of the clip, starting at a random time

    def __post_init__(self) -> None:
        if min(self.background_motion, self.flicker, self.noise) < 0:
            raise ValueError(
                f"scene amplitudes must be >= 0, got {self.background_motion}, {self.flicker}, {self.noise}"
            )


# Amplitudes low enough that the shapes stay clear to CLIP; the distractor and the timing make most of the difficulty.
HARD_SCENE = Scene(distractor=True, background_motion=6.0, flicker=4.0, noise=3.0, timing=True)


def _level(p: np.ndarray, rng: np.random.Generator, motion: str) -> np.ndarray:
    """How far the shape's colour stands out from the background per frame (1 = its full colour)."""
    if motion not in ("brightening", "darkening"):
        return np.ones_like(p)  # no draw: the other classes keep their random streams
    # dimmest at a third to half of its colour: always in view, so a quick brightening is not an appearance
    low = rng.uniform(0.35, 0.5)
    return low + (1 - low) * (p if motion == "brightening" else 1 - p)


def _background(p: np.ndarray, rng: np.random.Generator, shade: int, size: int, scene: Scene) -> np.ndarray | int:
    """A flat shade, or (T, H, W) stripes drifting from one random phase to another."""
    if not scene.background_motion:
        return shade
    amplitude, cycles, theta = scene.background_motion, rng.uniform(2, 4), rng.uniform(0, np.pi)
    phase_a, phase_b = rng.uniform(0, 2 * np.pi, size=2)
    ys, xs = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size
    wave = 2 * np.pi * cycles * (xs * np.cos(theta) + ys * np.sin(theta))  # (H, W)
    phases = phase_a + (phase_b - phase_a) * p  # (T,)
    return shade + amplitude + amplitude * np.sin(wave[None] + phases[:, None, None])  # (T, H, W)


def _distractor(p: np.ndarray, rng: np.random.Generator) -> list[Shape]:
    """A small grey shape moving in a straight line between two random points (one per frame).

    Grey and smaller than any class's shape, so which shape carries the class is never in doubt.
    """
    kind = str(rng.choice(SHAPE_KINDS))
    grey = int(rng.integers(100, 170))
    a, b = rng.uniform(0.15, 0.85, size=2), rng.uniform(0.15, 0.85, size=2)
    scale, angle = rng.uniform(0.08, 0.12), rng.uniform(0, 360)
    return [Shape(kind, (grey,) * 3, tuple(a + (b - a) * t), scale, angle) for t in p]  # type: ignore[misc]


def _pair_centres(
    p: np.ndarray, rng: np.random.Generator, motion: str, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Centres (T, 2) of two shapes on a random axis through (x, y) whose gap closes (approaching) or opens."""
    theta, near, far = rng.uniform(0, np.pi), rng.uniform(0.2, 0.25), rng.uniform(0.6, 0.7)
    gap = far + (near - far) * (p if motion == "approaching" else 1 - p)  # (T,)
    axis = np.array([np.cos(theta), np.sin(theta)]) / 2
    centre = np.stack([x, y], axis=1)  # (T, 2)
    return centre + gap[:, None] * axis, centre - gap[:, None] * axis


def render_video(
    motion: str,
    *,
    num_frames: int = 16,
    size: int = 64,
    rng: np.random.Generator | None = None,
    scene: Scene = Scene(),
) -> tuple[np.ndarray, dict]:
    """Render one synthetic video of a motion class in ``scene`` (default: one shape on a flat background).

    Returns:
        uint8 (T, H, W, 3) frames and a dict describing it (kind, colour, per-frame centre/scale/visible/level).
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    kind = str(rng.choice(SHAPE_KINDS[1:] if motion.startswith("rotating") else SHAPE_KINDS))
    color = str(rng.choice(list(COLORS)))
    shade = int(rng.integers(0, 50))
    p = np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)
    t = p  # clip time; ``p`` becomes the progress of the change
    if scene.timing:
        length = rng.uniform(0.4, 1.0)
        p = np.clip((t - rng.uniform(0, 1 - length)) / length, 0.0, 1.0)
    x, y, scale, angle, visible = _track(p, rng, motion)
    level = _level(p, rng, motion)
    if motion in COLOR_CHANGES:  # (T, 3): the shape's full colour per frame
        first, last = (np.asarray(_rgb(c), dtype=np.float64) for c in COLOR_CHANGES[motion])
        rgbs = first + (last - first) * p[:, None]
        color = "{} to {}".format(*COLOR_CHANGES[motion])
    else:
        rgbs = np.broadcast_to(np.asarray(_rgb(color), dtype=np.float64), (num_frames, 3))
    colors: list[tuple[int, int, int]] = [
        tuple(int(round(c)) for c in shade + (full - shade) * v)  # type: ignore[misc]
        for full, v in zip(rgbs, level, strict=True)
    ]
    if motion in TWO_SHAPES:
        pair = _pair_centres(p, rng, motion, x, y)
        shapes = [[Shape(kind, colors[i], tuple(c[i]), scale[i], angle[i]) for c in pair] for i in range(num_frames)]
    else:
        shapes = [
            [Shape(kind, colors[i], (x[i], y[i]), scale[i], angle[i])] if visible[i] else [] for i in range(num_frames)
        ]
    if scene.distractor:
        shapes = [[d, *s] for d, s in zip(_distractor(t, rng), shapes, strict=True)]
    background = _background(t, rng, shade, size, scene)
    if isinstance(background, int):
        backgrounds: list[tuple[int, int, int] | np.ndarray] = [(shade, shade, shade)] * num_frames
    else:
        backgrounds = [np.repeat(b[:, :, None], 3, axis=2) for b in background]
    frames = np.stack([render_frame(s, size, b) for s, b in zip(shapes, backgrounds, strict=True)])
    if scene.flicker or scene.noise:
        offset = rng.normal(0.0, scene.flicker, size=(num_frames, 1, 1, 1)) if scene.flicker else 0.0
        noise = rng.normal(0.0, scene.noise, size=frames.shape) if scene.noise else 0.0
        frames = np.clip(np.rint(frames + offset + noise), 0, 255).astype(np.uint8)
    return frames, dict(kind=kind, color=color, x=x, y=y, scale=scale, angle=angle, visible=visible, level=level)


# ----------------------------------------------------------------------------------------------- datasets
@dataclass
class SyntheticDataset:
    """Paths of a written synthetic dataset."""

    root: Path  # dataset root (list paths are relative to it)
    lists: dict[str, Path]  # annotation list per split (``train.txt`` ...): ``videos/<split>/<class>_<k>.mp4 <label>``
    classes_file: Path  # ``classes.csv`` with header ``id,name``
    class_names: list[str]  # in id order
    num_frames: int = 16  # frames per video
    size: int = 64  # frame side in pixels
    counts: dict[str, int] = field(default_factory=dict)  # split -> videos per class

    @property
    def train(self) -> Path:
        return self.lists["train"]

    @property
    def val(self) -> Path:
        return self.lists["val"]

    @property
    def test(self) -> Path:
        return self.lists["test"]


def write_synthetic_dataset(
    root: str | Path,
    *,
    classes: Sequence[str] | None = None,
    videos_per_class: int,
    splits: Sequence[str] | Mapping[str, int] = ("train", "val", "test"),
    num_frames: int = 16,
    size: int = 64,
    fps: int = 8,
    seed: int = 0,
    codec: str = "libx264",
    scene: Scene = Scene(),
    progress: Callable[[int], None] | None = None,
) -> SyntheticDataset:
    """Write encoded synthetic videos, one list file per split, and ``classes.csv``.

    Args:
        root: Output folder (created).
        classes: Motion class names from ``MOTIONS`` (default ``DEFAULT_CLASSES``).
        videos_per_class: Videos per class in each split (unless ``splits`` gives counts).
        splits: Split names, or a mapping split -> videos per class.
        num_frames: Frames per video.
        size: Frame side in pixels (even).
        fps: Frame rate written in the files.
        seed: Seed; the same arguments write the same frames.
        codec: Encoder (``libx264`` yuv420p by default).
        scene: Distractors, noise and timing around each change (default: the plain scene).
        progress: Called with 1 after each video written.
    """
    root = Path(root)
    names = list(classes) if classes is not None else list(DEFAULT_CLASSES)
    unknown = [n for n in names if n not in MOTIONS]
    if unknown:
        raise ValueError(f"unknown synthetic classes {unknown}; choose from {list(MOTIONS)}")
    counts = dict(splits) if isinstance(splits, Mapping) else {s: videos_per_class for s in splits}
    lists: dict[str, Path] = {}
    for split, per_class in counts.items():
        lines = []
        for label, name in enumerate(names):
            slug = "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")
            for k in range(per_class):
                rng = np.random.default_rng([seed, zlib.crc32(split.encode()), label, k])
                frames, _ = render_video(name, num_frames=num_frames, size=size, rng=rng, scene=scene)
                rel = f"videos/{split}/{slug}_{k:04d}.mp4"
                write_video(root / rel, frames, fps=fps, codec=codec)
                lines.append(f"{rel} {label}\n")
                if progress is not None:
                    progress(1)
        lists[split] = write_text(root / f"{split}.txt", "".join(lines))
    classes_file = write_class_names(names, root / "classes.csv")
    return SyntheticDataset(root, lists, classes_file, names, num_frames, size, counts)


# ----------------------------------------------------------------------------------------------- index videos
INDEX_GRID = 4  # the index is written as INDEX_GRID x INDEX_GRID black/white blocks (16 bits)


def index_frame(index: int, size: int = 64) -> np.ndarray:
    """A frame whose blocks spell ``index`` in binary (most significant bit top-left), readable after compression."""
    bits = [(index >> (INDEX_GRID * INDEX_GRID - 1 - b)) & 1 for b in range(INDEX_GRID * INDEX_GRID)]
    grid = np.asarray(bits, dtype=np.uint8).reshape(INDEX_GRID, INDEX_GRID) * 255
    block = -(-size // INDEX_GRID)
    frame = np.kron(grid, np.ones((block, block), dtype=np.uint8))[:size, :size]
    return np.repeat(frame[:, :, None], 3, axis=2)


def frame_index(frame: np.ndarray) -> int:
    """Read back the index that ``index_frame`` wrote (block means thresholded at mid-grey)."""
    gray = np.asarray(frame, dtype=np.float32).mean(axis=2)
    h, w = gray.shape
    value = 0
    g = INDEX_GRID
    for r in range(g):
        for c in range(g):
            cell = gray[r * h // g : (r + 1) * h // g, c * w // g : (c + 1) * w // g]
            my, mx = cell.shape[0] // 4, cell.shape[1] // 4  # ignore block edges, where compression bleeds
            value = (value << 1) | int(cell[my : cell.shape[0] - my, mx : cell.shape[1] - mx].mean() > 127)
    return value


def write_index_video(
    path: str | Path,
    num_frames: int,
    size: int = 64,
    codec: str = "libx264",
    *,
    fps: float = 25,
    gop: int | None = None,
    bframes: int | None = None,
    pts: Sequence[int] | None = None,
    time_base=None,
) -> Path:
    """Write a video whose frame ``i`` shows ``i`` (read it back with ``frame_index``).

    ``codec="libx264rgb"`` is lossless; ``gop`` sets the keyframe interval; ``pts`` + ``time_base`` make a
    variable-frame-rate file.
    """
    frames = [index_frame(i, size) for i in range(num_frames)]
    return write_video(path, frames, fps=fps, codec=codec, gop=gop, bframes=bframes, pts=pts, time_base=time_base)
