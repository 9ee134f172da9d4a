"""`eval --engine ray`: the same evaluation on a Ray cluster (optional extra: pip install 'lvvit-opt[ray]').

One Ray actor per worker, each holding one runner for the whole run (one onnxruntime
session, or one ais_bench InferSession); the image list is cut into chunks that the actors
pull as they finish (ray.util.ActorPool), so a slower worker gets fewer chunks. Progress is
reported per finished chunk; the predictions come back to the driver and are scored there
exactly like one local run (data.evaluate.combine_eval_parts).

Resources: an .onnx actor asks for `threads` CPUs; an .om actor asks for one `NPU`, Ray's
resource for Ascend chips: Ray sets ASCEND_RT_VISIBLE_DEVICES to the chip it granted, so the
actor opens logical device 0 and reports the chip id Ray gave it (sources: Ray's
NPUAcceleratorManager, ray-project/ray python/ray/_private/accelerators/npu.py, resource name
"NPU", env ASCEND_RT_VISIBLE_DEVICES; CANN's env-var reference for ASCEND_RT_VISIBLE_DEVICES,
hiascend.com envref_07_0028: the visible chips are re-indexed from 0). The model and the images
must be at the same paths on every node (a shared filesystem), as for any Ray job that
reads files.

This module owns the Ray driver and actors; it reaches evaluate only through its public
functions (data.evaluate.evaluate_part, combine_eval_parts).
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from lvvit_opt.core.errors import LvvitOptError, Terminated, ToolFailed, UserError, reason_of, sigterm_received

if TYPE_CHECKING:
    from lvvit_opt.measure.evaluate import EvalJob, EvalResult

log = logging.getLogger(__name__)

CHUNKS_PER_WORKER = 4  # enough to balance uneven workers, few enough that per-call overhead stays small
MAX_CHUNK_BATCHES = 32  # and progress moves at least every 32 batches on a big set


def import_ray():
    """The ray module, or a UserError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError("--engine ray needs Ray: pip install 'lvvit-opt[ray]' (or pip install ray)") from None
    return ray


def connect(address: str | None) -> tuple[object, bool, float]:
    """(ray, started_here, seconds): attach to `address` (None: a running local cluster or a new one)."""
    ray = import_ray()
    if ray.is_initialized():
        return ray, False, 0.0
    start = time.perf_counter()
    handler = signal.getsignal(signal.SIGTERM)
    # Ray's C++ failure-signal handler in this process turns a SIGTERM into a stack dump on stderr
    # and re-raises it past the CLI's clean-up; the user's own setting wins.
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    try:
        with _ray_sigterm_handler_suppressed(ray):
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise UserError(f"cannot connect to Ray at {address or 'a local cluster'}: {reason_of(exc, 300)}") from None
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (errors.Terminated) mid-start: the half-started cluster goes too
        with contextlib.suppress(Exception):
            ray.shutdown()
        raise
    finally:
        _restore_sigterm_handler(handler)
    return ray, True, time.perf_counter() - start


@contextlib.contextmanager
def _ray_sigterm_handler_suppressed(ray):
    """ray.init installs a SIGTERM handler of its own (sys.exit(15)) through
    ray._private.utils.set_sigterm_handler: a SIGTERM while Ray starts then exits 15 with a
    traceback, or is swallowed by Ray's threads and the eval goes on. The CLI's handler
    (errors.Terminated: clean-up, exit 143) is kept by making that hook a no-op meanwhile."""
    utils = getattr(getattr(ray, "_private", None), "utils", None)
    original = getattr(utils, "set_sigterm_handler", None)
    if original is None:
        yield
        return
    utils.set_sigterm_handler = lambda _handler: None
    try:
        yield
    finally:
        utils.set_sigterm_handler = original


def _restore_sigterm_handler(handler) -> None:
    """Put the CLI's SIGTERM handler back should Ray have replaced it some other way."""
    if handler is None or signal.getsignal(signal.SIGTERM) is handler:
        return
    with contextlib.suppress(ValueError):  # not the main thread: nothing was installed there either
        signal.signal(signal.SIGTERM, handler)


def run_eval_on_ray(job: EvalJob, address: str | None, workers: int | None) -> EvalResult:
    """evaluate's scale_out for `eval --engine ray`: the job's images on Ray actors at `address`
    (None: a local Ray), `workers` of them, merged as one result."""
    from lvvit_opt.measure.evaluate import combine_eval_parts

    parts, names, info = evaluate_with_ray(job.model, job.paths, address=address, workers=workers,
                                           threads=job.runner_options.get("threads"), batch_size=job.batch_size,
                                           crop_pct=job.crop_pct, interpolation=job.interpolation,
                                           runner_options=job.runner_options, labels=job.labels,
                                           progress=job.progress)
    result = combine_eval_parts(job.model, job.data_dir, parts, job.paths, job.labels, job.notes, names)
    result.wall_s = info["wall_s"]  # the driver's clock: first chunk sent to last result back
    result.runner = {**result.runner, "engine": info}
    result.notes.append(f"ray: {info['workers']} worker(s) ({info['resource']} each) on {len(info['nodes'])} node(s); "
                        f"start-up {info['startup_s']:.1f} s not counted in images/s")
    return result


def evaluate_with_ray(model: str, paths: Sequence[Path], *, address: str | None, workers: int | None,
                      threads: int | None, batch_size: int, crop_pct: float, interpolation: str,
                      runner_options: dict, labels: dict[str, int] | None = None,
                      progress: Callable[[int, int], None] | None = None):
    """Evaluate `paths` on Ray actors. Returns (parts, names, info): one EvalResult per actor
    (its chunks together), the actors' names, and {"startup_s", "wall_s", "workers", ...}."""
    ray, started_here, init_s = connect(address)
    try:
        return _run(ray, model, paths, workers, threads, batch_size, crop_pct, interpolation, runner_options,
                    labels or {}, progress, init_s)
    except KeyboardInterrupt as exc:
        if started_here:
            _exit_without_finalizers(143 if isinstance(exc, Terminated) or sigterm_received() else 130)
        raise
    finally:
        if started_here:
            ray.shutdown()


def _exit_without_finalizers(code: int) -> None:
    """After Ctrl-C/SIGTERM interrupted a Ray this process started, Ray's C++ core can abort
    (SIGABRT, a stack dump) in the interpreter's finalization, after our clean-up ran: the exit
    status would be -6, not 130/143. An atexit hook registered now runs before Ray's (LIFO)
    and ends the process with the right status once the clean-up and the CLI's message are done."""
    def _exit() -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)

    atexit.register(_exit)


def _run(ray, model, paths, workers, threads, batch_size, crop_pct, interpolation, runner_options, labels,
         progress, init_s):
    on_npu = not str(model).lower().endswith(".onnx")
    cpus = threads or 1
    resources = ray.cluster_resources()
    available = int(resources.get("NPU", 0)) if on_npu else int(resources.get("CPU", 0) // cpus)
    if available < 1:
        raise UserError("the Ray cluster has no NPU resource: .om models run on Ascend hosts (start Ray there; "
                        "it detects the chips)" if on_npu else
                        f"the Ray cluster has fewer than {cpus} CPUs for one worker")
    count = min(workers or available, available)
    if workers and workers > available:
        log.warning("asked for %d Ray workers; the cluster has room for %d", workers, available)
    # device 0: the chip Ray granted, seen through ASCEND_RT_VISIBLE_DEVICES; the runner takes what it declares
    options = {"shared": {"device_id": 0, "threads": cpus}, **runner_options}
    if on_npu:
        actor_class = ray.remote(num_cpus=1, resources={"NPU": 1})(EvalWorker)
    else:
        actor_class = ray.remote(num_cpus=cpus)(EvalWorker)
    start = time.perf_counter()
    labels_ref = ray.put(labels)  # once to the object store, not once per actor
    actors = [actor_class.remote(str(model), options, index, labels_ref) for index in range(count)]
    try:
        descriptions = _ready(ray, actors)
        startup_s = init_s + time.perf_counter() - start
        by_actor, wall_s = _stream(actors, descriptions, paths, batch_size, crop_pct, interpolation, progress)
    finally:
        for actor in actors:
            ray.kill(actor)
    parts = [_join(by_actor[i], descriptions[i]) for i in range(count)]
    names = [_name(i, descriptions[i]) for i in range(count)]
    info = {"engine": "ray", "workers": count, "startup_s": startup_s, "ray_init_s": init_s, "wall_s": wall_s,
            "nodes": sorted({d["node"] for d in descriptions}), "resource": "NPU" if on_npu else f"{cpus} CPU"}
    return parts, names, info


def _stream(actors, descriptions, paths, batch_size, crop_pct, interpolation, progress):
    """Chunks to whichever actor is free; ({actor index: [EvalResult, ...]}, wall seconds)."""
    from ray.util import ActorPool

    chunks = _chunks([str(p) for p in paths], len(actors), descriptions[0].get("batch") or batch_size)
    by_actor: dict[int, list] = {i: [] for i in range(len(actors))}
    done = 0
    start = time.perf_counter()
    try:
        for index, part in ActorPool(actors).map_unordered(
                lambda actor, chunk: actor.run.remote(chunk, batch_size, crop_pct, interpolation), chunks):
            by_actor[index].append(part)
            done += part.inferred + len(part.failed)
            if progress:
                progress(done, len(paths))
    except Exception as exc:  # noqa: BLE001 - a failed task: report its cause in one line
        raise _unwrap(exc) from None
    return by_actor, time.perf_counter() - start


class EvalWorker:
    """A Ray actor: one runner for the whole run, evaluating the chunks it is given."""

    def __init__(self, model: str, options: dict, index: int, labels: dict[str, int]):
        from lvvit_opt.runtime import open_runner

        self.model = model
        self.index = index
        self.labels = labels  # checked against the model's classes by evaluate_part; scored on the driver
        self.error: LvvitOptError | None = None
        try:
            self.runner = open_runner(model, **options)
        except LvvitOptError as exc:  # Ray drops the cause of a failed constructor: keep it for describe()
            self.runner, self.error = None, exc

    def describe(self) -> dict:
        import ray

        if self.error is not None:
            return {"error": self.error}
        context = ray.get_runtime_context()
        return {"node": context.get_node_id()[:12], "pid": os.getpid(),
                "npu": list(context.get_accelerator_ids().get("NPU", [])),
                "batch": self.runner.inputs[0].batch,
                "runner": self.runner.describe()}

    def run(self, paths: list[str], batch_size: int, crop_pct: float, interpolation: str):
        """(this worker's index, EvalResult of `paths`; decoded here, no extra process)."""
        from lvvit_opt.measure.evaluate import evaluate_part

        result = evaluate_part(self.runner, self.model, paths, self.labels, batch_size=batch_size, workers=1,
                               crop_pct=crop_pct, interpolation=interpolation)
        return self.index, result


def _ready(ray, actors) -> list[dict]:
    try:
        descriptions = ray.get([actor.describe.remote() for actor in actors])
    except Exception as exc:  # noqa: BLE001 - an actor died starting
        raise _unwrap(exc) from None
    for description in descriptions:
        if "error" in description:
            raise type(description["error"])(str(description["error"]))
    return descriptions


def _chunks(paths: list[str], workers: int, batch: int) -> list[list[str]]:
    """At least CHUNKS_PER_WORKER chunks per worker, each a whole number of batches (at most MAX_CHUNK_BATCHES)."""
    if not paths:
        return []
    batches = math.ceil(len(paths) / batch)
    per_chunk = min(MAX_CHUNK_BATCHES, max(1, math.ceil(batches / (workers * CHUNKS_PER_WORKER)))) * batch
    return [paths[i:i + per_chunk] for i in range(0, len(paths), per_chunk)]


def _join(parts: list, description: dict):
    """One actor's chunk results as one EvalResult."""
    from lvvit_opt.measure.evaluate import EvalResult
    from lvvit_opt.data.scoring import score_predictions

    predictions, failed = {}, {}
    for part in parts:
        predictions.update(part.predictions)
        failed.update(part.failed)
    first = parts[0] if parts else None
    return EvalResult(
        model=first.model if first else "", accuracy=score_predictions({}, {}),
        images=sum(p.images for p in parts), inferred=sum(p.inferred for p in parts), failed=failed,
        batch_size=first.batch_size if first else 0, batches=sum(p.batches for p in parts), workers=1,
        wall_s=sum(p.wall_s for p in parts), infer_s=sum(p.infer_s for p in parts),
        runner={**description["runner"], "node": description["node"], "pid": description["pid"],
                "npu": description["npu"]},
        notes=sorted({n for p in parts for n in p.notes}), predictions=predictions,
        preprocessing=first.preprocessing if first else "")


def _name(index: int, description: dict) -> str:
    where = f"node {description['node']}" + (f", NPU {','.join(description['npu'])}" if description["npu"] else "")
    return f"ray worker {index} ({where})"


def _unwrap(exc: BaseException) -> LvvitOptError:
    """A Ray task/actor error as the error its code raised (same kind, one line)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, LvvitOptError):
        return type(cause)(str(cause))
    text = str(cause or exc).strip().splitlines()
    return ToolFailed(f"a Ray worker failed: {text[-1][:300] if text else type(exc).__name__}")
