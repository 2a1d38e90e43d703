"""``edgecl classes merge OLD TARGET``: a misspelt class a person typed is merged into the right
one; its samples are relabelled, and its name means the other class from then on."""

import json

import numpy as np
import pytest

from edgecl.cli import main
from edgecl.continual.memory import ReplayMemory, Sample
from edgecl.frames import Detections, Frame, LabelOrigin
from edgecl.models.classes import ClassRegistry
from edgecl.runtime.labels import OperatorQueue
from edgecl.runtime.labels.pipeline import merged_labels


def sample(i, rows, origin=LabelOrigin.OPERATOR):
    return Sample(np.full((20, 30, 3), 40 * i, np.uint8), np.array(rows, np.float32),
                  task="stream", source=f"s{i}", origin=origin, content_hash=f"{i:016x}")


@pytest.fixture()
def state(tmp_path):
    """car 0, Persn 1 (the misspelling), person 2; samples 1-4."""
    root = tmp_path / "state"
    ClassRegistry(root).add(["car", "Persn", "person"])
    with ReplayMemory(root / "memory", names={0: "car", 1: "Persn", 2: "person"}) as memory:
        memory.add(sample(1, [[1, 0.5, 0.5, 0.2, 0.2]]))
        memory.add(sample(2, [[0, 0.3, 0.3, 0.1, 0.1], [1, 0.6, 0.6, 0.2, 0.2],
                              [2, 0.6, 0.6, 0.2, 0.2]]))  # the same box under both names
        memory.add(sample(3, [[2, 0.5, 0.5, 0.2, 0.2]]))
        memory.add(sample(4, [[1, 0.4, 0.4, 0.2, 0.2]], LabelOrigin.PSEUDO))
    return root


def test_merge_relabels_the_samples_and_keeps_their_origin(state, capsys):
    code = main(["classes", "merge", "Persn", "person", "--json", "--state-dir", str(state)])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and out == {"merged": "Persn", "into": "person", "id": 1, "into_id": 2,
                                 "relabelled": 3}
    with ReplayMemory(state / "memory") as memory:
        assert memory.ids() == [3, 5, 6, 7]  # 1, 2 and 4 relabelled under new ids
        got = {s.source: (s.labels.astype(float).round(4).tolist(), s.origin)
               for s in memory.get(memory.ids())}
    assert got["s1"] == ([[2, 0.5, 0.5, 0.2, 0.2]], LabelOrigin.OPERATOR)
    assert got["s2"][0] == [[0, 0.3, 0.3, 0.1, 0.1], [2, 0.6, 0.6, 0.2, 0.2]]  # kept once
    assert got["s4"][1] is LabelOrigin.PSEUDO
    code = main(["classes", "list", "--state-dir", str(state)])
    listed = capsys.readouterr().out
    assert "Persn" in listed and "(merged into person)" in listed
    assert main(["classes", "merge", "Persn", "person", "--state-dir", str(state)]) == 0
    assert "0 sample(s) relabelled" in capsys.readouterr().out  # again: nothing left to do


def test_after_a_merge_answers_and_pseudo_labels_naming_the_old_class_get_the_new(state):
    registry = ClassRegistry(state)
    registry.merge("Persn", "person")
    queue = OperatorQueue(state / "labels")
    none = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, int))
    item = queue.push(Frame(np.full((20, 30, 3), 7, np.uint8), 0, 0.0, "cam://0"), none)
    with ReplayMemory(state / "memory") as memory:
        out = queue.answer(item, [{"class": "persn", "xyxy": [1, 1, 10, 10]}], memory, registry)
    assert out["class_ids"] == [2] and out["classes_added"] == []
    rows = np.array([[1, 0.5, 0.5, 0.1, 0.1], [0, 0.2, 0.2, 0.1, 0.1]], np.float32)
    assert merged_labels(rows, registry)[:, 0].tolist() == [2, 0]
    tail = rows[1:]
    assert merged_labels(tail, registry) is tail  # nothing merged: the same array


def test_a_merge_of_an_unknown_class_is_one_line(state, capsys):
    code = main(["classes", "merge", "Persn", "bus", "--state-dir", str(state)])
    err = capsys.readouterr().err
    assert code == 2 and "unknown class 'bus'" in err and err.count("\n") == 1
    assert ClassRegistry(state).merged() == {}


def test_a_merge_refused_for_its_memory_settings_merges_nothing(state, capsys):
    """Before: 'classes merge Bicycle Person memory.capacity=10' was refused for evicting the
    device's samples, after classes.json already said Bicycle was merged into Person: the
    registry half merged, its samples not relabelled."""
    before = (state / "classes.json").read_bytes()
    code = main(["classes", "merge", "Persn", "person", "--state-dir", str(state),
                 "memory.capacity=2", "memory.holdout_fraction=0.5"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "would evict the device's samples" in err, err
    assert (state / "classes.json").read_bytes() == before
    assert ClassRegistry(state).merged() == {}


def test_a_merge_cut_short_is_named_by_verify_and_finished_by_it(state, capsys):
    """Before: a merge stopped half-way (kill -9, a full disk) left samples holding the merged
    class; 'memory verify' said ok, and 'edgecl learn' trained the retired class on them."""
    from edgecl.continual.merges import finish_merges

    ClassRegistry(state).merge("Persn", "person")  # recorded; the memory not relabelled yet
    code = main(["memory", "verify", "--no-repair", "--state-dir", str(state)])
    out = capsys.readouterr().out
    assert code == 1 and ("not repaired: 3 sample(s) still hold class 'Persn', merged into "
                          "'person' (a merge cut short; 'edgecl memory verify' or the next round "
                          "relabels them)") in out
    assert main(["memory", "verify", "--state-dir", str(state)]) == 0
    assert "relabelled: 3 sample(s) of class 'Persn' as 'person' (a merge cut short)" in (
        capsys.readouterr().out)
    with ReplayMemory(state / "memory") as memory:
        assert all(1 not in r.classes for r in memory.records())
        assert finish_merges(memory, {1: 2}, {}) == {}, "nothing left: nothing done"


def test_a_merge_into_a_class_the_memory_has_not_stored_yet_relabels(tmp_path, capsys):
    """A fleet round adds the fleet's classes to the class registry, not to the memory. Before:
    'classes merge people person' recorded the merge, then failed on the first sample ("class 2
    exceeds the class count 2"), and 'memory verify' and every round failed the same way."""
    root = tmp_path / "state"
    ClassRegistry(root).add(["Car", "people"])
    with ReplayMemory(root / "memory", names={0: "Car", 1: "people"}) as memory:
        memory.add(sample(1, [[1, 0.5, 0.5, 0.2, 0.2]]))
        memory.add(sample(2, [[0, 0.3, 0.3, 0.1, 0.1]]))
    ClassRegistry(root).add(["person"])  # joined from the fleet
    assert main(["classes", "merge", "people", "person", "--json", "--state-dir", str(root)]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["relabelled"] == 1 and out["into_id"] == 2
    with ReplayMemory(root / "memory") as memory:
        assert sorted(tuple(r.classes) for r in memory.records()) == [(0,), (2,)]
        assert memory.class_names() == {0: "Car", 1: "people", 2: "person"}
    assert main(["memory", "verify", "--state-dir", str(root)]) == 0
    capsys.readouterr()
    # a merge cut short that way is finished by verify too
    root2 = tmp_path / "state2"
    ClassRegistry(root2).add(["Car", "people"])
    with ReplayMemory(root2 / "memory", names={0: "Car", 1: "people"}) as memory:
        memory.add(sample(1, [[1, 0.5, 0.5, 0.2, 0.2]]))
    registry = ClassRegistry(root2)
    registry.add(["person"])
    registry.merge("people", "person")
    assert main(["memory", "verify", "--state-dir", str(root2)]) == 0
    assert "relabelled: 1 sample(s) of class 'people' as 'person'" in capsys.readouterr().out


def test_a_round_finishes_a_merge_cut_short_before_it_reads_the_memory(state, caplog):
    from edgecl.config import load_config
    from edgecl.continual.round import _open_round

    ClassRegistry(state).merge("Persn", "person")  # recorded; the memory not relabelled yet
    context = _open_round(load_config(None, [f"state_dir={state}"]), None)
    assert context is not None
    assert all(1 not in r.classes for r in context.snapshot.records())
    assert any("class merge of 'Persn' into 'person' was cut short: 3 sample(s)" in m
               for m in caplog.messages)


@pytest.mark.parametrize("argv", [["classes", "list"], ["memory", "verify"]])
def test_a_damaged_class_registry_is_rebuilt_from_the_memory(state, capsys, argv):
    """Before: these commands, and 'edgecl learn', only said 'corrupt class registry ...
    restore it from a backup', though the memory holds every class's name and id."""
    (state / "classes.json").write_bytes(b"\0" * 64)
    assert main([*argv, "--state-dir", str(state)]) == 0
    capsys.readouterr()
    assert ClassRegistry(state).names() == {0: "car", 1: "Persn", 2: "person"}
    assert any(p.name.startswith("classes.json.") for p in state.iterdir()), "damaged copy kept"


def test_a_round_rebuilds_a_damaged_class_registry_before_it_reads_the_memory(state):
    from edgecl.config import load_config
    from edgecl.continual.round import _open_round

    (state / "classes.json").write_text("{garbage")
    assert _open_round(load_config(None, [f"state_dir={state}"]), None) is not None
    assert ClassRegistry(state).names() == {0: "car", 1: "Persn", 2: "person"}


def test_the_merge_line_quotes_names_as_they_are(tmp_path, capsys):
    """Before: ``class 1 'a\\\\b' merged ...``: repr doubled the backslash of the class ``a\\b``."""
    root = tmp_path / "state"
    ClassRegistry(root).add(["car", "a\\b"])
    assert main(["classes", "merge", "a\\b", "car", "--state-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("class 1 'a\\b' merged into class 0 'car': 0 sample(s) relabelled")
