"""onnxruntime and torch give the same detections for one trained model."""

import dataclasses

import cv2
import numpy as np
import pytest

from edgecl.data.scenario import make_scenario
from edgecl.data.tasks import load_tasks
from edgecl.config import IderConfig, LearnerConfig
from edgecl.continual.finetune import FineTuner
from edgecl.models.backends import load_backend
from edgecl.models.base import InferenceOptions
from edgecl.models.checkpoint import save_checkpoint
from edgecl.models.export import export_onnx
from edgecl.models.torch_backend import TorchBackend
from edgecl.ultra import build_detection_model

IMGSZ = 96
PARITY_THREADS = 2
CLASS_LOGIT_SHIFT = 4.0


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import random

    import torch

    # the training below depends on the thread count (another summation order, another
    # 40-step model): pinned, so that the tests run before this one cannot decide whether the
    # model detects anything
    threads = torch.get_num_threads()
    torch.set_num_threads(PARITY_THREADS)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("parity")
    taskset = load_tasks(make_scenario(root / "scn", tasks=1, images_per_task=16, imgsz=IMGSZ, seed=1))
    names = {c: taskset.names[c] for c in taskset.tasks[0].classes}
    model = build_detection_model(len(names), names=names)
    cfg = LearnerConfig(imgsz=IMGSZ, batch=4, lr=0.002, bn_recalibration_batches=2)
    # bounded by steps: under load a 60 s budget stopped it early, with a model that detected
    # nothing (the test then fails as vacuous)
    ft = FineTuner(model, cfg, IderConfig()).run(list(taskset.tasks[0].train), [], budget_s=1800,
                                                  max_steps=40, epochs=50, device="cpu")
    assert ft.steps == 40
    # whether a 40-step model from scratch scores any box above the threshold is chaotic (the
    # CPU's arithmetic, bf16 or not, decides it: 2 of 5 seeds scored none here): its class
    # logits are raised so that the runtimes always have detections to compare
    with torch.no_grad():
        for branch in model.model[-1].cv3:
            branch[-1].bias += CLASS_LOGIT_SHIFT
    onnx = export_onnx(model, root / "m.onnx", imgsz=IMGSZ, names=names)
    pt = save_checkpoint(model, root / "m.pt", meta={"names": names, "imgsz": IMGSZ})
    images = [cv2.imread(str(p)) for p in taskset.tasks[0].test]
    torch.set_num_threads(threads)
    return model, names, onnx, pt, images


def _assert_matched(a, b, min_score):
    """Every detection of ``a`` scoring >= min_score has a twin in ``b``: same class, box within
    0.5 px, score within 2e-3. (Boxes right at the confidence threshold may fall on either side
    of it in two runtimes, so only those clearly above it are compared.)"""
    for box, score, cls in zip(a.boxes_xyxy, a.scores, a.classes):
        if score < min_score:
            continue
        close = ((np.abs(b.boxes_xyxy - box).max(axis=1) <= 0.5) & (np.abs(b.scores - score) <= 2e-3)
                 & (b.classes == cls))
        assert close.any(), f"no twin for box {box} score {score:.4f} class {cls}"


def test_onnxruntime_matches_torch(trained):
    model, names, onnx, pt, images = trained
    opts = InferenceOptions(conf=0.005, iou=0.7, max_det=100, threads=1)
    ort = load_backend(onnx, opts)
    torch_file = load_backend(pt, dataclasses.replace(opts, imgsz=IMGSZ))
    in_memory = TorchBackend.from_model(model, names, IMGSZ, opts)
    assert ort.meta.names == names and ort.meta.imgsz == IMGSZ
    compared = 0
    for image in images:
        a, b, c = ort.infer([image])[0], torch_file.infer([image])[0], in_memory.infer([image])[0]
        for x, y in ((a, b), (b, a), (a, c), (c, a)):
            _assert_matched(x, y, min_score=0.02)
        compared += int((a.scores >= 0.02).sum())
    assert compared > 0, "the trained model detected nothing: parity would be vacuous"


def test_boxes_are_in_original_pixels(trained):
    _, _, onnx, _, images = trained
    ort = load_backend(onnx, InferenceOptions(conf=0.01, threads=1))
    big = cv2.resize(images[0], (IMGSZ * 3, IMGSZ * 2))
    det = ort.infer([big])[0]
    if len(det):
        assert det.boxes_xyxy[:, [0, 2]].max() <= IMGSZ * 3 + 1
        assert det.boxes_xyxy[:, [1, 3]].max() <= IMGSZ * 2 + 1
    batch = ort.infer([images[0], big])
    assert len(batch) == 2
