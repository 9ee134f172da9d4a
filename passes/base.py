"""What a pass is: a small named unit with typed options that returns a new model and a report.

A pass subclasses `GraphPass`, sets `name`, writes a docstring (its first line is what
`lvvit-opt passes` shows), declares its options as a nested dataclass `Options`, and
implements `rewrite(model, report)` which edits `model` in place. `GraphPass.run` hands
`rewrite` a private copy, so the caller's model is never modified (unless `in_place=True`),
and fills the generic parts of the report (node counts, nodes added and removed).
"""
from __future__ import annotations

import dataclasses
import typing
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import onnx

from lvvit_opt.core.errors import UserError
from lvvit_opt.core.graph_walk import walk_nodes


@dataclass
class PassReport:
    """What one pass did. JSON-serialisable through `to_dict`."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    matched: int = 0
    nodes_before: int = 0
    nodes_after: int = 0
    nodes_added: int = 0
    nodes_removed: int = 0
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)  # pass-specific facts (shapes created, ...)
    notes: list[str] = field(default_factory=list)  # things the user should know (skipped nodes, ...)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        return (f"{self.name}: matched {self.matched}, +{self.nodes_added} -{self.nodes_removed} nodes "
                f"({self.nodes_before} -> {self.nodes_after}) in {self.seconds:.2f}s")


@dataclass
class PassResult:
    model: onnx.ModelProto
    report: PassReport

    @property
    def modified(self) -> bool:
        return bool(self.report.nodes_added or self.report.nodes_removed or self.report.matched)


class GraphPass:
    """Base class of every pass. Subclasses set `name`, `Options` and `rewrite`."""

    name: ClassVar[str] = ""
    # Options with a command-line shortcut: option name -> flag (`--batch-size` for
    # fix_shapes.batch_size). The flag sets the option of every pass in the pipeline that
    # declares it, exactly as `-O PASS.OPTION=VALUE` would (see registry.apply_shortcuts).
    shortcuts: ClassVar[dict[str, str]] = {}
    # A pass that lowers numeric precision (to_fp16): `apply` then validates against the fp16
    # tolerance (golden.Tolerance.fp16) instead of the fp32 one.
    reduces_precision: ClassVar[bool] = False

    @dataclass
    class Options:
        pass

    def __init__(self, **options: Any) -> None:
        self.options = self.parse_options(options)

    @classmethod
    def summary(cls) -> str:
        """First line of the docstring, for `lvvit-opt passes`."""
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    @classmethod
    def option_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls.Options)]

    @classmethod
    def parse_options(cls, options: Mapping[str, Any]) -> Any:
        """Build `Options` from a mapping; strings (from the command line) are converted to
        the declared type. Unknown names and bad values are UserErrors."""
        known = {f.name: f for f in dataclasses.fields(cls.Options)}
        hints = typing.get_type_hints(cls.Options)
        values = {}
        for key, value in options.items():
            if key not in known:
                valid = ", ".join(known) or "none"
                raise UserError(f"pass {cls.name!r} has no option {key!r} (options: {valid})")
            values[key] = _convert(value, hints[key], f"{cls.name}.{key}")
        try:
            return cls.Options(**values)
        except (TypeError, ValueError) as exc:
            raise UserError(f"pass {cls.name!r}: {exc}") from None

    def run(self, model: onnx.ModelProto, in_place: bool = False) -> PassResult:
        """Apply the pass. Works on a copy of `model` unless `in_place` is True."""
        import time

        if not in_place:
            model = copy_model(model)
        report = PassReport(self.name, options=_jsonable(dataclasses.asdict(self.options)))
        before = _node_signatures(model)
        start = time.perf_counter()
        model = self.rewrite(model, report) or model
        report.seconds = round(time.perf_counter() - start, 4)
        after = _node_signatures(model)
        report.nodes_before, report.nodes_after = sum(before.values()), sum(after.values())
        report.nodes_added = sum((after - before).values())
        report.nodes_removed = sum((before - after).values())
        return PassResult(model, report)

    def rewrite(self, model: onnx.ModelProto, report: PassReport) -> onnx.ModelProto | None:
        """Edit `model` (a private copy) in place, or return a replacement model."""
        raise NotImplementedError


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    clone = onnx.ModelProto()
    clone.CopyFrom(model)
    return clone


def _node_signatures(model: onnx.ModelProto) -> Counter:
    """A node is identified by its type, inputs and outputs: a node whose wiring changed
    counts as removed and added. Every graph counts (subgraphs, local functions)."""
    return Counter((n.op_type, tuple(n.input), tuple(n.output)) for n, _ in walk_nodes(model))


def _convert(value: Any, hint: Any, what: str) -> Any:
    if not isinstance(value, str):
        return value
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin is typing.Union and args:  # Optional[X]
        if value.lower() in ("", "none"):
            return None
        return _convert(value, args[0], what)
    try:
        if hint is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if hint is int:
            return int(value)
        if hint is float:
            return float(value)
        if origin in (list, tuple) and args and args[0] is int:
            return [int(v) for v in value.replace(" ", "").split(",") if v]
        if origin in (list, tuple) and args and args[0] is str:
            return _string_list(value, what)
    except ValueError:
        raise UserError(f"option {what}: cannot read {value!r} as {getattr(hint, '__name__', hint)}") from None
    return value


def _string_list(value: str, what: str) -> list[str]:
    """'a,b' -> ['a', 'b']; a JSON list of strings (names holding commas or spaces) as written."""
    import json

    if not value.strip().startswith("["):
        return [v.strip() for v in value.split(",") if v.strip()]
    try:
        items = json.loads(value)
    except ValueError as exc:
        raise UserError(f"option {what}: not a JSON list of strings ({exc})") from None
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        raise UserError(f"option {what}: expected a JSON list of strings")
    return items


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
