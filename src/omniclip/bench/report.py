"""The bench report: ratios against the baselines, a printed table, and the JSON file (written atomically).

Ratios are computed only from numbers in the report itself, so anyone can check them from the JSON: a time ratio
is ``step_s(subject) / step_s(baseline)`` at the same batch size (above 1 = slower), likewise for process CPU time
(``cpu_step_s``); a memory ratio divides peak memories measured the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omniclip.files import write_json

BASELINES: tuple[str, ...] = ("frame_average", "xclip")
MODES: tuple[str, ...] = ("infer", "train")


def _measured(entry: Any, mode: str) -> dict[str, Any] | None:
    if not isinstance(entry, dict):
        return None
    phase = entry.get(mode)
    return phase if isinstance(phase, dict) and "step_s" in phase else None


def compute_ratios(results: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """``{"vs_<baseline>": {subject: {"<mode>_time": r, ...}}}`` for every measured pair.

    Keys per mode: ``_time`` (wall clock), ``_cpu_time`` (process CPU time, the robust figure for single-threaded
    runs on a shared CPU) and ``_peak_memory`` when both peaks were measured.
    """
    out: dict[str, dict[str, dict[str, float]]] = {}
    for base in BASELINES:
        if base not in results:
            continue
        table: dict[str, dict[str, float]] = {}
        for name, entry in results.items():
            row: dict[str, float] = {}
            for mode in MODES:
                a, b = _measured(entry, mode), _measured(results[base], mode)
                if a is None or b is None:
                    continue
                row[f"{mode}_time"] = a["step_s"] / b["step_s"]
                if a.get("cpu_step_s") and b.get("cpu_step_s"):
                    row[f"{mode}_cpu_time"] = a["cpu_step_s"] / b["cpu_step_s"]
                if a.get("peak_memory_bytes") and b.get("peak_memory_bytes"):
                    row[f"{mode}_peak_memory"] = a["peak_memory_bytes"] / b["peak_memory_bytes"]
            if row:
                table[name] = row
        if table:
            out[f"vs_{base}"] = table
    return out


def _num(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _mib(value: Any) -> str:
    return "-" if not value else f"{value / 2**20:.0f}"


def _row(name: str, entry: dict[str, Any], ratios: dict[str, Any], cpu: bool) -> list[str]:
    if "error" in entry or "skipped" in entry:
        return [name, entry.get("error") or entry.get("skipped", "")]
    cells = [name, _num(entry.get("params_trainable"), ",")]
    for mode in MODES:
        phase = _measured(entry, mode) or {}
        cells += [
            _num(phase.get("clips_per_s"), ".1f"),
            _num(phase.get("gflops_per_clip"), ".2f"),
            _num(phase.get("tflops_per_s"), ".3f"),
            _mib(phase.get("peak_memory_bytes")),
        ]
    saved = (_measured(entry, "train") or {}).get("saved_activation_bytes")
    cells.append("-" if saved is None else f"{saved / 2**20:.1f}")
    for base in BASELINES:
        row = ratios.get(f"vs_{base}", {}).get(name, {})
        cells += [_num(row.get(f"{mode}_time"), ".2f") for mode in MODES]
    if cpu:
        row = ratios.get("vs_frame_average", {}).get(name, {})
        cells += [_num(row.get(f"{mode}_cpu_time"), ".2f") for mode in MODES]
    return cells


HEADER = [
    "model", "trainable",
    "inf clips/s", "inf GFLOP/clip", "inf TFLOP/s", "inf MiB",
    "train clips/s", "train GFLOP/clip", "train TFLOP/s", "train MiB", "saved MiB",
    "inf t/FA", "train t/FA", "inf t/XC", "train t/XC",
]  # fmt: skip
CPU_HEADER = ["inf cpu/FA", "train cpu/FA"]


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table of the report, one row per subject.

    ``saved MiB`` is the activation memory a training step keeps for backward; ``t/FA`` and ``t/XC`` are wall-time
    ratios against frame averaging and X-CLIP; on a CPU, ``cpu/FA`` are the process-CPU-time ratios against frame
    averaging.
    """
    cfg, machine = report["config"], report["machine"]
    cpu = machine["device"] == "cpu"
    header = HEADER + (CPU_HEADER if cpu else [])
    title = (
        f"{cfg['arch']} {cfg['frames']}x{cfg['size']}px batch {cfg['batch']} {cfg['dtype']}"
        f"{' bf16-weights' if cfg['bf16_weights'] else ''}{' compile' if cfg['compile'] else ''}"
        f"{' ckpt' if cfg['grad_checkpointing'] else ''}{' cuda-graphs' if cfg['cuda_graphs'] else ''}"
        f" on {machine['device_name']} ({machine['device']}), {machine['date']}; "
        f"memory: {_memory_kind(report)}"
    )
    rows = [header] + [_row(n, e, report["ratios"], cpu) for n, e in report["results"].items()]
    widths = [max(len(r[i]) for r in rows if len(r) > 2) for i in range(len(header))]
    lines = [title]
    for r in rows:
        if len(r) == 2:  # an error or skipped subject: name and reason
            lines.append(f"{r[0]:<{widths[0]}}  {r[1]}")
        else:
            cells = [c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
            lines.append("  ".join(cells))
    for name, entry in report["results"].items():
        if isinstance(entry, dict) and "max_batch" in entry:
            mb = entry["max_batch"]
            lines.append(f"max training batch {name}: " + ", ".join(f"{k} {_max_text(v)}" for k, v in mb.items()))
    return "\n".join(lines + [f"note: {n}" for n in report.get("notes", [])])


def _max_text(found: dict[str, Any]) -> str:
    return f">= {found['max_batch']} (limit)" if found["capped"] else str(found["max_batch"])


def _memory_kind(report: dict[str, Any]) -> str:
    for entry in report["results"].values():
        for mode in MODES:
            phase = _measured(entry, mode)
            if phase:
                return str(phase.get("memory_kind", "n/a"))
    return "n/a"


def write_report(report: dict[str, Any], path: str | Path) -> Path:
    """Write ``report`` as indented JSON to ``path`` atomically (temp file in the same folder + ``os.replace``)."""
    return write_json(path, report)
