"""``edgecl bench cl``: label filtering, replay sizing, metrics of a run, and a tiny end-to-end run."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgecl.bench import cl, cl_protocol
from edgecl.bench.cl_data import DataView, filter_label_text, prepare_view
from edgecl.bench.cl_protocol import (
    ProtocolSettings,
    ReplayPool,
    RunSpec,
    choose_replay,
    replay_size,
)
from edgecl.data.scenario import class_names
from edgecl.data.tasks import label_path_for, load_tasks
from edgecl.errors import ConfigError, LabelError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/synthetic_yolo.py
from synthetic_yolo import draw_dataset


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _classes(label_file: Path) -> list[int]:
    return [int(line.split()[0]) for line in label_file.read_text().splitlines() if line.strip()]


# --- label filtering -------------------------------------------------------------------------

def test_filter_label_text_drops_future_classes_and_renumbers():
    text = "0 0.5 0.5 0.1 0.1\n3 0.2 0.2 0.1 0.1\n\n1 0.3 0.3 0.2 0.2\n2 0.9 0.9 0.1 0.1\n"
    assert filter_label_text(text, {0: 0, 1: 1}) == ("0 0.500000 0.500000 0.100000 0.100000\n"
                                                     "1 0.300000 0.300000 0.200000 0.200000\n")
    assert filter_label_text(text, {2: 0, 0: 1}) == ("1 0.500000 0.500000 0.100000 0.100000\n"
                                                     "0 0.900000 0.900000 0.100000 0.100000\n")
    assert filter_label_text(text, {}) == ""


@pytest.mark.parametrize("row", ["x 0.5 0.5 0.1 0.1", "0 0.5 0.5 0.1", "1.5 0.5 0.5 0.1 0.1"])
def test_filter_label_text_rejects_malformed_rows(row):
    with pytest.raises(LabelError, match="f.txt:2"):
        filter_label_text(f"0 0.1 0.1 0.1 0.1\n{row}\n", {0: 0}, "f.txt")


@pytest.fixture()
def two_task_data(tmp_path) -> Path:
    """Task 'a' introduces class 1, task 'b' class 0; every image shows both classes."""
    root = tmp_path / "data"
    lists = root / "lists"
    lists.mkdir(parents=True)
    for task in ("a", "b"):
        for split in ("train", "test"):
            images = draw_dataset(root / task / split, 4, classes=(0, 1), prefix=f"{task}{split}",
                                  seed=len(task + split))
            (lists / f"{task}_{split}.txt").write_text("".join(f"{p}\n" for p in images))
    (root / "tasks.yaml").write_text(
        "names: {0: red, 1: green}\ntasks:\n"
        + "".join(f"  - name: {t}\n    classes: [{c}]\n    train: lists/{t}_train.txt\n"
                  f"    test: lists/{t}_test.txt\n" for t, c in (("a", 1), ("b", 0))))
    return root / "tasks.yaml"


def test_view_filters_train_labels_to_seen_classes_in_introduction_order(two_task_data, tmp_path):
    task_set = load_tasks(two_task_data)
    view = prepare_view(task_set, tmp_path / "work")
    assert view.task_classes == ((0,), (1,))
    assert view.names == {0: "green", 1: "red"}
    for original, copy in zip(task_set.tasks[0].train, view.train[0]):
        # task a knows only 'green' (original 1 -> 0); the 'red' boxes are dropped
        kept = [c for c in _classes(label_path_for(original)) if c == 1]
        assert _classes(label_path_for(copy)) == [0] * len(kept)
        assert copy.stat().st_ino == original.stat().st_ino  # a hard link, not a symlink
        assert not copy.is_symlink()
    for original, copy in zip(task_set.tasks[1].train, view.train[1]):
        assert _classes(label_path_for(copy)) == [1 - c for c in _classes(label_path_for(original))]
    for original, copy in zip(task_set.tasks[0].test, view.test[0]):
        # test labels keep every introduced class; evaluation picks the task's own
        assert _classes(label_path_for(copy)) == [1 - c for c in _classes(label_path_for(original))]
    assert view.joint[0] == ()
    assert len(view.joint[1]) == len(task_set.tasks[0].train)
    for original, copy in zip(task_set.tasks[0].train, view.joint[1]):
        # joint at task b replays task a's images with every class seen by then: 'red' too
        assert _classes(label_path_for(copy)) == [1 - c for c in _classes(label_path_for(original))]
        assert copy.stat().st_ino == original.stat().st_ino
    stamp = label_path_for(view.train[0][0]).stat().st_mtime_ns
    again = prepare_view(task_set, tmp_path / "work")
    assert again == view
    assert label_path_for(view.train[0][0]).stat().st_mtime_ns == stamp  # reused, not rewritten


def test_view_refuses_a_class_id_no_class_of_the_dataset_has(two_task_data, tmp_path):
    """Before: '9 0.5 0.5 0.1 0.1' in a training label and '7 ...' in a test label were dropped
    without a word (the test boxes gone changed the mAP reported), while a malformed row in
    the same file stopped the run."""
    task_set = load_tasks(two_task_data)
    label = label_path_for(task_set.tasks[1].test[0])
    label.write_text(label.read_text() + "7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(LabelError, match=f"^{label}:\\d+: class 7 "):
        prepare_view(task_set, tmp_path / "work")
    assert filter_label_text("0 0.5 0.5 0.1 0.1\n3 0.2 0.2 0.1 0.1\n", {0: 0}, "f.txt", nc=4) == (
        "0 0.500000 0.500000 0.100000 0.100000\n")  # a class of no task yet: dropped


def test_view_refuses_an_image_that_does_not_decode_naming_the_users_file(two_task_data, tmp_path):
    """Before: ultralytics skipped it with 'ignoring corrupt image/label: No module named
    'pi_heif'', naming the benchmark's work copy instead of the user's file."""
    task_set = load_tasks(two_task_data)
    image = task_set.tasks[0].train[1]
    image.write_bytes(b"this is no image at all")
    with pytest.raises(ConfigError, match=f"^{image}: does not decode as an image .*; fix the "
                                          f"file, or take it out of the task's list$"):
        prepare_view(task_set, tmp_path / "work")


# --- replay-set sizing -----------------------------------------------------------------------

@pytest.mark.parametrize("budget, n, expected", [
    (0.05, 42, 2),    # 2.1
    (0.10, 42, 4),    # 4.2
    (0.05, 168, 8),   # 8.4
    (0.10, 45, 5),    # 4.5: halves round up
    (0.05, 10, 1),    # 0.5 -> 1
    (0.01, 10, 1),    # 0.1: a positive budget replays at least one image
    (1.0, 7, 7),
    (None, 42, 0),
    (0.10, 0, 0),
])
def test_replay_size_hand_computed(budget, n, expected):
    assert replay_size(budget, n) == expected


def test_choose_replay_sizes_from_earlier_tasks(tmp_path):
    tasks = [tuple(draw_dataset(tmp_path / f"t{i}", n, prefix=f"t{i}_", seed=i))
             for i, n in enumerate((12, 9, 5))]
    relabelled = tuple(draw_dataset(tmp_path / "joint2", 21, prefix="j_", seed=7))
    view = DataView(root=tmp_path, data_hash="x", task_names=("t0", "t1", "t2"),
                    task_classes=((0,), (1,), (2,)), names={0: "a", 1: "b", 2: "c"},
                    train=tuple(tasks), test=tuple(tasks), joint=((), tasks[0], relabelled))
    pool = ReplayPool()
    pool.add("t0", list(tasks[0]))
    pool.add("t1", list(tasks[1]))
    settings = ProtocolSettings(imgsz=64)
    er = choose_replay(view, pool, RunSpec("er", 0.25, 0), None, 2, settings)
    assert len(er) == 5  # round(0.25 * 21 = 5.25)
    assert set(er) <= set(tasks[0]) | set(tasks[1]) and len(set(er)) == 5
    assert choose_replay(view, pool, RunSpec("er", 0.25, 0), None, 2, settings) == er  # seeded
    assert choose_replay(view, pool, RunSpec("joint", None, 0), None, 2, settings) == \
        list(relabelled)  # the copies labelled with every class seen so far
    assert choose_replay(view, pool, RunSpec("finetune", None, 0), None, 2, settings) == []
    assert choose_replay(view, ReplayPool(), RunSpec("er", 0.25, 0), None, 0, settings) == []


def test_pool_records_and_recall_updates(tmp_path):
    images = draw_dataset(tmp_path / "d", 3, classes=(0, 1))
    pool = ReplayPool()
    assert pool.add("t0", images, baselines=[0.5, None, 1.0]) == [0, 1, 2]
    records = pool.records()
    assert [r.recall_baseline for r in records] == [0.5, None, 1.0]
    assert records[0].classes == (0,) and records[1].classes == (0, 1)
    assert pool.records(held_out=True) == [] and pool.records(task="other") == []
    assert pool.update_recall([2, 7], [0.25, 0.0]) == 1
    assert pool.records(ids=[2])[0].last_recall == 0.25
    sample = pool.get([1])[0]
    assert sample.image_path == images[1] and sample.labels.shape == (2, 5)
    assert sample.load_image().shape == (64, 64, 3)


# --- options and metrics ---------------------------------------------------------------------

def test_parse_options_and_plan():
    assert cl.parse_budgets("0.10, 5%,0.1") == [0.05, 0.1]
    with pytest.raises(ConfigError, match="fraction"):
        cl.parse_budgets("10")
    with pytest.raises(ConfigError, match="did you mean 'far'"):
        cl.parse_strategies("er,fra")
    plan = cl.plan_runs(["finetune", "er", "joint"], [0.05, 0.1], 2)
    assert len(plan) == 2 * (1 + 2 + 1)
    assert RunSpec("finetune", None, 1) in plan and RunSpec("er", 0.1, 1) in plan
    assert all(s.budget is None for s in plan if s.strategy in ("finetune", "joint"))


def test_run_record_metrics_from_a_hand_matrix():
    nan = math.nan
    matrix = np.array([[0.5, nan, nan], [0.3, 0.6, nan], [0.2, 0.4, 0.7]])
    view = DataView(root=Path("."), data_hash="h", task_names=("a", "b", "c"),
                    task_classes=((0,), (1,), (2,)), names={0: "x", 1: "y", 2: "z"},
                    train=((), (), ()), test=((), (), ()), joint=((), (), ()))
    record = cl.run_record(RunSpec("er", 0.1, 3), ProtocolSettings(), view,
                           {"matrix": matrix, "dece": [0.1, nan, 0.3], "tasks": [], "seconds": 12.34})
    assert record["matrix"] == [[0.5, None, None], [0.3, 0.6, None], [0.2, 0.4, 0.7]]
    assert record["acc"] == pytest.approx((0.2 + 0.4 + 0.7) / 3)
    assert record["bwt"] == pytest.approx(((0.2 - 0.5) + (0.4 - 0.6)) / 2)
    assert record["forgetting_per_task"][:2] == pytest.approx([0.3, 0.2])
    assert record["forgetting_per_task"][2] is None  # the last task cannot be forgotten yet
    assert record["forgetting"] == pytest.approx(0.25)
    assert record["dece"] == pytest.approx(0.2)
    assert (record["seed"], record["budget"], record["seconds"]) == (3, 0.1, 12.3)
    json.dumps(record, allow_nan=False)


def test_a_joint_record_from_before_joint_saw_every_label_is_run_again():
    """Joint's replayed images once held only their own task's classes (a car image's bicycles
    taught as background); its stored results are not reused for today's joint."""
    view = DataView(root=Path("."), data_hash="h", task_names=("a", "b"),
                    task_classes=((0,), (1,)), names={0: "x", 1: "y"},
                    train=((), ()), test=((), ()), joint=((), ()))
    outcome = {"matrix": np.array([[0.5, math.nan], [0.4, 0.6]]), "dece": [None, None],
               "tasks": [], "seconds": 1.0}
    settings = ProtocolSettings()
    for spec in (RunSpec("joint", None, 0), RunSpec("er", 0.1, 0)):
        record = cl.run_record(spec, settings, view, outcome)
        assert cl.same_run(record, spec, settings, "h")
        record.pop("joint_labels", None)  # as stored before
        assert cl.same_run(record, spec, settings, "h") is (spec.strategy == "er")


# --- end to end ------------------------------------------------------------------------------

def _run(out: Path, capsys, *extra: str) -> dict:
    parser = argparse.ArgumentParser()
    cl.add_arguments(parser)
    scenario = [] if "--data" in extra else ["--tasks", "2", "--images-per-task", "10"]
    args = parser.parse_args([*scenario, "--imgsz", "64",
                              "--first-task-steps", "3", "--steps-per-task", "2", "--batch", "4",
                              "--strategies", "finetune,er,far", "--threads", "1",
                              "--out", str(out), *extra])
    assert cl.run(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    return json.loads(lines[-1]) | {"_lines": lines}


def test_end_to_end_tiny_run_is_complete_consistent_and_resumable(tmp_path, capsys, monkeypatch):
    out = tmp_path / "bench"
    summary = _run(out, capsys, "--budgets", "0.2,0.5")
    runs = json.loads((out / "results.json").read_text())
    keys = {(r["strategy"], r["budget"], r["seed"]) for r in runs}
    assert keys == {("finetune", None, 0), ("er", 0.2, 0), ("er", 0.5, 0), ("far", 0.2, 0),
                    ("far", 0.5, 0)}
    assert len(runs) == 5 and summary["runs"] == 5 and summary["new_runs"] == 5
    assert len([line for line in summary["_lines"] if " seed 0: ACC " in line]) == 5
    # task 1 is learnt once per seed and shared: identical first row for every strategy
    assert sum(bool(r["log"][0].get("shared")) for r in runs) == 4
    assert len({r["matrix"][0][0] for r in runs}) == 1
    for run in runs:
        matrix = np.array([[np.nan if v is None else v for v in row] for row in run["matrix"]])
        assert matrix.shape == (2, 2) and run["matrix"][0][1] is None
        assert np.isfinite(matrix[0, 0]) and np.isfinite(matrix[1]).all()
        assert run["acc"] == pytest.approx(matrix[1].mean())
        assert run["bwt"] == pytest.approx(matrix[1, 0] - matrix[0, 0])
        assert run["forgetting"] == pytest.approx(matrix[0, 0] - matrix[1, 0])
        assert [t["task"] for t in run["log"]] == ["t1", "t2"]
        assert [t["steps"] for t in run["log"]] == [3, 2]
        # t1 has 6 training images (10 - 2 val - 2 test): 20% -> 1, 50% -> 3
        expected = {None: 0, 0.2: 1, 0.5: 3}[run["budget"]]
        assert [t["replay"] for t in run["log"]] == [0, expected]
        assert run["ider"] is False and run["settings"]["imgsz"] == 64
    table = (out / "table.md").read_text()
    assert "| strategy | 20% | 50% | no budget |" in table
    # before: '[[0, 1], [2, 3]]', the work copy's renumbered ids, which contradicted the ids
    # of a user's own tasks.yaml
    names = class_names(2)
    assert (f"- classes per task: t1: {names[0]}, {names[1]}; t2: {names[2]}, {names[3]}\n"
            in table)
    assert all(f"| {s} |" in table for s in ("finetune", "er", "far"))
    for png in summary["plots"]:
        assert Path(png).is_file() and Path(png).read_bytes()[:4] == b"\x89PNG"
    assert len(summary["plots"]) == 4

    def must_not_run(*_args, **_kwargs):
        raise AssertionError("a finished run was run again")

    monkeypatch.setattr(cl_protocol, "run_protocol", must_not_run)
    again = _run(out, capsys, "--budgets", "0.5,0.2")
    assert (again["new_runs"], again["skipped_runs"], again["runs"]) == (0, 5, 5)
    assert json.loads((out / "results.json").read_text()) == runs
    monkeypatch.undo()
    more = _run(out, capsys, "--budgets", "0.2,0.5,1.0", "--strategies", "er")
    assert (more["new_runs"], more["skipped_runs"], more["runs"]) == (1, 2, 3)
    assert len(json.loads((out / "results.json").read_text())) == 6


def test_strategies_are_taken_in_any_case():
    """Before: '--strategies ER' was refused as an unknown strategy, while '--backends ONNX'
    was taken."""
    assert cl.parse_strategies("ER,FAR+LwF,Joint,er") == ["er", "far+lwf", "joint"]


def test_parse_strategies_with_modifiers():
    assert cl.parse_strategies("er+lwf, class_balanced+pl+lwf,finetune+lwf") == [
        "er+lwf", "class_balanced+pl+lwf", "finetune+lwf"]
    with pytest.raises(ConfigError, match="did you mean 'lwf'"):
        cl.parse_strategies("er+lfw")
    with pytest.raises(ConfigError, match="joint"):
        cl.parse_strategies("joint+lwf")
    plan = cl.plan_runs(["finetune+lwf", "er+pl"], [0.1], 1)
    assert plan == [RunSpec("finetune+lwf", None, 0), RunSpec("er+pl", 0.1, 0)]
    assert plan[1].base == "er" and plan[1].modifiers == {"pl"}


def test_end_to_end_tiny_run_with_the_new_methods(tmp_path, capsys, caplog):
    out = tmp_path / "bench"
    summary = _run(out, capsys, "--budgets", "0.5", "--strategies",
                   "class_balanced,er+lwf,class_balanced+pl+lwf,finetune+lwf",
                   "--pseudo-conf", "0.001")
    runs = {r["strategy"]: r for r in json.loads((out / "results.json").read_text())}
    assert set(runs) == {"class_balanced", "er+lwf", "class_balanced+pl+lwf", "finetune+lwf"}
    for run in runs.values():
        assert np.isfinite(run["acc"]) and [t["steps"] for t in run["log"]] == [3, 2]
        cal = run["calibration"]
        assert cal["protocol"]["iou_thr"] == 0.5 and "matching" in cal["protocol"]
    assert runs["class_balanced+pl+lwf"]["log"][1]["pseudo_boxes"] >= 0
    assert runs["class_balanced"]["log"][1]["replay"] == 3
    table = (out / "table.md").read_text()
    assert "D-ECE raw | D-ECE post-hoc" in table and "| class_balanced+pl+lwf |" in table
    import shutil

    shutil.rmtree(out / "work")  # a report writes no data (before: it rebuilt the work copy)
    again = _run(out, capsys, "--budgets", "0.5", "--strategies", "class_balanced,er",
                 "--pseudo-conf", "0.001", "--report-only")
    assert (again["new_runs"], again["runs"]) == (0, 1)
    # before: er, planned and never made, left out of the table without a word
    assert again["missing_runs"] == [{"strategy": "er", "budget": 0.5, "seed": 0}]
    assert ("the report leaves out 1 planned run(s) not made yet: er 50% seed 0; run the same "
            "command without --report-only to make them (finished runs are reused)"
            in caplog.messages)
    assert "Not in this table: er 50% seed 0 (planned, not made yet)." in \
        (out / "table.md").read_text()
    assert not (out / "work").exists()
    with pytest.raises(ConfigError, match=r"--report-only: .*scenario holds no scenario of these "
                                          r"settings"):  # before: a new scenario was generated
        _run(out, capsys, "--budgets", "0.5", "--strategies", "er", "--report-only",
             "--scenario-seed", "4")
    with pytest.raises(ConfigError, match=r"--report-only: none of the 4 run\(s\) in .* was made "
                                          r"with these strategies"):
        _run(out, capsys, "--budgets", "0.5", "--strategies", "er", "--report-only")


@pytest.mark.parametrize("change, problem", [
    ({"acc": "x"}, "acc is 'x', not a number in [-1, 1]"),  # before: an internal error, exit 1
    ({"acc": float("nan")}, "acc is nan, not a number in [-1, 1]"),
    ({"bwt": 1e308}, "bwt is 1e+308, not a number in [-1, 1]"),  # before: numpy warnings
    ({"matrix": [[None]]}, "matrix is not 2 x 2 mAP values in [0, 1]"),
    ({"matrix": [[0.1, None], [0.2, "0.3"]]}, "matrix is not 2 x 2 mAP values in [0, 1]"),
    ({"matrix": [[0.1, None], [0.2, float("inf")]]}, "matrix is not 2 x 2 mAP values in [0, 1]"),
    ({"seconds": None}, "seconds is None, not a number of seconds"),
    ({"budget": True}, "budget is True, not a fraction in [0, 1]"),
    ({"calibration": {"dece_raw": "high"}}, "calibration is not D-ECE figures"),
    ({}, "it repeats run 1"),  # before: counted as a second seed
    ({"acc": 10 ** 4000}, "acc is 1" + "0" * 36 + "..., not a number in [-1, 1]"),
])
def test_a_damaged_run_in_results_json_is_one_line_naming_it(tmp_path, change, problem):
    good = {"strategy": "er", "budget": 0.2, "seed": 0, "tasks": ["t1", "t2"],
            "matrix": [[0.3, None], [0.2, 0.4]], "acc": 0.3, "bwt": -0.1, "forgetting": 0.1,
            "dece": None, "seconds": 12.5, "first_task_s": 3.0, "calibration": None}
    path = tmp_path / "results.json"
    path.write_text(json.dumps([good, good | change]))
    with pytest.raises(ConfigError) as caught:
        cl.load_results(path)
    assert str(caught.value) == (f"{path}: run 2 is damaged ({problem}); remove that run from the "
                                 f"file (it is then run again) or move the file away")
    path.write_text(json.dumps([good]))
    assert cl.load_results(path) == [good]
    for text in ("[" * 100_000 + "]" * 100_000, "[" + "9" * 5000 + "]"):
        path.write_text(text)  # before: internal errors (RecursionError, ValueError)
        with pytest.raises(ConfigError, match=r"results.json: not a results file \("):
            cl.load_results(path)


def test_an_out_where_the_results_cannot_go_is_refused_before_any_training(tmp_path, capsys):
    """Before: a folder named results.json (or table.md) in --out was found only when the
    first run had trained, and its minutes were lost."""
    out = tmp_path / "bench"
    (out / "results.json").mkdir(parents=True)
    with pytest.raises(ConfigError) as caught:
        _run(out, capsys)
    assert str(caught.value) == (f"--out: {out / 'results.json'} is not a file (a folder?): the "
                                 f"benchmark writes its results there; move it away")
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]  # no scenario, no work/
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "table.md").write_text("my notes")
    with pytest.raises(ConfigError) as caught:  # before: replaced by the benchmark's table
        _run(mine, capsys)
    assert str(caught.value) == (f"--out {mine} holds table.md but no results.json: no benchmark "
                                 f"wrote it, and it would be replaced; give another --out")
    assert (mine / "table.md").read_text() == "my notes"
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "results.json").write_text("[{")
    with pytest.raises(ConfigError, match="results.json: not valid JSON"):
        _run(damaged, capsys)  # before: refused after the scenario and work copy were made
    assert sorted(p.name for p in damaged.iterdir()) == ["results.json"]
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "scenario").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="scenario is a link"):
        _run(linked, capsys)  # before: the scenario it pointed at was rewritten


def test_report_only_with_nothing_run_is_refused_before_any_data_is_made(tmp_path, capsys):
    out = tmp_path / "empty"
    with pytest.raises(ConfigError, match="--report-only: no finished run to report: .*"
                                          "results.json does not exist"):
        _run(out, capsys, "--report-only")
    assert not out.exists()


def test_progress_in_a_log_is_one_plain_line_per_task(capsys):
    """bench cl's tqdm bars wrote carriage returns and cursor moves into a redirected stderr,
    and the per-run result lines were glued onto bar fragments."""
    from edgecl.bench.cl import _Bars

    bars = _Bars(3)  # stderr is captured here: not a terminal
    bars.label = "er 10% seed 0"
    bars.phase("train", 10, "step")
    bars.advance(4, "loss 1.2")
    bars.task_done()
    bars.close()
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b[" not in err
    assert err.splitlines() == [err.splitlines()[0]]
    assert err.startswith("bench cl: 1/3 tasks done (er 10% seed 0), ")


def test_a_given_task_one_model_is_named_in_the_header_and_a_size_mismatch_is_said(
        two_task_data, tmp_path, caplog):
    """table.md read 'YOLO11n from scratch, ... 1000 steps for task 1 ...; task 1's model
    given', and a 320 px checkpoint evaluated at 64 px scored 0 everywhere without a word."""
    from edgecl.models.checkpoint import save_checkpoint
    from edgecl.ultra import build_detection_model

    pt = save_checkpoint(build_detection_model(2, names={0: "red", 1: "green"}), tmp_path / "t1.pt",
                         meta={"names": {0: "red", 1: "green"}, "imgsz": 320})
    view = prepare_view(load_tasks(two_task_data), tmp_path / "work")
    header = cl._header(two_task_data, view, ProtocolSettings(imgsz=64, first_task_model=str(pt)), 1)
    line = next(h for h in header if "YOLO11n" in h)
    assert line.startswith(f"- YOLO11n, task 1's model given (`{pt}`), 64 px")
    assert "from scratch" not in line and "steps for task 1" not in line
    with caplog.at_level("WARNING"):
        cl._check_first_task_model(pt, 64)
    assert f"--first-task-model {pt} was trained at 320 px; this run trains and evaluates every " \
           "task at --imgsz 64 (give --imgsz 320 to match it)" in caplog.text
    caplog.clear()
    cl._check_first_task_model(pt, 320)
    assert caplog.text == ""


def test_a_first_task_model_that_does_not_load_is_refused_before_any_data(tmp_path, capsys):
    """Before: a junk --first-task-model was refused only after the scenario and the work
    folder were written into --out."""
    junk = tmp_path / "junk.pt"
    junk.write_text("junk\n")
    out = tmp_path / "bench"
    with pytest.raises(ConfigError, match=r"^--first-task-model: cannot read checkpoint .*junk\.pt"):
        _run(out, capsys, "--first-task-model", str(junk))
    assert not out.exists()
    with pytest.raises(ConfigError, match=r"^--first-task-model: /dev/zero is a device, not a "
                                          r"regular file$"):  # before: "no file at /dev/zero"
        _run(out, capsys, "--first-task-model", "/dev/zero")
    with pytest.raises(ConfigError, match=r"is a folder, not a regular file$"):
        _run(out, capsys, "--first-task-model", str(tmp_path))


def test_a_model_that_detects_nothing_gets_no_d_ece_change():
    """A model with mAP 0 read 'D-ECE 0.976 -> 0.005 (-100%)', like a great calibration."""
    from edgecl.bench.cl_report import _detail_table

    base = {"strategy": "er", "budget": 0.1, "seeds": 1, "bwt": 0.0, "bwt_std": None,
            "forgetting": 0.0, "forgetting_std": None, "seconds": 5.0, "acc_std": None}
    rows = _detail_table({"er 10%": dict(base, acc=0.0, dece_raw=0.976, dece_posthoc=0.005),
                          "far 10%": dict(base, acc=0.2, dece_raw=0.4, dece_posthoc=0.1)})
    assert "| 0.976 | 0.005 | n/a (ACC < 1 %) |" in rows[2]
    assert "| 0.400 | 0.100 | -75% |" in rows[3]


def test_the_run_that_learnt_the_shared_task_1_is_not_charged_for_it():
    """Task 1 is learnt by the first run of a seed and loaded by the others: before, that run
    (finetune, first in the plan) read 400 s a run against ER's 150 s."""
    from edgecl.bench.cl_report import summarise

    def record(strategy, seconds, first, shared):
        return {"strategy": strategy, "budget": None if strategy == "finetune" else 0.1, "seed": 0,
                "acc": 0.2, "bwt": 0.0, "forgetting": 0.0, "dece": None, "seconds": seconds,
                "first_task_s": first, "log": [{"task": "a", "shared": shared}]}

    trained = record("finetune", 400.0, 260.0, False)
    loaded = record("er", 150.0, 4.0, True)
    summary = summarise([trained, loaded, dict(record("joint", 90.0, 0, True), first_task_s=None)])
    assert [e["seconds"] for e in summary.values()] == [140.0, 146.0, 90.0]
    assert cl._run_line("finetune", trained).endswith(
        "(140 s after task 1; task 1, shared by every run of this seed, 260 s)")
    assert cl._run_line("er 10%", loaded).endswith("(146 s after task 1)")


def test_the_header_names_the_given_task_1_models_architecture(tmp_path):
    """Before: 'YOLO11n, task 1's model given' whatever the checkpoint was."""
    from ultralytics.nn.tasks import DetectionModel

    from edgecl.models.checkpoint import save_checkpoint

    model = DetectionModel("yolov8n.yaml", nc=2, verbose=False)
    model.names = {0: "a", 1: "b"}
    pt = save_checkpoint(model, tmp_path / "v8.pt", meta={"names": model.names, "imgsz": 64})
    assert cl._architecture(pt) == "YOLOv8n"
    (tmp_path / "bad.pt").write_bytes(b"x")
    assert cl._architecture(tmp_path / "bad.pt") == "the given model"


def test_a_single_task_is_refused(tmp_path, capsys):
    from edgecl.data.scenario import make_scenario

    with pytest.raises(ConfigError, match="--tasks 1: a continual-learning benchmark needs at "
                                          "least 2 tasks"):
        _run(tmp_path / "a", capsys, "--tasks", "1")
    assert not (tmp_path / "a").exists()
    one = make_scenario(tmp_path / "one", tasks=1, images_per_task=10, imgsz=64, seed=0)
    with pytest.raises(ConfigError, match=f"--data {one}: a continual-learning benchmark needs "
                                          f"at least 2 tasks; {one} has 1"):
        _run(tmp_path / "b", capsys, "--data", str(one))


def test_a_refused_data_argument_leaves_no_empty_out_folder(tmp_path, capsys):
    """Before: '--data notes.md --out runs' said why in one line and left an empty runs/."""
    notes = tmp_path / "notes.md"
    notes.write_text("# not a dataset\n")
    out = tmp_path / "runs"
    with pytest.raises(ConfigError):
        _run(out, capsys, "--data", str(notes))
    assert not out.exists()
    kept = tmp_path / "kept"
    kept.mkdir()  # a folder the user made stays
    with pytest.raises(ConfigError):
        _run(kept, capsys, "--data", str(notes))
    assert kept.is_dir()
