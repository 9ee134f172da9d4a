"""Parameter types for the finite (or pattern-shaped) choices, with shell completion.

Each checks at parse time, before any heavy import, and completes in the shell
(`eval "$(_LVVIT_OPT_COMPLETE=bash_source lvvit-opt)"`). The lists come from the one
place that defines them (pass registry, runner backends, model configs).
"""
from __future__ import annotations

import os

import click
from click.shell_completion import CompletionItem

from lvvit_opt.core import limits
from lvvit_opt.core.limits import (MAX_BATCH, MAX_BUDGET_SECONDS, MAX_DEVICE_ID, MAX_GB, MAX_IMAGES,  # noqa: F401
                                   MAX_IMG_SIZE, MAX_MB, MAX_ROUNDS, MAX_SECONDS, MAX_SEED, MAX_THREADS, MAX_TOP,
                                   MAX_WARMUP_SECONDS)

# atc --soc_version names (completion only: any Ascend<digit>... name is accepted, new chips
# come with every CANN release). Sources: the seed guide (Ascend310); vllm-ascend issue #6676
# (github.com/vllm-project/vllm-ascend/issues/6676: ascend910b1..b4, b2c, b4-1, 910_93xx,
# 310p1/p3/p5/p7); Ascend/pytorch issue #57 (Ascend310B4); candle-org/candle PR #110 (Ascend910B
# is 910A hardware).
KNOWN_SOC_VERSIONS = (
    "Ascend310", "Ascend310B1", "Ascend310B4", "Ascend310P1", "Ascend310P3", "Ascend310P5", "Ascend310P7",
    "Ascend910", "Ascend910A", "Ascend910B", "Ascend910ProB", "Ascend910B1", "Ascend910B2", "Ascend910B2C",
    "Ascend910B3", "Ascend910B4", "Ascend910B4-1", "Ascend910_9391", "Ascend910_9392", "Ascend910_9381",
    "Ascend910_9382", "Ascend910_9372", "Ascend910_9362",
)

# onnxruntime's graph optimisation levels (bench --graph-opt): spelled here so the parse needs no
# runtime import; the same as lvvit_opt.runtime.ort.GRAPH_OPT_LEVELS (tests/test_bench.py holds them equal)
GRAPH_OPT_LEVELS = ("all", "extended", "basic", "disabled")


def backend_names() -> list[str]:
    """What `bench --backend` accepts: `auto`, every runner registered in
    lvvit_opt.runtime.registry (names, aliases, suffix names like `om`), and trtexec."""
    from lvvit_opt.measure.bench import BACKENDS

    return list(BACKENDS)


def model_suffixes() -> tuple[str, ...]:
    """File suffixes some registered runner opens (lvvit_opt.runtime.registry)."""
    from lvvit_opt.runtime import registry

    return tuple(registry.suffixes())


def _complete(values, incomplete: str) -> list[CompletionItem]:
    return [CompletionItem(v) for v in values if v.startswith(incomplete)]


class SocVersion(click.ParamType):
    """`auto` or an Ascend SoC name (Ascend310, Ascend310P3, Ascend910B3, ...)."""

    name = "soc"

    def get_metavar(self, param, ctx=None) -> str:  # click >= 8.2 passes ctx
        return "auto|AscendXXX"

    def convert(self, value, param, ctx):
        from lvvit_opt.ascend.atc import SOC_NAME  # the one definition of the form atc accepts

        text = str(value).strip()
        if text == "auto" or SOC_NAME.match(text):
            return text
        close = [s for s in KNOWN_SOC_VERSIONS if s.lower() == text.lower()]
        hint = f" (did you mean {close[0]}?)" if close else ""
        self.fail(f"{value!r}: expected a name like Ascend310, Ascend310P3, Ascend910B3, or auto{hint}", param, ctx)

    def shell_complete(self, ctx, param, incomplete):
        return _complete(("auto",) + KNOWN_SOC_VERSIONS, incomplete)


class PassList(click.ParamType):
    """Comma-separated pass or preset names, checked against the pass registry; returns the
    list with presets expanded."""

    name = "passes"

    def get_metavar(self, param, ctx=None) -> str:
        return "PRESET|PASS[,PASS...]"

    def convert(self, value, param, ctx):
        if isinstance(value, (list, tuple)):
            return list(value)
        from lvvit_opt.core.errors import UserError
        from lvvit_opt.passes import parse_pass_list

        try:
            return parse_pass_list(str(value))
        except UserError as exc:
            self.fail(str(exc), param, ctx)

    def shell_complete(self, ctx, param, incomplete):
        from lvvit_opt.passes import available_passes

        done, _, last = incomplete.rpartition(",")
        prefix = f"{done}," if done else ""
        from lvvit_opt.passes import PRESETS

        return [CompletionItem(prefix + name) for name in [*PRESETS, *available_passes()] if name.startswith(last)]


class ModelName(click.ParamType):
    """A model name: completes the LV-ViT configs (and timm ViT names), accepts any name;
    the library that builds the model says which are valid."""

    name = "model"

    def convert(self, value, param, ctx):
        text = str(value).strip()
        if not text:
            self.fail("empty model name", param, ctx)
        return text

    def shell_complete(self, ctx, param, incomplete):
        from lvvit_opt.models.zoo import CONFIGS, committed_timm_models  # no torch: the committed timm name list

        return _complete(list(CONFIGS) + sorted(committed_timm_models()[1]), incomplete)


class Backend(click.Choice):
    """`bench --backend`: the runner backends (from the runner registry) and trtexec."""

    def __init__(self) -> None:
        super().__init__(backend_names())


class RunnerBackend(click.Choice):
    """A runner backend (lvvit_opt.runtime.registry): auto, a runner's name or alias, or a
    suffix name (`om`: the best .om runner here)."""

    def __init__(self) -> None:
        from lvvit_opt.runtime import registry

        super().__init__(registry.backend_choices())


def runner_backend_option(what: str, tail: str):
    """--backend for a verb that runs `what` (MODEL, CANDIDATE) on one runner of the registry;
    `tail` ends the help text."""
    return click.option("--backend", type=RunnerBackend(), default="auto", show_default=True,
                        help=f"How to run {what}: auto (.onnx on onnxruntime, .om on ais_bench or the legacy "
                             f"benchmark binary) or a registered runner{tail}")


class ModelFile(click.Path):
    """A model file some runner opens (.onnx, .om); a golden/input file given in its place
    gets a hint instead of a runner's confusing complaint."""

    name = "model"

    def __init__(self, suffixes: tuple[str, ...] | None = None, **kwargs):
        kwargs.setdefault("dir_okay", False)
        super().__init__(**kwargs)
        self.suffixes = suffixes

    def convert(self, value, param, ctx):
        value = super().convert(value, param, ctx)
        allowed = self.suffixes or model_suffixes()
        suffix = os.path.splitext(str(value))[1].lower()
        if suffix in allowed:
            return value
        hint = ""
        if suffix in (".npz", ".npy"):
            hint = ("; to check a model against a golden file use `lvvit-opt golden check MODEL GOLDEN.npz` "
                    "or `lvvit-opt validate REFERENCE CANDIDATE --golden GOLDEN.npz`")
        self.fail(f"{value}: not a model file (expected {' or '.join(sorted(allowed))}){hint}", param, ctx)


SOC_VERSION = SocVersion()
PASS_LIST = PassList()
MODEL_NAME = ModelName()


# -- tolerances (issue 21) -------------------------------------------------------------------

class NonNegativeFloat(click.ParamType):
    """A finite number >= 0, or `off` (returned as -1.0: the criterion is reported, not enforced).
    NaN, Inf and negative numbers are refused at parse time: a NaN tolerance passes or fails
    everything silently, depending on how it is compared."""

    name = "number"

    def __init__(self, allow_off: bool = True, maximum: float | None = None) -> None:
        self.allow_off = allow_off
        self.maximum = maximum

    def get_metavar(self, param, ctx=None) -> str:
        return "X|off" if self.allow_off else "X"

    def convert(self, value, param, ctx):
        import math

        if isinstance(value, float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
            number = value
        else:
            text = str(value).strip().lower()
            if self.allow_off and text in ("off", "none"):
                return -1.0
            try:
                number = float(text)
            except ValueError:
                self.fail(f"{value!r}: expected a number{' or off' if self.allow_off else ''}", param, ctx)
            if not math.isfinite(number) or number < 0:
                self.fail(f"{value!r}: expected a finite number >= 0"
                          f"{' (off: not enforced)' if self.allow_off else ''}", param, ctx)
        if self.maximum is not None and number > self.maximum:
            self.fail(f"{value!r}: expected a number <= {self.maximum}", param, ctx)
        return number


NON_NEGATIVE_FLOAT = NonNegativeFloat()


# -- value ranges (issue 22) -----------------------------------------------------------------
# Every duration, count, thread/worker number, size and seed is checked at parse time against a
# stated range: `inf` seconds or 1e9 rounds is a hang, not a request, and `--seed -1` a numpy
# traceback. The message names the range.

# The ranges themselves are core.limits': a value read from a file (tune's --space) is checked
# against the same range as the option.
_TIME_UNITS = {"s": 1, "m": 60, "h": 3600}


def _plain(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


class BoundedNumber(click.ParamType):
    """A finite number in [low, high] (or (low, high] with low_open); an integer with `integer`.
    Refuses NaN, Inf, out-of-range values and (for integers) '1.5' or '1e9', naming the range."""

    name = "number"

    def __init__(self, low: float, high: float, *, integer: bool = False, low_open: bool = False,
                 what: str = "a number", metavar: str | None = None) -> None:
        self.low, self.high, self.integer, self.low_open, self.what = low, high, integer, low_open, what
        self.metavar = metavar or ("N" if integer else "X")

    def get_metavar(self, param, ctx=None) -> str:
        return self.metavar

    def range_text(self) -> str:
        if self.integer:
            return f"{self.low}..{self.high}"
        return f"{'(' if self.low_open else '['}{_plain(self.low)}, {_plain(self.high)}]"

    def _parse(self, text: str):
        return int(text, 10) if self.integer else float(text)

    def convert(self, value, param, ctx):
        import math

        if isinstance(value, bool):
            self._refuse(value, param, ctx)
        if self.integer and isinstance(value, int):
            number = value
        elif not self.integer and isinstance(value, (int, float)):
            number = float(value)
        else:
            try:
                number = self._parse(str(value).strip().lower())
            except (ValueError, OverflowError):
                self._refuse(value, param, ctx)
        if not math.isfinite(number) or number > self.high or number < self.low \
                or (self.low_open and number == self.low):
            self._refuse(value, param, ctx)
        return number

    def _refuse(self, value, param, ctx):
        self.fail(f"{str(value)!r}: expected {self.what} in {self.range_text()}", param, ctx)


class Seconds(BoundedNumber):
    """A duration in seconds (`90`, `90s`, `1.5m`, `1h`), finite, in a stated range."""

    def __init__(self, low: float, high: float, *, low_open: bool = False) -> None:
        super().__init__(low, high, low_open=low_open, what="seconds", metavar="SECONDS")

    def _parse(self, text: str):
        scale = _TIME_UNITS.get(text[-1:]) if text[-1:].isalpha() else 1
        if scale is None:
            raise ValueError(text)
        return float(text[:-1] if text[-1:].isalpha() else text) * scale


def Count(low: int, high: int, what: str = "an integer") -> BoundedNumber:  # noqa: N802 (a type factory)
    """An integer in low..high (rounds, batch sizes, images, threads, seeds)."""
    return BoundedNumber(low, high, integer=True, what=what)


DURATION = Seconds(0.1, MAX_SECONDS)
WARMUP = Seconds(0, MAX_WARMUP_SECONDS)
BUDGET = Seconds(1, MAX_BUDGET_SECONDS)


def _count_of(stated: limits.IntRange) -> BoundedNumber:
    return Count(stated.low, stated.high, stated.what)


ROUNDS = _count_of(limits.ROUNDS)
THREADS = _count_of(limits.THREADS)
WORKERS = _count_of(limits.WORKERS)
BATCH_SIZE = _count_of(limits.BATCH_SIZE)
IMAGES = _count_of(limits.IMAGES)
TOP = _count_of(limits.TOP)
DEVICE_ID = _count_of(limits.DEVICE_ID)
SEED = _count_of(limits.SEED)
FRACTION = BoundedNumber(0, 1, low_open=True, what="a fraction")
PERCENT = BoundedNumber(0, 100, low_open=True, what="a percentage")


def img_size_type(low: int) -> BoundedNumber:
    """An input side in pixels, low..MAX_IMG_SIZE."""
    return Count(low, MAX_IMG_SIZE, "pixels")


def megabytes(low: float = 1) -> BoundedNumber:
    return BoundedNumber(low, MAX_MB, what="megabytes", metavar="MB")


def gigabytes(low: float = 0) -> BoundedNumber:
    return BoundedNumber(low, MAX_GB, what="gigabytes", metavar="GB")


class FloatTriple(click.ParamType):
    """Three finite numbers 'R,G,B' in [low, high] (a Normalize mean or std)."""

    name = "R,G,B"

    def __init__(self, low: float = 0.0, high: float = 1.0) -> None:
        self.low, self.high = low, high

    def convert(self, value, param, ctx):
        import math

        if isinstance(value, tuple):
            return value
        parts = str(value).split(",")
        try:
            numbers = tuple(float(p) for p in parts)
        except ValueError:
            numbers = ()
        if len(numbers) != 3 or not all(math.isfinite(n) and self.low <= n <= self.high for n in numbers):
            self.fail(f"{value!r}: expected three numbers R,G,B in [{_plain(self.low)}, {_plain(self.high)}]",
                      param, ctx)
        return numbers


class LazyHelpOption(click.Option):
    """An option whose default and help need a heavy import (the pass registry, onnx): both are
    callables, resolved only when the value is needed or --help is shown, so a parse-time
    refusal of another option imports neither torch nor onnx."""

    def __init__(self, *args, help_factory=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.help_factory = help_factory

    def get_help_record(self, ctx):
        if self.help_factory is not None:
            self.help, self.help_factory = self.help_factory(), None
        return super().get_help_record(ctx)


def default_preset() -> str:
    """The recipe --passes defaults to (lvvit_opt.passes.presets, imported when needed)."""
    from lvvit_opt.passes.presets import DEFAULT_PRESET

    return DEFAULT_PRESET


def preset_help(lead: str) -> str:
    from lvvit_opt.passes.presets import DEFAULT_PRESET, PRESETS

    return f"{lead} [default: {DEFAULT_PRESET} = {','.join(PRESETS[DEFAULT_PRESET])}]"
