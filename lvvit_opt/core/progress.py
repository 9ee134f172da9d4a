"""One progress mechanism for every long step (export, onnxsim, validation, atc, preprocess,
eval, bench rounds).

Libraries announce work with `task()`; whether and how it is shown is the CLI's choice
(it installs a tqdm display on a terminal, nothing with -q or when stderr is not a TTY).
Without a display installed, as in the Python API, `task()` costs nothing and shows nothing.

    with task("onnxsim") as bar:            # unknown length: elapsed time only
        ...
    with task("eval", total=n, unit="img") as bar:
        for ...: bar.update(1)
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Protocol


class Bar(Protocol):
    def update(self, n: int = 1) -> None: ...
    def set_postfix_str(self, text: str) -> None: ...
    def close(self) -> None: ...


class _NullBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


BarFactory = Callable[[str, "int | None", str], Bar]
_factory: BarFactory | None = None


def install(factory: BarFactory | None) -> BarFactory | None:
    """Set the display used by `task()` (None: silent); returns the previous one."""
    global _factory
    previous, _factory = _factory, factory
    return previous


@contextlib.contextmanager
def task(desc: str, total: int | None = None, unit: str = "it") -> Iterator[Bar]:
    """A step that may take a while; `total=None` shows only the elapsed time."""
    bar = _factory(desc, total, unit) if _factory is not None else _NullBar()
    try:
        yield bar
    finally:
        bar.close()


def counter(desc: str, unit: str = "it") -> "CounterCallback":
    """A `progress(done, total)` callback (as preprocess_dir/evaluate take) drawn by `task()`."""
    return CounterCallback(desc, unit)


class CounterCallback:
    """Adapts `progress(done, total)` callbacks to one bar; call `close()` when done."""

    def __init__(self, desc: str, unit: str):
        self.desc, self.unit = desc, unit
        self._cm = None
        self._bar: Bar | None = None
        self._done = 0

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            self._cm = task(self.desc, total=total, unit=self.unit)
            self._bar = self._cm.__enter__()
            self._bar.update(done)
            self._done = done
            return
        if done > self._done:
            self._bar.update(done - self._done)
            self._done = done

    def close(self) -> None:
        if self._cm is not None:
            self._cm.__exit__(None, None, None)
            self._cm, self._bar = None, None

    def __enter__(self) -> "CounterCallback":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
