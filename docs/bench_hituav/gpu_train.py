"""How the GPU-trained models of the hit-uav benchmark were made (see README.md beside this).

Three steps, on two machines. Where the data is (no GPU needed), pack the training images and
labels ``bench cl`` trains on:

    python docs/bench_hituav/gpu_train.py pack ds/tasks_table.yaml PACK

On one NVIDIA H200 (16 CPU cores, torch 2.11, ultralytics 8.4.190, no network), three runs at
once, 0.09 h each (arguments: PACK NAME IMGSZ HOURS OUT [DEVICE START WORKERS]):

    python docs/bench_hituav/gpu_train.py train PACK t1 640 0.09 OUT    # -> first_task_t1_640.pt
    python docs/bench_hituav/gpu_train.py train PACK t1 320 0.09 OUT
    python docs/bench_hituav/gpu_train.py train PACK joint 640 0.09 OUT

then, alone, the joint model on from there with every class labelled on every image, from a
pack whose images were all re-encoded (``pack ds/tasks_table.yaml PACK2 all``):

    python docs/bench_hituav/gpu_train.py train PACK2 joint-all 640 0.08 OUT 0 OUT/joint_640.pt 10

Back where the data is, box mAP50-95 per task on its test flights (``bench cl``'s evaluation):

    python docs/bench_hituav/gpu_train.py evaluate ds/tasks_table.yaml OUT/t1_640.pt 640

``pack`` writes the training split of each task of ``bench cl``'s view (``prepare_view``):
``labels/`` holds the classes up to the image's own task, renumbered in order of introduction,
as ``bench cl`` trains on them; ``labels-all/`` every class of every image (``joint-all``).
Task 1's images are copied unchanged and the later tasks' images re-encoded as 8-bit grey JPEG
at quality 90 (with ``all``, task 1's images too), which kept the pack under 64 MB.
No test image is packed: the models are scored where the data is, on the test flights.

``train`` trains YOLO11n (from scratch, ``yolo11n.yaml``, or on from ``START``) with
ultralytics' trainer for ``HOURS`` of wall time (ultralytics' ``time``: the epoch count and the
learning-rate schedule are fitted to it after the first epoch), SGD at lr0 0.01, batch 16,
mixed precision, mosaic closed for the last 10 epochs, no validation during training (its
final validation is on the training images), and keeps the final EMA weights as
``OUT/NAME_IMGSZ.pt``. The machine has no network, so ultralytics' AMP self-check (it
downloads a model), its font download and its results table (polars) are skipped.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml


def pack(tasks_yaml: str, out_dir: str, reencode: str = "later") -> None:
    """Write the training images and labels of every task to ``out_dir``, with ``t1.yaml``
    (task 1's classes) and ``joint.yaml`` (every class) for ultralytics; ``reencode``:
    ``later`` (the later tasks' images) or ``all``."""
    import cv2

    from edgecl.bench.cl_data import class_remap, filter_label_text, prepare_view
    from edgecl.data.tasks import label_path_for, load_tasks

    out = Path(out_dir)
    task_set = load_tasks(Path(tasks_yaml))
    view = prepare_view(task_set, out.parent / f"{out.name}-work")
    remap = class_remap(task_set)
    for t, task in enumerate(view.task_names):
        folder = out / "images" / task
        folder.mkdir(parents=True, exist_ok=True)
        (out / "labels" / task).mkdir(parents=True, exist_ok=True)
        (out / "labels-all" / task).mkdir(parents=True, exist_ok=True)
        for image, source in zip(view.train[t], task_set.tasks[t].split("train")):
            source_label = label_path_for(source)
            every_class = source_label.read_text() if source_label.is_file() else ""
            (out / "labels-all" / task / f"{image.stem}.txt").write_text(
                filter_label_text(every_class, remap, str(source_label)))
            dst = folder / image.name
            if t == 0 and reencode != "all":
                shutil.copyfile(image, dst)
            else:
                grey = cv2.imread(str(image), cv2.IMREAD_GRAYSCALE)
                cv2.imwrite(str(dst.with_suffix(".jpg")), grey, [cv2.IMWRITE_JPEG_QUALITY, 90])
            shutil.copyfile(label_path_for(image), out / "labels" / task / f"{image.stem}.txt")
    for name, tasks in (("t1", view.task_names[:1]), ("joint", view.task_names)):
        names = view.seen_names(len(tasks) - 1)
        train = [f"images/{task}" for task in tasks]
        (out / f"{name}.yaml").write_text(yaml.safe_dump(
            {"path": ".", "train": train, "val": list(train), "names": dict(names)}))
    print(json.dumps({t: len(view.train[k]) for k, t in enumerate(view.task_names)}))


def train(pack_dir: str, name: str, imgsz: int, hours: float, out_dir: str,
          device: str = "0", start: str = "yolo11n.yaml", workers: int = 3) -> Path:
    """Train ``name`` (``t1``, ``joint``, or ``joint-all``: every class labelled on every
    image) for ``hours`` on ``device`` (GPU 0 by default), from scratch or on from the
    checkpoint ``start``; return the path of the kept checkpoint."""
    import ultralytics.data.utils as data_utils
    import ultralytics.engine.trainer as trainer_mod
    from ultralytics import YOLO

    trainer_mod.check_amp = lambda model: True  # downloads a model to compare against
    data_utils.check_font = lambda *args, **kwargs: None  # downloads a font for plots
    trainer_mod.BaseTrainer.read_results_csv = lambda self: {}  # needs polars

    pack_root = Path(pack_dir).resolve()
    data_yaml = Path(out_dir).resolve() / f"{name}_{imgsz}.yaml"
    data_yaml.parent.mkdir(parents=True, exist_ok=True)
    data = yaml.safe_load((pack_root / f"{name.removesuffix('-all')}.yaml").read_text())
    if name == "joint-all":  # every class labelled on every image: ultralytics reads labels/
        every = data_yaml.parent / "joint-all-data"
        shutil.rmtree(every, ignore_errors=True)
        shutil.copytree(pack_root / "images", every / "images")
        shutil.copytree(pack_root / "labels-all", every / "labels")
        pack_root = every
    data["path"] = str(pack_root)
    data_yaml.write_text(yaml.safe_dump(data))
    began = time.monotonic()
    model = YOLO(start)
    model.train(data=str(data_yaml), imgsz=imgsz, epochs=1000, time=hours, batch=16,
                workers=int(workers), cache="ram", device=device, amp=True, optimizer="SGD",
                lr0=0.01,
                warmup_epochs=3 if start.endswith(".yaml") else 0,
                close_mosaic=10, plots=False, val=False, seed=0, deterministic=False,
                project=str(data_yaml.parent / "runs"), name=f"{name}_{imgsz}", exist_ok=True)
    kept = data_yaml.with_suffix(".pt")
    shutil.copyfile(model.trainer.last, kept)
    print(f"{name} {imgsz}px: {model.trainer.epoch + 1} epochs in {time.monotonic() - began:.0f} s"
          f" -> {kept}")
    return kept


def evaluate(tasks_yaml: str, checkpoint: str, imgsz: int) -> dict:
    """Box mAP50-95 of ``checkpoint`` on each task's test flights, with ``bench cl``'s own
    evaluation (each task scored on its own classes), for the tasks whose classes it has."""
    from edgecl.bench.cl_data import prepare_view
    from edgecl.bench.cl_protocol import EVAL_CONF, EVAL_MAX_DET
    from edgecl.config import ModelConfig
    from edgecl.continual.evaluate import evaluate_model
    from edgecl.data.tasks import load_tasks
    from edgecl.models.base import InferenceOptions
    from edgecl.models.checkpoint import load_checkpoint
    from edgecl.models.torch_backend import TorchBackend

    work = tempfile.TemporaryDirectory()
    view = prepare_view(load_tasks(Path(tasks_yaml)), work.name)
    model, meta = load_checkpoint(checkpoint)
    names = {int(k): str(v) for k, v in (meta.get("names") or model.names).items()}
    opts = InferenceOptions(conf=EVAL_CONF, iou=ModelConfig().iou, max_det=EVAL_MAX_DET)
    detector = TorchBackend.from_model(model, names, imgsz, opts)
    scores = {}
    for t, task in enumerate(view.task_names):
        classes = view.task_classes[t]
        if not set(classes) <= set(names):
            continue
        result = evaluate_model(detector, view.test[t], class_ids=classes)
        scores[task] = round(float(result.map50_95), 4)
    work.cleanup()
    scores["mean"] = round(sum(scores.values()) / len(scores), 4)
    print(json.dumps({"checkpoint": checkpoint, "imgsz": imgsz, "map50_95": scores}))
    return scores


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "pack":
        pack(*args[:3])
    elif command == "train":
        train(args[0], args[1], int(args[2]), float(args[3]), *args[4:8])
    elif command == "evaluate":
        evaluate(args[0], args[1], int(args[2]))
    else:
        sys.exit(f"unknown command {command!r}: use pack, train or evaluate")
