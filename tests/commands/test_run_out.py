"""``edgecl run --out FILE`` run twice on one file (a device restarted): every frame id once,
each line naming its run, and a line a kill cut off removed at the restart."""

import json

from edgecl.cli import main

SOURCE = "synthetic://?tasks=1&images_per_task=8&imgsz=64&seed=0"


def run(capsys, out, frames: int) -> None:
    code = main(["run", "--source", SOURCE, "--model", "yolo11n.yaml", "--frames", str(frames),
                 "--quiet", "--json", "--out", str(out), "model.imgsz=64",
                 "runtime.warmup_runs=1"])
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()


def test_two_runs_on_one_out_file_give_each_frame_its_own_id(capsys, tmp_path):
    """Before: the second run wrote frame ids 0, 1, 2 again, and no field told its lines apart."""
    out = tmp_path / "detections.jsonl"
    run(capsys, out, 3)
    with out.open("ab") as f:  # the first run killed while writing a 4th line
        f.write(b'{"frame_id": 3, "run_id": "x", "ts_s": 17')
    run(capsys, out, 3)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["frame_id"] for line in lines] == [0, 1, 2, 3, 4, 5]
    runs = [line["run_id"] for line in lines]
    assert runs[0] == runs[2] != runs[3] == runs[5]
