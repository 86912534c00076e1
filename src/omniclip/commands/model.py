"""``omniclip model-info``: parameters and per-clip GFLOPs of a video model, split into backbone, PTA and SPG.

Examples::

    omniclip model-info --arch ViT-B-16 --frames 8 --size 224
    omniclip model-info --arch ViT-B-16 --frames 8 16 32 --variant all     # the table in docs/model.md
    omniclip model-info --clip ViT-B/16 --frames 16 --variant pta --json  # architecture from a checkpoint
"""

from __future__ import annotations

import argparse
import json

from omniclip.clip.presets import get_preset
from omniclip.model.config import VARIANTS, ModelConfig
from omniclip.model.flops import ModelInfo, describe_model

COLUMNS = (  # (title, ModelInfo field)
    ("variant", "variant"),
    ("frames", "num_frames"),
    ("size", "image_size"),
    ("params (M)", "params_total"),
    ("trainable", "params_trainable"),
    ("GFLOPs/clip", "gflops"),
    ("backbone", "gflops_backbone"),
    ("PTA", "gflops_pta"),
    ("SPG", "gflops_spg"),
)


def _cell(key: str, value: object) -> str:
    if key == "params_total":
        return f"{value / 1e6:.2f}"  # type: ignore[operator]
    if key == "params_trainable":
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.1f}" if value >= 10 else f"{value:.3g}"
    return str(value)


def format_table(infos: list[ModelInfo]) -> str:
    """A Markdown table, one row per model; total parameters in millions, trainable ones exact."""
    rows = [[_cell(key, info.to_dict()[key]) for _, key in COLUMNS] for info in infos]
    header = [title for title, _ in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def cmd_model_info(args: argparse.Namespace) -> int:
    if args.clip is None:
        clip_cfg, arch = get_preset(args.arch), args.arch
    else:
        from omniclip.clip import load_clip  # reads and checks the weights; only their architecture is used here

        clip_cfg, arch = load_clip(args.clip).cfg, str(args.clip)
    variants = list(VARIANTS) if args.variant == "all" else [args.variant]
    for t in args.frames:
        if t < 1:
            raise ValueError(f"--frames must be >= 1, got {t}")
    infos = [
        describe_model(clip_cfg, t, args.size, ModelConfig(variant=v), arch)  # type: ignore[arg-type]
        for t in args.frames
        for v in variants
    ]
    if args.json:
        out = [i.to_dict() for i in infos]
        print(json.dumps(out[0] if len(out) == 1 else out, indent=2))
        return 0
    print(f"{arch}, {infos[0].image_size} px; GFLOPs per clip of the video encoder, 2 FLOPs per multiply-add")
    print(format_table(infos))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "model-info",
        help="parameters and GFLOPs per clip (backbone / PTA / SPG)",
        description="Parameters and GFLOPs per clip of the video encoder (torch FlopCounterMode: 2 FLOPs per "
        "multiply-add), split into the CLIP backbone, the PTA and the SPG branches. Counted on the meta device: "
        "no weights are needed.",
    )
    p.add_argument("--arch", default="ViT-B-16", help="CLIP preset (ViT-B-16, ViT-B/32, ViT-L-14, tiny, ...)")
    p.add_argument("--clip", default=None, help="take the architecture from this checkpoint (file, folder or name)")
    p.add_argument("--frames", type=int, nargs="+", default=[8], help="frames per clip (several give several rows)")
    p.add_argument("--size", type=int, default=None, help="image side in pixels (default: the preset's)")
    p.add_argument("--variant", default="omniclip", choices=[*VARIANTS, "all"], help="model variant, or all of them")
    p.add_argument("--json", action="store_true", help="print JSON (an object for one model, else a list)")
    p.set_defaults(func=cmd_model_info)
