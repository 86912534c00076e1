"""The demo: OmniCLIP against CLIP frame averaging on embedded motion videos with the embedded tiny CLIP.

``omniclip demo`` (``omniclip.commands.demo``) runs ``run_demo``; docs/demo.md shows its output and the equivalent
``omniclip train`` / ``eval`` / ``predict`` commands for real CLIP weights and a real dataset.
"""

from omniclip.demo.benchmark import CLASSES, GROUPS, TWINS, BenchmarkSpec, ensure_benchmark
from omniclip.demo.recipes import BUDGETS, RUNS, Budget, RunSpec, run_config
from omniclip.demo.run import DemoOptions, DemoResult, run_demo

__all__ = [
    "BUDGETS",
    "CLASSES",
    "GROUPS",
    "RUNS",
    "TWINS",
    "BenchmarkSpec",
    "Budget",
    "DemoOptions",
    "DemoResult",
    "RunSpec",
    "ensure_benchmark",
    "run_config",
    "run_demo",
]
