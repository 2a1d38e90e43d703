"""Test doubles for the labelling pipeline: a class registry, a replay memory, frames."""

from types import SimpleNamespace

import numpy as np

from edgecl.errors import LabelError, NotFoundError
from edgecl.frames import Detections, Frame


class FakeClasses:
    """Class registry with the contract of edgecl.models.classes.ClassRegistry (in memory)."""

    def __init__(self, names=None):
        self._names = dict(names or {0: "car"})

    def names(self):
        return dict(self._names)

    def id_for(self, name, create=True):
        for cid, known in self._names.items():
            if known == name:
                return cid
        if not create:
            raise NotFoundError(f"unknown class '{name}'")
        cid = max(self._names, default=-1) + 1
        self._names[cid] = name
        return cid

    def former_names(self):
        return {}

    def check_ids(self, ids, where, names=None):
        for cid in ids:
            if int(cid) not in (self._names if names is None else names):
                raise LabelError(f"{where}: class id {int(cid)} is not in the class registry")


class FakeMemory:
    """Keeps samples in a list; ``fail`` makes add raise it (a storage fault)."""

    def __init__(self):
        self.samples = []
        self.fail = None
        self.attempts = 0
        self.names = None

    def sync_class_names(self, names):
        self.names = dict(names)

    def add(self, sample):
        self.attempts += 1
        if self.fail is not None:
            raise self.fail
        self.samples.append(sample)
        return len(self.samples)

    def records(self, ids=None, held_out=None, task=None):
        return [SimpleNamespace(id=i + 1, source=s.source, origin=s.origin, held_out=False)
                for i, s in enumerate(self.samples) if ids is None or i + 1 in ids]

    def ids(self, held_out=None, task=None):
        return list(range(1, len(self.samples) + 1))

    def change_signature(self):
        return len(self.samples), len(self.samples)

    def evicted_before(self, digest):
        return False  # this fake never evicts

    def close(self):
        pass


def textured(seed, shape=(100, 200, 3)):
    """A random-texture BGR image (each seed a different scene)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (shape[0] // 10, shape[1] // 10, 3), dtype=np.uint8)
    return np.kron(small, np.ones((10, 10, 1), np.uint8))


def dets(scores, classes=None, box=(20, 10, 60, 50)):
    """Detections with the same box and the given scores (class 0 unless given)."""
    n = len(scores)
    cls = np.zeros(n, np.int64) if classes is None else np.asarray(classes, np.int64)
    return Detections(np.tile(np.array([box], np.float32), (n, 1)),
                      np.array(scores, np.float32), cls)


def result(image, detections, frame_id=0, labels=None, labelling=None):
    """A loop result (only what sinks read; ``labelling``: detections down to the band)."""
    return SimpleNamespace(frame=Frame(image, frame_id, float(frame_id), "cam://0", labels=labels),
                           detections=detections, labelling=labelling)
