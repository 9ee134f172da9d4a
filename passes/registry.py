"""Pass registry: name -> pass class. Passes register themselves with `@register_pass`."""
from __future__ import annotations

import contextlib
from typing import Any, Collection, Iterator, Mapping

from lvvit_opt.core.errors import UserError
from lvvit_opt.passes.base import GraphPass
from lvvit_opt.passes.presets import PRESETS, expand_presets

_REGISTRY: dict[str, type[GraphPass]] = {}


def register_pass(cls: type[GraphPass]) -> type[GraphPass]:
    """Class decorator: make a pass available by its `name`."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if _REGISTRY.get(cls.name, cls) is not cls:
        raise ValueError(f"a pass named {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def unregister_pass(name: str) -> None:
    _REGISTRY.pop(name, None)


@contextlib.contextmanager
def registered(cls: type[GraphPass]) -> Iterator[type[GraphPass]]:
    """Register a pass for the duration of a block (tests, experiments)."""
    register_pass(cls)
    try:
        yield cls
    finally:
        unregister_pass(cls.name)


def available_passes() -> dict[str, type[GraphPass]]:
    """Name -> pass class, in registration order."""
    return dict(_REGISTRY)


def get_pass(name: str) -> type[GraphPass]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(f"unknown pass {name!r}; valid passes: {', '.join(_REGISTRY)}") from None


def _valid_names() -> str:
    return f"valid passes: {', '.join(_REGISTRY)}; presets: {', '.join(PRESETS)}"


def parse_pass_list(text: str | list[str]) -> list[str]:
    """'a,b' or ['a', 'b'] -> ['a', 'b'], each checked against the registry (UserError lists valid ones).
    A preset name (`ascend310`, passes/presets.py) expands to its passes where it stands."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n and n.strip()]
    if not names:
        raise UserError(f"no passes given; {_valid_names()}")
    unknown = [n for n in names if n not in _REGISTRY and n not in PRESETS]
    if unknown:
        raise UserError(f"unknown pass{'es' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                        f"{_valid_names()}")
    return expand_presets(names)


def check_pass_plan(names: list[str] | str, options: Mapping[str, Mapping[str, Any]] | None = None,
                    shortcuts: Mapping[str, Any] | None = None,
                    optional: Collection[str] = ()) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """The whole pass plan checked without a model: names (presets expanded), shortcut values
    (--batch-size ...) mapped onto options, options only for passes in the plan, every option
    known and of the right type. Returns (names, options); any defect is a UserError."""
    names = parse_pass_list(names)
    options = apply_shortcuts(names, options, shortcuts or {}, optional=optional)
    stray = sorted(set(options) - set(names))
    if stray:
        raise UserError(f"options given for pass(es) not in --passes ({', '.join(names)}): {', '.join(stray)}")
    for name in dict.fromkeys(names):
        get_pass(name).parse_options(options.get(name, {}))
    return names, options


def apply_shortcuts(names: list[str], options: Mapping[str, Mapping[str, Any]] | None,
                    values: Mapping[str, Any], optional: Collection[str] = ()) -> dict[str, dict[str, Any]]:
    """Map shortcut values (`{"batch_size": 16}`, from --batch-size) onto PASS.OPTION for every
    pass in `names` that declares the shortcut (GraphPass.shortcuts), as if given with -O.

    None values are not given. A shortcut no pass in `names` takes is a UserError unless it is
    `optional` (used elsewhere too); one that contradicts an explicit -O entry is a UserError.
    """
    merged = {name: dict(opts) for name, opts in (options or {}).items()}
    for option, value in values.items():
        if value is None:
            continue
        takers = [n for n in dict.fromkeys(names) if option in get_pass(n).shortcuts]
        if not takers and option not in optional:
            owners = [cls for cls in _REGISTRY.values() if option in cls.shortcuts]
            flag = owners[0].shortcuts[option] if owners else option
            where = " or ".join(cls.name for cls in owners) or "no"
            raise UserError(f"{flag} only applies to the {where} pass; add it to --passes")
        for name in takers:
            given = merged.setdefault(name, {})
            if option in given and str(given[option]) != str(value):
                raise UserError(f"-O {name}.{option}={given[option]} and {get_pass(name).shortcuts[option]} "
                                f"{value} disagree; give one")
            given[option] = value
    return merged
