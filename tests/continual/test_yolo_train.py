"""BatchNorm re-estimation after a round (:func:`edgecl.continual.yolo_train.recalibrate_batchnorm`)."""

import torch
from torch import nn

from edgecl.continual.yolo_train import recalibrate_batchnorm


def batch(values):
    """A collated batch of 1x1 single-channel images with these pixel values (0..255)."""
    return {"img": torch.tensor(values, dtype=torch.uint8).reshape(len(values), 1, 1, 1)}


def test_partial_batches_are_passed_over():
    # an epoch of 5 images at batch 4 is [4 images, 1 image]; the 1-image batch comes first
    # here, as it does when training stopped at the end of an epoch
    loader = [batch([255]), batch([0, 51, 102, 153])]
    model = nn.Sequential(nn.BatchNorm2d(1))
    used = recalibrate_batchnorm(model, loader, 1, torch.device("cpu"), min_images=4)
    bn = model[0]
    assert used == 1
    # only the 4-image batch: pixels 0, 0.2, 0.4, 0.6 -> mean 0.3, unbiased variance 0.0666...
    assert abs(float(bn.running_mean) - 0.3) < 1e-6
    assert abs(float(bn.running_var) - 0.2 / 3) < 1e-6
    assert bn.momentum == 0.1 and not model.training


def test_without_a_floor_the_first_batch_counts():
    loader = [batch([255, 255]), batch([0, 51, 102, 153])]
    model = nn.Sequential(nn.BatchNorm2d(1))
    recalibrate_batchnorm(model, loader, 1, torch.device("cpu"))
    assert abs(float(model[0].running_mean) - 1.0) < 1e-6


def test_a_loader_of_only_small_batches_stops():
    model = nn.Sequential(nn.BatchNorm2d(1))
    assert recalibrate_batchnorm(model, [batch([10])], 3, torch.device("cpu"), min_images=2) == 0


def _dataset_folder(root, sizes):
    """``images/iK.png`` of the given (height, width) with one box each, ``labels/`` beside."""
    import cv2
    import numpy as np

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    files = []
    for k, (h, w) in enumerate(sizes):
        path = root / "images" / f"i{k}.png"
        assert cv2.imwrite(str(path), np.full((h, w, 3), 80 + k, np.uint8))
        (root / "labels" / f"i{k}.txt").write_text("0 0.5 0.5 0.5 0.5\n" if k else "")
        files.append(path)
    return files


def test_an_image_too_small_to_train_on_is_named_with_ultralytics_reason(tmp_path):
    """Before: "No valid images found in .../labels.cache" (a throw-away file the user never
    sees) and, for one small image among good ones, "1 image(s) unreadable" and a numpy
    warning on its empty label file."""
    import warnings

    import pytest

    from edgecl.continual import yolo_train
    from edgecl.errors import LabelError

    hyp = yolo_train.training_hyp(64, 0.001)
    small = _dataset_folder(tmp_path / "small", [(8, 48), (8, 48)])
    with pytest.raises(LabelError, match=r"<10 pixels"):
        yolo_train.build_dataset(small, {0: "car"}, imgsz=64, augment=True, hyp=hyp)
    mixed = _dataset_folder(tmp_path / "mixed", [(8, 48), (32, 48), (40, 40)])
    dataset = yolo_train.build_dataset(mixed, {0: "car"}, imgsz=64, augment=True, hyp=hyp)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert yolo_train.check_dropped_images(mixed, dataset, 1) == [str(mixed[0])]
    assert "i0.png" in yolo_train.dropped_reason(dataset)
    assert "<10 pixels" in yolo_train.dropped_reason(dataset)
