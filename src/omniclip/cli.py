"""The ``omniclip`` command line: one short function per subcommand, each calling library code.

Examples::

    omniclip demo                                   # the main job on embedded data and an embedded tiny CLIP
    omniclip predict clip.mp4 --clip ViT-B/16 --classes "archery,juggling,surfing"
    omniclip train --config configs/few_shot/hmdb51_vitb16.yaml --output runs/h16 protocol.shots=16
    torchrun --nproc_per_node=8 -m omniclip train --config configs/supervised/k400_vitb16_8f.yaml
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Each module defines ``register(subparsers)``; its parsers set ``func(args) -> int``.
COMMAND_MODULES: list[str] = [
    "omniclip.commands.predict",
    "omniclip.commands.train",
    "omniclip.commands.embedded",
    "omniclip.commands.data",
    "omniclip.commands.model",
    "omniclip.commands.bench",
    "omniclip.commands.demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="omniclip", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        # User mistakes end with one clear line, not a traceback.
        print(f"omniclip {args.command}: error: {err}", file=sys.stderr)
        return 2
