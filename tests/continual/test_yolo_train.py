"""Training glue: BatchNorm re-estimation after a round, the prefetching of training batches."""

import pytest
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


def test_prefetched_batches_come_in_order_and_the_thread_stops_with_the_block():
    import itertools
    import threading

    from edgecl.continual.yolo_train import PrefetchedBatches

    drawn = []

    def endless():
        for i in itertools.count():
            drawn.append(i)
            yield {"i": i}

    with PrefetchedBatches(endless(), depth=2) as batches:
        got = [b["i"] for b in itertools.islice(batches, 5)]
    assert got == [0, 1, 2, 3, 4]
    assert not any(t.name == "edgecl-batches" for t in threading.enumerate())
    # at most the queue's 2 batches and the one being handed over were drawn ahead
    assert len(drawn) <= 5 + 3
    with PrefetchedBatches(iter([{"i": 0}, {"i": 1}])) as batches:
        assert [b["i"] for b in batches] == [0, 1]  # a finite source ends the iteration


def test_a_loading_error_is_raised_in_the_training_thread_at_its_batch():
    from edgecl.continual.yolo_train import PrefetchedBatches

    def broken():
        yield {"i": 0}
        yield {"i": 1}
        raise OSError("frame 2: unreadable")

    got = []
    with pytest.raises(OSError, match="frame 2: unreadable"):
        with PrefetchedBatches(broken()) as batches:
            for b in batches:
                got.append(b["i"])
    assert got == [0, 1]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_loading_thread_that_ends_without_a_word_does_not_hang_the_round():
    """SystemExit ends a thread silently: the round must not wait for a batch forever."""
    from edgecl.continual.yolo_train import PrefetchedBatches

    def quitting():
        yield {"i": 0}
        raise SystemExit(3)

    got = []
    with pytest.raises(RuntimeError, match="batch-loading thread ended before the last batch"):
        with PrefetchedBatches(quitting()) as batches:
            for b in batches:
                got.append(b["i"])
    assert got == [0]


def test_a_stalled_read_does_not_hold_up_the_end_of_a_round(caplog, monkeypatch):
    """Storage that stalls: a Ctrl-C waited for the loading thread's read (20 s, then the
    process was killed without its clean-up); now close() leaves the thread behind."""
    import threading
    import time

    from edgecl.continual import yolo_train as yt

    monkeypatch.setattr(yt.PrefetchedBatches, "CLOSE_WAIT_S", 0.2)
    release = threading.Event()

    def stalling():
        yield {"i": 0}
        release.wait(30)  # a read that does not come back
        yield {"i": 1}

    start = time.monotonic()
    with caplog.at_level("WARNING", logger="edgecl.continual.yolo_train"):
        with yt.PrefetchedBatches(stalling(), depth=1) as batches:
            assert next(iter(batches)) == {"i": 0}
    assert time.monotonic() - start < 5
    assert "still reading after 0.2 s; the round ends without it" in caplog.text
    release.set()


def test_reestimation_can_go_on_with_the_average_the_layers_hold():
    """``reset=False`` (a round whose last batches were averaged): one more batch joins the
    cumulative average instead of replacing it."""
    model = nn.Sequential(nn.BatchNorm2d(1))
    recalibrate_batchnorm(model, [batch([0, 51, 102, 153])], 1, torch.device("cpu"))
    bn = model[0]
    bn.momentum = None  # as the round leaves it while averaging
    recalibrate_batchnorm(model, [batch([255, 255, 255, 255])], 1, torch.device("cpu"),
                          reset=False)
    # means 0.3 and 1.0 -> 0.65; variances 0.0666... and 0 -> 0.0333...
    assert abs(float(bn.running_mean) - 0.65) < 1e-6
    assert abs(float(bn.running_var) - 0.1 / 3) < 1e-6
    assert int(bn.num_batches_tracked) == 2


@pytest.mark.parametrize("cfg", ["yolo11n.yaml", "yolo26n.yaml"])
def test_the_frozen_layers_run_apart_then_the_rest_give_the_whole_forward_pass(cfg):
    """FrozenLayers (a copy of the first layers) computes exactly what those layers compute in
    a training round (eval mode, running statistics), and run_layers from the first trained
    layer on completes the model's own forward pass."""
    from edgecl.continual import yolo_train
    from edgecl.ultra import build_detection_model

    torch.manual_seed(0)
    model = build_detection_model(2, cfg=cfg)
    for m in model.modules():  # statistics that are not the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    model.model[0].register_forward_hook(lambda *_: pytest.fail("the model's hook ran"))
    frozen = yolo_train.FrozenLayers(model, 10)
    assert all(a is not b for a, b in zip(frozen.layers, model.model))  # a private copy
    img = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    x, saved = frozen(img)
    assert len(saved) == 10 and not x.requires_grad
    yolo_train.train_mode(model, list(model.model[:10]))
    model.model[0]._forward_hooks.clear()
    with torch.no_grad():
        want_x, want_saved = yolo_train.run_layers(model.model[:10], model.save, img)
    assert torch.equal(x, want_x)
    for have, want in zip(saved, want_saved, strict=True):
        assert (have is None) == (want is None)
        assert have is None or torch.equal(have, want)
    # the rest in eval mode (in training mode the batch statistics of a 2 x 2 feature map blow
    # rounding differences up)
    model.eval()
    with torch.no_grad():
        got = yolo_train.run_layers(model.model[10:], model.save, x, saved)[0][1]
        want = model(img)[1]
    flat = lambda out: [t for branch in (out.values() if "one2one" in out else [out])
                        for k, t in branch.items() if k in ("boxes", "scores")]
    for have, expected in zip(flat(got), flat(want), strict=True):
        assert torch.equal(have, expected)
