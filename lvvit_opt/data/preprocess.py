"""ImageNet val images -> one float32 NCHW `<stem>.bin` each, byte-identical to the seed.

Parallel (a process pool), resumable (a `.bin` of the right size is kept and skipped),
never leaves a partial file (each worker writes a temporary name and renames it), keeps
going past a corrupt image (reported by name and counted).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from lvvit_opt.core.errors import UserError
from lvvit_opt.core import fileio
from lvvit_opt.core.fileio import pid_alive, sweep_stale_temps, write_text_atomic
from lvvit_opt.core.resources import require_memory
from lvvit_opt.data import images
from lvvit_opt.data.images import default_workers, describe_error, image_stem, init_worker, list_images, worker_pool
from lvvit_opt.data.info import write_info_file
from lvvit_opt.data.transform import AippSource, EvalTransform

PARTIAL_MARK = ".partial-"
SETTINGS_FILE = ".lvvit-preprocess.json"
ProgressFn = Callable[[int, int], None]


@dataclass
class PreprocessResult:
    """What one `preprocess_dir` run did."""

    src_dir: str
    out_dir: str
    images: int                     # image files found
    written: int                    # .bin files written by this run
    skipped: int                    # complete .bin files already there (resumed)
    failed: dict[str, str] = field(default_factory=dict)  # image name -> why
    outputs: list[str] = field(default_factory=list)      # every good .bin, in image order
    info_file: str | None = None
    workers: int = 1
    seconds: float = 0.0
    transform: dict = field(default_factory=dict)
    shard: dict | None = None       # with --shard: which shard, how many images were listed before it
    layout: str = ""                # what each .bin holds: dtype, layout, shape

    @property
    def images_per_s(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("outputs")
        data["output_count"] = len(self.outputs)
        if data["shard"] is None:
            data.pop("shard")
        data["images_per_s"] = round(self.images_per_s, 2)
        return data

    def summary(self) -> str:
        lines = [f"preprocessed {self.images} images into {self.out_dir} ({self.layout}): {self.written} written, "
                 f"{self.skipped} already complete, {len(self.failed)} failed "
                 f"({self.images_per_s:.1f} images/s with {self.workers} workers)"]
        lines += [f"  failed: {name}: {why}" for name, why in self.failed.items()]
        if self.info_file:
            lines.append(f"info file: {self.info_file} ({len(self.outputs)} lines)")
        return "\n".join(lines)


def preprocess_dir(src_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                   transform: EvalTransform | AippSource | None = None, workers: int | None = None,
                   info_file: str | os.PathLike | None = None, limit: int | None = None,
                   progress: ProgressFn | None = None, shard=None) -> PreprocessResult:
    """Write `<out_dir>/<stem>.bin` (float32, 3×S×S; uint8 R×R×3 for an AippSource) for every image in `src_dir`.

    Images are processed in name order; outputs that already exist with the right size are
    skipped, so an interrupted run resumes. `progress(done, total)` is called as images
    finish. With `info_file`, the legacy benchmark's info file is written for the good outputs.
    `shard` (data.shard.Shard): only the images of that shard (the info file lists those).
    """
    transform = transform or EvalTransform()
    workers = workers or default_workers()
    paths = list_images(src_dir, limit=limit)
    listed = len(paths)
    if shard is not None:
        paths = shard.select(paths, key=lambda p: p.name)
    out = Path(out_dir)
    if info_file and any(c.isspace() for c in str(out)):
        raise UserError(f"{out}: the benchmark's info file cannot hold paths with spaces; pick another directory")
    if out.resolve() == Path(src_dir).resolve():
        raise UserError("the output directory must differ from the image directory")
    require_memory(transform.memory_per_image() * workers, f"--img-size {transform.img_size} with {workers} workers")
    if isinstance(transform, AippSource):  # the settings file names the dtype and layout (check_settings)
        result_note = f"uint8 NHWC {list(transform.output_shape)} RGB for static AIPP (crop at {transform.start})"
    else:
        result_note = f"float32 NCHW {list(transform.output_shape)}"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out}: cannot create the output directory ({exc.strerror})") from None
    check_settings(out, transform)
    remove_partial_files(out)

    result = PreprocessResult(str(src_dir), str(out), images=len(paths), written=0, skipped=0,
                              workers=workers, transform=asdict(transform), layout=result_note)
    if shard is not None:
        result.shard = {"kind": "preprocess", **shard.to_dict(), "listed_before_sharding": listed}
    targets = [out / f"{image_stem(p.name)}.bin" for p in paths]
    todo = [(str(p), str(t)) for p, t in zip(paths, targets) if not _is_complete(t, transform.output_nbytes)]
    result.skipped = len(paths) - len(todo)
    start = time.perf_counter()
    try:
        failed = dict(_run_tasks(todo, transform, workers, result, progress))
    finally:
        remove_partial_files(out)  # temporaries of workers killed mid-write (Ctrl-C, SIGTERM)
    result.seconds = time.perf_counter() - start
    result.failed = {Path(p).name: why for p, why in failed.items()}
    failed_targets = {str(t) for p, t in todo if p in failed}
    result.outputs = [str(t) for t in targets if str(t) not in failed_targets]
    if info_file:
        write_info_file(info_file, result.outputs, width=transform.img_size, height=transform.img_size)
        result.info_file = str(info_file)
    return result


def _run_tasks(todo: list[tuple[str, str]], transform: EvalTransform, workers: int,
               result: PreprocessResult, progress: ProgressFn | None):
    """Run the tasks (in a pool when it pays); yield (image path, error) for failures."""
    done = result.skipped
    total = result.images
    if progress:
        progress(done, total)
    if not todo:
        return
    if workers == 1 or len(todo) < 4:
        init_worker(transform)
        outcomes = map(_write_one, todo)
        pool = None
    else:
        pool = worker_pool(workers, init_worker, (transform,))
        chunk = max(1, min(16, len(todo) // (workers * 8)))
        outcomes = pool.imap(_write_one, todo, chunksize=chunk)
    try:
        for src, error, fatal in outcomes:
            if fatal:  # disk full, quota, a read-only folder: no later image can be written either
                raise UserError(f"{fatal} ({result.written} of {len(todo)} images written before it; those "
                                f".bin files are complete and no partial one is left: rerun to resume once "
                                f"there is room)")
            done += 1
            if error is None:
                result.written += 1
            else:
                yield src, error
            if progress:
                progress(done, total)
    finally:
        if pool is not None:
            pool.terminate()  # SIGTERM: each worker removes its temporary file as it exits
            pool.join()


def _write_one(task: tuple[str, str]) -> tuple[str, str | None, str | None]:
    """Worker task: preprocess one image into its .bin via a temporary file + rename.
    Returns (image, why it could not be read, why nothing more can be written)."""
    src, dest = task
    try:
        tensor = images.worker_transform()(src)
    except Exception as exc:
        return src, describe_error(exc), None
    try:
        with fileio.atomic_path(dest, suffix=".bin") as tmp:  # SIGTERM/Ctrl-C/an error: the temp is removed
            tensor.tofile(tmp)
    except UserError as exc:  # atomic_path's one-line account of a disk that is full or read-only
        return src, None, str(exc)
    except OSError as exc:  # told as a message: an exception from a pool worker may not unpickle
        return src, None, f"cannot write {dest}: {exc.strerror or exc}"
    return src, None, None


def _is_complete(path: Path, nbytes: int) -> bool:
    try:
        return path.stat().st_size == nbytes
    except FileNotFoundError:
        return False


def check_settings(out_dir: Path, transform: EvalTransform) -> None:
    """Record the transform in OUT_DIR/SETTINGS_FILE; refuse to resume with different settings
    (the existing .bin files would silently mix two transforms)."""
    wanted = json.dumps(asdict(transform), sort_keys=True)
    marker = out_dir / SETTINGS_FILE
    if marker.exists():
        found = marker.read_text(encoding="utf-8", errors="replace").strip()
        try:
            json.loads(found)
        except ValueError:
            raise UserError(f"{marker}: the resume record of an earlier preprocess run is corrupt; delete it "
                            f"(and the .bin files, if in doubt) or use a new output directory") from None
        if found != wanted:
            raise UserError(f"{out_dir} holds .bin files made with other settings ({found}); "
                            f"use a new output directory or delete it")
    elif any(out_dir.glob("*.bin")):
        raise UserError(f"{out_dir} already holds .bin files not made by lvvit-opt preprocess; "
                        f"use a new output directory")
    else:
        write_text_atomic(marker, wanted + "\n")


def remove_partial_files(out_dir: Path) -> int:
    """Delete temporaries a killed run left behind: ours (fileio naming) and the older
    `.<stem>.bin.partial-<pid>` ones, whose writer is dead. A concurrent run's are kept."""
    removed = sweep_stale_temps(out_dir)
    for leftover in out_dir.glob(f".*.bin{PARTIAL_MARK}*"):
        pid = leftover.name.rsplit(PARTIAL_MARK, 1)[1]
        if pid.isdigit() and pid_alive(int(pid)):
            continue
        leftover.unlink(missing_ok=True)
        removed += 1
    return removed


def read_uint8_bin(path: str | os.PathLike, src: int) -> np.ndarray:
    """Load one `preprocess --uint8` `.bin` back as uint8 (src, src, 3)."""
    return np.fromfile(path, dtype=np.uint8).reshape(src, src, 3)


def read_bin(path: str | os.PathLike, img_size: int = 224) -> np.ndarray:
    """Load one preprocessed `.bin` back as float32 (3, img_size, img_size)."""
    return np.fromfile(path, dtype=np.float32).reshape(3, img_size, img_size)
