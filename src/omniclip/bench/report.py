"""The bench report: ratios against the baselines and a printed table (``omniclip bench --json`` writes the JSON).

Ratios are computed only from numbers in the report itself, so anyone can check them from the JSON: a time ratio
is ``step_s(subject) / step_s(baseline)`` at the same batch size (above 1 = slower), likewise for process CPU time
(``cpu_step_s``); a memory ratio divides peak memories measured the same way.
"""

from __future__ import annotations

from typing import Any

from omniclip.bench.subjects import MODES

BASELINES: tuple[str, ...] = ("frame_average", "xclip")
HEADER = [
    "model", "trainable",
    "inf clips/s", "inf GFLOP/clip", "inf TFLOP/s", "inf MiB",
    "train clips/s", "train GFLOP/clip", "train TFLOP/s", "train MiB", "saved MiB",
    "inf t/FA", "train t/FA", "inf t/XC", "train t/XC",
]  # fmt: skip
CPU_HEADER = ["inf cpu/FA", "train cpu/FA"]


def _measured(entry: Any, mode: str) -> dict[str, Any]:
    """The timing of ``mode`` in a subject's entry; empty when it was skipped, failed or not run."""
    phase = entry.get(mode) if isinstance(entry, dict) else None
    return phase if isinstance(phase, dict) and "step_s" in phase else {}


def compute_ratios(results: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """``{"vs_<baseline>": {subject: {"<mode>_time": r, ...}}}`` for every measured pair.

    Keys per mode: ``_time`` (wall clock), ``_cpu_time`` (process CPU time, the robust figure for single-threaded
    runs on a shared CPU) and ``_peak_memory`` when both peaks were measured.
    """
    out: dict[str, dict[str, dict[str, float]]] = {}
    for base in (b for b in BASELINES if b in results):
        table: dict[str, dict[str, float]] = {}
        for name, entry in results.items():
            row: dict[str, float] = {}
            for mode in MODES:
                a, b = _measured(entry, mode), _measured(results[base], mode)
                if a and b:
                    row[f"{mode}_time"] = a["step_s"] / b["step_s"]
                    for key, suffix in (("cpu_step_s", "cpu_time"), ("peak_memory_bytes", "peak_memory")):
                        if a.get(key) and b.get(key):
                            row[f"{mode}_{suffix}"] = a[key] / b[key]
            if row:
                table[name] = row
        if table:
            out[f"vs_{base}"] = table
    return out


def _num(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _row(name: str, entry: dict[str, Any], ratios: dict[str, Any], cpu: bool) -> list[str]:
    if "error" in entry or "skipped" in entry:
        return [name, entry.get("error") or entry.get("skipped", "")]
    cells = [name, _num(entry.get("params_trainable"), ",")]
    for mode in MODES:
        phase = _measured(entry, mode)
        peak = phase.get("peak_memory_bytes")
        cells += [_num(phase.get("clips_per_s"), ".1f"), _num(phase.get("gflops_per_clip"), ".2f"),
                  _num(phase.get("tflops_per_s"), ".3f"), f"{peak / 2**20:.0f}" if peak else "-"]  # fmt: skip
    saved = _measured(entry, "train").get("saved_activation_bytes")
    cells.append("-" if saved is None else f"{saved / 2**20:.1f}")
    for base, key in [(b, "time") for b in BASELINES] + ([("frame_average", "cpu_time")] if cpu else []):
        row = ratios.get(f"vs_{base}", {}).get(name, {})
        cells += [_num(row.get(f"{mode}_{key}"), ".2f") for mode in MODES]
    return cells


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table of the report, one row per subject, then the max-batch results and notes.

    ``saved MiB`` is the activation memory a training step keeps for backward; ``t/FA`` and ``t/XC`` are wall-time
    ratios against frame averaging and X-CLIP; on a CPU, ``cpu/FA`` are the process-CPU-time ratios against frame
    averaging.
    """
    cfg, machine, results = report["config"], report["machine"], report["results"]
    cpu = machine["device"] == "cpu"
    header = HEADER + (CPU_HEADER if cpu else [])
    kinds = [_measured(e, m).get("memory_kind", "n/a") for e in results.values() for m in MODES if _measured(e, m)]
    title = (
        f"{cfg['arch']} {cfg['frames']}x{cfg['size']}px batch {cfg['batch']} {cfg['dtype']}"
        f"{' bf16-weights' if cfg['bf16_weights'] else ''}{' compile' if cfg['compile'] else ''}"
        f"{' ckpt' if cfg['grad_checkpointing'] else ''}{' cuda-graphs' if cfg['cuda_graphs'] else ''}"
        f" on {machine['device_name']} ({machine['device']}), {machine['date']}; "
        f"memory: {kinds[0] if kinds else 'n/a'}"
    )
    rows = [header] + [_row(n, e, report["ratios"], cpu) for n, e in results.items()]
    widths = [max(len(r[i]) for r in rows if len(r) > 2) for i in range(len(header))]
    lines = [title]
    for r in rows:
        if len(r) == 2:  # an error or skipped subject: name and reason
            lines.append(f"{r[0]:<{widths[0]}}  {r[1]}")
        else:
            cells = [c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
            lines.append("  ".join(cells))
    for name, entry in results.items():
        if "max_batch" in entry:
            found = ", ".join(f"{k} {_max_text(v)}" for k, v in entry["max_batch"].items())
            lines.append(f"max training batch {name}: {found}")
    return "\n".join(lines + [f"note: {n}" for n in report.get("notes", [])])


def _max_text(found: Any) -> str:
    if not isinstance(found, dict):  # the search failed: its error
        return str(found)
    return f">= {found['max_batch']} (limit)" if found["capped"] else str(found["max_batch"])
