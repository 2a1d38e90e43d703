"""A model registry with hand-made versions covering every serving-engine case (no training, no
export: the model files are a few placeholder bytes; nothing loads them).

``build_engine_registry(root)`` stages, oldest first:

* v0001 old manifest (no ``serve``/``serve_engine``/``int8``): model.pt + model.onnx, promoted;
* v0002 ``onnx`` served, the INT8 gate refused ``onnx-int8`` (its reason holds HTML, to prove the
  page escapes it);
* v0003 rejected by the accuracy gate: model.pt only;
* v0004 ``openvino-int8`` served, accepted by the INT8 gate; current;
* v0005 INT8 ``not built`` (export.cpu_int8: off), ``openvino`` served, staged;
* v0006 ``openvino-int8`` chosen, but a TensorRT FP16 engine was built too (it serves first).
"""

from __future__ import annotations

from pathlib import Path

from edgecl.models.registry import Registry

REFUSED_REASON = "class truck: mAP50-95 0.361 -> 0.313 (drop 0.048 > 0.01) <img src=x onerror=alert(1)>"
ACCEPTED_REASON = "every class within 0.01 of FP32 (largest drop 0.000, class car)"
NOT_BUILT_REASON = "not built (export.cpu_int8: off)"

OPENVINO = {"openvino/model.xml": b"<xml fp32/>", "openvino/model.bin": b"fp32"}
OPENVINO_INT8 = {"openvino-int8/model.xml": b"<xml int8/>", "openvino-int8/model.bin": b"int8"}


def _stage(reg: Registry, tmp: Path, files: dict[str, bytes], meta: dict, status: str = "staged") -> str:
    sources = {}
    for i, (name, payload) in enumerate(files.items()):
        src = tmp / f"src{len(reg.versions())}-{i}{Path(name).suffix}"
        src.write_bytes(payload)
        sources[name] = src
    return reg.stage(sources, meta, status=status)


def build_engine_registry(root: Path) -> Registry:
    """Stage the six versions above into ``root`` (the registry folder, e.g. ``STATE/models``)."""
    reg = Registry(root)
    tmp = Path(root).parent / "engine-sources"
    tmp.mkdir(parents=True, exist_ok=True)
    base = {"model.pt": b"pt-weights", "model.onnx": b"onnx-fp32"}
    metrics = {"per_class_map50_95": {"car": 0.61, "truck": 0.36}, "dece": 0.05}
    v1 = _stage(reg, tmp, base, {"reason": "initial model", "metrics": metrics})
    v2 = _stage(reg, tmp, base, {
        "parent": v1, "reason": "gate: accepted (+0.02 mAP)", "metrics": metrics,
        "serve": "model.onnx", "serve_engine": "onnx", "openvino": "not exported (export.openvino: off)",
        "int8": {"accepted": False, "engine": "onnx-int8", "reason": REFUSED_REASON,
                 "drops": {"car": 0.004, "truck": 0.048}, "max_drop": 0.01}})
    _stage(reg, tmp, {"model.pt": b"pt-rejected"},
           {"parent": v2, "reason": "gate: truck AP fell 0.12 > 0.05", "metrics": metrics},
           status="rejected")
    v4 = _stage(reg, tmp, {**base, **OPENVINO, **OPENVINO_INT8}, {
        "parent": v2, "reason": "gate: accepted (+0.04 mAP)", "metrics": metrics,
        "serve": "openvino-int8/model.xml", "serve_engine": "openvino-int8", "openvino": "exported",
        "int8": {"accepted": True, "engine": "openvino-int8", "reason": ACCEPTED_REASON,
                 "drops": {"car": 0.0, "truck": -0.002}, "max_drop": 0.01}})
    _stage(reg, tmp, {**base, **OPENVINO}, {
        "parent": v4, "reason": "gate: accepted (+0.01 mAP)", "metrics": metrics,
        "serve": "openvino/model.xml", "serve_engine": "openvino", "openvino": "exported",
        "int8": {"accepted": False, "engine": "openvino-int8", "reason": NOT_BUILT_REASON}})
    _stage(reg, tmp, {**base, **OPENVINO, **OPENVINO_INT8, "model.engine": b"trt-plan"}, {
        "parent": v4, "reason": "gate: accepted (+0.01 mAP)", "metrics": metrics, "precision": "fp16",
        "serve": "openvino-int8/model.xml", "serve_engine": "openvino-int8", "openvino": "exported",
        "int8": {"accepted": True, "engine": "openvino-int8", "reason": ACCEPTED_REASON,
                 "drops": {"car": 0.0}, "max_drop": 0.01}})
    reg.promote(v1)
    reg.promote(v2)
    reg.promote(v4)
    return reg
