"""Facts about Ascend .om files that do not depend on a runner: how an .om is named after
the ONNX it was compiled from (the seed's naming; GE appends _<host_env_os>_<host_env_cpu>)."""
from __future__ import annotations

import os
import re
from pathlib import Path

_HOST_SUFFIX = re.compile(r"_linux_(x86_64|aarch64|arm64)$")  # GE: _<host_env_os>_<host_env_cpu>


def om_prefix(om_path: str | os.PathLike) -> Path:
    """The --output prefix an .om was written for: x.om and x_linux_x86_64.om -> x."""
    path = Path(om_path)
    stem = path.name[:-3] if path.name.lower().endswith(".om") else path.name
    return path.with_name(_HOST_SUFFIX.sub("", stem))


def source_onnx(om_path: str | os.PathLike) -> Path:
    """The ONNX beside an .om by the seed's naming (x.onnx for x.om or x_linux_<arch>.om); may not exist."""
    prefix = om_prefix(om_path)
    return prefix.with_name(prefix.name + ".onnx")


def sidecar_onnx(om_path: str | os.PathLike) -> Path | None:
    """source_onnx when that file exists, else None."""
    candidate = source_onnx(om_path)
    return candidate if candidate.is_file() else None
