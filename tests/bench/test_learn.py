"""``edgecl bench learn`` at toy size: one JSON object with both trainers' figures and the split."""

import json

from edgecl.cli import main
from edgecl.data.scenario import make_scenario

KEYS = {"edgecl_images_per_s", "ultralytics_images_per_s", "ratio", "edgecl_map50_95",
        "ultralytics_map50_95", "select_s", "train_s", "evaluate_s", "calibrate_s", "export_s",
        "stage_s"}


def test_bench_learn_json(tmp_path, capsys, monkeypatch, caplog):
    yaml_path = make_scenario(tmp_path / "scn", tasks=2, images_per_task=20, imgsz=64, seed=0)
    monkeypatch.chdir(tmp_path)  # a relative --cache-dir: before, ultralytics joined it twice
    code = main(["bench", "learn", "--data", str(yaml_path), "--steps", "2", "--imgsz", "64",
                 "--batch", "4", "--threads", "1", "--repeats", "1", "--seconds", "4",
                 "--parent-steps", "2", "--cache-dir", "cache", "--json",
                 "learner.bn_recalibration_batches=1", "learner.freeze_layers=10",
                 "replay.samples=4"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert KEYS <= set(result)
    assert result["edgecl_images_per_s"] > 0 and result["ultralytics_images_per_s"] > 0
    assert result["ratio"] > 0
    assert 0.0 <= result["edgecl_map50_95"] <= 1.0 and 0.0 <= result["ultralytics_map50_95"] <= 1.0
    assert result["repeats"][0]["edgecl"]["steps"] == 2
    assert result["repeats"][0]["ultralytics"]["steps"] == 2
    assert result["freeze_layers"] == 10 and result["round_steps"] == 2
    assert result["round_status"] == "staged" and result["export_s"] > 0
    assert all(result[k] >= 0 for k in KEYS if k.endswith("_s"))
    assert list((tmp_path / "cache").glob("parent-*.pt")), "the parent is cached for the next run"
    # before: 'the class registry was empty while the replay memory names 4 class(es)', about
    # the round's state directory the bench made itself
    assert "the class registry was empty" not in caplog.text


def test_bench_learn_refuses_one_task(tmp_path, capsys):
    yaml_path = make_scenario(tmp_path / "scn", tasks=1, images_per_task=10, imgsz=64, seed=0)
    code = main(["bench", "learn", "--data", str(yaml_path), "--cache-dir", str(tmp_path / "c")])
    assert code == 2
    assert "at least 2 tasks" in capsys.readouterr().err
