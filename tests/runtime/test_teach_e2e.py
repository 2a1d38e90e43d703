"""Issue 8, point 8: a class taught ONLY through ``POST /api/labels/ID`` answers is learnt.

A real runtime (tiny YOLO11n at imgsz 64 knowing only ``car``) watches an unlabelled camera-like
stream (:class:`~edgecl.bench.console_load.ObjectSource`: one big orange crate a frame) with
``labels.mode: field``; the selection policies queue frames; the test, acting as the operator over
HTTP, answers queued frames with a box of a NEW class ``crate``; the runtime's own trigger
(``learner.trigger_new_samples``) starts a round, the gate passes it, the supervisor promotes it;
the promoted version's most confident box on fresh crate frames is then the new class's id (at
this toy budget scores stay low and boxes are not yet placed well: the test proves the wiring
from HTTP answer to a served model that outputs the new class; ``edgecl bench field`` measures
how well a device learns).
"""

import json
import threading
import time
import urllib.request

import cv2
import numpy as np
import pytest
import torch

from edgecl.bench.console_load import ObjectSource, object_box, object_frame, tiny_model
from edgecl.config import load_config
from edgecl.runtime.app import RunOptions, Runtime

IMGSZ = 64
ANSWERS = 8
TRAIN_ANSWERS = 5
"""Answers that go to training (of the ANSWERS, memory.holdout_fraction 0.25 holds 2-3 out)."""
SPREAD = 0.25  # the crate stays near the centre: a handful of steps can learn where it is
pytestmark = pytest.mark.timeout(240)


def http(base, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method="POST" if data else "GET",
                                 headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=10) as response:
        raw = response.read()
        return json.loads(raw) if response.headers.get_content_type() == "application/json" else raw


def teach_cfg(state, model, *extra):
    """Field labelling with every frame offered to the operator and no pseudo-label (the new
    class must come from the HTTP answers alone); a round after TRAIN_ANSWERS new training
    samples, 32 steps.

    The starting model is saved as untrained, so the round is a first round (from scratch, nothing
    frozen): its step cap is set to 32 too. At the shipped 600 steps on 5-6 images at lr 0.02, a
    clean-checkout run once ended with a head that scored every anchor under 0.001."""
    return load_config(None, [
        f"state_dir={state}", f"model.path={model}", f"model.imgsz={IMGSZ}", "model.threads=1",
        "runtime.warmup_runs=1", "runtime.swap_poll_s=0.1",
        "server.enabled=true", "server.port=0",
        "labels.mode=field", "labels.max_per_minute=0", "labels.dedup_window_s=0",
        "labels.selection.random=1.0", "labels.random_share=1.0", "labels.pseudo_conf=1.0",
        "learner.enabled=true", f"learner.trigger_new_samples={TRAIN_ANSWERS}",
        "learner.trigger_new_class=false", "learner.trigger_interval_s=0",
        f"learner.imgsz={IMGSZ}", "learner.batch=4", "learner.max_steps=32",
        "learner.first_round_max_steps=32",
        "learner.budget_s=900", "learner.epochs=100", "learner.lr=0.02", "learner.device=cpu",
        "learner.bn_recalibration_batches=4", "memory.holdout_fraction=0.25",
        "replay.strategy=er", "gate.max_forgetting=1.0", "gate.min_acc_delta=-1.0",
        "export.tensorrt='off'", *extra])


def test_a_class_taught_only_by_http_answers_is_learnt_and_served(tmp_path):
    torch.manual_seed(0)  # the served model picks the frames; the round seeds its own (seed_round)
    model = tiny_model(tmp_path / "car.pt", {0: "car"}, IMGSZ)
    cfg = teach_cfg(tmp_path / "state", model)
    source = ObjectSource(width=160, height=120, fps=10.0, seed=1, spread=SPREAD)
    runtime = Runtime(cfg, RunOptions(source_uri=source.uri, quiet=True))
    runtime.build(source=source)
    # no current version yet: the loop serves the file; the first round starts from model.path
    outcome: dict = {}

    def operator():
        try:
            deadline = time.monotonic() + 200
            while runtime.server is None or not runtime.server.port:
                time.sleep(0.05)
            base = f"http://127.0.0.1:{runtime.server.port}"
            answered = []
            while len(answered) < ANSWERS and time.monotonic() < deadline:
                for item in http(base, "/api/labels/pending")[:ANSWERS - len(answered)]:
                    jpeg = http(base, f"/api/labels/{item['id']}/image")
                    box = object_box(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))
                    assert box is not None, f"no crate found in queued frame {item['id']}"
                    out = http(base, f"/api/labels/{item['id']}",
                               {"boxes": [{"class": "crate", "xyxy": box}], "skip": False})
                    answered.append(out)
                time.sleep(0.1)
            outcome["answered"] = answered
            while runtime.registry.current() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            outcome["classes"] = http(base, "/api/classes")
            outcome["models"] = http(base, "/api/models")
            while runtime.loop.model_version != runtime.registry.current() \
                    and time.monotonic() < deadline:
                time.sleep(0.1)  # the watcher swaps the promoted version in
            outcome["serving"] = runtime.loop.model_version
        except BaseException as exc:  # re-raised on the test's thread
            outcome["error"] = exc
        finally:
            runtime.loop.request_stop()

    thread = threading.Thread(target=operator, daemon=True)
    thread.start()
    runtime.run()
    thread.join(30)
    if "error" in outcome:
        raise outcome["error"]

    assert len(outcome["answered"]) == ANSWERS
    assert all(a["classes_added"] == ["crate"] for a in outcome["answered"][:1])
    crate = next(c for c in outcome["classes"] if c["name"] == "crate")
    assert crate["id"] == 1 and crate["samples"] == ANSWERS
    current = runtime.registry.current()
    assert current is not None, "no round was promoted"
    assert outcome["serving"] == current, "the loop did not swap to the promoted version"
    rounds = runtime.supervisor.rounds
    assert rounds and rounds[-1]["status"] == "promoted" and rounds[-1]["trigger"] == "new_samples"
    manifest = runtime.registry.manifest(current)
    assert manifest["classes"] == {"0": "car", "1": "crate"}
    # the gate judged what the served model shows, at the runtime's model.conf (a first round,
    # from an untrained model: no parent to compare with, so no step)
    assert manifest["metrics"]["gate_recall_steps"] == {}
    assert manifest["metrics"]["gate_false_positive_step"] is None
    record = json.loads((runtime.registry.root / current / "round_record.json").read_text())
    assert record["evaluation"]["stream"]["serving_conf"] == cfg.model.conf

    from edgecl.continual.memory import memory_from_config

    memory = memory_from_config(cfg)
    try:
        records = memory.records()
        assert len(records) == ANSWERS
        assert {r.origin.value for r in records} == {"operator"}
        assert all(list(r.classes) == [1] for r in records)
        # the round started once TRAIN_ANSWERS answers went to training (held-out ones teach a
        # round nothing and do not count towards learner.trigger_new_samples)
        assert sum(not r.held_out for r in records) >= TRAIN_ANSWERS
    finally:
        memory.close()

    from edgecl.models.backends import load_backend
    from edgecl.models.base import InferenceOptions

    # At this toy budget (32 steps from a randomly initialised backbone, imgsz 64) the promoted
    # version does not yet place its box reliably and its scores stay low (~0.01-0.1): the check
    # is that its most confident output on fresh crate frames is the NEW class id, which the
    # parent's head does not even have. How well a device learns is `edgecl bench field`'s job.
    backend = load_backend(runtime.registry.model_path(current),
                           InferenceOptions(conf=0.001, imgsz=IMGSZ, threads=1))
    try:
        rng = np.random.default_rng(123)
        top = []
        for _ in range(4):
            image, _truth = object_frame(rng, 160, 120, SPREAD)
            det = backend.infer([image])[0]
            assert len(det), "the promoted version gave no box at all"
            best = int(np.argmax(det.scores))
            top.append((int(det.classes[best]), round(float(det.scores[best]), 3)))
        assert sum(c == 1 for c, _score in top) >= 3, f"(class, score) of the top box: {top}"
    finally:
        backend.close()
