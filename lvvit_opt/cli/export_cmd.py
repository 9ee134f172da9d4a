"""`lvvit-opt export`: checkpoint -> verified, simplified ONNX."""
from __future__ import annotations

import click

from lvvit_opt.cli._base import handle_errors, main
from lvvit_opt.cli.output import emit_result, echo, json_file, json_option
from lvvit_opt.cli.types import BATCH_SIZE, MODEL_NAME, SEED, img_size_type


@main.command("export")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Official TokenLabeling or timm checkpoint (.pth/.pth.tar/.bin/.safetensors; raw or wrapped "
                   "under state_dict/state_dict_ema/model, 'module.' prefix ok; an official repository's layout "
                   "is converted with timm's converter). Omit for a seeded RANDOM init.")
@click.option("--model", "model_name", type=MODEL_NAME, default="lvvit_s", show_default=True,
              help="lvvit_t, lvvit_s, lvvit_m, lvvit_l (lvvit_golden: the tiny test config) or any timm model "
                   "name (deit_tiny_patch16_224, swin_tiny_patch4_window7_224, ...; a .tag picks its "
                   "pretrained_cfg); completes in the shell.")
@click.option("--batch-size", type=BATCH_SIZE, default=None,
              help="Fixed batch size baked into the graph (one file per batch size, like the seed). "
                   "With --dynamic-batch: the batch the export is traced and verified at.  [default: 1]")
@click.option("--dynamic-batch", is_flag=True,
              help="Leave the batch dimension symbolic instead (the graph then runs at any batch).")
@click.option("--img-size", type=img_size_type(16), default=None,
              help="Square input size [default: the model's own, e.g. 224, CrossViT 240].")
@click.option("--opset", type=int, default=13, show_default=True)
@click.option("--no-simplify", is_flag=True, help="Skip onnxsim.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed for the random init and the check input.")
@click.option("--ema", is_flag=True, help="Load the EMA weights (state_dict_ema) from the checkpoint.")
@click.option("--non-strict", is_flag=True,
              help="Load a checkpoint whose keys do not match (default: error). The tensors it lacks keep "
                   "their RANDOM init: a warning names them and the result records them.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output .onnx path.")
@json_option
@handle_errors
def export_command(checkpoint, model_name, batch_size, dynamic_batch, img_size, opset, no_simplify, seed, ema,
                   non_strict, output, json_out):
    """Export an LV-ViT or any timm model to ONNX (input `image`, output `features`), simplify
    it with onnxsim and verify onnxruntime against torch (max abs diff <= 1e-4, else nothing
    is written). timm's fused attention is switched off for the export, so attention is the
    plain MatMul -> Softmax -> MatMul. The model's preprocessing (input size, crop_pct,
    interpolation, mean, std), its name and whether the weights are random are written into
    the file's metadata, where preprocess, eval and validate --inputs find them.

    \b
    Examples:
      lvvit-opt export --checkpoint lvvit_s-26M-224-83.3.pth.tar --batch-size 16 -o model_bs16.onnx
      lvvit-opt export --model deit_tiny_patch16_224 --checkpoint deit_tiny.pth --batch-size 16 -o deit_bs16.onnx
    """
    from lvvit_opt.export import export_onnx
    from lvvit_opt.cli.output import start_plan

    start_plan(reads={"--checkpoint": checkpoint}, writes={"-o": output, "--json": json_file(json_out)})
    result = export_onnx(output, model=model_name, checkpoint=checkpoint, batch_size=batch_size or 1,
                         dynamic_batch=dynamic_batch, img_size=img_size, opset=opset, simplify=not no_simplify,
                         seed=seed, ema=ema, strict=not non_strict)
    weights = ("RANDOM weights" if result.random_weights else
               f"partly RANDOM weights ({len(result.random_tensors)} tensors)" if result.random_tensors else "weights loaded")
    echo(f"wrote {result.path}: {result.node_count} nodes, batch {result.batch_size or 'dynamic'}, "
         f"max abs diff vs torch {result.max_abs_diff:.3g}, {weights}")
    emit_result(result.to_dict())
