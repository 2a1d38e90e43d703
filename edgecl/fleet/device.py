"""A device's side of a fleet round: learn on the global model, then adopt the next one.

``fit``: the server's global model is rebuilt with the architecture the server sends (the model
yaml the fleet started from; yolo11n when it sends none) and mapped onto the device's class ids by
name (global classes the device has never seen join its class registry), evaluated on the device's
human-verified held-out slice, fine-tuned on the device's replay memory with the learner's settings
and time budget (``learner.*``, the first-round budget while the global model knows no class, as a
local first round; with ``fleet.proximal_mu`` above 0, FedProx's proximal term keeps the update
near the global model, :mod:`edgecl.continual.proximal`; with ``fleet.restrict_class_loss`` the
class loss covers only the classes the device holds boxes of, :mod:`edgecl.continual.restricted`),
evaluated again; the update goes back with its sample count, per-class AP50-95 and per-class
forgetting (AP lost against the global model, classes with at least ``gate.min_instances`` held-out
boxes).

``adopt``: the aggregated global model is mapped the same way, judged against the device's current
version by the local gate (:func:`edgecl.continual.gate.judge_results`, same held-out samples;
skipped while the memory holds none, as a local round is), calibrated and exported when accepted
(the round's :func:`~edgecl.continual.round.export_candidate`), staged with
``origin: fleet round N`` and promoted; the running loop's model watcher swaps it in between two
frames. A device whose current model is of another architecture says so in its log (adopting
changes its architecture). Weights that do not fit the architecture sent with them are refused with
one line (skipped fit, rejected adoption), never an internal error.

Both hold the device's one-round-at-a-time lock: a device whose learner is busy skips.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgecl.config import Config
from edgecl.continual.round_state import learner_dir
from edgecl.errors import EdgeclError
from edgecl.fleet.weights import ArchitectureMismatch, arch_label, head_problem, non_finite_key

log = logging.getLogger(__name__)

UNALIGNED = ""
"""What :meth:`FleetDevice.registry_spelling` gives for a fleet class this device took out of
use (merged here, or renamed away): no class name is empty, so no row aligns with it."""
EVAL_CONF = 0.001
EVAL_MAX_DET = 300


@dataclass
class FitOutcome:
    """A device's update (or why it skipped the round).

    Attributes:
        arrays: key -> float32 array of the fine-tuned model (class rows in ``names`` order).
        names: class names of the update's head rows.
        samples: training images used.
        per_class_ap: class name -> AP50-95 of the update on the held-out slice.
        forgetting: class name -> AP50-95 lost against the global model (gated classes only).
        steps: optimiser steps.
        train_s: fine-tuning seconds.
        skipped: non-empty when the device skipped the round (busy, no data); then the rest is empty.
        held: the names of ``names`` the update learnt from boxes of (its training samples
            hold some): only their rows are averaged into the fleet's.
        learnt_up_to: the last sample id of its training samples (0 when skipped).
    """

    arrays: dict = field(default_factory=dict)
    names: list = field(default_factory=list)
    samples: int = 0
    per_class_ap: dict = field(default_factory=dict)
    forgetting: dict = field(default_factory=dict)
    steps: int = 0
    train_s: float = 0.0
    skipped: str = ""
    held: list = field(default_factory=list)
    learnt_up_to: int = 0


@dataclass
class AdoptOutcome:
    """What a device did with a new global model.

    Attributes:
        status: ``promoted``, ``rejected`` or ``skipped``.
        reason: the gate's one line (or why it skipped or refused the model).
        version: the registry version staged ("" when skipped, or when the model was refused
            before staging: non-finite weights).
        per_class_ap: class name -> AP50-95 of the device's current model after the decision,
            on its held-out slice.
    """

    status: str
    reason: str
    version: str = ""
    per_class_ap: dict = field(default_factory=dict)


def _finite(value) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else round(float(value), 4)


class FleetDevice:
    """The fleet side of one device's state directory.

    Args:
        cfg: the device's configuration (state directory, learner, gate, export settings).
    """

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self._said: set[str] = set()
        self._fitted: tuple[int, int] | None = None  # (fleet round, last sample id it trained on)

    # ----------------------------------------------------------------- shared steps

    def registry_spelling(self, global_names: list[str]) -> list[str]:
        """The fleet's class names in this device's spelling.

        A global name that differs from a registry class only in case
        (:func:`edgecl.models.classes.known_spelling`) is that class: the global ``Car`` is
        the device's ``car``, not a new class. So is one that differs only in spaces,
        punctuation or symbols (``OtherVehicle`` for ``other_vehicle``, the rule
        :func:`edgecl.data.importers.same_class_as` imports by) where exactly one class matches
        so and the fleet does not also hold that class's own name. A name that ``edgecl classes
        rename`` took from a class (and no class holds now) is that class too, while the
        global model does not also hold the class's new name: a device that renamed ``car`` to
        ``auto`` keeps learning the fleet's ``car`` as its ``auto`` (its update names it ``car``
        again: :meth:`fleet_spelling`). Names new to the device keep the fleet's spelling.

        A name this device took out of use is :data:`UNALIGNED` (its rows are not this
        device's, and it never becomes a class here again): a class merged here into another
        (before, the fleet refreshed its rows at every round, so the merged class was never
        unlearnt), or a former name whose class now takes the fleet's row of its new name
        (before, it came back as a new class bearing the name the operator renamed away).

        Args:
            global_names: the global model's class names.

        Returns:
            The names, cleaned (:func:`~edgecl.models.classes.clean_name`) and respelled, in
            the same order.

        Raises:
            LabelError: a name a class registry refuses (control characters, ...).
        """
        from edgecl.data.class_names import loose_class_name
        from edgecl.data.importers import same_class_as
        from edgecl.models.classes import ClassRegistry, clean_name, known_spelling, same_name_key

        registry = ClassRegistry(self.cfg.state_dir)
        current = registry.names()
        merged = registry.merged()
        former = registry.former_names()
        live = [n for cid, n in sorted(current.items()) if cid not in merged]
        # a merged class's names, its former ones too, are out of use here
        retired = {same_name_key(n): current[cid] for cid in merged
                   for n in (current[cid], *former.get(cid, []))}
        renamed = {same_name_key(old): cid for cid, olds in former.items()
                   if cid not in merged for old in olds}
        loose_retired = {loose_class_name(k): n for k, n in retired.items() if loose_class_name(k)}
        loose_renamed = {loose_class_name(k): cid for k, cid in renamed.items()
                         if loose_class_name(k)}
        cleaned = [clean_name(raw) for raw in global_names]
        in_global = {same_name_key(n) for n in cleaned}
        known = list(live)
        out: list[str] = []

        def renamed_class(name: str, cid: int) -> str:
            # the fleet also holds the new name (spelt so, or apart only in separators, other
            # than by a former name of this very class: 'other vehicle' renamed 'other_vehicle'
            # is still the fleet's 'other vehicle'): this device's class is that fleet class,
            # and the old name's rows are not its own
            now = current[cid]
            mine = {same_name_key(n) for n in former.get(cid, [])}
            loose_now = loose_class_name(now)
            also = any(loose_class_name(n) == loose_now for n in cleaned
                       if same_name_key(n) not in mine) if loose_now else False
            if same_name_key(now) in in_global or also or now in out:
                self._say_once(f"renamed:{same_name_key(name)}", "the fleet's class %r was "
                               "renamed %r on this device, and the fleet holds a class of that "
                               "name too: this device's %r is that class now, and the fleet's "
                               "%r is not learnt here", name, now, now, name)
                return UNALIGNED
            return now

        for name in cleaned:
            key, lkey = same_name_key(name), loose_class_name(name)
            spelling = known_spelling(name, known)
            if spelling is None and key in retired:
                spelling = UNALIGNED
                self._say_once(f"merged:{key}", "the fleet's class %r is this device's %r, "
                               "merged into another class here: its rows are not learnt here",
                               name, retired[key])
            if spelling is None and key in renamed:
                spelling = renamed_class(name, renamed[key])
            if spelling is None:  # apart only in spaces, punctuation or symbols
                loose = same_class_as(name, live)
                if loose is not None and same_name_key(loose) not in in_global and loose not in out:
                    spelling = loose
                elif lkey and lkey in loose_retired:
                    spelling = UNALIGNED
                elif lkey and lkey in loose_renamed:
                    spelling = renamed_class(name, loose_renamed[lkey])
            if spelling is None:
                known.append(name)
            out.append(name if spelling is None else spelling)
        return out

    def _say_once(self, key: str, message: str, *args) -> None:
        """Log a warning the first time this device meets ``key`` (rounds repeat it)."""
        if key not in self._said:
            self._said.add(key)
            log.warning(message, *args)

    def fleet_spelling(self, global_names: list[str]) -> dict[str, str]:
        """This device's spelling of each global class name -> the fleet's (the inverse of
        :meth:`registry_spelling`): an update and a report name their classes as the fleet
        does, so a class renamed on one device stays one class of the fleet.

        Args:
            global_names: the global model's class names.

        Returns:
            device name -> fleet name, for the global model's classes (names the fleet does
            not know yet map to nothing: they keep the device's spelling; names this device
            took out of use are left out).
        """
        from edgecl.models.classes import clean_name

        return {mine: clean_name(theirs) for mine, theirs in
                zip(self.registry_spelling(global_names), global_names) if mine != UNALIGNED}

    def _add_spelt(self, spelt: list[str]) -> dict[int, str]:
        """Add names already in this device's spelling (:meth:`registry_spelling`'s output) to
        the class registry; the device's class ids after it."""
        from edgecl.models.classes import ClassRegistry

        registry = ClassRegistry(self.cfg.state_dir)
        added = registry.add([n for n in spelt if n != UNALIGNED])
        if added:
            log.info("fleet classes joined the class registry: %s", added)
        return registry.names()

    def local_names(self, global_names: list[str]) -> dict[int, str]:
        """The device's class ids after merging the fleet's classes into its registry by name
        (case-insensitively: see :meth:`registry_spelling`).

        Args:
            global_names: the global model's class names (in this device's spelling, or the
                fleet's).

        Returns:
            class id -> name (ids 0..n-1, stable for the device's life).
        """
        return self._add_spelt(self.registry_spelling([n for n in global_names
                                                        if n != UNALIGNED]))

    def _merged_ids(self) -> set[int]:
        from edgecl.models.classes import ClassRegistry

        return set(ClassRegistry(self.cfg.state_dir).merged())

    def _work_dir(self) -> Path:
        from edgecl.runtime.learner import FLEET_WORK

        return learner_dir(self.cfg.state_dir) / FLEET_WORK

    @contextlib.contextmanager
    def _round_lock(self):
        """Hold the device's one-round-at-a-time lock (yields whether it is held); leaving it
        removes the fleet round's work folder (its exported engines, copied into the registry
        when staged, took card space until the next round). While held, the round's scratch
        files go to ``STATE/learner/tmp`` (:func:`edgecl.runtime.learner.round_temp_folder`); a
        work folder a killed round left is removed first."""
        from edgecl.runtime.learner import round_lock, round_temp_folder

        with round_lock(self.cfg.state_dir) as held:
            try:
                if not held:
                    yield held
                    return
                shutil.rmtree(self._work_dir(), ignore_errors=True)  # what a killed round left
                with round_temp_folder(self.cfg.state_dir):  # as a local round's
                    yield held
            finally:
                if held:
                    shutil.rmtree(self._work_dir(), ignore_errors=True)

    def _open(self):
        """Snapshot of the memory (merges cut short finished first) and a RoundContext-like
        view for the round's helpers."""
        from edgecl.continual.memory import memory_from_config
        from edgecl.continual.merges import finish_merges
        from edgecl.continual.round import RoundContext
        from edgecl.continual.round_state import load_state, update_task_bookkeeping
        from edgecl.models.classes import ClassRegistry, adopt_memory_class_names
        from edgecl.models.registry import Registry

        memory = memory_from_config(self.cfg)
        try:
            classes = ClassRegistry(self.cfg.state_dir)
            # as a local round: a damaged or deleted registry is repaired (from its backup) and
            # a merge a stop cut short is finished before the memory is read (before, a fleet
            # round trained the merged class under its old name)
            adopt_memory_class_names(memory, classes)
            finish_merges(memory, classes.merged(), classes.names())
            snapshot = memory.snapshot()
        finally:
            memory.close()
        state = load_state(self.cfg.state_dir)
        update_task_bookkeeping(state, snapshot.records())
        work = self._work_dir()
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        registry = Registry(Path(self.cfg.state_dir) / "models")
        return RoundContext(self.cfg, state, snapshot, [], work, registry, registry.current(), {})

    def _evaluate(self, model, names: dict[int, str], ctx) -> dict:
        from edgecl.continual.round import evaluate_tasks

        model.names = dict(names)
        return evaluate_tasks(model, names, ctx)

    @staticmethod
    def _per_class(results: dict, names: dict[int, str]) -> tuple[dict, dict]:
        """Per-class AP50-95 and held-out boxes by class name over every task's result."""
        ap, boxes = {}, {}
        for res in results.values():
            for cls, value in (res.per_class_ap50_95 or {}).items():
                ap[names.get(int(cls), str(cls))] = _finite(value)
            for cls, count in (getattr(res, "per_class_instances", None) or {}).items():
                key = names.get(int(cls), str(cls))
                boxes[key] = boxes.get(key, 0) + int(count)
        return ap, boxes

    # ----------------------------------------------------------------- fit

    def fit(self, global_arrays: dict, global_names: list[str], round_no: int,
            arch: dict | None = None) -> FitOutcome:
        """Fine-tune the global model on this device's memory (see the module docstring).

        Args:
            global_arrays: the global model's arrays.
            global_names: its class names.
            round_no: the fleet round (for the log).
            arch: the global model's architecture (model yaml dict; ``None``: yolo11n).

        Returns:
            The :class:`FitOutcome` (``skipped`` set when the learner is busy, the memory
            holds no training sample, the global model or the fine-tuned one has non-finite
            weights, or the global model's architecture cannot be fine-tuned or does not fit
            its weights).
        """
        from edgecl.continual.finetune import FineTuner
        from edgecl.fleet.weights import build_model, model_arrays

        bad = non_finite_key(global_arrays)
        if bad is not None:
            log.warning("fleet round %d: the global model has non-finite weights (tensor %s); "
                        "not training on it", round_no, bad)
            return FitOutcome(skipped=f"the global model has non-finite weights (tensor {bad})")
        problem = head_problem(arch)
        if problem:
            why = f"the global model ({arch_label(arch)}) {problem}"
            log.error("fleet round %d: not training: %s", round_no, why)
            return FitOutcome(skipped=why)
        with self._round_lock() as held:
            if not held:
                return FitOutcome(skipped="busy: a learning round is running")
            ctx = self._open()
            train_ids = ctx.snapshot.ids(held_out=False)
            if not train_ids:
                return FitOutcome(skipped="no training sample in the memory")
            wire = self.fleet_spelling(global_names)
            global_names = self.registry_spelling(global_names)
            names = self._add_spelt(global_names)
            try:
                model = build_model(global_arrays, global_names, names, seed=self.cfg.fleet.seed,
                                    arch=arch)
            except ArchitectureMismatch as exc:
                log.error("fleet round %d: not training on the global model: %s", round_no, exc)
                return FitOutcome(skipped=str(exc))
            before = self._evaluate(model, names, ctx) if global_names else {}
            first = not global_names
            lc = self.cfg.learner
            hooks = []
            if not first and self.cfg.fleet.proximal_mu > 0:
                from edgecl.continual.proximal import ProximalHook

                hooks.append(ProximalHook(self.cfg.fleet.proximal_mu))
            if self.cfg.fleet.restrict_class_loss:
                from edgecl.continual.restricted import RestrictedClassLoss

                train = ctx.snapshot.records(held_out=False)
                hooks.append(RestrictedClassLoss(held_classes(train)))
            tuner = FineTuner(model, lc, self.cfg.ider, hooks=hooks)
            ft = tuner.run(ctx.snapshot.image_paths(train_ids), [],
                           budget_s=lc.first_round_budget_s if first else lc.budget_s,
                           max_steps=lc.first_round_max_steps if first else lc.max_steps,
                           epochs=lc.epochs * (10 if first else 1), device=lc.device)
            after = self._evaluate(model, names, ctx)
        ap_after, boxes = self._per_class(after, names)
        ap_before, _ = self._per_class(before, names)
        forgetting = {}
        for name, ap in ap_before.items():
            if name in global_names and boxes.get(name, 0) >= self.cfg.gate.min_instances:
                forgetting[name] = _finite((ap or 0.0) - (ap_after.get(name) or 0.0))
        order = [names[i] for i in sorted(names)]
        log.info("fleet round %d: fine-tuned %d steps on %d images in %.1f s", round_no, ft.steps,
                 len(train_ids), ft.seconds)
        if ft.stopped_reason in ("nan_loss", "no_data"):
            return FitOutcome(skipped=f"training failed: {ft.stopped_reason}")
        arrays = model_arrays(model)
        bad = non_finite_key(arrays)
        if bad is not None:
            return FitOutcome(skipped=f"training failed: non-finite weights (tensor {bad})")
        # a class none of its training samples shows: its rows are the global model's, moved
        # only by the shared layers (before, averaged in, they diluted the devices that hold it)
        held_ids = held_classes(ctx.snapshot.records(ids=train_ids))
        arrays, order, ap_after = _without_merged(arrays, names, ap_after, self._merged_ids())
        self._fitted = (int(round_no), max(train_ids))
        return FitOutcome(arrays, [wire.get(n, n) for n in order], len(train_ids),
                          _renamed_keys(ap_after, wire), _renamed_keys(forgetting, wire),
                          ft.steps, round(ft.seconds, 2),
                          held=[wire.get(names[i], names[i]) for i in sorted(names) if i in held_ids],
                          learnt_up_to=max(train_ids))

    # ----------------------------------------------------------------- adopt

    def adopt(self, global_arrays: dict, global_names: list[str], round_no: int,
              server: str = "", arch: dict | None = None,
              averaged: bool = False) -> AdoptOutcome:
        """Gate the new global model on the held-out slice; stage and promote it if accepted.

        The learner's progress follows an adopted model as it follows a local round's: when the
        model averages this device's update of the same round (``averaged``), the samples that
        update trained on count as learnt (its manifest's ``learnt_up_to``), so the next local
        round does not learn them again; otherwise the progress stays as it was.

        Args:
            global_arrays: the aggregated global model's arrays.
            global_names: its class names.
            round_no: the fleet round (recorded as ``origin: fleet round N``).
            server: the server's address (recorded in the manifest).
            arch: the global model's architecture (model yaml dict; ``None``: yolo11n).
            averaged: the server averaged this device's update of ``round_no`` into the model.

        Returns:
            The :class:`AdoptOutcome`: ``rejected`` with no version (nothing staged) for a
            global model with non-finite weights, or whose weights do not fit its
            architecture; ``skipped`` (nothing staged) while the memory holds no held-out
            sample to judge it on, or a learning round runs.

        Raises:
            EdgeclError: staging or promotion failed (the client contains it and reports it).
        """
        from edgecl.continual.gate import judge_results
        from edgecl.continual.round import (
            ROUND_RECORD_FILE,
            export_candidate,
            recent_losses,
            write_round_record,
        )
        from edgecl.fleet.weights import build_model, model_arch, same_arch
        from edgecl.models.checkpoint import load_checkpoint
        from edgecl.runtime.learner import record_in_monitor
        from edgecl.runtime.monitor import fleet_reason
        from edgecl.runtime.promote import promote_version

        started_mono_s = time.monotonic()  # a round's length: immune to a clock set meanwhile
        if not global_names:
            return AdoptOutcome("skipped", "the global model knows no class yet")
        bad = non_finite_key(global_arrays)
        if bad is not None:  # never staged: with no earlier model the gate would accept it
            log.warning("fleet round %d: global model rejected: non-finite weights (tensor %s)",
                        round_no, bad)
            return AdoptOutcome("rejected", f"non-finite weights (tensor {bad})")
        server_names = list(global_names)
        with self._round_lock() as held:
            if not held:
                return AdoptOutcome("skipped", "busy: a learning round is running")
            ctx = self._open()
            wire = self.fleet_spelling(global_names)
            global_names = self.registry_spelling(global_names)
            names = self._add_spelt(global_names)
            try:
                model = build_model(global_arrays, global_names, names, seed=self.cfg.fleet.seed,
                                    arch=arch)
            except ArchitectureMismatch as exc:  # never staged: it is not the model it claims
                log.error("fleet round %d: global model rejected: %s", round_no, exc)
                return AdoptOutcome("rejected", str(exc))
            if not ctx.snapshot.ids(held_out=True):
                # INVARIANT: as in a local round, nothing is staged that the gate cannot judge
                # (a rejected version, exported, every round, on a device without data)
                return AdoptOutcome("skipped", "no held-out sample yet: the gate cannot judge "
                                               "the global model; the device keeps its model")
            candidate = self._evaluate(model, names, ctx)
            parent = None
            pt = ctx.registry.root / ctx.parent_version / "model.pt" if ctx.parent_version else None
            if pt is not None and pt.is_file():
                parent_model, meta = load_checkpoint(pt)
                own = model_arch(parent_model)
                if own is not None and not same_arch(own, arch):
                    log.warning("fleet round %d: this device's current model (%s) is a %s, the "
                                "fleet's global model a %s: adopting it changes the device's "
                                "architecture", round_no, ctx.parent_version, arch_label(own),
                                arch_label(arch))
                pnames = {int(k): str(v) for k, v in (meta.get("names") or {}).items()}
                parent = self._evaluate(parent_model, pnames, ctx)
            verdict = judge_results(parent, candidate, list(ctx.state.learnt_tasks), self.cfg.gate,
                                    names=names,
                                    parent_classes=set(pnames) if parent is not None else None,
                                    **recent_losses(ctx.registry, self.cfg.gate.forgetting_window,
                                                    names))
            status = "staged" if verdict.accepted else "rejected"
            calibrator, cal_report = (self._calibrate(model, names, ctx) if verdict.accepted
                                      else (None, None))
            files, export_meta = export_candidate(ctx, model, names, accepted=verdict.accepted)
            ap, _ = self._per_class(candidate, names)
            manifest = {"parent": ctx.parent_version, "origin": f"fleet round {round_no}",
                        "trigger": "fleet", "reason": verdict.reason,
                        "classes": {int(k): v for k, v in names.items()},
                        "memory_snapshot": ctx.snapshot.snapshot_id,
                        "fleet": {"round": round_no, "server": server,
                                  "global_classes": server_names, "averaged_update": averaged},
                        "metrics": {"per_class_map50_95": ap, "gate_drops": verdict.drops,
                                    "gate_steps": verdict.steps,
                                    "gate_recall_steps": verdict.recall_steps,
                                    "gate_false_positive_step": verdict.false_positive_step,
                                    "gate_mode": verdict.mode,
                                    "acc_parent": _finite(verdict.acc_parent)},
                        **export_meta}
            if averaged and self._fitted is not None and self._fitted[0] == int(round_no):
                manifest.update(learnt_up_to=self._fitted[1],
                                learnt_from=int(ctx.state.last_sample_id))
            if calibrator is not None:
                from edgecl.calibration.posthoc import CALIBRATOR_FILE, calibration_manifest

                files[CALIBRATOR_FILE] = calibrator.save(ctx.work / CALIBRATOR_FILE)
                manifest["calibration"] = calibration_manifest(cal_report)
            # the forgetting monitor shows a fleet model like a local round's candidate: its
            # rows follow the learner's last round (kept with the version, as a round's are)
            recorded = dict(round_no=ctx.state.round, status=status,
                            reason=fleet_reason(round_no, verdict.reason),
                            seconds=round(time.monotonic() - started_mono_s, 1), evaluation=candidate,
                            columns=ctx.state.task_order, class_names=names,
                            calibration=cal_report)
            files[ROUND_RECORD_FILE] = write_round_record(ctx.work / ROUND_RECORD_FILE, **recorded)
            version = ctx.registry.stage(files, manifest, status=status, link=True)
            record_in_monitor(self.cfg.state_dir, ctx.registry, version, recorded)
            if verdict.accepted:
                promote_version(self.cfg.state_dir, version)
                log.info("fleet round %d: adopted as %s (%s)", round_no, version, verdict.reason)
            self._prune(ctx.registry)
            if verdict.accepted:
                return AdoptOutcome("promoted", verdict.reason, version, _renamed_keys(ap, wire))
        log.warning("fleet round %d: global model rejected as %s: %s", round_no, version,
                    verdict.reason)
        kept = self._per_class(parent, pnames)[0] if parent is not None else {}
        return AdoptOutcome("rejected", verdict.reason, version, _renamed_keys(kept, wire))

    def _prune(self, registry) -> None:
        """Apply the registry's retention rule after an adoption, as the runtime does after a
        round (before: a device that only adopted fleet models kept every version's files,
        about 20 MB each, until its card was full). A failure is logged: the adoption stands."""
        exp = self.cfg.export
        try:
            registry.prune(exp.keep_promoted, exp.keep_rejected,
                           engine_cache_entries=exp.engine_cache_entries)
        except (EdgeclError, OSError) as exc:
            log.warning("fleet: pruning old model versions failed: %s", exc)

    def _calibrate(self, model, names, ctx):
        from edgecl.calibration.posthoc import fit_for_version
        from edgecl.models.base import InferenceOptions
        from edgecl.models.torch_backend import TorchBackend

        ids = ctx.snapshot.ids(held_out=True)
        if not ids:
            return None, None
        opts = InferenceOptions(conf=EVAL_CONF, iou=self.cfg.model.iou, max_det=EVAL_MAX_DET,
                                threads=self.cfg.learner.torch_threads)
        backend = TorchBackend.from_model(model, names, self.cfg.learner.imgsz, opts)
        return fit_for_version(backend, ctx.snapshot.image_paths(ids),
                               [s.labels for s in ctx.snapshot.get(ids)],
                               target_precision=self.cfg.labels.pseudo_precision, names=names)

    # ----------------------------------------------------------------- scoring

    def current_model(self):
        """The device's current version as ``(model, names)``, or ``(None, {})``."""
        from edgecl.models.checkpoint import load_checkpoint
        from edgecl.models.registry import Registry

        registry = Registry(Path(self.cfg.state_dir) / "models")
        version = registry.current()
        pt = registry.root / version / "model.pt" if version else None
        if pt is None or not pt.is_file():
            return None, {}
        model, meta = load_checkpoint(pt)
        return model, {int(k): str(v) for k, v in (meta.get("names") or {}).items()}


def _without_merged(arrays: dict, names: dict[int, str], per_class: dict,
                    merged: set[int]) -> tuple[dict, list[str], dict]:
    """An update without the classes merged away on this device: their class rows, names and
    scores left out (before, the update named a merged class, and the fleet took it as a new
    class of all, every other device adding it to its registry for good).

    Args:
        arrays: the fine-tuned model's arrays (class rows in id order).
        names: class id -> name (ids 0..n-1).
        per_class: class name -> AP.
        merged: the merged class ids.

    Returns:
        ``(arrays, names in row order, per_class)`` without the merged classes.
    """
    import numpy as np

    from edgecl.continual.federated import is_class_row_key

    keep = [i for i in sorted(names) if i not in merged]
    if len(keep) == len(names):
        return arrays, [names[i] for i in keep], per_class
    gone = {names[i] for i in merged if i in names}
    index = np.array(keep, dtype=np.int64)
    out = {k: (np.asarray(v)[index] if is_class_row_key(k) else v) for k, v in arrays.items()}
    return out, [names[i] for i in keep], {n: v for n, v in per_class.items() if n not in gone}


def _renamed_keys(by_name: dict, wire: dict[str, str]) -> dict:
    """``by_name`` keyed by the fleet's class names (``wire``: device name -> fleet name)."""
    return {wire.get(k, k): v for k, v in by_name.items()}


def held_classes(records) -> set[int]:
    """Class ids that have at least one box among some samples (read from the memory's index:
    each record lists its sample's classes, so no label file is opened).

    Args:
        records: replay-memory records (``classes``: the sample's class ids).

    Returns:
        The class ids.
    """
    return {int(c) for r in records for c in r.classes}


def score_by_name(model, names: dict[int, str], test_names: dict[int, str], paths: list,
                  imgsz: int, seed: int = 0) -> dict[str, float | None]:
    """Per-class AP50-95 of a model on a labelled test set whose class ids differ from its own.

    The model's rows are mapped onto the test set's ids by name (case aside, as the fleet
    matches names); a class the model lacks is silenced (it scores 0, not noise).

    Args:
        model: DetectionModel, or ``None`` (every class scores 0).
        names: the model's class id -> name.
        test_names: the test labels' class id -> name.
        paths: test image paths (labels where ultralytics looks for them).
        imgsz: evaluation input size.
        seed: seed of the fresh rows (irrelevant for silenced ones).

    Returns:
        test class name -> AP50-95 (``None`` for a class without a test box).
    """
    from edgecl.continual.evaluate import evaluate_model
    from edgecl.fleet.weights import build_model, model_arch, model_arrays
    from edgecl.models.base import InferenceOptions
    from edgecl.models.torch_backend import TorchBackend

    from edgecl.models.classes import same_name_key

    if model is None:
        return {n: 0.0 for n in test_names.values()}
    # matched as the fleet matches names, case aside (before, a device's 'Car' scored 0 on a
    # test set that spells 'car': its rows were silenced)
    test_spelling = {same_name_key(n): n for n in test_names.values()}
    order = [test_spelling.get(same_name_key(names[i]), names[i]) for i in sorted(names)]
    aligned = build_model(model_arrays(model), order, test_names, absent="silent", seed=seed,
                          arch=model_arch(model))  # the model's own architecture
    opts = InferenceOptions(conf=EVAL_CONF, iou=0.7, max_det=EVAL_MAX_DET, threads=1)
    backend = TorchBackend.from_model(aligned, test_names, imgsz, opts)
    t0 = time.monotonic()
    res = evaluate_model(backend, paths)
    log.debug("scored %d images in %.1f s", len(paths), time.monotonic() - t0)
    per = res.per_class_ap50_95 or {}
    return {name: _finite(per.get(cls, 0.0)) if cls in per else None
            for cls, name in sorted(test_names.items())}
