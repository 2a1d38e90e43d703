"""The acceptance gate: a candidate model ships only if it did not forget too much.

Two views of "forgetting", chosen by :func:`judge_results`:

* **tasks** (benchmark data, frames carry a task): a task learnt before this round may lose at
  most ``gate.max_forgetting`` mAP50-95 (:func:`judge`).
* **classes** (deployment, every frame is task :data:`STREAM_TASK`): every class with at least
  ``gate.min_instances`` held-out ground-truth boxes may lose at most ``gate.max_forgetting``
  AP50-95 (:func:`judge_classes`), counted from its best point among the last
  ``gate.forgetting_window`` promoted versions: bounding only the step from the parent let a
  class slide by less than the bound per round, 0.17 -> 0.001 over six accepted rounds on real
  footage. The loss since that point is the sum of the per-round steps (parent minus candidate,
  each measured on the held-out samples of its own round, so a held-out slice that changes
  between rounds adds no bias), as recorded in the promoted versions' manifests
  (:func:`prior_class_loss`); a candidate no worse than its parent on a class always passes on
  that class. Classes with fewer boxes are listed in ``not_gated`` (their AP is too noisy to
  veto a round on).

  AP ranks detections, so it cannot see a class whose scores all fall below the serving
  threshold ``model.conf``: the device stops showing the class while its AP holds (seen on a
  weak checkpoint, and reproduced by ``docs/gate/serving_threshold.py``). So the
  view also judges what the served model shows (:func:`judge_serving`): a gated class may lose
  at most ``gate.max_recall_loss`` recall at ``model.conf`` since its best point in the same
  window, and false detections at ``model.conf``, less the boxes found besides, may rise by at
  most ``gate.max_false_positives_rise`` per held-out image since their lowest point in the
  window (a round that floods frames with boxes).

Both compare the candidate with the parent evaluated on the same human-verified held-out
samples, and both reject when ACC changes by less than ``gate.min_acc_delta``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from edgecl.config import GateConfig
from edgecl.frames import STREAM_TASK

__all__ = ["STREAM_TASK", "GateVerdict", "beyond_bound", "is_taskless", "judge", "judge_classes",
           "judge_results", "judge_serving", "prior_class_loss", "within_bound"]


def beyond_bound(value: float, bound: float) -> str:
    """``value`` as a verdict prints it: 3 decimals, or as many more (up to 6) as it takes to
    read beyond ``bound`` ("forgot 0.0501 (bound 0.05)", not "forgot 0.050 (bound 0.05)").

    Args:
        value: a figure found above ``bound`` (a drop, a forgetting).
        bound: the bound it passed.

    Returns:
        The text.
    """
    return _on_its_side(value, lambda shown: shown > bound)


def within_bound(value: float, bound: float) -> str:
    """``value`` as a verdict prints it: 3 decimals, or as many more (up to 6) as it takes to
    read within ``bound`` ("largest drop 0.0104 (bound 0.0106)", not "0.011").

    Args:
        value: a figure found at or below ``bound``.
        bound: the bound it kept to.

    Returns:
        The text.
    """
    return _on_its_side(value, lambda shown: shown <= bound)


def _on_its_side(value: float, reads_right) -> str:
    """``value`` with the fewest decimals (3 to 6) whose printed figure ``reads_right``; past 6,
    the float itself."""
    for places in range(3, 7):
        text = f"{value:.{places}f}"
        if reads_right(float(text)):
            return text
    return repr(float(value))


def _change_places(before: float, after: float, min_change: float, below: bool = True) -> int:
    """Decimals (3 to 6) at which ``before -> after`` reads as the change it is, below
    ``min_change`` or (``below`` False) not (0.5000 -> 0.4799 against -0.02 prints
    0.5000 -> 0.4799, not 0.500 -> 0.480)."""
    for places in range(3, 7):
        change = round(round(after, places) - round(before, places), places)
        if (change < min_change) == below:
            return places
    return 6


@dataclass(frozen=True)
class GateVerdict:
    """Outcome of the gate.

    Attributes:
        accepted: True when the candidate may be staged for promotion.
        reason: one line explaining the verdict.
        acc_parent: mean mAP50-95 of the current model over all tasks seen, or in the
            per-class view over the classes with enough held-out boxes (NaN if none).
        acc_candidate: the same for the candidate.
        drops: task (or class name) -> mAP drop (parent - candidate) for what was learnt before.
        mode: ``tasks`` or ``classes``.
        not_gated: class names left out of the forgetting bound (too few held-out boxes).
        steps: per-class view: class name -> parent AP minus candidate AP on this round's
            held-out samples (the step the manifest records as ``gate_steps``).
        recall_steps: per-class view: class name -> parent recall minus candidate recall at
            ``model.conf`` on the same samples (manifests' ``gate_recall_steps``).
        false_positive_step: per-class view: false detections per held-out image at
            ``model.conf`` the candidate adds to its parent's, less the boxes it finds besides
            (manifests' ``gate_false_positive_step``); None when not measured.
    """

    accepted: bool
    reason: str
    acc_parent: float
    acc_candidate: float
    drops: dict
    mode: str = "tasks"
    not_gated: tuple[str, ...] = ()
    steps: dict = dataclasses.field(default_factory=dict)
    recall_steps: dict = dataclasses.field(default_factory=dict)
    false_positive_step: float | None = None


def _mean(values) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return sum(values) / len(values) if values else float("nan")


def judge(parent: dict[str, float] | None, candidate: dict[str, float], learnt_before: list[str],
          cfg: GateConfig, training_failed: str = "") -> GateVerdict:
    """Decide whether a candidate is accepted (per-task view).

    Rejects when training failed, when any task learnt before this round loses more than
    ``cfg.max_forgetting`` mAP50-95, or when ACC over every task seen changes by less than
    ``cfg.min_acc_delta``. Without a parent (first model) only a finite ACC is required.

    Args:
        parent: task -> mAP50-95 of the current model on the same held-out slices, or None.
        candidate: task -> mAP50-95 of the candidate.
        learnt_before: tasks the parent had already learnt.
        cfg: gate thresholds.
        training_failed: non-empty when fine-tuning stopped abnormally (e.g. NaN loss).

    Returns:
        The verdict.
    """
    acc_c = _mean(candidate.values())
    acc_p = _mean(parent.values()) if parent else float("nan")
    drops = {t: round(parent[t] - candidate[t], 4) for t in learnt_before
             if parent and t in parent and t in candidate}
    return _verdict("task", "tasks", drops, acc_p, acc_c, cfg, training_failed, ())


def _verdict(noun: str, mode: str, drops: dict, acc_p: float, acc_c: float, cfg: GateConfig,
             training_failed: str, not_gated: tuple[str, ...], acc_scope: str = "",
             acc_note: str = "") -> GateVerdict:
    """The shared decision once drops and ACCs are known (``acc_scope``: what ACC is the mean
    over, for the reason, e.g. " over the 3 classes with >= 5 held-out boxes"; ``acc_note``:
    said after a comparison of ACCs, e.g. which classes the parent scores 0 on)."""
    def verdict(accepted: bool, reason: str) -> GateVerdict:
        if acc_note and "ACC" in reason and "no earlier model" not in reason:
            reason += acc_note
        return GateVerdict(accepted, reason, acc_p, acc_c, drops, mode, not_gated)

    if training_failed:
        return verdict(False, f"training failed: {training_failed}")
    if math.isnan(acc_c):
        return verdict(False, "candidate could not be evaluated (no held-out sample, or none "
                              "that holds a box of its task's classes)")
    # a NaN drop (a score that could not be computed) must not hide a real one
    worst = max(((k, v) for k, v in drops.items() if not math.isnan(v)), key=lambda kv: kv[1],
                default=None)
    if worst is not None and worst[1] > cfg.max_forgetting:
        return verdict(False, f"{noun} {worst[0]} forgot "
                              f"{beyond_bound(worst[1], cfg.max_forgetting)} mAP50-95 "
                              f"(bound {cfg.max_forgetting})")
    # INVARIANT: compared at the drops' precision (4 decimals): 0.50 -> 0.48 is a change of
    # exactly -0.02, which a gate.min_acc_delta of -0.02 allows
    if not math.isnan(acc_p) and round(acc_c - acc_p, 4) < cfg.min_acc_delta:
        k = _change_places(acc_p, acc_c, cfg.min_acc_delta)
        if cfg.min_acc_delta > 0:  # a gain is required: nothing need have fallen
            return verdict(False, f"ACC{acc_scope} {acc_p:.{k}f} -> {acc_c:.{k}f}: below the "
                                  f"required gain of {cfg.min_acc_delta} (gate.min_acc_delta)")
        return verdict(False, f"ACC{acc_scope} fell from {acc_p:.{k}f} to {acc_c:.{k}f} "
                              f"(allowed change {cfg.min_acc_delta})")
    if math.isnan(acc_p):  # nothing to compare with: the first model, or a class-less parent
        return verdict(True, f"accepted: ACC{acc_scope} {acc_c:.3f} (no earlier model to compare)")
    k = _change_places(acc_p, acc_c, cfg.min_acc_delta, below=False)
    return verdict(True, f"accepted: ACC{acc_scope} {acc_p:.{k}f} -> {acc_c:.{k}f}")


def judge_classes(parent: Mapping[int, float] | None, candidate: Mapping[int, float],
                  instances: Mapping[int, int], cfg: GateConfig, training_failed: str = "",
                  names: Mapping[int, str] | None = None,
                  prior_loss: Mapping[str, float] | None = None,
                  parent_classes: Collection[int] | None = None) -> GateVerdict:
    """Decide whether a candidate is accepted (per-class view, no tasks).

    ACC is the mean AP50-95 over the classes with at least ``cfg.min_instances`` held-out boxes
    (over every class with held-out boxes while none has that many): a class with two held-out
    boxes moves its AP by 0.3 on one box, and alone decided the ACC test both ways on real
    footage. A class is gated on when the parent has an AP for it (it was evaluated before)
    and it has at least ``cfg.min_instances`` held-out boxes; its drop is ``prior loss + parent
    AP - candidate AP``. A class the parent never predicted has a parent AP of 0, so learning
    it never counts as forgetting.

    Args:
        parent: class id -> AP50-95 of the current model on the same held-out samples, or None.
        candidate: class id -> AP50-95 of the candidate.
        instances: class id -> held-out ground-truth boxes.
        cfg: gate thresholds (``max_forgetting``, ``min_acc_delta``, ``min_instances``).
        training_failed: non-empty when fine-tuning stopped abnormally.
        names: class id -> name for the reason and ``drops`` (default the id as text).
        prior_loss: class name -> AP lost since its best point among recent promoted
            versions (:func:`prior_class_loss`), or None.
        parent_classes: the class ids the parent predicts (None: not known). ACC counts the
            parent's AP 0 on a class it does not predict, and the reason names such classes
            (the forgetting monitor's row of a starting model averages only the classes it
            knows, and showed a higher ACC than the reason's without a word why).

    Returns:
        The verdict; ``drops`` and ``not_gated`` are keyed by class name.
    """
    names = names or {}

    def name(cls: int) -> str:
        return str(names.get(int(cls), int(cls)))

    measured = [c for c in candidate if int(instances.get(c, 0)) >= cfg.min_instances]
    acc_classes = measured or list(candidate)
    acc_c = _mean(candidate[c] for c in acc_classes)
    acc_p = _mean(parent.get(c) for c in acc_classes) if parent else float("nan")
    drops, steps, not_gated = {}, {}, []
    for cls in sorted(set(parent or {}) & set(candidate)):
        if int(instances.get(cls, 0)) < cfg.min_instances:
            not_gated.append(name(cls))
            continue
        step = parent[cls] - candidate[cls]
        steps[name(cls)] = round(step, 4)
        drops[name(cls)] = round(step + (prior_loss or {}).get(name(cls), 0.0), 4)
    scope = ""
    if measured and len(measured) < len(candidate):
        plural = (f"{name(measured[0])}, the one class" if len(measured) == 1
                  else f"the {len(measured)} classes")
        scope = f" over {plural} with >= {cfg.min_instances} held-out boxes"
    unknown = ([name(c) for c in sorted(acc_classes) if int(c) not in set(parent_classes)]
               if parent and parent_classes is not None else [])
    note = (f" (the parent scores 0 on {', '.join(unknown[:3])}"
            f"{f' and {len(unknown) - 3} more' if len(unknown) > 3 else ''}, "
            f"{'a class' if len(unknown) == 1 else 'classes'} it did not know)") if unknown else ""
    verdict = _verdict("class", "classes", drops, acc_p, acc_c, cfg, training_failed,
                       tuple(not_gated), acc_scope=scope, acc_note=note)
    return dataclasses.replace(verdict, steps=steps)


def judge_serving(verdict: GateVerdict, parent, candidate, cfg: GateConfig,
                  names: Mapping[int, str] | None = None,
                  prior_recall_loss: Mapping[str, float] | None = None,
                  prior_false_positive_rise: float = 0.0) -> GateVerdict:
    """Judge what the served model shows, once :func:`judge_classes` has judged AP.

    Counted at the serving threshold (``EvalResult.serving_conf``, the runtime's
    ``model.conf``), on the same held-out samples for parent and candidate:

    * **recall**: a class gated on by AP (at least ``cfg.min_instances`` held-out boxes) that
      the candidate finds fewer of its boxes than the parent did, may have lost at most
      ``cfg.max_recall_loss`` recall (boxes found / held-out boxes) since its best point among
      recent promoted versions: this round's step plus ``prior_recall_loss`` (1: not judged);
    * **false detections**: the candidate's false detections per held-out image less its
      parent's, less the boxes it finds besides (a box found pays for a false one: a class
      being learnt shows both), plus ``prior_false_positive_rise``, may be at most
      ``cfg.max_false_positives_rise`` when this round's step adds any.

    Args:
        verdict: the AP verdict; a rejection stands as it is (its reason comes first).
        parent: the parent's :class:`~edgecl.continual.evaluate.EvalResult`, or None (first
            model: nothing to compare with).
        candidate: the candidate's ``EvalResult``.
        cfg: gate thresholds.
        names: class id -> name.
        prior_recall_loss: class name -> recall lost since its best recent point
            (:func:`prior_class_loss` over manifests' ``gate_recall_steps``), or None.
        prior_false_positive_rise: false detections per image added since their lowest recent
            point (the same drawdown over manifests' ``gate_false_positive_step``).

    Returns:
        ``verdict`` with ``recall_steps`` and ``false_positive_step`` set, rejected when either
        bound is passed.
    """
    names = names or {}
    if (parent is None or math.isnan(getattr(parent, "serving_conf", math.nan))
            or math.isnan(getattr(candidate, "serving_conf", math.nan))):
        return verdict

    def name(cls) -> str:
        return str(names.get(int(cls), int(cls)))

    conf = candidate.serving_conf
    instances = candidate.per_class_instances
    steps, worst = {}, None
    for cls in sorted(set(parent.per_class_ap50_95) & set(candidate.per_class_ap50_95)):
        boxes = int(instances.get(cls, 0))
        if boxes < cfg.min_instances or cls not in parent.per_class_found:
            continue
        before, after = parent.per_class_found[cls], candidate.per_class_found.get(cls, 0)
        step = (before - after) / boxes
        steps[name(cls)] = round(step, 4)
        loss = round(step + (prior_recall_loss or {}).get(name(cls), 0.0), 4)
        if step > 0 and loss > cfg.max_recall_loss and (worst is None or loss > worst[1]):
            worst = (name(cls), loss, before, after, boxes)
    images = max(candidate.n_images, 1)
    false_p, false_c = parent.false_positives / images, candidate.false_positives / images
    gained = max(0, sum(candidate.per_class_found.values())
                 - sum(parent.per_class_found.values())) / images
    fp_step = round(false_c - false_p - gained, 4)
    verdict = dataclasses.replace(verdict, recall_steps=steps, false_positive_step=fp_step)
    if not verdict.accepted:
        return verdict
    if worst is not None and cfg.max_recall_loss < 1:
        cls_name, loss, before, after, boxes = worst
        earlier = round(loss - (before - after) / boxes, 4)
        since = f"; {earlier:.3f} of it in earlier rounds" if earlier > 0 else ""
        return dataclasses.replace(verdict, accepted=False, reason=(
            f"class {cls_name} lost {beyond_bound(loss, cfg.max_recall_loss)} recall at "
            f"model.conf {conf:g} (found {before} -> {after} of {boxes} held-out boxes{since}; "
            f"bound {cfg.max_recall_loss}, gate.max_recall_loss): the served model shows fewer "
            f"of them"))
    rise = round(fp_step + max(0.0, float(prior_false_positive_rise)), 4)
    if fp_step > 0 and rise > cfg.max_false_positives_rise:
        added = {c: n - parent.per_class_false_positives.get(c, 0)
                 for c, n in candidate.per_class_false_positives.items()}
        top = max(added, key=added.get, default=None)
        most = (f", most of them {name(top)} ({added[top]} more)"
                if top is not None and added[top] > 0 else "")
        credit = f", less {gained:.2f} more boxes found" if gained else ""
        earlier = round(rise - fp_step, 4)
        since = f", {earlier:.2f} of it in earlier rounds" if earlier > 0 else ""
        bound = cfg.max_false_positives_rise
        return dataclasses.replace(verdict, accepted=False, reason=(
            f"false detections at model.conf {conf:g} rose from {false_p:.2f} to {false_c:.2f} "
            f"per held-out image (over {images} image{'' if images == 1 else 's'})"
            f"{most}{credit}{since}: {beyond_bound(rise, bound)} added "
            f"(allowed {bound}, gate.max_false_positives_rise)"))
    return verdict


def prior_class_loss(step_history: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """AP each class lost since its best point in a chain of promoted versions.

    The loss is the largest sum of consecutive steps ending at the newest version (a
    drawdown), never below 0: steps ``+0.05, -0.02, +0.06`` give 0.09; ``+0.05, -0.08`` give 0.

    Args:
        step_history: per promoted version, oldest first, class name -> its gate step (parent
            AP minus its own AP on its round's held-out samples; manifests' ``gate_steps``).

    Returns:
        class name -> AP lost (classes never stepped are absent).
    """
    out: dict[str, float] = {}
    for name in {n for steps in step_history for n in steps}:
        running = worst = 0.0
        for steps in reversed(step_history):
            step = float(steps.get(name, 0.0))
            running += step if math.isfinite(step) else 0.0
            worst = max(worst, running)
        out[name] = round(worst, 4)
    return out


def is_taskless(task_names) -> bool:
    """True when the only task is :data:`STREAM_TASK` (frames carried no task).

    Args:
        task_names: the tasks evaluated.

    Returns:
        Whether the per-class view applies.
    """
    tasks = set(task_names)
    return bool(tasks) and tasks <= {STREAM_TASK}


def judge_results(parent: Mapping | None, candidate: Mapping, learnt_before: list[str],
                  cfg: GateConfig, training_failed: str = "",
                  names: Mapping[int, str] | None = None,
                  prior_loss: Mapping[str, float] | None = None,
                  prior_recall_loss: Mapping[str, float] | None = None,
                  prior_false_positive_rise: float = 0.0,
                  parent_classes: Collection[int] | None = None) -> GateVerdict:
    """Judge a candidate from evaluation results, in the view the data calls for.

    Without tasks (:func:`is_taskless`) the per-class view (:func:`judge_classes`, then
    :func:`judge_serving`) on the :data:`STREAM_TASK` result; otherwise the per-task view
    (:func:`judge`) on ``map50_95``.

    Args:
        parent: task -> :class:`~edgecl.continual.evaluate.EvalResult` of the current model on
            the same held-out samples, or None for a first model.
        candidate: task -> ``EvalResult`` of the candidate.
        learnt_before: tasks the parent had already learnt (per-task view only).
        cfg: gate thresholds.
        training_failed: non-empty when fine-tuning stopped abnormally.
        names: class id -> name (per-class view).
        prior_loss: class name -> AP lost since its best recent point (per-class view;
            :func:`prior_class_loss`).
        prior_recall_loss: class name -> recall at ``model.conf`` lost since its best recent
            point (per-class view; :func:`judge_serving`).
        prior_false_positive_rise: false detections per held-out image added since their
            lowest recent point (per-class view; :func:`judge_serving`).
        parent_classes: the class ids the parent predicts (per-class view; see
            :func:`judge_classes`).

    Returns:
        The verdict.
    """
    if is_taskless(candidate):
        cand = candidate[STREAM_TASK]
        par = parent.get(STREAM_TASK) if parent else None
        verdict = judge_classes(None if par is None else par.per_class_ap50_95,
                                cand.per_class_ap50_95, cand.per_class_instances, cfg,
                                training_failed, names, prior_loss, parent_classes)
        return judge_serving(verdict, par, cand, cfg, names, prior_recall_loss,
                             prior_false_positive_rise)
    return judge({t: r.map50_95 for t, r in parent.items()} if parent else None,
                 {t: r.map50_95 for t, r in candidate.items()}, learnt_before, cfg,
                 training_failed)
