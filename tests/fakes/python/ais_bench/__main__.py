"""Stand-in for `python -m ais_bench` (tests only): inference over fake .om files, and `--dump`.

Arguments as the real CLI spells them (Ascend/msit benchmark args: --model, --input,
--output, --output_dirname, --outfmt, --device, --loop, --dump, --dump_npy, all booleans
as str2bool "1"/"0"). Outputs: `{output}/{YYYY_mm_dd-HH_MM_SS}/{input stem}_{k}.{npy|bin}`.

`--dump 1 --dump_npy 1` writes what the real tool leaves in `{output}/dump/{time}_npy/`
(msit docs "Dump Data Convert": the converted twin of the raw `{output}/dump/{time}/`):
`{device}/{model_name}/{model_id}/{data_index}/{op_type}.{op_name}.{task_id}.{stream_id}.{timestamp}.output.{i}.npy`
(layout: CANN atlasaccuracy_16_0029; names: atlasaccuracy_16_0061, '.', '/', '\\', ' ' -> '_';
converted names: msaccucmp convert, atlasaccuracy_16_0057). The raw files are a binary
format this stand-in does not imitate, so it writes only the converted tree (`--dump 1`
without `--dump_npy 1` writes an empty `{time}/` and says so). Every ONNX node's outputs are
dumped through fp16 as an NPU computes them, plus a `TransData.trans_TransData_0` op atc adds
in front of the first layer (real dumps hold such ops; they match no ONNX node).
FAKE_ASCEND_PERTURB_OP=<onnx node name> adds noise to that op's dump, for tests.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fake_ascend import FakeModel, read_om  # noqa: E402


def str2bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {text!r}")


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="ais_bench")
    parser.add_argument("--model", "--om-model", dest="model", required=True)
    parser.add_argument("--input", default=None)
    parser.add_argument("--output", default=None)
    parser.add_argument("--output_dirname", default=None)
    parser.add_argument("--outfmt", default="BIN", choices=["NPY", "BIN", "TXT"])
    parser.add_argument("--device", type=int, default=0)
    parser.add_argument("--loop", type=int, default=1)
    parser.add_argument("--dymBatch", dest="dym_batch", type=int, default=0)
    parser.add_argument("--dump", type=str2bool, default=False)
    parser.add_argument("--dump_npy", "--dump-npy", dest="dump_npy", type=str2bool, default=False)
    return parser.parse_args(argv)


def load_inputs(spec: str | None, model: FakeModel) -> list[tuple[str, list[np.ndarray]]]:
    if spec is None:  # pure inference test: zeros
        return [("pure_infer_data", [np.zeros(s, model.input_dtype) for s in model.input_shapes])]
    paths = sorted(Path(spec).iterdir()) if Path(spec).is_dir() else [Path(spec)]
    items = []
    for path in paths:
        shape = model.input_shapes[0]
        array = np.load(path) if path.suffix == ".npy" else np.fromfile(path, dtype=model.input_dtype)
        if array.size != int(np.prod(shape)):
            raise SystemExit(f"[ERROR] input {path} holds {array.size} values, the model takes {list(shape)}")
        items.append((path.stem, [np.asarray(array, model.input_dtype).reshape(shape)]))
    return items


def dump_name(name: str) -> str:
    return re.sub(r"[./\\ ]", "_", name)


def write_dump(npy_root: Path, om_path: str, arrays: list[np.ndarray], data_index: int, device: int) -> int:
    """The converted dump of one inference; returns the number of files written."""
    import onnx
    import onnxruntime as ort

    header, onnx_bytes = read_om(om_path)
    model = onnx.load_from_string(onnx_bytes)
    nodes = [n for n in model.graph.node if n.op_type != "Constant"]
    present = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=o) for n in nodes for o in n.output if o and o not in present)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {name: np.asarray(a, np.float32).astype(np.float16).astype(np.float32)
             for name, a in zip(header["input_names"], arrays)}
    names = [o.name for o in session.get_outputs()]
    values = dict(zip(names, session.run(names, feeds)))
    folder = npy_root / str(device) / dump_name(Path(om_path).stem) / "1" / str(data_index)
    folder.mkdir(parents=True, exist_ok=True)
    perturb = os.environ.get("FAKE_ASCEND_PERTURB_OP")
    stamp = int(time.time() * 1e6)
    ops = [("TransData", "trans_TransData_0", [feeds[header["input_names"][0]]])]
    ops += [(n.op_type, n.name or f"{n.op_type}_{k}", [values[o] for o in n.output if o]) for k, n in enumerate(nodes)]
    written = 0
    for task_id, (op_type, op_name, outputs) in enumerate(ops, start=2):
        base = f"{dump_name(op_type)}.{dump_name(op_name)}.{task_id}.0.{stamp + task_id}"
        for i, out in enumerate(outputs):
            out = np.asarray(out)
            if out.dtype.kind == "f":
                out = out.astype(np.float16)
                if perturb and op_name == perturb:
                    out = out + np.float16(0.05) * np.abs(out).max()
            np.save(folder / f"{base}.output.{i}.npy", out)
            written += 1
    return written


def main(argv=None) -> int:
    args = parse_args(argv)
    if not os.path.isfile(args.model):
        print(f"[ERROR] model path {args.model} is not a file", file=sys.stderr)
        return 1
    model = FakeModel(args.model)
    if model.gears and not args.dym_batch:
        print("[ERROR] the model has dynamic batch gears; pass --dymBatch N", file=sys.stderr)
        return 1
    if args.dym_batch:
        if not model.gears:
            print("[ERROR] --dymBatch needs a model compiled with --dynamic_batch_size", file=sys.stderr)
            return 1
        try:
            model.set_batch(args.dym_batch)
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 1
    stamp = time.strftime("%Y_%m_%d-%H_%M_%S")
    out_dir = Path(args.output or ".") / (args.output_dirname or stamp)
    out_dir.mkdir(parents=True, exist_ok=True)
    dump_time = time.strftime("%Y%m%d%H%M%S")
    dump_root = Path(args.output or ".") / "dump"
    for index, (stem, arrays) in enumerate(load_inputs(args.input, model)):
        for k, out in enumerate(model.run(arrays)):
            target = out_dir / f"{stem}_{k}.{'npy' if args.outfmt == 'NPY' else 'bin'}"
            np.save(target, out) if args.outfmt == "NPY" else out.tofile(target)
        if args.dump:
            (dump_root / dump_time).mkdir(parents=True, exist_ok=True)
            if args.dump_npy:
                count = write_dump(dump_root / f"{dump_time}_npy", args.model, arrays, index, args.device)
                print(f"[INFO] dump data convert to npy: {count} files in {dump_root / (dump_time + '_npy')}")
            else:
                print("[INFO] stand-in: raw dump files are not imitated; pass --dump_npy 1")
    print(f"[INFO] output path:{out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
