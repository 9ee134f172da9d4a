"""`lvvit-opt preprocess | postprocess | eval`: the ImageNet accuracy pipeline (thin layer); eval
picks one process, `--device` or Ray through lvvit_opt.scale.evaluate_any (it may import data and scale)."""
from __future__ import annotations

import logging
import os
import re

import click

from lvvit_opt.core.errors import ValidationFailed
from lvvit_opt.core.progress import counter
from lvvit_opt.cli._base import handle_errors, main
from lvvit_opt.cli.output import echo, emit_result, json_file, json_option, warn_random_weights
from lvvit_opt.cli.types import (BATCH_SIZE, FRACTION, IMAGES, MODEL_NAME, THREADS, WORKERS, ModelFile,
                                 img_size_type, runner_backend_option)

log = logging.getLogger("lvvit_opt.merge")
logger = logging.getLogger(__name__)

INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "lanczos", "box", "hamming")


class _ShardType(click.ParamType):
    name = "K/N"

    def convert(self, value, param, ctx):
        from lvvit_opt.data.shard import Shard, parse_shard
        from lvvit_opt.core.errors import UserError

        if isinstance(value, Shard):
            return value
        try:
            return parse_shard(value)
        except UserError as exc:
            self.fail(str(exc), param, ctx)


def _shard_option(fn):
    return click.option(
        "--shard", type=_ShardType(), default=None,
        help="Only shard K of N (K from 1): an image belongs to shard 1 + sha256(file name stem) mod N, so "
             "every host and verb agrees without a shared list. With --json the result carries what "
             "`lvvit-opt merge` needs.")(fn)


def _warn_unkept_shard(shard, json_out) -> None:
    if shard is not None and not json_out:
        logger.warning(f"shard {shard} without --json: nothing is kept for `lvvit-opt merge`")


def _transform_options(fn):
    fn = click.option("--model-name", type=MODEL_NAME, default=None,
                      help="Take crop_pct and interpolation from this LV-ViT's configuration (lvvit_t/s: 0.9, "
                           "lvvit_m/l: 1.0, bicubic), for a model without lvvit-opt metadata (an .om, an older "
                           "export). [default: the LV-ViT name the model file's name starts with]")(fn)
    fn = click.option("--interpolation", type=click.Choice(INTERPOLATIONS), default=None,
                      help="Resize filter [default: the model's metadata, else its LV-ViT config "
                           "(--model-name), else bicubic].")(fn)
    fn = click.option("--crop-pct", type=FRACTION, default=None,
                      help="Resize the shorter side to floor(img_size / crop_pct), then center-crop "
                           "(0.9 -> 248 then 224) [default: the model's metadata (lvvit_m/l and CaiT 1.0, DeiT 0.9, "
                           "CrossViT 0.875, ...), else its LV-ViT config (--model-name), else 0.9].")(fn)
    return fn


def _lvvit_name_of(path: str | None) -> str | None:
    """The LV-ViT config a file is named after (lvvit_m_bs16_opt.om -> lvvit_m), if any."""
    if not path:
        return None
    from lvvit_opt.models.model import CONFIGS

    stem = os.path.basename(str(path)).lower()
    names = [n for n in CONFIGS if re.match(rf"{re.escape(n)}(?![a-z0-9])", stem)]
    return max(names, key=len) if names else None


def resolve_transform(crop_pct: float | None, interpolation: str | None, model_name: str | None,
                      model_path: str | None = None) -> tuple[float, str, str]:
    """(crop_pct, interpolation, where they came from). Explicit options win; then --model-name's
    LV-ViT configuration; then the preprocessing recorded in MODEL's metadata (or, for an .om,
    in the ONNX beside it: data.transform); then the LV-ViT configuration MODEL's file name
    starts with (`run` names files lvvit_m_bs16.onnx); else LV-ViT-S's 0.9 / bicubic."""
    from lvvit_opt.core.errors import UserError

    if crop_pct is not None and interpolation is not None:
        return _chosen(crop_pct, interpolation, "given")
    if model_name is None and model_path is not None and os.path.isfile(model_path):
        from lvvit_opt.data.transform import eval_transform_for

        # the model's metadata, or for an .om that of the ONNX beside it
        recorded, source = eval_transform_for(model_path, crop_pct=crop_pct, interpolation=interpolation)
        if source.startswith("model metadata"):
            return _chosen(recorded.crop_pct, recorded.interpolation, source)
    name, source = model_name, "--model-name"
    if name is None:
        name, source = _lvvit_name_of(model_path), "the model's file name"
    config = None
    if name is not None:
        from lvvit_opt.models.model import CONFIGS, default_cfg

        if name in CONFIGS:
            config = default_cfg(name)
        elif model_name is not None:
            raise UserError(f"--model-name {name!r}: no eval configuration known for it (LV-ViT names: "
                            f"{', '.join(CONFIGS)}); give --crop-pct and --interpolation instead")
    from lvvit_opt.data.transform import EvalTransform

    defaults = EvalTransform()
    chosen_crop = crop_pct if crop_pct is not None else config["crop_pct"] if config else defaults.crop_pct
    chosen_interp = (interpolation if interpolation is not None else config["interpolation"] if config
                     else defaults.interpolation)
    origin = f"{name} configuration (from {source})" if config else "default (LV-ViT-S)"
    return _chosen(chosen_crop, chosen_interp, origin)


def _chosen(crop_pct: float, interpolation: str, origin: str) -> tuple[float, str, str]:
    logger.info(f"eval transform: crop_pct {crop_pct:g}, {interpolation} ({origin})")
    return crop_pct, interpolation, origin


@main.command("preprocess")
@click.argument("src_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--workers", type=WORKERS, default=None,
              help="Worker processes [default: one per CPU].")
@click.option("--info", "info_file", type=click.Path(dir_okay=False), default=None,
              help="Also write the legacy benchmark's info file (`index path width height`).")
@click.option("--model", "model_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="ONNX model exported by lvvit-opt: take input size, crop_pct, interpolation, mean and std "
                   "from its metadata (explicit flags still win).")
@click.option("--img-size", type=img_size_type(1), default=None,
              help="Crop size [default: the model's metadata, else 224].")
@_transform_options
@click.option("--uint8", "uint8", is_flag=True,
              help="For an .om compiled with `atc --aipp`: resized, not normalised uint8 NHWC RGB squares of the "
                   "resize size (floor(img_size/crop_pct)), 4x fewer bytes per pixel; the chip crops and "
                   "normalises. The info file lists that size.")
@click.option("--limit", type=IMAGES, default=None, help="Only the first N images (by name).")
@_shard_option
@json_option
@handle_errors
def preprocess_command(src_dir, out_dir, workers, info_file, model_file, img_size, crop_pct, interpolation,
                       uint8, model_name, limit, shard, json_out):
    """Turn ImageNet val images into float32 NCHW `<stem>.bin` files for the benchmark tools.

    Byte-identical to the manual guide's LV_Vit_preprocess.py (timm eval transform: shorter side to
    floor(img_size/crop_pct) bicubic, center crop, ImageNet mean/std), but parallel and
    resumable: re-running skips complete outputs, and no partial file is ever left. A
    corrupt image is reported by name and the rest continue (exit status 1 at the end).

    \b
    Example:
      lvvit-opt preprocess /data/imagenet/val prep_bin --info lvvit_prep_bin.info
    """
    from lvvit_opt.data import preprocess_dir
    from lvvit_opt.data.transform import eval_transform_for
    from lvvit_opt.cli.output import start_plan

    start_plan(reads={"SRC_DIR": src_dir, "--model": model_file}, writes={"--info": info_file, "--json": json_file(json_out)}, folders={"OUT_DIR": out_dir})
    if model_name is not None or model_file is not None:
        crop_pct, interpolation, _ = resolve_transform(crop_pct, interpolation, model_name, model_file)
    transform, source = eval_transform_for(model_file, img_size=img_size, crop_pct=crop_pct,
                                           interpolation=interpolation)
    echo(f"transform from {source}: {transform.img_size} px, crop_pct {transform.crop_pct}, "
         f"{transform.interpolation}, mean {transform.mean}, std {transform.std}")
    if uint8:
        from lvvit_opt.data.transform import AippSource

        transform = AippSource(transform)
        echo(f"--uint8: writing uint8 NHWC {transform.src}x{transform.src}x3 (resized, not normalised); the AIPP "
             f"config crops {transform.base.img_size} at ({transform.start}, {transform.start})")
    _warn_unkept_shard(shard, json_out)
    with counter("preprocess", unit="img") as progress:
        result = preprocess_dir(src_dir, out_dir, transform=transform, workers=workers, info_file=info_file,
                                limit=limit, progress=progress, shard=shard)
    echo(result.summary())
    emit_result(result.to_dict(), ok=not result.failed)
    if result.failed:
        raise ValidationFailed(f"{len(result.failed)} of {result.images} images could not be read (listed above); "
                               f"the other outputs are complete")


@main.command("postprocess")
@click.argument("result_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--labels", required=True, type=click.Path(exists=True, dir_okay=False),
              help="ImageNet val.txt: `<image file name> <class index>` a line.")
@click.option("--dtype", type=click.Choice(["float32", "float16", "float64"]), default="float32", show_default=True,
              help="Element type of .bin outputs.")
@_shard_option
@json_option
@handle_errors
def postprocess_command(result_dir, labels, dtype, shard, json_out):
    """Top-1/top-5 accuracy from benchmark or ais_bench outputs.

    Reads `<stem>_1.txt` / `<stem>_1.bin` (legacy benchmark, e.g. result/dumpOutput_device0)
    or `<stem>_0.bin` / `<stem>_0.npy` (ais_bench; its `<timestamp>/` folder is found
    automatically) and pairs each with the label of the image of the same stem, never by
    file order. Outputs without a label and labels without an output are counted.

    \b
    Example:
      lvvit-opt postprocess result/dumpOutput_device0 --labels val.txt
    """
    from lvvit_opt.data import postprocess
    from lvvit_opt.cli.output import start_plan

    start_plan(reads={"RESULT_DIR": result_dir, "--labels": labels}, writes={"--json": json_file(json_out)})
    _warn_unkept_shard(shard, json_out)
    result = postprocess(result_dir, labels, dtype=dtype, shard=shard)
    echo(result.summary())
    emit_result(result.to_dict(), ok=not result.unreadable)
    if result.unreadable:  # the rule of preprocess and eval: the rest is scored, the exit status says some were lost
        raise ValidationFailed(f"{len(result.unreadable)} output file(s) could not be used (listed above); "
                               f"the accuracy covers the other {result.evaluated}")


@main.command("eval")
@click.argument("model", type=ModelFile(exists=True))
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Directory of ImageNet val images (flat, as distributed).")
@click.option("--labels", required=True, type=click.Path(exists=True, dir_okay=False), help="ImageNet val.txt.")
@click.option("--batch-size", type=BATCH_SIZE, default=16, show_default=True,
              help="For dynamic-batch models; a model with a fixed batch (every .om) runs at its own.")
@click.option("--workers", type=WORKERS, default=None,
              help="Decoding processes [default: one per CPU].")
@click.option("--limit", type=IMAGES, default=None, help="Only the first N images (by name).")
@_transform_options
@click.option("--threads", type=THREADS, default=None,
              help="onnxruntime intra-op threads [default: onnxruntime's].")
@runner_backend_option("MODEL", " by name (the same choices as validate --backend).")
@_shard_option
@click.option("--device", "devices", default=None, metavar="0,1,2,3",
              help="One process and runner per device id, the images split evenly across them, predictions merged "
                   "(for .onnx on CPU the ids only name the processes).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this process (or one per --device); ray: Ray actors, one runner each "
                   "(pip install 'lvvit-opt[ray]'; .om workers take one Ray NPU each).")
@click.option("--address", default=None, help="Ray cluster address for --engine ray (default: a local Ray).")
@click.option("--ray-workers", type=WORKERS, default=None,
              help="Ray actors to start [default: one per --threads CPUs (or per NPU) the cluster has].")
@json_option
@handle_errors
def eval_command(model, data_dir, labels, batch_size, workers, limit, crop_pct, interpolation, model_name, threads,
                 backend, shard, devices, engine, address, ray_workers, json_out):
    """Stream ImageNet val through MODEL (.onnx or .om) and print top-1/top-5.

    Decoding and preprocessing run in worker processes while the model infers; no
    intermediate files. Prints images/s end to end and inference only. --device, --shard and
    --engine ray spread the work over chips, hosts or a Ray cluster; top-1/top-5 stay exact.

    \b
    Example:
      lvvit-opt eval model_bs16.onnx --data /data/imagenet/val --labels val.txt
      lvvit-opt eval model_bs16.om --data val --labels val.txt --device 0,1,2,3
      lvvit-opt eval model_bs16.onnx --data val --labels val.txt --engine ray --address auto
    """
    from lvvit_opt.cli.output import start_plan
    from lvvit_opt.core.resources import threads_per_process
    from lvvit_opt.scale import evaluate_any, parse_devices

    start_plan(reads={"MODEL": model, "--data": data_dir, "--labels": labels}, writes={"--json": json_file(json_out)})
    warn_random_weights(model)
    crop_pct, interpolation, origin = resolve_transform(crop_pct, interpolation, model_name, model)
    devices = parse_devices(devices) if devices is not None else None
    if devices and str(model).lower().endswith(".onnx"):
        threads = threads_per_process(threads, len(devices))
    options = {"threads": threads} if threads and str(model).lower().endswith(".onnx") else {}
    if backend != "auto":  # the registry refuses a backend that cannot open MODEL, before any decoding
        options["backend"] = backend
    _warn_unkept_shard(shard, json_out)
    with counter("eval", unit="img") as progress:
        result = evaluate_any(model, data_dir, labels, batch_size=batch_size, workers=workers, limit=limit,
                              crop_pct=crop_pct, interpolation=interpolation, runner_options=options,
                              progress=progress, shard=shard, devices=devices, engine=engine,
                              ray_address=address, ray_workers=ray_workers)
    echo(result.summary())
    emit_result(dict(result.to_dict(), transform={"crop_pct": crop_pct, "interpolation": interpolation,
                                                  "source": origin}), ok=not result.failed)
    if result.failed:  # the same rule as preprocess: the rest is scored, the exit status says some were lost
        raise ValidationFailed(f"{len(result.failed)} of {result.images} images could not be read (listed above); "
                               f"the accuracy covers the other {result.inferred}")


@main.command("merge")
@click.argument("results", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--with-predictions", is_flag=True, help="Include every image's top-5 in the --json result.")
@json_option
@handle_errors
def merge_command(results, with_predictions, json_out):
    """Combine the --json results of `eval`, `postprocess` or `preprocess` run with --shard K/N.

    Prints top-1/top-5 of the union, equal to one unsharded run over the same images. Every
    shard 1..N must be given exactly once: a missing, duplicated or mismatched shard is an
    error naming it (exit 2). Shards may come from different hosts and engines. Images a
    shard could not read are listed and make the exit status 1, as in eval.

    \b
    Example:
      for k in 1 2 3 4; do lvvit-opt eval m.onnx --data val --labels val.txt --shard $k/4 --json s$k.json; done
      lvvit-opt merge s1.json s2.json s3.json s4.json --json merged.json
    """
    from lvvit_opt.data.shard import merge_results
    from lvvit_opt.cli.output import start_plan

    start_plan(reads={f"RESULT {r}": r for r in results}, writes={"--json": json_file(json_out)})
    merged = merge_results(list(results))
    for warning in merged.warnings:
        log.warning(warning)
    echo(merged.summary())
    lost = len(merged.failed) + (len(merged.accuracy.unreadable) if merged.accuracy else 0)
    emit_result(merged.to_dict(with_predictions=with_predictions), ok=not lost)
    if lost:  # as eval/postprocess/preprocess: the rest is merged, the exit status says some were lost
        raise ValidationFailed(f"{lost} image(s) or output(s) of the shards could not be used (listed above)")
