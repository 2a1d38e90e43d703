"""How docs/bench_hituav/first_task_t1.pt was made: task 1 of the hit-uav benchmark, trained once.

Usage (offline, from the repository root):
    YOLO_OFFLINE=1 python docs/bench_hituav/first_task.py TASKS_YAML IMGSZ EPOCHS OUT_DIR [FROM HOURS]

first_task_t1.pt was made in two stages on a 2-core CPU shared with other jobs (46 minutes):
    first_task.py ds/tasks_table.yaml 384 10 ft384                   (10 epochs from scratch, 26 min)
    first_task.py ds/tasks_table.yaml 320 30 ft320 ft384/runs/t1/weights/last.pt 0.3
                                          (18 more minutes at 320 px from it, LR decayed over them)
ultralytics' validation on task 1's test images: mAP50 0.107, mAP50-95 0.042 (after stage 1:
0.062 / 0.019).  Far from converged: on a GPU, train it for 100+ epochs instead.

Task 1 (car, other vehicle) is the same for every strategy, so it is trained once, here with
ultralytics' own trainer (warm-up, EMA, linear LR decay, mosaic closed for the last epochs),
which the short-round fine-tuner of ``edgecl.continual.finetune`` has no use for.  The images
and labels are ``bench cl``'s filtered work copy (``prepare_view``), so class ids and names are
task 1's; ``bench cl --first-task-model OUT_DIR/runs/t1/weights/last.pt`` then starts every run
from it.
"""

import sys
import time
from pathlib import Path

import yaml

from edgecl.ultra import ensure_offline

ensure_offline()

from edgecl.bench.cl_data import prepare_view  # noqa: E402
from edgecl.data.tasks import load_tasks  # noqa: E402


def main(tasks_yaml: str, imgsz: int, epochs: int, out_dir: str, start: str = "yolo11n.yaml",
         hours: float = 0.0) -> Path:
    """Train task 1 (from scratch, or on from a checkpoint for at most ``hours``); return the
    path of the final (EMA) checkpoint."""
    from ultralytics import YOLO

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    view = prepare_view(load_tasks(Path(tasks_yaml)), out / "work")
    names = view.seen_names(0)
    (out / "train.txt").write_text("\n".join(map(str, view.train[0])) + "\n")
    (out / "val.txt").write_text("\n".join(map(str, view.test[0])) + "\n")
    data = {"path": str(out), "train": str(out / "train.txt"), "val": str(out / "val.txt"),
            "names": {i: n for i, n in enumerate(names.values())}}
    (out / "data.yaml").write_text(yaml.safe_dump(data))
    model = YOLO(start)
    began = time.monotonic()
    scratch = start.endswith(".yaml")
    extra = {} if scratch else {"time": hours, "close_mosaic": 2}
    model.train(**{"data": str(out / "data.yaml"), "epochs": epochs, "imgsz": imgsz, "batch": 8,
                   "workers": 0, "plots": False, "amp": False, "val": False, "device": "cpu",
                   "optimizer": "AdamW", "lr0": 0.002, "warmup_epochs": 1 if scratch else 0,
                   "close_mosaic": max(1, epochs // 5), "scale": 0.3, "mixup": 0.0,
                   "project": str(out / "runs"), "name": "t1", "exist_ok": True,
                   "seed": 0 if scratch else 1, "deterministic": False, **extra})
    print(f"trained in {time.monotonic() - began:.0f} s")
    return Path(model.trainer.last)


if __name__ == "__main__":
    print(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4],
               *(sys.argv[5:6] or ["yolo11n.yaml"]), *(float(h) for h in sys.argv[6:7])))
