"""The one reader of model inputs, shared by `validate`, `golden make`, `apply` and `debug layers`.

`--inputs` takes one of:

- a number N: N seeded random batches (standard normal floats; the default everywhere);
- a `.npy` file: the rows of a single-input model, (rows, C, H, W) or one (C, H, W) sample;
- a `.npz` file: one array per input name (a `golden make` file qualifies: its outputs are ignored);
- a `preprocess` output directory (`<stem>.bin` float32 files, name order = the info file's
  order) or a benchmark info file (`index path width height` lines);
- a folder of images, put through the ImageNet eval transform at the model's input size.

Rows are split into feed sets of the model's static batch (one set when the batch is
symbolic). `InputSet.source` says in words which inputs were used, for every report.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import numpy as np

from lvvit_opt.core.errors import UserError, reason_of, shown
from lvvit_opt.core.tensor_spec import TensorSpec

InputsArg = Union[int, str, os.PathLike]
# Bytes of Python objects per array of a feed set (the array object, its dict entry, the outputs'
# arrays of two models) counted with the data when random batches are checked against memory.
FEED_OVERHEAD = 2048


@dataclass
class InputSet:
    """Feed sets (input name -> array, one dict per model call) and where they came from."""

    feeds: list[dict[str, np.ndarray]]
    kind: str  # random | npy | npz | preprocessed | images
    source: str  # human-readable: "2 seeded random batch(es) (seed 0)", "prep/ (8 .bin files)", ...
    seed: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(_rows_of(f) for f in self.feeds)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": self.source, "seed": self.seed, "sets": len(self.feeds),
                **self.details}


def _rows_of(feed: Mapping[str, np.ndarray]) -> int:
    """Rows of one feed set: the leading dim of its first input that has one (1 for scalars only)."""
    return next((int(np.shape(a)[0]) for a in feed.values() if np.ndim(a)), 1)


def resolve_input_shape(spec, batch_size: int | None = None) -> tuple[int, ...]:
    """Concrete shape for an input spec: a symbolic first dim becomes `batch_size` (default 1)."""
    if not isinstance(spec, TensorSpec):
        spec = TensorSpec(spec.name, None if spec.shape is None else tuple(spec.shape), getattr(spec, "dtype", "float32"))
    return spec.concrete_shape(batch_size)


def make_inputs(specs, count: int = 1, seed: int = 0, batch_size: int | None = None) -> list[dict[str, np.ndarray]]:
    """`count` seeded feed dicts for the given input specs (runtime.TensorSpec-like objects).

    Floats are standard normal (what a normalised image looks like); integers are small
    non-negative values; booleans random; strings short random words; a rank-0 input is a
    rank-0 array. An input random values cannot stand for (a sequence, map or optional, a
    type numpy cannot hand to onnxruntime) is refused, named, with the way out.
    """
    from lvvit_opt.core.resources import require_memory, tensor_nbytes

    for spec in specs:
        problem = unfeedable(spec.dtype)
        if problem:
            tensor = not problem.startswith(("a sequence", "a map", "an optional"))
            raise UserError(f"input {spec.name!r} is {problem}: validation cannot make random values for it; "
                            + ("give --inputs with real values, or --no-validate" if tensor else
                               "run without validation (--no-validate)"))
    shapes = [(resolve_input_shape(s, batch_size), s.dtype) for s in specs]
    # inputs, two models' outputs and the float64 draw: three times the inputs at least, and the
    # Python objects of every set (a million tiny batches are mostly overhead)
    per_set = sum(tensor_nbytes(shape, _sized(dtype)) + FEED_OVERHEAD for shape, dtype in shapes) + FEED_OVERHEAD
    require_memory(3 * count * per_set,
                   f"--inputs {count}: {count} random batch(es) of "
                   + ", ".join(f"{s.name} {list(shape)}" for s, (shape, _) in zip(specs, shapes)))
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(count):
        feed = {}
        for spec in specs:
            shape = resolve_input_shape(spec, batch_size)
            if _is_string(spec.dtype):
                words = np.array(["alpha", "beta", "gamma", "delta", "", "x y"], dtype=object)
                feed[spec.name] = np.asarray(words[rng.integers(0, len(words), size=shape)], dtype=object)
                continue
            dtype = np.dtype(spec.dtype)
            if dtype.kind == "f":
                feed[spec.name] = np.asarray(rng.standard_normal(shape).astype(dtype))
            elif dtype.kind == "b":
                feed[spec.name] = np.asarray(rng.random(shape) < 0.5)
            else:
                feed[spec.name] = np.asarray(rng.integers(0, 2, size=shape).astype(dtype))
        feeds.append(feed)
    return feeds


# Tensor types onnxruntime's Python API cannot exchange as numpy arrays
NUMPY_UNFEEDABLE = ("bfloat16", "float8", "float4", "int4", "uint4", "int2", "uint2")


def unfeedable(dtype: str) -> str | None:
    """Why an input of this (tensor_spec) dtype cannot be fed from numpy, or None when it can."""
    text = str(dtype).lower()
    for kind, words in (("seq(", "a sequence"), ("map(", "a map"), ("optional(", "an optional")):
        if text.startswith(kind):
            return f"{words} ({text})"
    if any(text.startswith(name) for name in NUMPY_UNFEEDABLE):
        return f"a {text} tensor (onnxruntime's Python API takes no {text} arrays)"
    if not _is_string(text):
        try:
            np.dtype(text)
        except TypeError:
            return f"of type {text}"
    return None


def _is_string(dtype) -> bool:
    return str(dtype).lower() in ("str", "string", "object")


def _sized(dtype: str) -> str:
    return "int64" if _is_string(dtype) else dtype  # an object pointer per string, plus the word


def parse_inputs_arg(value: InputsArg) -> int | Path:
    """'4' / 4 -> 4 (random batches); anything else -> an existing path. UserError otherwise."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if value < 1:
            raise UserError(f"--inputs {value}: the number of random batches must be at least 1")
        return int(value)
    text = os.fspath(value)
    if text.strip().isdigit():
        return parse_inputs_arg(int(text.strip()))
    path = Path(text)
    try:
        exists = path.exists()
    except (OSError, ValueError) as exc:  # a name over NAME_MAX (255 bytes), a NUL byte ...
        raise UserError(f"--inputs {shown(text)}: not a usable path ({getattr(exc, 'strerror', None) or exc})") from None
    if not exists:
        raise UserError(f"--inputs {shown(text)}: neither a number of random batches nor an existing file or directory")
    return path


def load_inputs(value: InputsArg, specs: Sequence, *, seed: int = 0, batch_size: int | None = None,
                model: str | os.PathLike | None = None) -> InputSet:
    """Feed sets for a model with input `specs` (runtime TensorSpec-like: name, shape, dtype).
    `model`: the .onnx whose recorded preprocessing (metadata_props) an image folder goes through."""
    parsed = parse_inputs_arg(value)
    if isinstance(parsed, int):
        feeds = make_inputs(specs, count=parsed, seed=seed, batch_size=batch_size)
        return InputSet(feeds, "random", f"{parsed} seeded random batch(es) (seed {seed})", seed)
    arrays, kind, source, details = _read_arrays(parsed, specs, model)
    feeds = split_feeds(arrays, specs, what=source)
    return InputSet(feeds, kind, source, None, details)


def split_feeds(arrays: Mapping[str, np.ndarray], specs: Sequence, what: str = "inputs") -> list[dict[str, np.ndarray]]:
    """Rows of every input, checked and cast against the model's specs (runtime.feeds.check_feed),
    in feed sets of its static batch (one set if the batch is symbolic). A single sample
    without its batch axis is taken as one row. UserError if names, shapes or rows do not fit.

    Inputs that do not share one leading batch dimension (a scalar, a shape tensor, a mask of its
    own length beside the image) are the model's real inputs for one call: each is checked
    against its own spec as given, and they make one feed set."""
    from lvvit_opt.runtime.feeds import check_feed

    missing = [s.name for s in specs if s.name not in arrays]
    if missing:
        raise UserError(f"{what} lacks input(s) {', '.join(missing)} (has {', '.join(arrays) or 'nothing'})")
    given = {spec.name: np.asarray(arrays[spec.name]) for spec in specs}
    if not _share_batch(specs, given):
        feed = {}
        for spec in specs:
            try:
                feed[spec.name] = check_feed(spec, given[spec.name], "model")
            except UserError as exc:
                raise UserError(f"{what}: {exc}") from None
            _refuse_non_finite(feed[spec.name], spec.name, what)
        return [feed]
    columns = {}
    for spec in specs:
        array = given[spec.name]
        if spec.shape is not None and array.ndim == len(spec.shape) - 1:
            array = array[None]  # one sample without its batch axis
        try:
            array = check_feed(spec, array, "model", free_batch=True)
        except UserError as exc:
            raise UserError(f"{what}: {exc}") from None
        _refuse_non_finite(array, spec.name, what)
        columns[spec.name] = array
    rows = {name: a.shape[0] for name, a in columns.items()}
    if len(set(rows.values())) != 1:
        raise UserError(f"{what}: inputs disagree on the number of rows: {rows}")
    total = next(iter(rows.values()))
    batch = specs[0].batch or total
    if total % batch:
        raise UserError(f"{what}: {total} row(s) is not a multiple of the model's batch {batch}; "
                        f"give a multiple of {batch}")
    return [{name: a[i:i + batch] for name, a in columns.items()} for i in range(0, total, batch)]


def _share_batch(specs: Sequence, given: Mapping[str, np.ndarray]) -> bool:
    """Whether the inputs are rows of one batch: every spec has a leading dim (symbolic or one
    static batch for all), and every array has as many rows as the others, counting a single
    sample given without its batch axis as one row. A model with one batched input always does."""
    static = set()
    rows = set()
    for spec in specs:
        array = given[spec.name]
        if spec.shape is not None and len(spec.shape) == 0:
            return False  # a scalar input has no batch
        if spec.shape is not None:
            first = spec.shape[0]
            if isinstance(first, int) and first > 0:
                static.add(first)
        sample = spec.shape is not None and array.ndim == len(spec.shape) - 1
        if array.ndim == 0 and not sample:
            return False
        rows.add(1 if sample else array.shape[0])
    if len(specs) == 1:
        return True
    return len(static) <= 1 and len(rows) == 1


def _refuse_non_finite(array: np.ndarray, name: str, what: str) -> None:
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise UserError(f"{what}: input {name!r} holds NaN or Inf values")


def _shape_text(shape) -> str:
    return "(" + ", ".join(str(d) if isinstance(d, int) and d > 0 else "N" for d in shape) + ")"


def _read_arrays(path: Path, specs: Sequence, model=None) -> tuple[dict[str, np.ndarray], str, str, dict]:
    if path.is_dir():
        if any(path.glob("*.bin")):
            return _read_preprocessed(sorted(path.glob("*.bin")), specs, f"{path}/")
        return _read_images(path, specs, model)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        if len(specs) != 1:
            raise UserError(f"{shown(path)}: a .npy holds one array but the model takes {len(specs)} inputs "
                            f"({', '.join(s.name for s in specs)}); use a .npz with one array per input name")
        return {specs[0].name: _load_npy(path)}, "npy", str(path), {"path": str(path)}
    if suffix == ".npz":
        return _read_npz(path, specs), "npz", str(path), {"path": str(path)}
    if suffix == ".info":
        return _read_preprocessed(_info_paths(path), specs, str(path))
    raise UserError(f"--inputs {path}: expected a number, a .npy/.npz file, a preprocess directory "
                    "(.bin files), a benchmark .info file or a folder of images")


def _load_npy(path: Path) -> np.ndarray:
    from lvvit_opt.core.readers import read_npy

    return read_npy(path, "--inputs")  # declared size checked against the file and memory first


def _read_npz(path: Path, specs: Sequence) -> dict[str, np.ndarray]:
    """The arrays of the model's inputs from a .npz (other members, a golden file's outputs, are
    never inflated); each member's declared size is checked against memory first (core.readers)."""
    from lvvit_opt.core.readers import npz_names, read_npz

    names = npz_names(path, "--inputs")
    wanted = [s.name for s in specs]
    if set(wanted) <= set(names):
        return read_npz(path, "--inputs", wanted)
    if len(specs) == 1 and len(names) == 1:  # one array under another name: unambiguous
        return {specs[0].name: read_npz(path, "--inputs", names)[names[0]]}
    raise UserError(f"--inputs {shown(path)} lacks input(s) {', '.join(n for n in wanted if n not in names)} "
                    f"(has {', '.join(names) or 'nothing'})")


def _single_image_spec(specs: Sequence, what: str):
    if len(specs) != 1 or specs[0].shape is None or len(specs[0].shape) != 4:
        raise UserError(f"{what}: preprocessed images feed single-input NCHW models; this one takes "
                        + ", ".join(f"{s.name} {_shape_text(s.shape or ())}" for s in specs))
    spec = specs[0]
    channels, height, width = spec.shape[1:]
    if not all(isinstance(d, int) and d > 0 for d in (channels, height, width)) or channels != 3 or height != width:
        raise UserError(f"{what}: expected a (N, 3, S, S) image input, the model takes {spec.name} "
                        f"{_shape_text(spec.shape)}")
    return spec


def _info_paths(info: Path) -> list[Path]:
    """The .bin paths of a benchmark info file, in index order (relative paths: from the file's folder)."""
    from lvvit_opt.core.readers import INFO, read_text

    lines = read_text(info, "--inputs", INFO).splitlines()
    entries = []
    for number, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 4 or not parts[0].isdigit():
            raise UserError(f"{info}:{number}: expected `index path width height`, got {line.strip()[:120]!r}")
        path = Path(parts[1])
        entries.append((int(parts[0]), path if path.is_absolute() else info.parent / path))
    if not entries:
        raise UserError(f"{info}: no entries")
    return [p for _, p in sorted(entries, key=lambda e: e[0])]


def _read_preprocessed(paths: list[Path], specs: Sequence, what: str) -> tuple[dict, str, str, dict]:
    from lvvit_opt.data.preprocess import read_bin

    spec = _single_image_spec(specs, what)
    size = spec.shape[-1]
    nbytes = 3 * size * size * 4
    rows = _allocate_rows(len(paths), size, f"{len(paths)} preprocessed image(s) from {what}")
    from lvvit_opt.core.readers import check_regular

    for row, path in enumerate(paths):
        actual = check_regular(path, what).st_size  # a FIFO or device named x.bin: refused, never opened
        if actual != nbytes:
            raise UserError(f"{what}: {path.name} holds {actual} bytes, not a float32 (3, {size}, {size}) "
                            f"image ({nbytes} bytes) for this model")
        rows[row] = read_bin(path, size)
    source = f"{what} ({len(paths)} preprocessed .bin file(s))"
    return {spec.name: rows}, "preprocessed", source, {"path": what, "files": len(paths)}


def _allocate_rows(count: int, size: int, what: str) -> np.ndarray:
    """(count, 3, size, size) float32, refused up front (one line, exit 2) when memory cannot hold
    it three times over (the inputs and both models' work); pass fewer files then."""
    from lvvit_opt.core.resources import require_memory, tensor_nbytes

    require_memory(3 * tensor_nbytes((count, 3, size, size)), what)
    return np.empty((count, 3, size, size), dtype=np.float32)


def _read_images(folder: Path, specs: Sequence, model=None) -> tuple[dict, str, str, dict]:
    from dataclasses import asdict

    from lvvit_opt.data.images import list_images
    from lvvit_opt.data.transform import eval_transform_for

    spec = _single_image_spec(specs, f"{folder}/")
    transform, origin = eval_transform_for(model, img_size=spec.shape[-1])
    paths = list_images(folder)
    rows = _allocate_rows(len(paths), transform.img_size, f"{len(paths)} image(s) from {folder}/")
    for row, path in enumerate(paths):
        try:
            transform.normalize(transform.load_crop(path), out=rows[row])
        except Exception as exc:
            raise UserError(f"{shown(path)}: cannot read this image ({type(exc).__name__}: {str(exc)[:200]})") from None
    source = (f"{folder}/ ({len(paths)} image(s), eval transform from {origin}: resize "
              f"{transform.resize_shorter_to}, center crop {transform.img_size}, {transform.interpolation})")
    return {spec.name: rows}, "images", source, {"path": str(folder), "files": len(paths),
                                                  "transform": asdict(transform), "transform_from": origin}
