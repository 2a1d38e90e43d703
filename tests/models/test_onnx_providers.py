"""``model.providers`` against what onnxruntime offers, by hand and at a runtime's start."""

import pytest

from edgecl.errors import ModelLoadError
from edgecl.models.onnx_backend import choose_providers, providers_problem

HERE = ["CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.parametrize("requested, problem", [
    ("auto", None), ("", None), ("CPUExecutionProvider", None),
    (" CUDAExecutionProvider , CPUExecutionProvider ", None),
    ("cpu", "onnxruntime has no cpu (did you mean CPUExecutionProvider?); this build has "
            "CUDAExecutionProvider, CPUExecutionProvider (or use auto)"),
    ("cuda", "onnxruntime has no cuda (did you mean CUDAExecutionProvider?); this build has "
             "CUDAExecutionProvider, CPUExecutionProvider (or use auto)"),
    ("Bogus", "onnxruntime has no Bogus; this build has CUDAExecutionProvider, "
              "CPUExecutionProvider (or use auto)"),
    (",", "names no provider; use auto or some of CUDAExecutionProvider, CPUExecutionProvider"),
])
def test_providers_problem_by_hand(requested, problem):
    assert providers_problem(requested, HERE) == problem


def test_choose_providers_names_the_key():
    assert choose_providers("auto", HERE) == HERE
    assert choose_providers("CUDAExecutionProvider", HERE) == HERE
    with pytest.raises(ModelLoadError, match=r"^model.providers=cpu: onnxruntime has no cpu"):
        choose_providers("cpu", HERE)


def test_a_runtime_refuses_providers_its_onnx_versions_could_not_use(run_edgecl, tmp_path):
    """Before: 'model.providers=cpu' (or a typo) ran a .pt checkpoint, and failed at the first
    learnt version's swap (it serves ONNX), then at every start after it."""
    frames = tmp_path / "frames"
    frames.mkdir()
    code, out, err = run_edgecl(["run", "--state-dir", tmp_path / "state", "--source",
                                 f"dir://{frames}", "--model", "yolo11n.yaml", "--frames", "1",
                                 "model.providers=Bogus"])
    assert code == 2 and err.startswith("error: model.providers=Bogus: onnxruntime has no Bogus; "
                                        "this build has ")
    assert not (tmp_path / "state" / "models").exists()
