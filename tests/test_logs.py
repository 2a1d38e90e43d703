"""One log line per record (edgecl.logs), whatever the names inside it hold."""

import logging
import subprocess
import sys

import cv2
import numpy as np

from edgecl.logs import OneLineFormatter, one_line


def test_a_line_break_inside_a_message_is_escaped_and_a_traceback_keeps_its_lines():
    formatter = OneLineFormatter("%(levelname)s %(name)s: %(message)s")
    record = logging.LogRecord("edgecl.x", logging.WARNING, __file__, 1,
                               "skipping image: %s", ("flight\nb.jpg\r\n",), None)
    assert formatter.format(record) == "WARNING edgecl.x: skipping image: flight\\nb.jpg\\n"
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("edgecl.x", logging.ERROR, __file__, 1, "a\nb", (),
                                   sys.exc_info())
    lines = formatter.format(record).splitlines()
    assert lines[0] == "ERROR edgecl.x: a\\nb" and lines[1] == "Traceback (most recent call last):"
    assert lines[-1] == "ValueError: boom"
    assert one_line("a\rb") == "a\\rb"


def test_escape_sequences_and_bidi_controls_inside_a_message_are_shown_not_obeyed():
    """Before: a frame file named '\\e[2J\\e[31mRED\\e[0m.jpg' cleared the operator's terminal
    at 'labels pending', and one named with U+202E ('\\u202egpj.exe.jpg') read backwards."""
    assert one_line("\x1b[2J\x1b[31mRED\x1b[0m.jpg") == "\\x1b[2J\\x1b[31mRED\\x1b[0m.jpg"
    assert one_line("\u202egpj.exe.jpg") == "\\u202egpj.exe.jpg"
    assert one_line("a\u2066b\u2069\u200f\x7f\x9b\x00") == "a\\u2066b\\u2069\\u200f\\x7f\\x9b\\x00"
    # text in any script, tabs and the console's own characters stay as they are
    assert one_line("\u0633\u064a\u0627\u0631\u0629\tcar \u8f66 \u00e9") == (
        "\u0633\u064a\u0627\u0631\u0629\tcar \u8f66 \u00e9")
    formatter = OneLineFormatter("%(message)s")
    record = logging.LogRecord("edgecl.x", logging.WARNING, __file__, 1, "skipping %s",
                               ("\x1b]0;owned\x07x.jpg",), None)
    assert formatter.format(record) == "skipping \\x1b]0;owned\\x07x.jpg"


def test_every_line_of_a_run_over_a_file_named_with_a_line_break_is_one_record(tmp_path):
    """Before: a frame file named 'a<newline>b.jpg' split the warning about its missing label
    file, and its 'labels pending' line, in two; the second half read as a line of its own."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    assert cv2.imwrite(str(folder / "a\nb.jpg"), np.full((48, 64, 3), 90, np.uint8))
    state = tmp_path / "state"
    run = subprocess.run([sys.executable, "-c", "import sys; from edgecl.cli import main; "
                          "sys.exit(main(sys.argv[1:]))", "run", "--source", f"dir://{folder}",
                          "--state-dir", str(state), "--model", "yolo11n.yaml", "--quiet",
                          "model.imgsz=64", "learner.enabled=false", "labels.min_priority=0"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    assert any("a\\nb" in line for line in lines)
    assert all(line[:2] == "20" or line.startswith("frames=") for line in lines), lines
    pending = subprocess.run([sys.executable, "-c", "import sys; from edgecl.cli import main; "
                              "sys.exit(main(sys.argv[1:]))", "labels", "pending", "--state-dir",
                              str(state)], capture_output=True, text=True, timeout=120)
    assert pending.returncode == 0 and pending.stdout.count("\n") == 1
    assert "frame 0 (a\\nb.jpg) from dir://" in pending.stdout


def test_torchs_info_lines_are_left_out_unless_debug():
    """Before: a learner stopped by SIGTERM logged torch's 'FakeTensor cache stats:' lines."""
    import subprocess
    import sys

    script = ("import logging, sys\n"
              "from edgecl.logs import basic_config\n"
              "basic_config(logging.DEBUG if sys.argv[1] == 'debug' else logging.INFO, "
              "'%(levelname)s %(name)s: %(message)s')\n"
              "logging.getLogger('torch._subclasses').info('FakeTensor cache stats:')\n"
              "logging.getLogger('torch').warning('a real problem')\n"
              "logging.getLogger('edgecl.x').info('ours')\n")
    quiet = subprocess.run([sys.executable, "-c", script, "info"], capture_output=True,
                           text=True, timeout=60)
    assert quiet.stderr.splitlines() == ["WARNING torch: a real problem", "INFO edgecl.x: ours"]
    loud = subprocess.run([sys.executable, "-c", script, "debug"], capture_output=True,
                          text=True, timeout=60)
    assert "INFO torch._subclasses: FakeTensor cache stats:" in loud.stderr
