"""Store imported labelled images in the replay memory (``edgecl labels import``).

Each :class:`~edgecl.data.importers.ImportItem` becomes one memory sample with
``origin=import``; its class names map onto the device's class registry: the same name,
else the one registry name that differs only in case and separators (``Car`` -> ``car``),
else a new class. ``memory.add`` is atomic per sample, so an
import killed half-way leaves whole samples only; a class registered just before the kill
simply has no sample yet.

Importing twice. An image already in the memory is skipped and counted under the reason
``already in memory``: running an import again, or importing a folder that overlaps an earlier
one, adds only the new images, and an image the device stored itself (streamed from a
``dir://`` folder, or answered by an operator) and later labelled elsewhere is not stored a
second time (two copies let one serve the held-out slice while the other is trained on). Every
route stores a sample with the :func:`edgecl.data.images.pixels_hash` of its decoded image (an
operator's answer: of the frame as queued, not of the lossy JPEG the queue keeps), and an
import looks up that hash and the :func:`edgecl.data.images.content_hash` of the file's bytes
(what imports stored before), both before any class is registered; a copy the device
pseudo-labelled is replaced by the imported labels instead (in one transaction of the
memory). A ``dir://`` source decodes images as the import does
(:func:`edgecl.data.images.read_image`: EXIF orientation, BGR, 16-bit stretched by its own
range, greyscale to 3 channels, every format), so their pixels match; frames of a camera or
a video have no file, and match only an import of their exact pixels (a lossless export such
as PNG; a JPEG written from them decodes to other pixels).
(Samples stored before content hashes were recorded carry none, so they are not recognised;
an evicted sample is no longer in memory and comes back; a file imported before this rule
carries its bytes' hash only, which the device's stream does not know.)

Unnamed classes. A YOLO folder without class names gives ``class_<id>`` names with the
folder's own ids (:attr:`ImportItem.dataset_ids`): where the device's class registry already
has that id, its name is used (a folder exported from, or labelled for, this device);
otherwise ``class_<id>`` stays and is listed in ``unnamed_classes`` (rename it later with
``edgecl classes rename``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol, Sequence

import numpy as np

from edgecl.continual.memory import STREAM_TASK, DuplicateSampleError, Sample, held_copy
from edgecl.continual.memory.admission import plan_import_held_out
from edgecl.continual.memory.records import check_image, check_labels
from edgecl.data.class_names import (close_class_names, is_ignore_name, loose_class_name,
                                     standing_names, unnamed_class_target)
from edgecl.data.images import pixels_hash
from edgecl.data.labels import SAME_BOX_PX
from edgecl.data.importers import (ONLY_IGNORED, SAME_IMAGE_TWICE, ImportItem, ImportTally, Skip,
                                   only_ignored_skip, same_class_as)
from edgecl.data.splits import frame_name, sequence_blocks
from edgecl.errors import LabelError, ReplayMemoryError, StorageError
from edgecl.frames import LabelOrigin

log = logging.getLogger(__name__)


class ClassNames(Protocol):
    """What :func:`ingest` needs of ``edgecl.models.classes.ClassRegistry``."""

    def names(self) -> dict[int, str]:
        """Class id -> name."""

    def id_for(self, name: str, create: bool = True, loose: bool = False) -> int:
        """The id of a class name (a new one is added when ``create``; ``loose``: a name spelt
        with other separators is the one class it matches)."""

    def label_ids(self) -> dict[str, int]:
        """Name -> the id a label with that name gets (a merged class's: the class it was
        merged into)."""

    def add(self, names) -> list[str]:
        """Add new names, in order, each with the next id; return those added."""


@dataclass
class ImportReport:
    """What an import did (``--json`` prints :meth:`to_dict`).

    Attributes:
        tally: counts of imported and skipped files (see :class:`ImportTally`).
        classes_added: class names new to the registry, in the order they were added.
        similar_classes: added name -> the known name it may be a typo of
            (:func:`~edgecl.data.class_names.close_class_names`).
        classes_matched: imported name -> the registry's name it was matched to, where they
            differ only in case or separators (``Car`` -> ``car``, ``OtherVehicle`` ->
            ``other_vehicle``).
        declined: images the memory's insertion policy declined (counted as skipped too).
        evicted: stored samples (of this import or from before) that the memory evicted while
            it stored this import's, to keep its bounds (:attr:`ReplayMemory.evicted`): a
            sample imported and evicted is counted in ``imported`` and no longer in memory.
        duplicates: images already in the memory (counted as skipped, reason
            :data:`ALREADY_IN_MEMORY`, or :data:`HELD_WITH_OTHER_LABELS` where this import
            labels them otherwise).
        relabelled: images already in the memory whose stored labels were replaced by this
            import's (``relabel=True``; counted as imported).
        pseudo_replaced: pseudo-labelled samples of the same images that this import's
            verified labels replaced (counted as imported).
        unnamed_classes: ``class_<id>`` names of a dataset without class names that the
            registry had no class for, so they were kept (sorted by id).
        named_from_registry: ``class_<id>`` -> the registry's name for that id, where the
            dataset named no classes and the registry has the id.
        frame_sequences: numbered frame sequences the image names form
            (:func:`edgecl.data.splits.sequence_blocks`): their frames were drawn for the
            held-out slice in blocks of consecutive frames; 0 when each image was drawn alone.
        frames_per_block: the most frames of one such block (10, fewer in a small import so
            that it still holds some out); 0 when each image was drawn alone.
        held_out: images this import stored in the held-out slice and the memory still
            holds after it, per class they show, by the device's name for it (key ``""``: all
            of them), as the class-aware plan drew them
            (:func:`~edgecl.continual.memory.admission.plan_import_held_out`); one that the
            import's own later samples evicted is not counted (before, the summary named 7
            held out where the memory kept 2).
        stored_per_class: images this import stored, per class they show (the device's name;
            so are ``held_out``, ``units_per_class`` and the tally's ``boxes``).
        holdout_every: ``ceil(1 / memory.holdout_fraction)``: a class with this many images
            is due a held-out one (0: the memory holds none out).
        units_per_class: per class name, the units of the held-out plan (blocks of
            consecutive frames, single images) that show it.
        memory_counts: after the import, :func:`memory_class_counts` of the memory.
        held_out_empty: of those, the images that show no object.
        ids_used: each name of the import's boxes -> the class id it maps to, fixed at the
            name's first use: a ``classes rename`` while the import runs no longer sends the
            rest of its boxes to a new class of the old name.
        stored_ids: per stored image, its sample id, the class ids it shows and whether it
            was held out.
    """

    tally: ImportTally = field(default_factory=ImportTally)
    classes_added: list[str] = field(default_factory=list)
    similar_classes: dict[str, str] = field(default_factory=dict)
    classes_matched: dict[str, str] = field(default_factory=dict)
    declined: int = 0
    evicted: int = 0
    duplicates: int = 0
    unnamed_classes: list[str] = field(default_factory=list)
    named_from_registry: dict[str, str] = field(default_factory=dict)
    relabelled: int = 0
    pseudo_replaced: int = 0
    frame_sequences: int = 0
    frames_per_block: int = 0
    held_out: Counter = field(default_factory=Counter)
    stored_per_class: Counter = field(default_factory=Counter)
    holdout_every: int = 0
    units_per_class: Counter = field(default_factory=Counter)
    memory_counts: dict = field(default_factory=dict)
    held_out_empty: int = 0
    ids_used: dict[str, int] = field(default_factory=dict)
    stored_ids: list[tuple[int, frozenset[int], bool]] = field(default_factory=list)

    def in_memory(self, name: str) -> tuple[int, int]:
        """``(training images, held-out images)`` of a class this import stored, in the whole
        memory after it (this import's own counts where the memory cannot say)."""
        stored = self.stored_per_class.get(name, 0)
        held = self.held_out.get(name, 0)
        return self.memory_counts.get(loose_class_name(name), (stored - held, held))

    def unmeasured(self) -> list[str]:
        """Class names this import stored images of that the memory, after it, holds at least
        :attr:`holdout_every` images of (the held-out plan's own threshold) and none held out:
        rounds measure them only once held-out samples of them arrive another way (small
        imports, each below the threshold, are counted together)."""
        return sorted(name for name in self.stored_per_class
                      if name and self.holdout_every and not self.in_memory(name)[1]
                      and sum(self.in_memory(name)) >= self.holdout_every)

    def to_dict(self) -> dict:
        """``{"imported", "skipped", "reasons", "evicted", "relabelled", "pseudo_replaced",
        "classes_added",
        "similar_classes", "classes_matched", "ignored_regions", "empty_boxes", "boxes",
        "unnamed_classes", "named_from_registry", "frame_sequences", "frames_per_block",
        "held_out", "held_out_per_class", "unmeasured_classes"}`` (``unmeasured_classes``:
        :meth:`unmeasured`)."""
        return {**self.tally.to_dict(), "evicted": self.evicted, "relabelled": self.relabelled,
                "pseudo_replaced": self.pseudo_replaced,
                "frame_sequences": self.frame_sequences, "frames_per_block": self.frames_per_block,
                "held_out": self.held_out.get("", 0),
                "held_out_per_class": {name: self.held_out.get(name, 0)
                                       for name in sorted(self.stored_per_class) if name},
                "unmeasured_classes": self.unmeasured(),
                "classes_added": list(self.classes_added),
                "similar_classes": dict(self.similar_classes),
                "classes_matched": dict(self.classes_matched),
                "unnamed_classes": list(self.unnamed_classes),
                "named_from_registry": dict(self.named_from_registry)}


DECLINED_BY_POLICY = "declined by memory policy"
"""Skip reason of an image a full memory's insertion policy did not take (sampling, no fault)."""
ALREADY_IN_MEMORY = "already in memory"
"""Skip reason of an image whose content the memory already holds."""
HELD_WITH_OTHER_LABELS = "already in memory, with other labels"
"""Skip reason of an image the memory holds with labels other than this import's (a corrected
export imported again): ``relabel=True`` (``labels import --relabel``) replaces them."""
ANSWERED_ON_DEVICE = "already in memory, answered by an operator"
"""Skip reason of an image a person answered on the device with labels other than this
import's: kept even with ``relabel=True`` (``edgecl labels correct`` changes an answer)."""
TWICE_IN_IMPORT = SAME_IMAGE_TWICE
"""Skip reason of an image this import holds twice (a train and a valid copy): the first copy
decides (stored, kept or relabelled); the second neither adds a sample nor, with
``relabel=True``, relabels it (every run would otherwise flip it between the two)."""


def _name_unnamed(item: ImportItem, known: dict[int, str], report: ImportReport) -> ImportItem:
    """Give the ``class_<id>`` boxes of a dataset without names the registry's name for the id.

    ``known`` is the registry as it was before the import: a class this import created (say
    ``class_3``, given the next free id 0) never names the dataset's own id 0.
    """
    if item.dataset_ids is None:
        return item
    names, kept = [], []
    for k, (name, cid) in enumerate(zip(item.names, item.dataset_ids)):
        if cid in known and known[cid] != name and unnamed_class_target(cid, known) == cid:
            report.named_from_registry[name] = known[cid]
            if is_ignore_name(known[cid]):  # the device's DontCare: an ignore region, as the
                continue  # dataset's own name would be (before, stored as a class to learn)
            names.append(known[cid])
        else:  # no class with that id, the registry itself still calls it class_<id>, or
            # its class_<id> has another id (unnamed_class_target): found by this name
            names.append(name)
            if name not in report.unnamed_classes:
                report.unnamed_classes.append(name)
                report.unnamed_classes.sort(key=lambda n: int(n.rsplit("_", 1)[-1]))
        kept.append(k)
    return dataclasses.replace(item, names=names, xyxy=item.xyxy[kept], dataset_ids=None,
                               ignored=item.ignored + len(item.names) - len(kept))


def _class_ids(item: ImportItem, classes: ClassNames, report: ImportReport,
               known_before: list[str]) -> dict[str, int]:
    """Each box name's class id: the registry's (a merged class's name gives the class it was
    merged into; a name spelt otherwise, the class of that name), else a new class, pointed
    out when it is one slip from a class ``known_before`` the import (not from another class of
    the same dataset: ``bus`` beside ``bust`` is the dataset's own distinction). A name keeps
    the id it got at its first use in this import (:attr:`ImportReport.ids_used`), or the
    class that id was merged into since."""
    ids = {}
    known = [name for name in dict.fromkeys(item.names) if name in report.ids_used]
    merged = _merged_ids(classes) if known else {}
    for name in known:
        ids[name] = merged.get(report.ids_used[name], report.ids_used[name])
    if len(known) == len(set(item.names)):
        return ids
    exact = classes.label_ids()
    for name in dict.fromkeys(item.names):
        if name not in ids:
            ids[name] = report.ids_used[name] = _first_class_id(name, classes, report,
                                                                known_before, exact)
    return ids


def _first_class_id(name: str, classes: ClassNames, report: ImportReport,
                    known_before: list[str], exact: dict[str, int]) -> int:
    """The class id of a name this import has not used yet (see :func:`_class_ids`): the
    registry's (``exact``: :meth:`label_ids`), else a new class, noted in ``report``."""
    current = classes.names()
    same = None if name in exact else same_class_as(name, exact)
    if same is not None or name in exact:  # "Car" -> the registry's "car"; merged -> target
        class_id = exact[same or name]
        if current.get(class_id) != name:
            report.classes_matched[name] = current.get(class_id, same or name)
        return class_id
    class_id = classes.id_for(name, create=True, loose=True)  # looked up again: locked
    if class_id in current:  # the registry's own rule found it (one of two loose matches)
        report.classes_matched[name] = current[class_id]
        return class_id
    current = classes.names()
    if current.get(class_id, name) != name:  # another process added it in another spelling
        report.classes_matched[name] = current[class_id]
        return class_id
    report.classes_added.append(name)
    report.similar_classes.update(close_class_names([name], known_before))
    return class_id


def ingest(items: Iterable[ImportItem | Skip], memory, classes: ClassNames,
           origin: LabelOrigin = LabelOrigin.IMPORT, task: str = STREAM_TASK,
           relabel: bool = False, declared: Sequence[str] = (),
           progress: Callable[[int], None] | None = None) -> ImportReport:
    """Store imported images in the replay memory, mapping class names onto the registry.

    Args:
        items: what :func:`edgecl.data.importers.iter_labelled` yields.
        memory: the open :class:`~edgecl.continual.memory.ReplayMemory`.
        classes: the class registry (``names()``, ``id_for(name, create=True, loose=True)``).
        origin: the samples' label origin (``import``).
        task: the samples' task name (``stream`` by default, like a camera's frames: the
            monitor and the gate then judge every class on its own, mixed with operator labels).
        relabel: replace the stored labels of an image the memory already holds with this
            import's, where they differ (:meth:`ReplayMemory.relabel`: the sample gets a new
            id, so the next round learns the corrected boxes); otherwise such an image is
            skipped as :data:`HELD_WITH_OTHER_LABELS`. An operator's answer is never
            replaced (:data:`ANSWERED_ON_DEVICE`), nor a sample this import stored itself
            (:data:`TWICE_IN_IMPORT`).
        declared: the dataset's class names in id order
            (:func:`edgecl.data.importers.source_class_order`): a registry with no class takes
            them, with those ids, when the first sample is about to be stored or relabelled (an
            import that stores nothing changes no id).
        progress: called with 1 as each image is done (stored or skipped), e.g. a tqdm bar's
            ``update``.

    Returns:
        The :class:`ImportReport`. A sample the memory refuses (bad labels, too large),
        declines (insertion policy) or already holds (:data:`ALREADY_IN_MEMORY`, the same
        pixels or file content hash, module docstring) is counted as skipped with its reason.

    Raises:
        StorageError: the memory or the class registry cannot write (full disk, read-only);
            every sample stored before stays stored, and the message says how many there are
            (the same import run again once there is room stores only the rest).
        KeyboardInterrupt, SystemExit: a stop (Ctrl-C, SIGTERM) while it ran, re-raised
            after a warning that says how many samples were stored before it.
    """
    report = ImportReport()
    evicted_before, replaced_before = memory.evicted, memory.pseudo_replaced
    try:
        _ingest(items, memory, classes, origin, task, report, relabel, declared, progress)
    except StorageError as exc:
        raise StorageError(f"{exc}; {report.tally.imported} sample(s) of this import were stored "
                           f"before it (run the import again once there is room: what is "
                           f"stored is skipped)") from None
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, SIGTERM: said, then the stop goes on
        log.warning("import stopped: %d sample(s) of it were stored before the stop, %d file(s) "
                    "skipped (run the import again: what is stored is skipped)",
                    report.tally.imported, report.tally.skipped)
        raise
    finally:
        report.evicted = memory.evicted - evicted_before
        report.pseudo_replaced = memory.pseudo_replaced - replaced_before
    return report


def _take_declared(classes: ClassNames, declared: Sequence[str], report: ImportReport) -> None:
    """A device with no class yet takes a dataset's declared classes with their ids (so a
    checkpoint trained on the same data.yaml fits it); a name the registry refuses leaves the
    ids to the order the boxes come in, said in one line."""
    try:
        report.classes_added.extend(classes.add(list(declared)))
    except LabelError as exc:
        log.info("the dataset's class list is not taken as it is (%s); classes get ids as their "
                 "boxes come", exc)


def _counted(items: Iterable, progress: Callable[[int], None]) -> Iterator:
    """``items``, calling ``progress(1)`` as each is done (when the next one is asked for)."""
    for item in items:
        yield item
        progress(1)


def _ingest(items: Iterable[ImportItem | Skip], memory, classes: ClassNames, origin: LabelOrigin,
            task: str, report: ImportReport, relabel: bool = False,
            declared: Sequence[str] = (), progress: Callable[[int], None] | None = None) -> None:
    """The body of :func:`ingest`: fills ``report``."""
    planned = _held_out_plan(items, memory, task, report)
    bound = set((memory.class_names() or {}).keys())
    seen_now: set[int] = set()  # samples this import stored, relabelled or found held
    device_classes = dict(classes.names())  # names ids of unnamed datasets (see _name_unnamed)
    known_before = standing_names(classes.names(), classes.label_ids())  # a typo's targets
    for item in items if progress is None else _counted(items, progress):
        if isinstance(item, Skip):
            report.tally.skip(item.reason, item.message, item.counts_file)
            log.debug("skipped %s", item.message)  # the caller reports the report's messages
            continue
        digest = pixels_hash(item.image)  # what the device records for the frames it stores
        held = _held(memory, {item.content_hash, digest}, origin)  # before any class is registered
        if held is not None:  # a copy held reports no naming, unless its labels are replaced
            named = _name_unnamed(item, device_classes, ImportReport())
            answered = _origin_of(memory, held) is LabelOrigin.OPERATOR
            if held in seen_now:
                report.duplicates += 1
                report.tally.skip(TWICE_IN_IMPORT, f"{item.source}: {TWICE_IN_IMPORT} (the "
                                                   f"first copy decides)")
            elif not _labelled_otherwise(memory, held, named, classes):
                seen_now.add(held)
                _duplicate(report)
            elif answered or not relabel:
                seen_now.add(held)
                report.duplicates += 1
                report.tally.skip(ANSWERED_ON_DEVICE if answered else HELD_WITH_OTHER_LABELS)
            else:
                if declared and not classes.names():  # the first sample relabelled: as stored
                    _take_declared(classes, declared, report)
                    declared = ()
                new_id = _relabel(memory, held, _name_unnamed(item, device_classes, report),
                                  classes, origin, report, known_before)
                seen_now.add(new_id if new_id is not None else held)
            continue
        named = _name_unnamed(item, device_classes, report)
        if item.names and not named.names:  # every box the device's ignore-region class
            report.tally.skip(ONLY_IGNORED, only_ignored_skip(
                item.source, str(item.source), named.ignored, named.difficult).message)
            continue
        item = named
        try:  # the memory's own checks, before a new class is registered for the sample
            provisional = {n: i for i, n in enumerate(dict.fromkeys(item.names))}
            check_image(item.image, str(item.source))
            check_labels(item.yolo_labels(provisional), str(item.source))
        except (LabelError, ReplayMemoryError) as exc:
            report.tally.skip("refused by memory", f"{item.source}: {exc}")
            log.debug("skipped %s: %s", item.source, exc)
            continue
        if declared and not classes.names():  # the first sample to store on a new device
            _take_declared(classes, declared, report)
            declared = ()
        try:
            ids = _class_ids(item, classes, report, known_before)
        except LabelError as exc:
            report.tally.skip("bad class name", f"{item.source}: {exc}")
            continue
        if not set(ids.values()) <= bound:  # the memory bounds class ids by the names it holds
            names = classes.names()
            memory.set_class_names(names)
            bound = set(names)
        sample = Sample(image=item.image, labels=item.yolo_labels(ids), task=task,
                        source=str(item.source), origin=LabelOrigin(origin), content_hash=digest,
                        planned_held_out=planned.get(frame_name(Path(item.source))))
        try:
            sample_id = memory.add(sample)
        except DuplicateSampleError:  # stored meanwhile (another import, the device)
            _duplicate(report)
            continue
        except (LabelError, ReplayMemoryError) as exc:
            report.tally.skip("refused by memory", f"{item.source}: {exc}")
            log.debug("skipped %s: %s", item.source, exc)
            continue
        if sample_id is not None:
            seen_now.add(int(sample_id))
        if sample_id is None:
            report.declined += 1
            # counted, not listed: into a full memory, most of a folder is declined
            report.tally.skip(DECLINED_BY_POLICY)
            continue
        report.tally.done(item.distinct())  # counted as stored: a box given twice is one
        _count_held_out(memory, int(sample_id), {ids[name] for name in item.names}, report)
    _drop_evicted_held_out(memory, report)
    _name_counts(report, classes)
    if report.holdout_every:
        report.memory_counts = memory_class_counts(memory)


def _name_counts(report: ImportReport, classes: ClassNames) -> None:
    """Name the import's counts as every other view does once it is done: each class by the
    device's name for it now (a dataset's ``Car`` as the registry's ``car``; a class merged or
    renamed while the import ran, by what it is now), in ``stored_per_class``, ``held_out``,
    ``units_per_class``, the tally's ``boxes`` and ``classes_matched`` (before, the counts kept
    the dataset's spelling, and ``classes_matched`` was the only key to the device's names)."""
    names, merged = classes.names(), _merged_ids(classes)

    def name_of(class_id: int) -> str:
        class_id = merged.get(class_id, class_id)
        return names.get(class_id, f"class_{class_id}")

    for name, class_id in report.ids_used.items():
        if name_of(class_id) != name:
            report.classes_matched[name] = name_of(class_id)
    report.classes_added[:] = [name_of(report.ids_used[name]) if name in report.ids_used
                               else name for name in report.classes_added]
    for _, shown, held in report.stored_ids:
        now = {name_of(class_id) for class_id in shown}
        report.stored_per_class.update(now)
        if held:
            report.held_out.update(now)
    renamed = {name: name_of(class_id) for name, class_id in report.ids_used.items()}
    for counter in (report.tally.boxes, report.units_per_class):
        before = Counter(counter)
        counter.clear()
        for name, n in before.items():  # the boxes and the plan: by the dataset's names
            counter[renamed.get(name, name)] += n


def _merged_ids(classes: ClassNames) -> dict[int, int]:
    """Class id -> the id it was merged into (empty for a registry that cannot say)."""
    merged = getattr(classes, "merged", None)
    return dict(merged()) if merged is not None else {}


def _held_out_plan(items, memory, task: str, report: ImportReport) -> dict[str, bool]:
    """The import's held-out draw per image name (:func:`frame_name`), planned over its whole
    list: numbered frames of sequences in blocks of consecutive frames
    (:func:`~edgecl.data.splits.sequence_blocks`), other images one by one, and every class
    of the import held out somewhere
    (:func:`~edgecl.continual.memory.admission.plan_import_held_out`, from the classes its
    label files name, read before any image). Fills ``report``'s sequence counts. Empty for
    an iterable that lists no images (each sample is then drawn as it is offered)."""
    fraction = float(getattr(getattr(memory, "cfg", None), "holdout_fraction", 0.0) or 0.0)
    listed = getattr(items, "image_paths", ())  # a plain iterable (a test's) lists none
    names = [frame_name(Path(p)) for p in listed]
    blocks = sequence_blocks(names, min_blocks=math.ceil(1.0 / fraction) if fraction > 0 else 1)
    report.frame_sequences = len({sequence for sequence, _ in blocks.values()})
    report.frames_per_block = max(Counter(blocks.values()).values(), default=0)
    if fraction <= 0 or not names:
        return {}
    report.holdout_every = math.ceil(1.0 / fraction)
    shown = getattr(items, "image_classes", dict)()
    unit_of: dict[str, object] = {}
    units: dict[object, tuple[list[int], Counter]] = {}
    for path, name in zip(listed, names):
        if name in unit_of:
            continue
        key = unit_of[name] = blocks.get(name, name)
        frames, classes = units.setdefault(key, ([0], Counter()))
        frames[0] += 1
        classes.update(set(shown.get(Path(path), ())))
    keys = list(units)
    report.units_per_class = Counter(name for _, classes in units.values() for name in classes)
    reserve = getattr(memory, "reserve_import_draws", None)
    plan_key = hashlib.sha256("\n".join([task, *sorted(names)]).encode(
        "utf-8", "surrogateescape")).hexdigest()[:24]
    first = reserve(task, len(keys), plan_key) if reserve is not None else 0
    # what earlier imports and the device hold of each class; not what a stopped run of this
    # very list stored (before, its rerun counted them as earlier data and held out 109 of
    # hit-uav-dev's 1,074 images where the uninterrupted import holds out 99)
    before = memory_class_counts(memory, leave_out=listed)
    prior = {name: before[loose_class_name(name)] for name in report.units_per_class
             if loose_class_name(name) in before}
    drawn = plan_import_held_out([(units[k][0][0], units[k][1]) for k in keys], fraction,
                                 int(getattr(memory.cfg, "seed", 0)), task, first, prior)
    held = dict(zip(keys, drawn))
    return {name: held[key] for name, key in unit_of.items()}


def memory_class_counts(memory, leave_out: Sequence = ()) -> dict[str, tuple[int, int]]:
    """Per class (by :func:`~edgecl.data.class_names.loose_class_name`, so that an import's
    ``Car`` finds the device's ``car``), ``(training images, held-out images)`` in the memory;
    empty for a memory that cannot say (a test's stand-in).

    Args:
        memory: the replay memory.
        leave_out: image files whose samples are not counted (a sample's ``source`` naming one,
            as given or as an absolute path).
    """
    stats = getattr(memory, "stats", None)
    if stats is None:
        return {}
    if leave_out and hasattr(memory, "records"):  # one pass over the rows, not stats' too
        skip = {str(p) for p in leave_out} | {os.path.abspath(p) for p in leave_out}
        known = memory.class_names() or {}
        counts: dict[int, list[int]] = {}
        for r in memory.records():
            if r.source in skip or os.path.abspath(r.source) in skip:
                continue
            for cid in r.classes:
                counts.setdefault(int(cid), [0, 0])[bool(r.held_out)] += 1
        return {loose_class_name(known.get(cid, f"class_{cid}")): (n[0], n[1])
                for cid, n in counts.items()}
    found = stats()
    names = found.get("names") or {}
    held = found.get("per_class_held_out") or {}
    return {loose_class_name(names.get(cid, f"class_{cid}")): (n - held.get(cid, 0),
                                                               held.get(cid, 0))
            for cid, n in (found.get("per_class") or {}).items()}


def _count_held_out(memory, sample_id: int, shown: set[int], report: ImportReport) -> None:
    """Record a stored sample's class ids (named when the import is done: :func:`_name_counts`),
    and count it if it is held out."""
    records = getattr(memory, "records", None)
    found = records([sample_id]) if records is not None else []
    report.stored_ids.append((sample_id, frozenset(shown), bool(found and found[0].held_out)))


def _drop_evicted_held_out(memory, report: ImportReport) -> None:
    """Once the import is done: its held-out samples that the memory still holds (a later
    sample of the same import may have evicted one to keep the bounds) make the held-out
    counts; the others are no longer marked held out in ``stored_ids``."""
    held = [sample_id for sample_id, _, was_held in report.stored_ids if was_held]
    records = getattr(memory, "records", None)
    kept = ({r.id for r in records(held)} if records is not None and held else set(held))
    report.stored_ids[:] = [(sample_id, shown, was_held and sample_id in kept)
                            for sample_id, shown, was_held in report.stored_ids]
    for _, shown, was_held in report.stored_ids:
        if was_held:
            report.held_out[""] += 1
            report.held_out_empty += not shown


def _held(memory, digests: set[str], origin: LabelOrigin) -> int | None:
    """The id of the sample the memory holds with one of these content hashes (the pixels
    hash, or the file's bytes hash that imports stored before; ``""``, no file, is skipped)
    that this import's labels would not replace (a pseudo-labelled copy is replaced: see
    :meth:`~edgecl.continual.memory.ReplayMemory.held_content`), or None."""
    for d in sorted(digests):
        held = held_copy(memory, d, origin) if d else None
        if held is not None:
            return held
    return None


def _labelled_otherwise(memory, held: int, item: ImportItem, classes: ClassNames) -> bool:
    """Whether the stored sample ``held`` has labels other than ``item``'s: a class name the
    registry does not know, or boxes that do not pair up, in any order, with the same class and
    every side within :data:`SAME_BOX_PX` pixels of the image (a re-export that rounds to whole
    pixels or 3 decimals is the same labelling). A memory without ``get`` (a test double), or a
    sample gone meanwhile, counts as the same."""
    get = getattr(memory, "get", None)
    if get is None:
        return False
    exact = classes.label_ids()
    ids = {}
    for name in dict.fromkeys(item.names):
        same = name if name in exact else same_class_as(name, exact)
        if same is None:
            return True
        ids[name] = exact[same]
    try:
        stored = get([held])[0].labels
    except (ReplayMemoryError, LabelError):
        return False
    height, width = item.image.shape[:2]
    return not same_boxes(stored, item.yolo_labels(ids), width, height)


def same_boxes(a: np.ndarray, b: np.ndarray, width: int, height: int,
               tolerance_px: float = SAME_BOX_PX) -> bool:
    """Whether two sets of YOLO rows are one labelling: each row of ``a`` pairs with one of
    ``b`` of the same class whose sides are all within ``tolerance_px`` pixels.

    Args:
        a: float (N, 5) rows ``class cx cy w h``, normalised.
        b: float (M, 5) rows, the same.
        width: image width in pixels.
        height: image height in pixels.
        tolerance_px: how far a side may move (default :data:`SAME_BOX_PX`: a re-export's
            rounding).
    """
    if a.shape != b.shape:
        return False
    scale = np.array([width, height, width, height], np.float64)

    def sides(rows):
        xy, wh = rows[:, 1:3].astype(np.float64), rows[:, 3:5].astype(np.float64)
        return np.concatenate([xy - wh / 2, xy + wh / 2], axis=1) * scale

    left, right = sides(a), sides(b)
    free = list(range(len(b)))
    for i in range(len(a)):
        match = next((j for j in free if int(a[i, 0]) == int(b[j, 0])
                      and np.abs(left[i] - right[j]).max() <= tolerance_px), None)
        if match is None:
            return False
        free.remove(match)
    return True


def _origin_of(memory, sample_id: int) -> LabelOrigin | None:
    """A stored sample's label origin (None for a memory without ``records``, a test double)."""
    records = getattr(memory, "records", None)
    found = records(ids=[sample_id]) if records is not None else []
    return LabelOrigin(found[0].origin) if found else None


def _relabel(memory, held: int, item: ImportItem, classes: ClassNames, origin: LabelOrigin,
             report: ImportReport, known_before: list[str]) -> int | None:
    """Replace the stored labels of ``held`` with ``item``'s (counted as imported).

    Returns:
        The sample's new id, or None when the memory refused (counted as skipped).
    """
    try:
        ids = _class_ids(item, classes, report, known_before)
        names = classes.names()
        if not set(ids.values()) <= set((memory.class_names() or {}).keys()):
            memory.set_class_names(names)
        new_id = memory.relabel(held, item.yolo_labels(ids), origin=LabelOrigin(origin))
    except (LabelError, ReplayMemoryError) as exc:
        report.tally.skip("refused by memory", f"{item.source}: {exc}")
        return None
    report.relabelled += 1
    report.tally.done(item)
    return int(new_id)


def _duplicate(report: ImportReport) -> None:
    # counted, not listed: re-running an import would otherwise print one line per image
    report.duplicates += 1
    report.tally.skip(ALREADY_IN_MEMORY)
