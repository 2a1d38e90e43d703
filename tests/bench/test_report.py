"""Monitor report and plot helpers: files are written, PNGs are valid, the CLI prints the path."""

import argparse
import json

import numpy as np
import pytest

from edgecl.bench.report import plot_bars, plot_heatmap, plot_lines, plot_reliability, write_monitor_report
from edgecl.calibration.dece import bins_from_flags
from edgecl.commands import monitor as monitor_cmd
from edgecl.continual.evaluate import EvalResult
from edgecl.runtime.monitor import Monitor, MonitorError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TASKS = ["car_a", "car_b", "drone"]


def png_size(path):
    """(width, height) read from the PNG header."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def result(value, conf=(0.9, 0.8, 0.4), tp=(1, 0, 1)):
    return EvalResult(value, value, 0.5, 0.5, {0: value}, 3, 3, 0.2,
                      reliability=bins_from_flags(np.array(conf), np.array(tp, bool)))


def state_with_rounds(tmp_path):
    mon = Monitor(tmp_path)
    history = [{"car_a": 0.7}, {"car_a": 0.5, "car_b": 0.8}, {"car_a": 0.6, "car_b": 0.7, "drone": 0.9}]
    for k, evals in enumerate(history, start=1):
        mon.record_evaluation(k, f"v{k:04d}", {t: result(v) for t, v in evals.items()}, TASKS)
        mon.record_round(k, f"v{k:04d}", "promoted", seconds=10.0 * k)
    mon.record_evaluation(4, "v0004", {t: result(0.1) for t in TASKS}, TASKS)
    mon.record_round(4, "v0004", "rejected", "forgets car_a")
    return mon


def test_write_monitor_report(tmp_path):
    state_with_rounds(tmp_path)
    report = write_monitor_report(tmp_path)
    assert report == tmp_path / "metrics" / "report" / "report.md"
    text = report.read_text()
    for png in ("accuracy_matrix.png", "task_map.png", "reliability.png"):
        assert f"]({png})" in text
        width, height = png_size(report.parent / png)
        assert width > 300 and height > 200
    # matrix row after round 3: 0.6, 0.7, 0.9; ACC (0.6 + 0.7 + 0.9) / 3 = 0.733
    assert "| r3 v0003 | 0.600 | 0.700 | 0.900 |" in text
    assert "| ACC (box mAP50-95) | 0.733 |" in text
    # BWT ((0.6 - 0.7) + (0.7 - 0.8)) / 2 = -0.100; forgetting car_a max(0.7, 0.5) - 0.6 = 0.1
    assert "| BWT | -0.100 |" in text
    assert "| car\\_a | 0.100 |" in text
    assert "| 4 | v0004 | rejected | forgets car\\_a |" in text


def test_monitor_report_of_a_deployment_shows_the_class_view(tmp_path):
    from edgecl.continual.evaluate import EvalResult

    mon = Monitor(tmp_path)
    for k, ap in ((1, {0: 0.6}), (2, {0: 0.5, 1: 0.2})):
        res = EvalResult(map50_95=float(np.mean(list(ap.values()))), map50=0.5, recall=0.5,
                         precision=0.5, per_class_ap50_95=ap, n_images=8, n_boxes=20, dece=0.0,
                         per_class_recall={c: 0.5 for c in ap},
                         per_class_instances={c: 10 for c in ap})
        mon.record_evaluation(k, f"v{k:04d}", {"stream": res}, ["stream"], ts_s=float(k),
                              class_names={0: "car", 1: "person"})
        mon.record_round(k, f"v{k:04d}", "promoted")
    text = write_monitor_report(tmp_path).read_text()
    assert "| stream |" not in text  # no task matrix of one growing column
    assert "| car | 0.100 |" in text  # car forgot 0.6 - 0.5
    assert "Not in the tables above" not in text
    # classes taught on the device but with no held-out box yet are named, not left out silently
    from edgecl.models.classes import ClassRegistry

    ClassRegistry(tmp_path).seed({0: "car", 1: "person", 2: "Truck", 3: "Drone"})
    text = write_monitor_report(tmp_path).read_text()
    assert ("Not in the tables above: Truck, Drone. No promoted version measured these classes "
            "of the device's registry") in text
    # a class merged into another is no class of its own: before, it was named as waiting
    ClassRegistry(tmp_path).merge("Drone", "person")
    text = write_monitor_report(tmp_path).read_text()
    assert "Not in the tables above: Truck. No promoted version measured" in text
    # before: this list alone wrote names as they are: a name holding HTML ran in a renderer
    # that passes inline HTML, and an entity showed as another name (a&amp;b as a&b)
    ClassRegistry(tmp_path).add(['<img src=x onerror=alert(2)>', "a&amp;b", "other_vehicle"])
    text = write_monitor_report(tmp_path).read_text()
    assert ("Not in the tables above: Truck, \\<img src=x onerror=alert(2)\\>, a\\&amp;b, "
            "other\\_vehicle. No promoted version measured") in text
    assert "<img" not in text.replace("\\<img", "")


def test_report_of_an_empty_database_and_of_a_missing_one(tmp_path):
    Monitor(tmp_path)
    text = write_monitor_report(tmp_path, tmp_path / "out").read_text()
    assert "No promoted evaluation recorded yet." in text
    assert not (tmp_path / "out" / "accuracy_matrix.png").exists()
    with pytest.raises(MonitorError, match="no metrics database"):
        write_monitor_report(tmp_path / "nothing")


def test_plot_helpers_write_pngs(tmp_path):
    R = np.array([[0.8, np.nan], [0.6, 0.9]])
    png_size(plot_heatmap(R, ["a", "b"], tmp_path / "h.png"))
    png_size(plot_lines({"ER": [0.5, 0.6], "FAR": [0.7, np.nan]}, ["t1", "t2"], tmp_path / "l.png",
                        "ACC"))
    png_size(plot_bars({"5%": {"ER": 0.61, "MIR": 0.78}, "10%": {"ER": 0.75}}, tmp_path / "b.png",
                       "ACC"))
    png_size(plot_reliability(bins_from_flags(np.array([0.9, 0.2]), np.array([1, 0])),
                              tmp_path / "r.png"))
    with pytest.raises(ValueError, match="3 labels"):
        plot_lines({"ER": [0.5]}, ["a", "b", "c"], tmp_path / "x.png", "ACC")


def parse(argv):
    parser = argparse.ArgumentParser()
    monitor_cmd.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    args.overrides = []
    return args


def test_cli_report_and_summary(tmp_path, capsys):
    state_with_rounds(tmp_path)
    args = parse(["monitor", "report", "--state-dir", str(tmp_path), "--out", str(tmp_path / "r")])
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "r" / "report.md")
    args = parse(["monitor", "summary", "--state-dir", str(tmp_path), "--json"])
    assert args.func(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["model_version"] == "v0003"
    assert summary["bwt"] == pytest.approx(-0.1)
    args = parse(["monitor", "summary", "--state-dir", str(tmp_path)])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "forgetting[car_a] 0.1000" in text
    # the model's rate, named so: read as "fps" it was taken for the camera's (2 fps stream, 98)
    assert "\ninference_fps " in text and "\nfps " not in text
    assert "\ninference_fps    -\n" in text  # no runtime sample: no note either
    Monitor(tmp_path).record_runtime(98.0, 10.0, 1000, 10, "v0003")
    assert args.func(args) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("inference_fps"))
    assert line == ("inference_fps    98.0 (frames a second the model can take; the camera "
                    "may deliver fewer)")


def stream_result(ap):
    return EvalResult(float(np.mean(list(ap.values()))), 0.5, 0.5, 0.5, ap, 4, 8, 0.2,
                      reliability=bins_from_flags(np.array([0.9, 0.4]), np.array([1, 0], bool)),
                      per_class_instances={c: 10 for c in ap})


def test_report_without_tasks_shows_classes_and_calibration(tmp_path, capsys):
    mon = Monitor(tmp_path)
    names = {0: "car", 1: "drone"}
    for k, ap in enumerate([{0: 0.6}, {0: 0.5, 1: 0.4}, {0: 0.55, 1: 0.45}], start=1):
        mon.record_evaluation(k, f"v{k:04d}", {"stream": stream_result(ap)}, ["stream"],
                              class_names=names)
        mon.record_round(k, f"v{k:04d}", "promoted")
    mon.record_calibration(3, "v0003", {
        "dece_before": 0.31, "dece_after": 0.04, "target_precision": 0.9,
        "protocol": {"iou_thr": 0.5, "n_bins": 15, "min_conf": 0.3, "matching": "greedy"},
        "per_class": {"0": {"name": "car", "method": "isotonic", "n": 80, "n_tp": 50,
                            "dece_before": 0.3, "dece_after": 0.05}},
        "thresholds": {"0": 0.72}})
    text = write_monitor_report(tmp_path).read_text()
    for png in ("class_matrix.png", "class_ap.png"):
        assert f"]({png})" in text
        png_size(tmp_path / "metrics" / "report" / png)
    assert "| r3 v0003 | 0.550 | 0.450 |" in text
    assert "| car | 0.050 |" in text  # forgetting max(0.6, 0.5) - 0.55
    assert "may exceed `gate.max_forgetting` in a round the gate accepted" in text
    assert "| ACC, BWT, forgetting over | classes |" in text
    assert "D-ECE 0.310 before, 0.040 after calibration." in text
    assert "| car | isotonic | 80 | 50 | 0.300 | 0.050 | 0.720 |" in text
    args = parse(["monitor", "summary", "--state-dir", str(tmp_path)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "class_forgetting[car] 0.0500" in out and "class_ap50_95[drone] 0.4500" in out
    assert "dece_calibrated  0.0400 (before 0.3100)" in out


def forge_stream(state_dir, n_rounds, names, ap):
    """A metrics database of ``n_rounds`` promoted stream rounds, written straight into SQLite.

    ``ap(round, class_id)`` gives each cell (None: not evaluated).
    """
    import sqlite3

    Monitor(state_dir)
    conn = sqlite3.connect(state_dir / "metrics" / "metrics.sqlite")
    conn.executemany("INSERT INTO class_names VALUES (?, ?)", list(enumerate(names)))
    for r in range(1, n_rounds + 1):
        v = f"v{r:04d}"
        conn.execute("INSERT INTO evaluations VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                     (r, v, "stream", 0, 0.5, 0.5, 0.5, 0.5, None, 10, 30, float(r)))
        conn.executemany("INSERT INTO class_ap VALUES (?,?,?,?,?,?,?)",
                         [(r, v, "stream", c, ap(r, c), 0.5, 3) for c in range(len(names))
                          if ap(r, c) is not None])
        conn.execute("INSERT INTO rounds VALUES (?,?,?,?,?,?,?,?,?)",
                     (r, v, "promoted", "", None, None, None, 1.0, float(r)))
    conn.commit()
    conn.close()


def test_report_of_many_rounds_and_classes_is_bounded_and_the_csv_keeps_everything(tmp_path):
    from PIL import Image

    names = [f"c{c:02d}" for c in range(30)]
    # class c ends 0.01 * c below its first AP: c29 is the most forgotten, c00 not at all
    forge_stream(tmp_path, 60, names, lambda r, c: 0.9 - (0.01 * c if r == 60 else 0.0))
    text = write_monitor_report(tmp_path).read_text()
    out = tmp_path / "metrics" / "report"
    for png in ("class_matrix.png", "class_ap.png"):
        width, height = Image.open(out / png).size
        assert width <= 4000 and height <= 4000
        assert (out / png).stat().st_size < 3_000_000
    rows = (out / "class_matrix.csv").read_text().splitlines()
    assert len(rows) == 61 and rows[0] == "round,model_version," + ",".join(names)
    assert rows[-1].startswith("60,v0060,0.9,0.89,")
    assert len((out / "rounds.csv").read_text().splitlines()) == 61
    header = next(line for line in text.splitlines() if line.startswith("| after |"))
    assert header == "| after | " + " | ".join(names[10:]) + " |"  # the 20 most forgotten
    assert "| r21 v0021 |" in text and "| r20 v0020 |" not in text  # the last 40 rounds
    assert "last 40 of 60 promoted rounds" in text
    assert "the 10 not shown are in [class_matrix.csv](class_matrix.csv): " + ", ".join(
        names[:10]) + "." in text


def test_plot_helpers_bound_size_and_keep_colours_distinct(tmp_path):
    from PIL import Image

    from edgecl.bench import report as rep

    styles = [rep._line_style(k, 60) for k in range(60)]
    assert len({(str(s["color"]), s.get("linestyle")) for s in styles}) == 60
    R = np.random.default_rng(0).random((200, 120))  # unbounded: 13000 x 16000 pixels
    path = plot_heatmap(R, [f"class{j}" for j in range(120)], tmp_path / "h.png",
                        [f"r{i}" for i in range(200)])
    assert max(Image.open(path).size) <= 4000
    series = {f"class{j}": R[:, j].tolist() for j in range(40)}
    path = plot_lines(series, [f"r{i}" for i in range(200)], tmp_path / "l.png", "AP")
    assert max(Image.open(path).size) <= 4000


def test_class_names_are_shown_literally_and_never_crash(tmp_path, recwarn):
    import warnings

    names = ["$\\foo$", "$x$", "a|b", "\U0001F697 car", "new\nline", "back\\slash"]
    forge_stream(tmp_path, 3, names, lambda r, c: 0.5 + 0.1 * r)
    warnings.simplefilter("always")
    text = write_monitor_report(tmp_path).read_text()
    assert not [w for w in recwarn if "Glyph" in str(w.message)]
    header = next(line for line in text.splitlines() if line.startswith("| after |"))
    assert header == ("| after | \\$\\\\foo\\$ | \\$x\\$ | a\\|b | \U0001F697 car | new<br>line "
                      "| back\\\\slash |")
    assert header.replace("\\|", "").count("|") == len(names) + 2  # no extra column
    assert "| a\\|b | -0.100 |" in text  # forgetting table: best earlier 0.7, latest 0.8


def test_report_files_are_0644_and_stale_ones_are_removed(tmp_path):
    import stat

    out = tmp_path / "out"
    out.mkdir()
    for name in ("accuracy_matrix.png", "reliability.png", "notes.txt"):
        (out / name).write_bytes(b"old")
    forge_stream(tmp_path, 2, ["car"], lambda r, c: 0.5)
    write_monitor_report(tmp_path, out)
    assert sorted(p.name for p in out.iterdir()) == [
        "class_ap.png", "class_matrix.csv", "class_matrix.png", "notes.txt", "report.md",
        "rounds.csv"]
    for path in out.iterdir():
        if path.name != "notes.txt":
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, path.name


def test_report_out_under_a_file_is_a_one_line_error(tmp_path, capsys):
    from edgecl.cli import main

    Monitor(tmp_path)
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["monitor", "report", "--state-dir", str(tmp_path), "--out",
                 str(afile / "sub")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{afile} (in its path) is not a folder" in err


@pytest.mark.parametrize("name", ["report.md", "rounds.csv"])
def test_a_folder_where_a_report_file_goes_is_refused_before_anything_is_written(tmp_path, capsys,
                                                                               name):
    """Before: the plots and rounds.csv were written, then "Is a directory" on report.md."""
    from edgecl.cli import main

    forge_stream(tmp_path, 2, ["car"], lambda r, c: 0.5)
    out = tmp_path / "out"
    (out / name).mkdir(parents=True)
    assert main(["monitor", "report", "--state-dir", str(tmp_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [f"error: report folder {out}: {out / name} is a folder, where "
                                f"the report writes its {name}; move it away or give another "
                                f"--out"]
    assert [p.name for p in out.iterdir()] == [name]


def test_a_read_only_state_dir_is_reported_elsewhere(tmp_path, monkeypatch):
    """A state directory pulled from a device: the report cannot go beside its metrics, and
    the refusal names --out (it was a 'Read-only file system' line about a temp file)."""
    import edgecl.runtime.monitor as monitor_module
    from edgecl.errors import EdgeclError

    state = tmp_path / "state"
    state_with_rounds(state)
    monkeypatch.setattr(monitor_module.os, "access", lambda path, mode: False)
    with pytest.raises(EdgeclError, match=r"cannot be written here \(read-only\).*give --out DIR"):
        write_monitor_report(state)
    report = write_monitor_report(state, tmp_path / "elsewhere")
    assert "| r3 v0003 | 0.600 | 0.700 | 0.900 |" in report.read_text()


def test_a_calibration_without_d_ece_says_why():
    """A young model's report read 'D-ECE - before, - after calibration.' above an empty table."""
    from edgecl.bench.report import _calibration_lines

    none = {"dece_before": None, "dece_after": None, "n_images": 9, "n_detections": 0,
            "protocol": {"min_conf": 0.001}}
    line = _calibration_lines(none, "v0002")[2]
    assert line == ("D-ECE - before, - after calibration. Not measured: the model made no "
                    "detection with confidence >= 0.001 on the 9 held-out image(s).")
    one = {"dece_before": 0.25, "dece_after": None, "n_images": 1, "n_detections": 4,
           "protocol": {"min_conf": 0.001}}
    assert _calibration_lines(one, "v0003")[2].endswith(
        "After calibration not measured: cross-fitting needs detections on at least 2 held-out "
        "images (1 here).")
    both = {"dece_before": 0.25, "dece_after": 0.05, "n_images": 8, "n_detections": 40}
    assert _calibration_lines(both, "v0004")[2] == "D-ECE 0.250 before, 0.050 after calibration."


def test_the_calibration_table_names_each_class_as_it_is_named_now():
    """Before: after 'classes rename Car Vehicle' every table of the report said Vehicle but
    the calibration table, which kept the name recorded with the calibration."""
    from edgecl.bench.report import _calibration_lines

    report = {"dece_before": 0.2, "dece_after": 0.1, "n_images": 8, "n_detections": 40,
              "per_class": {"0": {"name": "Car", "method": "platt", "n": 20, "n_tp": 6},
                            "1": {"name": "Person", "method": "constant", "n": 3, "n_tp": 1}}}
    rows = [line for line in _calibration_lines(report, "v0003", {0: "Vehicle", 1: "Person"})
            if line.startswith("| ") and ("platt" in line or "constant" in line)]
    assert [row.split("|")[1].strip() for row in rows] == ["Vehicle", "Person"]
    assert "| Car |" in "\n".join(_calibration_lines(report, "v0003"))  # no names: as recorded


def test_a_tiny_negative_figure_reads_zero_not_minus_zero():
    """A forgetting of -1e-9 (float noise around 0) read '-0.0000' in monitor summary and
    '-0.000' in report.md."""
    from edgecl.bench.report import _fmt
    from edgecl.commands.monitor import _text

    assert [_fmt(-1e-9), _fmt(-0.0), _fmt(-0.0006), _fmt(0.1234)] == ["0.000", "0.000", "-0.001", "0.123"]
    assert [_text(-1e-9), _text(-0.00004), _text(-0.5)] == ["0.0000", "0.0000", "-0.5000"]


def test_plot_labels_write_characters_the_font_lacks_as_code_points():
    """Before: CJK and emoji class names were drawn as rows of empty boxes, so that two CJK
    classes of one length had the same legend entry."""
    from edgecl.bench.report import _plain

    assert _plain("\u6c7d\u8f66 car") == "[U+6C7D U+8F66] car"
    assert _plain("\u884c\u4eba") == "[U+884C U+4EBA]"
    assert _plain("\U0001f6b2 $x") == "[U+1F6B2] \\$x"
    assert _plain("\u00c4rger \u0633\u064a\u0627\u0631\u0629 \u05e8\u05db\u05d1") == (
        "\u00c4rger \u0633\u064a\u0627\u0631\u0629 \u05e8\u05db\u05d1")  # DejaVu draws these


def test_lines_of_zeros_start_at_zero_and_name_their_x_axis(tmp_path, monkeypatch):
    """Before: a benchmark whose every ACC was 0 drew its curve on -0.04 to 0.04 (a negative
    ACC), and no line plot named its x axis."""
    from edgecl.bench import report

    figures = []
    monkeypatch.setattr(report, "_save", lambda fig, path: figures.append(fig) or path)
    plot_lines({"er": [0.0, 0.0]}, ["after t1", "after t2"], tmp_path / "a.png", "ACC (%)",
               ylim=None, xlabel="task learnt")
    plot_lines({"er": [-0.5, 2.0]}, ["r1", "r2"], tmp_path / "b.png", "BWT", ylim=None)
    zeros, negative = (fig.axes[0] for fig in figures)
    assert zeros.get_ylim()[0] == 0.0 and 0.05 <= zeros.get_ylim()[1] < 0.1
    assert zeros.get_xlabel() == "task learnt"
    assert negative.get_ylim()[0] < -0.5 and negative.get_xlabel() == ""


def test_labels_wrap_at_spaces_and_cut_only_a_word_too_long():
    """Before: 'person seen' became 'person s' / 'een', cut mid-word at 8 characters."""
    from edgecl.bench.report import _wrap

    assert _wrap("person seen", 8) == "person\nseen"
    assert _wrap("motorbike", 4) == "moto\nrbik\ne"
    assert _wrap("", 4) == "" and _wrap("a\nb c", 3) == "a\nb c"


def test_a_calibration_with_no_class_measured_has_no_empty_class_table():
    from edgecl.bench.report import _calibration_lines

    lines = _calibration_lines({"dece_before": None, "dece_after": None, "n_detections": 0,
                                "n_images": 3, "protocol": {"min_conf": 0.001}, "per_class": {}},
                               "v0002")
    assert any("Not measured: the model made no detection" in line for line in lines)
    assert not any(line.startswith("| class |") for line in lines)


def test_the_summary_table_gives_fps_and_the_memory_in_the_units_other_views_use():
    """Before: 'replay memory (bytes) | 5296128' and 'inference FPS | 173.510' beside
    memory stats' '5.1 MiB'."""
    from edgecl.bench.report import _summary_lines

    summary = {"model_version": "v0003", "round": 3, "kind": "classes", "acc": 0.5, "bwt": 0.0,
               "mean_forgetting": 0.0, "dece": None, "runtime_ts_s": None,
               "inference_fps": 173.51, "latency_ms_p50": 5.764, "memory_samples": 128,
               "memory_bytes": 5296128, "n_promoted": 3, "n_rejected": 0}
    text = "\n".join(_summary_lines(summary))
    assert "| replay memory (MiB, as memory stats gives it) | 5.1 |" in text
    assert "can take; a camera may deliver fewer) | 173.5 |" in text
    assert "| latency p50 (ms) | 5.8 |" in text
    assert "| replay memory (samples) | 128 |" in text


def test_a_rolled_back_round_says_so_and_is_counted(tmp_path):
    """Before: a version rolled back read ``retired | accepted`` in the rounds table, and the
    summary's ``rounds promoted / rejected`` counted it in neither."""
    mon = state_with_rounds(tmp_path)
    mon.follow_registry({"v0003": "retired"})
    summary = mon.summary()
    assert (summary["n_promoted"], summary["n_rejected"], summary["n_rolled_back"]) == (2, 1, 1)
    text = write_monitor_report(tmp_path).read_text()
    assert "| 3 | v0003 | rolled back |" in text
    assert "| rounds promoted / rejected / rolled back | 2 / 1 / 1 |" in text


def test_an_ap_axis_fits_small_values_so_a_fall_shows():
    """Before: AP over rounds was always drawn on 0-1; a weak model's Car falling from 0.068
    to 0.013 was a flat line at the bottom of the plot."""
    from edgecl.bench.report import ap_axis_top

    # 0.068 * 1.2 = 0.0816 -> the next step of 0.05 above: 0.10
    assert ap_axis_top(np.array([[0.014, np.nan], [0.068, 0.013]])) == pytest.approx(0.10)
    assert ap_axis_top(np.array([[0.2, 0.61]])) == 1.0
    assert ap_axis_top(np.array([[0.0, np.nan]])) == 0.05 and ap_axis_top(np.array([])) == 0.05


def test_the_calibration_table_shows_the_threshold_the_device_pseudo_labels_at(tmp_path):
    """Before: one column, 'threshold at precision 0.90: 0.475', where the device pseudo-labels
    at 0.6 (labels.uncertain_high), or not at all (a class fitted on too few true positives),
    and labels.pseudo_precision given to the report changed nothing."""
    import dataclasses

    from edgecl.calibration.posthoc import CALIBRATOR_FILE, fit_calibrator
    from edgecl.config import LabelsConfig
    from edgecl.models.registry import Registry

    # class 0: 12 detections at 0.45, all right: constant 13/14 = 0.929 (reaches 0.9, not
    # 0.95); class 1: 8 at 0.9, all right (9/10 = 0.9): 8 true positives, under 10
    conf = np.repeat([0.45, 0.9], [12, 8])
    calib = fit_calibrator(conf, np.repeat([0, 1], [12, 8]), np.ones(20, bool),
                           min_isotonic=50, min_platt=50)
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.onnx").write_bytes(b"onnx")
    calib.save(src / CALIBRATOR_FILE)
    version = Registry(tmp_path / "models").stage(
        {"model.onnx": src / "model.onnx", CALIBRATOR_FILE: src / CALIBRATOR_FILE}, {})
    mon = Monitor(tmp_path)
    mon.record_evaluation(1, version, {t: result(0.5) for t in TASKS}, TASKS)
    mon.record_round(1, version, "promoted")
    mon.record_calibration(1, version, {
        "dece_before": 0.2, "dece_after": 0.1, "n_images": 8, "n_detections": 20,
        "target_precision": 0.9, "thresholds": {"0": 0.45, "1": 0.9},
        "per_class": {"0": {"name": "car", "method": "constant", "n": 12, "n_tp": 12},
                      "1": {"name": "person", "method": "constant", "n": 8, "n_tp": 8}}})

    def rows(labels):
        text = write_monitor_report(tmp_path, labels_cfg=labels).read_text()
        return [[c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines()
                if line.startswith("| car |") or line.startswith("| person |")], text

    got, text = rows(LabelsConfig())
    assert [row[-2:] for row in got] == [["0.450", "0.600"], ["0.900", "none (8 true positives, fewer than 10)"]]
    assert "| calibrated score at precision 0.90 | pseudo-label threshold |" in text
    assert "labels.pseudo_precision 0.9, for a class fitted on at least" in text
    got, _ = rows(dataclasses.replace(LabelsConfig(), pseudo_precision=0.95,
                                      pseudo_min_true_positives=5, uncertain_high=0.5))
    assert [row[-1] for row in got] == ["none (precision 0.95 never reached)", "none (precision "
                                        "0.95 never reached)"]
    got, _ = rows(dataclasses.replace(LabelsConfig(), pseudo_min_true_positives=5,
                                      uncertain_high=0.4, pseudo_conf=0.4))
    assert [row[-1] for row in got] == ["0.450", "0.900"]
    assert "pseudo-label threshold" not in write_monitor_report(tmp_path).read_text()


def test_a_checkpoint_promoted_by_hand_is_named_so_and_the_serving_version_shown(tmp_path):
    """Before: a team's checkpoint added and promoted after 3 rounds read 'the model the device
    started with, before its first round' in report.md and rounds.csv, and the summary named
    the last round's version alone though another version served (promoted by hand)."""
    from edgecl.bench.report import LATER_START_REASON
    from edgecl.models.registry import Registry
    from edgecl.runtime.monitor import START_REASON

    mon = state_with_rounds(tmp_path)
    mon.record_round(0, "v0000", "promoted", reason=START_REASON)
    mon.record_round(5, "v0005", "promoted", reason=START_REASON)
    reg = Registry(tmp_path / "models")
    src = tmp_path / "m.onnx"
    src.write_bytes(b"\x01" * 32)
    for _ in range(6):
        reg.stage({"model.onnx": src}, {"source": str(src)})
    reg.promote("v0006")
    text = write_monitor_report(tmp_path).read_text()
    assert f"| 0 | v0000 | promoted | {START_REASON} |" in text
    assert f"| 5 | v0005 | promoted | {LATER_START_REASON} |" in text
    assert "| serving version | v0006 |" in text
