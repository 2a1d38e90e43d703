"""The benchmarks' options: a user's mistake is one line and exit 2 before anything runs
(the shared argparse types of :mod:`edgecl.arguments`), and Ctrl-C during a benchmark
ends it with no figures (the command line prints ``interrupted`` and exits 130; with ``--json``
the last stdout line is ``{"error": "interrupted"}``)."""

import argparse
import json
import signal
import threading
import time
import types

import pytest

from edgecl import arguments

pytestmark = pytest.mark.timeout(120)



@pytest.mark.parametrize("argv, expected", [
    # bench memory
    (["memory", "--imgsz", "0"], "argument --imgsz: expected an integer in 32..4096, got 0"),
    (["memory", "--pool", "0"], "argument --pool: expected an integer >= 1, got 0"),
    (["memory", "--seed", "-1"], "argument --seed: expected an integer >= 0, got -1"),
    (["memory", "--adds", "-5"], "argument --adds: expected an integer >= 1, got -5"),
    # bench learn
    (["learn", "--seconds", "nan"], "argument --seconds: expected a finite number > 0, got 'nan'"),
    (["learn", "--seconds", "-5"], "argument --seconds: expected a finite number > 0, got '-5'"),
    (["learn", "--steps", "0"], "argument --steps: expected an integer >= 1, got 0"),
    (["learn", "--steps", "-3"], "argument --steps: expected an integer >= 1, got -3"),
    (["learn", "--batch", "0"], "argument --batch: expected an integer >= 1, got 0"),
    (["learn", "--batch", "-2"], "argument --batch: expected an integer >= 1, got -2"),
    (["learn", "--threads", "-1"], "argument --threads: expected an integer >= 1, got -1"),
    # before: torch's thread pool crashed the process (a segfault, no message)
    (["learn", "--threads", "100000"], "argument --threads: expected at most 256 threads, got 100000"),
    (["cl", "--threads", "100000"], "argument --threads: expected at most 256 threads, got 100000"),
    (["perf", "--threads", "257"], "argument --threads: expected at most 256 threads, got 257"),
    (["console", "--threads", "100000"], "argument --threads: expected at most 256 threads, got 100000"),
    # before: a list of a billion planned runs filled the memory before anything ran
    (["cl", "--seeds", "1000000000"], "argument --seeds: expected at most 1000 seeds, got 1000000000"),
    (["field", "--out", "{tmp}/f", "--seeds", "1001"],
     "argument --seeds: expected at most 1000 seeds, got 1001"),
    (["learn", "--repeats", "0"], "argument --repeats: expected an integer >= 1, got 0"),
    (["learn", "--map-repeats", "0"], "argument --map-repeats: expected an integer >= 1, got 0"),
    (["learn", "--parent-steps", "0"], "argument --parent-steps: expected an integer >= 1, got 0"),
    (["learn", "--skip", "bogus,map"],
     "argument --skip: unknown part 'bogus'; choose from throughput, map, round"),
    (["learn", "--skip", "throughput,map,round"],
     "argument --skip: skipping throughput, map, round leaves nothing to run"),
    # bench cl
    (["cl", "--out", "{tmp}/cl", "--lr", "nan"],
     "argument --lr: expected a finite number > 0, got 'nan'"),
    (["cl", "--out", "{tmp}/cl", "--lr", "inf"],
     "argument --lr: expected a finite number > 0, got 'inf'"),
    (["cl", "--out", "{tmp}/cl", "--distill-box", "nan"],
     "argument --distill-box: expected a finite number >= 0, got 'nan'"),
    (["cl", "--out", "{tmp}/cl", "--seeds", "0"], "argument --seeds: expected an integer >= 1, got 0"),
    (["cl", "--out", "{tmp}/cl", "--device", "tpu"],
     "argument --device: 'tpu' is not one of auto, cpu, cuda or cuda:<index>; did you mean 'cpu'?"),
    (["cl", "--out", "{tmp}/cl", "--imgsz", "100000"],
     "argument --imgsz: expected at most 4096, got 100000"),
    # stray words are no setting: the run would go on without what the user meant
    (["learn", "--json", "notakey"],
     "unrecognized arguments: notakey (a setting is written section.key=value)"),
    (["learn", "learner.freeze_layers", "22"], "unrecognized arguments: learner.freeze_layers 22 "
                                               "(a setting is written section.key=value)"),
    (["field", "--out", "{tmp}/f", "learner.max_steps", "3"], "unrecognized arguments: "
     "learner.max_steps 3 (a setting is written section.key=value)"),
    (["perf", "--model", "{tmp}/m.onnx", "--imgsz", "100000"],
     "argument --imgsz: expected at most 4096, got 100000"),
    (["console", "--imgsz", "100000"], "argument --imgsz: expected at most 4096, got 100000"),
    # bench field
    (["field", "--out", "{tmp}/f", "--fps", "nan"],
     "argument --fps: expected a finite number >= 0, got 'nan'"),
    (["field", "--out", "{tmp}/f", "--fps", "-5"],
     "argument --fps: expected a finite number >= 0, got '-5'"),
    (["field", "--out", "{tmp}/f", "--delay-frames", "-5"],
     "argument --delay-frames: expected an integer >= 0, got -5"),
    (["field", "--out", "{tmp}/f", "--seeds", "0"], "argument --seeds: expected an integer >= 1, got 0"),
    (["field", "--out", "{tmp}/f", "--initial-steps", "-1"],
     "argument --initial-steps: expected an integer >= 1, got -1"),
    (["field", "--out", "{tmp}/f", "--selection", ""],
     "argument --selection: no selection given; choose from random, default, ground_truth"),
    (["field", "--out", "{tmp}/f", "--selection", "random,bogus"],
     "argument --selection: unknown 'bogus'; choose from random, default, ground_truth"),
    (["field", "--out", "{tmp}/f", "--label-budget-pct", "nan"],
     "argument --label-budget-pct: expected a percentage in (0, 100], got 'nan'"),
    (["field", "--out", "{tmp}/f", "--queue-factor", "inf"],
     "argument --queue-factor: expected a finite number >= 0, got 'inf'"),
    # bench console
    (["console", "--phase-s", "nan"], "argument --phase-s: expected a finite number > 0, got 'nan'"),
    (["console", "--viewer-hz", "nan"],
     "argument --viewer-hz: expected a finite number > 0, got 'nan'"),
    (["console", "--requests", "0"], "argument --requests: expected an integer >= 1, got 0"),
    (["console", "--source-fps", "-1"],
     "argument --source-fps: expected a finite number >= 0, got '-1'"),
    # bench soak
    (["soak", "--frames", "0"], "argument --frames: expected an integer >= 1, got 0"),
    (["soak", "--sample-every-s", "nan"],
     "argument --sample-every-s: expected a finite number >= 0, got 'nan'"),
])
def test_a_bad_option_is_one_line_and_exit_2(run_edgecl, capsys, tmp_path, argv, expected):
    argv = ["bench", *(a.format(tmp=tmp_path) for a in argv)]
    code, out, err = run_edgecl(argv)
    line = f"{expected}; see 'edgecl bench {argv[1]} --help'"
    assert code == 2 and out == ("" if "--json" not in argv else json.dumps({"error": line}) + "\n")
    assert err == f"error: {line}\n"
    assert not list(tmp_path.iterdir()), "nothing is written for a bad option"


@pytest.mark.parametrize("argv,expected", [
    (["--model", "{tmp}/m.onnx", "--data", "{tmp}/tasks.yaml"], "--data does not apply without"),
    (["--model", "{tmp}/m.onnx", "--train-steps", "5", "--cache-dir", "{tmp}/c"],
     "--train-steps, --cache-dir do not apply without"),
    (["--model", "{tmp}/m.onnx", "--calibration-images", "8"],
     "--calibration-images does not apply without"),
    (["--backends", "onnx", "--source", "dir://{tmp}", "--selection"],
     "--source, --selection do not apply with"),
    (["--backends", "onnx", "--while-training"], "--while-training does not apply with"),
    # its default value given: it ran the pipeline with --data dropped
    (["--model", "{tmp}/m.onnx", "--data", "scenario"], "--data does not apply without"),
])
def test_perf_refuses_an_option_of_the_other_measurement(run_edgecl, tmp_path, argv, expected):
    """Before: 'bench perf --model M.onnx --data mine.yaml' measured the default source, the
    --data dropped without a word (and --backends dropped --source so)."""
    code, out, err = run_edgecl(["bench", "perf", *(a.format(tmp=tmp_path) for a in argv)])
    assert code == 2 and err == f"error: edgecl bench perf: {expected} --backends\n"
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("argv", [
    ["cl", "--tasks", "5"], ["cl", "--scenario-seed", "3"], ["field", "--images-per-task", "50"],
    ["field", "--tasks", "4"]])
def test_a_scenario_option_beside_a_dataset_of_ones_own_is_refused(run_edgecl, tmp_path, argv):
    """Before: 'bench field --data DIR/tasks.yaml --tasks 4' ran DIR's own tasks, the --tasks
    dropped without a word."""
    option = argv[1]
    code, out, err = run_edgecl(["bench", *argv, "--data", str(tmp_path / "tasks.yaml"),
                                 "--out", str(tmp_path / "o")])
    assert code == 2 and err == (f"error: {option} shapes the built-in scenario (--data scenario); "
                                 f"--data {tmp_path / 'tasks.yaml'} brings its own tasks and "
                                 f"images: leave {option} out\n")
    assert not (tmp_path / "o").exists()


def test_learner_settings_the_model_cannot_take_are_refused_before_the_parent_trains(
        run_edgecl, tmp_path, capsys):
    code, out, err = run_edgecl(["bench", "learn", "--cache-dir", tmp_path / "cache", "--json",
                                 "learner.freeze_layers=1000"])
    line = ("learner.freeze_layers=1000 must be in 0..23 for the benchmark's YOLO11n (24 layers; "
            "the last is the detection head)")
    assert code == 2 and err == f"error: {line}\n"
    assert json.loads(out) == {"error": line}
    assert not (tmp_path / "cache").exists(), "refused before the scenario and the parent"


@pytest.mark.parametrize("kind, text, value", [
    (arguments.non_negative_int, "0", 0), (arguments.finite_positive_float, "1e-3", 1e-3),
    (arguments.finite_non_negative_float, "0", 0.0), (arguments.percentage, "100", 100.0),
    (arguments.pixel_side, "48", 48), (arguments.pixel_side, "4096", 4096),
    (arguments.byte_size, "1GiB", 2**30), (arguments.byte_size, "64 MiB", 64 * 2**20),
    (arguments.byte_size, "1.5GB", 1_500_000_000), (arguments.byte_size, "12000000", 12_000_000),
    (arguments.byte_size, "0", 0), (arguments.image_size, "4096", 4096),
    (arguments.torch_device, "cuda:1", "cuda:1"), (arguments.torch_device, "auto", "auto"),
])
def test_shared_types_accept(kind, text, value):
    assert kind(text) == value


@pytest.mark.parametrize("kind, text", [
    (arguments.non_negative_int, "-1"), (arguments.non_negative_int, "1.5"),
    (arguments.finite_positive_float, "0"), (arguments.finite_positive_float, "-inf"),
    (arguments.finite_positive_float, "abc"), (arguments.finite_non_negative_float, "nan"),
    (arguments.percentage, "0"), (arguments.percentage, "100.1"), (arguments.percentage, "inf"),
    (arguments.pixel_side, "31"), (arguments.pixel_side, "4097"), (arguments.pixel_side, "1000000"),
    (arguments.byte_size, "1G"), (arguments.byte_size, "-5"), (arguments.byte_size, "1.5"),
    (arguments.image_size, "4128"), (arguments.train_image_size, "100000"),
])
def test_shared_types_refuse(kind, text):
    with pytest.raises(argparse.ArgumentTypeError, match="expected"):
        kind(text)


def test_a_cuda_device_this_machine_lacks_is_refused_before_any_data(run_edgecl, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    code, out, err = run_edgecl(["bench", "cl", "--out", tmp_path / "cl", "--device", "cuda"])
    assert code == 2 and err == ("error: --device cuda: this machine has no CUDA devices that "
                                 "torch can use (--device auto picks what there is)\n")
    assert not (tmp_path / "cl").exists()


def test_a_device_torch_cannot_name_is_refused():
    with pytest.raises(argparse.ArgumentTypeError, match="'tpu' is not one of auto, cpu, cuda"):
        arguments.torch_device("tpu")


def test_field_refuses_an_initial_model_that_is_no_checkpoint_before_any_run(run_edgecl, tmp_path,
                                                                             capsys):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.onnx").write_bytes(b"onnx")
    (tmp_path / "m" / "bad.pt").write_bytes(b"not a pickle")
    base = ["bench", "field", "--imgsz", "64", "--tasks", "2", "--images-per-task", "8"]
    for model, start in ((tmp_path / "m" / "model.onnx", "error: --initial-model: expected "
                          "'first-task', 'scratch' or a .pt checkpoint, got "),
                         (tmp_path / "m" / "bad.pt", "error: --initial-model: cannot read checkpoint "),
                         (tmp_path / "m" / "none.pt", "error: --initial-model: ")):
        code, _, err = run_edgecl([*base, "--initial-model", str(model),
                                     "--out", str(tmp_path / "out")])
        assert code == 2 and err.startswith(start) and err.count("\n") == 1, err
        assert not (tmp_path / "out").exists(), "refused before the scenario and the runs"


def test_field_loads_a_good_initial_checkpoint_once_up_front(tmp_path):
    from edgecl.bench import field
    from edgecl.bench.console_load import tiny_model

    path = tiny_model(tmp_path / "good.pt", {0: "car", 1: "truck"})
    assert field.check_initial_model(str(path))["names"] == {0: "car", 1: "truck"}
    assert field.check_initial_model("first-task") is None
    assert field.check_initial_model("scratch") is None


@pytest.mark.parametrize("bench", ["soak", "console"])
def test_a_work_dir_with_an_earlier_state_is_refused(run_edgecl, tmp_path, capsys, bench):
    (tmp_path / "state" / "memory").mkdir(parents=True)
    code, out, err = run_edgecl(["bench", bench, "--work-dir", str(tmp_path)])
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: bench {bench}: --work-dir {tmp_path} already holds "
                          f"{tmp_path / 'state'} (an earlier run's state")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"], "nothing prepared, nothing removed"


class _FakeLoop:
    def __init__(self):
        self.frames_done = 1
        self.stopped = threading.Event()

    def request_stop(self):
        self.stopped.set()


def _fake_runtime(interrupt_after_s: float, server_up: bool = True, signum=signal.SIGINT):
    """A Runtime stand-in whose run() ends as Ctrl-C (or ``signum``) would end it (or on its
    own)."""

    class FakeRuntime:
        def __init__(self, cfg, opts, supervise_hook=None, **_):
            self.cfg, self.opts = cfg, opts
            self.loop = _FakeLoop()
            self.server = types.SimpleNamespace(port=1) if server_up else None
            self.interrupted = False
            self.stop_signal = None
            self.registry = None
            self.supervisor = None

        def build(self, source=None):
            return self

        def run(self):
            if not self.loop.stopped.wait(interrupt_after_s):  # nobody stopped it: "Ctrl-C"
                self.interrupted, self.stop_signal = True, signum
            return types.SimpleNamespace(frames=5, fps=10.0, elapsed_s=0.5, model_version="v0",
                                         to_json=dict)

    return FakeRuntime


def test_console_ctrl_c_mid_phase_stops_within_a_second(run_edgecl, tmp_path, capsys,
                                                        monkeypatch):
    from edgecl.bench import console_load
    from edgecl.runtime import app

    monkeypatch.setattr(console_load, "tiny_model", lambda out, *a, **k: out)
    monkeypatch.setattr(app, "Runtime", _fake_runtime(0.5))
    t0 = time.monotonic()
    code, out, err = run_edgecl(["bench", "console", "--phase-s", "30", "--repeats", "3",
                                   "--work-dir", str(tmp_path), "--json"])
    assert code == 130 and err == "interrupted\n"
    assert out == '{"error": "interrupted"}\n', "--json: the last stdout line says it did not finish"
    assert time.monotonic() - t0 < 3.0, "the driver's wait ended at the interrupt"


def test_console_runtime_ending_before_the_figures_is_a_failure_not_a_key_error(
        run_edgecl, tmp_path, capsys, monkeypatch):
    from edgecl.bench import console_load
    from edgecl.runtime import app

    class EndsEarly(_fake_runtime(0.3, server_up=False)):
        def run(self):
            report = super().run()
            self.interrupted = False  # the loop ended on its own, not by a signal
            return report

    monkeypatch.setattr(console_load, "tiny_model", lambda out, *a, **k: out)
    monkeypatch.setattr(app, "Runtime", EndsEarly)
    code, out, err = run_edgecl(["bench", "console", "--work-dir", str(tmp_path), "--json"])
    line = "bench console: the runtime stopped after 5 frames, before the measurement finished"
    assert code == 1 and err == line + "\n"
    assert json.loads(out) == {"error": line}


def test_soak_ctrl_c_prints_what_it_measured_and_exits_130(run_edgecl, tmp_path, capsys,
                                                          monkeypatch):
    """What it measured first, marked interrupted (before: thrown away), then the error."""
    code, out, err = _soak_stopped_by(signal.SIGINT, run_edgecl, tmp_path, monkeypatch)
    assert code == 130 and err == "interrupted\n"
    measured, last = out.splitlines()
    assert json.loads(measured)["interrupted"] == "SIGINT" and json.loads(measured)["frames"] == 5
    assert last == '{"error": "interrupted"}', "--json: the last stdout line says it did not finish"


def test_soak_sigterm_prints_what_it_measured_and_exits_143(run_edgecl, tmp_path, capsys,
                                                            monkeypatch):
    """Before: a SIGTERM (a service manager's stop) exited 130 and said "interrupted", as if a
    person had pressed Ctrl-C."""
    code, out, err = _soak_stopped_by(signal.SIGTERM, run_edgecl, tmp_path, monkeypatch)
    assert code == 143 and err == ""
    measured, last = out.splitlines()
    assert json.loads(measured)["interrupted"] == "SIGTERM"
    assert last == '{"error": "stopped by SIGTERM"}'


def _soak_stopped_by(signum, run_edgecl, tmp_path, monkeypatch):
    from edgecl.bench import soak
    from edgecl.runtime import app

    frames = tmp_path / "frames"
    frames.mkdir()
    import cv2
    import numpy as np

    cv2.imwrite(str(frames / "a.jpg"), np.zeros((8, 8, 3), np.uint8))
    monkeypatch.setattr(soak, "prepare", lambda work, args: (f"dir://{frames}?loop=1", work / "m.pt"))
    monkeypatch.setattr(app, "Runtime", _fake_runtime(0.1, signum=signum))
    return run_edgecl(["bench", "soak", "--frames", "100000", "--learn-every-s", "0",
                       "--quiet", "--work-dir", str(tmp_path), "--json"])


def test_learn_skip_parts():
    from edgecl.bench.learn import skip_parts

    assert skip_parts("") == frozenset()
    assert skip_parts(" map , round ") == {"map", "round"}


def test_bench_cl_takes_json_as_every_benchmark_does():
    """'bench cl ... --json' was 'unrecognized arguments' while the others take it."""
    from edgecl.cli import build_parser

    args = build_parser().parse_args(["bench", "cl", "--out", "x", "--json"])
    assert args.json is True


def test_field_checks_its_config_before_making_its_output_folder(run_edgecl, tmp_path):
    """Before: 'bench field --out DIR --config missing.yaml' made DIR, then said the error."""
    code, out, err = run_edgecl(["bench", "field", "--out", tmp_path / "o", "--config",
                                 tmp_path / "missing.yaml"])
    assert code == 2 and err == f"error: config file not found: {tmp_path / 'missing.yaml'}\n"
    assert not (tmp_path / "o").exists()
