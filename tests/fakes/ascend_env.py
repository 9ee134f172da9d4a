"""pytest fixtures that put the stand-in Ascend tools in front of the code under test.

The tools are found exactly like the real ones: executables through PATH (venv first, so
their `#!/usr/bin/env python3` is the venv's python), the ais_bench package through sys.path.
Import the fixtures you use into a test module: `from fakes.ascend_env import fake_tools`.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FAKES_DIR = Path(__file__).resolve().parent
FAKE_PYTHON = FAKES_DIR / "python"
DATA_DIR = FAKES_DIR / "data"
VENV_BIN = str(Path(sys.executable).parent)
FAKE_VARS = ("FAKE_ATC_FAIL", "FAKE_ATC_SLEEP", "FAKE_ATC_PARTIAL", "FAKE_ASCEND_PERTURB", "FAKE_NPU_NAME",
             "FAKE_NPU_COUNT", "FAKE_NPU_SMI_FAIL", "FAKE_NPU_SLOW", "ASCEND_TOOLKIT_HOME", "install_path",
             "ASCEND_OPP_PATH", "LVVIT_FAKE_CANN", "LVVIT_FAKE_ATC_FAIL", "LVVIT_FAKE_NPU_SMI", "LVVIT_FAKE_NPU_BOARD",
             "LVVIT_FAKE_NPU_MAP", "LVVIT_FAKE_ATC_WARN", "FAKE_ATC_FAST_TRANSPOSE_SHAPES", "ASCEND_HOME_PATH",
             "LVVIT_FAKE_ATC_ARTEFACTS", "LVVIT_FAKE_ATC_READ_OPP")
FIXTURES_DIR = FAKES_DIR.parent / "fixtures" / "ascend"  # real public outputs, sources in SOURCES.md
GOLDEN_ONNX = FAKES_DIR.parent.parent / "golden" / "lvvit_golden.onnx"


def _clean_env(monkeypatch, with_fakes: bool) -> None:
    for var in FAKE_VARS:
        monkeypatch.delenv(var, raising=False)
    system = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and Path(p).resolve() != FAKES_DIR]
    monkeypatch.setenv("PATH", os.pathsep.join(([str(FAKES_DIR)] if with_fakes else []) + [VENV_BIN] + system))


def _forget_ais_bench() -> None:
    for name in list(sys.modules):
        if name == "ais_bench" or name.startswith("ais_bench.") or name == "fake_ascend":
            del sys.modules[name]


@pytest.fixture
def fake_tools(monkeypatch):
    """atc, npu-smi, benchmark.x86_64 stand-ins on PATH; ais_bench NOT importable."""
    _clean_env(monkeypatch, with_fakes=True)
    _forget_ais_bench()
    yield FAKES_DIR
    _forget_ais_bench()


@pytest.fixture
def no_tools(monkeypatch):
    """No Ascend program on PATH and no ais_bench: a machine without CANN."""
    _clean_env(monkeypatch, with_fakes=False)
    _forget_ais_bench()
    yield
    _forget_ais_bench()


@pytest.fixture
def fake_ais_bench(monkeypatch, fake_tools):
    """fake_tools plus the stand-in ais_bench package importable."""
    monkeypatch.syspath_prepend(str(FAKE_PYTHON))
    yield FAKE_PYTHON


@pytest.fixture(scope="session")
def fake_om(tmp_path_factory) -> tuple[str, str]:
    """(onnx, om): the golden LV-ViT (batch 2) compiled by the stand-in atc, side by side."""
    folder = tmp_path_factory.mktemp("fake_om")
    onnx_path = folder / "lvvit_golden.onnx"
    shutil.copy(GOLDEN_ONNX, onnx_path)
    env = dict(os.environ, PATH=os.pathsep.join([str(FAKES_DIR), VENV_BIN, os.environ.get("PATH", "")]))
    for var in ("FAKE_ATC_FAIL", "LVVIT_FAKE_ATC_FAIL", "LVVIT_FAKE_CANN"):
        env.pop(var, None)
    subprocess.run([str(FAKES_DIR / "atc"), "--framework=5", f"--model={onnx_path}",
                    f"--output={folder / 'lvvit_golden'}", "--input_format=NCHW",
                    "--input_shape=image:2,3,224,224", "--soc_version=Ascend310"],
                   env=env, check=True, capture_output=True)
    return str(onnx_path), str(folder / "lvvit_golden.om")


def write_tiny_onnx(path, batch=16, input_name: str = "image") -> str:
    """A one-op NCHW model (input `image` (batch,3,224,224) -> `features`); batch may be a symbol."""
    import onnx
    from onnx import TensorProto, helper

    image = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, 3, 224, 224])
    features = helper.make_tensor_value_info("features", TensorProto.FLOAT, [batch, 3, 1, 1])
    graph = helper.make_graph([helper.make_node("GlobalAveragePool", [input_name], ["features"], name="pool")],
                              "tiny", [image], [features])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return str(path)


def ort_reference(onnx_path: str, image):
    """onnxruntime outputs of a fixed-batch model for any number of rows (chunked, zero-padded)."""
    import numpy as np

    from lvvit_opt.runtime.ort import OrtRunner

    with OrtRunner(onnx_path) as ort:
        batch = ort.inputs[0].shape[0]
        rows = image.shape[0]
        padded = np.zeros((-(-rows // batch) * batch,) + image.shape[1:], dtype=image.dtype)
        padded[:rows] = image
        parts = [ort.infer({ort.inputs[0].name: padded[i:i + batch]}) for i in range(0, len(padded), batch)]
    return {name: np.concatenate([p[name] for p in parts])[:rows] for name in parts[0]}
