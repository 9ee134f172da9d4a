"""Every chip of a card at once: one process per device, each with its own runner.

An Ascend 310 card holds four chips; the seed's "per card" fps is one chip's figure times
four, an estimate. Here `bench --device 0,1,2,3` runs one runner per device concurrently
(ais_bench's InferSession or the legacy benchmark binary, each pinned to its device id;
separate processes, because an ACL context belongs to one process), measures each chip in
the same time window and reports the card total that was measured, with its spread, next
to the seed-style estimate (the first device measured alone, times the number of devices).
`eval --device ...` splits the image list evenly across the devices and merges the
predictions (data.evaluate.combine_eval_parts).

Processes are started with "spawn": the parent may already run onnxruntime threads, and
neither they nor an ACL context survive a fork.

This module owns the per-device processes; it reaches bench and evaluate only through their
public functions and worker entry points (bench.BenchWorker, data.evaluate.evaluate_part).
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import queue as queue_module
import statistics
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from lvvit_opt.data.images import signals_held, worker_signals
from lvvit_opt.core.errors import LvvitOptError, ToolFailed, UserError
from lvvit_opt.core.resources import threads_per_process

if TYPE_CHECKING:
    from lvvit_opt.measure.evaluate import EvalJob, EvalResult

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 900.0  # loading a model on a busy host; a dead sibling aborts the wait at once
POLL_S = 0.5
MAX_DEVICES = 64  # a process each: more than any Ascend host holds (8 cards x 4 chips), far fewer than a typo can ask


def parse_devices(text: str) -> list[int]:
    """'0,1,2,3' -> [0, 1, 2, 3]; UserError for an empty list, a negative id or a repeated one."""
    try:
        devices = [int(part) for part in str(text).replace(" ", "").split(",") if part != ""]
    except ValueError:
        raise UserError(f"--device {text!r}: expected comma-separated device ids, e.g. 0,1,2,3") from None
    if not devices:
        raise UserError(f"--device {text!r}: no device id given")
    if any(d < 0 for d in devices):
        raise UserError(f"--device {text!r}: device ids are 0 or more")
    if len(devices) > MAX_DEVICES:
        raise UserError(f"--device: {len(devices)} devices; at most {MAX_DEVICES} (one process each)")
    repeated = sorted({d for d in devices if devices.count(d) > 1})
    if repeated:
        raise UserError(f"--device {text!r}: device {', '.join(map(str, repeated))} given more than once")
    return devices


# -- running one process per device -------------------------------------------------------

def run_per_device(target: Callable, devices: Sequence[int], args: tuple,
                   on_progress: Callable[[int, object], None] | None = None) -> dict[int, object]:
    """Run target(device, *args, barrier, messages) in one spawned process per device.

    The target sends ("progress", device, payload), then ("result", device, payload) or
    ("error", device, exception) on `messages`; it waits on `barrier` (one party per device)
    wherever the devices must start together. Returns {device: result payload}. The first
    error (or a process that died without a word) aborts the barrier, so no sibling waits
    forever, and is raised here as the same kind of error, naming the device.
    """
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    barrier = context.Barrier(len(devices))
    processes = {d: context.Process(target=_child, args=(target, d, *args, barrier, messages),
                                    name=f"lvvit-opt-device{d}", daemon=False) for d in devices}
    results: dict[int, object] = {}
    errors: dict[int, BaseException] = {}
    started = []  # a signal may arrive between two starts: only these can be stopped and joined
    try:
        for process in processes.values():
            with signals_held():
                process.start()
                started.append(process)
        while len(results) + len(errors) < len(processes):
            try:
                kind, device, payload = messages.get(timeout=POLL_S)
            except queue_module.Empty:
                _check_alive(processes, results, errors, messages, barrier)
                continue
            if kind == "progress":
                if on_progress:
                    on_progress(device, payload)
            elif kind == "result":
                results[device] = payload
            else:
                errors[device] = payload
                barrier.abort()
    except BaseException:  # Ctrl-C, SIGTERM: stop the devices now, not after their work
        for process in started:
            if process.is_alive():
                process.terminate()
        raise
    finally:
        for process in started:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
                process.join()
    if errors:
        raise _first_error(errors)
    return results


def _child(target: Callable, *args) -> None:
    """A device process: quiet on Ctrl-C/SIGTERM, dies with the parent, then the target."""
    worker_signals()
    target(*args)


def _check_alive(processes, results, errors, messages, barrier) -> None:
    for device, process in processes.items():
        if device in results or device in errors or process.is_alive():
            continue
        time.sleep(POLL_S)  # its last message may still be in the pipe
        if messages.empty():
            errors[device] = ToolFailed(f"the process of device {device} died (exit code {process.exitcode})")
            barrier.abort()


def _first_error(errors: dict[int, BaseException]) -> BaseException:
    """A real failure rather than a sibling's broken barrier, as the same kind of error naming the device."""
    device, exc = min(errors.items(), key=lambda item: (isinstance(item[1], _Aborted), item[0]))
    kind = type(exc) if isinstance(exc, LvvitOptError) and not isinstance(exc, _Aborted) else ToolFailed
    return kind(f"device {device}: {exc}")


class _Aborted(ToolFailed):
    """A sibling process failed, so this one stopped waiting for it."""


def report_failure(device: int, messages, barrier, exc: BaseException) -> None:
    """Child side: send the error (picklable, one line) and release the siblings."""
    import threading

    if isinstance(exc, threading.BrokenBarrierError):
        exc = _Aborted("stopped: another device failed")
    elif not isinstance(exc, LvvitOptError):
        log.debug("device %s failed:\n%s", device, traceback.format_exc())
        exc = ToolFailed(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}")
    barrier.abort()
    messages.put(("error", device, exc))


# -- bench --------------------------------------------------------------------------------

def bench_on_devices(entries: list, batch: int, devices: Sequence[int], duration: float, rounds: int,
                     warmup: float, threads: int | None, providers, log_fn=print, graph_opt: str | None = None) -> list:
    """Measure each (name, path, kind, position) entry on every device at once.

    Per model: the first device alone for one slot (the seed-style estimate: that figure x
    the number of devices), then `rounds` slots with all devices running together (A on all
    devices, then B on all, ... so models stay interleaved). Returns one BenchResult per
    model whose fps is the measured card total (the sum of what each device measured in the
    same window) and whose details list every device. graph_opt: onnxruntime's level for every
    device process's sessions (None: onnxruntime's default).
    """
    from lvvit_opt.measure.bench import with_ratios

    slot = duration / max(1, rounds * len(entries))
    log_fn(f"batch {batch}: {len(entries)} model(s) on devices {','.join(map(str, devices))} at once: "
           f"1 solo slot on device {devices[0]}, then {rounds} rounds x {slot:.2f} s")
    per_device = run_per_device(_bench_child, devices, (devices[0], entries, batch, slot, rounds, warmup,
                                                       threads_per_process(threads, len(devices)), providers,
                                                       graph_opt))
    results = [_card_result(i, entry, batch, devices, per_device) for i, entry in enumerate(entries)]
    return with_ratios(results)


class DeviceBench:
    """bench_models' scale_out for `bench --device`: each batch size measured on every device at once."""

    def __init__(self, devices: Sequence[int]) -> None:
        self.devices = list(devices)
        self.processes = len(self.devices)
        self.settings = {"devices": list(self.devices)}

    def __call__(self, entries: list, batch: int, duration: float, rounds: int, warmup: float,
                 threads: int | None, providers, log, *, graph_opt: str | None = None) -> list:
        return bench_on_devices(entries, batch, self.devices, duration, rounds, warmup, threads, providers, log,
                                graph_opt)


def _bench_child(device, first_device, entries, batch, slot, rounds, warmup, threads, providers, graph_opt,
                 barrier, messages) -> None:
    from lvvit_opt.measure.bench import BenchWorker

    worker = None
    try:
        worker = BenchWorker(entries, batch, threads, providers, device, graph_opt)
        worker.warm_up(warmup)
        barrier.wait(READY_TIMEOUT_S)
        solo = []
        for index in range(len(entries)):
            barrier.wait()
            if device == first_device:
                spent, count = worker.slot(index, slot, [])
                solo.append(batch * count / spent)
            barrier.wait()
        from lvvit_opt.measure.stats import rotation

        measured = [{"latencies": [], "rounds": []} for _ in entries]
        for _round in range(rounds):
            for index in rotation(len(entries), _round):  # every device in the same, rotating order
                record = measured[index]
                barrier.wait()
                begin = time.monotonic()
                spent, count = worker.slot(index, slot, record["latencies"])
                record["rounds"].append({"images": batch * count, "spent_s": spent, "begin": begin,
                                         "end": time.monotonic()})
        messages.put(("result", device, {"solo_fps": solo, "measured": measured, "details": worker.describe(),
                                         "pid": os.getpid()}))
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
        report_failure(device, messages, barrier, exc)
    finally:
        if worker is not None:
            worker.close()


def _card_result(index: int, entry, batch: int, devices: Sequence[int], per_device: dict):
    from lvvit_opt.measure.bench import BenchResult

    name, _, kind, position = entry
    device_rows, latencies = [], []
    round_totals = [0.0] * len(per_device[devices[0]]["measured"][index]["rounds"])
    for device in devices:
        record = per_device[device]["measured"][index]
        round_fps = [r["images"] / r["spent_s"] for r in record["rounds"]]
        fps = batch * len(record["latencies"]) / float(np.sum(record["latencies"]))
        round_totals = [t + f for t, f in zip(round_totals, round_fps)]
        latencies += record["latencies"]
        describe = per_device[device]["details"][index]
        device_rows.append({"device": device, "device_id": describe.get("device_id"), "fps": fps, "round_fps": round_fps, "pid": per_device[device]["pid"],
                            "iterations": len(record["latencies"]),
                            "latency_median_ms": float(np.median(record["latencies"]) * 1000.0),
                            "backend": describe.get("backend", kind), "timing": describe.get("timing")})
    card_fps = sum(row["fps"] for row in device_rows)
    fps_values = [row["fps"] for row in device_rows]
    solo = per_device[devices[0]]["solo_fps"][index]
    card = {"devices": devices, "measured_fps": card_fps, "wall_fps": _wall_fps(per_device, devices, index),
            "device_spread_pct": 100.0 * (max(fps_values) - min(fps_values)) / statistics.median(fps_values),
            "estimate_fps": solo * len(devices), "estimate_from": f"device {devices[0]} alone x {len(devices)}",
            "solo_fps": solo}
    lat_ms = np.asarray(latencies) * 1000.0
    median_total = statistics.median(round_totals)
    details = dict(per_device[devices[0]]["details"][index], device_id=None)
    details.pop("chips", None)  # the card total is measured here, not multiplied
    return BenchResult(
        model=name, batch_size=batch, backend=details.get("backend", kind), fps=card_fps,
        latency_median_ms=float(np.median(lat_ms)), latency_p90_ms=float(np.percentile(lat_ms, 90)),
        round_fps=round_totals, iterations=len(latencies),
        fps_spread_pct=100.0 * (max(round_totals) - min(round_totals)) / median_total if median_total else 0.0,
        details={**details, "card": card, "per_device": device_rows}, position=position)


def _wall_fps(per_device: dict, devices: Sequence[int], index: int) -> float:
    """All devices' images over the wall-clock windows they ran in together (host overheads included)."""
    rounds = len(per_device[devices[0]]["measured"][index]["rounds"])
    images = seconds = 0.0
    for r in range(rounds):
        slots = [per_device[d]["measured"][index]["rounds"][r] for d in devices]
        images += sum(s["images"] for s in slots)
        seconds += max(s["end"] for s in slots) - min(s["begin"] for s in slots)
    return images / seconds if seconds > 0 else 0.0


# -- eval ---------------------------------------------------------------------------------

def split_evenly(paths: Sequence[Path], parts: int) -> list[list[Path]]:
    """Striding over the sorted list: part i holds images i, i+parts, ... (sizes differ by at most one)."""
    return [list(paths[i::parts]) for i in range(parts)]


def evaluate_on_devices(model: str, paths: list[Path], devices: Sequence[int], *, batch_size: int,
                        workers: int, crop_pct: float, interpolation: str, runner_options: dict,
                        labels: dict[str, int] | None = None, progress=None) -> list:
    """The images split evenly over `devices`, one process (and runner) each; returns one
    EvalResult per device (the caller scores the union of predictions; `labels` are sent
    so that each process checks them against its model's classes before decoding)."""
    total = len(paths)
    done: dict[int, int] = {}

    def on_progress(device, count):
        done[device] = count
        if progress:
            progress(sum(done.values()), total)

    per_device = max(1, workers // len(devices))
    groups = dict(zip(devices, split_evenly(paths, len(devices))))
    parts = run_per_device(_eval_child, devices, (model, groups, batch_size, per_device, crop_pct, interpolation,
                                                  dict(runner_options), dict(labels or {})), on_progress)
    return [parts[d] for d in devices]


def run_eval_on_devices(job: EvalJob, devices: Sequence[int]) -> EvalResult:
    """evaluate's scale_out for `eval --device`: the job's images over `devices`, merged as one result."""
    from lvvit_opt.measure.evaluate import combine_eval_parts

    parts = evaluate_on_devices(job.model, job.paths, devices, batch_size=job.batch_size, workers=job.workers,
                                crop_pct=job.crop_pct, interpolation=job.interpolation,
                                runner_options=job.runner_options, labels=job.labels, progress=job.progress)
    return combine_eval_parts(job.model, job.data_dir, parts, job.paths, job.labels, job.notes,
                              [f"device {d}" for d in devices])


def _eval_child(device, model, groups, batch_size, workers, crop_pct, interpolation, runner_options, labels,
                barrier, messages) -> None:
    from lvvit_opt.measure.evaluate import evaluate_part
    from lvvit_opt.runtime import open_runner

    runner = None
    try:
        runner = open_runner(model, shared={"device_id": device}, **dict(runner_options))
        barrier.wait(READY_TIMEOUT_S)  # all devices loaded: the clock starts together

        def progress(count, total):
            if count % 16 == 0 or count == total:
                messages.put(("progress", device, count))

        result = evaluate_part(runner, str(model), groups[device], labels, batch_size=batch_size, workers=workers,
                               crop_pct=crop_pct, interpolation=interpolation, progress=progress)
        result.runner = dict(result.runner, device_id=device, pid=os.getpid())
        messages.put(("result", device, result))
    except BaseException as exc:  # noqa: BLE001
        report_failure(device, messages, barrier, exc)
    finally:
        if runner is not None:
            runner.close()
