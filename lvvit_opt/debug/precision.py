"""A true-fp16 copy of an ONNX graph, the way atc's --precision_mode runs it: the CPU preview
`debug layers --precision-mode` compares against fp32.

What atc documents (CANN ATC/AOE `--precision_mode` and `--keep_dtype` pages,
hiascend.com/document/detail/zh/canncommercial/601/devtools/auxiliarydevtool/aoepar_16_044.html,
.../CANNCommunityEdition/80RC2alpha002/devaids/auxiliarydevtool/aoepar_16_042.html,
.../en/canncommercial/800/devaids/atc/atlasatcparam_16_0074.html):
- force_fp16 (the inference default, e.g. Ascend310): an op that supports fp16 and fp32 runs in fp16.
- allow_fp32_to_fp16: matrix ops (Cube: MatMul/Gemm/Conv here) in fp16; vector ops keep fp32
  where they support it (we assume every vector op does: per-op support is not public).
- must_keep_origin_dtype: the original precision (fp32) everywhere; --keep_dtype has no effect.
- allow_mix_precision: ops reduced to fp16 per `precision_reduce` in the OPP's
  aic-<soc>-ops-info.json (true: fp16, false: fp32, absent: follows the previous op). That
  file is on an Ascend host only and its lists are NOT in the public documentation, so the
  preview treats every op as reducible: the force_fp16 worst case (said in the report).
- --keep_dtype FILE: one operator a line, an original-model node name or `OpType::TypeName`
  (an Ascend IR op type; matched here against ONNX op types of the same name).

The conversion itself (the `to_fp16` pass, passes/to_fp16.py): every float32 tensor a fp16 op reads is fp16; constants are rounded to
fp16 (numpy's round-to-nearest-even: values past 65504 become Inf, tiny ones fp16 subnormals
or 0) and never clamped; an op kept in fp32 reads fp32 (a Cast back where its input was made in
fp16) and its fp32 output is Cast to fp16 for fp16 readers, as atc inserts them. Graph inputs and
outputs stay fp32 (keep_io_types). Tensor names are kept, so the copy matches the original by name.
Subgraph ops (If/Loop/Scan) stay fp32. onnxruntime on CPU runs an fp16 op without an fp16 kernel
in fp32 between casts (its InsertCastTransformer), i.e. with fp16 inputs and outputs: close to
an NPU op that accumulates in fp32.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from lvvit_opt.core.errors import UserError

log = logging.getLogger(__name__)

from lvvit_opt.ascend.atc import PRECISION_MODES  # noqa: E402  (the one list; atc passes them through)
DEFAULT_PRECISION_MODE = "force_fp16"  # atc's inference default (Ascend310)
MATRIX_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose", "MatMulInteger", "Einsum")  # Cube ops


@dataclass
class KeepDtype:
    """A parsed --keep_dtype file: node names and op types (`OpType::X`) kept in fp32."""

    node_names: list[str] = field(default_factory=list)
    op_types: list[str] = field(default_factory=list)

    def keeps(self, node, label: str) -> bool:
        return label in self.node_names or node.name in self.node_names or node.op_type in self.op_types


def read_keep_dtype(path: str) -> KeepDtype:
    """atc's --keep_dtype file: one operator a line, a node name or `OpType::TypeName` (blank
    lines and `#` comments skipped)."""
    from lvvit_opt.core.readers import LIST, read_text

    text = read_text(path, "--keep-dtype", LIST)  # a regular file of at most 1 MB (core.readers)
    keep = KeepDtype()
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("OpType::"):
            keep.op_types.append(line[len("OpType::"):].strip())
        else:
            keep.node_names.append(line)
    return keep


def mode_keeps_fp32(mode: str, op_type: str) -> bool:
    """Whether atc's documented `mode` keeps an op of this ONNX type in fp32 (see module docstring)."""
    if mode not in PRECISION_MODES:
        raise UserError(f"--precision-mode {mode}: expected one of {', '.join(PRECISION_MODES)}")
    if mode == "must_keep_origin_dtype":
        return True
    if mode == "allow_fp32_to_fp16":
        return op_type not in MATRIX_OPS
    return False  # force_fp16; allow_mix_precision previewed as its worst case


def to_true_fp16(model, keep_fp32: Iterable[str] = (), precision_mode: str = DEFAULT_PRECISION_MODE,
                 keep_dtype: KeepDtype | None = None):
    """The model with fp32 inputs/outputs computing in fp16 as `precision_mode` does (module
    docstring; the conversion is the `to_fp16` pass's, passes/to_fp16.py); `keep_fp32` node names
    (and `keep_dtype`, ignored under must_keep_origin_dtype as atc does) stay fp32. The caller's
    model is not modified. Returns (model, kept node labels)."""
    from lvvit_opt.passes.to_fp16 import convert_to_fp16

    mode_keeps_fp32(precision_mode, "")  # validates the name
    keep = KeepDtype(list(keep_fp32), [])
    if keep_dtype is not None and precision_mode != "must_keep_origin_dtype":
        keep = KeepDtype(keep.node_names + keep_dtype.node_names, keep_dtype.op_types)
    done = convert_to_fp16(model, keep_nodes=keep.node_names, keep_op_types=keep.op_types,
                           keep=lambda node: mode_keeps_fp32(precision_mode, node.op_type))
    if done.unmatched_op_types:
        log.warning("--keep-dtype: OpType::%s matches no ONNX op type of this model (Ascend IR names can "
                    "differ from ONNX's)", ", OpType::".join(done.unmatched_op_types))
    return done.model, ([] if precision_mode == "must_keep_origin_dtype" else done.kept)


def summary(precision_mode: str, kept: Sequence[str]) -> str:
    """One line: how the preview was built."""
    note = (" (allow_mix_precision's per-op lists are in the Ascend host's aic-<soc>-ops-info.json, not public: "
            "previewed as every op in fp16, the worst case)" if precision_mode == "allow_mix_precision" else "")
    return f"true fp16 ({precision_mode}, no constant clamped), {len(kept)} node(s) kept in fp32{note}"
