"""The demo: OmniCLIP against CLIP frame averaging on embedded motion videos with the embedded tiny CLIP.

``omniclip demo`` (``omniclip.commands.demo``) runs ``run_demo``; docs/demo.md shows its output and the equivalent
``omniclip train`` / ``eval`` / ``predict`` commands for real CLIP weights and a real dataset.
"""

from omniclip.demo.dataset import CLASSES, GROUPS, TWINS, DatasetSpec, ensure_dataset
from omniclip.demo.recipes import BUDGETS, RUNS, Budget, RunSpec, run_config
from omniclip.demo.run import DemoOptions, DemoResult, run_demo

__all__ = [
    "BUDGETS",
    "CLASSES",
    "GROUPS",
    "RUNS",
    "TWINS",
    "DatasetSpec",
    "Budget",
    "DemoOptions",
    "DemoResult",
    "RunSpec",
    "ensure_dataset",
    "run_config",
    "run_demo",
]
