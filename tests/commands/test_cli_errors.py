"""Every CLI command given a user's mistake prints one line to stderr and exits non-zero,
with no traceback; argparse's own usage errors included (they printed usage + error before)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("argv, expected", [
    (["labels"], "error: the following arguments are required: ACTION; see 'edgecl labels --help'"),
    (["labels", "import"], "error: the following arguments are required: path; "
                           "see 'edgecl labels import --help'"),
    (["labels", "import", "x", "--format", "yaml"],
     "error: argument --format: invalid choice: 'yaml' (choose from 'auto', 'yolo', 'voc', 'coco'); "
     "see 'edgecl labels import --help'"),
    (["models", "verify", "--bogus"],  # before: see 'edgecl --help'
     "error: unrecognized arguments: --bogus; see 'edgecl models verify --help'"),
    (["status", "--log-level", "DEBUG"],
     "error: unrecognized arguments: --log-level DEBUG (--log-level goes before the command's "
     "name: 'edgecl --log-level DEBUG status'); see 'edgecl status --help'"),
    (["dataset", "split-tasks", "ds"], "error: the following arguments are required: --tasks, --out; "
                                      "see 'edgecl dataset split-tasks --help'"),
    # before: "expected one argument" alone, for a value argparse took for an option
    (["dataset", "split-tasks", "ds", "--tasks", "a;b", "--ratios", "-1,1,1", "--out", "t.yaml"],
     "error: argument --ratios: expected one argument (a value that starts with '-' is written "
     "--ratios=-1,1,1); see 'edgecl dataset split-tasks --help'"),
    (["dataset", "split-tasks", "ds", "--tasks", "a;b", "--ratios", "--out", "t.yaml"],
     "error: argument --ratios: expected one argument; see 'edgecl dataset split-tasks --help'"),
])
def test_usage_errors_are_one_line(run_edgecl, capsys, argv, expected):
    code, out, err = run_edgecl(argv)
    assert code == 2 and out == "" and err == expected + "\n"


def test_json_before_the_command_is_named_as_misplaced(run_edgecl):
    """Before: 'unrecognized arguments: --json; see 'edgecl status --help'', a help that lists
    --json: the fault was where it stood."""
    code, out, err = run_edgecl(["--json", "status"])
    said = ("unrecognized arguments: --json (--json goes after the command's name: 'edgecl "
            "status --json'); see 'edgecl status --help'")
    assert code == 2 and err == f"error: {said}\n" and json.loads(out) == {"error": said}


@pytest.mark.parametrize("argv, start", [
    (["labels", "import", "{tmp}/nope"], "error: no such file or directory: "),
    (["memory", "stats"], "error: no replay memory at "),
    (["models", "promote", "v0003"], "error: unknown version v0003 (known: none)"),
    (["models", "verify", "v3"], "error: unknown version v0003 (known: none)"),  # v3 is v0003
    (["models", "verify", "v3x"], "error: invalid model version name 'v3x'"),
    (["classes", "rename", "a", "b"], "error: unknown class 'a'"),
    (["dataset", "split-tasks", "{tmp}/nope", "--tasks", "a", "--out", "{tmp}/t.yaml"],
     "error: no such file or directory: "),
    (["dataset", "split-tasks", "{tmp}", "--tasks", "a", "--out", "{tmp}"],
     "error: --out "),
    (["labels", "answer", "x1", "--boxes", "{tmp}/nope.json"], "error: boxes file not found: "),
])
def test_mistakes_are_one_line(run_edgecl, capsys, tmp_path, argv, start):
    argv = [a.format(tmp=tmp_path) for a in argv]
    if argv[0] in ("labels", "memory", "models", "classes"):
        argv += ["--state-dir", str(tmp_path / "state")]
    if argv[0] in ("labels", "classes", "memory") or (argv[0] == "models" and argv[1] != "add"):
        (tmp_path / "state").mkdir()  # these refuse a missing state directory first
    code, _, err = run_edgecl(argv)
    assert code == 2 and err.startswith(start) and err.count("\n") == 1, err


@pytest.mark.parametrize("argv", [["labels", "import", "x"], ["run", "--source", "x"], ["learn"],
                                  ["memory", "stats"], ["demo"]])
@pytest.mark.parametrize("empty", ["", " "])
def test_an_empty_state_directory_is_refused(run_edgecl, tmp_path, argv, empty):
    """Before: --state-dir '' was taken as the default ./state (the demo: the current folder)."""
    code, _, err = run_edgecl([*argv, "--state-dir", empty])
    assert code == 2 and err == f"error: --state-dir must name a directory, got {empty!r}\n"


@pytest.mark.parametrize("argv", [["learn"], ["memory", "stats"], ["memory", "verify"],
                                  ["monitor", "summary"], ["monitor", "report"]])
def test_a_mistyped_state_directory_is_named_and_not_created(run_edgecl, tmp_path, argv):
    """Before: 'edgecl learn --state-dir typo' made typo/ with an empty memory and registry
    ("no round: skipped"), and memory/monitor said "no replay memory" / "no metrics database"
    of a folder that did not exist."""
    typo = tmp_path / "stat"
    code, _, err = run_edgecl([*argv, "--state-dir", str(typo)])
    assert code == 2 and err == (f"error: {typo}: no such state directory (start a device there "
                                 f"with 'edgecl run --state-dir {typo} ...', 'edgecl models add "
                                 f"MODEL.pt --promote --state-dir {typo}' or 'edgecl labels "
                                 f"import --state-dir {typo} FOLDER', or check --state-dir)\n")
    assert not typo.exists()
    model = tmp_path / "model.onnx"  # a file given as the state directory
    model.write_bytes(b"onnx")
    code, _, err = run_edgecl([*argv, "--state-dir", str(model)])
    assert code == 2 and err == (f"error: {model} is a file where a folder belongs (the state "
                                 f"directory; check --state-dir, or state_dir in the config)\n")
    assert model.read_bytes() == b"onnx"


def test_usage_error_of_the_real_command_has_no_usage_block():
    proc = subprocess.run([sys.executable, "-m", "edgecl.cli", "labels", "import"], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, YOLO_OFFLINE="1"))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == ("error: the following arguments are required: path; "
                           "see 'edgecl labels import --help'\n")


def test_with_json_an_error_is_also_the_last_stdout_line(tmp_path, capsys):
    import json

    from edgecl.cli import main

    code = main(["run", "--source", f"file://{tmp_path}/missing.mp4", "--model", "yolo11n.yaml",
                 "--json"])
    out, err = capsys.readouterr()
    assert code == 2
    message = err.strip().splitlines()[-1].removeprefix("error: ")
    assert "missing.mp4" in message
    assert json.loads(out.strip().splitlines()[-1]) == {"error": message}


def test_a_file_argument_holding_an_equals_sign_is_not_taken_for_a_setting(run_edgecl, tmp_path):
    """Before: 'models add m=1.onnx' said 'the following arguments are required: path'."""
    code, out, err = run_edgecl(["models", "add", tmp_path / "m=1.onnx", "--state-dir",
                                 tmp_path / "s"])
    assert code == 2 and err == f"error: cannot add {tmp_path / 'm=1.onnx'}: file not found\n"
    code, out, err = run_edgecl(["models", "add", "m=1.onnx", "--state-dir", tmp_path / "s"])
    assert err == "error: cannot add m=1.onnx: file not found\n"


def test_run_names_a_file_given_as_its_state_directory(run_edgecl, tmp_path):
    """Before: 'state directory F is not writable: File exists'."""
    state = tmp_path / "afile"
    state.write_text("mine")
    code, out, err = run_edgecl(["run", "--state-dir", state, "--model", "yolo11n.yaml",
                                 "--source", "synthetic://", "--frames", "1"])
    assert code == 2 and err.endswith(f"error: {state} is a file where a folder belongs (the "
                                      f"state directory; check --state-dir, or state_dir in the config)\n")
    assert state.read_text() == "mine"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_run_says_why_a_folder_that_takes_no_file_is_no_state_directory(run_edgecl):
    """Before: 'state directory /proc/self is not writable: No such file or directory', for a
    folder that is there."""
    code, out, err = run_edgecl(["run", "--state-dir", "/proc/self", "--model", "yolo11n.yaml",
                                 "--source", "synthetic://", "--frames", "1"])
    assert code == 2 and err.endswith(
        "error: state directory /proc/self is not writable: no file can be created in it (No "
        "such file or directory: a virtual file system such as /proc?)\n"), err


@pytest.mark.parametrize("flag", ["--json", "--js", "--jso"])
def test_an_abbreviated_json_flag_also_gets_the_json_error(run_edgecl, flag):
    import json

    code, out, err = run_edgecl(["run", flag, "--frames", "0"])
    assert code == 2 and json.loads(out) == {
        "error": "argument --frames: expected an integer >= 1, got 0; see 'edgecl run --help'"}


@pytest.mark.parametrize("argv, line", [
    (["run", "--source", "synthetic://", "--frames", "0", "--json"],
     "argument --frames: expected an integer >= 1, got 0; see 'edgecl run --help'"),
    (["bench", "perf", "--model", "m.onnx", "--json", "memory.capacity=5"],
     "memory.capacity=5: this command reads no config, so section.key=value settings do not "
     "apply to it; see 'edgecl bench perf --help'"),
])
def test_with_json_a_usage_error_is_also_the_last_stdout_line(run_edgecl, argv, line):
    import json

    code, out, err = run_edgecl(argv)
    assert code == 2 and err == f"error: {line}\n"
    assert json.loads(out) == {"error": line}


def test_state_settings_without_a_state_directory_are_named_as_ignored(tmp_path, caplog):
    import cv2
    import numpy as np

    from edgecl.cli import main

    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((32, 32, 3), np.uint8))
    code = main(["run", "--source", f"dir://{folder}", "--model", "yolo11n.yaml", "--quiet",
                 "model.imgsz=64", "server.enabled=true", "labels.mode=field"])
    assert code == 0
    assert ("server.enabled, labels.mode: ignored, this run keeps no state (no memory, labels, "
            "learner or console); give --state-dir DIR or --config FILE") in caplog.text


@pytest.mark.parametrize("setting,option", [("learner.imgsz=64", "--imgsz"),
                                            ("state_dir=/tmp/x", "--state-dir")])
def test_the_demo_refuses_a_setting_its_own_options_set(tmp_path, capsys, setting, option):
    from edgecl.cli import main

    assert main(["demo", "--state-dir", str(tmp_path / "d"), setting]) == 2
    err = capsys.readouterr().err
    assert option in err and err.count("\n") == 1 and not (tmp_path / "d").exists()


def test_an_engine_asked_on_that_cannot_be_built_and_an_unknown_log_level_are_one_line(
        tmp_path, capsys):
    from edgecl.cli import main
    from edgecl.models.engine_file import tensorrt_available

    if not tensorrt_available():
        assert main(["learn", "--state-dir", str(tmp_path), "export.tensorrt=on"]) == 2
        err = capsys.readouterr().err
        assert "export.tensorrt is 'on' but TensorRT" in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as exit_info:
        main(["--log-level", "LOUD", "memory", "stats"])
    assert exit_info.value.code == 2 and "invalid choice: 'LOUD'" in capsys.readouterr().err


def test_fleet_join_refuses_a_missing_state_dir_and_a_corrupt_class_registry(tmp_path, capsys):
    pytest.importorskip("flwr")
    from edgecl.cli import main

    assert main(["fleet", "join", "--state-dir", str(tmp_path / "typo")]) == 2
    assert "no such state directory" in capsys.readouterr().err
    assert not (tmp_path / "typo").exists()
    (tmp_path / "classes.json").write_text("{bad")
    assert main(["fleet", "join", "--state-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: corrupt class registry")


def test_fleet_join_refuses_a_state_dir_it_cannot_write(tmp_path, monkeypatch, capsys):
    """Before: a device on a read-only state directory joined, then skipped every round with
    'the state directory cannot be written'. os.access stands in for a read-only mount (root
    writes a folder whatever its mode bits)."""
    import os

    pytest.importorskip("flwr")
    from edgecl.cli import main

    from edgecl.fleet import client

    def joined(cfg):
        raise AssertionError("joined the fleet")

    monkeypatch.setattr(client, "client_main", joined)
    (tmp_path / "models").mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: (
        False if str(path) == str(tmp_path / "models") and mode & os.W_OK
        else real_access(path, mode, **kw)))
    assert main(["fleet", "join", "--state-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'models'}: cannot write there (a fleet device writes its class "
        f"registry, models and round files in the state directory): make it writable, or use "
        f"another --state-dir\n")


def test_an_internal_error_is_one_line_and_exit_1(monkeypatch, capsys):
    """A fault of edgecl's own (not the user's) ends in one line, with the JSON error line
    --json promises, instead of a traceback."""
    import json

    from edgecl.cli import main

    def broken(args):
        raise TypeError("unsupported operand")

    monkeypatch.setattr("edgecl.commands.memory.stats_command", broken)
    assert main(["memory", "stats", "--json"]) == 1
    out, err = capsys.readouterr()
    assert err.startswith("error: internal error (TypeError: unsupported operand)")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "internal error" in json.loads(out.strip().splitlines()[-1])["error"]


def test_a_ctrl_c_a_library_turned_into_its_own_error_is_an_interruption(monkeypatch, capsys):
    """Before: Ctrl-C inside numpy's structured-array comparison (the replay memory's label
    check) came back as a TypeError: 'internal error ... please report it', exit 1, instead of
    'interrupted', exit 130. SIGTERM likewise ends as a stop (143), not an internal error."""
    import json
    import signal

    from edgecl import stop_signals
    from edgecl.cli import main

    def broken(args):
        raise TypeError("Cannot compare structured arrays unless they have a common dtype.")

    monkeypatch.setattr("edgecl.commands.memory.stats_command", broken)
    monkeypatch.setattr(stop_signals, "_stop_signum", signal.SIGINT)
    assert main(["memory", "stats", "--json"]) == 130
    out, err = capsys.readouterr()
    assert err == "interrupted\n" and json.loads(out.strip().splitlines()[-1]) == {
        "error": "interrupted"}
    monkeypatch.setattr(stop_signals, "_stop_signum", signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        main(["memory", "stats", "--json"])
    assert stopped.value.code == 143
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {
        "error": "stopped by SIGTERM"}


def test_a_run_with_no_model_anywhere_names_every_way_to_start(run_edgecl, tmp_path):
    """A new device following the README's first command: the error named neither an untrained
    start (--model yolo11n.yaml) nor learning from imported labels."""
    code, _, err = run_edgecl(["run", "--source", "synthetic://?tasks=1&seed=0", "--frames", "2",
                               "--state-dir", str(tmp_path / "state")])
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: no model: pass --model PATH")
    state = tmp_path / "state"  # each command as printed reaches this device (before: ./state)
    for way in ("yolo11n.yaml", f"'edgecl models add PATH --promote --state-dir {state}'",
                f"'edgecl labels import --state-dir {state} FOLDER'",
                f"'edgecl learn --state-dir {state}'"):
        assert way in err
    # a run that keeps no state: the hints name a state directory, and running with it (before:
    # they wrote ./state, which such a run never reads: following them looped)
    code, _, err = run_edgecl(["run", "--source", "synthetic://?tasks=1&seed=0", "--frames", "2"])
    assert code == 2 and "'edgecl models add PATH --promote --state-dir DIR'" in err
    assert err.strip().endswith("'edgecl learn --state-dir DIR', then run with --state-dir DIR")


@pytest.mark.parametrize("argv", [["run", "--source", "synthetic://", "--model", "yolo11n.yaml"],
                                  ["bench", "learn"]])
def test_a_setting_written_with_a_hyphen_is_pointed_to_its_key(run_edgecl, tmp_path, argv):
    """Before: 'unrecognized arguments: learner.max-steps=3 (a setting is written
    section.key=value)', which is what the user wrote."""
    code, out, err = run_edgecl([*argv, "learner.max-steps=3"])
    assert code == 2 and err == ("error: unknown config key 'learner.max-steps' in command-line "
                                 "override; did you mean 'learner.max_steps'?\n")


def test_ctrl_c_while_the_commands_load_is_one_line(run_edgecl, monkeypatch):
    """Before: Ctrl-C in the first half second (the commands' modules loading) printed a
    25-line traceback, and with --json no {"error"} line."""
    from edgecl import cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert run_edgecl(["memory", "stats", "--json"]) == (130, '{"error": "interrupted"}\n',
                                                        "interrupted\n")


@pytest.mark.parametrize("argv", [["models", "list"], ["labels", "pending"], ["labels", "answered"],
                                  ["memory", "stats"], ["classes", "list"]])
def test_a_folder_holding_other_files_is_no_state_directory(run_edgecl, tmp_path, argv):
    """Before: listing commands made models/.lock, labels/ and memory/index.sqlite wherever
    --state-dir pointed (with --state-dir / at the file system's root)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("x")
    code, out, err = run_edgecl([*argv, "--state-dir", home])
    assert code == 2 and err == (f"error: {home} holds files but no edgecl state (none of "
                                 f"memory/, models/, learner/, classes.json): check --state-dir, "
                                 f"or start a device in an empty folder ('edgecl run' or 'edgecl "
                                 f"labels import')\n")
    assert sorted(p.name for p in home.iterdir()) == ["notes.txt"]


def test_a_dataset_or_memory_folder_is_no_state_directory_but_a_locked_new_one_is(run_edgecl,
                                                                                  tmp_path):
    """A YOLO dataset and a replay memory hold labels/ too: before, that made them state
    directories (lock files written among the label files); a folder holding only edgecl's own
    lock files (a first command refused after taking its lock) is one."""
    dataset = tmp_path / "dataset"
    (dataset / "labels").mkdir(parents=True)
    (dataset / "images").mkdir()
    code, _, err = run_edgecl(["labels", "pending", "--state-dir", dataset])
    assert code == 2 and "holds files but no edgecl state" in err
    assert sorted(p.name for p in dataset.iterdir()) == ["images", "labels"]
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "classes.lock").write_text("")
    code, out, _ = run_edgecl(["classes", "list", "--json", "--state-dir", fresh])
    assert code == 0 and out.strip() == "[]"


def test_a_home_folder_after_equals_is_the_home_folder(tmp_path, monkeypatch, capsys):
    """Before: '--config=~/c.yaml' was 'not found' and 'bench memory --state-dir=~/bm' (or
    'run --out=~/det.jsonl', 'monitor report --out=~/rep') made a folder named '~' in the
    working directory: no shell expands a ~ after '='."""
    from edgecl.cli import main

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert main(["monitor", "summary", "--config=~/c.yaml", "--json"]) == 2
    assert json.loads(capsys.readouterr().out) == {
        "error": f"config file not found: {tmp_path / 'home' / 'c.yaml'}"}
    assert main(["bench", "memory", "--adds", "20", "--capacity", "10", "--imgsz", "32",
                 "--pool", "3", "--state-dir=~/bm", "--json"]) == 0
    assert (tmp_path / "home" / "bm").is_dir() and not (tmp_path / "~").exists()


def test_a_class_name_the_locale_cannot_show_is_escaped_not_an_internal_error(tmp_path):
    """Before: under a C locale with Python's UTF-8 mode off (a cron job or service with
    LC_ALL=C), stdout was ASCII and 'edgecl classes list' failed with an internal error
    (UnicodeEncodeError) on a class named 'Fahrrad_ü'."""
    from edgecl.models.classes import ClassRegistry

    ClassRegistry(tmp_path / "state").seed({0: "Fahrrad_ü"})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "PYTHONIO"))}
    env.update(LC_ALL="C", LANG="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0", YOLO_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "edgecl.cli", "classes", "list", "--state-dir",
                           str(tmp_path / "state")], capture_output=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert b"Fahrrad_\\xfc" in proc.stdout and proc.stderr == b""


def test_a_run_with_state_never_streams_the_built_in_scenario_unasked(run_edgecl, tmp_path):
    """Before: '--source "$CAM"' with CAM unset, or no --source at all, streamed the synthetic
    scenario into a real device and stored 20 of its labelled frames in the replay memory."""
    state = tmp_path / "device"
    code, out, err = run_edgecl(["run", "--state-dir", state, "--source", "", "--model",
                                 "yolo11n.yaml", "--frames", "1"])
    assert code == 2 and err == ("error: --source is empty (an unset variable?): name a frame "
                                 "source, e.g. v4l2:///dev/video0, rtsp://HOST/stream or "
                                 "dir:///path/to/frames\n")
    code, out, err = run_edgecl(["run", "--state-dir", state, "--model", "yolo11n.yaml",
                                 "--frames", "1"])
    assert code == 2 and err.startswith("error: no frame source: a run with a state directory "
                                        "stores what it reads") and err.count("\n") == 1
    assert not state.exists()
    # without a state directory nothing is stored: the built-in scenario is a quick look
    code, out, err = run_edgecl(["run", "--model", "yolo11n.yaml", "--frames", "1", "--json",
                                 "model.imgsz=64"])
    assert code == 0 and '"frames": 1' in out


@pytest.mark.parametrize("argv", [
    ["dataset", "import", "{link}", "--out", "{tmp}/out"],
    ["dataset", "split-tasks", "{link}", "--tasks", "a", "--out", "{tmp}/t.yaml"],
    ["labels", "import", "--state-dir", "{tmp}/state", "{link}"],
    ["run", "--state-dir", "{tmp}/state", "--model", "yolo11n.yaml", "--source", "dir://{link}"],
])
@pytest.mark.parametrize("kind", ["loop", "dangling", "dangling-folder", "chain"])
def test_a_symbolic_link_that_leads_nowhere_is_named_as_one(run_edgecl, tmp_path, argv, kind):
    """Before: a link whose chain loops, or one to an unmounted card, was "no such file or
    directory", though `ls` shows it there."""
    link = tmp_path / "data"
    gone = "/mnt/edgecl-card-not-mounted"
    if kind == "loop":
        (tmp_path / "other").symlink_to(link)
        link.symlink_to(tmp_path / "other")
        why = (f"{link} is a symbolic link that loops (following it never ends at a file or "
               "folder)")
    elif kind == "chain":  # data -> card -> nowhere: the end of the chain is named
        (tmp_path / "card").symlink_to(gone)
        link.symlink_to("card")
        why = f"{link} is a symbolic link to {gone}, which does not exist (unmounted?)"
    elif kind == "dangling-folder":  # card/ds, where card is the link
        (tmp_path / "card").symlink_to(gone)
        link = tmp_path / "card" / "ds"
        why = (f"{link}: {tmp_path / 'card'} is a symbolic link to {gone}, which does not exist "
               "(unmounted?)")
    else:
        link.symlink_to(gone)
        why = f"{link} is a symbolic link to {gone}, which does not exist (unmounted?)"
    code, _, err = run_edgecl([a.format(link=link, tmp=tmp_path) for a in argv])
    assert code == 2 and err.count("\n") == 1 and err.rstrip("\n").endswith(why), err
    assert not (tmp_path / "out").exists() and not (tmp_path / "t.yaml").exists()


@pytest.mark.parametrize("option, name, prefix", [("--model", "m.onnx", "model file"),
                                                   ("--config", "c.yaml", "config file")])
def test_a_model_or_config_behind_a_link_that_leads_nowhere_is_named(run_edgecl, tmp_path,
                                                                      option, name, prefix):
    """Before: a model behind a symbolic link loop was "internal error (RuntimeError: Symlink
    loop from ...)", and a config behind one "config file not found"."""
    loop, gone = tmp_path / f"loop-{name}", tmp_path / f"gone-{name}"
    (tmp_path / "other").symlink_to(loop)
    loop.symlink_to(tmp_path / "other")
    gone.symlink_to("/mnt/edgecl-card-not-mounted")
    for path, why in ((loop, "is a symbolic link that loops (following it never ends at a file "
                             "or folder)"),
                      (gone, "is a symbolic link to /mnt/edgecl-card-not-mounted, which does "
                             "not exist (unmounted?)")):
        code, _, err = run_edgecl(["run", "--state-dir", tmp_path / "state", "--source",
                                   "synthetic://", "--frames", "1", option, path])
        assert code == 2 and err == f"error: {prefix} {path} {why}\n", err


def test_an_out_folder_under_a_link_that_loops_is_one_line(run_edgecl, tmp_path):
    """Before: 'dataset import SRC --out loop/x' was "internal error (RuntimeError: Symlink
    loop from ...)"."""
    (tmp_path / "b").symlink_to(tmp_path / "a")
    (tmp_path / "a").symlink_to(tmp_path / "b")
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    code, _, err = run_edgecl(["dataset", "import", src, "--out", tmp_path / "a" / "x"])
    assert code == 2 and err == (f"error: --out {tmp_path / 'a' / 'x'}: {tmp_path / 'a'} is a "
                                 "symbolic link that loops (following it never ends at a file or "
                                 "folder)\n"), err


def test_a_line_break_in_a_path_or_value_keeps_the_error_one_line(run_edgecl, tmp_path):
    """Before: a path with a newline in it printed its error over two lines, which a script
    reading the last stderr line got half of."""
    odd = tmp_path / "flight\nday2"
    code, out, err = run_edgecl(["dataset", "import", odd, "--out", tmp_path / "o", "--json"])
    assert code == 2 and err == f"error: no such file or directory: {tmp_path}/flight\\nday2\n"
    assert json.loads(out.strip().splitlines()[-1]) == {
        "error": f"no such file or directory: {odd}"}
    code, _, err = run_edgecl(["dataset", "split-tasks", tmp_path, "--tasks", "a", "--out",
                               tmp_path / "t.yaml", "--bogus\nflag"])
    assert code == 2 and err.count("\n") == 1 and "--bogus\\nflag" in err, err


@pytest.mark.parametrize("argv, name", [
    (["dataset", "import", "EMPTY", "--out", "{tmp}/o"], "src"),
    (["dataset", "split-tasks", "EMPTY", "--tasks", "a", "--out", "{tmp}/t.yaml"], "dataset"),
    (["labels", "import", "--state-dir", "{tmp}/state", "EMPTY"], "path"),
    (["models", "add", "--state-dir", "{tmp}/state", "EMPTY"], "path"),
    (["labels", "answer", "1", "--state-dir", "{tmp}/state", "--boxes", "EMPTY"], "--boxes"),
    (["labels", "correct", "1", "--state-dir", "{tmp}/state", "--boxes", "EMPTY"], "--boxes")])
@pytest.mark.parametrize("empty", ["", " "])
def test_an_empty_source_is_refused_not_read_as_the_current_folder(run_edgecl, tmp_path, argv,
                                                                   name, empty):
    """Before: 'dataset import ""' (an unset shell variable) read the current folder."""
    argv = [empty if a == "EMPTY" else a.format(tmp=tmp_path) for a in argv]
    code, _, err = run_edgecl(argv)
    assert code == 2 and err.startswith(
        f"error: argument {name}: must name a file or folder to read, got {empty!r}; see "), err
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.parametrize("argv", [
    ["monitor", "report", "--state-dir", "{tmp}"], ["memory", "export", "--state-dir", "{tmp}"],
    ["dataset", "import", "{tmp}"], ["dataset", "split-tasks", "{tmp}", "--tasks", "a"],
    ["scenario", "make"], ["run", "--source", "synthetic://"], ["bench", "cl"],
    ["bench", "field"], ["fleet", "simulate"]])
@pytest.mark.parametrize("empty", ["", " "])
def test_an_empty_out_is_refused_before_anything_is_written(run_edgecl, tmp_path, argv, empty):
    """Before: 'monitor report --out ""' (an unset shell variable) wrote report.md and
    rounds.csv into the current folder."""
    before = sorted(os.listdir("."))
    code, _, err = run_edgecl([a.format(tmp=tmp_path) for a in argv] + ["--out", empty])
    assert code == 2 and err.startswith(
        f"error: argument --out: must name a file or folder to write, got {empty!r}; see "), err
    assert sorted(os.listdir(".")) == before


@pytest.mark.parametrize("argv", [
    ["run", "--source", "synthetic://", "--model", "yolo11n.yaml", "--frames", "1"],
    ["memory", "stats"], ["learn"], ["labels", "import", "{tmp}/src"], ["labels", "pending"]])
def test_a_state_directory_on_a_card_that_is_not_mounted_is_named(run_edgecl, tmp_path, argv):
    """Before: 'run' said "state directory card is not writable: File exists", 'memory stats'
    advised running 'edgecl run' there (which fails so), 'labels import' "cannot open the
    replay memory card/memory: File exists (card)"."""
    (tmp_path / "src" / "images").mkdir(parents=True)
    card = tmp_path / "card"
    card.symlink_to("/mnt/edgecl-card-not-mounted")
    code, _, err = run_edgecl([a.format(tmp=tmp_path) for a in argv] + ["--state-dir", card])
    assert code == 2 and err == (f"error: state directory {card} is a symbolic link to "
                                 "/mnt/edgecl-card-not-mounted, which does not exist "
                                 "(unmounted?)\n"), err
    assert not os.path.lexists("/mnt/edgecl-card-not-mounted")


@pytest.mark.parametrize("argv, message", [
    (["memory", "stats", "--config", "{tmp}/broken.yaml", "--config", "{tmp}/empty.yaml"],
     "--config given twice ('{tmp}/broken.yaml', then '{tmp}/empty.yaml'): give it once; see "
     "'edgecl memory stats --help'"),
    (["memory", "stats", "--state-dir", "{tmp}/a", "--state-dir", "{tmp}/b"],
     "--state-dir given twice ('{tmp}/a', then '{tmp}/b'): give it once; see "
     "'edgecl memory stats --help'"),
    (["run", "--source", "dir://{tmp}", "--source", "dir://{tmp}/x", "--frames", "1"],
     "--source given twice ('dir://{tmp}', then 'dir://{tmp}/x'): give it once; see "
     "'edgecl run --help'"),
    (["run", "--frames", "5", "--source", "dir://{tmp}", "--frames", "50"],
     "--frames given twice ('5', then '50'): give it once; see 'edgecl run --help'"),
    (["labels", "import", "--state-dir", "{tmp}/s", "{tmp}", "--format", "voc", "--format", "coco"],
     "--format given twice ('voc', then 'coco'): give it once; see 'edgecl labels import --help'"),
    (["--log-level", "info", "--log-level", "debug", "memory", "stats"],
     "--log-level given twice ('INFO', then 'DEBUG'): give it once; see 'edgecl --help'"),
    (["memory", "stats", "memory.capacity=50", "--state-dir", "{tmp}/a", "memory.capacity=60"],
     "memory.capacity set twice ('50', then '60'): give it once; see 'edgecl memory stats --help'"),
    (["memory", "stats", "--state-dir", "{tmp}/a", "state_dir={tmp}/b"],
     "--state-dir '{tmp}/a' and the override 'state_dir={tmp}/b' set state_dir to two values: "
     "give one"),
    (["run", "--source", "dir://{tmp}", "source.uri=dir://{tmp}/x", "--frames", "1"],
     "--source 'dir://{tmp}' and the override 'source.uri=dir://{tmp}/x' set source.uri to two "
     "values: give one"),
])
def test_a_setting_given_twice_is_refused_not_the_last_one_kept(run_edgecl, tmp_path, argv,
                                                                message):
    """Before: the last --config was used and a broken first one ignored (and the last of
    any option given twice: --frames 5 --frames 50 ran 50); --state-dir and --source won
    over an override of their key without a word."""
    (tmp_path / "broken.yaml").write_text("memory: [\n")
    (tmp_path / "empty.yaml").write_text("")
    code, out, err = run_edgecl([a.format(tmp=tmp_path) for a in argv])
    assert code == 2 and err == f"error: {message.format(tmp=tmp_path)}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.yaml", "empty.yaml"]


def test_an_option_and_an_override_of_one_value_are_taken(run_edgecl, tmp_path):
    """A script that sets both to the same folder (as a unit file and its drop-in may) runs,
    and so does one key set twice to one value."""
    (tmp_path / "state").mkdir()
    code, out, err = run_edgecl(["memory", "stats", "--state-dir", tmp_path / "state",
                                 f"state_dir={tmp_path}/./state", "memory.capacity=50",
                                 "memory.capacity=50"])
    assert "two values" not in err and "twice" not in err
    # an option given twice with one value, as the README says (before: 'given twice')
    code, out, err = run_edgecl(["memory", "stats", "--state-dir", tmp_path / "state",
                                 "--state-dir", tmp_path / "state"])
    assert err.startswith("error: no replay memory at") and "twice" not in err


def test_a_state_directory_inside_the_streamed_folder_is_refused(capsys, tmp_path):
    """Before: 'run --source dir://yc --state-dir yc' was accepted: the device's queue folder
    sat in the dataset's own labels/, its memory beside the dataset's images."""
    from edgecl.cli import main

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    for state, message in (
            (data, f"--state-dir {data} is inside {data}, the folder dir://{data} streams"),
            (data / "state", f"--state-dir {data / 'state'} is inside {data}, the folder "
                             f"dir://{data} streams")):
        code = main(["run", "--source", f"dir://{data}", "--state-dir", str(state),
                     "--model", "yolo11n.yaml", "--frames", "1"])
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err
    code = main(["run", "--source", f"dir://{tmp_path / 's' / 'memory'}", "--state-dir",
                 str(tmp_path / "s"), "--model", "yolo11n.yaml", "--frames", "1"])
    assert code == 2 and "streams a folder inside the state directory" in capsys.readouterr().err
    assert not (tmp_path / "s").exists() and sorted(p.name for p in data.iterdir()) == ["images"]
