"""Fixtures of the hostile-input suite (see hostile_helpers.py)."""
from __future__ import annotations

import pytest

from hostile_helpers import build_workspace, snapshot


@pytest.fixture
def ws(tmp_path):
    """A workspace of inputs and aliases; the test gets it with its byte snapshot taken."""
    root = build_workspace(tmp_path / "ws")
    return root


@pytest.fixture
def ws_before(ws):
    return snapshot(ws)
