"""How docs/bench_hituav/first_task_t1.pt was made: task 1 of the hit-uav benchmark, trained once.

Usage (offline, from the repository root):
    YOLO_OFFLINE=1 python docs/bench_hituav/first_task.py TASKS_YAML IMGSZ EPOCHS OUT_DIR

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


def main(tasks_yaml: str, imgsz: int, epochs: int, out_dir: str) -> Path:
    """Train task 1 and return the path of the final (EMA) checkpoint."""
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
    model = YOLO("yolo11n.yaml")
    start = time.monotonic()
    model.train(data=str(out / "data.yaml"), epochs=epochs, imgsz=imgsz, batch=8, workers=0,
                plots=False, amp=False, val=False, device="cpu", optimizer="AdamW", lr0=0.002,
                warmup_epochs=1, close_mosaic=max(1, epochs // 5), scale=0.3, mixup=0.0,
                project=str(out / "runs"), name="t1", exist_ok=True, seed=0,
                deterministic=False, pretrained=False)
    print(f"trained in {time.monotonic() - start:.0f} s")
    return Path(model.trainer.last)


if __name__ == "__main__":
    print(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
