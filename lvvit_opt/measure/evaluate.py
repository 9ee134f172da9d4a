"""Streaming ImageNet evaluation: images -> model -> top-1/top-5, no intermediate files.

Worker processes decode, resize and crop the next images while the model runs the current
batch (a bounded read-ahead keeps memory flat on 50 000 images); the main process
normalises each crop into the batch buffer (a table lookup, byte-identical to
`preprocess`) and runs the model. Scoring reuses `data.scoring.score_predictions`, so eval
and postprocess agree on the same predictions.

Batch size: a model with a static batch (every .om, fixed-batch ONNX) runs at that batch;
the last partial batch is padded with zeros and the padded outputs are dropped. A model
with a dynamic batch runs at `batch_size`, and the last batch is simply smaller.

This module owns one evaluation in one process and its per-worker entry point (evaluate_part);
it imports lvvit_opt.data, the runtime and resources, never lvvit_opt.scale, which composes it
(evaluate's scale_out).
"""
from __future__ import annotations

import collections
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Mapping, Sequence

import numpy as np

from lvvit_opt.core.errors import UserError
from lvvit_opt.core.resources import require_memory
from lvvit_opt.data.images import (decode_for_eval, default_workers, image_stem, init_worker, list_images, worker_pool,
                                   worker_ready)
from lvvit_opt.data.scoring import AccuracyResult, score_predictions, top_k
from lvvit_opt.data.postprocess import check_label_range, labels_by_stem, read_labels
from lvvit_opt.data.shard import Shard, model_digest, shard_payload
from lvvit_opt.data.transform import EvalTransform, eval_transform_for

if TYPE_CHECKING:
    from lvvit_opt.runtime.base import Runner

READ_AHEAD_BATCHES = 3
DECODE_NICENESS = 10  # decoding yields the CPU to a CPU-bound model (onnxruntime)
ProgressFn = Callable[[int, int], None]


@dataclass
class EvalResult:
    """Accuracy and throughput of one streaming evaluation."""

    model: str
    accuracy: AccuracyResult
    images: int                 # images listed (after --limit)
    inferred: int               # images that went through the model
    failed: dict[str, str]      # image name -> why it could not be read
    batch_size: int
    batches: int
    workers: int
    wall_s: float               # first image submitted to last output (model load, worker start-up excluded)
    infer_s: float              # sum of the runner's own time per batch
    runner: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    predictions: dict[str, list[int]] = field(default_factory=dict, repr=False)  # stem -> top-5
    shard: dict | None = field(default=None, repr=False)  # with --shard: data.shard.shard_payload
    workers_detail: list[dict] = field(default_factory=list)  # with several devices / Ray workers: one each
    preprocessing: str = ""     # the transform used and where it came from (model metadata or defaults)

    @property
    def images_per_s(self) -> float:
        """End to end: decode + preprocess + inference + scoring."""
        return self.inferred / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def infer_images_per_s(self) -> float:
        """Inference only (padding excluded from the count, included in the time)."""
        return self.inferred / self.infer_s if self.infer_s > 0 else 0.0

    def to_dict(self, with_predictions: bool = False) -> dict:
        data = asdict(self)
        data["accuracy"] = self.accuracy.to_dict()
        data["images_per_s"] = round(self.images_per_s, 3)
        data["infer_images_per_s"] = round(self.infer_images_per_s, 3)
        if not with_predictions:
            data.pop("predictions")
        if data["shard"] is None:
            data.pop("shard")
        return data

    def summary(self) -> str:
        lines = [self.accuracy.summary(),
                 f"images/s end to end: {self.images_per_s:.2f}  inference only: {self.infer_images_per_s:.2f} "
                 f"({self.inferred} images, batch {self.batch_size}, {self.workers} workers)"]
        lines += [f"  {d['worker']}: {d['images']} images, {d['images_per_s']:.2f} images/s end to end, "
                  f"{d['infer_images_per_s']:.2f} inference only" for d in self.workers_detail]
        lines += [f"preprocessing: {self.preprocessing}"] if self.preprocessing else []
        lines += [f"failed: {name}: {why}" for name, why in self.failed.items()]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


@dataclass
class EvalJob:
    """What `evaluate` hands a scale_out: the images chosen (after --limit and the shard) and
    how to evaluate them; the scale_out returns one EvalResult for them (combine_eval_parts)."""

    model: str
    data_dir: str
    paths: list[Path]
    labels: dict[str, int]      # the labels `paths` are scored on
    notes: list[str]
    batch_size: int
    workers: int                # decoding processes, to share out
    crop_pct: float | None
    interpolation: str | None
    runner_options: dict
    progress: ProgressFn | None
    runner: Runner | None = None  # a runner the caller opened, if any


ScaleOut = Callable[[EvalJob], EvalResult]


def evaluate(model: str | os.PathLike, data_dir: str | os.PathLike,
             labels: str | os.PathLike | Mapping[str, int], *, batch_size: int = 16,
             workers: int | None = None, limit: int | None = None, crop_pct: float | None = None,
             interpolation: str | None = None, runner=None, runner_options: dict | None = None,
             progress: ProgressFn | None = None, shard: Shard | None = None,
             scale_out: ScaleOut | None = None) -> EvalResult:
    """Evaluate `model` (.onnx or .om) on the images in `data_dir` against `labels`.

    `runner` may be an already-open runtime Runner (then `model` is only a name for the
    report); otherwise one is opened with `runtime.open_runner(model, **runner_options)`.
    `shard`: only the images (and labels) of that shard (data.shard); the result then
    carries what `merge` needs. `scale_out`: evaluates the chosen images elsewhere instead of
    in this process (given by lvvit_opt.scale.evaluate_any: one process per device, Ray
    actors), from an EvalJob; this module never imports the scale layer.
    The transform is the one recorded in the ONNX model's metadata (lvvit_opt.models.metadata) when
    there is one, else LV-ViT-S's; `crop_pct` / `interpolation` given here override either.
    """
    all_labels = read_labels(labels) if isinstance(labels, (str, os.PathLike)) else labels_by_stem(labels)
    paths, label_map, notes, listed = select_images(data_dir, all_labels, limit, shard)
    workers = workers or default_workers()
    if scale_out is not None:
        job = EvalJob(str(model), str(data_dir), paths, label_map, notes, batch_size, workers, crop_pct,
                      interpolation, runner_options or {}, progress, runner)
        return with_shard(scale_out(job), shard, label_map, all_labels, listed)
    own_runner = runner is None
    if own_runner:
        from lvvit_opt.runtime import open_runner

        runner = open_runner(model, **(runner_options or {}))
    try:
        result = evaluate_paths(runner, str(model), str(data_dir), paths, label_map, batch_size, workers,
                                crop_pct, interpolation, notes, progress)
    finally:
        if own_runner:
            runner.close()
    return with_shard(result, shard, label_map, all_labels, listed)


def select_images(data_dir: str | os.PathLike, all_labels: dict[str, int], limit: int | None,
                  shard: Shard | None) -> tuple[list[Path], dict[str, int], list[str], int]:
    """The images to evaluate (sorted by name, --limit, then the shard), the labels they are
    scored on, notes, and how many images were listed before sharding."""
    paths = list_images(data_dir, limit=limit)
    listed_count = len(paths)
    label_map = all_labels
    notes: list[str] = []
    if limit:
        listed = {image_stem(p.name) for p in paths}
        label_map = {stem: label for stem, label in label_map.items() if stem in listed}
        notes.append(f"--limit {limit}: scored the first {len(paths)} images by name")
    if shard is not None:
        paths = shard.select(paths, key=lambda p: p.name)
        label_map = {stem: label for stem, label in label_map.items() if shard.holds(stem)}
        notes.append(f"shard {shard}: {len(paths)} of {listed_count} images")
    return paths, label_map, notes, listed_count


def with_shard(result: EvalResult, shard: Shard | None, label_map: dict[str, int], all_labels: dict[str, int],
               listed: int) -> EvalResult:
    """Attach the shard record (predictions, this shard's labels, fingerprints) to a shard's result."""
    if shard is not None:
        result.shard = shard_payload(shard, "eval", result.predictions, label_map, all_labels, listed,
                                     model_sha256=model_digest(result.model))
    return result


def combine_eval_parts(model: str, data_dir: str, parts: Sequence[EvalResult], paths: list[Path],
                       label_map: dict[str, int], notes: list[str], names: Sequence[str]) -> EvalResult:
    """One result from the parts several workers (devices, Ray actors) evaluated, each over
    its own images: the union of predictions scored once against `label_map`, exactly as
    one process would. wall_s is the slowest part's (they ran together); infer_s is the
    time that gives the summed inference rate of the parts."""
    predictions: dict[str, list[int]] = {}
    failed: dict[str, str] = {}
    for part in parts:
        predictions.update(part.predictions)
        failed.update(part.failed)
    accuracy = score_predictions(predictions, label_map)
    accuracy.source = data_dir
    inferred = sum(part.inferred for part in parts)
    rate = sum(part.infer_images_per_s for part in parts)
    for part in parts:
        notes += [note for note in part.notes if note not in notes]
    detail = [{"worker": name, "images": part.inferred, "images_per_s": round(part.images_per_s, 3),
               "infer_images_per_s": round(part.infer_images_per_s, 3), "wall_s": part.wall_s,
               "runner": part.runner} for name, part in zip(names, parts)]
    return EvalResult(
        model=model, accuracy=accuracy, images=len(paths), inferred=inferred, failed=failed,
        batch_size=max((part.batch_size for part in parts), default=0), batches=sum(part.batches for part in parts),
        workers=sum(part.workers for part in parts), wall_s=max((part.wall_s for part in parts), default=0.0),
        infer_s=inferred / rate if rate else 0.0, runner=dict(parts[0].runner) if parts else {}, notes=notes,
        predictions=predictions, workers_detail=detail, preprocessing=parts[0].preprocessing if parts else "")


def evaluate_part(runner: Runner, model: str, paths: Sequence[str | os.PathLike], labels: dict[str, int], *,
                  batch_size: int, workers: int, crop_pct: float | None, interpolation: str | None,
                  progress: ProgressFn | None = None) -> EvalResult:
    """The per-worker entry point of scale-out (a device process, a Ray actor): exactly `paths`
    through the open `runner`, `workers` decoding processes; the labels are checked against
    the model's classes before any decoding. The caller merges the parts (combine_eval_parts)."""
    return evaluate_paths(runner, model, "", [Path(p) for p in paths], labels, batch_size, workers, crop_pct,
                          interpolation, [], progress)


def evaluate_paths(runner: Runner, model: str, data_dir: str, paths: list[Path], label_map: dict[str, int],
                   batch_size: int, workers: int, crop_pct: float | None, interpolation: str | None,
                   notes: list[str],
                   progress: ProgressFn | None) -> EvalResult:
    """The streaming loop on an open runner, over exactly `paths` (scored against `label_map`)."""
    spec = runner.inputs[0]
    if runner.outputs and runner.outputs[0].shape and _is_static(runner.outputs[0].shape[-1]):
        check_label_range(label_map, runner.outputs[0].shape[-1])  # before a single image is decoded
    batch, img_size = _batch_and_size(spec.shape, batch_size, notes)
    transform, source = eval_transform_for(model, img_size=img_size, crop_pct=crop_pct, interpolation=interpolation)
    preprocessing = (f"{transform.img_size} px, crop_pct {transform.crop_pct}, {transform.interpolation}, "
                     f"mean {transform.mean}, std {transform.std} (from {source})")
    require_memory(2 * batch * transform.output_nbytes + transform.memory_per_image() * max(workers, 1),
                   f"eval at batch {batch}, {img_size}px, {workers} workers")
    stream = _Stream(runner, spec.name, transform, batch, pad=spec.batch is not None, dtype=spec.dtype)
    pool = worker_pool(workers, init_worker, (transform, DECODE_NICENESS)) if workers > 1 and paths else None
    try:
        if pool is not None:
            pool.map(worker_ready, range(workers), chunksize=1)  # start-up, like model load, is not timed
        start = time.perf_counter()
        failed = stream.run(_decoded(pool, paths, transform, batch), len(paths), progress)
        wall = time.perf_counter() - start
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    accuracy = score_predictions(stream.predictions, label_map)
    accuracy.source = data_dir
    return EvalResult(
        model=model, accuracy=accuracy, images=len(paths), inferred=len(stream.predictions),
        failed={Path(p).name: why for p, why in failed.items()}, batch_size=batch, batches=stream.batches,
        workers=workers, wall_s=wall, infer_s=stream.infer_s, runner=runner.describe(), notes=notes,
        predictions={stem: [int(i) for i in best] for stem, best in stream.predictions.items()},
        preprocessing=preprocessing,
    )


def _is_static(dim) -> bool:
    return isinstance(dim, int) and dim > 0


def _batch_and_size(shape: tuple, batch_size: int, notes: list[str]) -> tuple[int, int]:
    """The batch to run and the square image size the model takes."""
    if len(shape) != 4 or (_is_static(shape[1]) and shape[1] != 3):
        raise UserError(f"the model input has shape {shape}; expected (N, 3, H, W)")
    height, width = shape[2], shape[3]
    if _is_static(height) and _is_static(width) and height != width:
        raise UserError(f"the model input is {height}x{width}; only square inputs are supported")
    img_size = height if _is_static(height) else 224
    if _is_static(shape[0]):
        if shape[0] != batch_size:
            notes.append(f"the model has a fixed batch of {shape[0]}; --batch-size {batch_size} does not apply")
        return shape[0], img_size
    if batch_size < 1:
        raise UserError(f"batch size must be positive, got {batch_size}")
    return batch_size, img_size


def _decoded(pool, paths: list[Path], transform: EvalTransform, batch: int) -> Iterator[tuple[str, object]]:
    """(path, uint8 crop or error text) in path order, decoding ahead in the pool.

    At most READ_AHEAD_BATCHES groups of `batch` images are in flight, so memory stays
    bounded whatever the dataset size.
    """
    names = [str(p) for p in paths]
    groups = [names[i:i + batch] for i in range(0, len(names), batch)]
    if pool is None:
        init_worker(transform)
        for group in groups:
            yield from map(decode_for_eval, group)
        return
    pending: collections.deque = collections.deque()
    for group in groups:
        pending.append(pool.map_async(decode_for_eval, group, chunksize=max(1, len(group) // 4)))
        if len(pending) >= READ_AHEAD_BATCHES:
            yield from pending.popleft().get()
    while pending:
        yield from pending.popleft().get()


class _Stream:
    """Fills batch buffers from decoded crops and runs the model on each full batch."""

    def __init__(self, runner, input_name: str, transform: EvalTransform, batch: int, pad: bool,
                 dtype: str = "float32"):
        self.runner = runner
        self.input_name = input_name
        self.transform = transform
        self.batch = batch
        self.pad = pad
        self.dtype = np.dtype(dtype if dtype in ("float32", "float16") else "float32")
        self.buffer = np.zeros((batch, *transform.output_shape), dtype=np.float32)
        self.stems: list[str] = []
        self.predictions: dict[str, np.ndarray] = {}
        self.infer_s = 0.0
        self.batches = 0

    def run(self, decoded: Iterator[tuple[str, object]], total: int, progress: ProgressFn | None) -> dict[str, str]:
        failed: dict[str, str] = {}
        for done, (path, crop) in enumerate(decoded, start=1):
            if isinstance(crop, str):
                failed[path] = crop
            else:
                self.transform.normalize(crop, out=self.buffer[len(self.stems)])
                self.stems.append(image_stem(path))
                if len(self.stems) == self.batch:
                    self._flush()
            if progress:
                progress(done, total)
        if self.stems:
            self._flush()
        return failed

    def _flush(self) -> None:
        count = len(self.stems)
        if count < self.batch and self.pad:
            self.buffer[count:] = 0.0
            feed = self.buffer
        else:
            feed = self.buffer[:count]
        outputs = self.runner.infer({self.input_name: feed.astype(self.dtype, copy=False)})
        self.infer_s += self.runner.last_infer_s
        self.batches += 1
        name = self.runner.outputs[0].name if self.runner.outputs else next(iter(outputs))
        scores = np.asarray(outputs[name]).reshape(len(feed), -1)
        for stem, row in zip(self.stems, scores[:count]):
            self.predictions[stem] = top_k(row)
        self.stems = []
