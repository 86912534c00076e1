"""The ``omniclip`` command line: one short function per subcommand, each calling library code.

Examples::

    omniclip demo                                   # the main job on embedded data and an embedded tiny CLIP
    omniclip predict clip.mp4 --clip ViT-B/16 --classes "archery,juggling,surfing"
    omniclip train --config configs/few_shot/hmdb51_vitb16.yaml --output runs/h16 protocol.shots=16
    torchrun --nproc_per_node=8 -m omniclip train --config configs/supervised/k400_vitb16_8f.yaml

A user error (a bad value, a missing file, an output folder that cannot be written) ends with one line naming the
key or path and exit code 2, before any work; ``-v`` (before or after the subcommand) adds debug logging and the
error's full traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import sys
import traceback
import typing
from collections.abc import Callable
from pathlib import Path

from omniclip.files import writable_dir

N = typing.TypeVar("N", int, float)

# Each module defines ``register(subparsers)``; its parsers set ``func(args) -> int``.
COMMAND_MODULES: list[str] = [
    "omniclip.commands.predict",
    "omniclip.commands.train",
    "omniclip.commands.embedded",
    "omniclip.commands.data",
    "omniclip.commands.model",
    "omniclip.commands.bench",
    "omniclip.commands.demo",
    "omniclip.commands.timeline",
]


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (the subcommand's ``--help`` shows the usage), exit code 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def number_type(cast: Callable[[str], N], ok: Callable[[N], bool], expects: str, must: str) -> Callable[[str], N]:
    """A ``type=`` for flags taking a number: ``cast(text)`` that ``ok`` accepts; errors say what it ``expects``
    (when ``cast`` fails) and what the value ``must`` be."""

    def parse(text: str) -> N:
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expects {expects}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {must}, got {text}")
        return value

    return parse


positive_int = number_type(int, lambda v: v >= 1, "an integer", ">= 1")  # flags that count something
non_negative_int = number_type(int, lambda v: v >= 0, "an integer", ">= 0")  # 0 means none or off (seeds, shards)
positive_seconds = number_type(float, lambda v: 0 < v < math.inf, "a number of seconds", "a number of seconds above 0")
non_negative_seconds = number_type(float, lambda v: 0 <= v < math.inf, "a number of seconds", "0 or more seconds")
fraction = number_type(float, lambda v: 0 <= v < 1, "a fraction such as 0.2", "in [0, 1)")  # held-out shares
probability = number_type(float, lambda v: 0 <= v <= 1, "a probability between 0 and 1", "between 0 and 1")


def writable_file(path: str | Path, what: str = "output file") -> Path:
    """Check, before any work, that ``path`` can be written: not a folder, and its folder is writable (created).

    Raises:
        ValueError: the message names the path.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder; give a file name")
    writable_dir(path.parent, f"{what} {path}: its folder")
    return path


DESCRIPTION = (
    "Recognise actions in videos with CLIP adapted to time (OmniCLIP): classify your videos with any class names, "
    "train and evaluate under the field's protocols. Start with `omniclip demo`; every command has --help."
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="omniclip", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for command in sub.choices.values():  # `omniclip train ... -v` works too
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # `key=value` overrides may come after flags: `omniclip train --config c.yaml a=1 --resume b=2`
        if not hasattr(args, "overrides") or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
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
        # User mistakes end with one clear line, not a traceback; -v shows where it came from (bugs raise these too).
        if args.verbose:
            traceback.print_exc()
        print(f"omniclip {args.command}: error: {err}", file=sys.stderr)
        return 2
