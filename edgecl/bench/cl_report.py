"""Tables and plots of the continual-learning benchmark (``table.md`` and PNGs).

Runs are grouped by (strategy, budget); every figure is a mean over seeds.  ACC, BWT and
forgetting are shown in percent of box mAP50-95, as the drone paper reports them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgecl.atomic import atomic_write_text

NO_BUDGET_COLUMN = "no budget"
BARS_PNG = "acc_by_strategy.png"
CURVE_PNG = "acc_after_each_task.png"
FINAL_PNG = "final_task_map.png"
HEATMAP_PNG = "accuracy_matrix_best.png"


def budget_label(budget: float | None) -> str:
    """``0.05`` -> ``5%``; None -> ``no budget``."""
    if budget is None:
        return NO_BUDGET_COLUMN
    return f"{budget * 100:g}%"


def group_label(strategy: str, budget: float | None) -> str:
    """Name of a (strategy, budget) group in plots, e.g. ``er 5%`` or ``joint``."""
    return strategy if budget is None else f"{strategy} {budget_label(budget)}"


def as_matrix(rows: Sequence[Sequence[float | None]]) -> np.ndarray:
    """A stored matrix (lists, null for NaN) as a float array."""
    return np.array([[math.nan if v is None else float(v) for v in row] for row in rows],
                    dtype=np.float64)


def _mean_std(values: Sequence[float | None]) -> tuple[float, float, int]:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return math.nan, math.nan, 0
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0
    return float(np.mean(finite)), std, len(finite)


def group_runs(runs: Sequence[dict]) -> dict[tuple[str, float | None], list[dict]]:
    """Runs by (strategy, budget), in first-seen order."""
    groups: dict[tuple[str, float | None], list[dict]] = {}
    for run in runs:
        groups.setdefault((run["strategy"], run["budget"]), []).append(run)
    return groups


CALIBRATION_FIELDS = ("dece_raw", "dece_posthoc")
MIN_ACC_FOR_DECE_CHANGE = 0.01
"""Below this ACC (box mAP50-95) the table gives no D-ECE change: a model that detects almost
nothing reads as a -100 % 'improvement' (0.976 -> 0.005 at ACC 0)."""


def _field(run: dict, field: str) -> float | None:
    """A run's figure; the D-ECE pair lives in its ``calibration`` entry; ``seconds`` is the
    time after task 1 (task 1 is learnt once per seed and shared by every strategy: the run
    that happened to learn it would otherwise look slow)."""
    if field in CALIBRATION_FIELDS:
        return (run.get("calibration") or {}).get(field)
    if field == "seconds" and run.get("seconds") is not None:
        return run["seconds"] - (run.get("first_task_s") or 0.0)
    return run.get(field)


def summarise(runs: Sequence[dict]) -> dict[str, dict]:
    """Mean and std over seeds of each group's figures.

    Args:
        runs: run records (see ``edgecl.bench.cl``).

    Returns:
        group label -> ``strategy``, ``budget``, ``seeds``, ``acc``/``bwt``/``forgetting``/
        ``dece``/``seconds``/``dece_raw``/``dece_posthoc`` means with ``*_std`` (fractions,
        not percent; ``dece_raw``/``dece_posthoc``: D-ECE after the last task on every test
        image, raw and after the post-hoc calibrator; ``seconds``: after task 1).
    """
    out = {}
    for (strategy, budget), members in group_runs(runs).items():
        entry: dict = {"strategy": strategy, "budget": budget, "seeds": len(members)}
        for field in ("acc", "bwt", "forgetting", "dece", "seconds", "dece_raw", "dece_posthoc"):
            mean, std, _ = _mean_std([_field(m, field) for m in members])
            entry[field] = None if math.isnan(mean) else round(mean, 6)
            entry[f"{field}_std"] = None if math.isnan(std) else round(std, 6)
        out[group_label(strategy, budget)] = entry
    return out


def _pct(mean: float | None, std: float | None, seeds: int) -> str:
    if mean is None:
        return "-"
    return f"{100 * mean:.2f}" if seeds < 2 else f"{100 * mean:.2f} ± {100 * (std or 0.0):.2f}"


def _main_table(summary: dict[str, dict]) -> list[str]:
    budgets = sorted({e["budget"] for e in summary.values() if e["budget"] is not None})
    columns = [budget_label(b) for b in budgets]
    if any(e["budget"] is None for e in summary.values()):
        columns.append(NO_BUDGET_COLUMN)
    strategies = list(dict.fromkeys(e["strategy"] for e in summary.values()))
    lines = ["| strategy | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for strategy in strategies:
        cells = []
        for column in columns:
            entry = next((e for e in summary.values() if e["strategy"] == strategy
                          and budget_label(e["budget"]) == column), None)
            cells.append("" if entry is None else
                         f"{_pct(entry['acc'], entry['acc_std'], entry['seeds'])} / "
                         f"{_pct(entry['bwt'], entry['bwt_std'], entry['seeds'])}")
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    return lines


def _detail_table(summary: dict[str, dict]) -> list[str]:
    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    def change(entry: dict) -> str:
        raw, post = entry.get("dece_raw"), entry.get("dece_posthoc")
        if raw is None or post is None or raw <= 0:
            return "-"
        if entry.get("acc") is not None and entry["acc"] < MIN_ACC_FOR_DECE_CHANGE:
            # a model that finds almost nothing: every score is calibrated towards 0, and D-ECE
            # falls by ~100 % without the model being any more trustworthy
            return f"n/a (ACC < {100 * MIN_ACC_FOR_DECE_CHANGE:.0f} %)"
        return f"{100 * (post - raw) / raw:+.0f}%"

    lines = ["| run group | seeds | ACC % | BWT % | forgetting % | D-ECE raw | D-ECE post-hoc "
             "| change | seconds / run after task 1 |", "|---|---|---|---|---|---|---|---|---|"]
    for label, e in summary.items():
        secs = "-" if e["seconds"] is None else f"{e['seconds']:.0f}"
        lines.append(f"| {label} | {e['seeds']} | {_pct(e['acc'], e['acc_std'], e['seeds'])} | "
                     f"{_pct(e['bwt'], e['bwt_std'], e['seeds'])} | "
                     f"{_pct(e['forgetting'], e['forgetting_std'], e['seeds'])} | "
                     f"{num(e.get('dece_raw'))} | {num(e.get('dece_posthoc'))} | {change(e)} | {secs} |")
    return lines


def calibration_protocol(runs: Sequence[dict]) -> list[str]:
    """Markdown lines stating the D-ECE protocol of the runs (empty when none recorded it)."""
    proto = next(((r.get("calibration") or {}).get("protocol") for r in runs
                  if (r.get("calibration") or {}).get("protocol")), None)
    if not proto:
        return []
    return [("D-ECE after the last task, on the test images of every task, all classes: "
             f"IoU >= {proto.get('iou_thr')} with a same-class box, {proto.get('n_bins')} "
             f"{proto.get('binning', 'equal-width')} bins, detections with score >= "
             f"{proto.get('min_conf')}, matching: {proto.get('matching')}. Post-hoc: edgecl's "
             f"per-class calibrator ({proto.get('calibrator', 'isotonic/Platt')}), "
             f"{proto.get('dece_after', 'cross-fitted by image')}. The calibrator is monotone per "
             "class, so the mAP is the same with and without it (up to ties): raw and post-hoc "
             "D-ECE are at equal mAP."), ""]


def mean_matrix(members: Sequence[dict]) -> np.ndarray:
    """Element-wise mean of the runs' accuracy matrices (NaN stays NaN)."""
    stack = np.stack([as_matrix(m["matrix"]) for m in members])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells above the diagonal
        return np.nanmean(stack, axis=0)


def best_group(summary: dict[str, dict]) -> str | None:
    """Group with the highest mean ACC, leaving out ``joint`` (an upper bound, not a
    continual strategy) unless nothing else ran."""
    ranked = [(e["acc"], label) for label, e in summary.items() if e["acc"] is not None]
    others = [item for item in ranked if summary[item[1]]["strategy"] != "joint"]
    pool = others or ranked
    return max(pool)[1] if pool else None


def _plots(runs: Sequence[dict], summary: dict[str, dict], task_names: Sequence[str],
           out: Path) -> list[Path]:
    from edgecl.bench.report import plot_bars, plot_heatmap, plot_lines
    from edgecl.continual.metrics import acc

    groups = group_runs(runs)
    bars: dict[str, dict[str, float]] = {}
    budgets = sorted({e["budget"] for e in summary.values() if e["budget"] is not None}) or [None]
    for budget in budgets:
        bars[budget_label(budget) if budget is not None else "all"] = {
            e["strategy"]: 100 * e["acc"] for e in summary.values()
            if e["acc"] is not None and e["budget"] in (budget, None)}
    paths = [plot_bars(bars, out / BARS_PNG, "ACC (box mAP50-95, %)",
                       title="ACC after the last task, by replay budget")]
    curves, finals = {}, {}
    for (strategy, budget), members in groups.items():
        matrix = mean_matrix(members)
        # in % as the bars are (before: 19.1 on the bars, 0.19 on these lines)
        curves[group_label(strategy, budget)] = [100 * acc(matrix, i)
                                                 for i in range(matrix.shape[0])]
        finals[group_label(strategy, budget)] = (100 * matrix[-1]).tolist()
    xlabels = [f"after {t}" for t in task_names]
    paths.append(plot_lines(curves, xlabels, out / CURVE_PNG, "ACC (box mAP50-95, %)",
                            title="Mean mAP50-95 over the tasks seen, after each task", ylim=None,
                            xlabel="task learnt"))
    paths.append(plot_lines(finals, list(task_names), out / FINAL_PNG, "box mAP50-95, %",
                            title="Per-task mAP50-95 after the last task", ylim=None,
                            xlabel="task evaluated"))
    best = best_group(summary)
    if best is not None:
        entry = summary[best]
        matrix = mean_matrix(groups[(entry["strategy"], entry["budget"])])
        paths.append(plot_heatmap(matrix, task_names, out / HEATMAP_PNG, row_labels=xlabels,
                                  title=f"Accuracy matrix: {best} (mean of {entry['seeds']} seed(s))"))
    return paths


def write_report(runs: Sequence[dict], task_names: Sequence[str], out_dir: str | Path,
                 header: Sequence[str] = ()) -> tuple[Path, list[Path], dict[str, dict]]:
    """Write ``table.md`` and the PNGs for the runs of one benchmark configuration.

    Args:
        runs: run records of one configuration (same data and settings).
        task_names: task names in order.
        out_dir: output folder.
        header: Markdown lines describing the configuration, put under the title.

    Returns:
        ``(table path, PNG paths, summary)`` (see :func:`summarise`).
    """
    out = Path(out_dir)
    summary = summarise(runs)
    pngs = _plots(runs, summary, task_names, out) if runs else []
    best = best_group(summary)
    lines = ["# Continual-learning benchmark", "", *header, "",
             "## ACC / BWT (box mAP50-95, %; mean ± std over seeds)", "",
             ("Rows: strategy; columns: replay budget (share of the earlier tasks' training "
              "images); finetune and joint use no budget."), "", *_main_table(summary), "",
             "## Details", "", *_detail_table(summary), "", *calibration_protocol(runs)]
    if best is not None:
        matrix = mean_matrix(group_runs(runs)[(summary[best]["strategy"], summary[best]["budget"])])
        lines += [f"## Accuracy matrix of the best strategy ({best}), box mAP50-95", "",
                  "| after | " + " | ".join(task_names) + " |",
                  "|---|" + "---|" * len(task_names)]
        for name, row in zip(task_names, matrix):
            cells = ["" if math.isnan(v) else f"{v:.3f}" for v in row]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [f"![{p.stem}]({p.name})" for p in pngs]
    table = out / "table.md"
    atomic_write_text(table, "\n".join(lines) + "\n")
    return table, pngs, summary
