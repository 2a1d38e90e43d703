"""PyTorch backend: ``.pt`` checkpoints and ``.yaml`` model definitions (fresh weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecl.errors import ModelLoadError
from edgecl.models.base import Backend, ModelMeta, sha256_file


def _torch_device(requested: str):
    import torch

    if requested in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if "CUDA" in requested or requested == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"model.providers={requested}: torch sees no CUDA device on this "
                                 f"machine (model.providers=auto picks what there is)")
        return torch.device("cuda")
    return torch.device("cpu")


class TorchBackend(Backend):
    """Runs an ultralytics DetectionModel eagerly with torch."""

    name = "torch"
    suffixes = (".pt", ".yaml", ".yml")

    def __init__(self, opts=None):
        super().__init__(opts)
        self._model = None
        self._device = None

    @classmethod
    def from_model(cls, model, names: dict[int, str], imgsz: int, opts=None) -> "TorchBackend":
        """Wrap an in-memory DetectionModel (the learner evaluates candidates this way).

        Args:
            model: ultralytics DetectionModel (moved to eval mode; not copied).
            names: class index -> name.
            imgsz: input side in pixels.
            opts: inference options (evaluation wants ``conf=0.001``).

        Returns:
            A ready backend.
        """
        backend = cls(opts)
        backend._device = next(model.parameters()).device
        backend._model = model.eval()
        backend._meta = ModelMeta(path="<memory>", backend=cls.name, names=dict(names),
                                  imgsz=int(imgsz), extra={"device": str(backend._device)})
        return backend

    def load(self, path: str | Path) -> "TorchBackend":
        """Load a checkpoint, a model yaml file, or a packaged ultralytics yaml by name.

        Args:
            path: ``.pt`` checkpoint, ``.yaml`` file, or a name such as ``yolo11n.yaml``.

        Returns:
            ``self``.

        Raises:
            ModelLoadError: missing, corrupt or unknown model.
        """
        path = Path(path)
        if path.suffix in (".yaml", ".yml") and not path.is_file():
            self._meta = self._load(path)
            return self
        return super().load(path)

    def _load(self, path: Path) -> ModelMeta:
        import torch

        if path.suffix in (".yaml", ".yml"):
            model, names, imgsz, digest = self._from_yaml(path)
        else:
            from edgecl.models.checkpoint import load_checkpoint

            model, meta = load_checkpoint(path)
            names = {int(k): str(v) for k, v in (meta.get("names") or model.names).items()}
            imgsz = int(meta.get("imgsz") or self.opts.imgsz or 640)
            digest = sha256_file(path)
        torch.set_num_threads(max(1, self.opts.threads))
        self._device = _torch_device(self.opts.providers)
        self._model = model.to(self._device).float().eval()
        return ModelMeta(path=str(path), backend=self.name, names=names, imgsz=imgsz,
                         sha256=digest, extra={"device": str(self._device)})

    def _from_yaml(self, path: Path):
        from edgecl.ultra import build_detection_model, model_yaml_problem, packaged_model_yaml

        import yaml

        from edgecl.errors import yaml_problem
        from edgecl.input_files import read_data_file, regular_file_problem

        special = regular_file_problem(path)
        if special:  # before: taken for a packaged yaml's name, "'f.yaml' does not exist"
            raise ModelLoadError(f"model yaml {path} is {special}")
        try:
            text = read_data_file(path, "a model yaml") if path.is_file() else ""
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"cannot read the model yaml {path}{yaml_problem(exc)}") from None
        try:
            spec = (yaml.safe_load(text) or {}) if path.is_file() else {}
            nc = int(spec.get("nc", 80))
            model = build_detection_model(nc, cfg=str(path) if path.is_file() else path.name)
        except yaml.YAMLError as exc:  # PyYAML's first line names neither the line nor why
            raise ModelLoadError(f"cannot read the model yaml {path}{yaml_problem(exc)}") from None
        except Exception as exc:  # ultralytics raises many kinds for a bad model yaml
            found = path if path.is_file() else packaged_model_yaml(path.name)
            problem = model_yaml_problem(found) if found is not None else None
            if problem is not None:  # before: "KeyError: 'backbone'" for a dataset's data.yaml
                raise ModelLoadError(f"{path} {problem}") from None
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"cannot build model from {path}: {type(exc).__name__}: "
                                 f"{first_line}") from None
        from edgecl.models.base import not_a_detector
        from edgecl.models.checkpoint import detection_model_problem

        problem = detection_model_problem(model)  # e.g. yolo11n-pose.yaml builds a Pose head
        if problem is not None:
            raise not_a_detector(path, problem)
        imgsz = int(self.opts.imgsz or 640)
        return model, dict(model.names), imgsz, sha256_file(path) if path.is_file() else ""

    def _nonfinite_weight(self) -> str | None:
        from edgecl.models.checkpoint import nonfinite_tensor

        return nonfinite_tensor(self._model)

    def _zeroed_weight(self) -> str | None:
        from edgecl.models.checkpoint import zeroed_kernel

        return zeroed_kernel((name, p.detach().float().cpu().numpy())
                             for name, p in self._model.named_parameters() if p.dim() == 4)

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self._model(torch.from_numpy(batch).to(self._device))
        out = out[0] if isinstance(out, (list, tuple)) else out
        return out.float().cpu().numpy()

    def close(self) -> None:
        """Free the torch model."""
        self._model = None
        super().close()
