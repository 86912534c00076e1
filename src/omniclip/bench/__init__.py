"""Speed and memory of OmniCLIP, bare CLIP frame averaging and X-CLIP, measured in one process (``omniclip bench``).

Compares against the compute figures of PROTOCOLS.md: inference and training clips/s, peak memory, model FLOPs per
clip and the achieved share of the device's matmul rate; ``docs/benchmarks.md`` holds the measured tables.
``subjects`` holds the configuration and builds what is measured and its timed steps, ``measurements`` measures,
``run`` runs a configuration and ``report`` turns the results into ratios, a table and a JSON file.
"""

from omniclip.bench.measurements import MaxBatch, Timing, find_max_batch, is_oom, measure, measure_interleaved
from omniclip.bench.report import compute_ratios, format_table
from omniclip.bench.run import run_bench
from omniclip.bench.subjects import SUBJECTS, BenchConfig

__all__ = [
    "SUBJECTS", "BenchConfig", "MaxBatch", "Timing", "compute_ratios", "find_max_batch", "format_table", "is_oom",
    "measure", "measure_interleaved", "run_bench",
]  # fmt: skip
