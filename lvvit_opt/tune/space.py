"""tune's search space (batch sizes, pass sets, precisions, target options), its --space FILE
reader, --budget, and the candidate records the search fills in. See lvvit_opt.tune.search."""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from lvvit_opt.core import limits
from lvvit_opt.core.errors import UserError, shown

TARGETS = ("ort-cpu", "ort-cuda", "ort-trt", "ascend")
PRECISIONS = ("fp32", "fp16", "fp16-keep", "int8")  # int8: lvvit_opt.quantize (gate + rollback), opt-in
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
    """Batch 1..32, no passes, the default preset (ascend310) and each registered pass alone
    (fix_shapes left out: the candidates are exported at their batch), fp32/fp16/fp16-keep for
    onnxruntime (atc's precision modes for Ascend, and transpose.py as installed and
    whitelist-patched), all cores."""
    from lvvit_opt.passes import DEFAULT_PRESET, available_passes, parse_pass_list

    # precision is its own dimension: a pass that lowers it (to_fp16) is not a pass set
    recipe = [name for name in parse_pass_list(DEFAULT_PRESET) if name != "fix_shapes"]
    alone = [[name] for name, cls in available_passes().items()
             if name != "fix_shapes" and not cls.reduces_precision]
    passes = [list(s) for s in dict.fromkeys(tuple(s) for s in [[], recipe, *alone])]
    cores = os.cpu_count() or 1
    threads = sorted({cores, max(1, cores // 2)}, reverse=True)
    ascend = target == "ascend"
    precisions = ["fp32", "fp16-keep"] if ascend else ["fp32", "fp16", "fp16-keep"]  # int8: opt-in (--space)
    return Space(list(DEFAULT_BATCHES), passes, precisions, threads,
                 list(DEFAULT_GRAPH_OPT), ["force_fp16", "allow_mix_precision"] if ascend else [],
                 ["high_performance", "high_precision"] if ascend else [],
                 list(WHITELIST_CHOICES) if ascend else [])


# A --space list may hold at most this many entries (pass sets: at most MAX_PASS_SETS), and the
# candidates it makes at most one per MIN_CANDIDATE_S of --budget (at least MIN_CANDIDATE_CAP):
# a space the budget cannot even enumerate is refused before anything is built.
MAX_LIST = 64
MAX_PASS_SETS = 256
MIN_CANDIDATE_S = 0.25
MIN_CANDIDATE_CAP = 1024


def load_space(path: str | os.PathLike, target: str, budget_s: float | None = None) -> Space:
    """The default space with the lists FILE gives (JSON, or YAML for .yaml/.yml) put in their place,
    read through the one bounded reader (core.readers: regular file, 1 MB, aliases bounded)."""
    from lvvit_opt.core.readers import SPACE, read_json_or_yaml

    data = read_json_or_yaml(path, "--space", SPACE)
    return space_from_mapping(data, target, f"--space {shown(path)}", budget_s=budget_s)


def space_from_mapping(data: Any, target: str, what: str = "space", budget_s: float | None = None) -> Space:
    """Check every list of a space mapping; a wrong key, type or value is a one-line UserError.
    Counts are held to the ranges of the CLI options (core.limits: `threads: [4096]` is refused as
    `--threads 4096` is); with `budget_s`, a space with more candidates than the budget can
    enumerate is refused."""
    from lvvit_opt.passes import get_pass, parse_pass_list

    if not isinstance(data, Mapping):
        raise UserError(f"{what}: expected a mapping of {', '.join(SPACE_KEYS)} to lists, got {type(data).__name__}")
    unknown = [k for k in data if k not in SPACE_KEYS]
    if unknown:
        raise UserError(f"{what}: unknown key(s) {', '.join(map(str, unknown))[:200]}; valid keys: {', '.join(SPACE_KEYS)}")
    space = default_space(target)
    for key, value in data.items():
        if not isinstance(value, list) or not value:
            raise UserError(f"{what}: {key} must be a non-empty list, got {_short(value)}")
        most = MAX_PASS_SETS if key == "pass_sets" else MAX_LIST
        if len(value) > most:
            raise UserError(f"{what}: {key} has {len(value)} entries; at most {most}")
        if key in ("batch_sizes", "threads"):
            stated = limits.BATCH_SIZE if key == "batch_sizes" else limits.THREADS
            bad = [v for v in value if not stated.accepts(v)]
            if bad:
                raise UserError(f"{what}: {key} has {_short(bad[0])}: expected {stated.what} in {stated.text()}")
            value = sorted(set(value))
        elif key == "pass_sets":
            sets = []
            for entry in value:
                if isinstance(entry, str):
                    entry = [entry] if entry.strip() and entry.strip() != "none" else []
                if not isinstance(entry, list) or not all(isinstance(n, str) for n in entry) or len(entry) > MAX_LIST:
                    raise UserError(f"{what}: each pass set is a list of at most {MAX_LIST} pass names, "
                                    f"got {_short(entry)}")
                names = [n for n in (parse_pass_list(entry) if entry else []) if n != "fix_shapes"]  # presets expand
                lowering = [n for n in names if get_pass(n).reduces_precision]
                if lowering:
                    raise UserError(f"{what}: pass_sets: {lowering[0]} changes the precision, which is its own "
                                    "dimension: use precisions: [fp16] instead")
                sets.append(names)
            value = [list(s) for s in dict.fromkeys(tuple(s) for s in sets)]
        else:
            allowed = {"precisions": PRECISIONS, "graph_opt": GRAPH_OPT_LEVELS,
                       "precision_modes": ASCEND_PRECISION_MODES, "op_select_implmodes": IMPLMODES,
                       "whitelist": WHITELIST_CHOICES}[key]
            bad = [v for v in value if not isinstance(v, str) or v not in allowed]
            if bad:
                raise UserError(f"{what}: {key} has {', '.join(_short(v) for v in bad[:3])}; valid: {', '.join(allowed)}")
            value = list(dict.fromkeys(value))
        setattr(space, key, value)
    if target == "ascend" and "int8" in space.precisions:  # AMCT builds it, not onnxruntime
        space.notes.append("ascend: int8 is AMCT's deploy model (lvvit-opt quantize --target ascend writes its "
                           "config, data and commands); precision int8 ignored")
        space.precisions = [p for p in space.precisions if p != "int8"] or ["fp32"]
    if target == "ascend" and "fp16" in space.precisions:  # the ONNX stays fp32; atc's flags decide
        space.notes.append("ascend: fp16 is atc's --precision_mode (fp32 candidates); precision fp16 ignored")
        space.precisions = [p for p in space.precisions if p != "fp16"] or ["fp32"]
    if budget_s is not None:
        check_space_budget(space, target, budget_s, what)
    return space


def candidate_count(space: Space, target: str) -> int:
    """How many candidates `space` makes on `target` (enumerate_candidates' product)."""
    options = (len(space.precision_modes or [None]) * len(space.op_select_implmodes or [None])
               * len(space.whitelist or [None])) if target == "ascend" else len(space.threads) * len(space.graph_opt)
    return len(space.pass_sets) * len(space.precisions) * len(space.batch_sizes) * options


def check_space_budget(space: Space, target: str, budget_s: float, what: str = "space") -> None:
    """UserError when the space has more candidates than --budget could even enumerate and gate
    (one per MIN_CANDIDATE_S seconds, at least MIN_CANDIDATE_CAP)."""
    count = candidate_count(space, target)
    cap = max(MIN_CANDIDATE_CAP, int(budget_s / MIN_CANDIDATE_S))
    if count > cap:
        raise UserError(f"{what}: {count} candidates, more than --budget {budget_s:g} s can gate "
                        f"(at most {cap}); give shorter lists or a larger --budget")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


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


