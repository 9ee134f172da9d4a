"""Is this ONNX something the chosen CANN's atc accepts? Checked before atc runs (`atc`, `atc --dry-run`).

Three documented facts, kept as data in ascend/data/cann_onnx_support.json with their public
sources: the ONNX opset range of the CANN version (v9-v13 for 5.x/6.0, v9-v18 for 7/8), its
ONNX operator list, and static input shapes (atc's --input_shape fixes only what it names).
A failure names the op or opset at fault and the pass that fixes it (exit 2).

Compared with msit's `analyze` (msit 8.2.0 sdist; the comparison, case by case against real atc
output, is tests/test_msit_analyze_comparison.py): msit runs atc and marks the ops its coded
unsupported-op lines name (EZ0501/EZ3002/EZ3003/EZ9010/E19010, node names without spaces only) in
result.csv, then queries the installed operator library per SoC. What atc refuses for opset or
operator list, ours says before atc runs, with the fix (an opset above the range names atc's
ai.onnx::<opset>::<op> key); a kernel missing for one SoC (EZ3003) only atc and the installed
library know: ours reports the op atc named, as msit would. msit needs a CANN install; ours needs
nothing installed (a laptop, CI).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from lvvit_opt.core.errors import UserError

DATA = Path(__file__).with_name("data") / "cann_onnx_support.json"
# ops our passes can remove: what to run instead of giving up
FIXES = {"attention": "lower_attention", "gelu": "target_opset (lowers Gelu to Erf)"}


@lru_cache(maxsize=1)
def support_table() -> list[dict]:
    return json.loads(DATA.read_text())["versions"]


def support_for(cann_version: str | None) -> dict:
    """The documented support entry of a CANN version ('5.0.4', '8.1.RC1', ...); None: the newest."""
    table = support_table()
    if not cann_version:
        return table[-1]
    match = re.match(r"\s*(\d+)", str(cann_version))
    if not match:
        raise UserError(f"--cann-version {cann_version!r}: expected a version such as 8.0.RC1 or 5.0.4")
    return table[0] if int(match.group(1)) < 7 else table[-1]


def installed_cann_version(cann_home: str | os.PathLike | None = None) -> tuple[str | None, str]:
    """(version, where it came from) as `doctor` reads the install; (None, why) when there is none."""
    from lvvit_opt.core.cann import find_cann
    from lvvit_opt.ascend.doctor import cann_version

    toolkit = find_cann(cann_home)
    if toolkit is None:
        return None, "no CANN toolkit found here: assumed the newest documented"
    found = cann_version(toolkit.home)
    if not found.version:
        return None, f"no version file under {toolkit.home}: assumed the newest documented"
    return found.version, f"read from {found.source}" if found.source else "read from the install"


@dataclass
class Readiness:
    cann: str
    cann_from: str
    opset: int
    opset_range: tuple[int, int]
    unsupported: dict[str, list[str]] = field(default_factory=dict)  # op type -> node names
    dynamic_inputs: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"ok": self.ok, "cann": self.cann, "cann_from": self.cann_from, "opset": self.opset,
                "opset_range": list(self.opset_range), "unsupported_ops": self.unsupported,
                "dynamic_inputs": self.dynamic_inputs, "problems": self.problems}


def check_readiness(model_path: str | os.PathLike, cann_version: str | None = None, cann_from: str = "newest documented",
                    input_shapes: dict[str, list[int]] | None = None) -> Readiness:
    """Check MODEL against the documented ONNX support of `cann_version` (not raising)."""
    from lvvit_opt.core.onnx_files import load_onnx

    model = load_onnx(model_path, weights=False)
    entry = support_for(cann_version)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    low, high = entry["opset_min"], entry["opset_max"]
    report = Readiness(entry["cann"], cann_from, opset, (low, high))
    if not low <= opset <= high:
        report.problems.append(_opset_problem(model, entry, opset))
    _check_operators(model, entry, report)
    _check_static_inputs(model, input_shapes or {}, report)
    return report


def _is_default_domain(node) -> bool:
    return node.domain in ("", "ai.onnx")


def _atc_keys(model, opset: int, limit: int = 3) -> str:
    """atc's parser keys of the graph's first op types, e.g. "ai.onnx::23::Div (node model1 div node)"."""
    from lvvit_opt.core.graph_walk import walk_nodes

    first: dict[str, str] = {}
    for node, _ in walk_nodes(model):
        if _is_default_domain(node):
            first.setdefault(node.op_type, node.name or node.output[0])
    keys = [f"ai.onnx::{opset}::{op} (node {name})" for op, name in list(first.items())[:limit]]
    more = f" and {len(first) - limit} more op type(s)" if len(first) > limit else ""
    return ", ".join(keys) + more


def _opset_problem(model, entry: dict, opset: int) -> str:
    low, high = entry["opset_min"], entry["opset_max"]
    text = f"opset {opset} is outside CANN {entry['cann']}'s documented v{low}-v{high}"
    if opset > high and model.graph.node:  # atc looks parsers up as ai.onnx::<opset>::<op>: none for these
        text += f" (atc E19010: no parser for {_atc_keys(model, opset)})"
    target, bound = (high, f"<= {high}") if opset > high else (low, f">= {low}")
    cannot = _conversion_refusal(model, target)
    if cannot:  # never point at a pass that would refuse this graph
        return text + f": re-export with opset {bound} ({cannot})"
    return text + (f": run `lvvit-opt apply --passes target_opset -O target_opset.opset={target}` "
                   f"(or re-export with opset {bound})")


def _conversion_refusal(model, opset: int) -> str | None:
    """Why target_opset (opset) would refuse `model`, tried on a copy of its structure (the
    weights are not needed: the conversion of a weightless copy is what the pass runs); None
    when it would convert."""
    import onnx

    from lvvit_opt.core.errors import UserError
    from lvvit_opt.passes.pipeline import run_pipeline

    try:
        run_pipeline(model, ["target_opset"], {"target_opset": {"opset": opset}})
    except UserError as exc:
        return str(exc).removeprefix("target_opset: ")
    except (ValueError, onnx.checker.ValidationError):  # an opset the pass cannot target: say nothing more
        return None
    return None


def _check_operators(model, entry: dict, report: Readiness) -> None:
    """Every node of every graph: If/Loop/Scan bodies at any depth and local functions too
    (atc parses those as well). A function call node itself (its op type is the function's
    name) is not an operator: its body is checked instead."""
    from lvvit_opt.core.graph_walk import node_name, walk_nodes

    known = {name.lower() for name in entry["operators"]}
    functions = {(f.domain, f.name) for f in model.functions}
    for node, scope in walk_nodes(model):
        if (node.domain, node.op_type) in functions:
            continue
        if not _is_default_domain(node) or node.op_type.lower() not in known:
            op = node.op_type if _is_default_domain(node) else f"{node.domain}.{node.op_type}"
            where = "" if not (scope.depth or scope.is_function) else f" in {scope.where}"
            report.unsupported.setdefault(op, []).append(node_name(node) + where)
    for op, nodes in report.unsupported.items():
        # lower_attention lowers the ONNX Attention only: a contrib op's fix is a re-export
        fix = None if "." in op else next((f for key, f in FIXES.items() if key in op.lower()), None)
        report.problems.append(f"{op} ({len(nodes)} node(s), e.g. {nodes[0]}) is not in CANN {entry['cann']}'s ONNX "
                               f"operator list" + (f": run the {fix} pass" if fix else
                                                  ": re-export without onnxruntime's attention fusion"
                                                  if "attention" in op.lower() else ""))


def _check_static_inputs(model, input_shapes: dict[str, list[int]], report: Readiness) -> None:
    from lvvit_opt.core.tensor_spec import dims_of

    initializers = {i.name for i in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers or value.name in input_shapes:
            continue
        dims = dims_of(value.type) or ()
        if any(not isinstance(d, int) for d in dims):
            report.dynamic_inputs.append(value.name)
            report.problems.append(f"input {value.name} {list(dims)} has symbolic dims that --input_shape does not fix: "
                                   "run `lvvit-opt apply --passes fix_shapes --batch-size N` (or give --batch-size)")


def require_ready(model_path, cann_version: str | None, cann_from: str,
                  input_shapes: dict[str, list[int]] | None = None) -> Readiness:
    """check_readiness, raising UserError (exit 2) with every problem on failure, in one line."""
    report = check_readiness(model_path, cann_version, cann_from, input_shapes)
    if not report.ok:
        raise UserError(f"{os.fspath(model_path)} is not ready for atc (CANN {report.cann}, {cann_from}): "
                        + "; ".join(report.problems))
    return report
