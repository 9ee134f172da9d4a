"""onnxruntime targets: a static QDQ model through `onnxruntime.quantization.quantize_static`
with the same layer selection (`nodes_to_quantize`), int8 activations and per-channel int8
weights. ort-trt makes activations and weights symmetric, as TensorRT's explicit quantization
requires. Calibration runs once per call to `OrtQuantizer`; the rollback's later builds reuse
it through onnxruntime's calibration cache."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

ORT_METHODS = ("minmax", "entropy", "percentile")


class _Reader:
    """onnxruntime's CalibrationDataReader over our feed sets."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds = feeds
        self.position = 0

    def get_next(self):
        if self.position >= len(self.feeds):
            return None
        self.position += 1
        return self.feeds[self.position - 1]

    def rewind(self):
        self.position = 0


class OrtQuantizer:
    """Builds the QDQ model for a set of layers kept in float, in `work_dir` (a folder of ours)."""

    def __init__(self, model_path: str | os.PathLike, layers: Sequence, feeds: list[dict], target: str, method: str,
                 percentile: float, work_dir: str | os.PathLike) -> None:
        from lvvit_opt.core.errors import UserError

        if method not in ORT_METHODS:
            raise UserError(f"--calib-method {method}: onnxruntime calibrates with {', '.join(ORT_METHODS)}")
        self.model_path = str(model_path)
        self.layers = list(layers)
        self.feeds = feeds
        self.target = target
        self.method = method
        self.percentile = percentile
        self.work_dir = Path(work_dir)
        self.cache = self.work_dir / "calibration_cache.json"
        self.builds = 0

    def options(self) -> dict:
        """The quantize_static arguments besides the model, data and nodes (also for the report)."""
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

        from lvvit_opt.quantize.select import QUANTIZABLE_OPS

        extra = {}
        if self.method == "percentile":
            extra["CalibPercentile"] = self.percentile * 100.0
        if self.target == "ort-trt":
            extra.update({"ActivationSymmetric": True, "WeightSymmetric": True})
        methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                   "percentile": CalibrationMethod.Percentile}
        return {"quant_format": QuantFormat.QDQ, "op_types_to_quantize": list(QUANTIZABLE_OPS), "per_channel": True,
                "activation_type": QuantType.QInt8, "weight_type": QuantType.QInt8,
                "calibrate_method": methods[self.method], "extra_options": extra}

    def describe(self) -> str:
        sym = "symmetric" if self.target == "ort-trt" else "asymmetric"
        return (f"onnxruntime quantize_static, QDQ, int8 activations ({sym}, per tensor, {self.method}"
                + (f" {self.percentile * 100:g}%" if self.method == "percentile" else "")
                + "), int8 weights per channel (symmetric)")

    def build(self, float_layers=(), dest: str | os.PathLike | None = None):
        """The QDQ model (an onnx.ModelProto) with `float_layers` kept float; written to `dest` if given."""
        import onnx
        from onnxruntime.quantization import quantize_static

        keep = set(float_layers)
        nodes = [layer.name for layer in self.layers if layer.quantize and layer.name not in keep]
        out = Path(dest) if dest is not None else self.work_dir / f"candidate_{self.builds}.onnx"
        self.builds += 1
        if not nodes:  # onnxruntime reads an empty nodes_to_quantize as "every node"
            from lvvit_opt.core.onnx_files import load_onnx

            model = load_onnx(self.model_path)
        else:
            reader = None if self.cache.is_file() else _Reader(self.feeds)
            quantize_static(self.model_path, str(out), reader, nodes_to_quantize=nodes,
                            calibration_cache_path=str(self.cache), **self.options())
            model = onnx.load(str(out))
            if dest is None:
                out.unlink()
        return model
