"""``edgecl memory stats | verify | export`` through the real CLI entry point."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from edgecl.cli import main
from edgecl.config import MemoryConfig
from edgecl.continual.memory import ReplayMemory, Sample
from edgecl.frames import LabelOrigin

BOX = np.array([[1, 0.5, 0.5, 0.25, 0.5]], np.float32)


@pytest.fixture()
def state(tmp_path):
    cfg = MemoryConfig(holdout_fraction=0.3, seed=2)
    with ReplayMemory(tmp_path / "state" / "memory", cfg, names={0: "car", 1: "drone"}) as m:
        for i in range(10):
            origin = LabelOrigin.PSEUDO if i in (2, 7) else LabelOrigin.GROUND_TRUTH
            origin = LabelOrigin.OPERATOR if i == 9 else origin
            m.add(Sample(np.full((24, 24, 3), i * 20, np.uint8), BOX, task=f"t{i // 5}",
                         origin=origin))
    return tmp_path / "state"


def test_stats_json_is_the_last_line(state, capsys):
    assert main(["memory", "stats", "--json", "--state-dir", str(state)]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["samples"] == 10 and out["per_class"] == {"1": 10}
    assert sum(out["per_task"].values()) + out["held_out"] == 10 and out["bytes"] > 0
    assert out["per_class_held_out"] == {"1": out["held_out"]}  # every image shows class 1
    assert out["per_origin"] == {"ground_truth": 7, "operator": 1, "import": 0, "pseudo": 2}


def test_stats_text(state, capsys):
    assert main(["memory", "stats", "--state-dir", str(state)]) == 0
    out = capsys.readouterr().out
    with ReplayMemory(state / "memory", MemoryConfig()) as m:
        held = m.stats()["held_out"]
    assert held > 0  # before: no per-class held-out count, so a class never measured went unseen
    assert f"class 1 drone: 10 image(s), {held} of them held out for evaluation" in out
    assert "labels from: ground_truth 7, operator 1, import 0, pseudo 2" in out


def test_stats_list_a_registry_class_with_no_image_left_with_zero(state, capsys):
    """Before: after its only answer was withdrawn, a class vanished from memory stats while
    'classes list' showed it with 0 samples (a merged class is no class of its own)."""
    from edgecl.models.classes import ClassRegistry

    registry = ClassRegistry(state)
    registry.seed({0: "car", 1: "drone"})
    registry.add(["boat", "Boat_"])
    registry.merge("Boat_", "boat")
    assert main(["memory", "stats", "--json", "--state-dir", str(state)]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["per_class"] == {"0": 0, "1": 10, "2": 0}
    assert out["per_class_held_out"] == {"0": 0, "1": out["held_out"], "2": 0}
    assert main(["memory", "stats", "--state-dir", str(state)]) == 0
    assert "class 2 boat: 0 image(s), 0 of them held out for evaluation" in capsys.readouterr().out


def test_verify_exit_codes(state, capsys):
    assert main(["memory", "verify", "--state-dir", str(state)]) == 0
    (state / "memory" / "images" / "00000003.jpg").unlink()
    assert main(["memory", "verify", "--no-repair", "--state-dir", str(state)]) == 1
    assert main(["memory", "verify", "--json", "--state-dir", str(state)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["missing_rows"] == [3] and report["ok"]


def test_verify_drops_a_stored_image_that_does_not_decode(state, capsys):
    image = state / "memory" / "images" / "00000004.jpg"
    data = image.read_bytes()
    image.write_bytes(data[:2] + bytes(len(data) - 4) + data[-2:])  # size and markers intact
    assert main(["memory", "verify", "--quick", "--no-repair", "--state-dir", str(state)]) == 0
    capsys.readouterr()
    assert main(["memory", "verify", "--no-repair", "--json", "--state-dir", str(state)]) == 1
    said = capsys.readouterr()
    report = json.loads(said.out)  # before: a 'not repaired: ...' line came first on stdout
    assert report["corrupt_rows"] == [4] and not report["ok"]
    assert "does not decode" in report["details"][0]
    assert said.err.startswith("not repaired: row 4: ")  # a log still says what failed
    assert main(["memory", "verify", "--state-dir", str(state)]) == 0
    out = capsys.readouterr().out
    assert "dropped: row 4:" in out and "1 corrupt" in out and not image.exists()
    assert main(["memory", "stats", "--json", "--state-dir", str(state)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["samples"] == 9


def test_verify_quick_finds_a_truncated_image(state, capsys):
    image = state / "memory" / "images" / "00000005.jpg"
    image.write_bytes(image.read_bytes()[:100])
    assert main(["memory", "verify", "--quick", "--json", "--state-dir", str(state)]) == 0
    said = capsys.readouterr()
    report = json.loads(said.out)  # before: a 'dropped: ...' line came first on stdout
    assert report["corrupt_rows"] == [5] and report["ok"] and not image.exists()
    assert said.err.startswith("dropped: row 5: ")


def test_export_writes_a_yolo_dataset(state, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["memory", "export", "--out", str(out), "--state-dir", str(state)]) == 0
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["names"] == {0: "car", 1: "drone"} and data["nc"] == 2
    train = (out / "train.txt").read_text().split()
    val = (out / "val.txt").read_text().split()
    assert len(train) + len(val) == 10 and data["val"] in ("val.txt", "train.txt")
    for img in train + val:
        label = img.replace("./images/", "labels/").replace(".jpg", ".txt")
        assert (out / label).read_text().startswith("1 ")
    assert main(["memory", "export", "--out", str(out), "--state-dir", str(state)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_an_export_moved_elsewhere_still_reads(state, tmp_path, capsys):
    """Before: data.yaml's 'path' and the lists held the export's absolute path: an export
    copied off the device failed ('train' path not found: /old/place/train.txt)."""
    from ultralytics.data.utils import check_det_dataset

    assert main(["memory", "export", "--out", str(tmp_path / "export"), "--state-dir",
                 str(state)]) == 0
    moved = (tmp_path / "export").rename(tmp_path / "copied")
    assert str(tmp_path) not in "".join(p.read_text() for p in moved.glob("*.*"))
    data = check_det_dataset(str(moved / "data.yaml"))
    assert Path(data["train"]) == moved / "train.txt"
    assert main(["labels", "import", "--json", "--state-dir", str(tmp_path / "new"),
                 str(moved)]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["imported"] == 10


def test_names_come_from_the_class_registry_and_a_corrupt_one_is_a_warning(state, tmp_path,
                                                                           capsys):
    from edgecl.models.classes import ClassRegistry

    ClassRegistry(state).add(["car", "drone"])
    ClassRegistry(state).rename("drone", "quadcopter")  # the memory still says "drone"
    assert main(["memory", "stats", "--state-dir", str(state)]) == 0
    assert "class 1 quadcopter: 10" in capsys.readouterr().out
    assert main(["memory", "export", "--out", str(tmp_path / "e"), "--state-dir", str(state)]) == 0
    assert yaml.safe_load((tmp_path / "e" / "data.yaml").read_text())["names"][1] == "quadcopter"
    (state / "classes.json").write_text("{oops")
    assert main(["memory", "stats", "--state-dir", str(state)]) == 0
    out, err = capsys.readouterr()
    assert "class 1 drone: 10" in out and err.startswith("warning: corrupt class registry")


def test_missing_memory_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "nothing").mkdir()  # a state directory where nothing was stored yet
    assert main(["memory", "stats", "--state-dir", str(tmp_path / "nothing")]) == 2
    assert "no replay memory at" in capsys.readouterr().err


def test_verify_counts_each_damaged_sample_once(state, capsys):
    mem = state / "memory"
    image4 = mem / "images" / "00000004.jpg"
    image4.write_bytes(image4.read_bytes()[:100])          # sample 4: corrupt (truncated)
    (mem / "labels" / "00000006.txt").unlink()             # sample 6: label missing
    (mem / "images" / "00000099.jpg").write_bytes(b"x")    # a file no row owns: 1 orphan
    assert main(["memory", "verify", "--no-repair", "--json", "--state-dir", str(state)]) == 1
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # 2 damaged samples + 1 orphan = 3 problems; the damaged samples' own files are not orphans
    assert report["missing_rows"] == [6] and report["corrupt_rows"] == [4]
    assert report["orphan_files"] == [str(mem / "images" / "00000099.jpg")]
    assert len(report["unrepaired"]) == 3 and len(report["details"]) == 2
    assert main(["memory", "verify", "--no-repair", "--state-dir", str(state)]) == 1
    out = capsys.readouterr().out
    assert "3 problem(s) NOT repaired: 10 rows checked, 1 with missing files, 1 corrupt, 1 orphan files" in out
    (mem / "labels" / ".00000098.txt.k3j9.tmp").write_bytes(b"x")  # a write cut short
    assert main(["memory", "verify", "--json", "--state-dir", str(state)]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out.strip().splitlines()[-1])
    assert report["ok"] and len(report["orphan_files"]) == 1
    # each file deleted is named (before: '1 orphan files (repaired)' alone)
    assert [line for line in captured.err.splitlines() if line.startswith("deleted: ")] == [
        f"deleted: {mem / 'images' / '00000099.jpg'} (a file of no sample the index lists)",
        f"deleted: {mem / 'labels' / '.00000098.txt.k3j9.tmp'} (a write cut short)"]
    assert not image4.exists() and not (mem / "images" / "00000006.jpg").exists()
    assert main(["memory", "verify", "--no-repair", "--json", "--state-dir", str(state)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["unrepaired"] == []


def test_stats_and_export_never_drop_a_sample(state, tmp_path, capsys):
    """Inspecting reads only: a lower capacity on the command line or a missing image file
    changes nothing (repairing and evicting are 'memory verify's and the runtime's)."""
    lower = ["memory.capacity=5", "memory.holdout_fraction=0.3"]
    assert main(["memory", "stats", "--json", "--state-dir", str(state), *lower]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["samples"] == 10
    assert main(["memory", "export", "--out", str(tmp_path / "e"), "--state-dir", str(state),
                 *lower]) == 0
    assert len(list((tmp_path / "e" / "images").iterdir())) == 10
    missing = state / "memory" / "images" / "00000003.jpg"
    kept = missing.read_bytes()
    missing.unlink()
    assert main(["memory", "stats", "--json", "--state-dir", str(state)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["samples"] == 10
    assert (state / "memory" / "labels" / "00000003.txt").is_file()
    assert main(["memory", "export", "--out", str(tmp_path / "e2"), "--state-dir", str(state)]) == 2
    assert "missing" in capsys.readouterr().err and not (tmp_path / "e2").exists()
    missing.write_bytes(kept)
    assert main(["memory", "verify", "--no-repair", "--state-dir", str(state)]) == 0


def test_a_lower_capacity_evicts_on_open_and_says_so(state, caplog):
    with caplog.at_level("WARNING"):
        with ReplayMemory(state / "memory", MemoryConfig(capacity=4, holdout_fraction=0.3)) as m:
            assert len(m) == 4
    assert ("6 sample(s) evicted at start (8 training samples exceed the 3 training slots "
            "(memory.capacity 4 less the 1 held-out slots of memory.holdout_fraction 0.3); "
            "2 held-out samples exceed the 1 held-out slots (memory.capacity 4 x "
            "memory.holdout_fraction 0.3); pseudo-labelled ones first") in caplog.text


def test_a_larger_holdout_fraction_evicts_on_open_and_names_it(state, caplog):
    """Before: 'evicted at start to fit memory.capacity 2000 and memory.max_bytes 512.0 MiB'
    when 10 samples sat in a memory of 2,000 slots: the training slots a larger
    holdout_fraction took were never named."""
    with caplog.at_level("WARNING"):
        with ReplayMemory(state / "memory", MemoryConfig(capacity=10, holdout_fraction=0.8)) as m:
            assert len(m) == 4  # 2 training slots full, and the 2 held-out samples
    assert ("6 sample(s) evicted at start (8 training samples exceed the 2 training slots "
            "(memory.capacity 10 less the 8 held-out slots of memory.holdout_fraction 0.8); "
            "pseudo-labelled ones first") in caplog.text
    assert "to fit memory.capacity" not in caplog.text


def test_export_writes_names_and_paths_outside_ascii_as_themselves(tmp_path, capsys):
    """An emoji in a class name or in the path: the data.yaml reads back the same in YAML
    (JSON's surrogate-pair escapes read back as two lone surrogates)."""
    from edgecl.models.classes import ClassRegistry

    state = tmp_path / "st ate 🚗"
    with ReplayMemory(state / "memory", MemoryConfig(holdout_fraction=0.3), names={0: "car"}) as m:
        for i in range(4):
            m.add(Sample(np.full((24, 24, 3), i * 20, np.uint8), BOX * [0, 1, 1, 1, 1], task="t0"))
    ClassRegistry(state).add(["car"])
    ClassRegistry(state).rename("car", "🚗 car")
    out = state / "export"
    assert main(["memory", "export", "--out", str(out), "--state-dir", str(state)]) == 0
    data = yaml.safe_load((out / "data.yaml").read_text(encoding="utf-8"))
    assert data["names"] == {0: "🚗 car"} and "path" not in data  # where it lies: movable
    from ultralytics.data.utils import check_det_dataset
    from ultralytics.utils import YAML

    assert YAML.load(out / "data.yaml")["names"] == {0: "🚗 car"}
    assert Path(check_det_dataset(str(out / "data.yaml"))["train"]) == out / "train.txt"


def test_a_path_with_lone_surrogates_is_a_one_line_error(tmp_path):
    from edgecl.data.yolo_dataset import path_from_text
    from edgecl.errors import ConfigError

    with pytest.raises(ConfigError, match="not valid Unicode text"):
        path_from_text("/tmp/\ud83d\ude97", "data.yaml: 'path'")
    assert str(path_from_text("/tmp/\udcff", "x")) == "/tmp/\udcff"  # an undecodable byte: kept


def test_export_of_a_damaged_memory_refuses_or_leaves_the_damage_out(state, tmp_path, capsys):
    """A state directory copied while the runtime wrote: a row without its image. Export
    refuses and names both ways out; --skip-damaged exports the intact samples (a read-only
    copy could not be repaired, so before nothing could be exported from it)."""
    (state / "memory" / "images" / "00000003.jpg").unlink()
    out = tmp_path / "export"
    assert main(["memory", "export", "--out", str(out), "--state-dir", str(state)]) == 2
    err = capsys.readouterr().err
    assert "has 1 damaged sample(s)" in err and "--skip-damaged" in err and not out.exists()
    assert main(["memory", "export", "--skip-damaged", "--out", str(out),
                 "--state-dir", str(state)]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().endswith("1 damaged sample(s) left out")
    assert captured.err.count("skipped: ") == 1
    exported = sorted(p.name for p in (out / "images").iterdir())
    assert len(exported) == 9 and "00000003.jpg" not in exported


def test_damaged_index_names_the_rebuild_and_rebuild_restores_it(state, capsys):
    index = state / "memory" / "index.sqlite"
    with ReplayMemory(state / "memory") as m:
        m.snapshot()
    damaged = b"\0" * len(index.read_bytes())
    index.write_bytes(damaged)
    assert main(["memory", "stats", "--state-dir", str(state)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "memory index is unusable" in err
    assert f"'edgecl memory verify --rebuild-index --state-dir {state}' rebuilds it" in err
    assert main(["memory", "verify", "--rebuild-index", "--state-dir", str(state)]) == 0
    line = capsys.readouterr().out.strip()
    assert len(line.splitlines()) == 1
    assert line.startswith("index rebuilt: 10 rows (10 from snapshot ") and "0 quarantined" in line
    (aside,) = (state / "memory").glob("index.sqlite.corrupt-*[0-9Z]")
    assert aside.read_bytes() == damaged and str(aside) in line
    assert main(["memory", "stats", "--json", "--state-dir", str(state)]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["samples"] == 10 and out["names"] == {"0": "car", "1": "drone"}
    assert out["per_origin"] == {"ground_truth": 7, "operator": 1, "import": 0, "pseudo": 2}
    assert main(["memory", "verify", "--rebuild-index", "--state-dir", str(state)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("is readable and lists every sample on disk; nothing to rebuild")
    assert len(err.splitlines()) == 1


def test_missing_index_rebuild_json(state, capsys):
    for side in ("", "-wal", "-shm"):
        (state / "memory" / f"index.sqlite{side}").unlink(missing_ok=True)
    assert main(["memory", "verify", "--state-dir", str(state)]) == 2
    err = capsys.readouterr().err
    assert "is missing" in err and "'edgecl memory verify --rebuild-index --state-dir" in err
    assert main(["memory", "verify", "--rebuild-index", "--json", "--state-dir", str(state)]) == 0
    out = json.loads(capsys.readouterr().out.strip())
    assert (out["rows"], out["from_snapshot"], out["from_files"], out["quarantined"]) == (10, 0, 10, 0)
    assert out["moved_aside"] is None
    assert main(["memory", "stats", "--json", "--state-dir", str(state)]) == 0
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert stats["samples"] == 10 and stats["per_origin"]["operator"] == 0


def test_stats_text_gives_sizes_in_mib_and_says_when_a_smaller_max_bytes_is_exceeded(tmp_path, capsys):
    """Before: '64512000 of 533358336 sample bytes (max_bytes 536870912)', and a copy read with a
    smaller memory.max_bytes showed more bytes than the budget without a word."""
    rng = np.random.default_rng(0)
    cfg = MemoryConfig(capacity=20, jpeg_quality=100)
    with ReplayMemory(tmp_path / "state" / "memory", cfg) as m:
        for _ in range(6):  # noise at quality 100: about 0.5 MiB each
            m.add(Sample(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), BOX, task="t0"))
        used = m.stats()["bytes"]
    assert used > 2.5 * 1024 * 1024
    state = str(tmp_path / "state")
    assert main(["memory", "stats", "--state-dir", state, "memory.capacity=20",
                 "memory.jpeg_quality=100"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert f"{used / 2**20:.1f} MiB of the " in first
    assert "MiB the samples may take (memory.max_bytes 512.0 MiB less room for the index)" in first
    assert main(["memory", "stats", "--state-dir", state, "memory.capacity=20",
                 "memory.jpeg_quality=100", "memory.max_bytes=2MiB"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("  over these settings' bounds: ") and "evicts samples to fit" in lines[1]
    assert " MiB of samples exceed the 1.0 MiB they may take (memory.max_bytes 2.0 MiB less room " in lines[1]
    assert main(["memory", "stats", "--state-dir", state, "memory.capacity=4",
                 "memory.holdout_fraction=0.5", "memory.jpeg_quality=100"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("samples 6/4 ")
    # 5 training samples in 2 training slots, 1 held out in 2 held-out slots: 3 go (before,
    # "by 2": the sample count less the capacity, blind to the two bounds)
    assert lines[1] == ("  over these settings' bounds: 5 training samples exceed the 2 "
                        "training slots (memory.capacity 4 less the 2 held-out slots of "
                        "memory.holdout_fraction 0.5). The runtime (or memory verify) evicts "
                        "samples to fit when it opens the memory with these settings, "
                        "pseudo-labelled ones first, operator answers last")
    assert main(["memory", "stats", "--json", "--state-dir", state, "memory.capacity=4",
                 "memory.holdout_fraction=0.5", "memory.jpeg_quality=100",
                 "memory.max_bytes=2MiB"]) == 0  # before: the text's lines had no JSON field
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert stats["over_budget_bytes"] == stats["bytes"] - stats["sample_budget_bytes"] > 0
    assert stats["over_capacity"] == 3 and stats["held_out"] == 1
    with ReplayMemory(tmp_path / "state" / "memory", MemoryConfig(
            capacity=4, holdout_fraction=0.5, jpeg_quality=100)) as m:  # what opening evicts
        assert len(m) == 6 - 3


def test_a_memory_setting_equal_to_the_default_is_used_as_given(tmp_path, capsys):
    """Before: `memory stats memory.capacity=2000` on a device recorded at capacity 10 said the
    device's settings were used instead (2000 is the default, so it looked like no setting)."""
    state = tmp_path / "state"
    with ReplayMemory(state / "memory", MemoryConfig(capacity=10), record_settings=True) as m:
        for _ in range(3):
            m.add(Sample(np.zeros((16, 16, 3), np.uint8), BOX, task="t0"))
    for given, shown in (("memory.capacity=2000", "samples 3/2000 "), (None, "samples 3/10 ")):
        assert main(["memory", "stats", "--state-dir", str(state), *([given] if given else [])]) == 0
        assert capsys.readouterr().out.splitlines()[0].startswith(shown)


def test_remove_refuses_a_capacity_below_the_memorys_and_evicts_nothing(state, capsys):
    """Before: 'memory remove 3 memory.capacity=5' evicted half of the 10 samples for good at
    its opening (then refused the id), as no other writing command does."""
    code = main(["memory", "remove", "3", "--state-dir", str(state), "memory.capacity=5",
                 "memory.holdout_fraction=0.2"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "would evict the device's samples" in err, err
    with ReplayMemory(state / "memory", MemoryConfig(), verify_on_open=False) as m:
        assert len(m) == 10


def test_an_export_into_the_state_directory_is_refused(state, capsys):
    """Before: '--out STATE/memory/images/x' was written, and every later 'memory verify'
    reported it as damage it could not repair (exit 1)."""
    for out in (state / "memory" / "images" / "x", state / "memory" / "exp", state):
        assert main(["memory", "export", "--out", str(out), "--state-dir", str(state)]) == 2
        err = capsys.readouterr().err
        assert "is the state directory" in err and "lies in one of edgecl's folders in it (memory, " \
            "models, labels, learner, metrics, fleet)" in err
    assert not (state / "memory" / "exp").exists()
    # a folder of the user's beside edgecl's is theirs (the message says so)
    assert main(["memory", "export", "--out", str(state / "exports"), "--state-dir", str(state)]) == 0
    assert main(["memory", "verify", "--state-dir", str(state)]) == 0
    assert not (state / "memory" / "images" / "x").exists()
    assert main(["memory", "verify", "--state-dir", str(state)]) == 0


def test_importing_the_state_directory_into_itself_is_refused(state, capsys):
    """Before: 'labels import --state-dir STATE STATE' stored the memory's own 10 images again
    (held-out ones copied into training)."""
    for source in (state, state / "memory", state / "memory" / "images"):
        assert main(["labels", "import", str(source), "--state-dir", str(state)]) == 2
        assert "inside the state directory" in capsys.readouterr().err
    with ReplayMemory(state / "memory", MemoryConfig(), verify_on_open=False) as m:
        assert len(m) == 10


def test_an_export_says_which_class_was_merged_into_another(tmp_path, capsys):
    """Before: after 'classes merge Persn Person' the exported data.yaml listed Persn as a
    class like any other (its id keeps its place; no label uses it)."""
    from edgecl.models.classes import ClassRegistry

    state = tmp_path / "state"
    with ReplayMemory(state / "memory", MemoryConfig(holdout_fraction=0.0),
                      names={0: "Person", 1: "Persn"}) as m:
        for i in range(3):
            m.add(Sample(np.full((24, 24, 3), i * 20, np.uint8), BOX * [0, 1, 1, 1, 1], task="t0"))
    ClassRegistry(state).add(["Person", "Persn"])
    assert main(["classes", "merge", "Persn", "Person", "--state-dir", str(state)]) == 0
    capsys.readouterr()
    out = tmp_path / "export"
    assert main(["memory", "export", "--out", str(out), "--state-dir", str(state)]) == 0
    text = (out / "data.yaml").read_text(encoding="utf-8")
    assert '  1: "Persn"  # merged into "Person", no labels\n' in text
    assert yaml.safe_load(text)["names"] == {0: "Person", 1: "Persn"}
    assert main(["memory", "stats", "--state-dir", str(state), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert stats["per_class"] == {"0": 3}


def test_an_export_onto_a_full_disk_names_the_export_not_the_memory(state, tmp_path, capsys,
                                                                     monkeypatch):
    """Before: 'No space left on device: STATE/memory/snapshots/.../00000027.jpg', the file
    copied from (the device's own card read as full)."""
    import errno
    import shutil

    real = shutil.copyfile
    calls = []

    def full(src, dst, **kw):
        calls.append(dst)
        if len(calls) > 3:
            err = OSError(errno.ENOSPC, "No space left on device")
            err.filename, err.filename2 = str(src), str(dst)  # as shutil's sendfile path does
            raise err
        return real(src, dst, **kw)

    monkeypatch.setattr(shutil, "copyfile", full)
    out = tmp_path / "usb" / "export"
    assert main(["memory", "export", "--out", str(out), "--state-dir", str(state)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(out) in err and str(state) not in err
    assert "No space left on device" in err
    assert not out.exists() and list((tmp_path / "usb").iterdir()) == []


def test_stats_and_export_read_a_full_card_from_a_private_copy(state, tmp_path, capsys,
                                                                monkeypatch):
    """Before: 'cannot open the memory index: the disk is full' for the commands that only read
    (the index's open writes its schema and WAL). A writing command still says the disk is full."""
    import edgecl.continual.memory as memory_module
    from edgecl.errors import StorageError

    real = memory_module.ReplayMemory

    def full_disk(*args, read_only=False, **kwargs):
        if not read_only:
            raise StorageError("cannot open the memory index: the disk is full (0 KiB free; "
                               "SQLite: disk I/O error)")
        return real(*args, read_only=read_only, **kwargs)

    monkeypatch.setattr(memory_module, "ReplayMemory", full_disk)
    monkeypatch.setattr("edgecl.continual.memory.faults._free_bytes", lambda where: 0)
    assert main(["memory", "stats", "--json", "--state-dir", str(state)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1])["samples"] == 10
    assert captured.err == ("warning: cannot open the memory index: the disk is full (0 KiB free; "
                            "SQLite: disk I/O error); reading a private copy of the index "
                            "instead\n")
    assert main(["memory", "export", "--out", str(tmp_path / "e"), "--state-dir", str(state)]) == 0
    assert len(list((tmp_path / "e" / "images").iterdir())) == 10
    capsys.readouterr()
    assert main(["memory", "remove", "3", "--state-dir", str(state)]) == 2
    assert "the disk is full" in capsys.readouterr().err
