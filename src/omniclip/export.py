"""Export for deployment: the video encoder as a graph, the class-text embeddings as a tensor file, and their contract.

The encoder and the class embeddings are exported separately (USERS.md: "export the video encoder and the
class-text embeddings separately"), so new class lists need no new encoder export. An export directory holds::

    video_encoder.pt2                torch.export program: CLIP-normalised float video (B, T, 3, S, S) -> (B, E),
                                     L2-normalised (``video_encoder.onnx`` with --format onnx; its weights in
                                     ``video_encoder.onnx.data`` beside it for image towers over 1 GB)
    class_embeddings.safetensors     "class_embeddings": (C, E) float32, L2-normalised, rows in class order
    class_names.json                 the C class names
    export.json                      frames T, crop size S, mean/std, logit scale, shapes, formats

Logits are ``logit_scale * encoder(video) @ class_embeddings.T``, exactly the model's ``forward``.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from omniclip.files import atomic_path, save_safetensors, write_json, write_text
from omniclip.predict import VideoClassifier, check_class_names

if TYPE_CHECKING:
    from omniclip.model import OmniCLIP

log = logging.getLogger(__name__)

ExportFormat = Literal["torch-export", "onnx"]
ENCODER_FILES = {"torch-export": "video_encoder.pt2", "onnx": "video_encoder.onnx"}
EMBEDDINGS_FILE = "class_embeddings.safetensors"
NAMES_FILE = "class_names.json"
META_FILE = "export.json"
MAX_BATCH = 1024  # upper bound of the exported dynamic batch dimension
VERIFY_TOLERANCE = 1e-4  # largest |exported - eager| embedding difference accepted at export time
ONNX_INLINE_BYTES = 1 << 30  # weights up to this size stay inside video_encoder.onnx (protobuf's limit is 2 GB)


class VideoEncoder(nn.Module):
    """What gets exported: the model's own ``encode_video`` followed by L2 normalisation."""

    def __init__(self, model: OmniCLIP) -> None:
        super().__init__()
        self.model = video_only(model)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_video(video).float(), dim=-1)  # (B, E)


def video_only(model: OmniCLIP) -> OmniCLIP:
    """A shallow copy of an OmniCLIP without the text side, sharing the image tower's parameters.

    ``torch.export`` stores every parameter of the exported module, used or not; without this the text tower
    (40% of ViT-B/16) would ride along in ``video_encoder.pt2``.
    """
    clip = copy.copy(model.clip)
    clip._parameters, clip._buffers, clip._modules = {}, {}, {"visual": model.clip.visual}
    video = copy.copy(model)
    video._parameters, video._buffers = {}, {}
    video._modules = {"clip": clip}
    return video


def export_model(
    classifier: VideoClassifier,
    out_dir: str | Path,
    *,
    classes: Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
    fmt: ExportFormat = "torch-export",
) -> dict[str, Path]:
    """Write the video encoder, the class embeddings, the class names and ``export.json`` into ``out_dir``.

    Args:
        classifier: from ``omniclip.load_model``.
        out_dir: the export directory (created).
        classes: class names; defaults to the checkpoint's.
        templates: text templates; defaults to the model's.
        fmt: ``"torch-export"`` (``torch.export.save``) or ``"onnx"`` (needs the ``onnx`` package).

    Returns:
        The written files by name: ``"encoder"``, ``"embeddings"``, ``"names"``, ``"meta"``.
    """
    if fmt not in ENCODER_FILES:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {sorted(ENCODER_FILES)}")
    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None] if fmt == "onnx" else []
    if missing:
        raise ValueError(
            f"ONNX export needs the {' and '.join(missing)} package(s), which are not installed: "
            "run `pip install onnx onnxscript onnxruntime` (onnxruntime checks and runs the file), "
            "or use the default --format torch-export"
        )
    names = check_class_names(classes if classes is not None else classifier.class_names)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"encoder": ENCODER_FILES[fmt], "embeddings": EMBEDDINGS_FILE, "names": NAMES_FILE, "meta": META_FILE}
    paths = {name: out / file for name, file in files.items()}
    encoder = VideoEncoder(classifier.model).eval()
    T, S = classifier.num_frames, classifier.image_size
    example = torch.randn(2, T, 3, S, S, device=classifier.device)  # a random normalised clip
    if fmt == "onnx":
        _export_onnx(encoder, example, out)
    else:
        with atomic_path(paths["encoder"]) as tmp:
            _export_program(encoder, example, tmp)
    embeddings = classifier.class_embeddings(names, templates).detach().float().cpu().contiguous()
    save_safetensors(paths["embeddings"], {"class_embeddings": embeddings}, {"class_names": json.dumps(names)})
    write_text(paths["names"], json.dumps(names, indent=1, ensure_ascii=False) + "\n")
    meta = export_meta(classifier, fmt=fmt, num_classes=len(names), embed_dim=embeddings.shape[1], templates=templates)
    write_json(paths["meta"], meta)
    log.info("exported %s encoder and %d class embeddings to %s", fmt, len(names), out)
    return paths


def export_meta(
    classifier: VideoClassifier, *, fmt: str, num_classes: int, embed_dim: int, templates: Sequence[str] | None = None
) -> dict[str, Any]:
    """The ``export.json`` contract: how to prepare inputs and combine the two exported parts."""
    from omniclip.data.transforms import CLIP_MEAN, CLIP_STD

    T, S = classifier.num_frames, classifier.image_size
    return {
        "format": fmt,
        "encoder": ENCODER_FILES[fmt],
        "class_embeddings": EMBEDDINGS_FILE,
        "class_names": NAMES_FILE,
        "num_frames": T,
        "image_size": S,
        "input": {
            "name": "video",
            "shape": ["B", T, 3, S, S],
            "dtype": "float32",
            "max_batch": MAX_BATCH,
            "layout": "RGB frames scaled to [0, 1], then (x - mean) / std per channel",
            "preprocess": f"{T} frames, one from the middle of each of {T} equal segments; short side resized to "
            f"{round(S * 256 / 224)} px; centre crop {S}x{S} (omniclip.data.dataset.VideoDataset, mode='test')",
        },
        "output": {"name": "embedding", "shape": ["B", embed_dim], "l2_normalised": True},
        "mean": [float(m) for m in CLIP_MEAN],
        "std": [float(s) for s in CLIP_STD],
        "logit_scale": classifier.logit_scale,
        "logits": "logit_scale * embedding @ class_embeddings.T",
        "num_classes": num_classes,
        "templates": list(templates or classifier.templates or classifier.model.config.templates),
        "source": classifier.source,
        "torch_version": torch.__version__,
        "precision": classifier.precision.name if classifier.precision else "fp32",
        "weights_dtype": str(classifier.model.dtype).removeprefix("torch."),
    }


def _dynamic_batch() -> dict[str, dict[int, Any]]:
    return {"video": {0: torch.export.Dim("batch", min=1, max=MAX_BATCH)}}


def _check_against_eager(err: float, what: str) -> None:
    if not err <= VERIFY_TOLERANCE:
        raise RuntimeError(f"the {what} encoder differs from the eager model by {err:.2e}; not saved")


def _export_program(encoder: nn.Module, example: torch.Tensor, path: Path) -> None:
    """``torch.export`` with a dynamic batch, checked against the eager model before it is saved."""
    with torch.no_grad():
        eager = encoder(example)
        program = torch.export.export(encoder, (example,), dynamic_shapes=_dynamic_batch())
        _check_against_eager((program.module()(example) - eager).abs().max().item(), "exported")
    torch.export.save(program, str(path))


def _export_onnx(encoder: nn.Module, example: torch.Tensor, out: Path) -> None:
    """Write ``video_encoder.onnx`` into ``out``: built in a temporary folder, checked, then moved into place.

    ONNX files name their external weight file, so the graph is written under its final name (in the temporary
    folder) rather than renamed afterwards. Weights stay inside the file up to ``ONNX_INLINE_BYTES`` (protobuf
    caps a file at 2 GB); larger image towers get ``video_encoder.onnx.data`` beside it, moved in before the graph.
    The file is checked with ``onnx.checker`` and, when onnxruntime is installed, against the eager model.
    """
    import onnx

    with torch.no_grad():
        eager = encoder(example)
    weight_bytes = sum(p.numel() * p.element_size() for p in encoder.parameters())
    with tempfile.TemporaryDirectory(dir=out, prefix=".onnx-") as tmp:
        path = Path(tmp) / ENCODER_FILES["onnx"]
        with torch.no_grad():
            torch.onnx.export(
                encoder,
                (example,),
                str(path),
                input_names=["video"],
                output_names=["embedding"],
                dynamic_shapes=_dynamic_batch(),
                dynamo=True,
                external_data=weight_bytes > ONNX_INLINE_BYTES,
                verbose=False,
            )
        onnx.checker.check_model(str(path), full_check=True)
        if importlib.util.find_spec("onnxruntime") is None:
            log.warning("onnxruntime is not installed: %s was not checked against the eager model", path.name)
        else:
            err = float(abs(run_onnx(path, example.cpu().numpy()) - eager.cpu().numpy()).max())
            _check_against_eager(err, "ONNX")
            log.info("ONNX encoder checked with onnxruntime: max difference %.1e", err)
        weights = f"{ENCODER_FILES['onnx']}.data"
        if not (Path(tmp) / weights).exists():
            (out / weights).unlink(missing_ok=True)  # an earlier export's external weights; this graph holds its own
        for part in sorted(Path(tmp).iterdir(), key=lambda f: f.suffix == ".onnx"):  # weights first, graph last
            os.replace(part, out / part.name)


def run_onnx(path: str | Path, video: Any) -> Any:
    """Run an exported ``video_encoder.onnx`` on a float32 numpy video ``(B, T, 3, S, S)`` with onnxruntime (CPU)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["embedding"], {"video": video})[0]


@dataclass
class ExportedClassifier:
    """An export directory loaded back: the encoder program and the class embeddings, no omniclip model needed."""

    encoder: nn.Module  # normalised video (B, T, 3, S, S) -> (B, E)
    class_embeddings: torch.Tensor  # (C, E)
    class_names: list[str]
    meta: dict[str, Any]

    def logits(self, video: torch.Tensor) -> torch.Tensor:
        """Normalised float video ``(B, T, 3, S, S)`` -> ``(B, C)`` logits."""
        return self.meta["logit_scale"] * self.encoder(video) @ self.class_embeddings.T


def load_export(out_dir: str | Path) -> ExportedClassifier:
    """Load a ``torch-export`` directory written by ``export_model``.

    Raises:
        FileNotFoundError: ``export.json`` or a file it names is missing.
        ValueError: the directory holds an ONNX export (load it with onnxruntime instead).
    """
    out = Path(out_dir)
    meta_path = out / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} does not exist; is {out} an `omniclip export` directory?")
    meta = json.loads(meta_path.read_text())
    if meta["format"] != "torch-export":
        raise ValueError(f"{out} holds a {meta['format']} export; load {meta['encoder']} with onnxruntime")
    for key in ("encoder", "class_embeddings", "class_names"):
        if not (out / meta[key]).is_file():
            raise FileNotFoundError(f"{out / meta[key]} is missing from the export")
    encoder = torch.export.load(str(out / meta["encoder"])).module()
    embeddings = load_file(str(out / meta["class_embeddings"]))["class_embeddings"]
    names = json.loads((out / meta["class_names"]).read_text(encoding="utf-8"))
    if len(names) != embeddings.shape[0]:
        raise ValueError(f"{out}: {len(names)} class names for {embeddings.shape[0]} class embeddings")
    return ExportedClassifier(encoder, embeddings, names, meta)
