"""A swapped-out model is freed and its memory handed back to the system (glibc's malloc_trim).

A field soak's runtime grew about 8 MB of resident memory per hot swap of an ONNX model and
never gave it back: the closed sessions were freed, but glibc kept their memory in its heaps.
The resident-memory figures are in ``edgecl.models.base.release_freed_memory``'s docstring;
these tests check the mechanism (what is freed, and that the trim follows), not memory sizes.
"""

from __future__ import annotations

import gc
import os
import weakref
from pathlib import Path

import numpy as np
import pytest

from edgecl.models import base
from edgecl.models.base import Backend, InferenceOptions, ModelMeta

IMGSZ = 64


class FakeTrim:
    """Stands in for glibc's ``malloc_trim``; records each call and what was still alive."""

    def __init__(self, watched=None):
        self.calls: list[int] = []
        self.alive_at_call: list[bool] = []
        self.watched = watched

    def __call__(self, pad_bytes: int) -> int:
        self.calls.append(pad_bytes)
        self.alive_at_call.append(self.watched is not None and self.watched() is not None)
        return 1


class Session:
    """Stands in for a runtime's session (only its lifetime matters)."""


class FakeBackend(Backend):
    """A backend whose model is a :class:`Session`, dropped on close like the real ones."""

    name = "fake"
    suffixes = (".fake",)

    def __init__(self, opts=None):
        super().__init__(opts)
        self._session = None

    def _load(self, path: Path) -> ModelMeta:
        self._session = Session()
        return ModelMeta(path=str(path), backend=self.name, names={0: "a"}, imgsz=IMGSZ)

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        return np.zeros((batch.shape[0], 5, 21), np.float32)

    def close(self) -> None:
        self._session = None
        super().close()


@pytest.fixture()
def fake_trim(monkeypatch):
    trim = FakeTrim()
    monkeypatch.setattr(base, "_malloc_trim", lambda: trim)
    return trim


def test_closing_a_loaded_backend_trims_once_after_its_session_is_freed(tmp_path, fake_trim):
    model = tmp_path / "m.fake"
    model.write_bytes(b"x")
    backend = FakeBackend().load(model)
    fake_trim.watched = weakref.ref(backend._session)

    backend.close()
    backend.close()  # closing again has nothing more to give back

    assert fake_trim.calls == [0]
    assert fake_trim.alive_at_call == [False]


def test_closing_a_backend_that_never_loaded_does_not_trim(fake_trim):
    FakeBackend().close()

    assert fake_trim.calls == []


def test_no_trim_where_the_c_library_is_not_glibc(monkeypatch):
    def not_glibc(name):
        raise ValueError(f"unrecognized configuration name {name!r}")

    base._malloc_trim.cache_clear()
    try:
        monkeypatch.setattr(os, "confstr", not_glibc)
        assert base._malloc_trim() is None
        assert base.release_freed_memory() is False
    finally:
        monkeypatch.undo()
        base._malloc_trim.cache_clear()


@pytest.mark.skipif(not hasattr(os, "confstr") or "CS_GNU_LIBC_VERSION" not in os.confstr_names,
                    reason="glibc only")
def test_glibc_malloc_trim_is_found_and_runs():
    base._malloc_trim.cache_clear()
    assert base._malloc_trim() is not None
    assert base.release_freed_memory("nothing") in (True, False)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from edgecl.models.export import export_onnx
    from edgecl.ultra import build_detection_model

    names = {0: "a", 1: "b"}
    out = tmp_path_factory.mktemp("swap-memory") / "model.onnx"
    return export_onnx(build_detection_model(len(names), names=names), out, imgsz=IMGSZ, names=names)


def test_watcher_frees_a_retired_onnx_model_before_trimming(tmp_path, tiny_onnx, monkeypatch):
    from edgecl.models.registry import Registry
    from edgecl.runtime.watcher import ModelWatcher

    registry = Registry(tmp_path / "models")
    version = registry.stage({"model.onnx": tiny_onnx}, {"parent": None})
    registry.promote(version)
    watcher = ModelWatcher(registry, InferenceOptions(threads=1), current_version=None,
                           warmup_runs=1)
    ready = watcher.load_version(version)
    assert ready is not None and ready.backend.name == "onnxruntime"
    backend_ref = weakref.ref(ready.backend)
    trim = FakeTrim(watched=weakref.ref(ready.backend._session))
    monkeypatch.setattr(base, "_malloc_trim", lambda: trim)

    watcher.retire(ready.backend)  # what the inference thread does at a swap
    del ready
    watcher.stop()  # closes what was retired, as the loader thread does on its next poll

    assert trim.calls == [0]
    assert trim.alive_at_call == [False]  # the session was gone when the heap was trimmed
    assert backend_ref() is None  # nothing keeps the closed backend: freed without gc
    gc.collect()
    assert backend_ref() is None
