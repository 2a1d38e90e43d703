"""One learning round: snapshot -> select replay -> fine-tune -> evaluate -> gate -> export -> stage.

Runs inside the spawned learner process (or in the foreground for ``edgecl learn``). It
stages the candidate in the registry; promoting it is the supervisor's job.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecl.atomic import atomic_write_json
from edgecl.config import Config, config_hash
from edgecl.continual.gate import judge
from edgecl.continual.round_state import LearnerState, load_state, save_state, update_task_bookkeeping

log = logging.getLogger(__name__)

EVAL_CONF = 0.001
EVAL_MAX_DET = 300


@dataclass
class RoundContext:
    """What the steps of one round share."""

    cfg: Config
    state: LearnerState
    snapshot: object
    new_records: list
    work: Path
    registry: object
    parent_version: str | None
    names: dict[int, str]


def run_round(cfg: Config, reason: str = "on_demand", max_sample_id: int | None = None) -> dict:
    """Run one learning round and write its result to ``STATE/learner/last_round.json``.

    Args:
        cfg: configuration.
        reason: what triggered the round.
        max_sample_id: learn only samples with ids up to this (those present when the round
            was triggered); ``None``: everything in the memory.

    Returns:
        The result: ``round``, ``version``, ``status`` (``staged``, ``rejected`` or ``skipped``),
        ``reason``, ``acc``, ``per_task``, ``classes``, ``seconds``, ...
    """
    started_s = time.time()
    ctx = _open_round(cfg, max_sample_id)
    if ctx is None:
        result = {"status": "skipped", "reason": "no new labelled samples", "round": None,
                  "version": None, "started_s": started_s}
        _write_result(cfg, result)
        return result
    log.info("round %d: %d new samples of %s (trigger: %s)", ctx.state.round + 1,
             len(ctx.new_records), sorted({r.task for r in ctx.new_records}), reason)
    result = _train_evaluate_stage(ctx, reason, started_s)
    _write_result(cfg, result)
    return result


def _write_result(cfg: Config, result: dict) -> None:
    from edgecl.runtime.learner import learner_dir

    atomic_write_json(learner_dir(cfg.state_dir) / "last_round.json", result)


def _open_round(cfg: Config, max_sample_id: int | None) -> RoundContext | None:
    from edgecl.continual.memory import memory_from_config
    from edgecl.models.registry import Registry
    from edgecl.runtime.learner import learner_dir

    memory = memory_from_config(cfg)
    try:
        snapshot = memory.snapshot()
        names = memory.class_names() or {}
    finally:
        memory.close()
    state = load_state(cfg.state_dir)
    if max_sample_id is not None:
        # INVARIANT: a round sees only samples present when it was triggered
        snapshot = dataclasses.replace(snapshot, rows=tuple(r for r in snapshot.rows
                                                            if r.id <= max_sample_id))
    new = [r for r in snapshot.records(held_out=False) if r.id > state.last_sample_id]
    if not new:
        return None
    update_task_bookkeeping(state, snapshot.records())
    work = learner_dir(cfg.state_dir) / "work"
    shutil.rmtree(work, ignore_errors=True)  # INVARIANT: a round starts from a clean work dir
    work.mkdir(parents=True)
    registry = Registry(Path(cfg.state_dir) / "models")
    return RoundContext(cfg, state, snapshot, new, work, registry, registry.current(),
                        {int(k): str(v) for k, v in names.items()})


def _top_class(ctx: RoundContext) -> int:
    """Highest class id any sample of the round's snapshot carries (-1 when none)."""
    return max((c for r in ctx.snapshot.records() for c in r.classes), default=-1)


def _load_parent(ctx: RoundContext):
    """The current model (or a fresh one when nothing was promoted yet), as a DetectionModel."""
    from edgecl.models.checkpoint import load_checkpoint
    from edgecl.ultra import build_detection_model

    if ctx.parent_version is not None:
        pt = ctx.registry.root / ctx.parent_version / "model.pt"
        if pt.is_file():
            model, meta = load_checkpoint(pt)
            return model, {int(k): str(v) for k, v in (meta.get("names") or model.names).items()}
        log.warning("current version %s has no model.pt to fine-tune; starting fresh",
                    ctx.parent_version)
    nc = 1 + max(_top_class(ctx), 0)
    names = {i: ctx.names.get(i, f"class{i}") for i in range(nc)}
    return build_detection_model(nc, names=names), names


def _grow_for_new_classes(model, names: dict[int, str], ctx: RoundContext):
    from edgecl.continual.head import grow_head

    top = _top_class(ctx)
    if top < len(names):
        return model, names
    grown = dict(names)
    for c in range(len(names), top + 1):
        grown[c] = ctx.names.get(c, f"class{c}")
    log.info("head grows from %d to %d classes: %s", len(names), len(grown),
             [grown[c] for c in range(len(names), top + 1)])
    return grow_head(model, grown), grown


def _backend(model, names, cfg: Config, conf: float, max_det: int):
    from edgecl.models.base import InferenceOptions
    from edgecl.models.torch_backend import TorchBackend

    opts = InferenceOptions(conf=conf, iou=cfg.model.iou, max_det=max_det,
                            threads=cfg.learner.torch_threads)
    return TorchBackend.from_model(model, names, cfg.learner.imgsz, opts)


def select_replay(ctx: RoundContext, parent_model, parent_names, model_for_virtual) -> list[int]:
    """Choose replay samples with the configured strategy (empty before anything was learnt)."""
    from edgecl.continual.strategies import ReplayContext, get_strategy

    if not ctx.state.learnt_tasks or ctx.cfg.replay.samples <= 0:
        return []
    current = max(ctx.new_records, key=lambda r: r.id).task
    scorer = None
    if ctx.cfg.replay.strategy == "mir-virtual":
        from edgecl.continual.finetune import make_virtual_scorer

        paths = ctx.snapshot.image_paths([r.id for r in ctx.snapshot.records(held_out=False)])
        by_id = dict(zip([r.id for r in ctx.snapshot.records(held_out=False)], paths))
        batch = ctx.snapshot.image_paths([r.id for r in ctx.new_records[: ctx.cfg.learner.batch]])
        scorer = make_virtual_scorer(model_for_virtual, batch, ctx.cfg.learner.lr, by_id,
                                     imgsz=ctx.cfg.learner.imgsz)
    rctx = ReplayContext.from_config(ctx.cfg.replay, current_task=current,
                                     seed=ctx.cfg.memory.seed + ctx.state.round,
                                     virtual_scorer=scorer)
    detector = _backend(parent_model, parent_names, ctx.cfg, ctx.cfg.model.conf, 100)
    strategy = get_strategy(ctx.cfg.replay.strategy)
    return list(strategy.select(ctx.snapshot, ctx.cfg.replay.samples, model=detector, context=rctx))


def evaluate_tasks(model, names, ctx: RoundContext) -> dict:
    """Evaluate a model on the held-out slice of every task seen, on that task's classes.

    Returns:
        task -> :class:`EvalResult` (tasks without held-out samples are left out).
    """
    from edgecl.continual.evaluate import evaluate_model

    backend = _backend(model, names, ctx.cfg, EVAL_CONF, EVAL_MAX_DET)
    results = {}
    for task in ctx.state.task_order:
        ids = ctx.snapshot.ids(held_out=True, task=task)
        if ids:
            results[task] = evaluate_model(backend, ctx.snapshot.image_paths(ids),
                                           class_ids=ctx.state.task_classes.get(task) or None)
    return results


def _fine_tune(ctx: RoundContext, model, parent_model, replay_ids: list[int]):
    from edgecl.continual.finetune import FineTuner

    cfg = ctx.cfg
    first = ctx.parent_version is None
    prev = parent_model if (cfg.ider.enabled and not first) else None
    tuner = FineTuner(model, cfg.learner, cfg.ider, prev_model=prev)
    return tuner.run(ctx.snapshot.image_paths([r.id for r in ctx.new_records]),
                     ctx.snapshot.image_paths(replay_ids),
                     budget_s=cfg.learner.first_round_budget_s if first else cfg.learner.budget_s,
                     max_steps=cfg.learner.first_round_max_steps if first else cfg.learner.max_steps,
                     epochs=cfg.learner.epochs * (10 if first else 1), device=cfg.learner.device)


def export_candidate(ctx: RoundContext, model, names: dict[int, str]) -> tuple[dict, dict]:
    """Save the checkpoint, export ONNX and, where TensorRT exists, build an engine.

    Returns:
        ``(files, export_meta)``: registry file name -> path, and manifest fields.
    """
    from edgecl.models.checkpoint import save_checkpoint
    from edgecl.models.export import export_onnx

    cfg = ctx.cfg
    pt = save_checkpoint(model, ctx.work / "model.pt",
                         meta={"names": names, "imgsz": cfg.learner.imgsz,
                               "parent": ctx.parent_version})
    stats: dict = {}
    onnx = export_onnx(model, ctx.work / "model.onnx", imgsz=cfg.learner.imgsz,
                       opset=cfg.export.onnx_opset, names=names, stats=stats)
    files = {"model.pt": pt, "model.onnx": onnx}
    meta = {"export_s": stats.get("export_s"), "ider_folded": stats.get("ider_folded", False),
            "precision": "fp32 (onnx)"}
    engine, engine_meta = _maybe_engine(ctx, onnx, names)
    if engine is not None:
        files["model.engine"] = engine
    meta.update(engine_meta)
    return files, meta


def _maybe_engine(ctx: RoundContext, onnx: Path, names: dict[int, str]) -> tuple[Path | None, dict]:
    from edgecl.models.engine_file import read_engine_header
    from edgecl.models.tensorrt_build import EngineBuildError, build_engine, tensorrt_available

    cfg = ctx.cfg
    if cfg.export.tensorrt == "off" or (cfg.export.tensorrt == "auto" and not tensorrt_available()):
        return None, {"engine": "not built (TensorRT not available)"}
    calib = None
    if cfg.export.precision == "int8":
        calib = ctx.snapshot.image_paths(ctx.snapshot.ids(held_out=False)
                                         )[: cfg.export.int8_calibration_images]
    try:
        engine = build_engine(onnx, ctx.work / "model.engine", precision=cfg.export.precision,
                              imgsz=cfg.learner.imgsz, workspace_mb=cfg.export.workspace_mb,
                              calibration_images=calib, names=names,
                              cache_dir=Path(cfg.state_dir) / "models" / "engine-cache")
    except EngineBuildError as exc:
        log.error("TensorRT engine not built (%s); the ONNX model is kept", exc)
        return None, {"engine": f"build failed: {exc}"}
    header = read_engine_header(engine)
    info = header.get("edgecl", header)
    return engine, {"precision": info.get("precision", cfg.export.precision),
                    "engine_cache_key": info.get("cache_key")}


def _load_or_none(sample):
    from edgecl.errors import ReplayMemoryError

    try:
        return sample.load_image()
    except ReplayMemoryError as exc:
        log.warning("sample %d skipped: %s", sample.id, exc)
        return None


def _set_far_baselines(ctx: RoundContext, model, names) -> None:
    """FAR's baseline: each sample's recall right after its task was learnt."""
    from edgecl.continual.recall import batch_recall

    current = {r.task for r in ctx.new_records}
    ids = [r.id for r in ctx.snapshot.records(held_out=False) if r.task in current]
    samples = ctx.snapshot.get(ids)
    images = [_load_or_none(s) for s in samples]
    keep = [i for i, im in enumerate(images) if im is not None]
    detector = _backend(model, names, ctx.cfg, ctx.cfg.model.conf, 100)
    recalls = batch_recall(detector, [images[i] for i in keep], [samples[i].labels for i in keep])
    ctx.snapshot.set_recall_baseline([samples[i].id for i in keep], recalls.tolist())


def _train_evaluate_stage(ctx: RoundContext, reason: str, started_s: float) -> dict:
    from edgecl.runtime.monitor import Monitor

    cfg, state = ctx.cfg, ctx.state
    round_no = state.round + 1
    parent_model, parent_names = _load_parent(ctx)
    model, names = _grow_for_new_classes(copy.deepcopy(parent_model), parent_names, ctx)
    replay_ids = select_replay(ctx, parent_model, parent_names, model)
    ft = _fine_tune(ctx, model, parent_model, replay_ids)
    ctx.snapshot.record_replay(replay_ids)
    candidate = evaluate_tasks(model, names, ctx)
    parent = evaluate_tasks(parent_model, parent_names, ctx) if ctx.parent_version else None
    cand_map = {t: r.map50_95 for t, r in candidate.items()}
    verdict = judge({t: r.map50_95 for t, r in parent.items()} if parent else None, cand_map,
                    list(state.learnt_tasks), cfg.gate,
                    training_failed=ft.stopped_reason if ft.stopped_reason in ("nan_loss", "no_data") else "")
    files, export_meta = export_candidate(ctx, model, names)
    status = "staged" if verdict.accepted else "rejected"
    manifest = _manifest(ctx, names, ft, verdict, candidate, export_meta, reason, replay_ids)
    version = ctx.registry.stage(files, manifest, status=status)
    monitor = Monitor(cfg.state_dir)
    monitor.record_evaluation(round_no, version, candidate, state.task_order)
    monitor.record_round(round_no, version, status, reason=verdict.reason,
                         seconds=round(time.time() - started_s, 1))
    cl = monitor.candidate_metrics(round_no, version)
    ctx.registry.update_manifest(version, {"metrics": dict(manifest["metrics"], **cl)})
    if verdict.accepted:
        _set_far_baselines(ctx, model, names)
        state.learnt_tasks = list(dict.fromkeys(state.learnt_tasks + [r.task for r in ctx.new_records]))
        state.last_sample_id = max(r.id for r in ctx.new_records)
    state.round = round_no
    save_state(cfg.state_dir, state)
    log.info("round %d -> %s %s: %s", round_no, version, status, verdict.reason)
    return {"round": round_no, "version": version, "status": status, "reason": verdict.reason,
            "acc": cl.get("acc"), "bwt": cl.get("bwt"),
            "per_task": {t: _finite(v) for t, v in cand_map.items()},
            "classes": sorted(names), "steps": ft.steps, "train_s": round(ft.seconds, 1),
            "replayed": len(replay_ids), "new_samples": len(ctx.new_records),
            "started_s": started_s, "seconds": round(time.time() - started_s, 1)}


def _finite(value: float | None) -> float | None:
    """JSON has no NaN: map it to None."""
    return None if value is None or np.isnan(value) else float(value)


def _manifest(ctx: RoundContext, names, ft, verdict, candidate: dict, export_meta: dict,
              reason: str, replay_ids: list[int]) -> dict:
    dece = [r.dece for r in candidate.values() if r.dece is not None and not np.isnan(r.dece)]
    return {
        "parent": ctx.parent_version, "config_hash": config_hash(ctx.cfg),
        "classes": {int(k): v for k, v in names.items()},
        "memory_snapshot": ctx.snapshot.snapshot_id, "trigger": reason,
        "reason": verdict.reason, "replay_strategy": ctx.cfg.replay.strategy,
        "replay_samples": len(replay_ids), "new_samples": len(ctx.new_records),
        "ider": ctx.cfg.ider.enabled,
        "training": {"steps": ft.steps, "seconds": round(ft.seconds, 2),
                     "stopped_reason": ft.stopped_reason, "mean_loss": ft.mean_loss,
                     "final_loss": ft.final_loss, "budget_s": ctx.cfg.learner.budget_s},
        "metrics": {"per_task_map50_95": {t: r.map50_95 for t, r in candidate.items()},
                    "per_task_recall": {t: r.recall for t, r in candidate.items()},
                    "dece": float(np.mean(dece)) if dece else None,
                    "acc_parent": _finite(verdict.acc_parent), "gate_drops": verdict.drops},
        **export_meta,
    }
