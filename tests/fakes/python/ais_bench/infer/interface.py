"""Stand-in for `ais_bench.infer.interface` (tests only).

Same surface as the real one: InferSession(device_id, model_path), get_inputs(),
get_outputs() (descs with name, datatype, format, shape, size, realsize), infer(feeds,
mode="static"), free_resource(). Static mode rejects feeds whose byte size differs from the model's.
An .om with batch gears picks its gear with set_dynamic_batchsize("N") as the real API does (the largest
until then); an AIPP .om takes uint8 NHWC of its source size.
Timing API by LVVIT_FAKE_CANN generation, as the real releases have it: before 8 (default 6.3) only the
misspelt `sumary()` whose exec_time_list holds durations in ms (ait 2023: `npu_compute_time_list =
s.exec_time_list`); from 8 `summary()` whose exec_time_list holds (start_ms, end_ms) pairs (msit:
`[end - start for start, end in s.exec_time_list]`).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from fake_ascend import FakeModel, device_delay_s

_NEW_API = int(os.environ.get("LVVIT_FAKE_CANN", "6.3").split(".")[0] or 6) >= 8


class dtype:  # mimics aclruntime's pybind enum: str(dtype.FLOAT32) == "dtype.float32"
    def __init__(self, name: str):
        self.name = name

    def __str__(self):
        return f"dtype.{self.name}"

    __repr__ = __str__


@dataclass
class TensorDesc:
    name: str
    datatype: dtype
    format: int
    shape: list
    size: int
    realsize: int


@dataclass
class Summary:
    exec_time_list: list = field(default_factory=list)


class InferSession:
    def __init__(self, device_id: int, model_path: str, acl_json_path: str | None = None, debug: bool = False,
                 loop: int = 1):
        devices = int(os.environ.get("FAKE_NPU_COUNT", "1"))
        if not 0 <= int(device_id) < devices:
            raise RuntimeError(f"[ERROR] acl init failed: device id {device_id} is invalid, ret[107001]")
        if not os.path.isfile(model_path):
            raise RuntimeError(f"[ERROR] load model from file failed, model file is {model_path}, ret[145000]")
        try:
            self._model = FakeModel(model_path)
        except ValueError as exc:
            raise RuntimeError(f"[ERROR] load model from file failed, model file is {model_path}, ret[145000]: "
                               f"{exc}") from None
        self.device_id, self.model_path, self.loop = int(device_id), model_path, int(loop)
        self._summary = Summary()
        self._freed = False

    def get_inputs(self) -> list[TensorDesc]:
        kind = "uint8" if self._model.aipp else "float32"
        return [_desc(n, s, kind if i == 0 else "float32")
                for i, (n, s) in enumerate(zip(self._model.input_names, self._model.input_shapes))]

    def set_dynamic_batchsize(self, dym_batch: str) -> None:
        """The real API's way to pick a gear (ait interface.py: `set_dynamic_batchsize(self, dym_batch: str)`);
        infer then runs in mode 'static'. Until it is called the stand-in runs the largest gear."""
        if not self._model.gears:
            raise RuntimeError("[ERROR] the model has no dynamic batch gears (compiled without --dynamic_batch_size)")
        self._model.set_batch(int(dym_batch))

    def get_outputs(self) -> list[TensorDesc]:
        return [_desc(n, s) for n, s in zip(self._model.output_names, self._model.output_shapes)]

    def infer(self, feeds, mode: str = "static", custom_sizes=100000, out_array: bool = True):
        if self._freed:
            raise RuntimeError("[ERROR] session resource has been freed")
        if mode != "static":
            raise RuntimeError(f"[ERROR] fake ais_bench supports mode 'static' only, got {mode!r}")
        descs = self.get_inputs()
        if len(feeds) != len(descs):
            raise RuntimeError(f"[ERROR] inputs count {len(feeds)} does not match model inputs {len(descs)}")
        for array, desc in zip(feeds, descs):
            if np.asarray(array).nbytes != desc.size:
                raise RuntimeError(f"[ERROR] input {desc.name} size {np.asarray(array).nbytes} "
                                   f"not equal to model input size {desc.size}")
        start = time.perf_counter() * 1000.0
        outputs = self._model.run([np.asarray(a).reshape(d.shape) for a, d in zip(feeds, descs)])
        time.sleep(device_delay_s(self.device_id))
        end = time.perf_counter() * 1000.0
        self._summary.exec_time_list.append((start, end) if _NEW_API else end - start)
        return outputs

    if _NEW_API:
        def summary(self) -> Summary:
            return self._summary
    else:
        def sumary(self) -> Summary:  # the older, misspelt name
            return self._summary

    def reset_summaryinfo(self) -> None:
        self._summary = Summary()

    def free_resource(self) -> None:
        self._freed = True


def _desc(name: str, shape, kind: str = "float32") -> TensorDesc:
    size = int(np.prod(shape)) * np.dtype(kind).itemsize
    return TensorDesc(name, dtype(kind), 0, list(shape), size, size)
