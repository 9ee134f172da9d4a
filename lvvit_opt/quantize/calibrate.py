"""Calibration: the per-tensor activation range of every quantized layer, and the weights' scales.

The Ascend scheme follows AMCT's documented algorithms (CANN "AMCT" guide: "IFMR数据量化算法",
"ARQ权重量化算法", the record file's proto and the simplified config's fields). What is
documented and what is assumed is said at each step:

Documented
- Activations: one scale_d and one offset_d per tensor ("仅支持对数据进行统一量化"); with
  activation_offset true (the default) the quantization is asymmetric, without it symmetric.
- IFMR: clip_max_init is the max_percentile point of the ascending data, clip_min_init the
  min_percentile point of the descending data; candidates run from init*search_range_start to
  init*search_range_end in steps of search_step; the candidate that quantizes best is kept.
  Defaults: 0.999999 / 0.999999, [0.7, 1.3], 0.01.
- Weights (ARQ): symmetric (offset_w is 0), per channel (channel_wise) for Conv only; fully
  connected layers (MatMul/Gemm) share one scale.
- Bias: the deploy model quantizes it to int32 at scale_d*scale_w; the fake-quant model applies
  round(bias / (scale_d*scale_w)) * (scale_d*scale_w).

Assumed (not public)
- "Quantizes best" = the smallest mean squared error between the data and its fake-quantized
  copy, and clip_min and clip_max move by the same factor (one search over the factor, not a
  grid of both).
- The clipping range always contains 0 (so that 0 is exact and offset_d an integer).
- Asymmetric int8: scale_d = (clip_max - clip_min) / 255, offset_d = -128 - round(clip_min /
  scale_d), q = clip(round(x / scale_d) + offset_d, -128, 127); symmetric: scale_d =
  max(|clip_min|, |clip_max|) / 127 and offset_d = 0.
- ARQ's scale is max|w| / 127 over the channel (or the tensor); round half to even, as ONNX's
  QuantizeLinear rounds; a channel of zeros gets scale 1.
- The percentile points are taken on all the calibration values; the error of each candidate
  is measured on an evenly strided subsample of at most SEARCH_SAMPLES values plus the extremes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

ACT_METHODS = ("ifmr", "minmax", "percentile")
SEARCH_SAMPLES = 1 << 18
IFMR_SEARCH_RANGE = (0.7, 1.3)
IFMR_SEARCH_STEP = 0.01
DEFAULT_PERCENTILE = 0.999999


@dataclass(frozen=True)
class Scheme:
    """How a target quantizes: activation calibration and offset, weight granularity."""

    target: str
    method: str = "ifmr"
    percentile: float = DEFAULT_PERCENTILE  # a fraction: 0.999999
    activation_offset: bool = True  # asymmetric activations
    search_range: tuple[float, float] = IFMR_SEARCH_RANGE
    search_step: float = IFMR_SEARCH_STEP

    def describe(self) -> str:
        act = "asymmetric (offset)" if self.activation_offset else "symmetric"
        method = self.method + (f" (percentile {self.percentile:g})" if self.method in ("ifmr", "percentile") else "")
        if self.method == "ifmr":
            method += f", search {self.search_range[0]:g}..{self.search_range[1]:g} step {self.search_step:g}"
        return f"activations per tensor, {act}, {method}; weights symmetric int8"


@dataclass
class ActParams:
    scale: float
    offset: int  # int8 zero point
    clip_min: float
    clip_max: float


@dataclass
class LayerParams:
    """What the record file holds for one layer, and what the preview applies."""

    act: ActParams
    weight_scale: np.ndarray  # scalar array or one per output channel
    extra: dict = field(default_factory=dict)


def act_params_from_clip(clip_min: float, clip_max: float, offset: bool) -> ActParams:
    clip_min, clip_max = min(float(clip_min), 0.0), max(float(clip_max), 0.0)
    if offset:
        span = clip_max - clip_min
        scale = span / 255.0 if span > 0 else 1.0
        zero_point = int(np.clip(-128 - np.round(clip_min / scale), -128, 127))
    else:
        peak = max(abs(clip_min), abs(clip_max))
        scale = peak / 127.0 if peak > 0 else 1.0
        zero_point = 0
    return ActParams(float(np.float32(scale)), zero_point, clip_min, clip_max)


def fake_quant(x: np.ndarray, scale: float, offset: int) -> np.ndarray:
    """QuantizeLinear then DequantizeLinear on int8, in float32 as onnxruntime computes it."""
    x = np.asarray(x, dtype=np.float32)
    scale32 = np.float32(scale)
    q = np.clip(np.rint(x / scale32) + offset, -128, 127)
    return ((q - offset) * scale32).astype(np.float32)


def _percentile_points(values: np.ndarray, fraction: float) -> tuple[float, float]:
    """(clip_min_init, clip_max_init): the fraction point of the descending and ascending data."""
    n = values.size
    k_hi = min(n - 1, max(0, int(np.ceil(fraction * n)) - 1))
    k_lo = n - 1 - k_hi
    part = np.partition(values, (k_lo, k_hi))
    return float(part[k_lo]), float(part[k_hi])


def calibrate_activation(values: np.ndarray, scheme: Scheme) -> ActParams:
    """One tensor's scale/offset from its calibration values (all batches, flattened)."""
    values = np.asarray(values, dtype=np.float32).ravel()
    if values.size == 0:
        return act_params_from_clip(0.0, 0.0, scheme.activation_offset)
    lo, hi = float(values.min()), float(values.max())
    if scheme.method == "minmax":
        return act_params_from_clip(lo, hi, scheme.activation_offset)
    clip_min0, clip_max0 = _percentile_points(values, scheme.percentile)
    if scheme.method == "percentile":
        return act_params_from_clip(clip_min0, clip_max0, scheme.activation_offset)
    sample = values
    if values.size > SEARCH_SAMPLES:
        stride = int(np.ceil(values.size / SEARCH_SAMPLES))
        sample = np.concatenate([values[::stride], np.array([lo, hi], dtype=np.float32)])
    start, end = scheme.search_range
    factors = np.arange(start, end + scheme.search_step / 2, scheme.search_step)
    best, best_err = None, np.inf
    for factor in factors:
        params = act_params_from_clip(clip_min0 * factor, clip_max0 * factor, scheme.activation_offset)
        err = float(np.mean((fake_quant(sample, params.scale, params.offset) - sample) ** 2))
        if err < best_err:
            best, best_err = params, err
    return best


def weight_scale(weight: np.ndarray, axis: int | None) -> np.ndarray:
    """ARQ: max|w|/127, per output channel along `axis` (None: one for the tensor)."""
    w = np.abs(np.asarray(weight, dtype=np.float32))
    if axis is None:
        peak = np.asarray(w.max() if w.size else 0.0, dtype=np.float32)
    else:
        other = tuple(i for i in range(w.ndim) if i != axis)
        peak = w.max(axis=other) if other else w
    scale = (peak / np.float32(127.0)).astype(np.float32)
    return np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)


def fake_quant_weight(weight: np.ndarray, scale: np.ndarray, axis: int | None) -> np.ndarray:
    """Symmetric int8 quantize-dequantize of a weight (per channel along `axis`)."""
    q = int8_weight(weight, scale, axis).astype(np.float32)
    return (q * _broadcast_scale(scale, np.ndim(weight), axis)).astype(np.float32)


def int8_weight(weight: np.ndarray, scale: np.ndarray, axis: int | None) -> np.ndarray:
    """The int8 values of a symmetric weight (what the deploy model stores)."""
    w = np.asarray(weight, dtype=np.float32)
    s = _broadcast_scale(scale, w.ndim, axis)
    return np.clip(np.rint(w / s), -127, 127).astype(np.int8)


def _broadcast_scale(scale: np.ndarray, ndim: int, axis: int | None) -> np.ndarray:
    """A per-channel scale shaped to broadcast along `axis` of an `ndim` weight."""
    s = np.asarray(scale, dtype=np.float32)
    if axis is not None and s.ndim:
        shape = [1] * ndim
        shape[axis] = -1
        s = s.reshape(shape)
    return s


def fake_quant_bias(bias: np.ndarray, act_scale: float, w_scale: np.ndarray) -> np.ndarray:
    """AMCT's documented bias treatment in the fake-quant model: round(b/(sd*sw))*(sd*sw)."""
    step = (np.float32(act_scale) * np.asarray(w_scale, dtype=np.float32)).astype(np.float32)
    return (np.rint(np.asarray(bias, dtype=np.float32) / step) * step).astype(np.float32)


def collect_activations(model, layers: Sequence, feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Every quantized layer's activation input over all feed sets (flattened float32), from one
    onnxruntime session on a copy of `model` that exposes them as outputs."""
    import onnx

    from lvvit_opt.verify.golden import open_model_runner

    wanted = sorted({layer.activation for layer in layers if layer.quantize})
    graph_inputs = {i.name for i in model.graph.input}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    present = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in wanted if n not in present | graph_inputs)
    runner = open_model_runner(probe, label="the calibration copy", built=True)
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in wanted}
    from lvvit_opt.core.progress import task

    try:
        with task("calibration", total=len(feeds), unit="batch") as bar:
            for feed in feeds:
                out = runner.infer(feed)
                for name in wanted:
                    value = feed[name] if name in graph_inputs else out[name]
                    chunks[name].append(np.asarray(value, dtype=np.float32).ravel())
                bar.update(1)
    finally:
        runner.close()
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


def calibrate(model, layers: Sequence, feeds: list[dict[str, np.ndarray]], scheme: Scheme) -> dict[str, LayerParams]:
    """Layer name -> its activation and weight parameters, for every quantized layer."""
    from lvvit_opt.quantize.select import constant_values

    values = collect_activations(model, layers, feeds)
    constants = constant_values(model.graph)
    act_cache: dict[str, ActParams] = {}
    params = {}
    for layer in layers:
        if not layer.quantize:
            continue
        if layer.activation not in act_cache:
            act_cache[layer.activation] = calibrate_activation(values[layer.activation], scheme)
        axis = layer.channel_axis if layer.per_channel else None
        params[layer.name] = LayerParams(act_cache[layer.activation], weight_scale(constants[layer.weight], axis))
    return params
