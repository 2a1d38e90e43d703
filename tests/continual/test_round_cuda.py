"""A learning round on a CUDA GPU (``gpu``): the fine-tuning runs on the GPU, in bfloat16 where
the GPU computes it natively, and the staged version's ONNX export serves on the CPU.

Skipped where torch sees no CUDA device. ``round_on`` is the same round on any device, so the
test's own logic is checked on the CPU in every run (``test_the_same_round_on_the_cpu``).
"""

import numpy as np
import pytest

from edgecl.config import MemoryConfig, load_config
from edgecl.continual import finetune
from edgecl.continual import round as round_mod
from edgecl.continual.memory import ReplayMemory, Sample
from edgecl.continual.round_state import RoundStatus

torch = pytest.importorskip("torch")

STEPS = 6


def round_on(device: str, tmp_path, monkeypatch):
    """Run a first round (from scratch) with ``learner.device=device`` on 8 drawn frames; return
    ``(result, devices the fine-tuner resolved, the arithmetic it resolved)``."""
    state = tmp_path / "state"
    with ReplayMemory(state / "memory", MemoryConfig(holdout_fraction=0.25),
                      names={0: "car"}) as memory:
        for k in range(8):
            image = np.full((64, 64, 3), 20 + 25 * k, np.uint8)
            image[16 + k:40 + k, 12:44] = 240 - 20 * k
            box = np.array([[0, 28 / 64, (28 + k) / 64, 32 / 64, 24 / 64]], np.float32)
            memory.add(Sample(image, box, task="stream"))
    resolved, precisions = [], []
    device_of, precision_of = finetune.resolve_device, finetune.resolve_precision
    monkeypatch.setattr(finetune, "resolve_device",
                        lambda name: resolved.append(device_of(name)) or resolved[-1])
    monkeypatch.setattr(finetune, "resolve_precision",
                        lambda p, d: precisions.append(precision_of(p, d)) or precisions[-1])
    cfg = load_config(None, [f"state_dir={state}", "memory.holdout_fraction=0.25",
                             f"learner.device={device}", "learner.imgsz=64", "model.imgsz=64",
                             "learner.batch=2", f"learner.first_round_max_steps={STEPS}",
                             "learner.first_round_budget_s=600", "export.openvino=off",
                             "export.cpu_int8=off"])
    return round_mod.run_round(cfg), resolved, precisions


def _check(result, resolved, device_type, state):
    import onnxruntime as ort

    assert result.status is RoundStatus.STAGED, result
    assert result.steps == STEPS
    assert resolved and {d.type for d in resolved} == {device_type}
    onnx_path = state / "models" / result.version / "model.onnx"
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    out = session.run(None, {"images": np.zeros((1, 3, 64, 64), np.float32)})[0]
    assert out.shape[:2] == (1, 4 + 1) and np.isfinite(out).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible to torch; "
                    "runs on a machine with a GPU")
def test_a_round_trains_on_the_gpu_and_its_version_serves_on_the_cpu(tmp_path, monkeypatch):
    result, resolved, precisions = round_on("cuda", tmp_path, monkeypatch)
    _check(result, resolved, "cuda", tmp_path / "state")
    major, _ = torch.cuda.get_device_capability(0)
    assert set(precisions) == {"bf16" if major >= 8 else "fp32"}


def test_the_same_round_on_the_cpu(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    result, resolved, precisions = round_on("cpu", tmp_path, monkeypatch)
    _check(result, resolved, "cpu", tmp_path / "state")
    assert precisions and set(precisions) <= {"bf16", "fp32"}
