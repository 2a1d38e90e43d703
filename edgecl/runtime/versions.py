"""What the runtime derives from the version it serves: the calibrator (calibrated scores and
per-class pseudo-label thresholds) and the previous version as a detector (the
``disagreement`` selection policy). Each is cached per serving version and reloaded only when
the loop swaps to another one.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from edgecl.errors import EdgeclError

log = logging.getLogger(__name__)


class CalibrationCache:
    """The serving version's post-hoc calibrator, reloaded when the version changes.

    Args:
        registry: the model registry.
        serving_version: ``callable() -> str | None``, the version the loop serves now.
        target_precision: ``labels.pseudo_precision``.
        min_true_positives: ``labels.pseudo_min_true_positives``: a class whose calibrator was
            fitted on fewer true positives gets no pseudo-labels.
    """

    def __init__(self, registry, serving_version: Callable[[], str | None], target_precision: float,
                 min_true_positives: int = 0):
        self.registry = registry
        self.serving_version = serving_version
        self.target_precision = target_precision
        self.min_true_positives = min_true_positives
        self._version: str | None = None
        self._calibrator = None
        self._thresholds: dict[int, float | None] = {}
        self._lock = threading.Lock()
        self.unusable = ""  # why the serving version's calibrator file is not used ("": none)

    def _refresh(self) -> None:
        version = self.serving_version()
        if version == self._version:
            return
        from edgecl.calibration.posthoc import CALIBRATOR_FILE, Calibrator, CalibratorFileError

        calibrator, unusable = None, ""
        if version is not None and version in set(self.registry.versions()):
            path = self.registry.root / version / CALIBRATOR_FILE
            if path.is_file() and self._damaged(version, CALIBRATOR_FILE):
                unusable = f"{path} does not match its manifest sha256"
                log.warning("version %s: calibrator not used (%s); no pseudo-labels until a "
                            "round fits a new one", version, unusable)
            elif path.is_file():
                try:
                    calibrator = Calibrator.load(path)
                except CalibratorFileError as exc:
                    unusable = str(exc)
                    log.warning("version %s: calibrator not used (%s)", version, exc)
        self._version, self._calibrator, self.unusable = version, calibrator, unusable
        self._thresholds = (calibrator.thresholds_at_precision(self.target_precision,
                                                               self.min_true_positives)
                            if calibrator is not None else {})

    def _damaged(self, version: str, name: str) -> bool:
        """Whether a file the version's manifest names no longer matches its sha256."""
        from edgecl.errors import RegistryError

        try:
            named = name in (self.registry.manifest(version).get("files") or {})
        except RegistryError:  # an unreadable manifest: the version's own check reports it
            return False
        return named and not self.registry.file_intact(version, name)

    @property
    def calibrator(self):
        """The serving version's :class:`~edgecl.calibration.posthoc.Calibrator`, or ``None``."""
        with self._lock:
            self._refresh()
            return self._calibrator

    def thresholds(self, known: set[int]) -> dict[int, float | None]:
        """Per-class raw-score thresholds at the target precision, for the pseudo-labeler.

        A class the calibrator gives no threshold (it never reaches the target precision), and
        every class while the serving version has no calibrator, maps to ``None``: no
        pseudo-labels for it.

        Args:
            known: class ids the serving model has.

        Returns:
            class id -> threshold or ``None``.
        """
        with self._lock:
            self._refresh()
            return {c: self._thresholds.get(c) for c in known}


class PreviousVersionDetector:
    """The serving version's parent as a detector, run on at most one frame per interval.

    The ``disagreement`` policy compares it with the serving model; running a second model on
    every frame would halve the sink thread's throughput, so frames in between get ``None``
    (the policy then scores 0).

    Args:
        registry: the model registry.
        serving_version: ``callable() -> str | None``.
        opts: inference options for the parent's backend.
        min_interval_s: least seconds between two parent inferences.
        clock: monotonic clock (tests pass a fake).
    """

    def __init__(self, registry, serving_version: Callable[[], str | None], opts,
                 min_interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.registry = registry
        self.serving_version = serving_version
        self.opts = opts
        self.min_interval_s = min_interval_s
        self.clock = clock
        self._for_version: str | None = None
        self._backend = None
        self._last_s = float("-inf")

    def _parent_backend(self):
        version = self.serving_version()
        if version == self._for_version:
            return self._backend
        self.close()
        self._for_version = version
        try:
            versions = set(self.registry.versions())  # a model served from a file has none
            parent = self.registry.manifest(version).get("parent") if version in versions else None
            if parent and parent in versions:
                from edgecl.models.backends import load_backend

                self._backend = load_backend(self.registry.model_path(parent), self.opts,
                                             warmup_runs=1)
        except EdgeclError as exc:
            log.warning("previous version of %s not loaded for the disagreement policy: %s",
                        version, exc)
        return self._backend

    def __call__(self, image):
        """Detections of the previous version on ``image`` (BGR), or ``None`` when skipped."""
        now = self.clock()
        if now - self._last_s < self.min_interval_s:
            return None
        backend = self._parent_backend()
        if backend is None:
            return None
        self._last_s = now
        return backend.infer([image])[0]

    def close(self) -> None:
        """Release the parent's backend."""
        if self._backend is not None:
            self._backend.close()
        self._backend = None


class TimedCache:
    """A value recomputed at most every ``ttl_s`` seconds (e.g. a database query per frame).

    Args:
        compute: ``callable() -> value``.
        ttl_s: seconds a value stays fresh.
        default: returned when ``compute`` raises an :class:`EdgeclError` or ``OSError``.
    """

    def __init__(self, compute: Callable, ttl_s: float, default, clock=time.monotonic):
        self.compute = compute
        self.ttl_s = ttl_s
        self.default = default
        self.clock = clock
        self._value = default
        self._at = float("-inf")

    def invalidate(self) -> None:
        """Make the next call recompute the value (the data changed)."""
        self._at = float("-inf")

    def __call__(self):
        """The cached value, recomputed when stale."""
        now = self.clock()
        if now - self._at >= self.ttl_s:
            self._at = now
            try:
                self._value = self.compute()
            except (EdgeclError, OSError) as exc:
                log.warning("cached value not refreshed: %s", exc)
                self._value = self.default
        return self._value
