"""`lvvit-opt debug layers`: the first tensor where a candidate stops agreeing with the reference."""
from __future__ import annotations

import click

from lvvit_opt.cli._base import handle_errors, main
from lvvit_opt.cli._inputs import inputs_option
from lvvit_opt.cli.output import echo, emit_result, json_option, warn_random_weights
from lvvit_opt.cli.types import BATCH_SIZE, SEED, TOP, megabytes
from lvvit_opt.debug.precision import DEFAULT_PRECISION_MODE, PRECISION_MODES
from lvvit_opt.cli._tolerances import tolerance_from, tolerance_options


def run_aipp_preview(model: str, inputs, seed: int, json_out: str | None, metrics: dict) -> None:
    """`debug layers --aipp` and `validate MODEL.onnx --aipp`: print the preview, exit 1 when it fails."""
    from lvvit_opt.cli.output import start_plan
    from lvvit_opt.debug.aipp_preview import preview_aipp, preview_inputs
    from lvvit_opt.verify.golden import Tolerance

    if not str(model).lower().endswith(".onnx"):
        raise click.UsageError("--aipp previews an .onnx (for an .om, validate it against the ONNX)")
    start_plan(reads={"MODEL": model, "--inputs": None if str(inputs).isdigit() else inputs})
    images, count = preview_inputs(inputs)
    report = preview_aipp(model, images=images, count=count, seed=seed,
                          tolerance=tolerance_from(None, base=Tolerance.fp16(), **metrics))
    echo(report.format())
    emit_result(report.to_dict(), ok=report.passed)
    if not report.passed:
        raise SystemExit(1)


@main.group("debug")
def debug_group():
    """Precision debugging: find where two models start to disagree."""


@debug_group.command("layers")
@click.argument("reference", type=click.Path(dir_okay=False))
@click.argument("candidate", required=False, type=click.Path())
@click.option("--fp16", is_flag=True,
              help="Candidate: REFERENCE converted to true fp16 with fp32 inputs/outputs (constants rounded, "
                   "never clamped), a CPU preview of what atc's --precision_mode compiles.")
@click.option("--precision-mode", type=click.Choice(PRECISION_MODES), default=None,
              help="The atc --precision_mode the fp16 preview follows (implies --fp16) [force_fp16, atc's 310 "
                   "default]. allow_fp32_to_fp16 keeps vector ops in fp32; must_keep_origin_dtype keeps all; "
                   "allow_mix_precision's lists are not public: previewed as force_fp16.")
@click.option("--keep-dtype", "keep_dtype_file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="atc's --keep_dtype file (a node name or OpType::Type a line): those ops stay fp32 in the "
                   "preview (implies --fp16; ignored under must_keep_origin_dtype, as atc does).")
@click.option("--aipp", is_flag=True,
              help="Candidate: REFERENCE behind a CPU preview of the static AIPP `atc --aipp` writes (uint8 NHWC, "
                   "crop, (x - min_chn) * var_reci_chn in fp16), against our float pipeline on the same images; "
                   "reports the error AIPP adds. --inputs: a count of random images, an image directory or file.")
@inputs_option(1, "Inputs both models run on")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the random inputs.")
@click.option("--batch-size", type=BATCH_SIZE, default=None,
              help="Batch for models whose batch is symbolic (default 1).")
@tolerance_options
@click.option("--top", type=TOP, default=10, show_default=True, help="How many worst tensors to list.")
@click.option("--chunk-mb", type=megabytes(1), default=384, show_default=True,
              help="Activations (both models together) fetched per run; bounds memory on big models "
                   "(fewer, larger chunks mean fewer model runs).")
@click.option("--suggest-keep-dtype", "keep_dtype_path", type=click.Path(dir_okay=False), default=None,
              help="fp16/dump candidates: write atc's --keep_dtype file listing the nodes where the error "
                   "starts, and print the atc flag that uses it.")
@click.option("--om-json", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Dump candidates: the .om's graph JSON (atc --mode=1 --om=X.om --json=X.json), to match "
                   "ops atc fused to the original ONNX nodes.")
@json_option
@handle_errors
def layers_command(reference, candidate, fp16, precision_mode, keep_dtype_file, aipp, inputs, seed, batch_size, top,
                   chunk_mb, keep_dtype_path, om_json, json_out, **metrics):
    """Compare REFERENCE (.onnx) with CANDIDATE tensor by tensor, in topological order.

    \b
    CANDIDATE is one of:
      another .onnx (e.g. the rewritten graph): matched by tensor name, and through the
        Transposes/Casts a rewrite adds;
      --fp16 instead of a CANDIDATE: REFERENCE in fp16 on onnxruntime;
      an NPU dump directory of the compiled .om (python -m ais_bench --dump 1 --dump_npy 1;
        msit benchmark spells it --dump-npy 1; or msaccucmp convert output): files {op_type}.{op_name}.{task_id}.{stream_id}.{timestamp}
        .output.{i}.npy matched to ONNX node names. --inputs must be the batch the NPU ran.

    Tolerance per tensor: validate's tight one for an ONNX candidate, its fp16 one
    (cosine >= 0.999) for --fp16 and dumps; --atol/--rtol/--min-cosine override.

    Prints the first failing tensor (node, op type, metrics, the last passing tensor before
    it), the worst tensors and a per-op-type summary; --json holds all of it, the first
    failure under result.first_divergence (null when everything agrees). Exit 0 when every
    tensor agrees, 1 when one diverges, 2 on bad input.

    \b
    Examples:
      lvvit-opt debug layers model.onnx model_opt.onnx
      lvvit-opt debug layers model.onnx --fp16 --inputs prep/ --suggest-keep-dtype keep.cfg
      lvvit-opt debug layers model_bs1.onnx out/dump/20240101120000_npy --inputs image.npy
    """
    if aipp:
        if candidate is not None or fp16 or precision_mode or keep_dtype_file or keep_dtype_path or om_json:
            raise click.UsageError("--aipp previews REFERENCE behind AIPP: give no CANDIDATE and no fp16/dump option")
        run_aipp_preview(reference, inputs, seed, json_out, metrics)
        return
    from lvvit_opt.debug.layers import compare_layers, suggest_keep_fp32, write_keep_dtype
    from lvvit_opt.cli.output import start_plan
    from lvvit_opt.verify.golden import Tolerance
    from lvvit_opt.verify.inputs import parse_inputs_arg
    if (precision_mode or keep_dtype_file) and candidate is not None:
        raise click.UsageError("--precision-mode/--keep-dtype shape the fp16 preview; give no CANDIDATE with them")
    fp16 = fp16 or bool(precision_mode or keep_dtype_file)
    precision = {"precision_mode": precision_mode or DEFAULT_PRECISION_MODE, "keep_dtype": keep_dtype_file}
    onnx_candidate = candidate is not None and not fp16 and candidate.lower().endswith(".onnx")
    if keep_dtype_path and (onnx_candidate or (candidate is None and not fp16)):
        raise click.UsageError("--suggest-keep-dtype is for fp16 candidates: --fp16 or an NPU dump directory")
    start_plan(reads={"REFERENCE": reference, "CANDIDATE": candidate, "--inputs": parse_inputs_arg(inputs)}, writes={"--suggest-keep-dtype": keep_dtype_path, "--json": None if json_out == "-" else json_out})
    from lvvit_opt.verify.random_ops import warn_random_ops

    warn_random_ops(reference, candidate)
    warn_random_weights(reference, candidate)
    base = Tolerance.onnx() if onnx_candidate else Tolerance.fp16()
    report = compare_layers(reference, candidate, fp16=fp16, inputs=inputs, seed=seed, batch_size=batch_size,
                            tolerance=tolerance_from(None, base=base, **metrics), chunk_mb=chunk_mb,
                            top=top, om_json=om_json, **(precision if fp16 else {}))
    echo(report.format())
    result = report.to_dict()
    if keep_dtype_path:
        suggestion = suggest_keep_fp32(report, inputs=inputs, seed=seed, batch_size=batch_size,
                                       tolerance=report.tolerance, chunk_mb=chunk_mb, top=top,
                                       **(precision if fp16 else {}))
        written = write_keep_dtype(suggestion.nodes, keep_dtype_path)
        result["keep_dtype"] = {"file": keep_dtype_path if written else None,
                                "atc_flag": f"--keep_dtype={keep_dtype_path}" if written else None,
                                **suggestion.to_dict()}
        if written:
            echo(f"wrote {keep_dtype_path}: {len(suggestion.nodes)} node(s) to keep in fp32: "
                 f"{', '.join(suggestion.nodes[:10])}{' ...' if len(suggestion.nodes) > 10 else ''}")
            if suggestion.verified is not None:
                left = suggestion.remaining
                echo(f"  fp16 with them kept in fp32 ({suggestion.rounds} re-run(s)): "
                     + ("every tensor agrees" if suggestion.verified else
                        f"still diverges, first at {left.line() if left else '?'}"))
            echo(f"  compile with: atc ... --keep_dtype={keep_dtype_path}   "
                 f"(lvvit-opt atc {reference} --keep-dtype {keep_dtype_path})")
        else:
            echo(f"no node breaks in fp16: {keep_dtype_path} not written")
    emit_result(result, ok=report.passed)
    if not report.passed:
        raise SystemExit(1)
