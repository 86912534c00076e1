"""``VideoDataset``: a map-style dataset of annotated videos giving uint8 multi-view clips or failure records.

Each item is decoded, sampled and transformed from scratch: no state is kept between indices. Training randomness
(frame offsets, crop, flip, augmentation) comes from a generator seeded by (seed, epoch, index), so a run is
reproducible and resumable. A video that cannot be read gives ``{"video": None, "error": "<path>: <why>"}``; it is
never replaced by another video (STYLE.md, "Data"; counterexample: VideoMAE swapping broken test videos).

Test views follow the X-CLIP / ViFi-CLIP recipe: ``clips`` temporal clips x ``crops`` spatial crops, returned as one
(V, T, 3, S, S) tensor, V = clips * crops ordered clip-major. One crop: resize the short side to ``short_side``
(default S * 256 / 224) and take the centre. Three crops: short side S (default), crops along the long side.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal, TypedDict

import numpy as np
import torch
from torch.utils.data import Dataset

from omniclip.data import transforms as tf
from omniclip.data.decode import DecodeError, check_decoder, open_video
from omniclip.data.records import VideoRecord
from omniclip.data.sampling import Sampling, clip_indices, multiview_indices

log = logging.getLogger(__name__)


class VideoItem(TypedDict):
    """One dataset item; ``video`` is None (and ``error`` set) when the video could not be read."""

    video: torch.Tensor | None  # uint8 (V, T, 3, S, S)
    label: int
    index: int
    error: str | None


def item_generator(*key: int) -> torch.Generator:
    """An RNG that is a pure function of ``key``: a training item's is (seed, epoch, index)."""
    state = np.random.SeedSequence(list(key)).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class VideoDataset(Dataset):
    """Annotated videos as uint8 clips.

    Args:
        records: Videos to read (see ``read_annotations``).
        num_frames: T, frames per clip.
        mode: ``train`` (one random view) or ``test`` (``clips`` x ``crops`` deterministic views).
        size: S, output side in pixels.
        short_side: Short side before cropping (default S * 256 / 224 in train and single-crop test, S for 3 crops).
        clips: Temporal views in test mode.
        crops: Spatial views in test mode (1 = centre, 3 = three crops along the long side).
        flip: Random horizontal flip in training (turn off for direction classes, e.g. SSv2).
        crop_scales: Training crop sides as shares of the short side (TSN multi-scale crop; ``(1.0,)``: the whole
            short side).
        decoder: ``pyav``, ``opencv`` or ``decord`` (frame folders are detected by path).
        seed: Base seed of the training randomness.
        sampling: ``segment`` (TSN, one frame per segment) or ``dense`` (T frames ``frame_interval`` apart).
        frame_interval: Frames between the sampled ones in dense sampling.
        rand_augment_ops: Colour operations of ``transforms.rand_augment`` per training clip (0: none).
        rand_augment_magnitude: Their strength, 0..10.
    """

    def __init__(
        self,
        records: Sequence[VideoRecord],
        *,
        num_frames: int,
        mode: Literal["train", "test"],
        size: int = 224,
        short_side: int | None = None,
        clips: int = 1,
        crops: int = 1,
        flip: bool = True,
        crop_scales: tuple[float, ...] = tf.MULTI_SCALES,
        decoder: str = "pyav",
        seed: int = 0,
        sampling: Sampling = "segment",
        frame_interval: int = 2,
        rand_augment_ops: int = 0,
        rand_augment_magnitude: int = 9,
    ) -> None:
        if mode not in ("train", "test"):
            raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
        if mode == "train" and (clips != 1 or crops != 1):
            raise ValueError(f"training reads one view per video; got clips={clips}, crops={crops} (test mode only)")
        if crops not in (1, 3):
            raise ValueError(f"crops must be 1 (centre) or 3 (three crops), got {crops}")
        if clips < 1 or num_frames < 1:
            raise ValueError(f"clips and num_frames must be >= 1, got {clips}, {num_frames}")
        check_decoder(decoder)  # here, in the main process: a clear error before any worker starts
        self.records = list(records)
        self.num_frames, self.mode, self.size = num_frames, mode, size
        default_short = size if crops == 3 else round(size * 256 / 224)
        self.short_side = short_side if short_side is not None else default_short
        if self.short_side < size:
            raise ValueError(f"short_side {self.short_side} is smaller than the crop size {size}")
        if not crop_scales or not all(0 < s <= 1 for s in crop_scales):
            raise ValueError(f"crop_scales must be shares of the short side in (0, 1], got {list(crop_scales)}")
        self.clips, self.crops, self.flip, self.crop_scales = clips, crops, flip, tuple(crop_scales)
        self.decoder, self.seed, self.epoch = decoder, seed, 0
        self.sampling, self.frame_interval = sampling, frame_interval
        self.rand_augment_ops, self.rand_augment_magnitude = rand_augment_ops, rand_augment_magnitude

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` for the training randomness of plain integer indices."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | tuple[int, int]) -> VideoItem:
        """Item ``key``, or ``(index, epoch)`` as yielded by ``TrainSampler`` (epoch reaches persistent workers)."""
        i, epoch = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (int(key), self.epoch)
        rec = self.records[i]
        try:
            video = self.load(rec, item_generator(self.seed, epoch, i) if self.mode == "train" else None)
        except (DecodeError, OSError) as err:
            log.debug("unreadable video %s: %s", rec.path, err)
            return {"video": None, "label": rec.label, "index": rec.index, "error": f"{rec.path}: {err}"}
        return {"video": video, "label": rec.label, "index": rec.index, "error": None}

    def load(self, rec: VideoRecord, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode and transform one video to uint8 (V, T, 3, S, S); raises ``DecodeError`` when unreadable.

        With ``generator`` (training) the video gives one random view, without it the test views.
        """
        with open_video(rec.path, self.decoder) as reader:
            n = reader.info.num_frames
            if generator is not None:
                idx = clip_indices(n, self.num_frames, generator, self.sampling, self.frame_interval)
                return self._train_view(reader.frames(idx.tolist(), short_side=self.short_side), generator)
            idx = multiview_indices(n, self.num_frames, self.clips, self.sampling, self.frame_interval)
            frames = reader.read(idx.reshape(-1).tolist(), short_side=self.short_side)  # (clips*T, H, W, 3)
        video = torch.from_numpy(frames).permute(0, 3, 1, 2)  # (clips*T, 3, H, W)
        video = video.reshape(idx.shape[0], self.num_frames, *video.shape[1:])  # (clips, T, 3, H, W)
        return self._test_views(video)

    def _train_view(self, frames: list[np.ndarray], generator: torch.Generator) -> torch.Tensor:
        """One random view (1, T, 3, S, S) of the decoded ``frames``, in channels-last memory (T, S, S, 3).

        The crop box is chosen on the short-side-resized frame and mapped back to the decoded frame; only the box of
        each frame is copied, into the channels-last memory that the uint8 resize wants, and resized once, straight
        to S x S (docs/data.md, "A training clip copies only its crop").
        """
        H, W = frames[0].shape[:2]
        h, w = tf.short_side_size(H, W, self.short_side)
        top, left, ch, cw = tf.multi_scale_box(h, w, generator, scales=self.crop_scales)
        ry, rx = H / h, W / w
        y, x, bh, bw = round(top * ry), round(left * rx), max(1, round(ch * ry)), max(1, round(cw * rx))
        clip = torch.from_numpy(np.stack([f[y : y + bh, x : x + bw] for f in frames]))  # (T, bh, bw, 3)
        video = tf.resize(clip.permute(0, 3, 1, 2), self.size)  # channels-last in, channels-last out
        if self.flip and torch.rand(1, generator=generator).item() < 0.5:
            video = video.flip(-1)  # after the resize: fewer pixels, and numpy's reversed copy is 30x slower
        if self.rand_augment_ops:
            strength = self.rand_augment_magnitude
            video = tf.rand_augment(video, generator, num_ops=self.rand_augment_ops, magnitude=strength)
        return video[None]  # (1, T, 3, S, S)

    def _test_views(self, video: torch.Tensor) -> torch.Tensor:
        """The test views (clips * crops, T, 3, S, S), clip-major, in channels-last memory like training views."""
        video = tf.resize_short_side(video, self.short_side)  # (clips, T, 3, H, W), channels-last in and out
        if self.crops == 1:
            views = [tf.center_crop(clip, self.size) for clip in video]
        else:
            boxes = tf.three_crop_boxes(video.shape[-2], video.shape[-1], self.size)
            views = [tf.crop(clip, *box) for clip in video for box in boxes]
        return tf.stack_channels_last(views)
