"""onnxruntime runner."""
from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from lvvit_opt.core.errors import UserError, reason_of, shown
from lvvit_opt.core.tensor_spec import runtime_spec
from lvvit_opt.runtime.base import Runner
from lvvit_opt.runtime.registry import register_runner

# onnxruntime's graph optimisation levels, OrtRunner's `graph_opt`: ORT_ENABLE_ALL (its default),
# ORT_ENABLE_EXTENDED, ORT_ENABLE_BASIC, ORT_DISABLE_ALL (bench --graph-opt, tune's graph_opt)
GRAPH_OPT_LEVELS = ("all", "extended", "basic", "disabled")


IN_MEMORY = "<in-memory model>"  # the model_path of a runner given a ModelProto
_CANNOT_LOAD = "onnxruntime cannot load it"


class OutputsNotExchangeable(UserError):
    """onnxruntime ran the model but its Python API cannot hand an output over as a numpy
    array (int4, float8 ...): whatever the inputs, it cannot be run from here."""


def refusal_reason(exc: Exception) -> str:
    """The '(why)' of OrtRunner's "<in-memory model>: onnxruntime cannot load it (why)", for a
    caller that knows what the in-memory model is and whose fault its refusal is."""
    return str(exc).removeprefix(f"{IN_MEMORY}: {_CANNOT_LOAD} ")


@register_runner
@dataclass
class OrtRunner(Runner):
    """Runs an ONNX file on onnxruntime.

    threads: intra-op threads (None = onnxruntime's default, reported as such).
    providers: execution providers in priority order; None = CPU only. Providers that
    this onnxruntime build lacks are dropped and reported in describe().
    """

    threads: int | None = None
    providers: Sequence[str] | None = None
    optimize: bool = True  # False: no graph optimisation at all (graph_opt "disabled")
    graph_opt: str = "all"  # onnxruntime's graph optimisation level: all | extended | basic | disabled
    model: Any = None  # an in-memory onnx.ModelProto to run instead of the file (see from_model)
    memory_arena: bool = True  # False: freed activations go back to the system (debug layers' many outputs)

    name = "onnxruntime"
    aliases = ("ort",)
    suffixes = (".onnx",)

    def _graph_level(self, ort):
        levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                  "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                  "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                  "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
        if self.graph_opt not in levels:
            raise UserError(f"onnxruntime graph_opt {self.graph_opt!r}: one of {', '.join(levels)}")
        return levels["disabled"] if not self.optimize else levels[self.graph_opt]

    @classmethod
    def from_model(cls, model, **options) -> "OrtRunner":
        """Run an in-memory onnx.ModelProto (passes, --check-each) without writing it first
        unless it is over protobuf's 2 GB limit."""
        return cls(IN_MEMORY, model=model, **options)

    def __post_init__(self):
        import onnxruntime as ort

        self._spill_dir = None
        self.session, self._providers = None, []
        if self.model is not None:
            self.session = self._open_session(ort, self._in_memory_source())
        else:  # onnxruntime reads the very file the gate checked (external data: it opens the path)
            from lvvit_opt.core.onnx_files import checked_model_path

            with checked_model_path(self.model_path) as source:
                self.session = self._open_session(ort, source)
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = 4  # a failed run is reported as one line (run_batch)
        self.inputs = [runtime_spec(i.name, i.shape, i.type) for i in self.session.get_inputs()]
        self.outputs = [runtime_spec(o.name, o.shape, o.type) for o in self.session.get_outputs()]

    def _open_session(self, ort, source):
        # Fatal only: a session that cannot load is reported as our one line (its reason
        # included), not after onnxruntime's own colored log line on stderr
        ort.set_default_logger_severity(4)
        options = ort.SessionOptions()
        options.log_severity_level = 4
        if self.threads:
            options.intra_op_num_threads = int(self.threads)
            options.inter_op_num_threads = 1
        options.graph_optimization_level = self._graph_level(ort)
        if not self.memory_arena:
            options.enable_cpu_mem_arena = False
        available = ort.get_available_providers()
        wanted = list(self.providers or ["CPUExecutionProvider"])
        self.missing_providers = [p for p in wanted if p not in available]
        chosen = [p for p in wanted if p in available] or ["CPUExecutionProvider"]
        try:
            return ort.InferenceSession(source, options, providers=chosen)
        except Exception as exc:
            reason = reason_of(exc, 300)
            if isinstance(source, str):  # onnxruntime names /proc/self/fd/N: say the user's path
                reason = reason.replace(source, str(self.model_path))
            raise UserError(f"{shown(self.model_path)}: {_CANNOT_LOAD} ({reason})") from None

    def run_batch(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        feeds = {spec.name: array for spec, array in zip(self.inputs, arrays)}
        try:
            return self.session.run([o.name for o in self.outputs], feeds, self._run_options)
        except Exception as exc:
            raise self._run_error(exc, feeds) from None

    def _run_error(self, exc: Exception, feeds: dict[str, np.ndarray]) -> Exception:
        """onnxruntime refused the run (InvalidArgument, Fail, RuntimeException, ...): one line
        naming the inputs and their shapes. The user's model and feeds (exit 2), or, for an
        in-memory model that our passes built, our own failure (exit 1)."""
        from lvvit_opt.core.errors import LvvitOptError

        if type(exc).__module__.split(".")[0] != "onnxruntime" and type(exc) is not RuntimeError:
            return exc  # not onnxruntime's (its C++ errors reach Python as RuntimeError): a bug of ours
        if not all(isinstance(arr, np.ndarray) for arr in feeds.values()):
            return exc  # pybind could not convert a feed we built (not an array): a bug of ours, not the user's
        given = ", ".join(f"{name!r} {arr.dtype}{list(arr.shape)}" for name, arr in feeds.items())
        expected = ", ".join(f"{spec.name!r} {list(spec.shape or ())}" for spec in self.inputs)
        detail = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", " ".join(str(exc).split()))
        # drop onnxruntime's source location ("/onnxruntime_src/...h:91 Func(args) cond was false.")
        detail = re.sub(r"/onnxruntime_src/\S+:\d+ .*?\)\s+(\S+ \S+ \S+ was false\.\s*)?", "", detail)[:300]
        if "numpy" in detail.lower():  # a type the Python API cannot hand over (int4, float8 outputs ...)
            kinds = ", ".join(f"{o.name!r} {o.dtype}" for o in self.outputs)
            return OutputsNotExchangeable(f"{self.model_path}: onnxruntime runs it but its Python API cannot hand over its "
                             f"outputs ({kinds}) as numpy arrays ({detail}); it cannot be run or validated "
                             "from here (apply: --no-validate)")
        text = (f"{self.model_path}: onnxruntime cannot run it on {given} (the model takes {expected}): "
                f"{type(exc).__name__}: {detail}")
        return UserError(text) if self.model is None else LvvitOptError(text)

    def _in_memory_source(self):
        from lvvit_opt.core.onnx_proto import needs_external_data
        from lvvit_opt.core.onnx_files import save_onnx

        if not needs_external_data(self.model):
            return self.model.SerializeToString()
        self._spill_dir = tempfile.TemporaryDirectory(prefix="lvvit-opt-")
        return str(save_onnx(self.model, os.path.join(self._spill_dir.name, "model.onnx")))

    def close(self) -> None:
        """Free the session (onnxruntime's copy of the weights) and any spilled model file."""
        if self.session is not None:
            self._providers = self.session.get_providers()
            self.session = None
        if self._spill_dir is not None:
            self._spill_dir.cleanup()
            self._spill_dir = None

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "model": self.model_path,
            "providers": self.session.get_providers() if self.session is not None else self._providers,
            "missing_providers": self.missing_providers,
            "threads": self.threads or "onnxruntime default",
            "graph_opt": "disabled" if not self.optimize else self.graph_opt,  # the level the session runs at
        }

