"""The training loop, written out once for one process and for many (torchrun + DDP).

Follows nanoGPT ``train.py`` (gradient accumulation with ``no_sync``), mae ``engine_pretrain.py`` (LR set per
iteration, stop on a non-finite loss, JSON-lines metrics) and torchtune's single-device recipe (checkpoint and
resume). The global batch is ``train.global_batch_size`` clips per optimizer step whatever the number of
processes: each process runs ``batch_size`` clips per forward and accumulates ``global / (batch_size x world)``
of them. Every epoch uses one seeded permutation of the training list split across ranks, so a run on one process
and a run on two see the same clips in the same optimizer steps, and a resumed run continues exactly where the
checkpoint stopped (also mid-epoch).

A run folder belongs to one run: ``train`` holds its lock (``omniclip.runlog.run_lock``) throughout, refuses to start
afresh over another run's checkpoints, and a resumed run may change only the keys in ``RESUME_SAFE_KEYS`` (those that
leave the data order, the schedule and the model alone) and only on the backbone it was trained from.
"""

from __future__ import annotations

import logging
import math
import random
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from omniclip.clip.model import CLIP
from omniclip.clip.weights import load_clip
from omniclip.config import RunConfig, config_to_dict, flatten, save_config
from omniclip.data.dataset import VideoDataset, item_generator
from omniclip.data.loader import TrainSampler, build_loader, read_batches
from omniclip.data.records import read_annotations, read_class_names
from omniclip.data.transforms import mixup, normalize
from omniclip.dist import DistInfo, all_reduce_sum, barrier, init_distributed, on_main
from omniclip.model import OmniCLIP
from omniclip.precision import resolve_precision
from omniclip.runlog import RunLog, run_lock
from omniclip.train import checkpoint as ckpt
from omniclip.train.optim import GradClipper, build_optimizer, lr_at, set_lr

log = logging.getLogger(__name__)


# Keys a resumed run may change: they leave the data order, the LR schedule and the model as they were. Every other
# key (a new one too) is refused on --resume. clip.source may change (the weights moved) only where the checkpoint
# holds a backbone fingerprint to check the new location against.
RESUME_SAFE_KEYS: frozenset[str] = frozenset(
    {
        "clip.source",
        "data.dataset",  # a name in paths and reports
        "data.root",  # where the videos are (the lists name the same videos)
        "data.test_lists",
        "data.decoder",
        "data.workers",
        "model.grad_checkpointing",  # recomputes activations; the same gradients
        "train.max_steps",  # where to stop; the schedule spans train.epochs whatever it is
        "train.amp",  # precision: the same model in another arithmetic
        "train.frozen_dtype",
        "train.compile",
        "train.device",
        "train.log_every",
        "train.checkpoint_every",
        "train.keep_checkpoints",
        "train.tensorboard",
        "eval.clips",
        "eval.crops",
        "eval.batch_size",
        "eval.workers",
        "protocol.class_subset",
        "protocol.num_subsets",
        "protocol.subset_class_files",
    }
)


class NonFiniteLossError(RuntimeError):
    """Training stopped because the loss (or gradient norm) became NaN or infinite."""


@dataclass(frozen=True)
class StepPlan:
    """How a run's clips map to optimizer steps."""

    accum: int  # forward/backward passes per optimizer step on each process
    global_batch: int  # clips per optimizer step over all processes
    steps_per_epoch: int  # optimizer steps per epoch (the list's tail that fills no global batch is left out)
    total_steps: int  # optimizer steps over all epochs (the LR schedule's length)
    warmup_steps: int  # linear warmup steps


@dataclass
class TrainState:
    """Where training is; saved in every checkpoint's ``state.json``."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch (completed epochs when micro == 0)
    micro: int = 0  # forward passes done in the current epoch on each process
    failed: int = 0  # unreadable training videos skipped in the current epoch (all ranks)


@dataclass
class TrainResult:
    """What a finished (or stopped) training run leaves behind."""

    model: OmniCLIP  # the trained model, unwrapped, in eval mode
    run_dir: Path  # where config.yaml, metrics.jsonl and checkpoints are
    checkpoint: Path | None  # the last checkpoint written (None when training had nothing to do)
    step: int  # optimizer steps done
    finished: bool  # all epochs done (False when stopped by train.max_steps)
    class_names: list[str]  # training classes in label order


def plan_steps(num_videos: int, cfg: RunConfig, world_size: int) -> StepPlan:
    """Gradient accumulation and schedule length from the global batch size.

    Raises:
        ValueError: the global batch is not a multiple of ``batch_size x world`` or exceeds the training list.
    """
    t = cfg.train
    per_pass = t.batch_size * world_size
    global_batch = t.global_batch_size or per_pass
    if t.batch_size < 1 or global_batch % per_pass:
        raise ValueError(
            f"train.global_batch_size={global_batch} must be a multiple of train.batch_size x processes "
            f"= {t.batch_size} x {world_size}; change either"
        )
    steps = num_videos // global_batch
    if steps == 0:
        raise ValueError(
            f"the training list has {num_videos} videos, fewer than one global batch of {global_batch}; "
            "lower train.global_batch_size / train.batch_size"
        )
    return StepPlan(global_batch // per_pass, global_batch, steps, steps * t.epochs, round(t.warmup_epochs * steps))


class ClassifierStep(nn.Module):
    """``model(video, model.encode_classes(names))`` inside one forward, so DDP also sees text-side parameters."""

    def __init__(self, model: OmniCLIP, class_names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.class_names = list(class_names)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.model(video, self.model.encode_classes(self.class_names))


def load_backbone(cfg: RunConfig) -> CLIP:
    """Seed Python, NumPy and torch with ``train.seed``, then load the CLIP of ``clip.source``."""
    random.seed(cfg.train.seed)
    np.random.seed(cfg.train.seed % 2**32)
    torch.manual_seed(cfg.train.seed)
    return load_clip(cfg.clip.source, activation=cfg.clip.activation or None)


def build_train_model(cfg: RunConfig, device: torch.device) -> OmniCLIP:
    """Seeded OmniCLIP on ``device`` from ``clip.source`` and the ``model`` section."""
    return ckpt.build_run_model(cfg, load_backbone(cfg)).to(device)


def _resume(start: Path, model: nn.Module, optimizer: Any) -> TrainState:
    saved = ckpt.load_training_state(start, model, optimizer)
    try:
        ckpt.set_rng_state(saved["rng"])
        state = TrainState(**{k: int(saved[k]) for k in ("step", "epoch", "micro", "failed")})
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{start / ckpt.STATE_FILE} lacks a valid training state ({err!r}); it is damaged") from None
    log.info("resumed from step %d (epoch %d, %d batches into it)", state.step, state.epoch, state.micro)
    return state


def resume_changes(
    saved: dict[str, Any], cfg: RunConfig, where: str | Path, *, backbone_known: bool = True
) -> dict[str, list[Any]]:
    """The config keys a resumed run changes, as ``{key: [old, new]}``; all must be in ``RESUME_SAFE_KEYS``.

    Args:
        saved: the config the checkpoint was trained with (its metadata).
        cfg: the config of the resumed run.
        where: the checkpoint, for the message.
        backbone_known: the checkpoint holds a backbone fingerprint (else ``clip.source`` may not change either).

    Raises:
        ValueError: the message lists every refused key as ``key: old -> new``.
    """
    old, new = flatten(saved), flatten(config_to_dict(cfg))
    changed = {k: [old[k], v] for k, v in new.items() if k in old and old[k] != v}
    safe = RESUME_SAFE_KEYS if backbone_known else RESUME_SAFE_KEYS - {"clip.source"}
    refused = [f"{k}: {o!r} -> {n!r}" for k, (o, n) in changed.items() if k not in safe]
    if refused:
        raise ValueError(
            f"--resume would change what {where} was trained with ({'; '.join(refused)}): these keys change the data "
            "order, the schedule or the model; resume without them, or start a new run (--overwrite or another "
            "--output)"
        )
    return changed


def _claim(run_dir: Path, resume: bool, held: ExitStack) -> None:
    """On rank 0: lock the run folder, remove what killed writers left, refuse to start over another run."""
    held.enter_context(run_lock(run_dir))
    ckpt.remove_partial(run_dir)
    done = ckpt.complete_checkpoints(run_dir)
    if not resume and done:
        raise ValueError(
            f"run folder {run_dir} already holds checkpoints of a run (up to {done[-1].name}); continue it with "
            "--resume (resume=True), or start over with --overwrite or another --output"
        )


def _train_loader(cfg: RunConfig, records: list, plan: StepPlan, dist: DistInfo) -> tuple[TrainSampler, DataLoader]:
    """One loader for the whole run; workers persist across epochs and the sampler is moved between them."""
    d = cfg.data
    dataset = VideoDataset(
        records,
        num_frames=d.num_frames,
        mode="train",
        size=d.image_size,
        short_side=d.short_side or None,
        flip=d.flip,
        crop_scales=d.crop_scales,
        decoder=d.decoder,
        seed=cfg.train.seed,
        sampling=d.sampling,
        frame_interval=d.frame_interval,
        rand_augment_ops=d.rand_augment_ops,
        rand_augment_magnitude=d.rand_augment_magnitude,
    )
    loader = build_loader(
        dataset,
        batch_size=cfg.train.batch_size,
        train=True,
        workers=d.workers,
        rank=dist.rank,
        world_size=dist.world_size,
        seed=cfg.train.seed,
        length=plan.steps_per_epoch * plan.global_batch,
        pin_memory=dist.device.type == "cuda",
    )
    return cast(TrainSampler, loader.sampler), loader


def _batch_loss(
    step_model: nn.Module, batch: dict, device: torch.device, cfg: RunConfig, num_classes: int, mix: torch.Generator
) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the clips that decoded, and their count.

    With ``data.mixup_alpha`` > 0 the clips are mixed (``transforms.mixup``, drawing from ``mix``) and the targets are
    the mixed one-hot rows; ``data.label_smoothing`` smooths either kind. A batch whose clips all failed still runs one
    zero-weighted forward so that every DDP rank reduces gradients.
    """
    video = batch["video"]
    if video is None or video.shape[0] == 0:
        T, S = cfg.data.num_frames, cfg.data.image_size
        dummy = torch.zeros(1, T, 3, S, S, device=device)
        return step_model(dummy).sum() * 0.0, 0
    x = normalize(video[:, 0].to(device, non_blocking=True))  # (B, T, 3, S, S), the one training view
    labels = batch["label"].to(device, non_blocking=True)
    target = labels  # class ids, or (B, C) probabilities once mixed
    if cfg.data.mixup_alpha > 0:
        x, target = mixup(x, labels, num_classes, alpha=cfg.data.mixup_alpha, generator=mix)
    loss = F.cross_entropy(step_model(x).float(), target, reduction="sum", label_smoothing=cfg.data.label_smoothing)
    return loss, int(labels.shape[0])


def train(
    cfg: RunConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    dist: DistInfo | None = None,
    allow_other_backbone: bool = False,
) -> TrainResult:
    """Train ``cfg`` into ``run_dir`` (config.yaml, metrics.jsonl, checkpoints/); continue it with ``resume``.

    The run folder's lock is held throughout (rank 0). A resumed run keeps the checkpoint's config except for the
    keys in ``RESUME_SAFE_KEYS``; the changes it makes are recorded as a ``resume`` line in ``metrics.jsonl`` and
    ``config.yaml`` is rewritten with them.

    Args:
        allow_other_backbone: resume on a CLIP whose fingerprint differs from the checkpoint's (warned).

    Raises:
        NonFiniteLossError: the loss or gradient norm became NaN/inf; the last checkpoint is the last good one.
        ValueError / FileNotFoundError: bad lists, class files or batch sizes, the run folder in use or holding
            another run, a refused config change or backbone on resume, a damaged checkpoint; named in the message.
    """
    dist = dist or init_distributed(cfg.train.device)
    run_dir = Path(run_dir)
    with ExitStack() as held:
        on_main(dist, lambda: _claim(run_dir, resume, held))
        return _train(cfg, run_dir, resume, dist, allow_other_backbone)


def _train(cfg: RunConfig, run_dir: Path, resume: bool, dist: DistInfo, allow_other_backbone: bool) -> TrainResult:
    device, t = dist.device, cfg.train
    start, saved, changes = None, None, {}
    if resume:
        start = ckpt.find_checkpoint(run_dir)
        saved = ckpt.read_meta(start)
        changes = resume_changes(saved.config, cfg, start, backbone_known=bool(saved.clip_fingerprint))
    names = read_class_names(cfg.data.path(cfg.data.class_names))
    records = read_annotations(cfg.data.path(cfg.data.train_list), root=cfg.data.root, fmt=cfg.data.list_format)
    _check_labels(records, names, cfg.data.train_list)
    plan = plan_steps(len(records), cfg, dist.world_size)
    clip = load_backbone(cfg)
    if start is not None and saved is not None and not cfg.model.full_finetune:
        source = cfg.clip.source
        fingerprint = ckpt.check_backbone(saved, clip, start, source=source, allow_other_backbone=allow_other_backbone)
    else:
        fingerprint = ckpt.backbone_fingerprint(clip)
    model = ckpt.build_run_model(cfg, clip).to(device)
    precision = resolve_precision(device, t.amp, t.frozen_dtype, t.compile, width=model.clip.cfg.vision.width)
    precision.apply(model, model.clip.visual)  # frozen weights cast, trainable ones (and so the optimizer) stay fp32
    scales = {"text_context": t.text_lr_scale, "logit_scale": t.logit_lr_scale, "backbone": t.backbone_lr_scale}
    optimizer = build_optimizer(model, lr=t.lr, weight_decay=t.weight_decay, betas=t.betas, eps=t.eps, lr_scales=scales)
    state = _resume(start, model, optimizer) if start is not None else TrainState()

    def save(state: TrainState) -> Path:
        """Rank 0 writes the checkpoint of ``state``; every rank waits for it and gets its path."""
        if dist.is_main:
            meta = ckpt.TrainedMeta(
                class_names=list(names),
                num_frames=cfg.data.num_frames,
                image_size=cfg.data.image_size,
                templates=tuple(cfg.model.templates),
                config=config_to_dict(cfg),
                clip_source=cfg.clip.source,
                clip_arch=model.clip.cfg.to_dict(),
                step=state.step,
                epoch=state.epoch,
                clip_fingerprint=fingerprint,  # of the backbone the run's adapters sit on
            )
            path = ckpt.save_checkpoint(
                run_dir,
                model=model,
                optimizer=optimizer,
                meta=meta,
                state={**state.__dict__, "rng": ckpt.rng_state(), "finished": state.epoch >= t.epochs},
                keep=t.keep_checkpoints,
            )
            log.info("checkpoint %s", path)
        barrier()
        return ckpt.checkpoint_dir(run_dir, state.step)

    runlog = RunLog(run_dir, enabled=dist.is_main, tensorboard=t.tensorboard)
    runlog.drop_after(state.step)  # lines an interrupted run wrote after its last checkpoint
    if dist.is_main:
        if start is not None:
            ckpt.remove_after(run_dir, state.step)  # the continuation they belong to is abandoned
            runlog.write("resume", step=state.step, epoch=state.epoch, checkpoint=start.name, changed=changes)
            for key, (old, new) in changes.items():
                log.info("resumed with %s: %r -> %r", key, old, new)
        save_config(cfg, run_dir / "config.yaml")
        log.info(
            "%d clips, %d classes; %d steps/epoch of %d clips (%d x %d processes x %d accumulated), %d steps, "
            "%d warmup; %s",
            len(records), len(names), plan.steps_per_epoch, plan.global_batch, t.batch_size, dist.world_size,
            plan.accum, plan.total_steps, plan.warmup_steps, precision.name,
        )  # fmt: skip
    step_model: nn.Module = ClassifierStep(model, names)
    if dist.world_size > 1:
        step_model = DistributedDataParallel(step_model, device_ids=[device.index] if device.type == "cuda" else None)
    sampler, loader = _train_loader(cfg, records, plan, dist)
    clip_grads = GradClipper(model.named_trainable_parameters(), t.grad_clip)
    stop_at = min(t.max_steps or plan.total_steps, plan.total_steps)
    bar = tqdm(total=stop_at, initial=state.step, disable=not dist.is_main, unit="step", dynamic_ncols=True)
    last = start
    # loss sum (kept on the device: no wait for the step per batch), clips and failed videos of this optimizer step
    loss_acc, counts = torch.zeros((), dtype=torch.float64, device=device), torch.zeros(2, dtype=torch.float64)
    tick = time.perf_counter()
    model.train()
    while state.epoch < t.epochs and state.step < stop_at:
        sampler.set_epoch(state.epoch, skip=state.micro * t.batch_size)
        # worker processes decode ahead of the step; without them a thread does where a core is free for it
        for batch in read_batches(loader, device):
            boundary = (state.micro + 1) % plan.accum == 0
            # nanoGPT: skip the gradient all-reduce on all but the last accumulation pass
            sync = (
                step_model.no_sync()
                if isinstance(step_model, DistributedDataParallel) and not boundary
                else nullcontext()
            )
            with sync:
                with precision.autocast(device):
                    # a 4th, non-zero key word keeps the mixing draws apart from the items' (seed, epoch, index)
                    mix = item_generator(t.seed, state.epoch, state.micro, dist.rank + 1)
                    loss_sum, count = _batch_loss(step_model, batch, device, cfg, len(names), mix)
                (loss_sum / (t.batch_size * plan.accum)).backward()
            loss_acc += loss_sum.detach().double()
            counts += torch.tensor([count, len(batch["failed"])], dtype=torch.float64)
            for index, err in batch["failed"]:
                log.debug("skipped unreadable training video %s: %s", records[int(index)].path, err)
            state.micro += 1
            if not boundary:
                continue
            lr = lr_at(
                state.step, total_steps=plan.total_steps, warmup_steps=plan.warmup_steps, lr=t.lr, min_lr=t.min_lr
            )
            set_lr(optimizer, lr)
            loss_total, clips, failed = all_reduce_sum(torch.cat([loss_acc.cpu().view(1), counts])).tolist()
            loss_acc.zero_()
            counts.zero_()
            loss = loss_total / max(clips, 1.0)
            total_norm, group_norms = clip_grads()
            grad_norm = float(total_norm)
            if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                norms = _by_group(group_norms)
                runlog.write("stop", step=state.step, epoch=state.epoch, loss=loss, grad_norm=grad_norm, **norms)
                bar.close()
                runlog.close()
                bad = [k.removeprefix("grad_norm_") for k, n in norms.items() if not math.isfinite(n)]
                where = f" (non-finite in {', '.join(bad)})" if bad else ""
                raise NonFiniteLossError(
                    f"loss {loss} / gradient norm {grad_norm}{where} at step {state.step + 1} (epoch {state.epoch}); "
                    f"stopped. Last good checkpoint: {last or 'none'}. Lower train.lr or check the data."
                )
            ratio = clip_grads.spike(grad_norm)
            if ratio:  # an explosion: say which group carries it (the loss often goes back to chance after one)
                norms = _by_group(group_norms)
                top = max(norms, key=lambda k: norms[k])
                log.warning(
                    "step %d: gradient norm %.3g is %.0fx its recent median, mostly %s (%.3g)",
                    state.step + 1, grad_norm, ratio, top.removeprefix("grad_norm_"), norms[top],
                )  # fmt: skip
                runlog.write("spike", step=state.step + 1, grad_norm=grad_norm, ratio=ratio, **norms)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.failed += int(failed)
            now = time.perf_counter()
            speed, tick = plan.global_batch / max(now - tick, 1e-9), now
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", clips_s=f"{speed:.1f}", refresh=False)
            if state.step % t.log_every == 0 or state.step == 1:
                runlog.write(
                    "train",
                    step=state.step,
                    epoch=state.epoch,
                    loss=loss,
                    lr=lr,
                    grad_norm=grad_norm,  # before clipping
                    clip_factor=clip_grads.factor(grad_norm),
                    logit_scale=float(model.logit_scale().detach()),
                    **_by_group(group_norms),
                    clips_per_s=speed,
                    failed=int(failed),
                )
            # the epoch's last step is saved below, once, as the start of the next epoch
            epoch_ends = state.micro == plan.steps_per_epoch * plan.accum
            if t.checkpoint_every and state.step % t.checkpoint_every == 0 and not epoch_ends:
                last = save(state)
            if state.step >= stop_at and state.micro < plan.steps_per_epoch * plan.accum:
                break  # stopped mid-epoch (train.max_steps); at an epoch's end the epoch completes below
        else:  # the epoch ran to its end
            runlog.write("epoch", step=state.step, epoch=state.epoch, failed_videos=state.failed)
            if state.failed:
                log.warning("epoch %d: skipped %d unreadable training videos", state.epoch, state.failed)
            state.epoch, state.micro, state.failed = state.epoch + 1, 0, 0
            last = save(state)
            continue
        break
    if last is None or ckpt.read_meta(last).step != state.step:
        last = save(state)
    bar.close()
    runlog.write("done", step=state.step, epoch=state.epoch, finished=state.epoch >= t.epochs)
    runlog.close()
    return TrainResult(model.eval(), run_dir, last, state.step, state.epoch >= t.epochs, names)


def _by_group(norms: dict[str, torch.Tensor]) -> dict[str, float]:
    """The group norms as ``grad_norm_<group>`` floats for metrics.jsonl (flat, so TensorBoard plots each)."""
    return {f"grad_norm_{g}": float(n) for g, n in norms.items()}


def _check_labels(records: list, names: list[str], where: str) -> None:
    bad = [r for r in records if not 0 <= r.label < len(names)]
    if bad:
        raise ValueError(f"{where}: label {bad[0].label} of {bad[0].path} is outside the {len(names)} class names")
