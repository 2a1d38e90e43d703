"""A class merge racing an operator's answers, corrections and withdrawals (other processes).

Before: ``classes merge`` read each sample's labels, then relabelled it; a correction that gave
the sample a new id in between stopped the merge half-way ("memory has no sample 452", exit 2),
and a correction or withdrawal whose sample the merge renumbered in between was refused with
HTTP 400 ("no sample 451"), the person's change lost. An answer whose class names were read
before the merge was recorded, and stored after the merge's pass, kept the retired id after the
merge had said it was done.
"""

import numpy as np
from labels_fakes import dets, textured

from edgecl.continual.memory import ReplayMemory
from edgecl.continual.merges import relabel_class
from edgecl.frames import Frame
from edgecl.models.classes import ClassRegistry
from edgecl.runtime.labels import OperatorQueue

CAR, OTHER = 0, 1


def _answered(tmp_path, n=3):
    """``n`` queue items answered with one OtherVehicle box each."""
    classes = ClassRegistry(tmp_path)
    classes.add(["Car", "OtherVehicle"])
    queue = OperatorQueue(tmp_path / "labels")
    ids = [queue.push(Frame(textured(i), i, float(i), "cam://0"), dets([0.5]), priority=0.5,
                      reasons={"uncertain": 0.9}, names={0: "Car"}) for i in range(n)]
    memory = ReplayMemory(tmp_path / "memory", names=classes.names())
    for item in ids:
        queue.answer(item, [{"class": "OtherVehicle", "xyxy": [10, 10, 50, 40]}], memory, classes)
    return classes, queue, ids, memory


def _held(memory):
    return sorted({int(c) for record in memory.records() for c in record.classes})


def test_a_merge_finishes_when_an_answer_is_corrected_during_it(tmp_path):
    classes, queue, ids, memory = _answered(tmp_path)
    other_process = ReplayMemory(tmp_path / "memory")
    stale = ClassRegistry(tmp_path)  # the correcting process read the names before the merge
    names_then = stale.label_ids()
    stale.label_ids, stale.merged = (lambda: names_then), (lambda: {})
    real = memory.remap_classes
    corrected = []

    def correction_first(sample_id, mapping):
        if not corrected:  # the operator corrects the first answer (still OtherVehicle)
            corrected.append(queue.correct(ids[0], [{"class": "OtherVehicle",
                                                      "xyxy": [12, 10, 52, 40]}],
                                           other_process, stale))
        return real(sample_id, mapping)

    memory.remap_classes = correction_first
    classes.merge("OtherVehicle", "Car")
    relabelled = relabel_class(memory, OTHER, CAR, classes.names())
    assert len(relabelled) == 3 and _held(memory) == [CAR]
    stored = memory.get([queue.answered_sample(ids[0], memory)])[0].labels
    np.testing.assert_allclose(stored[:, 1:] * [200, 100, 200, 100], [[32, 25, 40, 30]], atol=0.01)
    memory.close()
    other_process.close()


def test_a_correction_and_a_withdrawal_follow_a_sample_the_merge_renumbered(tmp_path):
    classes, queue, ids, memory = _answered(tmp_path)
    classes.merge("OtherVehicle", "Car")
    before = {item: queue.answered_sample(item, memory) for item in ids}
    real_relabel, real_remove = memory.relabel, memory.remove

    def merged_first(change):
        def wrapper(first, *args, **kwargs):  # the merge renumbers the sample first
            sample_id = first if isinstance(first, int) else first[0]
            memory.remap_classes(sample_id, {OTHER: CAR})
            return change(first, *args, **kwargs)
        return wrapper

    memory.relabel = merged_first(real_relabel)
    out = queue.correct(ids[0], [{"class": "Car", "xyxy": [12, 10, 52, 40]}], memory, classes)
    assert out["replaced"] != before[ids[0]] and out["class_ids"] == [CAR]
    memory.relabel = real_relabel
    memory.remove = merged_first(real_remove)
    out = queue.withdraw(ids[1], memory)
    assert out["withdrawn"] and out["sample"] != before[ids[1]]
    assert len(memory) == 2
    memory.close()


def test_an_answer_whose_names_were_read_before_a_merge_stores_the_class_it_became(tmp_path):
    classes, queue, ids, memory = _answered(tmp_path, n=1)
    late = queue.push(Frame(textured(9), 9, 9.0, "cam://0"), dets([0.5]), priority=0.5,
                      reasons={"uncertain": 0.9}, names={0: "Car"})
    stale = ClassRegistry(tmp_path)
    names_then = stale.label_ids()
    stale.label_ids = lambda: names_then  # read before the merge was recorded
    classes.merge("OtherVehicle", "Car")
    assert relabel_class(memory, OTHER, CAR, classes.names())  # its pass ran before the answer
    out = queue.answer(late, [{"class": "OtherVehicle", "xyxy": [10, 10, 50, 40]}], memory, stale)
    assert out["class_ids"] == [CAR] and _held(memory) == [CAR]
    assert out["sample"] == queue.answered_sample(late, memory)
    memory.close()
