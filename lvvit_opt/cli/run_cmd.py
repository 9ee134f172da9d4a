"""CLI verbs for this area (thin layer: parse, call the library function, print)."""
from __future__ import annotations

import click

from ._base import handle_errors, main  # noqa: F401
