"""Feed checking and fixed-batch chunking that every runner shares (used by runtime.base.Runner).

No runner module is imported here, so runners import this without a cycle.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from lvvit_opt.core.errors import UserError
from lvvit_opt.core.tensor_spec import TensorSpec


def order_feeds(feeds: Mapping[str, Any], specs: Sequence[TensorSpec], label: str = "model",
                free_batch: bool = False) -> list[np.ndarray]:
    """Feeds in the specs' order, cast to their dtypes, shapes checked.

    Matched by name; by position only when no name matches and the count does (a compiled
    model may rename its inputs). Missing or unexpected names, a rank or a fixed dim that
    differs (the first dim is free with `free_batch`), or a dtype that cannot be cast
    within its kind (float64 -> float32 is fine, float -> int is not) are UserErrors.
    """
    if not isinstance(feeds, Mapping):
        raise UserError(f"feeds must map input name -> array, got {type(feeds).__name__}")
    names = [s.name for s in specs]
    if set(feeds) == set(names):
        arrays = [feeds[n] for n in names]
    elif len(feeds) == len(names) and not set(feeds) & set(names):
        arrays = list(feeds.values())
    else:
        missing = [n for n in names if n not in feeds]
        extra = [n for n in feeds if n not in names]
        why = ([f"missing {', '.join(map(repr, missing))}"] if missing else []) + \
              ([f"unexpected {', '.join(map(repr, extra))}"] if extra else [])
        raise UserError(f"the {label} takes inputs {names}; got {list(feeds)} ({'; '.join(why)})")
    checked = [check_feed(spec, array, label, free_batch) for spec, array in zip(specs, arrays)]
    if free_batch and len({a.shape[0] for a in checked if a.ndim}) > 1:
        raise UserError(f"inputs disagree on the batch size: {[a.shape[0] for a in checked]}")
    return checked


def check_feed(spec: TensorSpec, array: Any, label: str = "model", free_batch: bool = False) -> np.ndarray:
    """One feed as a contiguous array of the spec's dtype and shape (see order_feeds)."""
    array = np.asarray(array)
    if str(spec.dtype).lower() in ("str", "string"):  # onnxruntime takes str/object arrays of words
        if array.dtype.kind not in "USO":
            raise UserError(f"input {spec.name!r}: the {label} takes strings, got {array.dtype.name}")
        want = None
    else:
        want = _numpy_dtype(spec.dtype)
    if want is not None and array.dtype != want:
        if not np.can_cast(array.dtype, want, casting="same_kind"):
            raise UserError(f"input {spec.name!r}: the {label} takes {want.name}, got {array.dtype.name}")
        array = array.astype(want)
    if spec.shape is not None:
        expected = spec.format_shape("N" if free_batch else None)
        mismatch = array.ndim != len(spec.shape) or any(
            isinstance(want_dim, int) and want_dim != got and not (free_batch and axis == 0)
            for axis, (want_dim, got) in enumerate(zip(spec.shape, array.shape)))
        if mismatch:
            raise UserError(f"input {spec.name!r}: the {label} expects {expected}, got {tuple(array.shape)}")
        if free_batch and array.shape[0] == 0:
            raise UserError(f"input {spec.name!r}: no rows to run")
    return np.asarray(array, order="C")  # not ascontiguousarray: it makes a rank-0 feed shape [1]


def _numpy_dtype(name: str):
    try:
        return np.dtype(name)
    except TypeError:  # a dtype numpy lacks (bfloat16, sequences): the runtime checks it
        return None


RunBatch = Callable[[list], "tuple[list[np.ndarray], float]"]


def infer_in_model_batches(run_batch: RunBatch, arrays: list[np.ndarray], model_batch: int, label: str = "model",
                           all_at_once: bool = False) -> tuple[list[np.ndarray], float]:
    """Run `arrays` (same leading N) through a fixed-batch model.

    run_batch(chunk) returns (outputs, seconds). Rows go in chunks of `model_batch` (or all
    at once, padded to a multiple of it, with `all_at_once`); the last chunk is zero-padded
    and the padding rows are dropped from the outputs. Returns (outputs with N rows, seconds).
    """
    rows = arrays[0].shape[0]
    if rows == model_batch:
        return run_batch(arrays)
    step = -(-rows // model_batch) * model_batch if all_at_once else model_batch
    pieces: list[list[np.ndarray]] = []
    total_s = 0.0
    for start in range(0, rows, step):
        count = min(step, rows - start)
        outputs, seconds = run_batch([pad_rows(a[start:start + count], step) for a in arrays])
        total_s += seconds
        for out in outputs:
            if out.ndim == 0 or out.shape[0] != step:
                raise UserError(f"the {label} has batch {model_batch} but an output of shape {out.shape}; "
                                f"feed exactly {model_batch} rows")
        pieces.append([out[:count] for out in outputs])
    return [np.concatenate(parts, axis=0) for parts in zip(*pieces)], total_s


def pad_rows(array: np.ndarray, rows: int) -> np.ndarray:
    """`array` with zero rows appended up to `rows`."""
    if array.shape[0] == rows:
        return np.ascontiguousarray(array)
    padded = np.zeros((rows,) + array.shape[1:], dtype=array.dtype)
    padded[: array.shape[0]] = array
    return padded
