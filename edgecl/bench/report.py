"""Plots and Markdown reports: the forgetting monitor's report and reusable plot helpers.

Figures are drawn with matplotlib's object API on an Agg canvas (no pyplot, no global backend
switch, safe from any thread) with its bundled DejaVu fonts, and written atomically as PNG
(mode 0644). Text from user data (class and task names) is never parsed as mathtext.

Bounds (a device runs for weeks): a figure is at most :data:`MAX_PX` pixels on a side, a
heatmap prints cell values only up to :data:`MAX_ANNOTATED` cells on a side, and the monitor
report plots (and tabulates) the last :data:`MAX_PLOT_ROUNDS` promoted rounds of at most
:data:`MAX_PLOT_COLUMNS` classes or tasks (the most forgotten first); the full matrices are
written beside the PNGs as CSV files.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from edgecl.atomic import atomic_write_bytes
from edgecl.calibration.dece import ReliabilityBins, dece_from_bins
from edgecl.continual.metrics import most_forgotten
from edgecl.errors import EdgeclError

DPI = 120
MAX_PX = 4000  # longest side of any figure, in pixels
MAX_ANNOTATED = 30  # heatmaps with more rows or columns than this show no numbers in cells
MAX_TICK_LABELS = 60  # tick labels per axis; beyond, every k-th is labelled
MAX_PLOT_ROUNDS = 40  # promoted rounds in the report's plots and matrix tables
MAX_PLOT_COLUMNS = 20  # classes (or tasks) per report figure
MAX_TABLE_ROUNDS = 100  # rows of the report's learning-rounds table (all in rounds.csv)
LABEL_CHARS = 28  # user labels are broken into lines of this many characters
# every file the monitor report writes, by name: a file of these that a run did not write is
# left over from an earlier run and is removed
REPORT_FILES = ("report.md", "accuracy_matrix.png", "accuracy_matrix.csv", "task_map.png",
                "class_matrix.png", "class_matrix.csv", "class_ap.png", "reliability.png",
                "rounds.csv")


_drawable_codes: frozenset[int] | None = None


def _drawable() -> frozenset[int]:
    """Code points the plots' font (matplotlib's DejaVu Sans) draws (read once)."""
    global _drawable_codes
    if _drawable_codes is None:
        from matplotlib import font_manager

        font = font_manager.get_font(font_manager.findfont("DejaVu Sans"))
        _drawable_codes = frozenset(font.get_charmap())
    return _drawable_codes


def _plain(text) -> str:
    """Text shown literally by matplotlib: every ``$`` escaped, so no mathtext is parsed, and
    each run of characters the font cannot draw written as its code points (``汽车`` ->
    ``[U+6C7D U+8F66]``): drawn as empty boxes, two such class names of one length looked the
    same. The CSV files and report.md keep the names as they are."""
    out, missing = [], []
    for ch in str(text):
        if ch.isspace() or ord(ch) in _drawable():
            if missing:
                out.append("[" + " ".join(missing) + "]")
                missing = []
            out.append(ch)
        else:
            missing.append(f"U+{ord(ch):04X}")
    if missing:
        out.append("[" + " ".join(missing) + "]")
    return "".join(out).replace("$", r"\$")


def _wrap(text, width: int = LABEL_CHARS) -> str:
    """Break a label into lines of at most ``width`` characters, at spaces where it has them
    ("person seen" stays whole, not "person s / een"); a word longer than ``width`` is cut.
    Every character but the spaces a break replaces is kept."""
    import textwrap

    lines = str(text).splitlines() or [""]
    return "\n".join(part for line in lines
                     for part in (textwrap.wrap(line, width, break_on_hyphens=False,
                                                drop_whitespace=True) or [line[:width]]))


def _figure(width_in: float, height_in: float):
    """A new Figure bound to an Agg canvas, at most :data:`MAX_PX` pixels on a side."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    side = MAX_PX / DPI
    fig = Figure(figsize=(min(width_in, side), min(height_in, side)), dpi=DPI,
                 layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _title(ax, title: str, width_in: float) -> None:
    """Set a title wrapped to the figure's width (a one-class heatmap is under 3 inches wide)."""
    import textwrap

    width_in = min(width_in, MAX_PX / DPI)
    ax.set_title(_plain(textwrap.fill(title, max(16, int(width_in * 8)))) if title else "")


def _write_file(path: str | Path, data: bytes) -> Path:
    """Write ``data`` atomically (readable as a plain write would make it: the umask's mode)."""
    atomic_write_bytes(path, data)
    return Path(path)


def _save(fig, path: str | Path) -> Path:
    """Render ``fig`` to PNG and write it atomically.

    Labels pass through :func:`_plain`, which writes characters the font lacks as code
    points; a glyph missing all the same is drawn as an empty box, its warning silenced.
    """
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(?s)Glyph .*missing from", category=UserWarning)
        fig.savefig(buffer, format="png", dpi=DPI)
    return _write_file(path, buffer.getvalue())


def _tick_positions(n: int) -> range:
    """Positions to label on an axis of ``n`` ticks (at most :data:`MAX_TICK_LABELS`)."""
    return range(0, n, max(1, math.ceil(n / MAX_TICK_LABELS)))


def plot_heatmap(R: np.ndarray, task_names: Sequence[str], path: str | Path,
                 row_labels: Sequence[str] | None = None, title: str = "Accuracy matrix",
                 value_label: str = "box mAP50-95", xlabel: str = "task evaluated") -> Path:
    """Heatmap of an accuracy matrix (rows: evaluation points, columns: tasks or classes).

    Cells carry their value up to :data:`MAX_ANNOTATED` rows and columns; the figure is at
    most :data:`MAX_PX` pixels on a side.

    Args:
        R: float (rows, columns); NaN cells are shown blank.
        task_names: column labels (shown literally).
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
    columns = [_plain(_wrap(t)) for t in task_names]
    annotate = R.shape[0] <= MAX_ANNOTATED and R.shape[1] <= MAX_ANNOTATED
    label_in = 0.12 * min(max((len(t) for t in task_names), default=1), LABEL_CHARS)
    width_in = 1.6 + max(label_in, 0) * 0.5 + (1.1 if annotate else 0.3) * max(len(columns), 1)
    height_in = (1.4 + label_in * 0.5 + (0.55 if annotate else 0.2) * max(len(rows), 1)
                 + 0.2 * (len(title) // 24))
    fig = _figure(width_in, height_in)
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(R), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    if annotate:
        for (i, j), value in np.ndenumerate(R):
            if np.isfinite(value):
                ax.text(j, i, f"{round(value, 3) + 0.0:.3f}", ha="center", va="center", fontsize=9,
                        color="black" if value > 0.6 else "white")
    xticks, yticks = _tick_positions(len(columns)), _tick_positions(len(rows))
    ax.set_xticks(list(xticks), [columns[j] for j in xticks], rotation=30, ha="right",
                  fontsize=9 if len(columns) <= MAX_ANNOTATED else 7)
    ax.set_yticks(list(yticks), [_plain(rows[i]) for i in yticks],
                  fontsize=None if len(rows) <= MAX_ANNOTATED else 7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("after")
    _title(ax, title, width_in)
    fig.colorbar(image, ax=ax, label=_plain(value_label))
    return _save(fig, path)


def _line_style(k: int, n: int) -> dict:
    """Colour and line style of series ``k`` of ``n``: tab10 up to 10, tab20 then line styles."""
    if n <= 10:
        return {"color": f"C{k}"}
    from matplotlib import colormaps

    return {"color": colormaps["tab20"](k % 20), "linestyle": ("-", "--", ":", "-.")[k // 20 % 4]}


def plot_lines(series: Mapping[str, Sequence[float]], xlabels: Sequence[str], path: str | Path,
               ylabel: str, title: str = "", ylim: tuple[float, float] | None = (0.0, 1.0),
               xlabel: str = "") -> Path:
    """One line per series over shared x positions (NaN points are gaps).

    The legend sits outside the axes, on the right; the figure is at most :data:`MAX_PX`
    pixels on a side.

    Args:
        series: name -> values, each as long as ``xlabels`` (names are shown literally).
        xlabels: label of each x position.
        path: PNG to write.
        ylabel: y-axis label.
        title: figure title.
        ylim: y-axis limits, or None for automatic (from 0 when no value is negative: an
            all-zero series is drawn on 0 to 0.05, not on -0.04 to 0.04).
        xlabel: x-axis label.

    Returns:
        The written path.

    Raises:
        ValueError: when a series length differs from ``xlabels``.
    """
    for name, values in series.items():
        if len(values) != len(xlabels):
            raise ValueError(f"series {name!r} has {len(values)} values for {len(xlabels)} labels")
    per_column = 30
    n_cols = max(1, math.ceil(len(series) / per_column))
    label_chars = min(max((len(str(n)) for n in series), default=0), LABEL_CHARS)
    legend_in = (0.6 + 0.075 * label_chars) * n_cols if series else 0.0
    width_in = max(5.0, min(0.35 * len(xlabels), 20.0) + 2.5) + legend_in
    fig = _figure(width_in, max(3.6, 0.24 * min(len(series), per_column) + 1.0))
    ax = fig.add_subplot()
    x = np.arange(len(xlabels))
    marker = "o" if len(xlabels) <= 60 else None
    for k, (name, values) in enumerate(series.items()):
        ax.plot(x, np.asarray(values, dtype=np.float64), marker=marker, markersize=4,
                label=_plain(_wrap(name)), **_line_style(k, len(series)))
    ticks = _tick_positions(len(xlabels))
    ax.set_xticks([x[i] for i in ticks], [_plain(xlabels[i]) for i in ticks], rotation=30,
                  ha="right")
    ax.set_ylabel(ylabel)
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    else:
        finite = np.array([v for values in series.values() for v in values], dtype=np.float64)
        finite = finite[np.isfinite(finite)]
        if finite.size and finite.min() >= 0:
            ax.set_ylim(0, max(ax.get_ylim()[1], 0.05))
    ax.grid(alpha=0.3)
    _title(ax, title, width_in - legend_in)
    if series:
        fig.legend(loc="outside right upper", fontsize=8, ncols=n_cols)
    return _save(fig, path)


def ap_axis_top(values) -> float:
    """The top of an AP axis: 1 where some value reaches 0.5, else a step of 0.05 above the
    highest value (at least 0.05): on 0-1, a class falling from 0.068 to 0.013 was a flat line
    at the bottom.

    Args:
        values: the plotted values (NaN ignored).
    """
    finite = np.asarray(values, np.float64)
    finite = finite[np.isfinite(finite)]
    high = float(finite.max()) if finite.size else 0.0
    if high >= 0.5:
        return 1.0
    return max(0.05, math.ceil(high * 1.2 / 0.05) * 0.05)


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
        bars = ax.bar(x + (k - (len(names) - 1) / 2) * width, values, width,
                      label=_plain(name))
        if annotate:
            ax.bar_label(bars, labels=["" if math.isnan(v) else f"{v:.3g}" for v in values],
                         fontsize=7, padding=1)
    ax.set_xticks(x, [_plain(g) for g in groups])
    ax.set_ylabel(ylabel)
    ax.set_title(_plain(title))
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
    top.bar(centres, gap, widths, bottom=gap_base, fill=False, hatch="//", edgecolor="tab:red",
            label="gap")  # hatched, not tinted: a tint over the bars showed another colour
    top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    top.set_ylim(0, 1)
    top.set_ylabel("precision (IoU >= 0.5)")
    top.set_title(_plain(f"{title} (D-ECE {dece_from_bins(bins):.3f})"))
    top.legend(fontsize=8, loc="upper left")
    bottom.bar(centres, counts, widths, color="grey", edgecolor="black")
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("detections")
    return _save(fig, path)


_MD_SPECIAL = re.compile(r"([\\|`*_\[\]<>&$])")
_NEWLINE = re.compile(r"\r\n|\r|\n")


def _md(text) -> str:
    """Text shown literally in Markdown, also in a table cell.

    Backslash, ``|``, backtick, ``*``, ``_``, ``[``, ``]``, ``<``, ``>``, ``&`` (an entity such as
    ``&lt;`` would show as ``<``) and ``$`` (math in some renderers) are backslash-escaped; a
    line break becomes ``<br>``.
    """
    return _NEWLINE.sub("<br>", _MD_SPECIAL.sub(r"\\\1", str(text)))


def _fmt(value, digits: int = 3) -> str:
    """Format a value for a Markdown table (``-`` for missing, text escaped)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):  # + 0.0: a tiny negative reads 0.000, not -0.000
        return f"{round(value, digits) + 0.0:.{digits}f}"
    return _md(value)


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> list[str]:
    """Markdown table lines."""
    lines = ["| " + " | ".join(_md(h) for h in header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]


def _write_csv(path: Path, header: Sequence, rows: Sequence[Sequence]) -> Path:
    """Write a CSV file (UTF-8, mode 0644) atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return _write_file(path, buffer.getvalue().encode("utf-8"))


def _iso(ts_s: float | None) -> str:
    """``2026-11-30T14:05:00+00:00`` for a time in seconds since the epoch, ``-`` for None."""
    from edgecl.boot import iso_time

    return "-" if ts_s is None else iso_time(ts_s)


def _mib(n_bytes) -> str:
    """Bytes as MiB with one decimal (``-`` for none)."""
    if isinstance(n_bytes, bool) or not isinstance(n_bytes, (int, float)):
        return "-"
    return f"{n_bytes / (1024 * 1024):.1f}"


def _summary_lines(summary: dict) -> list[str]:
    """The report's summary table."""
    calibration = summary.get("calibration") or {}
    serving = summary.get("serving_version")
    rows = [("model version (the newest a learning round measured: the figures below are its)",
             summary["model_version"])]
    if serving and serving != summary["model_version"]:  # promoted by hand, or rolled back
        rows.append(("serving version", serving))
    rows += [("round", summary["round"]),
            ("ACC, BWT, forgetting over", summary.get("kind", "tasks")),
            ("ACC (box mAP50-95)", summary["acc"]), ("BWT", summary["bwt"]),
            ("mean forgetting", summary["mean_forgetting"]),
            ("D-ECE (raw scores, at evaluation)", summary["dece"]),
            ("D-ECE before / after post-hoc calibration (out-of-fold cross-fit)",
             f"{_fmt(calibration.get('dece_before'))} / {_fmt(calibration.get('dece_after'))}"),
            ("last runtime sample (FPS, latency and memory as of then)",
             _iso(summary.get("runtime_ts_s"))),
            ("inference FPS (frames the model can take; a camera may deliver fewer)",
             _fmt(summary["inference_fps"], 1)),
            ("latency p50 (ms)", _fmt(summary["latency_ms_p50"], 1)),
            ("replay memory (samples)", summary["memory_samples"]),
            ("replay memory (MiB, as memory stats gives it)", _mib(summary["memory_bytes"])),
            ("rounds promoted / rejected / rolled back",
             f"{summary['n_promoted']} / {summary['n_rejected']} / "
             f"{summary.get('n_rolled_back', 0)}")]
    return ["## Summary", "", *_table(["metric", "value"], rows), ""]


def _shown(view, forgetting: Mapping[str, float], what: str,
           csv_name: str) -> tuple[int, list[int], list[str], str]:
    """Which part of a matrix the report plots and tabulates.

    Returns:
        (first row shown: the last :data:`MAX_PLOT_ROUNDS` rows; columns shown, in matrix order:
        at most :data:`MAX_PLOT_COLUMNS`, the most forgotten first, then by name; Markdown
        notes saying what was left out; a suffix for figure titles).
    """
    n_rows, n_cols = len(view.versions), len(view.task_names)
    first = max(0, n_rows - MAX_PLOT_ROUNDS)
    columns = list(range(n_cols))
    notes, parts = [], []
    link = f"[{csv_name}]({csv_name})"
    if first:
        parts.append(f"last {n_rows - first} of {n_rows} promoted rounds")
        notes.append(f"Plots and tables show the last {n_rows - first} of {n_rows} promoted "
                     f"rounds; every round is in {link}.")
    if n_cols > MAX_PLOT_COLUMNS:
        columns = most_forgotten(view.task_names,
                                 [forgetting.get(name) for name in view.task_names],
                                 MAX_PLOT_COLUMNS)
        kept = set(columns)
        left = [_md(view.task_names[j]) for j in range(n_cols) if j not in kept]
        parts.append(f"{len(columns)} of {n_cols} {what}, most forgotten first")
        notes.append(f"Plots and tables show the {len(columns)} most forgotten of {n_cols} "
                     f"{what} (ties by name); the {len(left)} not shown are in {link}: "
                     + ", ".join(left) + ".")
    suffix = f" ({'; '.join(parts)}; all in {csv_name})" if parts else ""
    return first, columns, [line for note in notes for line in (note, "")], suffix


def _view_lines(view, out_dir: Path, forgetting: Mapping[str, float], written: set[str], *,
                what: str, one: str, stem: str, lines_png: str, headings: Sequence[str],
                alts: Sequence[str], titles: Sequence[str], value_label: str,
                xlabel: str) -> list[str]:
    """A matrix section: table and heatmap of the shown part, lines over rounds, full CSV."""
    csv_name = f"{stem}.csv"
    first, columns, notes, suffix = _shown(view, forgetting, what, csv_name)
    row_labels = view.row_labels()
    _write_csv(out_dir / csv_name, ["round", "model_version", *view.task_names],
               [[r, v, *("" if not np.isfinite(x) else f"{x:.6g}" for x in values)]
                for r, v, values in zip(view.rounds, view.versions, view.values)])
    names = [view.task_names[j] for j in columns]
    values = view.values[first:][:, columns]
    labels = row_labels[first:]
    plot_heatmap(values, names, out_dir / f"{stem}.png", labels, title=titles[0] + suffix,
                 value_label=value_label, xlabel=xlabel)
    plot_lines({n: values[:, k].tolist() for k, n in enumerate(names)}, labels,
               out_dir / lines_png, value_label, title=titles[1] + suffix,
               xlabel="after round (model version)", ylim=(0.0, ap_axis_top(values)))
    written.update({csv_name, f"{stem}.png", lines_png})
    rows = [[label, *[float(v) for v in values[i]]] for i, label in enumerate(labels)]
    return [f"## {headings[0]}", "", *notes, *_table(["after", *names], rows), "",
            f"![{alts[0]}]({stem}.png)", "", f"Full matrix: [{csv_name}]({csv_name}).", "",
            f"## {headings[1]}", "", f"![{alts[1]}]({lines_png})", "",
            f"## {headings[2]}", "",
            *_table([one, "forgetting"], [[t, forgetting.get(t)] for t in view.task_names]),
            ""]


def _matrix_lines(view, out_dir: Path, forgetting: Mapping[str, float],
                  written: set[str]) -> list[str]:
    """Accuracy-matrix section: table, heatmap and per-task lines."""
    return _view_lines(
        view, out_dir, forgetting, written, what="tasks", one="task", stem="accuracy_matrix",
        lines_png="task_map.png",
        headings=["Accuracy matrix (box mAP50-95 of each task after each promoted round)",
                  "Per-task mAP50-95 over rounds",
                  "Forgetting per task (best earlier mAP minus latest)"],
        alts=["accuracy matrix", "per-task mAP"],
        titles=["Accuracy matrix (promoted versions)", "Per-task mAP50-95 over rounds"],
        value_label="box mAP50-95", xlabel="task evaluated")


FORGETTING_NOTE = (
    "Each row is measured on the held-out samples of its own round, which grow as labels "
    "arrive, so a class's forgetting here may exceed `gate.max_forgetting` in a round the gate "
    "accepted: the gate adds up losses each measured on one round's held-out samples, the "
    "parent and the candidate on the same images (`gate_drops` in `edgecl models list --json`). "
    "A negative value is a class now above every earlier measure of it (learnt, not forgotten).")
"""Below the per-class forgetting table: why it may differ from what the gate bounded."""


def _class_lines(view, out_dir: Path, forgetting: Mapping[str, float],
                 written: set[str]) -> list[str]:
    """Per-class section: AP50-95 heatmap, per-class AP over rounds, forgetting per class."""
    return _view_lines(
        view, out_dir, forgetting, written, what="classes", one="class", stem="class_matrix",
        lines_png="class_ap.png",
        headings=["Per-class AP50-95 after each promoted round", "Per-class AP50-95 over rounds",
                  "Forgetting per class (best earlier AP minus latest)"],
        alts=["per-class heatmap", "per-class AP"],
        titles=["Per-class AP50-95 (promoted versions)",
                "Per-class AP50-95 over rounds (held-out human/ground-truth labels)"],
        value_label="box AP50-95", xlabel="class")


def _calibration_lines(report: dict | None, version: str,
                       names_now: dict[int, str] | None = None,
                       pseudo_now: dict[int, str] | None = None, labels_cfg=None) -> list[str]:
    """Post-hoc calibration section: D-ECE before and after with its protocol; each class under
    its name now (``names_now``: class id -> name), else the name the report recorded; with
    ``pseudo_now`` (:func:`pseudo_thresholds_now`, made with ``labels_cfg``), the threshold
    the device pseudo-labels each class at with these settings."""
    if not report:
        return []
    names_now = names_now or {}
    proto = report.get("protocol") or {}
    rows = [(key, proto.get(key)) for key in ("iou_thr", "n_bins", "min_conf", "matching",
                                              "dece_after", "calibrator") if key in proto]
    per_class = report.get("per_class") or {}
    class_rows = [[_by_class_id(k, names_now, v.get("name", k)), v.get("method"), v.get("n"),
                   v.get("n_tp"), v.get("dece_before"), v.get("dece_after"),
                   (report.get("thresholds") or {}).get(k)]
                  + ([_by_class_id(k, pseudo_now, "")] if pseudo_now is not None else [])
                  for k, v in per_class.items()]
    headers = ["class", "method", "detections", "TP", "D-ECE before", "D-ECE after",
               f"calibrated score at precision {_fmt(report.get('target_precision'), 2)}"]
    note = []
    if pseudo_now is not None and labels_cfg is not None:
        lab = labels_cfg
        headers.append("pseudo-label threshold")
        note = [f"The calibrated score is where the calibrator fitted in the round reaches its "
                f"precision. The pseudo-label threshold is what the device applies with these "
                f"settings: the calibrated score at labels.pseudo_precision "
                f"{lab.pseudo_precision:g}, for a class fitted on at least "
                f"labels.pseudo_min_true_positives {lab.pseudo_min_true_positives} true "
                f"positives, and never below labels.uncertain_high {lab.uncertain_high:g} or "
                f"labels.pseudo_conf {lab.pseudo_conf:g}.", ""]
    return [f"## Post-hoc calibration of {version}", "",
            f"D-ECE {_fmt(report.get('dece_before'))} before, "
            f"{_fmt(report.get('dece_after'))} after calibration.{_unmeasured(report)}", "",
            *_table(["protocol", "value"], rows), "",
            *(_table(headers, class_rows) + [""] + note if class_rows else [])]


def pseudo_thresholds_now(state_dir: str | Path, version: str, labels_cfg) -> dict[int, str] | None:
    """The threshold at which a device serving ``version`` pseudo-labels each class with these
    settings, by the runtime's own rule (:class:`edgecl.runtime.versions.CalibrationCache` and
    :meth:`edgecl.runtime.labels.pseudo.PseudoLabeler.threshold`).

    Args:
        state_dir: the state directory.
        version: the version whose calibrator is read (``models/VERSION/calibrator.json``).
        labels_cfg: the ``labels`` section (precision, least true positives, floors).

    Returns:
        class id -> ``"0.600"``, or ``"none (...)"`` saying why the class gets no pseudo-label;
        ``None`` when the version's calibrator cannot be read (pruned, damaged, none).
    """
    from edgecl.models.registry import Registry
    from edgecl.runtime.labels.pseudo import PseudoLabeler
    from edgecl.runtime.versions import CalibrationCache

    lab = labels_cfg
    try:
        registry = Registry(Path(state_dir) / "models", create=False)
        cache = CalibrationCache(registry, lambda: version, lab.pseudo_precision,
                                 lab.pseudo_min_true_positives)
        calibrator = cache.calibrator
    except (EdgeclError, OSError):
        return None
    if calibrator is None:
        return None
    known = set(calibrator.classes)
    labeler = PseudoLabeler(cache.thresholds(known), lab.pseudo_conf, lab.uncertain_low,
                            lab.uncertain_high)
    out = {}
    for cls in sorted(known):
        value = labeler.threshold(cls)
        n_tp = calibrator.classes[cls].n_tp
        if math.isfinite(value):
            out[cls] = f"{value:.3f}"
        elif n_tp < lab.pseudo_min_true_positives:
            out[cls] = f"none ({n_tp} true positives, fewer than {lab.pseudo_min_true_positives})"
        else:
            out[cls] = f"none (precision {lab.pseudo_precision:g} never reached)"
    return out


def _by_class_id(key: str, table: dict[int, str], default: str) -> str:
    """``table``'s entry for a class id written as text (``"0"``), else ``default`` (a class's
    name now, else the name recorded with it; its pseudo-label threshold, else "")."""
    try:
        return table.get(int(key), default)
    except (TypeError, ValueError):
        return default


def unevaluated_classes(state_dir: str | Path, evaluated: Sequence[str]) -> list[str]:
    """The device's classes, in id order, that no evaluation covered yet (none held out); a
    class merged into another is no class of its own any more, and is left out.

    Args:
        state_dir: the state directory (its ``classes.json``).
        evaluated: the names the evaluations hold.

    Returns:
        Class names; empty also when the class registry cannot be read (its fault is said
        where it is used).
    """
    from edgecl.models.classes import ClassRegistry, ClassRegistryError

    try:
        registry = ClassRegistry(state_dir)
        names, merged = registry.names(), registry.merged()
    except ClassRegistryError:
        return []
    return [name for cid, name in sorted(names.items())
            if name not in set(evaluated) and cid not in merged]


def _unevaluated_lines(state_dir: str | Path, evaluated: Sequence[str]) -> list[str]:
    """A line naming the device's classes that no evaluation covered yet (none held out)."""
    missing = unevaluated_classes(state_dir, evaluated)
    if not missing:
        return []
    shown = ", ".join(_md(name) for name in missing)
    return [f"Not in the tables above: {shown}. No promoted version measured these classes "
            f"of the device's registry: a round measures a class once the replay memory holds "
            f"a held-out sample of it (a version rolled back since does not count).", ""]


def _unmeasured(report: Mapping) -> str:
    """Why a calibration report has no D-ECE (a sentence starting with a space), or ``""``."""
    images, detections = report.get("n_images"), report.get("n_detections")
    proto = report.get("protocol") or {}
    if report.get("dece_before") is None and detections == 0:
        return (f" Not measured: the model made no detection with confidence >= "
                f"{_fmt(proto.get('min_conf'), 3)} on the {images} held-out image(s).")
    if report.get("dece_after") is None and report.get("dece_before") is not None:
        return (f" After calibration not measured: cross-fitting needs detections on at least "
                f"2 held-out images ({images} here).")
    return ""


ROUND_COLUMNS = ("round", "model_version", "status", "reason", "acc", "bwt", "mean_forgetting",
                 "seconds", "ts_s")


ROUND_STATUS_SHOWN = {"retired": "rolled back"}
"""A round's status as the report's table says it: the monitor's ``retired`` is a version that
served, then was rolled back (its reason stays the round's own, such as ``accepted``)."""


LATER_START_REASON = ("a model added by hand ('edgecl models add'), as given, before the round "
                      "that learnt on it")
"""How the report names a start's row that is not the device's first: a team's checkpoint
added and promoted after rounds had run (before, it read as the model the device started with)."""


def _round_lines(rounds: list[dict], out_dir: Path, written: set[str]) -> list[str]:
    """Learning-rounds section: the last :data:`MAX_TABLE_ROUNDS` rounds; all in rounds.csv."""
    from edgecl.runtime.monitor import START_REASON

    rounds = [dict(r, reason=LATER_START_REASON) if i and r.get("reason") == START_REASON else r
              for i, r in enumerate(rounds)]
    _write_csv(out_dir / "rounds.csv", ROUND_COLUMNS,
               [["" if r.get(k) is None else r.get(k) for k in ROUND_COLUMNS] for r in rounds])
    written.add("rounds.csv")
    shown = rounds[-MAX_TABLE_ROUNDS:]
    rows = [[r["round"], r["model_version"], ROUND_STATUS_SHOWN.get(r["status"], r["status"]),
             r["reason"] or "", r["acc"], r["bwt"], r["mean_forgetting"], r["seconds"]]
            for r in shown]
    header = ["round", "version", "status", "reason", "ACC", "BWT", "forgetting", "seconds"]
    note = (f"The last {len(shown)} of {len(rounds)} rounds; every round is in "
            "[rounds.csv](rounds.csv)." if len(shown) < len(rounds)
            else "Also in [rounds.csv](rounds.csv).")
    return ["## Learning rounds", "", note, "", *_table(header, rows), ""]


def _make_out_dir(out: Path) -> None:
    """Create the report folder, or say in one line which part of its path is not a folder, or
    which of the report's files (:data:`REPORT_FILES`) is there as something else.

    Raises:
        EdgeclError: when ``out`` or one of its parents exists and is not a folder, or a report
            file's name is taken by a folder (or a FIFO, a socket ...).
    """
    for folder in (out, *out.parents):
        if folder.is_dir():
            break
        if folder.exists() or folder.is_symlink():
            where = "" if folder == out else " (in its path)"
            raise EdgeclError(f"report folder {out}: {folder}{where} is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    # checked before any file is written: a report is never left half written
    for name in REPORT_FILES:
        path = out / name
        if not path.is_symlink() and path.exists() and not path.is_file():
            kind = "a folder" if path.is_dir() else "not a regular file"
            raise EdgeclError(f"report folder {out}: {path} is {kind}, where the report writes "
                              f"its {name}; move it away or give another --out")


def _remove_stale(out: Path, written: set[str]) -> None:
    """Remove report files (by name, see :data:`REPORT_FILES`) this run did not write."""
    for name in REPORT_FILES:
        path = out / name
        if name not in written and (path.is_symlink() or path.is_file()):
            path.unlink(missing_ok=True)


def write_monitor_report(state_dir: str | Path, out_dir: str | Path | None = None,
                         labels_cfg=None) -> Path:
    """Write ``report.md``, its PNGs and CSV files from the metrics database of a state directory.

    Plots and matrix tables are bounded (see the module docstring); the full matrices go to
    ``accuracy_matrix.csv``/``class_matrix.csv`` and every round to ``rounds.csv``. Report
    files of an earlier run that this one does not write are removed.

    Args:
        state_dir: edgecl state directory holding ``metrics/metrics.sqlite``.
        out_dir: where to write (default ``STATE/metrics/report``).
        labels_cfg: the device's ``labels`` section: the calibration table then shows the
            threshold each class is pseudo-labelled at with it.

    Returns:
        Path of ``report.md``.

    Raises:
        MonitorError: when the metrics database is missing or damaged.
        EdgeclError: when ``out_dir`` (or a folder above it) exists and is not a folder.
    """
    from edgecl.runtime.monitor import Monitor, serving_now

    monitor = Monitor(state_dir, create=False, private_copy=True)  # reads: changes nothing
    out = Path(out_dir) if out_dir is not None else monitor.db_path.parent / "report"
    if out_dir is None and monitor.read_only:  # a state directory pulled from a device
        raise EdgeclError(f"{monitor.db_path.parent} cannot be written here (read-only), so the "
                          f"report cannot go beside the metrics: give --out DIR")
    _make_out_dir(out)
    written: set[str] = {"report.md"}
    summary = monitor.summary()
    summary["serving_version"] = serving_now(state_dir, summary.get("serving_version"))
    view = monitor.matrix_view("promoted")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = ["# edgecl monitor report", "", f"State directory `{Path(state_dir)}`, written {stamp}.",
             "", *_summary_lines(summary)]
    if not view.versions:
        lines += ["No promoted evaluation recorded yet.", ""]
    elif summary["kind"] == "tasks":  # frames without tasks: the class sections are the matrix
        lines += _matrix_lines(view, out, summary["forgetting"], written)
    classes = monitor.matrix_view("promoted", kind="classes")
    if classes.versions and classes.task_names:
        lines += _class_lines(classes, out, summary["class_forgetting"], written)
        lines += [FORGETTING_NOTE, ""]
        lines += _unevaluated_lines(state_dir, classes.task_names)
    if view.versions:
        version = view.versions[-1]
        pseudo_now = (pseudo_thresholds_now(state_dir, version, labels_cfg)
                      if labels_cfg is not None else None)
        lines += _calibration_lines(monitor.calibration(version), version,
                                    monitor.class_names(), pseudo_now, labels_cfg)
    latest = monitor.latest_reliability("promoted")
    if latest is not None and int(np.sum(latest[2].counts)) > 0:
        round_no, version, bins = latest
        plot_reliability(bins, out / "reliability.png", title=f"{version} (round {round_no})")
        written.add("reliability.png")
        lines += ["## Calibration of the latest promoted version (raw scores, before post-hoc "
                  "calibration; every held-out detection)", "",
                  "![reliability diagram](reliability.png)", ""]
    lines += _round_lines(monitor.rounds(), out, written)
    report = out / "report.md"
    _write_file(report, "\n".join(lines).encode("utf-8"))
    _remove_stale(out, written)
    return report
