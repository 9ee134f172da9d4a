"""The `--inputs` option every verb that runs models shares (reader: lvvit_opt.verify.inputs)."""
from __future__ import annotations

import click

INPUTS_HELP = ("N seeded random batches, or real inputs: a .npy/.npz (e.g. a golden file), a `preprocess` "
               "directory of .bin files or its .info file, or a folder of images (ImageNet eval transform "
               "at the model's input size).")


class InputsParam(click.ParamType):
    """A positive integer or an existing path; anything else is a usage error (exit 2)."""

    name = "N|PATH"

    def convert(self, value, param, ctx):
        from lvvit_opt.core.errors import UserError
        from lvvit_opt.verify.inputs import parse_inputs_arg

        if not isinstance(value, str):
            return value
        try:
            parsed = parse_inputs_arg(value)
        except UserError as exc:
            self.fail(str(exc).removeprefix(f"--inputs {value}: "), param, ctx)
        return parsed if isinstance(parsed, int) else str(parsed)


def inputs_option(default: int, what: str = "Inputs"):
    """`--inputs N|PATH` with `default` random batches."""
    return click.option("--inputs", type=InputsParam(), default=default, show_default=True,
                        help=f"{what}: {INPUTS_HELP}")
