"""Data-pipeline throughput benchmark; results go in docs/data.md (same as ``omniclip bench-data``).

Usage::

    .venv/bin/python benchmarks/bench_data.py --workers 0 1 2 --clips 24
    .venv/bin/python benchmarks/bench_data.py lists/val.txt --root /data/k400 --workers 8
"""

from __future__ import annotations

import sys

from omniclip.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench-data", *sys.argv[1:]]))
