"""The tolerance options every verb that compares models shares (--atol, --rtol, --min-cosine and
the scale-aware metrics), and the Tolerance they build (metrics: lvvit_opt.verify.golden.Tolerance)."""
from __future__ import annotations

import click

_METRIC_OPTIONS = ("atol", "rtol", "min_cosine", "max_range_rel", "max_rel", "max_mean_rel", "max_rmse")


def tolerance_from(candidate: str | None, atol=None, rtol=None, min_cosine=None, base=None, **metrics):
    """Defaults depend on the candidate (.om -> fp16 tolerance) unless `base` is given; explicit
    options override. `off` (parsed to -1) disables that criterion (reported only)."""
    from lvvit_opt.verify.golden import Tolerance, default_tolerance_for

    base = base or default_tolerance_for(candidate)
    given = {"atol": atol, "rtol": rtol, "min_cosine": min_cosine, **metrics}
    pick = lambda name: getattr(base, name) if given.get(name) is None else (  # noqa: E731
        None if given[name] < 0 else given[name])
    return Tolerance(**{name: pick(name) for name in _METRIC_OPTIONS})


def tolerance_options(fn):
    """--atol/--rtol/--min-cosine and the scale-aware metrics; each refuses NaN, Inf and negatives
    (`off`: reported, not enforced). Passed to the command as keyword arguments of the same names."""
    from lvvit_opt.cli.types import NonNegativeFloat

    number, unit = NonNegativeFloat(), NonNegativeFloat(maximum=1.0)
    options = [
        ("--atol", number, "Absolute tolerance: pass if |a-b| <= atol + rtol*|ref| [1e-4; off for fp16/.om]."),
        ("--rtol", number, "Relative tolerance of that elementwise test [1e-3; off for fp16/.om]."),
        ("--min-cosine", unit, "Minimum cosine similarity per tensor [0.99999; 0.999 for fp16/.om]."),
        ("--max-range-rel", number, "Maximum max|a-b| / max|ref|, the error relative to the reference's range; "
                                    "sees scale errors cosine cannot [off; 0.01 for fp16/.om]."),
        ("--max-rel", number, "Maximum elementwise |a-b|/|ref| [off]."),
        ("--max-mean-rel", number, "Maximum mean of |a-b|/|ref| [off]."),
        ("--max-rmse", number, "Maximum root mean square error [off]."),
    ]
    for flag, kind, text in reversed(options):
        fn = click.option(flag, type=kind, default=None, help=text + " off: reported, not enforced.")(fn)
    return fn
