"""Plots and Markdown reports: the forgetting monitor's report and reusable plot helpers.

Figures are drawn with matplotlib's object API on an Agg canvas (no pyplot, no global backend
switch, safe from any thread) with its bundled DejaVu fonts, and written atomically as PNG.
"""

from __future__ import annotations

import datetime as dt
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from edgecl.atomic import atomic_write_bytes, atomic_write_text
from edgecl.calibration.dece import ReliabilityBins, dece_from_bins

DPI = 120


def _figure(width_in: float, height_in: float):
    """A new Figure bound to an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _title(ax, title: str, width_in: float) -> None:
    """Set a title wrapped to the figure's width (a one-class heatmap is under 3 inches wide)."""
    import textwrap

    ax.set_title(textwrap.fill(title, max(16, int(width_in * 8))) if title else "")


def _save(fig, path: str | Path) -> Path:
    """Render ``fig`` to PNG and write it atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def plot_heatmap(R: np.ndarray, task_names: Sequence[str], path: str | Path,
                 row_labels: Sequence[str] | None = None, title: str = "Accuracy matrix",
                 value_label: str = "box mAP50-95", xlabel: str = "task evaluated") -> Path:
    """Annotated heatmap of an accuracy matrix (rows: evaluation points, columns: tasks or classes).

    Args:
        R: float (rows, columns); NaN cells are shown blank.
        task_names: column labels.
        path: PNG to write.
        row_labels: row labels (default ``0..rows-1``).
        title: figure title.
        value_label: colour-bar label.
        xlabel: x-axis label.

    Returns:
        The written path.
    """
    R = np.asarray(R, dtype=np.float64)
    rows = [str(r) for r in (row_labels if row_labels is not None else range(R.shape[0]))]
    width_in = 1.6 + 1.1 * max(len(task_names), 1)
    fig = _figure(width_in, 1.4 + 0.55 * max(len(rows), 1) + 0.2 * (len(title) // 24))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(R), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    for (i, j), value in np.ndenumerate(R):
        if np.isfinite(value):
            ax.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=9,
                    color="black" if value > 0.6 else "white")
    ax.set_xticks(range(len(task_names)), [str(t) for t in task_names], rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("after")
    _title(ax, title, width_in)
    fig.colorbar(image, ax=ax, label=value_label)
    return _save(fig, path)


def plot_lines(series: Mapping[str, Sequence[float]], xlabels: Sequence[str], path: str | Path,
               ylabel: str, title: str = "", ylim: tuple[float, float] | None = (0.0, 1.0)) -> Path:
    """One line per series over shared x positions (NaN points are gaps).

    Args:
        series: name -> values, each as long as ``xlabels``.
        xlabels: label of each x position.
        path: PNG to write.
        ylabel: y-axis label.
        title: figure title.
        ylim: y-axis limits, or None for automatic.

    Returns:
        The written path.

    Raises:
        ValueError: when a series length differs from ``xlabels``.
    """
    width_in = max(5.0, 0.7 * len(xlabels) + 2.5)
    fig = _figure(width_in, 3.6)
    ax = fig.add_subplot()
    x = np.arange(len(xlabels))
    for name, values in series.items():
        if len(values) != len(xlabels):
            raise ValueError(f"series {name!r} has {len(values)} values for {len(xlabels)} labels")
        ax.plot(x, np.asarray(values, dtype=np.float64), marker="o", label=str(name))
    ax.set_xticks(x, [str(v) for v in xlabels], rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    _title(ax, title, width_in)
    if series:
        ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def plot_bars(groups: Mapping[str, Mapping[str, float]], path: str | Path, ylabel: str,
              title: str = "", annotate: bool = True) -> Path:
    """Grouped bar chart, e.g. ``{"5%": {"ER": 0.61, "MIR": 0.78}, "10%": {...}}``.

    Args:
        groups: group label -> (series name -> value); missing values are left out.
        path: PNG to write.
        ylabel: y-axis label.
        title: figure title.
        annotate: print each bar's value above it.

    Returns:
        The written path.
    """
    names = list(dict.fromkeys(s for bars in groups.values() for s in bars))
    fig = _figure(max(4.5, 0.5 * len(groups) * max(len(names), 1) + 2.0), 3.6)
    ax = fig.add_subplot()
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(groups))
    for k, name in enumerate(names):
        values = [groups[g].get(name, math.nan) for g in groups]
        bars = ax.bar(x + (k - (len(names) - 1) / 2) * width, values, width, label=name)
        if annotate:
            ax.bar_label(bars, labels=["" if math.isnan(v) else f"{v:.3g}" for v in values],
                         fontsize=7, padding=1)
    ax.set_xticks(x, [str(g) for g in groups])
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    if names:
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_reliability(bins: ReliabilityBins, path: str | Path, title: str = "Reliability") -> Path:
    """Reliability diagram: precision per confidence bin against the diagonal, with counts.

    Args:
        bins: the reliability bins.
        path: PNG to write.
        title: figure title (the D-ECE is appended).

    Returns:
        The written path.
    """
    edges = np.asarray(bins.bin_edges, dtype=np.float64)
    counts = np.asarray(bins.counts)
    centres, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    precision = np.nan_to_num(np.asarray(bins.precision, dtype=np.float64))
    fig = _figure(4.8, 5.4)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.bar(centres, precision, widths, edgecolor="black", label="precision")
    conf = np.asarray(bins.conf_mean, dtype=np.float64)
    gap_base = np.where(counts > 0, np.minimum(precision, conf), 0)
    gap = np.where(counts > 0, np.abs(conf - precision), 0)
    top.bar(centres, gap, widths, bottom=gap_base, color="tab:red", alpha=0.35, label="gap")
    top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    top.set_ylim(0, 1)
    top.set_ylabel("precision (IoU >= 0.5)")
    top.set_title(f"{title} (D-ECE {dece_from_bins(bins):.3f})")
    top.legend(fontsize=8, loc="upper left")
    bottom.bar(centres, counts, widths, color="grey", edgecolor="black")
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("detections")
    return _save(fig, path)


def _fmt(value, digits: int = 3) -> str:
    """Format a number for a Markdown table (``-`` for missing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> list[str]:
    """Markdown table lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]


def _summary_lines(summary: dict) -> list[str]:
    """The report's summary table."""
    calibration = summary.get("calibration") or {}
    rows = [("model version", summary["model_version"]), ("round", summary["round"]),
            ("ACC, BWT, forgetting over", summary.get("kind", "tasks")),
            ("ACC (box mAP50-95)", summary["acc"]), ("BWT", summary["bwt"]),
            ("mean forgetting", summary["mean_forgetting"]), ("D-ECE", summary["dece"]),
            ("D-ECE before / after calibration",
             f"{_fmt(calibration.get('dece_before'))} / {_fmt(calibration.get('dece_after'))}"),
            ("FPS", summary["fps"]), ("latency p50 (ms)", summary["latency_ms_p50"]),
            ("replay memory (samples)", summary["memory_samples"]),
            ("replay memory (bytes)", summary["memory_bytes"]),
            ("rounds promoted / rejected", f"{summary['n_promoted']} / {summary['n_rejected']}")]
    return ["## Summary", "", *_table(["metric", "value"], rows), ""]


def _matrix_lines(view, out_dir: Path, forgetting: Mapping[str, float]) -> list[str]:
    """Accuracy-matrix section: table, heatmap and per-task lines."""
    row_labels = [f"r{r} {v}" for r, v in zip(view.rounds, view.versions)]
    plot_heatmap(view.values, view.task_names, out_dir / "accuracy_matrix.png", row_labels,
                 title="Accuracy matrix (promoted versions)")
    series = {t: view.values[:, j].tolist() for j, t in enumerate(view.task_names)}
    plot_lines(series, row_labels, out_dir / "task_map.png", "box mAP50-95",
               title="Per-task mAP50-95 over rounds")
    rows = [[label, *[float(v) for v in view.values[i]]] for i, label in enumerate(row_labels)]
    return ["## Accuracy matrix (box mAP50-95 of each task after each promoted round)", "",
            *_table(["after", *view.task_names], rows), "",
            "![accuracy matrix](accuracy_matrix.png)", "",
            "## Per-task mAP50-95 over rounds", "", "![per-task mAP](task_map.png)", "",
            "## Forgetting per task (best earlier mAP minus latest)", "",
            *_table(["task", "forgetting"], [[t, forgetting.get(t)] for t in view.task_names]), ""]


def _class_lines(view, out_dir: Path, forgetting: Mapping[str, float]) -> list[str]:
    """Per-class section: AP50-95 heatmap, per-class AP over rounds, forgetting per class."""
    row_labels = [f"r{r} {v}" for r, v in zip(view.rounds, view.versions)]
    plot_heatmap(view.values, view.task_names, out_dir / "class_matrix.png", row_labels,
                 title="Per-class AP50-95 (promoted versions)", value_label="box AP50-95",
                 xlabel="class")
    series = {c: view.values[:, j].tolist() for j, c in enumerate(view.task_names)}
    plot_lines(series, row_labels, out_dir / "class_ap.png", "box AP50-95",
               title="Per-class AP50-95 over rounds (held-out human/ground-truth labels)")
    rows = [[label, *[float(v) for v in view.values[i]]] for i, label in enumerate(row_labels)]
    return ["## Per-class AP50-95 after each promoted round", "",
            *_table(["after", *view.task_names], rows), "",
            "![per-class heatmap](class_matrix.png)", "",
            "## Per-class AP50-95 over rounds", "", "![per-class AP](class_ap.png)", "",
            "## Forgetting per class (best earlier AP minus latest)", "",
            *_table(["class", "forgetting"], [[c, forgetting.get(c)] for c in view.task_names]), ""]


def _calibration_lines(report: dict | None, version: str) -> list[str]:
    """Post-hoc calibration section: D-ECE before and after with its protocol."""
    if not report:
        return []
    proto = report.get("protocol") or {}
    rows = [(key, proto.get(key)) for key in ("iou_thr", "n_bins", "min_conf", "matching",
                                              "dece_after", "calibrator") if key in proto]
    per_class = report.get("per_class") or {}
    class_rows = [[v.get("name", k), v.get("method"), v.get("n"), v.get("n_tp"),
                   v.get("dece_before"), v.get("dece_after"),
                   (report.get("thresholds") or {}).get(k)] for k, v in per_class.items()]
    return [f"## Post-hoc calibration of {version}", "",
            f"D-ECE {_fmt(report.get('dece_before'))} before, "
            f"{_fmt(report.get('dece_after'))} after calibration.", "",
            *_table(["protocol", "value"], rows), "",
            *_table(["class", "method", "detections", "TP", "D-ECE before", "D-ECE after",
                     f"threshold at precision {_fmt(report.get('target_precision'), 2)}"],
                    class_rows), ""]


def _round_lines(rounds: list[dict]) -> list[str]:
    """Learning-rounds section."""
    rows = [[r["round"], r["model_version"], r["status"], r["reason"] or "", r["acc"], r["bwt"],
             r["mean_forgetting"], r["seconds"]] for r in rounds]
    header = ["round", "version", "status", "reason", "ACC", "BWT", "forgetting", "seconds"]
    return ["## Learning rounds", "", *_table(header, rows), ""]


def write_monitor_report(state_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write ``report.md`` and its PNGs from the metrics database of a state directory.

    Args:
        state_dir: edgecl state directory holding ``metrics/metrics.sqlite``.
        out_dir: where to write (default ``STATE/metrics/report``).

    Returns:
        Path of ``report.md``.

    Raises:
        MonitorError: when the metrics database is missing or damaged.
    """
    from edgecl.runtime.monitor import Monitor

    monitor = Monitor(state_dir, create=False)
    out = Path(out_dir) if out_dir is not None else monitor.db_path.parent / "report"
    out.mkdir(parents=True, exist_ok=True)
    summary = monitor.summary()
    view = monitor.matrix_view("promoted")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = ["# edgecl monitor report", "", f"State directory `{Path(state_dir)}`, written {stamp}.",
             "", *_summary_lines(summary)]
    if not view.versions:
        lines += ["No promoted evaluation recorded yet.", ""]
    elif summary["kind"] == "tasks":  # frames without tasks: the class sections are the matrix
        lines += _matrix_lines(view, out, summary["forgetting"])
    classes = monitor.matrix_view("promoted", kind="classes")
    if classes.versions and classes.task_names:
        lines += _class_lines(classes, out, summary["class_forgetting"])
    if view.versions:
        lines += _calibration_lines(monitor.calibration(view.versions[-1]), view.versions[-1])
    latest = monitor.latest_reliability("promoted")
    if latest is not None and int(np.sum(latest[2].counts)) > 0:
        round_no, version, bins = latest
        plot_reliability(bins, out / "reliability.png", title=f"{version} (round {round_no})")
        lines += ["## Calibration (all tasks of the latest promoted version)", "",
                  "![reliability diagram](reliability.png)", ""]
    lines += _round_lines(monitor.rounds())
    report = out / "report.md"
    atomic_write_text(report, "\n".join(lines))
    return report
