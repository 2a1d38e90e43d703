"""A real yolo11n as named arrays and back, with its class rows mapped by name."""

import numpy as np

from edgecl.continual.federated import is_class_row_key
from edgecl.fleet.weights import SILENT_BIAS, build_model, initial_global, model_arrays

BIAS = "model.23.cv3.0.2.bias"
WEIGHT = "model.23.cv3.1.2.weight"


def test_rows_follow_names_and_a_class_the_arrays_lack_is_fresh_or_silent():
    src = build_model({}, [], {0: "car", 1: "dog"}, seed=1)
    arrays = model_arrays(src)
    assert all(a.dtype == np.float32 for a in arrays.values())
    assert not any(k.endswith("num_batches_tracked") for k in arrays)
    out = model_arrays(build_model(arrays, ["car", "dog"], {0: "dog", 1: "cat", 2: "car"}, seed=2))
    np.testing.assert_array_equal(out[BIAS][[0, 2]], arrays[BIAS][[1, 0]])
    np.testing.assert_array_equal(out[WEIGHT][0], arrays[WEIGHT][1])
    shared = "model.0.conv.weight"
    np.testing.assert_array_equal(out[shared], arrays[shared])  # shared tensors copied as they are
    assert np.isfinite(out[BIAS][1]) and out[BIAS][1] != SILENT_BIAS  # fresh class prior
    silent = model_arrays(build_model(arrays, ["car", "dog"], {0: "dog", 1: "cat"}, absent="silent"))
    assert silent[BIAS][1] == SILENT_BIAS and not silent[WEIGHT][1].any()


def test_the_first_global_model_knows_no_class_and_is_reproducible():
    a, b = initial_global(seed=3), initial_global(seed=3)
    rows = [k for k in a if is_class_row_key(k)]
    assert len(rows) == 6 and all(a[k].shape[0] == 0 for k in rows)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_a_fleet_starts_only_from_a_pt_checkpoint(tmp_path):
    import pytest

    from edgecl.errors import ModelLoadError
    from edgecl.fleet.weights import global_from_checkpoint

    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"onnx")
    with pytest.raises(ModelLoadError, match="starts from an ultralytics .pt checkpoint"):
        global_from_checkpoint(onnx)  # before: 'UnpicklingError: invalid load key'
