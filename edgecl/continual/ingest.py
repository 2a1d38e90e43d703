"""Store imported labelled images in the replay memory (``edgecl labels import``).

Each :class:`~edgecl.data.importers.ImportItem` becomes one memory sample with
``origin=import``; its class names map onto the device's class registry: the same name,
else the one registry name that differs only in case and separators (``Car`` -> ``car``),
else a new class. ``memory.add`` is atomic per sample, so an
import killed half-way leaves whole samples only; a class registered just before the kill
simply has no sample yet.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Iterable, Protocol

from edgecl.continual.memory import Sample
from edgecl.data.importers import ImportItem, ImportTally, Skip
from edgecl.errors import LabelError, ReplayMemoryError
from edgecl.frames import LabelOrigin

log = logging.getLogger(__name__)


class ClassNames(Protocol):
    """What :func:`ingest` needs of ``edgecl.models.classes.ClassRegistry``."""

    def names(self) -> dict[int, str]:
        """Class id -> name."""

    def id_for(self, name: str, create: bool = True) -> int:
        """The id of a class name (a new one is added when ``create``)."""


@dataclass
class ImportReport:
    """What an import did (``--json`` prints :meth:`to_dict`).

    Attributes:
        tally: counts of imported and skipped files (see :class:`ImportTally`).
        classes_added: class names new to the registry, in the order they were added.
        classes_matched: imported name -> the registry's name it was matched to, where they
            differ only in case or separators (``Car`` -> ``car``, ``OtherVehicle`` ->
            ``other_vehicle``).
        declined: images the memory's insertion policy declined (counted as skipped too).
    """

    tally: ImportTally = field(default_factory=ImportTally)
    classes_added: list[str] = field(default_factory=list)
    classes_matched: dict[str, str] = field(default_factory=dict)
    declined: int = 0

    def to_dict(self) -> dict:
        """``{"imported", "skipped", "reasons", "classes_added", "classes_matched",
        "ignored_regions", "boxes"}``."""
        return {**self.tally.to_dict(), "classes_added": list(self.classes_added),
                "classes_matched": dict(self.classes_matched)}


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _class_ids(item: ImportItem, classes: ClassNames, report: ImportReport) -> dict[str, int]:
    ids = {}
    known = classes.names()
    exact = {n: i for i, n in known.items()}
    loose: dict[str, list[int]] = {}
    for i, n in known.items():
        loose.setdefault(_norm(n), []).append(i)
    for name in dict.fromkeys(item.names):
        if name in exact:
            ids[name] = exact[name]
        elif len(loose.get(_norm(name), [])) == 1:  # "Car" -> the registry's "car"
            ids[name] = loose[_norm(name)][0]
            report.classes_matched[name] = known[ids[name]]
        else:
            ids[name] = classes.id_for(name, create=True)
            report.classes_added.append(name)
            exact[name] = ids[name]
            known[ids[name]] = name
            loose.setdefault(_norm(name), []).append(ids[name])
    return ids


def ingest(items: Iterable[ImportItem | Skip], memory, classes: ClassNames,
           origin: LabelOrigin = LabelOrigin.IMPORT, task: str = "stream") -> ImportReport:
    """Store imported images in the replay memory, mapping class names onto the registry.

    Args:
        items: what :func:`edgecl.data.importers.iter_labelled` yields.
        memory: the open :class:`~edgecl.continual.memory.ReplayMemory`.
        classes: the class registry (``names()``, ``id_for(name, create=True)``).
        origin: the samples' label origin (``import``).
        task: the samples' task name (``stream`` by default, like a camera's frames: the
            monitor and the gate then judge every class on its own, mixed with operator labels).

    Returns:
        The :class:`ImportReport`. A sample the memory refuses (bad labels, too large) or
        declines (insertion policy) is counted as skipped with its reason.

    Raises:
        StorageError: the memory cannot write (full disk, read-only); every sample stored
            before stays stored.
    """
    report = ImportReport()
    bound = set((memory.class_names() or {}).keys())
    for item in items:
        if isinstance(item, Skip):
            report.tally.skip(item.reason, item.message)
            log.warning("skipped %s", item.message)
            continue
        try:
            ids = _class_ids(item, classes, report)
        except LabelError as exc:
            report.tally.skip("bad class name", f"{item.source}: {exc}")
            continue
        if not set(ids.values()) <= bound:  # the memory bounds class ids by the names it holds
            names = classes.names()
            memory.set_class_names(names)
            bound = set(names)
        sample = Sample(image=item.image, labels=item.yolo_labels(ids), task=task,
                        source=str(item.source), origin=LabelOrigin(origin))
        try:
            sample_id = memory.add(sample)
        except (LabelError, ReplayMemoryError) as exc:
            report.tally.skip("refused by memory", f"{item.source}: {exc}")
            log.warning("skipped %s: %s", item.source, exc)
            continue
        if sample_id is None:
            report.declined += 1
            report.tally.skip("declined by memory policy", f"{item.source}: declined by the insertion policy")
            continue
        report.tally.done(item)
    return report
