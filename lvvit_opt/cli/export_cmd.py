"""`lvvit-opt export`: checkpoint -> verified, simplified ONNX."""
from __future__ import annotations

import click

from ._base import handle_errors, main


@main.command("export")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Official TokenLabeling checkpoint (.pth/.pth.tar; raw or wrapped under "
                   "state_dict/state_dict_ema/model, 'module.' prefix ok). Omit for a seeded RANDOM init.")
@click.option("--model", "model_name", default="lvvit_s", show_default=True,
              help="lvvit_t, lvvit_s, lvvit_m, lvvit_l (or lvvit_golden, the tiny test config).")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Fixed batch size baked into the graph (one file per batch size, like the seed).")
@click.option("--dynamic-batch", is_flag=True, help="Leave the batch dimension symbolic instead.")
@click.option("--img-size", type=click.IntRange(min=16), default=224, show_default=True)
@click.option("--opset", type=int, default=13, show_default=True)
@click.option("--no-simplify", is_flag=True, help="Skip onnxsim.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the random init and the check input.")
@click.option("--ema", is_flag=True, help="Load the EMA weights (state_dict_ema) from the checkpoint.")
@click.option("--non-strict", is_flag=True,
              help="Load a checkpoint whose keys do not match, with a warning listing them (default: error).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output .onnx path.")
@handle_errors
def export_command(checkpoint, model_name, batch_size, dynamic_batch, img_size, opset, no_simplify, seed, ema,
                   non_strict, output):
    """Export an LV-ViT to ONNX (input `image`, output `features`), simplify it with onnxsim
    and verify onnxruntime against torch (max abs diff <= 1e-4, else nothing is written).

    \b
    Example:
      lvvit-opt export --checkpoint lvvit_s-26M-224-83.3.pth.tar --batch-size 16 -o model_bs16.onnx
    """
    from ..export import export_onnx
    from ..fileio import guard_outputs

    guard_outputs({"-o": output}, {"--checkpoint": checkpoint})
    def log(message: str) -> None:
        click.echo(message, err=message.startswith(("WARNING", "warning")))

    export_onnx(output, model=model_name, checkpoint=checkpoint, batch_size=batch_size,
                dynamic_batch=dynamic_batch, img_size=img_size, opset=opset, simplify=not no_simplify,
                seed=seed, ema=ema, strict=not non_strict, log=log)
