"""Runners: one interface (runtime.base.Runner) over onnxruntime, ais_bench, the legacy
benchmark binary and whatever else registers (runtime.registry). `open_runner` is the entry point."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from lvvit_opt.core.errors import UserError, shown
from lvvit_opt.core.tensor_spec import TensorSpec
from lvvit_opt.runtime.base import Runner
from lvvit_opt.runtime.registry import backend_choices, names, register_runner, runner_for

__all__ = ["Runner", "TensorSpec", "open_runner", "register_runner", "runner_for", "names", "backend_choices"]


def open_runner(path: str | os.PathLike, *, backend: str = "auto", shared: Mapping[str, Any] | None = None,
                **options) -> Runner:
    """Open a model file for inference.

    backend: "auto" (by suffix: .onnx -> onnxruntime, .om -> the best Ascend runner available
    here), a suffix name ("om": the best .om runner), or a registered name or alias
    (runtime.registry.backend_choices()). options go to the runner's constructor
    (threads/providers for onnxruntime, device_id/... for .om); unknown ones are a UserError.
    shared: settings a caller has for every backend (bench's threads and device_id); the
    chosen runner takes those it declares, the others are ignored.
    """
    from lvvit_opt.core.fileio import require_regular_file

    if not require_regular_file(path).is_file():  # a FIFO or device: "not a regular file", never opened
        raise UserError(f"{shown(path)}: no such file")
    runner_class = runner_for(path, backend, options)
    taken = {k: v for k, v in (shared or {}).items() if k in runner_class.option_names() and k not in options}
    return runner_class(str(path), **runner_class.check_options({**taken, **options}))
