"""``edgecl bench console``: the figures' JSON shape on a tiny, short run; the synthetic
object stream and its colour finder."""

import argparse
import json

import numpy as np
import pytest

from edgecl.bench import console_load

pytestmark = pytest.mark.timeout(120)


def args(*flags, **options):
    parser = argparse.ArgumentParser()
    console_load.add_arguments(parser)
    named = [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
    return parser.parse_args([*flags, *named])


def test_object_frames_and_their_box():
    rng = np.random.default_rng(0)
    for _ in range(5):
        image, truth = console_load.object_frame(rng, 160, 120)
        assert image.shape == (120, 160, 3) and image.dtype == np.uint8
        assert console_load.object_box(image) == truth
    assert console_load.object_box(np.full((40, 40, 3), 100, np.uint8)) is None
    source = console_load.ObjectSource(width=64, height=48, frames=3).open()
    frames = [source.read() for _ in range(4)]
    assert [f is None for f in frames] == [False, False, False, True]
    assert frames[0].labels is None and frames[0].task is None


def test_bench_console_json_shape(tmp_path, capsys):
    code = console_load.run(args("--json", requests=24, threads=4, phase_s=0.4, repeats=1,
                                 backend="torch", work_dir=tmp_path))
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code in (0, 1) and code == (0 if summary["ok"] else 1)
    assert {"idle_fps", "load_fps", "viewer_fps", "load_ratio", "viewer_ratio", "load", "viewer",
            "phases", "targets", "ok", "frames", "imgsz", "backend",
            "ratio_basis"} <= set(summary)
    assert summary["load"]["requests"] == 24 and summary["load"]["errors"] == 0
    assert summary["viewer"]["errors"] == 0 and summary["viewer"]["requests"] >= 1
    assert [p["phase"] for p in summary["phases"]] == ["idle", "load", "idle", "viewer", "idle"]
    assert summary["idle_fps"] > 0 and summary["frames"] > 0
    assert summary["targets"] == {"load_ratio": 0.9, "viewer_ratio": 0.95}


@pytest.mark.parametrize("option, value, expected", [
    ("requests", "0", "expected an integer >= 1, got 0"),
    ("phase-s", "nan", "expected a finite number > 0, got 'nan'"),
    ("viewer-hz", "nan", "expected a finite number > 0, got 'nan'"),
    ("viewer-hz", "0", "expected a finite number > 0, got '0'"),
    ("imgsz", "48", "expected a multiple of 32"),
])
def test_bench_console_refuses_bad_options(capsys, option, value, expected):
    from edgecl.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "console", f"--{option}", value])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: argument --{option}: {expected}")
