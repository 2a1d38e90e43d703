"""Loads newly promoted model versions aside, so the inference thread can swap between frames."""

from __future__ import annotations

import collections
import logging
import queue
import threading
from dataclasses import dataclass

from edgecl.errors import EdgeclError
from edgecl.models.base import Backend, InferenceOptions
from edgecl.models.registry import MODEL_PREFERENCE, Registry

log = logging.getLogger(__name__)

# Refused versions remembered (with their reasons) so that they are not reloaded every poll.
MAX_REFUSED = 32


@dataclass(frozen=True)
class ReadyModel:
    """A backend loaded and warmed in the loader thread, waiting to be swapped in."""

    version: str
    backend: Backend


class ModelWatcher:
    """Watches the registry's ``current`` pointer in a loader thread.

    When it changes, the new version is verified, loaded and warmed up aside; the inference
    thread then takes it with :meth:`take_ready` between two frames. A corrupt or unloadable
    version is refused (logged once, remembered in :attr:`refused`, the last :data:`MAX_REFUSED`,
    counted in :attr:`refusals`) and the loop keeps its model.

    Args:
        registry: the model registry.
        opts: inference options for new backends.
        current_version: the version the loop runs now (not reloaded).
        poll_s: how often to check the pointer.
        warmup_runs: dummy passes before a backend is offered.
        prefer: model-file suffixes in order of preference (a version's manifest ``serve``
            entry wins over all but ``.engine``; see :meth:`Registry.model_path`).
        check: optional ``callable(version, meta) -> str | None``: a warning to log about a
            loaded version (it is swapped in all the same), e.g. a labels setting it defeats.
    """

    def __init__(self, registry: Registry, opts: InferenceOptions, current_version: str | None,
                 poll_s: float = 0.5, warmup_runs: int = 2,
                 prefer: tuple[str, ...] = MODEL_PREFERENCE, check=None):
        self.registry = registry
        self.check = check
        self.opts = opts
        self.poll_s = poll_s
        self.warmup_runs = warmup_runs
        self.prefer = prefer
        self.refused: collections.OrderedDict[str, str] = collections.OrderedDict()
        self.refusals = 0  # versions refused since start (``refused`` keeps the last few)
        self.pointer: str | None = current_version  # what ``current`` named at the last poll
        self._seen = current_version
        self._ready: queue.Queue[ReadyModel] = queue.Queue(maxsize=1)
        self._retired: queue.Queue[Backend] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the loader thread."""
        self._thread = threading.Thread(target=self._run, name="edgecl-loader", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the loader thread and free anything it holds."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._close_retired()
        while not self._ready.empty():
            self._ready.get_nowait().backend.close()

    def take_ready(self) -> ReadyModel | None:
        """Return a loaded model waiting to be swapped in, without blocking."""
        try:
            return self._ready.get_nowait()
        except queue.Empty:
            return None

    def retire(self, backend: Backend) -> None:
        """Hand a swapped-out backend back; it is closed in the loader thread."""
        self._retired.put(backend)

    def _close_retired(self) -> None:
        while not self._retired.empty():
            self._retired.get_nowait().close()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._close_retired()
            version = self.pointer = self.registry.current()
            if version is None or version == self._seen or version in self.refused:
                continue
            ready = self.load_version(version)
            if ready is None:
                continue
            self._seen = version
            self._offer(ready)

    def _offer(self, ready: ReadyModel) -> None:
        """Hand a loaded model to the inference thread, waiting while the previous one is
        still untaken; on stop the model is closed instead (stop never waits on a put)."""
        while not self._stop.is_set():
            try:
                self._ready.put(ready, timeout=0.2)
                return
            except queue.Full:
                continue
        ready.backend.close()

    def load_version(self, version: str) -> ReadyModel | None:
        """Verify, load and warm one version; on failure record the reason and return None.

        Args:
            version: registry version name.

        Returns:
            The ready model, or ``None`` when refused.
        """
        try:
            problems = self.registry.verify(version, essential_only=True)
            if problems:
                raise EdgeclError(problems[0])
            backend = self.registry.load_serving(version, self.opts, self.warmup_runs, self.prefer)
        except Exception as exc:  # any load failure refuses the version, never the loader thread
            reason = str(exc) if isinstance(exc, EdgeclError) else f"{type(exc).__name__}: {exc}"
            self.refused[version] = reason
            self.refusals += 1
            while len(self.refused) > MAX_REFUSED:  # bounded: the oldest refusals are forgotten
                self.refused.popitem(last=False)
            log.error("refusing model version %s: %s; keeping the current model", version, reason)
            return None
        warning = self.check(version, backend.meta) if self.check is not None else None
        if warning:
            log.warning("model version %s: %s", version, warning)
        log.info("model version %s loaded and warmed; swapping at the next frame", version)
        return ReadyModel(version=version, backend=backend)
