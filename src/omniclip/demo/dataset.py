"""The demo's embedded video datasets: seeded synthetic clips whose classes differ only in how they change over time.

``DatasetSpec()``, the demo's: eight classes in three groups, written by
``omniclip.data.synthetic.write_synthetic_dataset`` at the embedded CLIP's image size (64 px). Each class has a twin
that shows the same frames in the opposite order (moving left / moving right, growing / shrinking, appearing /
disappearing), so CLIP's frame average, which is permutation-invariant over frames (METHOD.md), can at best find the
twin pair and must guess within it. The files are encoded with ``mpeg4``,
which writes identical bytes on every run (libx264 does not here), so results reproduce exactly. The dataset is
generated into a folder at first use (a few seconds) and reused while its ``dataset.json`` matches.

``HARD``, the harder temporal benchmark: fourteen classes in seven twin pairs of six kinds of change (direction,
scale, appearance, colour, brightness, two objects), 24 frames, with a moving distractor, drifting background,
flicker, noise and a change that fills a random part of the clip (``omniclip.data.synthetic.HARD_SCENE``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from omniclip.data.synthetic import HARD_SCENE, Scene, write_synthetic_dataset
from omniclip.files import write_json

log = logging.getLogger(__name__)

Groups = tuple[tuple[str, tuple[str, ...]], ...]  # (group name, classes) in label order

# Class groups in label order; each group is made of twin pairs (a class, then its time reversal).
DEMO_GROUPS: Groups = (
    ("direction", ("moving left", "moving right", "moving up", "moving down")),
    ("scale", ("growing", "shrinking")),
    ("order", ("appearing", "disappearing")),
)
HARD_GROUPS: Groups = (
    *DEMO_GROUPS[:2],
    ("appearance", ("appearing", "disappearing")),
    ("colour", ("turning blue", "turning red")),
    ("brightness", ("brightening", "darkening")),
    ("two objects", ("approaching", "separating")),
)
SPEC_FILE = "dataset.json"


def twins_of(groups: Iterable[tuple[str, Sequence[str]]]) -> tuple[tuple[str, str], ...]:
    """The twin pairs of ``groups``: consecutive classes of each group (a group's odd last class has none)."""
    return tuple((names[i], names[i + 1]) for _, names in groups for i in range(0, len(names) - 1, 2))


GROUPS: dict[str, tuple[str, ...]] = dict(DEMO_GROUPS)
CLASSES: tuple[str, ...] = tuple(name for _, names in DEMO_GROUPS for name in names)
TWINS: tuple[tuple[str, str], ...] = twins_of(DEMO_GROUPS)


@dataclass(frozen=True)
class DatasetSpec:
    """What the dataset holds; the same spec writes the same bytes."""

    groups: Groups = DEMO_GROUPS  # class groups of twin pairs; the classes in label order are their members
    train: int = 32  # training videos per class
    val: int = 4  # validation videos per class
    test: int = 16  # test videos per class
    # 17 frames per video: centre-of-segment test sampling of 4 frames then takes frames 2, 6, 10, 14, a set that
    # is its own time reversal. With 16 it would take frames 2, 6, 10, 14 of a clip but 1, 5, 9, 13 of its twin
    # (the same frames reversed), and a frame average could read the order from that one-frame shift.
    num_frames: int = 17
    size: int = 64  # frame side in pixels: the embedded CLIP's image size
    fps: int = 8  # frame rate written in the files
    codec: str = "mpeg4"  # byte-deterministic encoder
    seed: int = 0  # rendering seed
    scene: Scene = Scene()  # distractors, noise and timing (default: the plain scene)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))  # tuples become lists, as dataset.json holds them

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names in label order."""
        return tuple(name for _, names in self.groups for name in names)

    @property
    def group_map(self) -> dict[str, tuple[str, ...]]:
        return dict(self.groups)

    @property
    def splits(self) -> dict[str, int]:
        return {"train": self.train, "val": self.val, "test": self.test}


@dataclass(frozen=True)
class DemoDataset:
    """A written dataset: its folder, list files and class names."""

    root: Path  # dataset root; list paths are relative to it
    spec: DatasetSpec
    class_names: list[str] = field(default_factory=list)
    created: bool = False  # written now (False: found in place and reused)

    def list_file(self, split: str) -> Path:
        return self.root / f"{split}.txt"

    @property
    def classes_file(self) -> Path:
        return self.root / "classes.csv"


def _matches(root: Path, spec: DatasetSpec) -> bool:
    path = root / SPEC_FILE
    if not path.is_file():
        return False
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False
    files = [root / f"{s}.txt" for s in spec.splits] + [root / "classes.csv"]
    return saved == spec.to_dict() and all(f.is_file() for f in files)


def ensure_dataset(
    root: str | Path, spec: DatasetSpec | None = None, *, progress: Callable[[int], None] | None = None
) -> DemoDataset:
    """Write the dataset into ``root``, or reuse it when ``root/dataset.json`` already describes ``spec``.

    Args:
        root: Folder of the dataset (created).
        spec: What to write (default ``DatasetSpec()``).
        progress: Called with 1 after each video written.
    """
    root, spec = Path(root), spec or DatasetSpec()
    if _matches(root, spec):
        log.debug("dataset in %s is up to date", root)
        return DemoDataset(root, spec, list(spec.classes), created=False)
    (root / SPEC_FILE).unlink(missing_ok=True)  # a half-written folder must not look complete
    data = write_synthetic_dataset(
        root, classes=spec.classes, videos_per_class=spec.train, splits=spec.splits, num_frames=spec.num_frames,
        size=spec.size, fps=spec.fps, seed=spec.seed, codec=spec.codec, scene=spec.scene, progress=progress,
    )  # fmt: skip
    write_json(root / SPEC_FILE, spec.to_dict())
    return DemoDataset(root, spec, list(data.class_names), created=True)


# The harder temporal benchmark: 24 frames, so that 8 centre-of-segment test frames (1, 4, ..., 22) are their own
# time reversal, as the demo's 17 frames are for 4. 128 test clips a class: on 16, a top-1 near 92 % is known to
# about 1.8 points, as much as the seeds' spread that the benchmark measures (docs/model.md, "The test set").
HARD = DatasetSpec(groups=HARD_GROUPS, train=24, val=4, test=128, num_frames=24, scene=HARD_SCENE)


def num_videos(spec: DatasetSpec) -> int:
    """Videos the spec writes over all splits."""
    return len(spec.classes) * sum(spec.splits.values())
