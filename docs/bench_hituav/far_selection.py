"""Why FAR fell below ER (issue 11, point 3): what each rule replays before task 2.

Usage: YOLO_OFFLINE=1 python docs/bench_hituav/far_selection.py TASKS_YAML FIRST_TASK_MODEL OUT_JSON [IMGSZ]

Before task 2 the pool holds task 1's images and the model is the one that set their FAR
baselines a moment ago, so every drop ``baseline - now`` is 0: FAR's choice is its tie-break
alone.  The old tie-break ("lowest current recall first") is the paper's MIR rule, and it drew
FAR to the images the model never learnt.  This script measures, for ER, the old FAR rule and
the fixed FAR (random among the undropped, class-balanced): the picks' recall under the model
and the classes they show.
"""

import json
import sys
from pathlib import Path

import numpy as np

from edgecl.bench.cl_data import prepare_view
from edgecl.bench.cl_protocol import (ProtocolSettings, ReplayPool, _baselines,
                                      load_first_task_model, replay_size)
from edgecl.config import ModelConfig
from edgecl.continual.strategies import STRATEGIES, ReplayContext
from edgecl.data.tasks import load_tasks


def main(tasks_yaml: str, model_path: str, out_json: str, imgsz: int = 320) -> None:
    view = prepare_view(load_tasks(Path(tasks_yaml)), Path(out_json).parent / "work")
    settings = ProtocolSettings(imgsz=imgsz)
    model = load_first_task_model(model_path, view.seen_names(0))
    base = _baselines(model, view, 0, settings)
    pool = ReplayPool()
    pool.add(view.task_names[0], list(view.train[0]), base)
    recall = np.array([1.0 if b is None else b for b in base])
    records = pool.records()
    out = {"images": len(records), "share_recall_0": float((recall == 0).mean()),
           "mean_recall": float(recall.mean()), "conf": ModelConfig().conf, "picks": {}}
    for budget in (0.05, 0.10):
        k = replay_size(budget, len(pool))
        # old FAR rule: all drops 0 -> lowest current recall first, then a seeded order
        rng = np.random.default_rng(1)
        tie = rng.permutation(len(records))
        old = [records[i].id for i in sorted(range(len(records)), key=lambda i: (recall[i], tie[i]))[:k]]
        ctx = ReplayContext(current_task=view.task_names[1], seed=1)
        # the model that set the baselines is the model now: model=None reuses them (drops 0)
        picks = {"er": STRATEGIES["er"].select(pool, k, context=ctx),
                 "far (old tie-break)": old,
                 "far (fixed)": STRATEGIES["far"].select(pool, k, model=None, context=ctx),
                 "class_balanced": STRATEGIES["class_balanced"].select(pool, k, context=ctx)}
        by_id = {r.id: r for r in records}
        out["picks"][f"{budget:.0%}"] = {
            name: {"k": len(ids), "mean_recall": float(np.mean([recall[i] for i in ids])),
                   "share_recall_0": float(np.mean([recall[i] == 0 for i in ids])),
                   "images_per_class": {view.names[c]: sum(c in by_id[i].classes for i in ids)
                                        for c in view.task_classes[0]}}
            for name, ids in picks.items()}
    Path(out_json).write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:4], *(int(v) for v in sys.argv[4:5]))
