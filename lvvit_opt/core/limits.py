"""The stated ranges of every count, size and duration a user can give, below the CLI.

An option (`--threads 4096`, cli.types) and the same value read from a file (`threads: [4096]` in
tune's --space, tune.space) are checked against the one range defined here, with the same words.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from lvvit_opt.core.errors import UserError

MAX_SECONDS = 86400            # bench/run durations: a day
MAX_WARMUP_SECONDS = 3600
MAX_BUDGET_SECONDS = 7 * 86400  # tune --budget: a week
MAX_ROUNDS = 1000
MAX_THREADS = 1024             # threads, decoding processes, Ray actors
MAX_BATCH = 65536
MAX_IMG_SIZE = 8192
MAX_IMAGES = 100_000_000       # --limit
MAX_TOP = 1_000_000
MAX_DEVICE_ID = 1023
MAX_SEED = 2**32 - 1           # numpy's seed range
MAX_MB = 1024 * 1024           # a terabyte
MAX_GB = 1024 * 1024


@dataclass(frozen=True)
class IntRange:
    """An integer in low..high, named for messages ('a number of threads')."""

    low: int
    high: int
    what: str = "an integer"

    def text(self) -> str:
        return f"{self.low}..{self.high}"

    def accepts(self, value) -> bool:
        return (isinstance(value, int) and not isinstance(value, bool)
                and self.low <= value <= self.high)

    def check(self, value, label: str) -> int:
        """`value` as an int, or a one-line UserError naming `label` and the range."""
        if not self.accepts(value):
            raise UserError(f"{label}: {value!r}: expected {self.what} in {self.text()}")
        return int(value)


def finite_number(value) -> bool:
    """A real number (not a bool) that is neither NaN nor infinite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


THREADS = IntRange(1, MAX_THREADS, "a number of threads")
WORKERS = IntRange(1, MAX_THREADS, "a number of processes")
BATCH_SIZE = IntRange(1, MAX_BATCH, "a batch size")
ROUNDS = IntRange(1, MAX_ROUNDS, "a number of rounds")
IMAGES = IntRange(1, MAX_IMAGES, "a number of images")
TOP = IntRange(1, MAX_TOP, "a count")
DEVICE_ID = IntRange(0, MAX_DEVICE_ID, "a device id")
SEED = IntRange(0, MAX_SEED, "a seed")
