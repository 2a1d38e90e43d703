"""Test doubles for the loop: a list-backed source and a backend with a fixed delay."""

import time

import numpy as np

from edgecl.frames import Detections, Frame
from edgecl.models.base import Backend, ModelMeta


class ListSource:
    """Yields ``n`` small frames, then ends."""

    is_live = False

    def __init__(self, n, shape=(48, 64, 3)):
        self.n = n
        self.shape = shape
        self.i = 0

    def open(self):
        pass

    def read(self):
        if self.i >= self.n:
            return None
        self.i += 1
        return Frame(np.zeros(self.shape, np.uint8), self.i - 1, time.time(), "list://")

    def close(self):
        pass


class SleepBackend(Backend):
    """Returns one detection whose class is ``tag`` after sleeping ``delay_s``."""

    name = "fake"

    def __init__(self, tag=0, delay_s=0.005):
        super().__init__()
        self.tag = tag
        self.delay_s = delay_s
        self._meta = ModelMeta(path="fake", backend="fake", names={0: "a", 1: "b"}, imgsz=32)
        self.closed = False

    def _load(self, path):
        return self._meta

    def _forward(self, batch):
        raise NotImplementedError

    def infer(self, images):
        time.sleep(self.delay_s)
        return [Detections(np.array([[1, 2, 3, 4]], np.float32), np.array([0.9], np.float32),
                           np.array([self.tag])) for _ in images]

    def close(self):
        self.closed = True


class CollectSink:
    """Keeps every result."""

    def __init__(self):
        self.results = []

    def write(self, result):
        self.results.append(result)

    def close(self):
        pass
