"""Shared internals of the stand-in Ascend tools (tests only).

A fake .om is `MAGIC`, one JSON header line (soc_version, input shapes, ...) and the
ONNX bytes, so the stand-in runners compute real outputs with onnxruntime. Outputs go
through float16 like an NPU would; FAKE_ASCEND_PERTURB=1 adds large noise so that
validation has something to catch. FAKE_NPU_SLOW="DEV:MS[,DEV:MS]" makes each inference
on NPU DEV take MS milliseconds longer (inside the timed window, as a slower chip would), so
multi-device tests can tell a measured card total from one chip's figure multiplied.
"""
from __future__ import annotations

import json
import os

import numpy as np

MAGIC = b"LVVIT-FAKE-OM v1\n"


def write_om(path: str, onnx_bytes: bytes, header: dict) -> None:
    tmp = path + ".partial"
    with open(tmp, "wb") as fh:
        fh.write(MAGIC)
        fh.write(json.dumps(header, sort_keys=True).encode() + b"\n")
        fh.write(onnx_bytes)
    os.replace(tmp, path)


def read_om(path: str) -> tuple[dict, bytes]:
    """(header, onnx bytes); ValueError for anything that is not a fake .om."""
    with open(path, "rb") as fh:
        data = fh.read()
    if not data.startswith(MAGIC):
        raise ValueError(f"{path} is not a valid offline model (bad magic)")
    header_line, _, onnx_bytes = data[len(MAGIC):].partition(b"\n")
    return json.loads(header_line), onnx_bytes


class FakeModel:
    """An .om loaded on the 'NPU': onnxruntime over the embedded ONNX."""

    def __init__(self, path: str):
        import onnxruntime as ort

        self.header, onnx_bytes = read_om(path)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        self.gears = self.header.get("batch_gears")  # --dynamic_batch_size: batch -1 in input_shapes
        self.aipp = self.header.get("aipp")  # --insert_op_conf fields: the input is uint8 NHWC of the source size
        self.batch = self.gears[0] if self.gears else None
        self.input_names = list(self.header["input_names"])
        self.input_dtype = np.uint8 if self.aipp else np.float32
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.set_batch(self.gears[-1] if self.gears else None)

    def set_batch(self, batch: int | None) -> None:
        """Pick a gear (ais_bench --dymBatch N); a batch that is no gear is refused like the real runtime."""
        if batch is not None and self.gears and batch not in self.gears:
            raise RuntimeError(f"[ERROR] dymBatch {batch} is not one of the model's gears {self.gears}")
        shapes = [[batch if d == -1 else d for d in s] for s in self.header["input_shapes"]]
        if self.aipp:
            shapes[0] = [shapes[0][0], int(self.aipp["src_image_size_h"]), int(self.aipp["src_image_size_w"]), 3]
        self.input_shapes = [tuple(s) for s in shapes]
        self.output_shapes = self._infer_output_shapes()

    def _infer_output_shapes(self) -> list[tuple]:
        zeros = [np.zeros(s, dtype=self.input_dtype) for s in self.input_shapes]
        return [tuple(o.shape) for o in self.run(zeros, perturb=False)]

    def _apply_aipp(self, array: np.ndarray) -> np.ndarray:
        """The stand-in's AIPP: crop, (pixel - mean_chn - min_chn) * var_reci_chn in fp16, NHWC -> NCHW."""
        if array.dtype != np.uint8:
            raise RuntimeError(f"[ERROR] the AIPP input takes uint8, got {array.dtype}")
        f = self.aipp
        if f.get("crop", "false") in ("true", "1"):
            y, x = int(f.get("load_start_pos_h", 0)), int(f.get("load_start_pos_w", 0))
            array = array[:, y:y + int(f["crop_size_h"]), x:x + int(f["crop_size_w"]), :]
        mean = np.array([float(f.get(f"mean_chn_{i}", 0)) + float(f.get(f"min_chn_{i}", 0)) for i in range(3)],
                        np.float16)
        reci = np.array([float(f.get(f"var_reci_chn_{i}", 1)) for i in range(3)], np.float16)
        return ((array.astype(np.float16) - mean) * reci).transpose(0, 3, 1, 2).astype(np.float32)

    def run(self, arrays: list[np.ndarray], perturb: bool | None = None) -> list[np.ndarray]:
        if self.aipp:
            arrays = [self._apply_aipp(np.asarray(arrays[0]))] + list(arrays[1:])
        feeds = {name: np.asarray(a, dtype=np.float32).astype(np.float16).astype(np.float32)
                 for name, a in zip(self.input_names, arrays)}
        outputs = self.session.run(None, feeds)
        outputs = [np.asarray(o, dtype=np.float32).astype(np.float16).astype(np.float32) for o in outputs]
        if perturb is None:
            perturb = os.environ.get("FAKE_ASCEND_PERTURB") == "1"
        if perturb:
            rng = np.random.default_rng(1234)
            outputs = [(o + rng.normal(0.0, float(np.std(o)) + 1e-3, o.shape)).astype(np.float32) for o in outputs]
        return outputs


def device_delay_s(device_id: int) -> float:
    """Extra seconds per inference on `device_id`, from FAKE_NPU_SLOW ("2:40" or "1:5,3:40")."""
    for item in filter(None, os.environ.get("FAKE_NPU_SLOW", "").split(",")):
        device, _, millis = item.partition(":")
        if int(device) == int(device_id):
            return float(millis) / 1000.0
    return 0.0
