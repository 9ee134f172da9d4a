"""tune's search space (batch sizes, pass sets, precisions, target options), its --space FILE
reader, --budget, and the candidate records the search fills in. See lvvit_opt.tune.search."""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from lvvit_opt.core.errors import UserError

TARGETS = ("ort-cpu", "ort-cuda", "ort-trt", "ascend")
PRECISIONS = ("fp32", "fp16", "fp16-keep")
# OrtRunner's `graph_opt`: onnxruntime's ORT_ENABLE_ALL / _EXTENDED / _BASIC / ORT_DISABLE_ALL;
# the default space tries the two ends, --space may ask for any
GRAPH_OPT_LEVELS = ("all", "extended", "basic", "disabled")
DEFAULT_GRAPH_OPT = ("all", "disabled")
# atc --precision_mode values the stand-in and CANN accept (CANN ATC parameter reference)
ASCEND_PRECISION_MODES = ("force_fp16", "allow_fp32_to_fp16", "allow_mix_precision", "must_keep_origin_dtype",
                          "force_fp32", "allow_mix_precision_fp16", "cube_fp16in_fp32out")
# atc --op_select_implmode: hiascend.com CANN 8.0.0 ATC reference, "--op_select_implmode" (atlasatcparam_16_0072)
IMPLMODES = ("high_performance", "high_precision", "high_performance_for_all", "high_precision_for_all")
# ascend: compile with CANN's transpose.py as installed, or with a copy that lvvit-opt's whitelist
# package patched for the candidate's Transpose shapes (a private opp tree under --out; never in place)
WHITELIST_CHOICES = ("unpatched", "patched")
DEFAULT_BATCHES = (1, 4, 8, 16, 32)

# ---------------------------------------------------------------------------------------- space

@dataclass
class Space:
    batch_sizes: list[int]
    pass_sets: list[list[str]]
    precisions: list[str]
    threads: list[int]
    graph_opt: list[str]
    precision_modes: list[str]
    op_select_implmodes: list[str]
    whitelist: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SPACE_KEYS = ("batch_sizes", "pass_sets", "precisions", "threads", "graph_opt", "precision_modes",
              "op_select_implmodes", "whitelist")


def default_space(target: str) -> Space:
    """Batch 1..32, no passes and each registered pass alone (fix_shapes sets the batch anyway),
    fp32/fp16/fp16-keep for onnxruntime (atc's precision modes for Ascend, and transpose.py as
    installed and whitelist-patched), all cores."""
    from lvvit_opt.passes import available_passes

    # precision is its own dimension: a pass that lowers it (to_fp16) is not a pass set
    passes = [[]] + [[name] for name, cls in available_passes().items()
                     if name != "fix_shapes" and not cls.reduces_precision]
    cores = os.cpu_count() or 1
    threads = sorted({cores, max(1, cores // 2)}, reverse=True)
    ascend = target == "ascend"
    return Space(list(DEFAULT_BATCHES), passes, ["fp32", "fp16-keep"] if ascend else list(PRECISIONS), threads,
                 list(DEFAULT_GRAPH_OPT), ["force_fp16", "allow_mix_precision"] if ascend else [],
                 ["high_performance", "high_precision"] if ascend else [],
                 list(WHITELIST_CHOICES) if ascend else [])


def load_space(path: str | os.PathLike, target: str) -> Space:
    """The default space with the lists FILE gives (JSON, or YAML for .yaml/.yml) put in their place."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--space {path}: cannot read it ({type(exc).__name__}: {exc})") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # json.JSONDecodeError, yaml.YAMLError
        first = " ".join(str(exc).split())[:200]
        raise UserError(f"--space {path}: not valid {'YAML' if path.suffix.lower() in ('.yaml', '.yml') else 'JSON'} "
                        f"({first})") from None
    return space_from_mapping(data, target, f"--space {path}")


def space_from_mapping(data: Any, target: str, what: str = "space") -> Space:
    """Check every list of a space mapping; a wrong key, type or value is a one-line UserError."""
    from lvvit_opt.passes import get_pass, parse_pass_list

    if not isinstance(data, Mapping):
        raise UserError(f"{what}: expected a mapping of {', '.join(SPACE_KEYS)} to lists, got {type(data).__name__}")
    unknown = [k for k in data if k not in SPACE_KEYS]
    if unknown:
        raise UserError(f"{what}: unknown key(s) {', '.join(map(str, unknown))}; valid keys: {', '.join(SPACE_KEYS)}")
    space = default_space(target)
    for key, value in data.items():
        if not isinstance(value, list) or not value:
            raise UserError(f"{what}: {key} must be a non-empty list, got {value!r}")
        if key in ("batch_sizes", "threads"):
            if not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 4096 for v in value):
                raise UserError(f"{what}: {key} must be positive integers (at most 4096), got {value!r}")
            value = sorted(set(value))
        elif key == "pass_sets":
            sets = []
            for entry in value:
                if isinstance(entry, str):
                    entry = [entry] if entry.strip() and entry.strip() != "none" else []
                if not isinstance(entry, list) or not all(isinstance(n, str) for n in entry):
                    raise UserError(f"{what}: each pass set is a list of pass names, got {entry!r}")
                names = [n for n in entry if n != "fix_shapes"]
                lowering = [n for n in parse_pass_list(names) if get_pass(n).reduces_precision] if names else []
                if lowering:
                    raise UserError(f"{what}: pass_sets: {lowering[0]} changes the precision, which is its own "
                                    "dimension: use precisions: [fp16] instead")
                sets.append(parse_pass_list(names) if names else [])
            value = [list(s) for s in dict.fromkeys(tuple(s) for s in sets)]
        else:
            allowed = {"precisions": PRECISIONS, "graph_opt": GRAPH_OPT_LEVELS,
                       "precision_modes": ASCEND_PRECISION_MODES, "op_select_implmodes": IMPLMODES,
                       "whitelist": WHITELIST_CHOICES}[key]
            bad = [v for v in value if v not in allowed]
            if bad:
                raise UserError(f"{what}: {key} has {', '.join(map(repr, bad))}; valid: {', '.join(allowed)}")
            value = list(dict.fromkeys(value))
        setattr(space, key, value)
    if target == "ascend" and "fp16" in space.precisions:  # the ONNX stays fp32; atc's flags decide
        space.notes.append("ascend: fp16 is atc's --precision_mode (fp32 candidates); precision fp16 ignored")
        space.precisions = [p for p in space.precisions if p != "fp16"] or ["fp32"]
    return space


def parse_budget(text: str | float | int) -> float:
    """'10m', '90s', '1h', '1.5m' or plain seconds -> seconds (UserError otherwise)."""
    value = str(text).strip().lower()
    scale = {"s": 1, "m": 60, "h": 3600}.get(value[-1:], None)
    number = value[:-1] if scale else value
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        raise UserError(f"--budget {text!r}: expected a duration like 90s, 10m or 1h") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise UserError(f"--budget {text!r}: must be a positive duration")
    return seconds


# ---------------------------------------------------------------------------------------- candidates

@dataclass
class Candidate:
    batch: int
    passes: list[str]
    precision: str
    options: dict[str, Any]
    status: str = "pending"  # passed | rejected | failed | duplicate | skipped | pruned | measured | unmeasured
    reason: str = ""
    gate: dict[str, Any] | None = None
    screen: dict[str, Any] | None = None
    timing: dict[str, Any] | None = None
    measured_s: float = 0.0  # time spent running this candidate (gate/screen calls, warm-up, timed slots)
    tie: bool = False
    reused: bool = False
    artefact: str | None = None

    @property
    def key(self) -> str:
        opts = ",".join(f"{k}={self.options[k]}" for k in sorted(self.options))
        return f"bs{self.batch}|{'+'.join(self.passes) or 'none'}|{self.precision}|{opts}"

    @property
    def variant(self) -> tuple:
        """What the ONNX file depends on (batch and options only change how it is run or compiled)."""
        return (tuple(self.passes), self.precision)

    @property
    def fps(self) -> float | None:
        if self.timing:
            return self.timing["fps"]
        return self.screen["fps"] if self.screen else None

    @property
    def agreement(self) -> float | None:
        return None if not self.gate else self.gate.get("top1_agreement")

    def label(self) -> str:
        opts = " ".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"bs{self.batch} {'+'.join(self.passes) or 'no passes'} {self.precision} {opts}".strip()

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Candidate":
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in names})


def enumerate_candidates(space: Space, target) -> list[Candidate]:
    """Every combination; `target.option_grid(space)` gives the target options."""
    out = []
    for passes in space.pass_sets:
        for precision in space.precisions:
            for batch in space.batch_sizes:
                for options in target.option_grid(space):
                    out.append(Candidate(batch, list(passes), precision, dict(options)))
    return out


