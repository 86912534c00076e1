"""Protocol runners: supervised, few-shot, zero-shot and base-to-novel as code, with their splits and averaging.

Each runner follows the X-CLIP / ViFi-CLIP protocols (docs/protocols.md): it writes the split files it trains on
into the run directory, trains through ``fit`` (``omniclip.train.loop.train`` wrapped by the command, so imports
keep pointing one way: protocols never import train), evaluates with ``evaluate`` on every test split or class
subset, writes a report per evaluation and ``results.json`` with the mean ± std over splits (harmonic mean for
base-to-novel).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from omniclip import files
from omniclip.config import RunConfig, replace_sections
from omniclip.data.dataset import VideoDataset
from omniclip.data.loader import build_loader
from omniclip.data.records import VideoRecord, read_annotations, read_class_names, write_class_names, write_list
from omniclip.dist import barrier, get_rank, get_world_size
from omniclip.model import OmniCLIP
from omniclip.precision import resolve_precision
from omniclip.protocols import splits
from omniclip.protocols.evaluate import EvalResult, evaluate
from omniclip.protocols.report import summarize_splits, write_eval_report

log = logging.getLogger(__name__)

# (config, run directory, resume) -> the trained model (unwrapped, on the device)
Fit = Callable[[RunConfig, Path, bool], OmniCLIP]
SUMMARY_KEYS = ("top1", "top5", "mean_class_accuracy", "num_videos", "num_scored", "num_failed")


@dataclass(frozen=True)
class EvalSet:
    """One evaluation: videos (labels in ``0..C-1`` of ``class_names``, indices ``0..n-1``) under a name."""

    name: str  # report folder and results key, e.g. "test1" or "val_subset2"
    records: list[VideoRecord]  # videos to score
    class_names: list[str]  # the C classes scored against


def write_results(cfg: RunConfig, out_dir: Path, results: dict[str, Any]) -> dict[str, Any]:
    """``results`` under the protocol and dataset names, written to ``out_dir/results.json`` (main process only)."""
    out = {"protocol": cfg.protocol.name, "dataset": cfg.data.dataset, **results}
    if get_rank() == 0:
        files.write_json(out_dir / "results.json", out)
    return out


def eval_sets(cfg: RunConfig, class_names: list[str] | None = None) -> list[EvalSet]:
    """One ``EvalSet`` per ``data.test_lists`` entry, or per class subset (``protocol.subset_class_files`` or
    ``protocol.class_subset`` > 0)."""
    names = class_names or read_class_names(cfg.data.path(cfg.data.class_names))
    p, sets = cfg.protocol, []
    for list_name in cfg.data.test_lists:
        records = read_annotations(cfg.data.path(list_name), root=cfg.data.root, fmt=cfg.data.list_format)
        stem = Path(list_name).stem
        if p.subset_class_files:
            subsets = [
                (f"{stem}_{Path(f).stem}", splits.classes_named_in(cfg.data.path(f), names))
                for f in p.subset_class_files
            ]
        elif p.class_subset > 0:
            present = sorted({r.label for r in records})
            drawn = splits.zero_shot_subsets(present, p.class_subset, num_splits=p.num_subsets)
            subsets = [(f"{stem}_subset{k}", chosen) for k, chosen in enumerate(drawn)]
        else:
            sets.append(EvalSet(stem, records, names))
            continue
        sets += [EvalSet(name, splits.relabel(records, chosen), [names[c] for c in chosen]) for name, chosen in subsets]
    return sets


def base_novel_split(cfg: RunConfig) -> tuple[list[str], list[int], list[int]]:
    """The class names, and the base and novel class ids: named by ``protocol.base_class_file``, else the first
    ``base_classes`` ids."""
    p, names = cfg.protocol, read_class_names(cfg.data.path(cfg.data.class_names))
    if p.base_class_file:
        return names, *splits.base_novel_from_file(cfg.data.path(p.base_class_file), names)
    return names, *splits.base_novel_classes(len(names), p.base_classes)


@torch.no_grad()
def evaluate_set(
    model: OmniCLIP, es: EvalSet, cfg: RunConfig, out_dir: Path, *, device: torch.device, amp_dtype: Any = None
) -> EvalResult:
    """Score ``es`` with the config's views (sharded over processes), write its report under ``out_dir/name``."""
    labels = {r.label for r in es.records}
    if labels and (min(labels) < 0 or max(labels) >= len(es.class_names)):
        raise ValueError(
            f"evaluation {es.name}: labels reach {max(labels)} but there are {len(es.class_names)} classes"
        )
    d, e = cfg.data, cfg.eval
    dataset = VideoDataset(
        es.records,
        num_frames=d.num_frames,
        mode="test",
        size=d.image_size,
        short_side=d.short_side or None,
        clips=e.clips,
        crops=e.crops,
        decoder=d.decoder,
        sampling=d.sampling,
        frame_interval=d.frame_interval,
    )
    rank, world = get_rank(), get_world_size()
    workers = d.workers if e.workers < 0 else e.workers
    loader = build_loader(dataset, batch_size=e.batch_size, train=False, workers=workers, rank=rank, world_size=world)
    model.eval()
    classes = model.encode_classes(es.class_names)
    result = evaluate(model, loader, classes, device=device, amp_dtype=amp_dtype)
    if rank == 0:
        write_eval_report(result, out_dir / es.name, es.class_names)
    return result


def _compact(result: EvalResult) -> dict[str, Any]:
    d = result.to_dict()
    return {k: d[k] for k in SUMMARY_KEYS if k in d}


def evaluate_sets(
    model: OmniCLIP, sets: list[EvalSet], cfg: RunConfig, out_dir: Path, *, device: torch.device, amp_dtype: Any
) -> dict[str, Any]:
    """Evaluate every set; returns ``{"splits": {name: metrics}, "summary": mean ± std}``."""
    results = {es.name: evaluate_set(model, es, cfg, out_dir, device=device, amp_dtype=amp_dtype) for es in sets}
    return {"splits": {k: _compact(r) for k, r in results.items()}, "summary": summarize_splits(list(results.values()))}


def harmonic_mean(a: float, b: float) -> float:
    """``2ab / (a + b)`` (0 when both are 0): the base-to-novel summary number."""
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def _stage_dir(run_dir: Path, seeds: Sequence[int], seed: int) -> Path:
    return run_dir if len(seeds) == 1 else run_dir / f"seed_{seed}"


def _has_checkpoint(stage: Path) -> bool:
    """A stage to resume: it holds a complete checkpoint (``last`` itself may be missing or damaged)."""
    return any((stage / "checkpoints").glob("step_*/state.json"))


def run_supervised(
    cfg: RunConfig, run_dir: Path, *, fit: Fit, device: torch.device, amp_dtype: Any = None, resume: bool = False
) -> dict[str, Any]:
    """Train on ``data.train_list``, evaluate every test list with ``eval.clips x eval.crops`` views.

    With several ``protocol.seeds`` one model trains per seed (``train.seed`` = the seed) in ``seed_<s>/``, and the
    summary gives the mean, std, worst and best top-1 over them (a single seed keeps ``train.seed``).
    """
    seeds = cfg.protocol.seeds
    if len(seeds) == 1:
        model = fit(cfg, run_dir, resume)
        return evaluate_sets(model, eval_sets(cfg), cfg, run_dir / "eval", device=device, amp_dtype=amp_dtype)
    out: dict[str, Any] = {"seeds": {}}
    for seed in seeds:
        stage = _stage_dir(run_dir, seeds, seed)
        model = fit(replace_sections(cfg, train={"seed": seed}), stage, resume and _has_checkpoint(stage))
        result = evaluate_sets(model, eval_sets(cfg), cfg, stage / "eval", device=device, amp_dtype=amp_dtype)
        out["seeds"][str(seed)] = result
    top1 = [r["summary"]["top1"]["mean"] for r in out["seeds"].values()]
    return {**out, "summary": {"top1": _mean_std(top1)}}


def run_few_shot(
    cfg: RunConfig, run_dir: Path, *, fit: Fit, device: torch.device, amp_dtype: Any = None, resume: bool = False
) -> dict[str, Any]:
    """K videos per class drawn (seeded) from ``data.train_list``, train, evaluate every test split, report the mean.

    The drawn list is written to ``<run>/splits/`` and the config used for training points at it.
    """
    out: dict[str, Any] = {"seeds": {}}
    seeds = cfg.protocol.seeds
    num_classes = len(read_class_names(cfg.data.path(cfg.data.class_names)))
    for seed in seeds:
        stage = _stage_dir(run_dir, seeds, seed)
        shot_list = _write_shots(cfg, stage, seed, classes=None, num_classes=num_classes)
        stage_cfg = replace_sections(cfg, data={"train_list": str(shot_list.resolve())}, train={"seed": seed})
        model = fit(stage_cfg, stage, resume and _has_checkpoint(stage))
        result = evaluate_sets(model, eval_sets(cfg), cfg, stage / "eval", device=device, amp_dtype=amp_dtype)
        out["seeds"][str(seed)] = result
    if len(seeds) == 1:
        return {**out["seeds"][str(seeds[0])], "shots": cfg.protocol.shots}
    top1 = [r["summary"]["top1"]["mean"] for r in out["seeds"].values()]
    return {**out, "shots": cfg.protocol.shots, "summary": {"top1": _mean_std(top1)}}


def _write_shots(cfg: RunConfig, stage: Path, seed: int, classes: Sequence[int] | None, num_classes: int) -> Path:
    """Write the K-shot training list for ``seed`` into ``stage/splits``.

    Drawn from ``data.train_list`` (only ``classes``, relabelled, when given), or copied from the seed's entry of
    ``protocol.shot_lists``, whose labels are already in the run's label space (dataset ids for few-shot, positions
    among the base classes for base-to-novel, as ViFi-CLIP's ``fs_base_s{1,2,3}_train.txt``).
    """
    p = cfg.protocol
    path = stage / "splits" / f"train_{p.shots}shot_seed{seed}.txt"
    if get_rank() == 0:
        if p.shot_lists:
            given = cfg.data.path(p.shot_lists[list(p.seeds).index(seed)])
            chosen = read_annotations(given, root=cfg.data.root, fmt=cfg.data.list_format)
            splits.check_shots(chosen, p.shots, num_classes, source=given)
        else:
            records = read_annotations(cfg.data.path(cfg.data.train_list), root=cfg.data.root, fmt=cfg.data.list_format)
            if classes is not None:
                records = splits.relabel(records, classes)
            chosen = splits.few_shot_records(records, p.shots, seed=seed, num_classes=num_classes)
        write_list(chosen, path, root=cfg.data.root)
    barrier()
    return path


def _mean_std(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample std (ddof=1), worst and best of per-seed values."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "worst": min(values), "best": max(values), "values": list(values)}


def run_base_to_novel(
    cfg: RunConfig, run_dir: Path, *, fit: Fit, device: torch.device, amp_dtype: Any = None, resume: bool = False
) -> dict[str, Any]:
    """Per seed: train on K shots of the base classes, evaluate base and novel classes; report the harmonic mean."""
    names, base, novel = base_novel_split(cfg)
    seeds, per_seed = cfg.protocol.seeds, {}
    for seed in seeds:
        stage = _stage_dir(run_dir, seeds, seed)
        shot_list = _write_shots(cfg, stage, seed, classes=base, num_classes=len(base))
        base_file = stage / "splits" / "base_classes.csv"
        if get_rank() == 0:
            write_class_names([names[c] for c in base], base_file)
        stage_cfg = replace_sections(
            cfg,
            data={"train_list": str(shot_list.resolve()), "class_names": str(base_file.resolve())},
            train={"seed": seed},
        )
        model = fit(stage_cfg, stage, resume and _has_checkpoint(stage))
        per_seed[str(seed)] = _base_novel_eval(model, cfg, names, base, novel, stage / "eval", device, amp_dtype)
    summary = {k: _mean_std([r[k] for r in per_seed.values()]) for k in ("base_top1", "novel_top1", "harmonic_mean")}
    return {"seeds": per_seed, "summary": summary, "shots": cfg.protocol.shots, "base": len(base), "novel": len(novel)}


def _base_novel_eval(
    model: OmniCLIP,
    cfg: RunConfig,
    names: list[str],
    base: list[int],
    novel: list[int],
    out_dir: Path,
    device: torch.device,
    amp_dtype: Any,
) -> dict[str, Any]:
    """Evaluate base and novel classes on every test list; top-1 averaged over lists, then the harmonic mean."""
    results: dict[str, Any] = {}
    for part, classes in (("base", base), ("novel", novel)):
        sets = [
            EvalSet(f"{es.name}_{part}", splits.relabel(es.records, classes), [names[c] for c in classes])
            for es in eval_sets(replace_sections(cfg, protocol={"class_subset": 0}), names)
        ]
        results[part] = evaluate_sets(model, sets, cfg, out_dir, device=device, amp_dtype=amp_dtype)
    b, n = results["base"]["summary"]["top1"]["mean"], results["novel"]["summary"]["top1"]["mean"]
    return {"base_top1": b, "novel_top1": n, "harmonic_mean": harmonic_mean(b, n), **results}


RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {
    "supervised": run_supervised,
    "few_shot": run_few_shot,
    # zero-shot trains on the source data (K400) and evaluates the config's test lists as supervised does; other
    # datasets are evaluated with ``omniclip eval``
    "zero_shot": run_supervised,
    "base_to_novel": run_base_to_novel,
}


def run_protocol(
    cfg: RunConfig, run_dir: str | Path, *, fit: Fit, device: torch.device, amp_dtype: Any = None, resume: bool = False
) -> dict[str, Any]:
    """Run ``cfg.protocol.name`` into ``run_dir``; writes and returns ``results.json``'s content."""
    run_dir = Path(run_dir)
    check_inputs(cfg, training=True)
    log.info("protocol %s on %s into %s", cfg.protocol.name, cfg.data.dataset, run_dir)
    out = RUNNERS[cfg.protocol.name](cfg, run_dir, fit=fit, device=device, amp_dtype=amp_dtype, resume=resume)
    return write_results(cfg, run_dir, out)


def evaluate_protocol(
    cfg: RunConfig, model: OmniCLIP, out_dir: str | Path, *, device: torch.device, amp_dtype: Any = None
) -> dict[str, Any]:
    """Evaluate a trained (or plain CLIP) model under ``cfg``: test splits / class subsets, or base and novel.

    The model runs in ``cfg.train``'s precision (``train.frozen_dtype``, ``train.compile``; ``train.amp`` unless
    ``amp_dtype`` is given), as ``omniclip.precision.resolve_precision`` decides it for ``device``.
    """
    out_dir = Path(out_dir)
    check_inputs(cfg, training=False)
    model = model.to(device)
    t = cfg.train
    precision = resolve_precision(device, t.amp, t.frozen_dtype, t.compile, width=model.clip.cfg.vision.width)
    precision.apply(model, model.clip.visual)
    amp_dtype = precision.amp if amp_dtype is None else amp_dtype
    if cfg.protocol.name == "base_to_novel":
        out = _base_novel_eval(model, cfg, *base_novel_split(cfg), out_dir, device, amp_dtype)
    else:
        out = evaluate_sets(model, eval_sets(cfg), cfg, out_dir, device=device, amp_dtype=amp_dtype)
    return write_results(cfg, out_dir, out)


def check_inputs(cfg: RunConfig, *, training: bool) -> None:
    """Fail before any work when a list or class file is missing.

    Raises:
        FileNotFoundError: names the config key and the path.
    """
    keys = [("data.class_names", cfg.data.class_names)]
    keys += [("data.train_list", cfg.data.train_list)] if training else []
    keys += [(f"data.test_lists[{i}]", name) for i, name in enumerate(cfg.data.test_lists)]
    p = cfg.protocol
    keys += [(f"protocol.subset_class_files[{i}]", name) for i, name in enumerate(p.subset_class_files)]
    if training and p.shot_lists and p.name in ("few_shot", "base_to_novel"):
        if len(p.shot_lists) != len(p.seeds):
            raise ValueError(
                f"protocol.shot_lists has {len(p.shot_lists)} lists for {len(p.seeds)} seeds {list(p.seeds)}; "
                "give one list per seed"
            )
        keys += [(f"protocol.shot_lists[{i}]", name) for i, name in enumerate(p.shot_lists)]
    keys += [("protocol.base_class_file", p.base_class_file)] if p.name == "base_to_novel" and p.base_class_file else []
    for key, name in keys:
        path = cfg.data.path(name)
        if not path.is_file():
            setting = f"{key.split('[')[0]}={'[]' if '[' in key else ''}"  # the override that drops the file
            hint = f"; {PUBLISHED_SPLITS_HINT.format(setting=setting)}" if key.startswith("protocol.") else ""
            raise FileNotFoundError(
                f"{key}: {path} not found (data.root={cfg.data.root}; set OMNICLIP_DATA or data.root){hint}"
            )


PUBLISHED_SPLITS_HINT = (
    "the published class splits are the labels/ files of ViFi-CLIP (github.com/muzairkhattak/ViFi-CLIP); "
    "put the file there, or pass {setting} to draw or split the classes by id instead (docs/protocols.md)"
)
