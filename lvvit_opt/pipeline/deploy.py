"""`run --aipp` / `run --batch-gears`: one deployment .om beside the before/after pair.

With --batch-gears the model is exported once more with a dynamic batch and compiled with
`--dynamic_batch_size` (one .om for every gear). The graph passes need static shapes
(softmax_transpose skips an attention block of unknown rank), so that .om is compiled from the
exported graph, not the rewritten one; the report says so. With --aipp the .om gets
`--insert_op_conf OUT/aipp.cfg`, written from the model's recorded preprocessing; the run also
writes uint8 `.bin` files of a few synthetic images (what `preprocess --uint8` writes) and
validates the CPU preview of AIPP against the float pipeline, with the error it measured.
The deployment .om is not benchmarked: the bench stage measures the before/after pair.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

PREVIEW_IMAGES = 4


def deploy_stage(options, models: dict, stages, out: Path, log, atc_found: bool) -> dict[str, Any]:
    """Export (gears), write aipp.cfg, compile or list the command, preview AIPP, write uint8 bins."""
    from lvvit_opt.ascend.atc import build_atc_command, compile_onnx, display_command, parse_batch_gears

    gears = parse_batch_gears(list(options.batch_gears)) if options.batch_gears else None
    result: dict[str, Any] = {"batch_gears": list(gears) if gears else None, "aipp": None}
    if gears:
        source = out / f"{options.model}_gears.onnx"
        params = {"model": options.model, "batch": max(gears), "seed": options.seed, "ema": options.ema,
                  "strict": options.strict, "checkpoint": options.checkpoint, "dynamic_batch": True}
        stages.run(f"export gears {','.join(map(str, gears))}", params,
                   [options.checkpoint] if options.checkpoint else [], [source],
                   lambda: _export_dynamic(options, source, max(gears), log))
        result["note"] = ("compiled from the exported graph: the passes need static shapes, so the geared .om "
                          "does not carry the rewrite (the before/after pair measures it)")
    else:
        biggest = max(models)
        source = models[biggest][1]  # the rewritten graph of the largest batch
    result["onnx"] = str(source)
    aipp_path = None
    if options.aipp:
        from lvvit_opt.ascend.aipp import aipp_for_model, check_aipp_shapes, write_aipp_config
        from lvvit_opt.ascend.atc import onnx_inputs

        config = aipp_for_model(source)
        check_aipp_shapes(config, onnx_inputs(source))
        aipp_path = out / "aipp.cfg"
        write_aipp_config(aipp_path, config)
        result["aipp"] = {"config": str(aipp_path), **config.to_dict()}
        result["aipp"]["preview"] = stages.run(
            "aipp preview", {"images": PREVIEW_IMAGES, "seed": options.seed}, [source, aipp_path], [],
            lambda: _preview(source, config, options.seed, log))
        result["aipp"]["bins"] = stages.run(
            "aipp uint8 bins", {"images": PREVIEW_IMAGES, "seed": options.seed}, [source],
            lambda r: r["outputs"], lambda: _uint8_bins(source, out, options.seed))
        log(f"[deploy] wrote {aipp_path}: the .om takes uint8 NHWC {config.input_shape()[1:]}")
    suffix = "_aipp" if options.aipp and not gears else ""
    prefix = (source.resolve().with_suffix("") if not suffix
              else source.resolve().with_name(source.stem + suffix))
    command_options = {"output": str(prefix), "batch_gears": gears,
                       "insert_op_conf": str(aipp_path.resolve()) if aipp_path else None}
    if not gears:
        command_options["batch_size"] = None
    from lvvit_opt.core.tensor_spec import input_specs

    chw = input_specs(source)[0].shape[1:]
    result["rows"] = _rows(gears or [max(models)], result["aipp"], 4 * chw[0] * chw[1] * chw[2])
    if not atc_found:
        soc = options.soc_version if options.soc_version != "auto" else "Ascend310"
        command = build_atc_command(source, soc_version=soc, log="error", **command_options)
        result.update(compiled=False, command=display_command(command))
        _append_command(out / "atc_commands.sh", result["command"])
        log(f"[deploy] atc not found: the command is in {out / 'atc_commands.sh'}")
        return result
    compiled = stages.run(
        f"atc deploy {prefix.name}", {"soc": options.soc_version, "cann": options.cann_home, **command_options},
        [source] + ([aipp_path] if aipp_path else []), lambda r: [r["om"]],
        lambda: _compile(source, options, command_options, compile_onnx, log))
    result.update(compiled=True, om=compiled["om"], command=display_command(compiled["command"]),
                  log=compiled["log"])
    return result


def _export_dynamic(options, path: Path, batch: int, log) -> dict:
    from lvvit_opt.export import export_onnx

    return export_onnx(path, model=options.model, checkpoint=options.checkpoint, batch_size=batch,
                       dynamic_batch=True, seed=options.seed, ema=options.ema, strict=options.strict,
                       log=log.child("  ")).to_dict()


def _compile(source: Path, options, command_options: dict, compile_onnx, log) -> dict:
    model = source.resolve()
    result = compile_onnx(model, soc_version=options.soc_version, cann_home=options.cann_home,
                          log_file=Path(command_options["output"] + ".atc.log"),
                          progress=lambda elapsed, line: None, cwd=model.parent, **command_options)
    log(f"  compiled {result.om_path} in {result.elapsed_s:.1f} s")
    return {"om": str(result.om_path), "log": str(result.log_path), "seconds": round(result.elapsed_s, 2),
            "command": result.command}


def _preview(source: Path, config, seed: int, log) -> dict:
    from lvvit_opt.debug.aipp_preview import preview_aipp
    from lvvit_opt.core.tensor_spec import input_specs

    batch = input_specs(source)[0].batch
    report = preview_aipp(source, config, count=batch or PREVIEW_IMAGES, seed=seed)
    worst = report.input_error.outputs[0]
    log(f"  AIPP preview vs float pipeline: input max_abs {worst.max_abs:.3g}, "
        f"{'PASS' if report.passed else 'FAIL'}")
    if not report.passed:
        from lvvit_opt.core.errors import ValidationFailed

        raise ValidationFailed(f"the AIPP preview of {source} disagrees with the float pipeline:\n{report.format()}")
    return {"passed": report.passed, "images": report.images, "input_max_abs": worst.max_abs,
            "input_mean_abs": worst.mean_abs, "input_cosine": worst.cosine,
            "outputs": [{"name": o.name, "max_abs": o.max_abs, "cosine": o.cosine} for o in report.outputs.outputs],
            "tolerance": report.outputs.tolerance.enforced(), "assumed": report.assumed}


def _uint8_bins(source: Path, out: Path, seed: int) -> dict:
    """uint8 .bin files of PREVIEW_IMAGES synthetic images, as `preprocess --uint8` writes them."""
    from lvvit_opt.data.preprocess import preprocess_dir
    from lvvit_opt.data.synthetic import make_image_dir
    from lvvit_opt.data.transform import AippSource, transform_from_onnx

    images = out / "aipp_images"
    if not images.is_dir() or not any(images.iterdir()):
        make_image_dir(images, PREVIEW_IMAGES, seed=seed)
    transform = AippSource(transform_from_onnx(source))
    done = preprocess_dir(images, out / "aipp_bins", transform=transform, workers=1,
                          info_file=out / "aipp_bins.info")
    return {"dir": str(out / "aipp_bins"), "info": str(out / "aipp_bins.info"), "outputs": done.outputs,
            "layout": done.layout, "bytes_per_image": transform.output_nbytes, "synthetic_images": str(images)}


def _rows(batches, aipp: dict | None, float_bytes: int) -> list[dict]:
    """One row per gear: bytes sent to the device per inference (uint8 with AIPP, float32 without).
    No fps: the deployment .om is not measured here."""
    rows = []
    for batch in batches:
        if aipp:
            h, w, c = aipp["input"]["shape"]
            sent, dtype = batch * h * w * c, "uint8 NHWC"
        else:
            sent, dtype = batch * float_bytes, "float32 NCHW"
        rows.append({"batch": batch, "input": dtype, "bytes_to_device": sent, "fps": None})
    return rows


def _append_command(path: Path, command: str) -> None:
    from lvvit_opt.core.fileio import write_text_atomic

    text = path.read_text(encoding="utf-8") if path.is_file() else "#!/usr/bin/env bash\n"
    if command not in text:
        write_text_atomic(path, text + "# the deployment .om (run --aipp / --batch-gears)\n" + command + "\n")
        os.chmod(path, 0o755)
