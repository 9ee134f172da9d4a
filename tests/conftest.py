"""Shared fixtures: the committed golden data and session-cached lvvit_s exports."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
GOLDEN_DIR = REPO_ROOT / "golden"
FAKES_DIR = REPO_ROOT / "tests" / "fakes"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def golden_onnx() -> str:
    """Tiny LV-ViT (lvvit_golden) exported at batch 2, opset 13, simplified."""
    return str(GOLDEN_DIR / "lvvit_golden.onnx")


@pytest.fixture(scope="session")
def golden_weights() -> str:
    return str(GOLDEN_DIR / "lvvit_golden.pth")


@pytest.fixture(scope="session")
def golden_io() -> dict[str, np.ndarray]:
    """{'image': (2,3,224,224) float32, 'features': (2,1000) torch outputs}."""
    with np.load(GOLDEN_DIR / "lvvit_golden.npz") as data:
        return {k: data[k] for k in data.files}


def _export_cached(tmp_path_factory, name: str, **kwargs) -> str:
    from lvvit_opt.export import export_onnx

    out = tmp_path_factory.getbasetemp() / "exports" / name
    if not out.exists():
        export_onnx(out, log=lambda _m: None, **kwargs)
    return str(out)


@pytest.fixture(scope="session")
def lvvit_s_bs16_onnx(tmp_path_factory) -> str:
    """Full-size random-init lvvit_s, batch 16, simplified (slow: use in @pytest.mark.slow tests)."""
    return _export_cached(tmp_path_factory, "lvvit_s_bs16.onnx", model="lvvit_s", batch_size=16)


@pytest.fixture(scope="session")
def lvvit_m_bs16_onnx(tmp_path_factory) -> str:
    """Full-size random-init lvvit_m, batch 16, simplified, 213 MB (slow)."""
    return _export_cached(tmp_path_factory, "lvvit_m_bs16.onnx", model="lvvit_m", batch_size=16)


@pytest.fixture(scope="session")
def lvvit_s_bs1_onnx(tmp_path_factory) -> str:
    """Full-size random-init lvvit_s, batch 1, simplified (slow)."""
    return _export_cached(tmp_path_factory, "lvvit_s_bs1.onnx", model="lvvit_s", batch_size=1)


@pytest.fixture
def cli_runner():
    from click.testing import CliRunner

    return CliRunner()


@pytest.fixture
def opened_levels(monkeypatch) -> list[tuple[str, int]]:
    """(graph_opt, the session's graph_optimization_level) of every OrtRunner opened in this process."""
    from lvvit_opt.runtime.ort import OrtRunner

    seen = []
    real_init = OrtRunner.__post_init__

    def recording(self):
        real_init(self)
        seen.append((self.graph_opt, int(self.session.get_session_options().graph_optimization_level)))

    monkeypatch.setattr(OrtRunner, "__post_init__", recording)
    return seen
