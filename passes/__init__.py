"""Graph passes (installed as lvvit_opt.passes).

Public API:
  available_passes() -> {name: pass class}      (each class: .summary(), .option_names())
  run_pipeline(model, names, options=None, check_each=False, in_place=False) -> PipelineResult
  apply_file(in_path, out_path, passes, batch_size=None, validate=True, ...) -> ApplyResult
  register_pass / registered(cls): add a pass (permanently / for a block)
"""
from .base import GraphPass, PassReport, PassResult
from .graph_utils import op_counts
from .registry import available_passes, get_pass, parse_pass_list, register_pass, registered, unregister_pass

# Importing a pass module registers it; this order is the order `lvvit-opt passes` lists.
from . import softmax_transpose, fold_constants, fix_shapes, cleanup  # noqa: E402,F401
from .pipeline import (ApplyResult, ApplyValidationFailed, PassBrokeEquivalence, PassFailed,  # noqa: E402
                       PipelineResult, apply_file, format_op_table, run_pipeline)
from .softmax_transpose import inverse_perm  # noqa: E402

__all__ = [
    "GraphPass", "PassReport", "PassResult", "PipelineResult", "ApplyResult", "ApplyValidationFailed",
    "PassBrokeEquivalence", "PassFailed", "available_passes", "get_pass", "parse_pass_list", "register_pass",
    "registered", "unregister_pass", "run_pipeline", "apply_file", "format_op_table", "op_counts", "inverse_perm",
]
