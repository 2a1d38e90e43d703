"""A deterministic fake of the runtime's console hooks: records every state change it receives."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np

from edgecl.errors import ConflictError, EdgeclError, LabelError, NotFoundError, RegistryError
from edgecl.frames import Detections
from edgecl.web import ConsoleHooks
from edgecl.web.frame import LiveFrame, render_frame

CLASSES = ["person", "car", "bicycle", "dog"]
HOSTILE_NAMES = ['<img src=x onerror=alert(1)>', '"><script>alert(2)</script>', "L" * 100,
                 "שלום עולם", "汽车卡车", "🚗 car 🚚"]
"""Names a device may show (class, task, file, alert): markup, 100 characters without a space,
right-to-left, CJK, emoji."""


def _scene(width: int, height: int, seed: int) -> np.ndarray:
    """A synthetic street-ish frame: sky, road, a few coloured blocks (BGR uint8)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.uint8)
    img[: height // 2] = (200, 170, 120)
    img[height // 2:] = (90, 95, 100)
    cv2.line(img, (0, height * 3 // 4), (width, height * 3 // 4), (230, 230, 230), 3)
    for _ in range(4):
        x, y = int(rng.integers(10, width - 90)), int(rng.integers(height // 3, height - 70))
        color = tuple(int(c) for c in rng.integers(40, 220, 3))
        cv2.rectangle(img, (x, y), (x + int(rng.integers(30, 80)), y + int(rng.integers(30, 60))),
                      color, -1)
    return img


class FakeConsole:
    """State behind :meth:`hooks`; ``answers``, ``promoted`` and ``rollbacks`` record calls, as
    ``corrections`` and ``withdrawals`` do for the answers kept in memory (``stored``).

    Args:
        folder: where the queued frames' images are written.
        items: how many frames wait in the operator queue.
    """

    def __init__(self, folder: Path, items: int = 3):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.answers: list[dict] = []
        self.promoted: list[str] = []
        self.promote_from: list[str | None] = []  # each promotion's ?from= (None: none sent)
        self.rollbacks = 0
        self.rollback_from: list = []  # the precondition each rollback request gave
        self.history = ["v0001"]  # earlier current versions, most recent last
        self.health_status = "ok"
        self.fail_live = False
        self.fail_answers: list[EdgeclError] = []  # raised by the next answers, one each
        self.fail_pending: EdgeclError | None = None  # raised by every queue read while set
        self.slow_images: dict[str, float] = {}  # item id -> seconds its image takes
        self.broken_images: set[str] = set()  # items whose image cannot be read
        self.stored: list[dict] = []  # answers whose sample the memory holds, newest first
        self.corrections: list[dict] = []  # {"id", "boxes"} of each correction received
        self.withdrawals: list[str] = []  # ids of each withdrawal received
        self.fail_changes: list[EdgeclError] = []  # raised by the next corrections/withdrawals
        self.next_sample = 101
        self.class_names = list(CLASSES)
        self.detections_held_out = True
        """False: the current version detected nothing on its held-out images (every
        reliability bin empty, as the monitor reports such a version)."""
        self.unmeasured: list[str] = []  # classes no round measured (Forgetting page note)
        self.merged_names: list[str] = []  # classes merged into the first (classes merge)
        self.decline_answers = False  # answers stored by no sample (the memory declined them)
        self.answer_notes: dict = {}  # added to a stored answer's result (similar_classes, ...)
        self.merges: dict[str, str] = {}  # a class of class_names -> the class it was merged into
        self.alerts = ["round 3 rejected: person AP fell 0.12 > 0.05"]
        self.queue = []
        self.add_items(items)
        frame = _scene(640, 480, 99)
        cv2.rectangle(frame, (60, 250), (200, 330), (0, 200, 0), 2)
        cv2.putText(frame, "car 0.91", (60, 244), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 200, 0), 2)
        self.jpeg = cv2.imencode(".jpg", frame)[1].tobytes()
        self.live_frames: list[LiveFrame] = []  # oldest first, as the runtime's sink keeps them
        self.publish_frame()
        self.versions = [
            # the gate's longest reasons (what the served model shows) must fit a phone too
            {"version": "v0003", "status": "rejected", "reason": (
                "false detections at model.conf 0.25 rose from 0.42 to 4.03 per held-out image, "
                "most of them OtherVehicle (120 more), less 0.15 more boxes found, 0.20 of it in "
                "earlier rounds: 3.660 added (allowed 1.0, gate.max_false_positives_rise)"),
             "per_class_ap": {"person": 0.52, "car": 0.71, "bicycle": 0.40}, "dece": 0.081,
             "size_bytes": 12_400_000, "created": "2026-11-29T15:40:00Z", "parent": "v0002"},
            {"version": "v0002", "status": "current", "reason": "gate: accepted (+0.04 mAP)",
             "per_class_ap": {"person": 0.64, "car": 0.69, "bicycle": 0.38}, "dece": 0.052,
             "size_bytes": 12_390_000, "created": "2026-11-29T14:10:00Z", "parent": "v0001",
             "origin": "fleet round 3",
             "engine": "openvino-int8", "engine_label": "OpenVINO INT8",
             "engine_file": "openvino-int8/model.xml",
             "int8": {"accepted": True, "refused": False,
                      "reason": "every class within 0.01 of FP32 (largest drop 0.004, class car)"}},
            {"version": "v0001", "status": "promoted", "reason": "initial model",
             "per_class_ap": {"person": 0.61, "car": 0.65}, "dece": 0.066,
             "size_bytes": 12_380_000, "created": "2026-11-28T09:00:00Z", "parent": None,
             "engine": "openvino", "engine_label": "OpenVINO FP32", "engine_file": "openvino/model.xml",
             "int8": {"accepted": False, "refused": True,
                      "reason": "class car: mAP50-95 0.650 -> 0.612 (drop 0.038 > 0.01)"}},
        ]

    def add_items(self, count: int, names: tuple[str, str] = ("car", "person"),
                  reasons: dict | None = None) -> list[str]:
        """Queue ``count`` more 640x480 frames, each proposing a box of each of ``names``.

        Returns:
            The new items' ids.
        """
        ids = []
        with self.lock:
            for _ in range(count):
                i = len(self.answers) + len(self.queue)
                item_id = f"f{i:04d}"
                cv2.imwrite(str(self.folder / f"{item_id}.jpg"), _scene(640, 480, i))
                self.queue.append({
                    "id": item_id, "priority": round(0.9 - 0.2 * i, 2),
                    "reasons": reasons or {"uncertain": round(0.8 - 0.2 * i, 2),
                                           "novel": round(0.3 + 0.1 * i, 2)},
                    "width": 640, "height": 480, "created_s": 1_780_000_000.0 + i,
                    "proposed": [{"class": names[0], "xyxy": [60.0, 250.0, 200.0, 330.0],
                                  "score": 0.41},
                                 {"class": names[1], "xyxy": [400.0, 200.0, 450.0, 330.0],
                                  "score": 0.33}]})
                ids.append(item_id)
        return ids

    def store_answers(self, count: int) -> list[str]:
        """Put ``count`` more answered 640x480 frames in the fake memory (newest first), with
        one to three stored boxes each; the first one corrected once, every third held out.

        Returns:
            The new answers' ids, newest first.
        """
        shapes = [[{"class": "car", "xyxy": [60.0, 250.0, 200.0, 330.0]},
                   {"class": "person", "xyxy": [400.0, 200.0, 450.0, 330.0]}],
                  [{"class": "bicycle", "xyxy": [300.0, 260.0, 380.0, 340.0]}],
                  [{"class": "car", "xyxy": [40.0, 280.0, 160.0, 350.0]},
                   {"class": "car", "xyxy": [200.0, 270.0, 320.0, 345.0]},
                   {"class": "dog", "xyxy": [500.0, 380.0, 560.0, 420.0]}]]
        ids = []
        with self.lock:
            for _ in range(count):
                k = len(self.stored) + len(self.withdrawals)
                item_id = f"{1_779_990_000_000_000_000 + 7919 * k:020d}-{k * 2654435761 % 16**6:06x}"
                cv2.imwrite(str(self.folder / f"{item_id}.jpg"), _scene(640, 480, 200 + k))
                self.stored.insert(0, {
                    "id": item_id, "sample": self.next_sample, "ts_s": 1_779_990_000.0 + 60 * k,
                    "held_out": k % 3 == 2, "width": 640, "height": 480,
                    "name": f"flight_{k:02d}_{8070 + k}.jpg", "frame_id": 100 + k,
                    "corrected": 1 if k == 0 else 0,
                    "boxes": [dict(b, xyxy=list(b["xyxy"])) for b in shapes[k % len(shapes)]]})
                self.next_sample += 1
                ids.insert(0, item_id)
        return ids

    def publish_frame(self, boxes: list[tuple] | None = None,
                      names: dict[int, str] | None = None) -> LiveFrame:
        """Render the next Live frame (``seq`` one more), as the runtime's sink does.

        Args:
            boxes: ``(class id, x1, y1, x2, y2, score)`` in pixels of the 640x480 scene
                (default: a car and a person).
            names: class id -> name (default: :attr:`class_names` by index).

        Returns:
            The new :class:`~edgecl.web.frame.LiveFrame`.
        """
        boxes = boxes if boxes is not None else [(1, 60, 250, 200, 330, 0.91),
                                                 (0, 400, 200, 450, 330, 0.77)]
        names = names if names is not None else dict(enumerate(self.class_names))
        dets = Detections(np.array([b[1:5] for b in boxes], np.float32).reshape(-1, 4),
                          np.array([b[5] for b in boxes], np.float32),
                          np.array([b[0] for b in boxes], np.int64))
        with self.lock:
            seq = self.live_frames[-1].seq + 1 if self.live_frames else 1
            frame = render_frame(_scene(640, 480, 99), dets, names, seq)
            self.live_frames = (self.live_frames + [frame])[-8:]
        return frame

    def make_hostile(self) -> None:
        """Give every name the pages show a hostile value (:data:`HOSTILE_NAMES`)."""
        self.publish_frame([(i, 20 + 90 * i, 60 + 60 * i, 100 + 90 * i, 120 + 60 * i, 0.5 + 0.05 * i)
                            for i in range(len(HOSTILE_NAMES))] + [(2, 560, 40, 639, 120, 0.88)],
                           dict(enumerate(HOSTILE_NAMES)))
        with self.lock:
            self.class_names = list(HOSTILE_NAMES)
            self.alerts = ["camera lost: dir://<img src=x onerror=alert(3)>/" + "X" * 150,
                           "round 5 rejected: class שלום עולם fell 0.21 > 0.15"]
            for v in self.versions:
                v["per_class_ap"] = {n: round(0.3 + 0.1 * i, 2) for i, n in enumerate(HOSTILE_NAMES)}
                v["reason"] = "gate: <img src=x onerror=alert(4)> fell " + "W" * 120
        self.add_items(2, names=(HOSTILE_NAMES[0], HOSTILE_NAMES[3]),
                       reasons={"<i>novel</i>": 0.5, "L" * 80: 0.2})

    # hooks -----------------------------------------------------------------------------------
    def health(self) -> dict:
        return {"status": self.health_status, "stages": {"capture": "ok", "inference": "ok"}}

    def metrics(self) -> bytes:
        return b"# TYPE edgecl_fps gauge\nedgecl_fps 29.5\n"

    def live(self) -> dict:
        if self.fail_live:
            raise RuntimeError("boom: a hook fault")
        current = next(v["version"] for v in self.versions if v["status"] == "current")
        return {"fps": 29.5, "latency_ms_p50": 21.3, "latency_ms_p95": 34.8,
                "model_version": current,
                "memory": {"samples": 412, "capacity": 1000, "bytes": 61_000_000,
                           "max_bytes": 200_000_000},
                "learner": {"state": "training", "round": 4, "progress": 0.35},
                "alerts": list(self.alerts)}

    def latest_jpeg(self) -> bytes | None:
        return self.jpeg

    def live_frame(self, seq: int | None = None) -> LiveFrame | None:
        with self.lock:
            if seq is None:
                return self.live_frames[-1] if self.live_frames else None
            return next((f for f in self.live_frames if f.seq == seq), None)

    def models(self) -> list[dict]:
        with self.lock:  # as model_rows marks it: the version a rollback goes back to
            target = self.history[-1] if self.history else None
            return [dict(v, rollback_target=v["version"] == target) for v in self.versions]

    def promote(self, version: str, expected: str | None = None) -> dict:
        with self.lock:
            self.promote_from.append(expected)
            current = next((v["version"] for v in self.versions if v["status"] == "current"), None)
            if expected is not None and expected != current:
                raise ConflictError(f"the current version is {current}, not {expected}")
            target = next((v for v in self.versions if v["version"] == version), None)
            if target is None:
                raise NotFoundError(f"no model version {version}")
            if target["status"] == "current":
                raise ConflictError(f"{version} is already current")
            if target["status"] == "rejected" and version == "v0099":
                raise RegistryError("refused")
            for v in self.versions:
                if v["status"] == "current":
                    v["status"] = "promoted"
                    self.history.append(v["version"])
            target["status"] = "current"
            self.promoted.append(version)
            return {"current": version}

    def rollback(self, expected: str | None = None) -> dict:
        with self.lock:
            self.rollback_from.append(expected)
            current = next((v["version"] for v in self.versions if v["status"] == "current"), None)
            if expected is not None and expected != current:
                raise ConflictError(f"the current version is {current}, not {expected}")
            if not self.history:
                raise ConflictError("nothing to roll back to")
            previous = self.history.pop()
            for v in self.versions:
                if v["status"] == "current":
                    v["status"] = "promoted"
                if v["version"] == previous:
                    v["status"] = "current"
            self.rollbacks += 1
            return {"current": previous}

    def pending(self) -> list[dict]:
        with self.lock:
            if self.fail_pending is not None:
                raise self.fail_pending
            return [dict(q) for q in self.queue]

    def label_image(self, item_id: str) -> Path:
        if any(a["id"] == item_id for a in self.answers + self.stored):
            raise ConflictError(f"label item '{item_id}' was already answered")
        if not any(q["id"] == item_id for q in self.queue):
            raise NotFoundError(f"no queued item {item_id}")
        if item_id in self.broken_images:
            raise NotFoundError(f"label item '{item_id}': its image is missing or unreadable")
        time.sleep(self.slow_images.get(item_id, 0.0))
        return self.folder / f"{item_id}.jpg"

    def answer(self, item_id: str, boxes: list[dict], skip: bool) -> dict:
        with self.lock:
            if self.fail_answers:
                raise self.fail_answers.pop(0)
            if any(a["id"] == item_id for a in self.answers):
                raise ConflictError(f"item {item_id} already answered")
            if not any(q["id"] == item_id for q in self.queue):
                raise NotFoundError(f"no queued item {item_id}")
            for box in boxes:
                x1, y1, x2, y2 = box["xyxy"]
                if x2 <= x1 or y2 <= y1:
                    raise LabelError(f"empty box {box['xyxy']}")
            self.answers.append({"id": item_id, "boxes": boxes, "skip": skip})
            self.queue = [q for q in self.queue if q["id"] != item_id]
            if self.decline_answers and not skip:  # the memory's policy declined the sample
                return {"id": item_id, "sample": None, "boxes": len(boxes)}
            if not skip:
                self.stored.insert(0, {
                    "id": item_id, "sample": self.next_sample, "ts_s": time.time(),
                    "held_out": False, "width": 640, "height": 480, "corrected": 0,
                    "boxes": [{"class": b["class"], "xyxy": list(b["xyxy"])} for b in boxes]})
                self.next_sample += 1
            return {"id": item_id, "stored": not skip, "boxes": len(boxes),
                    **(self.answer_notes if not skip else {})}

    def answered_list(self) -> list[dict]:
        with self.lock:
            return [dict(a, boxes=[dict(b) for b in a["boxes"]]) for a in self.stored]

    def _stored(self, item_id: str) -> dict:
        entry = next((a for a in self.stored if a["id"] == item_id), None)
        if entry is not None:
            return entry
        if item_id in self.withdrawals:
            raise ConflictError(f"label item '{item_id}' was withdrawn: its sample was removed "
                                "from the memory")
        if any(q["id"] == item_id for q in self.queue):
            raise ConflictError(f"label item '{item_id}' has not been answered yet; answer it first")
        raise NotFoundError(f"no answered label item '{item_id}'")

    def answered_image(self, item_id: str) -> Path:
        with self.lock:
            self._stored(item_id)
        return self.folder / f"{item_id}.jpg"

    def correct(self, item_id: str, boxes: list[dict]) -> dict:
        with self.lock:
            if self.fail_changes:
                raise self.fail_changes.pop(0)
            entry = self._stored(item_id)
            for box in boxes:
                x1, y1, x2, y2 = box["xyxy"]
                if x2 <= x1 or y2 <= y1:
                    raise LabelError(f"empty box {box['xyxy']}")
            self.corrections.append({"id": item_id, "boxes": boxes})
            added = sorted({b["class"] for b in boxes} - set(self.class_names))
            self.class_names.extend(added)
            replaced = entry["sample"]
            entry.update(sample=self.next_sample, corrected=entry["corrected"] + 1,
                         boxes=[{"class": b["class"], "xyxy": list(b["xyxy"])} for b in boxes])
            self.next_sample += 1
            return {"id": item_id, "sample": entry["sample"], "replaced": replaced,
                    "boxes": len(boxes), "classes_added": added,
                    "class_ids": sorted({self.class_names.index(b["class"]) for b in boxes})}

    def withdraw(self, item_id: str) -> dict:
        with self.lock:
            if self.fail_changes:
                raise self.fail_changes.pop(0)
            entry = self._stored(item_id)
            self.stored.remove(entry)
            self.withdrawals.append(item_id)
            return {"id": item_id, "withdrawn": True, "sample": entry["sample"],
                    "snapshot_copies": 1}

    def classes(self) -> list[dict]:
        rows = [{"id": i, "name": n, "samples": 120 - 25 * i, "first_seen": "2026-11-28T09:00:00Z",
                 **({"merged_into": self.merges[n]} if n in self.merges else {})}
                for i, n in enumerate(self.class_names)]
        return rows + [{"id": len(rows) + k, "name": n, "samples": 0, "merged_into": rows[0]["name"],
                        "first_seen": "2026-11-28T09:00:00Z"} for k, n in enumerate(self.merged_names)]

    def forgetting(self) -> dict:
        rows = ["v0001", "v0002", "v0003", "v0004"]
        cols = self.class_names
        values = [[0.61, 0.65, None, None], [0.64, 0.69, 0.38, None],
                  [0.52, 0.71, 0.40, None], [0.60, 0.70, 0.45, 0.22]]
        values = [(row + [0.3] * len(cols))[:len(cols)] for row in values]
        per_class = {c: [r[j] for r in values] for j, c in enumerate(cols)}
        bins = []
        for k in range(10):
            lo, hi = k / 10, (k + 1) / 10
            conf = lo + 0.05
            if not self.detections_held_out:
                bins.append({"lo": lo, "hi": hi, "confidence": None, "precision": None, "count": 0})
                continue
            bins.append({"lo": lo, "hi": hi, "confidence": conf,
                         "precision": max(0.0, min(1.0, conf - 0.08 + 0.02 * (k % 3))),
                         "count": 40 + 13 * k})
        from edgecl.runtime.console import bounded_forgetting  # as the runtime's hook does

        matrix, per_class = bounded_forgetting({"rows": rows, "columns": cols, "values": values,
                                                "kind": "classes"}, per_class)
        return {"matrix": matrix, "per_class_ap": per_class, "unmeasured": list(self.unmeasured),
                "reliability": {"bins": bins, "protocol": {"version": "v0002", "dece": 0.052,
                                                           "iou": 0.5, "bins": 10,
                                                           "min_conf": 0.3, "samples": 512}},
                "summary": {"model_version": "v0004", "round": 4, "kind": "classes",
                            "acc": 0.4931, "bwt": -0.0133, "mean_forgetting": 0.0267}}

    def hooks(self) -> ConsoleHooks:
        """The hooks, as the runtime would hand them to :func:`edgecl.web.create_app`."""
        return ConsoleHooks(health=self.health, metrics=self.metrics, live=self.live,
                            latest_jpeg=self.latest_jpeg, models=self.models,
                            promote=self.promote, rollback=self.rollback, pending=self.pending,
                            label_image=self.label_image, answer=self.answer,
                            answers=self.answered_list, answered_image=self.answered_image,
                            correct=self.correct, withdraw=self.withdraw,
                            classes=self.classes, forgetting=self.forgetting,
                            live_frame=self.live_frame)
