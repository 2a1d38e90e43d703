"""``edgecl bench perf --backends`` on a tiny setup: one row per engine, the gate, what serves."""

from __future__ import annotations

import json

import pytest

from edgecl.bench.perf_backends import (format_table, gate_and_serve, interleaved_pass,
                                       paired_ratios, parse_backends)
from edgecl.cli import main
from edgecl.errors import ConfigError

TINY = ["--imgsz", "64", "--train-steps", "1", "--images-per-task", "16", "--frames", "3",
        "--repeats", "1", "--calibration-images", "4"]


def test_parse_backends():
    assert parse_backends("onnx, openvino-int8,onnx") == ["onnx", "openvino-int8"]
    with pytest.raises(ConfigError, match=r"unknown backend\(s\) tflite; choose from"):
        parse_backends("onnx,tflite")  # before: ['tflite'], a Python list
    with pytest.raises(ConfigError, match=r"^--backends: no backend named; choose from"):
        parse_backends(" , ")


def test_gate_and_serve_pick_the_fastest_that_passed():
    rows = [{"name": "onnx", "per_class_map50_95": {0: 0.5, 1: 0.4}},
            {"name": "openvino", "per_class_map50_95": {0: 0.5, 1: 0.4}},
            {"name": "openvino-int8", "per_class_map50_95": {0: 0.45, 1: 0.4}},
            {"name": "onnx-int8", "per_class_map50_95": {0: 0.495, 1: 0.4}}]
    gate, serve = gate_and_serve(rows, 0.01, {0: "car", 1: "person"})
    assert not gate["openvino-int8"]["accepted"] and gate["onnx-int8"]["accepted"]
    assert gate["openvino-int8"]["reason"].startswith("class car: mAP50-95 0.500 -> 0.450")
    assert serve == "openvino"


class _Recording:
    """A backend stand-in that records which engine ran which frame, in call order."""

    def __init__(self, name, calls):
        self.name, self.calls = name, calls

    def infer(self, images):
        self.calls.append((self.name, images[0]))
        return []


def test_interleaved_pass_takes_turns_every_block_reversing_the_order():
    calls = []
    backends = {n: _Recording(n, calls) for n in ("a", "b", "c")}
    times = interleaved_pass(backends, ["a", "b", "c"], [0, 1, 2, 3, 4], block=2)
    assert calls == [("a", 0), ("a", 1), ("b", 0), ("b", 1), ("c", 0), ("c", 1),
                     ("c", 2), ("c", 3), ("b", 2), ("b", 3), ("a", 2), ("a", 3),
                     ("a", 4), ("b", 4), ("c", 4)]
    assert {n: len(t) for n, t in times.items()} == {"a": 5, "b": 5, "c": 5}
    assert all(s >= 0 for t in times.values() for s in t)


def test_paired_ratios_compare_within_each_pass():
    # pass 2 ran everything 1.5x slower: the ratio within it is unchanged
    assert paired_ratios([100.0, 66.0, 120.0], [50.0, 33.0, 40.0]) == [2.0, 2.0, 3.0]
    assert paired_ratios([10.0, 20.0], [0.0, 10.0]) == [2.0]


def test_bench_perf_backends_tiny(tmp_path, capsys):
    pytest.importorskip("openvino", reason="openvino is not installed")
    pytest.importorskip("nncf", reason="nncf is not installed")
    names = ["onnx", "openvino", "openvino-int8", "onnx-int8"]
    assert main(["bench", "perf", "--backends", ",".join(names), "--json",
                 "--cache-dir", str(tmp_path), *TINY]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["name"] for r in result["backends"]] == names
    for row in result["backends"]:
        assert row["fps"] > 0 and row["latency_ms_p50"] > 0 and 0.0 <= row["map50_95"] <= 1.0
        assert row["ratio"] == pytest.approx(row["fps"] / result["backends"][0]["fps"], rel=1e-2)
    assert result["backends"][0]["ratio"] == 1.0
    assert set(result["int8_gate"]) == {"openvino-int8", "onnx-int8"}
    assert result["serve"] in names and result["imgsz"] == 64 and result["threads"] == 2
    assert result["calibration_images"] == 4 and result["held_out_images"] > 0
    assert len(list(tmp_path.glob("model-*.pt"))) == 1  # cached for the next run
    table = format_table(result)
    assert table.splitlines()[0].split() == ["name", "fps", "p50", "ms", "mAP50-95", "ratio"]
    assert f"serves: {result['serve']}" in table and "INT8 gate openvino-int8" in table
    # a model of other classes than the data's: refused (every class would score 0)
    from edgecl.models.checkpoint import load_checkpoint, save_checkpoint

    model, meta = load_checkpoint(next(tmp_path.glob("model-*.pt")))
    fruit = {i: f"fruit{i}" for i in meta["names"]}
    save_checkpoint(model, tmp_path / "fruit.pt", meta={**meta, "names": fruit})
    assert main(["bench", "perf", "--backends", "onnx", "--model", str(tmp_path / "fruit.pt"),
                 "--cache-dir", str(tmp_path), *TINY]) == 2
    assert "detects ['fruit0'" in capsys.readouterr().err


def test_bench_perf_refuses_a_non_pt_model_and_needs_a_model_without_backends(tmp_path, capsys):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    assert main(["bench", "perf", "--backends", "onnx", "--model", str(onnx),
                 "--cache-dir", str(tmp_path), *TINY]) == 2
    assert "not a .pt file" in capsys.readouterr().err
    assert main(["bench", "perf"]) == 2
    assert "needs --model" in capsys.readouterr().err
