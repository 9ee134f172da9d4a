"""Graph passes (installed as lvvit_opt.passes).

Public API:
  available_passes() -> {name: pass class}      (each class: .summary(), .option_names())
  run_pipeline(model, names, options=None, check_each=False, in_place=False) -> PipelineResult
      (the pass manager, passes/pipeline.py: structural check after every pass)
  apply_file(in_path, out_path, passes, batch_size=None, validate=True, ...) -> ApplyResult
      (the `apply` verb, passes/apply.py: load, run the manager, validate, write)
  apply_shortcuts(names, options, {"batch_size": 16}): option shortcuts (--batch-size) -> PASS.OPTION
  register_pass / registered(cls): add a pass (permanently / for a block)
  PRESETS, DEFAULT_PRESET: named recipes (`ascend310`) that --passes expands (passes/presets.py)
  check_pass_plan(names, options, shortcuts) -> (names, options): the whole plan checked without a model
"""
from lvvit_opt.passes.base import GraphPass, PassReport, PassResult
from lvvit_opt.passes.graph_utils import op_counts
from lvvit_opt.passes.presets import DEFAULT_PRESET, PRESET_SUMMARIES, PRESETS
from lvvit_opt.passes.registry import (apply_shortcuts, available_passes, check_pass_plan, get_pass, parse_pass_list,
                                       register_pass, registered, unregister_pass)

# Importing a pass module registers it; this order is the order `lvvit-opt passes` lists.
from lvvit_opt.passes import (softmax_transpose, fold_constants, fix_shapes, cleanup, lower_attention, target_opset, to_fp16)  # noqa: E402,F401
from lvvit_opt.passes.pipeline import (PassBrokeEquivalence, PassBrokeStructure, PassFailed, PipelineResult,
                                       format_op_table, run_pipeline, structural_problem)
from lvvit_opt.passes.apply import ApplyResult, ApplyValidationFailed, AttentionNotWrapped, apply_file  # noqa: E402
from lvvit_opt.passes.softmax_transpose import inverse_perm  # noqa: E402

__all__ = [
    "GraphPass", "PassReport", "PassResult", "PipelineResult", "ApplyResult", "ApplyValidationFailed", "AttentionNotWrapped",
    "PassBrokeEquivalence", "PassBrokeStructure", "PassFailed", "structural_problem", "available_passes",
    "get_pass", "parse_pass_list", "register_pass", "registered", "unregister_pass", "apply_shortcuts",
    "run_pipeline", "apply_file", "PRESETS", "PRESET_SUMMARIES", "DEFAULT_PRESET", "check_pass_plan", "format_op_table", "op_counts", "inverse_perm",
]
