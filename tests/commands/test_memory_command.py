"""``edgecl memory stats | verify | export`` through the real CLI entry point."""

import json

import numpy as np
import pytest
import yaml

from edgecl.cli import main
from edgecl.config import MemoryConfig
from edgecl.continual.memory import ReplayMemory, Sample

BOX = np.array([[1, 0.5, 0.5, 0.25, 0.5]], np.float32)


@pytest.fixture()
def state(tmp_path):
    cfg = MemoryConfig(holdout_fraction=0.3, seed=2)
    with ReplayMemory(tmp_path / "state" / "memory", cfg, names={0: "car", 1: "drone"}) as m:
        for i in range(10):
            m.add(Sample(np.full((24, 24, 3), i * 20, np.uint8), BOX, task=f"t{i // 5}"))
    return tmp_path / "state"


def test_stats_json_is_the_last_line(state, capsys):
    assert main(["memory", "stats", "--json", "--state-dir", str(state)]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["samples"] == 10 and out["per_class"] == {"1": 10}
    assert sum(out["per_task"].values()) + out["held_out"] == 10 and out["bytes"] > 0


def test_stats_text(state, capsys):
    assert main(["memory", "stats", "--state-dir", str(state)]) == 0
    assert "class 1 drone: 10" in capsys.readouterr().out


def test_verify_exit_codes(state, capsys):
    assert main(["memory", "verify", "--state-dir", str(state)]) == 0
    (state / "memory" / "images" / "00000003.jpg").unlink()
    assert main(["memory", "verify", "--no-repair", "--state-dir", str(state)]) == 1
    assert main(["memory", "verify", "--json", "--state-dir", str(state)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["missing_rows"] == [3] and report["ok"]


def test_export_writes_a_yolo_dataset(state, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["memory", "export", "--out", str(out), "--state-dir", str(state)]) == 0
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["names"] == {0: "car", 1: "drone"} and data["nc"] == 2
    train = (out / "train.txt").read_text().split()
    val = (out / "val.txt").read_text().split()
    assert len(train) + len(val) == 10 and data["val"] in ("val.txt", "train.txt")
    for img in train + val:
        label = img.replace("/images/", "/labels/").replace(".jpg", ".txt")
        assert open(label).read().startswith("1 ")
    assert main(["memory", "export", "--out", str(out), "--state-dir", str(state)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_missing_memory_is_a_clear_error(tmp_path, capsys):
    assert main(["memory", "stats", "--state-dir", str(tmp_path / "nothing")]) == 2
    assert "no replay memory at" in capsys.readouterr().err
