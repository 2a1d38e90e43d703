"""A learning round applies the issue-11 switches: pseudo-labels of old classes and distillation."""

import sys
from pathlib import Path
from types import SimpleNamespace

import torch

from edgecl.config import load_config
from edgecl.continual import round as round_mod
from edgecl.data.labels import read_yolo_labels
from edgecl.ultra import build_detection_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/synthetic_yolo.py
from synthetic_yolo import draw_dataset


class Snapshot:
    def __init__(self, paths):
        self.paths = paths

    def image_paths(self, ids):
        return [self.paths[i] for i in ids]

    def get(self, ids):  # the samples' sizes and labels (none: no small-box note)
        return []


def test_fine_tune_adds_pseudo_labels_and_distillation(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    images = draw_dataset(tmp_path / "mem", 4, size=64, classes=(1,))
    cfg = load_config(None, ["learner.imgsz=64", "learner.batch=2", "learner.max_steps=1",
                             "learner.device=cpu", "learner.bn_recalibration_batches=0",
                             "learner.pseudo_old_classes=true", "learner.pseudo_old_conf=0.0001",
                             "learner.distill_cls_weight=1.0", "learner.distill_box_weight=1.0",
                             "learner.distill_conf=0.0"])
    ctx = SimpleNamespace(cfg=cfg, first=False, young_steps=lambda: None,
                          snapshot=Snapshot(images),
                          new_records=[SimpleNamespace(id=i) for i in range(4)],
                          work=tmp_path / "work", progress=None)
    parent = build_detection_model(1, names={0: "old"}).eval()
    with torch.no_grad():  # make the untrained parent "detect" its class everywhere
        for seq in parent.model[-1].cv3:
            seq[-1].bias.fill_(5.0)
    model = build_detection_model(2, names={0: "old", 1: "new"})
    ft = round_mod._fine_tune(ctx, model, parent, [])
    assert ft.steps == 1
    assert {"distill_cls", "distill_box"} <= set(ft.last_terms)
    copies = sorted((tmp_path / "work" / "pseudo-old" / "labels").glob("*.txt"))
    assert len(copies) == 4
    labels = read_yolo_labels(copies[0]).labels
    assert (labels[:, 0] == 1).any() and (labels[:, 0] == 0).any()  # own box kept, old added
    assert all(set(read_yolo_labels(p.parent.parent / "labels" / (p.stem + ".txt")).labels[:, 0]) == {1}
               for p in images)  # the memory's labels are untouched
