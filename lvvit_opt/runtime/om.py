"""Facts about Ascend .om files that do not depend on a runner."""
from __future__ import annotations

import os
from pathlib import Path


def sidecar_onnx(om_path: str | os.PathLike) -> Path | None:
    """The ONNX an .om was compiled from, by the seed's naming: x.om <- x.onnx (also x_linux_<arch>.om)."""
    om = Path(om_path)
    stem = om.stem.split("_linux_")[0]
    candidate = om.with_name(stem + ".onnx")
    return candidate if candidate.is_file() else None

