"""Runner registry: backend name -> Runner class, and which runner opens which file.

A runner module decorates its class with `@register_runner`; every module of the
`lvvit_opt.runtime` package is imported on first use, so a new backend is one new file
(copy runtime/example.py). bench, validate, golden, eval and the CLI's backend choices are
built from here:

    names()                      registered backend names, e.g. ['onnxruntime', 'ais_bench', 'benchmark']
    backend_choices()            what --backend accepts: 'auto', names, aliases, suffix names ('om')
    runner_for(path, backend)    the Runner class that will open `path`
    options(name)                {option: default} a backend takes

backend "auto" picks by the file's suffix; several runners for one suffix are tried by
`priority` (highest first) and the first available one (`unavailable_reason` is None and
it accepts the given options) wins. A suffix name ("om", "onnx") means "auto among the
runners for that suffix".
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import pkgutil
from pathlib import Path
from typing import Any, Mapping

from lvvit_opt.core.errors import UserError, shown
from lvvit_opt.runtime.base import Runner

_RUNNERS: dict[str, type[Runner]] = {}
_discovered = False
_NOT_RUNNER_MODULES = {"base", "feeds", "registry", "om"}


def register_runner(cls: type[Runner]) -> type[Runner]:
    """Class decorator: make `cls` selectable by its `name` (and `aliases`)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if any(not s.startswith(".") or s != s.lower() for s in cls.suffixes):
        raise ValueError(f"{cls.__name__}.suffixes must be lower case with the dot, got {cls.suffixes}")
    taken = {spelling: other for other in _RUNNERS.values() if other.name != cls.name
             for spelling in (other.name, *other.aliases)}
    clashes = [s for s in (cls.name, *cls.aliases) if s in taken]
    if clashes:
        raise ValueError(f"{cls.__name__}: backend name(s) {clashes} already taken by {taken[clashes[0]].__name__}")
    _RUNNERS[cls.name] = cls
    return cls


def unregister_runner(name: str) -> None:
    _RUNNERS.pop(name, None)


def _discover() -> None:
    """Import every module of this package once, so their runners register."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    package = __name__.rsplit(".", 1)[0]
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if module.name not in _NOT_RUNNER_MODULES and not module.name.startswith("_"):
            importlib.import_module(f"{package}.{module.name}")


def runners() -> dict[str, type[Runner]]:
    """Backend name -> Runner class, by name."""
    _discover()
    return dict(sorted(_RUNNERS.items()))


def names() -> list[str]:
    """Registered backend names (no aliases)."""
    return list(runners())


def suffixes() -> list[str]:
    """Every file suffix some runner opens: '.onnx' (the source format) first, then by name."""
    return sorted({s for cls in runners().values() for s in cls.suffixes}, key=lambda s: (s != ".onnx", s))


def backend_choices(include_auto: bool = True) -> list[str]:
    """Every spelling --backend accepts, for click.Choice and completion."""
    spellings = (["auto"] if include_auto else []) + names()
    spellings += [a for cls in runners().values() for a in cls.aliases]
    spellings += [s.lstrip(".") for s in suffixes() if s.lstrip(".") not in spellings]
    return spellings


def options(name: str) -> dict[str, Any]:
    """{option: default} that backend `name` takes (MISSING defaults shown as None)."""
    cls = get_runner(name)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    return {n: (None if fields[n].default is dataclasses.MISSING else fields[n].default) for n in cls.option_names()}


def get_runner(backend: str) -> type[Runner]:
    """The Runner class registered as `backend` (a name or an alias)."""
    for cls in runners().values():
        if backend == cls.name or backend in cls.aliases:
            return cls
    raise UserError(f"unknown backend {backend!r} (expected one of {', '.join(backend_choices())})")


def canonical_name(backend: str) -> str:
    """'ort' -> 'onnxruntime'; 'auto' and suffix names stay as they are."""
    if backend == "auto" or _is_suffix_name(backend):
        return backend
    return get_runner(backend).name


def opens_onnx(backend: str) -> bool:
    """True when `backend` (a name) runs ONNX files (can be re-fixed, needs no reference)."""
    return ".onnx" in get_runner(backend).suffixes


def runner_for(path: str | os.PathLike, backend: str = "auto", options: Mapping[str, Any] | None = None) -> type[Runner]:
    """The Runner class that opens `path` with `backend` ("auto", a suffix name, a name or alias).

    An explicit backend refuses a file whose suffix another runner owns (an .onnx given to
    ais_bench). "auto" refuses suffixes no runner opens, and raises the unavailable runners'
    reasons when none can run here.
    """
    options = dict(options or {})
    suffix = Path(str(path)).suffix.lower()
    if backend == "auto" or _is_suffix_name(backend):
        wanted = suffix if backend == "auto" else "." + backend
        return _pick_available(wanted, path, options)
    cls = get_runner(backend)
    if suffix in suffixes() and suffix not in cls.suffixes:
        raise UserError(f"{shown(path)}: backend {cls.name} opens {', '.join(cls.suffixes)} files, not {suffix} "
                        f"(use --backend auto)")
    return cls


def _is_suffix_name(backend: str) -> bool:
    return "." + backend in suffixes() and not any(backend == c.name or backend in c.aliases
                                                   for c in runners().values())


def _pick_available(suffix: str, path, options: Mapping[str, Any]) -> type[Runner]:
    candidates = sorted((cls for cls in runners().values() if suffix in cls.suffixes), key=lambda c: -c.priority)
    if not candidates:
        what = f"suffix {suffix}" if suffix else "no suffix"
        raise UserError(f"{shown(path)}: cannot tell how to run a file with {what}; lvvit-opt runs "
                        f"{', '.join(suffixes())} files (or name a --backend: {', '.join(names())})")
    reasons = []
    for cls in candidates:
        unknown = sorted(set(options) - set(cls.option_names()))
        reason = f"{cls.name} does not take {', '.join(unknown)}" if unknown else cls.unavailable_reason(options)
        if reason is None:
            return cls
        reasons.append(reason)
    if len(candidates) == 1 and set(options) - set(candidates[0].option_names()):
        candidates[0].check_options(options)  # the usual unknown-option error
    from lvvit_opt.core.cann import ToolNotFound

    raise ToolNotFound(f"no way to run an {suffix} here: {'; '.join(reasons)}")
