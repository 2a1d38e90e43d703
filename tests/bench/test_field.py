"""``edgecl bench field``: the hidden-label stream, the simulated operator's budget and delay,
pseudo-label precision, the summary's ratios, the starting model, and a toy end-to-end run."""

import json
import types

import numpy as np
import pytest

from edgecl.bench import field
from edgecl.errors import EdgeclError
from edgecl.frames import Frame


class ListSource:
    names = {0: "car", 1: "truck", 2: "person"}

    def __init__(self, frames):
        self.frames = list(frames)

    def read(self):
        return self.frames.pop(0) if self.frames else None


def frame(i, labels, task):
    return Frame(image=np.zeros((100, 200, 3), np.uint8), frame_id=i, ts_s=float(i), source="t",
                 labels=np.array(labels, np.float32).reshape(-1, 5), task=task)


def test_hidden_source_strips_labels_and_tasks_and_keeps_the_truth():
    src = field.HiddenLabelsSource(ListSource([frame(0, [[0, .5, .5, .2, .2]], "t1"),
                                               frame(1, [], "t2")]))
    first = src.read()
    assert first.labels is None and first.task is None
    assert src.read().labels is None and src.read() is None
    assert src.tasks_seen == ["t1", "t2"]
    assert src.truth[0][1:] == (200, 100, "t1")
    assert not src.labelled and src.names is None
    kept = field.HiddenLabelsSource(ListSource([frame(0, [[1, .5, .5, .2, .2]], "t1")]), hide=False)
    out = kept.read()
    assert out.labels.shape == (1, 5) and out.task is None
    assert kept.labelled and kept.names == {0: "car", 1: "truck", 2: "person"}


def test_the_stream_clock_counts_delivered_frames_only():
    src = field.HiddenLabelsSource(ListSource([frame(i, [], "t1") for i in range(3)]), fps=100.0)
    assert src.stream_time_s() == 0.0
    src.read(), src.read()
    assert src.stream_time_s() == pytest.approx(0.02)
    src.read(), src.read()  # the end of the stream delivers nothing
    assert src.stream_time_s() == pytest.approx(0.03)


@pytest.mark.parametrize("selection, budget, fps, factor, expected", [
    ("default", 10, 10, 2, 10),        # 2 x 10 % of 50 frames per 5 s
    ("random", 10, 10, 2, 10),
    ("default", 5, 10, 1, 3),          # 2.5 rounds up
    ("default", 1, 1, 0.5, 1),         # 0.025: at least one
    ("default", 10, 0, 2, 0),          # unpaced stream: no limit
    ("default", 10, 10, 0, 0),         # factor 0: no limit
    ("ground_truth", 10, 10, 2, 0),    # nothing is queued
])
def test_queue_rate_per_window(selection, budget, fps, factor, expected):
    assert field.queue_rate(selection, budget, fps, factor) == expected


class FakeClock:
    """``time.monotonic`` and ``time.sleep`` on a clock that a sleep moves at once."""

    def __init__(self):
        self.now_s = 0.0

    def monotonic(self):
        return self.now_s

    def sleep(self, seconds):
        self.now_s += max(seconds, 0.0)


def test_the_queue_limit_on_the_stream_clock_spreads_the_offer_over_the_stream(monkeypatch):
    from edgecl.runtime.labels.selection import RateLimiter

    clock = FakeClock()
    monkeypatch.setattr(field, "time", clock)  # 30 s of stream paced at 10 fps, not waited for
    # 10 fps, 30 s of stream, 10 frames per 5 s window: 60 offers, 10 in every window
    src = field.HiddenLabelsSource(ListSource([frame(i, [], "t1") for i in range(300)]), fps=10)
    limit = RateLimiter(10, src.stream_time_s, field.QUEUE_WINDOW_S)
    taken = []
    while (f := src.read()) is not None:
        if limit.allowed():
            limit.take()
            taken.append(f.frame_id)
    assert len(taken) == 60
    assert [sum(1 for t in taken if w * 50 <= t < (w + 1) * 50) for w in range(6)] == [10] * 6
    assert clock.now_s == pytest.approx(30.0)  # 300 frames and the end, paced 0.1 s apart


def test_device_class_ids_follow_the_starting_model_then_the_dataset():
    # hit-uav: the task-1 model names {0: Car, 1: OtherVehicle}; the dataset numbers
    # {0: Car, 1: Person, 2: OtherVehicle, 3: Bicycle}
    names, to_device = field.device_class_ids({0: "Car", 1: "OtherVehicle"},
                                              {0: "Car", 1: "Person", 2: "OtherVehicle",
                                               3: "Bicycle"})
    assert names == {0: "Car", 1: "OtherVehicle", 2: "Person", 3: "Bicycle"}
    assert to_device == {0: 0, 1: 2, 2: 1, 3: 3}
    # a model that knows none of them (COCO): the dataset's classes follow its own
    names, to_device = field.device_class_ids({0: "person", 1: "bicycle"}, {0: "car", 1: "bicycle"})
    assert names == {0: "person", 1: "bicycle", 2: "car"} and to_device == {0: 2, 1: 1}


def test_ground_truth_labels_come_out_in_the_device_ids_and_the_truth_stays():
    device_ids = field.device_class_ids({0: "person"}, ListSource.names)
    src = field.HiddenLabelsSource(ListSource([frame(0, [[0, .5, .5, .2, .2], [2, .1, .1, .1, .1]],
                                                     "t1")]), hide=False, device_ids=device_ids)
    out = src.read()
    assert out.labels[:, 0].tolist() == [1, 0]  # car -> 1 (after person), person -> 0
    assert src.truth[0][0][:, 0].tolist() == [0, 2]  # scoring reads dataset ids
    assert src.names == {0: "person", 1: "car", 2: "truck"}
    stray = field.HiddenLabelsSource(ListSource([frame(1, [[7, .5, .5, .2, .2]], "t1")]),
                                     hide=False, device_ids=device_ids)
    assert stray.read().labels[:, 0].tolist() == [7]  # left for the device to refuse


def test_matched_boxes_same_class_one_to_one():
    truth = np.array([[0, .5, .5, .2, .2], [1, .2, .2, .1, .1]], np.float32)
    pred = np.array([[0, .5, .5, .2, .2],      # hit
                     [0, .5, .5, .2, .2],      # duplicate of the same truth: not a second hit
                     [0, .2, .2, .1, .1],      # right place, wrong class
                     [1, .8, .8, .1, .1]], np.float32)  # wrong place
    assert field.matched_boxes(pred, truth) == 1
    assert field.matched_boxes(pred[:0], truth) == 0


class FakeQueue:
    def __init__(self, items):
        self.items = items

    def pending(self):
        return list(self.items)


class FakeSink:
    def __init__(self, items):
        self.queue = FakeQueue(items)
        self.answers = []

    def answer(self, item_id, boxes):
        self.answers.append((item_id, boxes))
        self.queue.items = [i for i in self.queue.items if i["id"] != item_id]


def test_operator_answers_within_budget_and_delay_with_known_classes_only():
    frames = [frame(i, [[0, .5, .5, .2, .2], [2, .25, .25, .1, .2]], "t1") for i in range(40)]
    src = field.HiddenLabelsSource(ListSource(frames))
    for _ in range(40):
        src.read()
    # 10 % of 40 frames = 4 answers; frames newer than 5 frames (ids 35..39) are not answered yet
    items = [{"id": f"q{i}", "frame_id": i} for i in (39, 36, 30, 20, 10, 5, 1)]
    sink = FakeSink(items)
    op = field.SimulatedOperator(src, {0: "car", 2: "person"}, {"t1": (0,), "t2": (2,)},
                                 budget_pct=10, delay_frames=5)
    op.tick(types.SimpleNamespace(memory_sink=sink))
    assert [a[0] for a in sink.answers] == ["q30", "q20", "q10", "q5"]
    assert op.answered == 4
    # class 2 belongs to a task not streamed yet: only the car box, in pixels of the 200x100 frame
    assert sink.answers[0][1] == [{"class": "car", "xyxy": [80.0, 40.0, 120.0, 60.0]}]
    op.tick(types.SimpleNamespace(memory_sink=sink))
    assert op.answered == 4  # budget spent


def test_pseudo_precision_counts_only_pseudo_boxes():
    src = field.HiddenLabelsSource(ListSource([frame(0, [[0, .5, .5, .2, .2]], "t1")]))
    stored = src.read()
    prec = field.PseudoPrecision(src, lambda c: {5: 0}.get(c, -1))  # device id 5 is dataset 0
    boxes = np.array([[5, .5, .5, .2, .2], [5, .1, .1, .05, .05]], np.float32)
    prec(stored, boxes, "ground_truth")
    assert prec.precision is None
    prec(stored, boxes, types.SimpleNamespace(value="pseudo"))
    assert (prec.boxes, prec.correct, prec.precision) == (2, 1, 0.5)


def test_summary_ratios():
    runs = [{"selection": "ground_truth", "acc": 0.4, "pseudo_precision": None},
            {"selection": "default", "acc": 0.3, "pseudo_precision": 0.9},
            {"selection": "default", "acc": 0.34, "pseudo_precision": 0.96},
            {"selection": "random", "acc": 0.2, "pseudo_precision": None}]
    out = field.summarize(runs)
    assert out["acc"] == {"ground_truth": 0.4, "default": 0.32, "random": 0.2}
    assert out["default_over_ground_truth"] == 0.8
    assert out["default_beats_random"] is True
    assert out["pseudo_precision"] == 0.93


def test_starting_model_choices(tmp_path):
    taskset = types.SimpleNamespace(tasks=[types.SimpleNamespace(classes=(1, 2), name="t1")],
                                    names={0: "a", 1: "b", 2: "c"})
    assert field.starting_model(taskset, tmp_path / "t.yaml", None, "scratch", 1, tmp_path,
                                print) is None
    with pytest.raises(EdgeclError, match="is not a file"):
        field.starting_model(taskset, tmp_path / "t.yaml", None, str(tmp_path / "no.pt"), 1,
                             tmp_path, print)


def test_a_first_task_of_classes_1_and_2_trains_on_copies_numbered_0_and_1(tmp_path):
    images = tmp_path / "ds" / "images"
    images.mkdir(parents=True)
    (tmp_path / "ds" / "labels").mkdir()
    import cv2
    import numpy as np

    jpeg = cv2.imencode(".jpg", np.full((16, 16, 3), 90, np.uint8))[1].tobytes()
    for name, text in (("a", "2 0.5 0.5 0.2 0.2\n1 0.25 0.25 0.1 0.1\n"), ("b", "")):
        (images / f"{name}.jpg").write_bytes(jpeg)
        (tmp_path / "ds" / "labels" / f"{name}.txt").write_text(text)
    (images / "c.jpg").write_bytes(jpeg)  # no label file: a background image
    copies = field.renumbered_copies(sorted(images.iterdir()), {1: 0, 2: 1}, tmp_path / "w")
    assert [p.name for p in copies] == ["00000_a.jpg", "00001_b.jpg", "00002_c.jpg"]
    assert copies[0].read_bytes() == jpeg
    labels = [(tmp_path / "w" / "labels" / f"{p.stem}.txt").read_text() for p in copies]
    assert labels == ["1 0.500000 0.500000 0.200000 0.200000\n"
                      "0 0.250000 0.250000 0.100000 0.100000\n", "", ""]


@pytest.mark.timeout(600)
def test_toy_field_benchmark_end_to_end(tmp_path, capsys):
    from edgecl.cli import main

    out = tmp_path / "out"
    rc = main(["bench", "field", "--data", "scenario", "--tasks", "2", "--images-per-task", "16",
               "--imgsz", "64", "--initial-steps", "4", "--selection", "default",
               "--label-budget-pct", "20", "--fps", "0", "--out", str(out), "--json",
               "learner.first_round_max_steps=3", "learner.max_steps=3",
               "learner.trigger_new_samples=8", "learner.bn_recalibration_batches=1",
               "export.openvino=off", "export.cpu_int8=off"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(summary["acc"]) == {"default", "ground_truth"}
    runs = json.loads((out / "results.json").read_text())
    assert [r["selection"] for r in runs] == ["default", "ground_truth"]
    default, truth = runs
    streamed = default["frames"]
    assert 0 < default["human_labels"] <= 0.2 * streamed
    assert truth["human_labels"] > default["human_labels"]
    # the ground-truth run stores frames of every task (its labels' ids are known classes)
    assert truth["human_labels"] > 0.5 * truth["frames"]
    assert set(default["per_class_ap"]) == {"car", "truck", "person", "bicycle"}
    table = (out / "table.md").read_text()
    assert table.startswith("| selection |") and "| ground_truth | 20 | 0 | " in table
    # one decision per streamed frame: the operator's share was queued, every frame of the
    # ground-truth run carried its labels
    assert sum(default["label_decisions"].values()) == streamed
    assert default["label_decisions"]["queued"] >= default["human_labels"]
    assert truth["label_decisions"] == {"ground_truth": truth["frames"]}
    assert all(r["held_out_acc"] is None or 0.0 <= r["held_out_acc"] <= 1.0 for r in runs)
    assert list((out / "starting-model").glob("first-task-*.pt"))
    assert list((out / "starting-model" / "first-task-data" / "labels").glob("*.txt"))
    # the runs streamed every training image but those the starting model was trained on
    from edgecl.data.tasks import load_tasks

    full, stream = (load_tasks(out / sub / "tasks.yaml") for sub in ("scenario", "stream"))
    n_full, n_stream = (sum(len(t.train) for t in ts.tasks) for ts in (full, stream))
    assert n_stream < n_full and truth["frames"] == default["frames"] == n_stream
    assert not set(stream.tasks[0].train) & set(full.tasks[0].train[:n_full - n_stream])


def test_the_starting_models_images_are_kept_out_of_the_stream(tmp_path):
    from edgecl.data.scenario import make_scenario
    from edgecl.data.tasks import load_tasks

    taskset = load_tasks(make_scenario(tmp_path / "scn", tasks=2, images_per_task=20, imgsz=32,
                                       seed=1))
    first = list(taskset.tasks[0].train)
    pretrain, yaml_path = field.split_first_task(taskset, tmp_path / "stream", 0.5)
    stream = load_tasks(yaml_path)
    # the first half (list order) trains the model, the second half streams; nothing else moves
    assert pretrain == first[:round(len(first) / 2)]
    assert list(stream.tasks[0].train) == first[len(pretrain):]
    assert stream.tasks[1].train == taskset.tasks[1].train
    assert [t.test for t in stream.tasks] == [t.test for t in taskset.tasks]
    assert stream.names == taskset.names and stream.tasks[1].classes == taskset.tasks[1].classes
    with pytest.raises(EdgeclError, match="gives the starting model 0 of the first task's"):
        field.split_first_task(taskset, tmp_path / "s2", 0.01)


def test_without_a_promoted_round_the_starting_model_is_scored(tmp_path, monkeypatch):
    from edgecl.continual import evaluate
    from edgecl.models.checkpoint import save_checkpoint
    from edgecl.ultra import build_detection_model

    pt = save_checkpoint(build_detection_model(2, names={0: "car", 1: "truck"}), tmp_path / "s.pt",
                         meta={"names": {0: "car", 1: "truck"}, "imgsz": 64})
    monkeypatch.setattr(evaluate, "evaluate_model",
                        lambda model, images, class_ids: types.SimpleNamespace(map50_95=0.5))
    taskset = types.SimpleNamespace(names={0: "car", 1: "truck", 2: "person"},
                                    tasks=[types.SimpleNamespace(test=[])])
    state = tmp_path / "state"
    (state / "models").mkdir(parents=True)
    assert field.evaluate_current(state, taskset, 64) == {"car": 0.0, "truck": 0.0, "person": 0.0}
    assert field.evaluate_current(state, taskset, 64, served_file=pt) == {
        "car": 0.5, "truck": 0.5, "person": 0.0}


@pytest.mark.parametrize("share", ["0", "1", "1.5", "-0.2"])
def test_a_pretrain_share_outside_0_1_is_one_line(tmp_path, capsys, share):
    from edgecl.cli import main

    code = main(["bench", "field", "--data", "scenario", "--tasks", "2", "--images-per-task", "8",
                 "--imgsz", "64", "--pretrain-share", share, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--pretrain-share must be in (0, 1)" in err and "\n" not in err


@pytest.mark.parametrize("factor", ["-1", "nan", "inf"])
def test_a_negative_or_non_finite_queue_factor_is_one_line(tmp_path, capsys, factor):
    from edgecl.cli import main

    with pytest.raises(SystemExit) as exit_info:  # the shared argparse type refuses it
        main(["bench", "field", "--data", "scenario", "--tasks", "2", "--images-per-task", "8",
              "--imgsz", "64", "--queue-factor", factor, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in err
    assert err.startswith(f"error: argument --queue-factor: expected a finite number >= 0, got '{factor}'")
    assert not (tmp_path / "out").exists()


def test_an_image_size_below_64_is_one_line(tmp_path, capsys):
    from edgecl.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "field", "--data", "scenario", "--imgsz", "32", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "--imgsz: expected at least 64 to train at, got 32" in err
    assert "\n" not in err


def test_the_table_shows_a_dash_where_no_pseudo_label_was_made(tmp_path):
    """Before: the pseudo precision of a run with no pseudo-label read 'None' in table.md."""
    run = {"selection": "uncertain", "budget_pct": 5.0, "seed": 0, "acc": 0.1234,
           "held_out_acc": None, "human_labels": 12, "pseudo_labels": 0,
           "pseudo_precision": None, "fps": 40.0, "per_class_ap": {"car": 0.2}}
    field.write_table([run, dict(run, seed=1, pseudo_labels=3, pseudo_precision=0.6667)],
                      tmp_path / "table.md")
    rows = (tmp_path / "table.md").read_text().splitlines()[2:4]
    assert rows[0] == "| uncertain | 5 | 0 | 0.123 | - | 12 | 0 | - | 40.0 | 0.200 |"
    assert rows[1] == "| uncertain | 5 | 1 | 0.123 | - | 12 | 3 | 0.667 | 40.0 | 0.200 |"


def test_a_stopped_field_run_leaves_its_table_and_results_agreeing(tmp_path, capsys, monkeypatch):
    """Before: table.md was written once, at the end: a Ctrl-C left results.json of this run
    beside table.md of an earlier one, and nothing said the earlier rows were replaced."""
    from edgecl.cli import main

    run = {"selection": "random", "budget_pct": 20.0, "seed": 0, "acc": 0.25,
           "held_out_acc": None, "human_labels": 4, "pseudo_labels": 0,
           "pseudo_precision": None, "fps": 40.0, "per_class_ap": {"car": 0.25}}
    calls = []

    def one_run(*args, **kwargs):
        calls.append(args[3])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return dict(run, selection=args[3])

    monkeypatch.setattr(field, "run_one", one_run)
    monkeypatch.setattr(field, "starting_model", lambda *a, **k: None)
    out = tmp_path / "out"
    argv = ["bench", "field", "--data", "scenario", "--tasks", "2", "--images-per-task", "4",
            "--imgsz", "64", "--selection", "random", "--label-budget-pct", "20", "--out",
            str(out), "--json"]
    assert main(argv) == 130
    runs = json.loads((out / "results.json").read_text())
    rows = (out / "table.md").read_text().splitlines()[2:]
    assert [r["selection"] for r in runs] == ["random"] and len(rows) == 1
    assert rows[0].startswith("| random | 20 | 0 | 0.250 |")
    capsys.readouterr()
    calls.clear()
    main(argv)
    assert (f"[field] {out} holds an earlier run's results.json and table.md: this run replaces "
            f"them (give another --out to keep them)") in capsys.readouterr().err
