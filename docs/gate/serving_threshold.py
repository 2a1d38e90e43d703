"""What AP cannot see, on a demo's model: the figures of README's gate paragraph.

Run after ``edgecl demo --state-dir state/demo``:

    PYTHONPATH=. .venv/bin/python docs/gate/serving_threshold.py state/demo v0004

1. **A lowered class logit.** The car class's logit minus 3 in every head branch: AP ranks
   each class's detections, so car's AP barely moves, while at ``model.conf`` 0.25 the boxes
   found fall; the per-class view of the gate (``judge_results`` on the demo's held-out images
   as one stream) rejects it, and with the serving checks left out it is accepted.
2. **A round without replay.** 30 steps on one task's training images alone (the first 10
   layers frozen, 2 seeds), with no replay: the AP and the boxes found of the other classes.
"""

import copy
import random
import sqlite3
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from edgecl.config import GateConfig, IderConfig, LearnerConfig
from edgecl.continual.evaluate import evaluate_model
from edgecl.continual.finetune import FineTuner
from edgecl.continual.gate import STREAM_TASK, judge_results
from edgecl.models.base import InferenceOptions
from edgecl.models.checkpoint import load_checkpoint
from edgecl.models.torch_backend import TorchBackend

SERVING_CONF = 0.25
LOGIT_SHIFT = 3.0


def main(state: Path, version: str, train_task: str = "t4", steps: int = 30) -> None:
    model, meta = load_checkpoint(state / "models" / version / "model.pt")
    names = {int(k): str(v) for k, v in meta["names"].items()}
    imgsz = int(meta.get("imgsz", 160))
    with sqlite3.connect(state / "memory" / "index.sqlite") as db:
        rows = db.execute("select id, task, held_out from samples order by id").fetchall()
    image = {i: state / "memory" / "images" / f"{i:08d}.jpg" for i, _, _ in rows}
    opts = InferenceOptions(conf=0.001, iou=0.7, max_det=300, threads=2)

    def evaluate(net, ids):
        backend = TorchBackend.from_model(net, names, imgsz, opts)
        return evaluate_model(backend, [image[i] for i in ids], serving_conf=SERVING_CONF)

    def show(tag, res):
        print(f"{tag:>22}", {names.get(c, c): (round(ap, 3), res.per_class_found.get(c))
                             for c, ap in res.per_class_ap50_95.items() if c in names})

    held = [i for i, _, h in rows if h]
    parent = evaluate(model, held)
    lowered = copy.deepcopy(model)
    with torch.no_grad():
        for branch in lowered.model[-1].cv3:
            branch[-1].bias[0] -= LOGIT_SHIFT
    faded = evaluate(lowered, held)
    print(f"1. {names[0]}'s logit minus {LOGIT_SHIFT}: (AP50-95, boxes found at {SERVING_CONF}) "
          f"on {len(held)} held-out images")
    show(version, parent)
    show("logit lowered", faded)
    cfg = GateConfig()
    print("   gate:", judge_results({STREAM_TASK: parent}, {STREAM_TASK: faded}, [STREAM_TASK],
                                    cfg, names=names).reason)
    blind = replace(faded, serving_conf=float("nan"))
    print("   AP alone:", judge_results({STREAM_TASK: parent}, {STREAM_TASK: blind},
                                        [STREAM_TASK], cfg, names=names).reason)

    train = [image[i] for i, t, h in rows if t == train_task and not h]
    earlier = [i for i, t, h in rows if h and t <= train_task]
    print(f"2. {steps} steps on {len(train)} images of {train_task} alone, no replay; "
          f"{len(earlier)} held-out images of the tasks up to it")
    show(version, evaluate(model, earlier))
    torch.set_num_threads(2)
    for seed in (0, 1):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        net = copy.deepcopy(model)
        FineTuner(net, LearnerConfig(imgsz=imgsz, batch=8, lr=0.001), IderConfig()).run(
            train, [], budget_s=600, max_steps=steps, epochs=100, device="cpu", freeze_layers=10)
        show(f"seed {seed}", evaluate(net, earlier))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], *sys.argv[3:4])
