"""``edgecl classes list [--json] | rename OLD NEW``."""

from __future__ import annotations

import json

import numpy as np

from edgecl.cli import main
from edgecl.models.classes import ClassRegistry


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_json_with_sample_counts_from_memory(capsys, tmp_path):
    from edgecl.config import MemoryConfig
    from edgecl.continual.memory import ReplayMemory, Sample

    state = tmp_path / "state"
    ClassRegistry(state).add(["car", "drone", "boat"])
    memory = ReplayMemory(state / "memory", MemoryConfig(capacity=50, holdout_fraction=0.0))
    image = np.full((32, 32, 3), 90, np.uint8)
    for classes in ([0], [0, 1], [0]):
        labels = np.array([[c, 0.5, 0.5, 0.2, 0.2] for c in classes], np.float32)
        memory.add(Sample(image=image, labels=labels, task="stream"))
    memory.close()
    code, out, err = run_cli(capsys, "classes", "list", "--json", "--state-dir", state)
    assert code == 0, err
    rows = json.loads(out.strip().splitlines()[-1])
    assert [(r["id"], r["name"], r["samples"]) for r in rows] == [(0, "car", 3), (1, "drone", 1), (2, "boat", 0)]
    assert all(r["first_seen"].startswith("20") for r in rows)
    code, out, _ = run_cli(capsys, "classes", "list", "--state-dir", state)
    assert code == 0 and "car" in out and "3 image(s)" in out


def test_list_says_which_class_ids_with_samples_the_registry_lacks(capsys, tmp_path, caplog):
    """Before: a classes.json cut to its first entries listed them alone, unsaid, while the
    memory held samples of the ids it lost."""
    from edgecl.config import MemoryConfig
    from edgecl.continual.memory import ReplayMemory, Sample

    state = tmp_path / "state"
    with ReplayMemory(state / "memory", MemoryConfig(capacity=50, holdout_fraction=0.0),
                      names={0: "car", 1: "drone", 2: "boat"}) as memory:
        for k, cls in enumerate([0, 2, 2]):
            memory.add(Sample(image=np.full((32, 32, 3), 40 * k, np.uint8), task="stream",
                              labels=np.array([[cls, 0.5, 0.5, 0.2, 0.2]], np.float32)))
    ClassRegistry(state).seed({0: "car"})
    code, out, _ = run_cli(capsys, "classes", "list", "--state-dir", state)
    assert code == 0 and out.count("image(s)") == 1
    assert (f"the replay memory holds samples of class id(s) 2 that {state / 'classes.json'} "
            f"lacks") in caplog.text
    assert ClassRegistry(state).names() == {0: "car"}  # a listing changes nothing


def test_list_without_anything_yet(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "classes", "list", "--json", "--state-dir", tmp_path)
    assert code == 0 and json.loads(out) == []


def test_rename_and_its_one_line_errors(capsys, tmp_path):
    ClassRegistry(tmp_path).add(["car", "truck"])
    code, out, _ = run_cli(capsys, "classes", "rename", "truck", "lorry", "--state-dir", tmp_path)
    assert code == 0 and out.strip() == "class 1: truck -> lorry"
    code, _, err = run_cli(capsys, "classes", "rename", "lorry", "car", "--state-dir", tmp_path)
    # before: the merge it named had no --state-dir (pasted elsewhere, it merged in ./state)
    assert code == 2 and err == ("error: cannot rename 'lorry' to 'car': 'car' is already class 0 (to "
                              f"make 'lorry' that class: 'edgecl classes merge lorry car "
                              f"--state-dir {tmp_path}')\n")
    code, _, err = run_cli(capsys, "classes", "rename", "bus", "van", "--state-dir", tmp_path)
    assert code == 2 and err.startswith("error: unknown class 'bus'") and err.count("\n") == 1
    assert ClassRegistry(tmp_path).names() == {0: "car", 1: "lorry"}
    code, out, _ = run_cli(capsys, "classes", "rename", "LORRY", "Lorry", "--state-dir", tmp_path)
    assert code == 0 and out.strip() == "class 1: lorry -> Lorry"  # the stored name, not typed
    typo = tmp_path / "typo"
    for cmd in (["rename", "car", "auto"], ["list"]):
        code, _, err = run_cli(capsys, "classes", *cmd, "--state-dir", typo)
        assert code == 2 and "no such state directory" in err and err.count("\n") == 1
    assert not typo.exists()  # before: the rename created it and an empty registry


def test_a_rename_to_another_classes_former_name_is_noted(capsys, tmp_path):
    """Before: accepted without a word; 'truck' then meant class 1 in older models and labels
    and class 0 from now on."""
    ClassRegistry(tmp_path).add(["car", "truck"])
    assert run_cli(capsys, "classes", "rename", "truck", "lorry", "--state-dir", tmp_path)[0] == 0
    code, out, _ = run_cli(capsys, "classes", "rename", "car", "Truck", "--state-dir", tmp_path)
    assert code == 0 and out.splitlines() == [
        "class 0: car -> Truck",
        "note: 'Truck' was class 1's name before a rename (now 'lorry'); labels and models that "
        "name 'Truck' now mean class 0"]


def test_corrupt_registry_gives_one_line(capsys, tmp_path):
    (tmp_path / "classes.json").write_text("{oops")
    code, _, err = run_cli(capsys, "classes", "list", "--state-dir", tmp_path)
    assert code == 2 and err.startswith("error: corrupt class registry") and err.count("\n") == 1


def test_a_rename_reaches_the_forgetting_monitor_at_once(capsys, tmp_path):
    from edgecl.runtime.monitor import Monitor

    ClassRegistry(tmp_path).add(["car", "truck"])
    Monitor(tmp_path).set_class_names({0: "car", 1: "truck"})
    code, _, _ = run_cli(capsys, "classes", "rename", "truck", "lorry", "--state-dir", tmp_path)
    assert code == 0 and Monitor(tmp_path).class_names() == {0: "car", 1: "lorry"}


def test_a_memory_whose_index_is_lost_shows_its_counts_as_unknown(tmp_path, capsys, caplog):
    """Before: with memory/index.sqlite deleted, every class read '0 samples' without a word
    although the samples' files were on disk."""
    from edgecl.config import MemoryConfig
    from edgecl.continual.memory import ReplayMemory, Sample
    from edgecl.frames import LabelOrigin
    from edgecl.models.classes import ClassRegistry

    ClassRegistry(tmp_path).add(["car"])
    with ReplayMemory(tmp_path / "memory", MemoryConfig(holdout_fraction=0.0)) as memory:
        memory.add(Sample(np.full((32, 32, 3), 90, np.uint8),
                          np.array([[0, 0.5, 0.5, 0.3, 0.3]], np.float32), task="t0",
                          source="cam.jpg", origin=LabelOrigin.IMPORT))
    for path in (tmp_path / "memory").glob("index.sqlite*"):
        path.unlink()
    assert main(["classes", "list", "--state-dir", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])[0]["samples"] is None
    assert "has sample files but no index" in caplog.text


def test_a_deleted_registry_and_backup_are_rebuilt_from_the_memory_by_the_classes_commands(
        capsys, tmp_path):
    """Before: with classes.json and its backup deleted, 'classes list' said "no classes yet"
    and 'classes rename car auto' "unknown class 'car' (known: none)", while the memory held
    car and drone samples."""
    from edgecl.config import MemoryConfig
    from edgecl.continual.memory import ReplayMemory, Sample

    state = tmp_path / "state"
    ClassRegistry(state).add(["car", "drone"])
    with ReplayMemory(state / "memory", MemoryConfig(capacity=50, holdout_fraction=0.0),
                      names={0: "car", 1: "drone"}) as memory:
        memory.add(Sample(image=np.full((32, 32, 3), 90, np.uint8),
                          labels=np.array([[1, 0.5, 0.5, 0.2, 0.2]], np.float32), task="stream"))
    for name in ("classes.json", "classes.backup.json"):
        (state / name).unlink(missing_ok=True)
    code, out, err = run_cli(capsys, "classes", "list", "--json", "--state-dir", state)
    assert code == 0, err
    assert [(r["id"], r["name"]) for r in json.loads(out.strip().splitlines()[-1])] == [
        (0, "car"), (1, "drone")]
    code, out, err = run_cli(capsys, "classes", "rename", "car", "auto", "--state-dir", state)
    assert code == 0 and out.strip() == "class 0: car -> auto", err


def test_list_keeps_its_columns_with_wide_class_names(capsys, tmp_path):
    """Before: a Chinese name counted one column a character, so its row's counts stood two
    columns left of an ASCII row's per character."""
    state = tmp_path / "state"
    ClassRegistry(state).add(["car", "行人", "cafe\u0301"])
    code, out, _ = run_cli(capsys, "classes", "list", "--state-dir", state)
    rows = out.splitlines()
    assert code == 0 and len(rows) == 3

    def column(row):  # where ' image(s)' shows on a terminal: 行 and 人 take two, U+0301 none
        at = row.index(" image(s)")
        return at + row[:at].count("行") + row[:at].count("人") - row[:at].count("\u0301")

    assert {column(row) for row in rows} == {38}, rows  # 4 + 2 + 24 + 1 + 7
