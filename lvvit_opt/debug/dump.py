"""Read an NPU dump of a compiled .om (converted to .npy): its files by op name and output, and the
fused-op renames of the .om graph JSON; debug.layers.match_dump pairs them with ONNX node names.

Public facts this follows (no CANN here; the stand-in in tests/fakes writes the same layout):

- Dump layout: `{dump_path}/{time YYYYMMDDHHMMSS}/{device_id}/{model_name}/{model_id}/{data_index}/{dump file}`
  (CANN "准备离线模型dump数据文件", hiascend.com canncommercial 6.0.1 atlasaccuracy_16_0029).
  ais_bench / `msit benchmark ... --dump 1` sets dump_path to `{output}/dump`; with the convert flag
  (spelled `--dump_npy 1` by `python -m ais_bench`, `--dump-npy 1` by `msit benchmark`/`ait benchmark`)
  the converted files go to a sibling `{time}_npy/` directory (msit benchmark docs, "Dump Data Convert").
- Dump file name: `{op_type}.{op_name}.{task_id}.{stream_id}.{timestamp}`, newer CANN also
  `{op_type}.{op_name}.({stream_id}.){task_id}.{timestamp}.{task_type}.{context_id}.{thread_id}.{device_id}`;
  op_type and op_name match `[A-Za-z0-9_-]`: '.', '/', '\\' and spaces of the original names are
  replaced by '_' (CANN 8.0/8.5 "Data Format Requirements", atlasaccuracy_16_0061/0062).
- The raw files are a binary format; `msaccucmp.py convert -d DIR -t npy` (or the convert flag above)
  writes `{dump file}.output.{i}.npy` / `.input.{i}.npy`, with `-f FORMAT` `{dump file}.output.{i}.{NxCxHxW}.npy`
  (CANN "dump数据文件Format转换", atlasaccuracy_16_0057; msit msquickcmp reads
  `<dump file>.output.0.npy` the same way).

Matching, as msit compare does for ONNX models (msquickcmp: unnamed ONNX nodes are called
`{op_type}_{index}`): a dump's op_name is looked up among the reference's node names
sanitised with the rule above, its output index i is that node's i-th output. With the
.om's graph JSON (`atc --mode=1 --om=X.om --json=X.json`), fused ops are mapped like msit's
fusion rules do: an output's `_datadump_origin_name` / `_datadump_origin_output_index`
attributes name the original node and output; without them, the op's
`_datadump_original_op_names` list (e.g. Conv+BN+Relu fused as `conv1conv1_relu`) maps its
outputs to the last original op's (Ascend/msit msquickcmp/npu/fusion_parer, om_parser.py).
Ops that atc added (TransData, Cast, ...) match no node and are listed as unmatched; an op
that ran more than once (several data_index folders) is taken from its first run.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from lvvit_opt.core.errors import UserError, reason_of

log = logging.getLogger(__name__)

NPY_NAME = re.compile(
    r"^(?P<op_type>[A-Za-z0-9_-]+)\.(?P<op_name>[A-Za-z0-9_-]+)\.(?P<ids>\d+(?:\.\d+)+)"
    r"\.(?P<io>input|output)\.(?P<index>\d+)(?:\.(?P<shape>\d+(?:x\d+)*))?\.npy$")
RAW_NAME = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.\d+(?:\.\d+)+$")


def dump_name(name: str) -> str:
    """An original op name as the dump writes it ('.', '/', '\\' and spaces become '_')."""
    return re.sub(r"[./\\ ]", "_", name)


def find_dump_outputs(directory: str | os.PathLike) -> dict[tuple[str, int], Path]:
    """(op_name, output index) -> the converted .npy, for every output file under `directory`."""
    root = Path(directory)
    if not root.is_dir():
        raise UserError(f"{root}: not a dump directory")
    found: dict[tuple[str, int], Path] = {}
    raw = repeated = 0
    for path in sorted(root.rglob("*"), key=_run_order):
        if not path.is_file():
            continue
        match = NPY_NAME.match(path.name)
        if match is None:
            raw += bool(RAW_NAME.match(path.name))
            continue
        if match["io"] == "output":
            key = (match["op_name"], int(match["index"]))
            if key in found:
                repeated += 1
            found.setdefault(key, path)
    if not found:
        hint = (f"it holds {raw} raw dump file(s): convert them first (python -m ais_bench ... --dump_npy 1, msit benchmark ... --dump-npy 1, "
                "or msaccucmp.py convert -d DIR -out OUT -t npy)" if raw else
                "expected {op_type}.{op_name}.{task_id}.{stream_id}.{timestamp}.output.{i}.npy files")
        raise UserError(f"{root}: no converted dump outputs; {hint}")
    if repeated:
        log.warning("%s holds %d output(s) of ops that ran more than once; using each op's first run",
                    root, repeated)
    return found


def _run_order(path: Path) -> tuple:
    """Sort key: the first run (numerically smallest data_index folder) first."""
    return tuple(int(p) if p.isdigit() else -1 for p in path.parts[:-1]), str(path)


def read_om_json(path: str | os.PathLike) -> dict[tuple[str, int], tuple[str, int]]:
    """(dumped op name, output index) -> (original op name, output index) for every op of an
    `atc --mode=1` graph JSON (read by lvvit_opt.ascend.om_graph) whose outputs stand for
    original ops under other names."""
    from lvvit_opt.ascend.om_graph import read_om_json as read_graph

    mapping: dict[tuple[str, int], tuple[str, int]] = {}
    for op in read_graph(path).ops:
        originals = op.attrs.get("_datadump_original_op_names")
        originals = originals if isinstance(originals, list) else []
        for k, attrs in enumerate(op.output_attrs):
            origin = attrs.get("_datadump_origin_name")
            if isinstance(origin, str) and origin:
                index = attrs.get("_datadump_origin_output_index", k)
                mapping[(dump_name(op.name), k)] = (origin, int(index) if str(index).lstrip("-").isdigit() else k)
            elif originals and originals[-1] != op.name:
                mapping[(dump_name(op.name), k)] = (str(originals[-1]), k)
    return mapping


class DumpCandidate:
    """An NPU dump as a debug-layers candidate: `files` (dumped op name, output index) -> .npy
    path, `renames` the fused-op names from the .om's graph JSON, `fetch` loads them (a dump is
    one inference: the feeds are not used). Pairing them with reference tensors is
    lvvit_opt.debug.layers's `match_dump`."""

    def __init__(self, directory: str | os.PathLike, om_json: str | os.PathLike | None = None):
        self.directory = str(directory)
        self.files = find_dump_outputs(directory)
        self.renames = read_om_json(om_json) if om_json else {}

    @staticmethod
    def align(value: np.ndarray, ref_shape: tuple) -> np.ndarray:
        """A 5-D NC1HWC0 feature map (Ascend's internal layout, C split into C1 blocks of C0,
        padded) as the reference's NCHW; anything else unchanged (converting with
        `msaccucmp.py convert -f NCHW` gives NCHW directly)."""
        if value.ndim == 5 and len(ref_shape) == 4:
            n, c1, h, w, c0 = value.shape
            if (n, h, w) == (ref_shape[0], ref_shape[2], ref_shape[3]) and c1 * c0 >= ref_shape[1] > (c1 - 1) * c0:
                return value.transpose(0, 1, 4, 2, 3).reshape(n, c1 * c0, h, w)[:, : ref_shape[1]]
        return value

    def fetch(self, names: Sequence[str], feeds=None) -> Mapping[str, np.ndarray]:
        values = {}
        for name in names:
            try:
                values[name] = np.load(os.path.join(self.directory, name), allow_pickle=False)
            except Exception as exc:
                raise UserError(f"{name}: unreadable dump .npy ({type(exc).__name__}: {reason_of(exc, 200)})") from None
        return values

    def close(self) -> None:
        pass
