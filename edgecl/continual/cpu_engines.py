"""CPU serving engines of an accepted candidate: OpenVINO FP32, an INT8 engine, the gate, the choice.

Called by :func:`edgecl.continual.round.export_candidate` after the ONNX export:

1. OpenVINO IR (``openvino/model.xml`` + ``.bin``) when ``export.openvino`` allows it;
2. an INT8 version of the best FP32 CPU engine (NNCF for OpenVINO, onnxruntime static QDQ for
   ONNX when OpenVINO is off) calibrated on replay images spread over classes
   (:func:`edgecl.continual.int8_calibration.calibration_images`);
3. the INT8 gate (:func:`edgecl.continual.int8_gate.judge_int8`): both engines scored by the
   same evaluator on the round's held-out images, per class;
4. the serving file: the first of :data:`SERVE_ORDER` that exists and passed the gate. The order
   is fixed (not measured per round, which would cost seconds and vary with load): on this
   project's 2-core x86 reference ``edgecl bench perf --backends`` measures OpenVINO INT8 >
   OpenVINO FP32 ~ onnxruntime INT8 > onnxruntime FP32 (README, "Benchmarks").

Every failure here is contained: the version then serves what did succeed (at worst
``model.onnx``) and the manifest says why.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from edgecl.config import Config
from edgecl.stop_signals import raise_if_stopping

log = logging.getLogger(__name__)

# Engine name -> registry file name of the file that serves it.
ENGINE_FILES = {
    "openvino-int8": "openvino-int8/model.xml",
    "openvino": "openvino/model.xml",
    "onnx-int8": "model-int8.onnx",
    "onnx": "model.onnx",
}
# Fastest first (measured by `edgecl bench perf --backends`); a version serves the first it has.
SERVE_ORDER = ("openvino-int8", "openvino", "onnx-int8", "onnx")
# Held-out images a round needs before its INT8 engine is even built: on fewer, the per-class gate
# compares noise (a toy round's INT8 engine once passed on 2 images and found nothing elsewhere).
MIN_HELD_OUT_FOR_INT8 = 10


def _wanted(setting: str, available) -> bool:
    """``on`` -> True, ``off`` -> False, ``auto`` -> whether ``available()`` says so."""
    return setting == "on" or (setting == "auto" and available())


def check_export_settings(cfg: Config) -> None:
    """Refuse at start an explicit ``on`` that cannot apply on this machine (``auto`` adapts).

    Raises:
        ConfigError: ``export.openvino: on`` without ``openvino``, ``export.cpu_int8: on``
            without the quantiser its engine needs (NNCF for OpenVINO, else onnxruntime's), or
            ``export.tensorrt: on`` without TensorRT (every round would log its failure).
    """
    from edgecl.errors import ConfigError
    from edgecl.models.engine_file import tensorrt_available
    from edgecl.models.openvino_backend import openvino_available
    from edgecl.models.quantize import nncf_available, onnx_quantization_available

    ex = cfg.export
    if ex.tensorrt == "on" and not tensorrt_available():
        raise ConfigError("export.tensorrt is 'on' but TensorRT does not import here (it runs on "
                          "a Jetson or an NVIDIA GPU machine); set export.tensorrt: auto")
    if ex.openvino == "on" and not openvino_available():
        raise ConfigError("export.openvino is 'on' but the openvino package does not import here; "
                          "pip install openvino, or set export.openvino: auto")
    if ex.cpu_int8 == "on":
        openvino = ex.openvino != "off" and openvino_available()
        if not (nncf_available() if openvino else onnx_quantization_available()):
            needed = "nncf" if openvino else "onnxruntime.quantization"
            raise ConfigError(f"export.cpu_int8 is 'on' but {needed} does not import here; "
                              f"install it, or set export.cpu_int8: auto")


def _ir_files(name: str, xml: Path) -> dict[str, Path]:
    """Registry entries of an IR: the ``.xml`` and its ``.bin``."""
    folder = name.rsplit("/", 1)[0]
    return {f"{folder}/model.xml": xml, f"{folder}/model.bin": xml.with_suffix(".bin")}


def per_class_map(path: Path, image_paths: list[Path], cfg: Config, *, conf: float,
                  max_det: int) -> dict[int, float]:
    """Held-out mAP50-95 per class of an exported engine (edgecl's evaluator).

    Args:
        path: the engine file (any backend suffix).
        image_paths: labelled held-out images.
        cfg: configuration (``model.iou``, ``learner.torch_threads`` used).
        conf: evaluation confidence threshold (0.001, as the round evaluates).
        max_det: evaluation detections per image (300).

    Returns:
        Class id -> mAP50-95 (classes with ground truth).

    Raises:
        ModelLoadError: the engine cannot load.
    """
    from edgecl.continual.evaluate import evaluate_model
    from edgecl.models.backends import load_backend
    from edgecl.models.base import InferenceOptions

    opts = InferenceOptions(conf=conf, iou=cfg.model.iou, max_det=max_det,
                            threads=cfg.learner.torch_threads)
    backend = load_backend(path, opts)
    try:
        return dict(evaluate_model(backend, image_paths).per_class_ap50_95)
    finally:
        backend.close()


def export_cpu_engines(cfg: Config, model, names: dict[int, str], onnx: Path, work: Path,
                       snapshot, *, eval_conf: float = 0.001, eval_max_det: int = 300,
                       engine_built: bool = False) -> tuple[dict[str, Path], dict]:
    """Export the CPU engines of an accepted candidate, gate its INT8 one, choose what serves.

    Args:
        cfg: configuration (``export.openvino``, ``export.cpu_int8``,
            ``export.int8_calibration_images``, ``export.int8_max_drop``, ``learner.imgsz``).
        model: the fine-tuned DetectionModel (not modified).
        names: its class names.
        onnx: the FP32 ONNX file already exported (``model.onnx``).
        work: the round's work folder (receives ``openvino/``, ``openvino-int8/``, ``model-int8.onnx``).
        snapshot: the round's memory snapshot (calibration from its training samples, the gate
            on its held-out ones).
        eval_conf: confidence threshold of the gate's evaluation.
        eval_max_det: detections per image of the gate's evaluation.
        engine_built: the round built a TensorRT engine, which the version serves: ``auto``
            then builds no CPU engine (on a Jetson, OpenVINO and NNCF took CPU time every
            round for engines that never served; ``on`` still builds them).

    Returns:
        ``(files, meta)``: registry file name -> path of the extra files to stage, and manifest
        fields ``serve`` (registry file name), ``serve_engine``, ``openvino``, ``int8``
        (``accepted``, ``reason``, per-class ``drops``, ``engine``, ...) and ``cpu_export_s``.
    """
    from edgecl.models.export_openvino import ExportError, export_openvino
    from edgecl.models.openvino_backend import openvino_available
    from edgecl.models.quantize import nncf_available, onnx_quantization_available

    ex = cfg.export
    files: dict[str, Path] = {}
    seconds: dict[str, float] = {}
    meta: dict = {}
    fp32_engine, fp32_path = "onnx", Path(onnx)
    gpu_why = "a TensorRT engine serves this version"
    if _wanted(ex.openvino, lambda: openvino_available() and not engine_built):
        stats: dict = {}
        try:
            xml = export_openvino(model, work / "openvino", imgsz=cfg.learner.imgsz, names=names,
                                  stats=stats)
        except (ExportError, OSError) as exc:
            log.error("OpenVINO IR not exported (%s); the ONNX model serves", exc)
            meta["openvino"] = f"export failed: {exc}"
        else:
            files.update(_ir_files(ENGINE_FILES["openvino"], xml))
            fp32_engine, fp32_path = "openvino", xml
            meta["openvino"] = "exported"
            seconds["openvino"] = round(stats.get("export_s", 0.0), 2)
    else:
        meta["openvino"] = ("not exported (export.openvino: off)" if ex.openvino == "off"
                            else f"not exported ({gpu_why})" if engine_built
                            else "not exported (openvino not installed)")
    int8_engine = f"{fp32_engine}-int8"
    available = nncf_available if fp32_engine == "openvino" else onnx_quantization_available
    serve = fp32_engine
    n_held = len(snapshot.ids(held_out=True))
    if not _wanted(ex.cpu_int8, lambda: available() and not engine_built):
        why = ("export.cpu_int8: off" if ex.cpu_int8 == "off" else gpu_why if engine_built
               else "quantiser not installed")
        meta["int8"] = {"accepted": False, "engine": int8_engine, "reason": f"not built ({why})"}
    elif n_held < MIN_HELD_OUT_FOR_INT8:
        # too few held-out images to measure INT8 accuracy: an unmeasured engine never serves
        meta["int8"] = {"accepted": False, "engine": int8_engine,
                        "reason": f"not built ({n_held} held-out images; at least "
                                  f"{MIN_HELD_OUT_FOR_INT8} are needed to measure INT8 accuracy)"}
    else:
        accepted, int8_meta, int8_files = _int8(cfg, fp32_engine, fp32_path, work, snapshot,
                                                names, seconds, eval_conf, eval_max_det)
        meta["int8"] = int8_meta
        if accepted:
            files.update(int8_files)
            serve = int8_engine
    meta.update({"serve": ENGINE_FILES[serve], "serve_engine": serve, "cpu_export_s": seconds})
    int8 = meta["int8"]
    judged = "fp32_per_class_map50_95" in int8  # built and measured: the gate's verdict
    why = (f"{'accepted' if int8['accepted'] else 'refused'} by the gate: {int8.get('reason', '')}"
           if judged else int8.get("reason", ""))
    log.info("CPU engine served: %s; INT8 (%s): %s", ENGINE_FILES[serve], int8_engine, why)
    return files, meta


def _int8(cfg: Config, fp32_engine: str, fp32_path: Path, work: Path, snapshot, names,
          seconds: dict, eval_conf: float, eval_max_det: int) -> tuple[bool, dict, dict[str, Path]]:
    """Quantise the FP32 CPU engine, gate it; return ``(accepted, manifest fields, files)``."""
    from edgecl.continual.int8_calibration import calibration_images
    from edgecl.continual.int8_gate import judge_int8
    from edgecl.errors import EdgeclError
    from edgecl.models.export_openvino import ExportError
    from edgecl.models.quantize import quantize_onnx, quantize_openvino

    ex = cfg.export
    engine = f"{fp32_engine}-int8"
    calib = calibration_images(snapshot, ex.int8_calibration_images)
    stats: dict = {}
    try:
        if fp32_engine == "openvino":
            path = quantize_openvino(fp32_path, work / "openvino-int8", calib, stats=stats)
            files = _ir_files(ENGINE_FILES[engine], path)
        else:
            path = quantize_onnx(fp32_path, work / ENGINE_FILES[engine], calib, stats=stats)
            files = {ENGINE_FILES[engine]: path}
    except (ExportError, OSError) as exc:
        log.error("INT8 engine not built (%s); FP32 serves", exc)
        return False, {"accepted": False, "engine": engine, "reason": f"quantisation failed: {exc}"}, {}
    seconds["quantize"] = round(stats.get("quantize_s", 0.0), 2)
    held_out = list(snapshot.image_paths(snapshot.ids(held_out=True)))
    t0 = time.perf_counter()
    try:
        ref = per_class_map(fp32_path, held_out, cfg, conf=eval_conf, max_det=eval_max_det) if held_out else {}
        got = per_class_map(path, held_out, cfg, conf=eval_conf, max_det=eval_max_det) if held_out else {}
    except Exception as exc:  # contained: an engine that cannot load, fails at inference
        raise_if_stopping()  # a stop signal inside an engine is no engine fault
        # (OpenVINO raises RuntimeError) or a bad label; the INT8 one then does not serve
        why = str(exc) if isinstance(exc, EdgeclError) else f"{type(exc).__name__}: {exc}"
        log.error("INT8 gate could not evaluate (%s); FP32 serves", why)
        return False, {"accepted": False, "engine": engine, "reason": f"evaluation failed: {why}"}, {}
    seconds["int8_gate"] = round(time.perf_counter() - t0, 2)
    verdict = judge_int8(ref, got, ex.int8_max_drop, names)
    out = dict(verdict.to_manifest(), engine=engine,
               calibration_images=stats.get("calibration_images", len(calib)),
               held_out_images=len(held_out),
               fp32_per_class_map50_95={str(names.get(c, c)): round(v, 4) for c, v in ref.items()},
               int8_per_class_map50_95={str(names.get(c, c)): round(v, 4) for c, v in got.items()})
    return verdict.accepted, out, files
