"""`lvvit-opt whitelist shapes|check|patch|restore`: CANN transpose.py, safely.

Thin layer: parse options, call lvvit_opt.whitelist, print. No torch; onnx only when a
model is read.
"""
from __future__ import annotations

from pathlib import Path

import click

from lvvit_opt.core.errors import UserError, ValidationFailed
from lvvit_opt.cli._base import handle_errors, main, parse_int_list
from lvvit_opt.cli.output import echo, emit_result, json_option

FILE_HELP = ("transpose.py to use. Default: found from $ASCEND_OPP_PATH, $ASCEND_TOOLKIT_HOME, $install_path "
             "or /usr/local/Ascend/ascend-toolkit/latest (both opp layouts, {x86_64,aarch64,arm64}-linux).")


def _parse_shapes(ctx, param, values) -> list[tuple[int, ...]]:
    return [tuple(parse_int_list(v, "--shape", shape=True)) for v in values]


def _shape_options(fn):
    fn = click.option("--from-model", "from_model", type=click.Path(dir_okay=False),
                      help="Take every static Transpose input shape of this ONNX model.")(fn)
    fn = click.option("--shape", "shape_values", multiple=True, callback=_parse_shapes, metavar="N,C,H,W",
                      help="A Transpose input shape, e.g. 16,6,197,197 (repeatable).")(fn)
    fn = click.option("--file", "file", type=click.Path(), default=None, help=FILE_HELP)(fn)
    return fn


def _requested_shapes(shape_values, from_model) -> list[tuple[int, ...]]:
    if bool(shape_values) == bool(from_model):
        raise click.UsageError("give either --shape (repeatable) or --from-model MODEL.onnx")
    if from_model:
        from lvvit_opt.whitelist import format_shapes, shapes_from_model, static_shapes, transpose_shapes

        shapes = shapes_from_model(from_model)  # the one list's static shapes (`whitelist shapes` shows it)
        created = static_shapes([u for u in transpose_shapes(from_model) if u.created])
        echo(f"shapes from {from_model}: {format_shapes(shapes)} ({len(created)} added by softmax_transpose)")
        return shapes
    return list(shape_values)


def _own_inputs(file) -> dict[str, Path]:
    """transpose.py, located as the verb will, and the backup, record and kept copies beside it:
    inputs for the output guard, so no --json or --output ever overwrites them."""
    from lvvit_opt.whitelist.journal import own_files, real_file
    from lvvit_opt.whitelist.locate import locate_transpose_py

    try:
        located = locate_transpose_py(file)
    except UserError:
        return {}   # the verb itself says what is wrong with it
    return own_files(real_file(located))


def _edited(file) -> dict[str, Path]:
    """transpose.py as the verb will locate it: patch changes it, and check, patch and restore
    finish or undo an interrupted patch there (the plan's `edits`)."""
    from lvvit_opt.whitelist.journal import real_file
    from lvvit_opt.whitelist.locate import locate_transpose_py

    try:
        return {"transpose.py": real_file(locate_transpose_py(file))}
    except UserError:
        return {}


def _fmt(shape) -> str:
    from lvvit_opt.whitelist import format_shape

    return format_shape(shape)


@main.group("whitelist")
def whitelist_group() -> None:
    """CANN transpose.py whitelist: make atc pick the fast Transpose kernel for your shapes.

    \b
    Until late 2021 (CANN 5.0.x, the white-list era) atc compiled a static-shape Transpose
    with the slow TransposeD kernel unless its input shape was listed in transpose.py;
    later files (black-list era) make every static shape fast unless black-listed.
      lvvit-opt whitelist shapes model_bs16.onnx
      lvvit-opt whitelist check --from-model model_bs16.onnx
      lvvit-opt whitelist patch --from-model model_bs16.onnx --dry-run
      lvvit-opt whitelist patch --from-model model_bs16.onnx
      lvvit-opt whitelist restore
    """


@whitelist_group.command("shapes")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--file", "file", type=click.Path(), default=None,
              help="Also say which shapes fall back to TransposeD with this transpose.py (default: the one "
                   "found as for `whitelist check`; without one, no kernel column).")
@json_option
@handle_errors
def shapes_command(model, file, json_out) -> None:
    """Every Transpose of MODEL (after shape inference): input shape, perm, node count, origin
    (added by softmax_transpose, or in the model before) and, with a transpose.py, the kernel atc
    selects (Transpose or the slow TransposeD).

    \b
    This is the one list every verb uses (apply's report, run's report.md and atc_commands.sh,
    `whitelist patch --from-model`, `doctor --model`): every static shape is to be whitelisted.
    A Transpose whose input shape is not static is listed as such (atc needs a fixed batch).
    """
    from lvvit_opt.cli.output import start_plan
    from lvvit_opt.whitelist import format_shapes, format_transpose_table, static_shapes, transpose_shapes
    from lvvit_opt.whitelist.graph import symbolic_input_dims

    # the kernel column reads transpose.py as `whitelist check` does (which may finish an interrupted patch)
    start_plan(reads={"MODEL": model, "--file": file, **_own_inputs(file)}, writes={"--json": json_out},
               edits=_edited(file))

    uses = transpose_shapes(model)
    shapes = static_shapes(uses)
    kernels, located, note = _kernels(file, shapes)
    emit_result({"model": model, "transposes": [dict(u.to_dict(), kernel=kernels.get(u.shape) if kernels else None)
                                                for u in uses],
                 "whitelist_shapes": [list(s) for s in shapes], "transpose_file": located, "note": note})
    if not uses:
        echo(f"{model}: no Transpose nodes")
        return
    fixes = symbolic_input_dims(model)

    def why(use) -> str:
        if use.static:
            return "yes"
        named = [f"{d!r} is {fixes[d]}" for d in dict.fromkeys(use.shape or ()) if isinstance(d, str) and d in fixes]
        if named:
            return f"NO ({'; '.join(named)}: fix it with apply --passes fix_shapes)"
        if fixes:  # a symbol inference made up (unk__N) downstream of the symbolic inputs
            inputs = "; ".join(f"{where} ({sym!r})" for sym, where in fixes.items())
            return f"NO (follows the symbolic {inputs}: fix it with apply --passes fix_shapes)"
        return "NO (not static: fix the input shapes with apply --passes fix_shapes, or at export)"

    echo(format_transpose_table(uses, kernels, extra={"static": why}))
    echo(f"to whitelist: {format_shapes(shapes)}")
    echo(f"transpose.py: {located}" if located else f"note: {note}")


def _kernels(file, shapes) -> tuple[dict | None, str | None, str | None]:
    """(shape -> Transpose/TransposeD, the transpose.py used, a note when there is none)."""
    from lvvit_opt.whitelist import check_shapes, locate_transpose_py

    try:
        located = locate_transpose_py(file)
    except UserError as exc:
        if file is not None:
            raise
        return None, None, f"no kernel column: {str(exc).split(' Looked in')[0].splitlines()[0]}"
    if not shapes:
        return {}, str(located), None
    report = check_shapes(located, shapes)
    return {tuple(sel.shape): sel.kernel for sel in report.selections}, str(located), None


@whitelist_group.command("check")
@_shape_options
@click.option("--require-fast", is_flag=True, help="Exit 1 when any shape falls back to TransposeD.")
@json_option
@handle_errors
def check_command(file, shape_values, from_model, require_fast, json_out) -> None:
    """Tell the file's era and, per shape, whether atc selects Transpose or TransposeD, and why.

    The file is read as text with Python's ast; it is never imported or executed.
    """
    from lvvit_opt.cli.output import start_plan
    from lvvit_opt.whitelist import check_shapes

    start_plan(reads={"--file": file, "--from-model": from_model, **_own_inputs(file)}, writes={"--json": json_out},
               edits=_edited(file))

    report = check_shapes(file, _requested_shapes(shape_values, from_model))
    emit_result(report.to_dict(), ok=report.all_fast or not require_fast)
    echo(f"file: {report.path}")
    echo(f"era:  {report.era_description}")
    for sel in report.selections:
        echo(f"  {_fmt(sel.shape):<20} {sel.kernel:<10}  {sel.reason}")
    for note in report.notes:
        echo(f"note: {note}")
    if require_fast and not report.all_fast:
        raise ValidationFailed(f"{len(report.slow)} shape(s) fall back to TransposeD: "
                               + " ".join(_fmt(s.shape) for s in report.slow))


@whitelist_group.command("patch")
@_shape_options
@click.option("--fuzzy", is_flag=True,
              help="Add -1-batch entries to white_list_shape_fuzzy: one entry covers every batch size.")
@click.option("--dry-run", is_flag=True, help="Print the unified diff; change nothing.")
@click.option("--output", type=click.Path(), default=None,
              help="Write the patched copy here and leave the original alone (for a read-only CANN "
                   "install: copy the opp tree, patch the copy, export ASCEND_OPP_PATH=<copy>).")
@json_option
@handle_errors
def patch_command(file, shape_values, from_model, fuzzy, dry_run, output, json_out) -> None:
    """Add the shapes that atc does not already send to Transpose, inserting text only.

    \b
    Every other byte of transpose.py stays as it was. Before the first change the original
    is kept as transpose.py.lvvit-opt.orig with a record transpose.py.lvvit-opt.json; the
    written file must compile and select every shape, else the original is put back.
    The change is journaled (record "pending", backup, file, record "done"): an interrupted
    patch is finished or undone by the next patch, check or restore, and a backup or record
    that does not check out (edited, truncated, for another file) is refused with the evidence.
    Patching twice adds nothing. Undo with `lvvit-opt whitelist restore`.
    Exit 1 when a shape stays on TransposeD (black-listed in a black-list-era file).
    """
    from lvvit_opt.cli.output import start_plan
    from lvvit_opt.whitelist import patch_file

    copy = Path(output) / (Path(file).name if file else "transpose.py") if output and Path(output).is_dir() else output
    start_plan(reads={"--file": file, "--from-model": from_model, **_own_inputs(file)},
               writes={"--output": copy, "--json": json_out}, edits=_edited(file))
    result = patch_file(file, _requested_shapes(shape_values, from_model), fuzzy=fuzzy, dry_run=dry_run,
                        output=output)
    emit_result(result.to_dict(), ok=not result.blocked)
    echo(f"file: {result.path}")
    echo(f"era:  {result.era_description}")
    if result.diff and dry_run:
        echo(result.diff, nl=False)
    echo(result.message)
    if result.backup:
        echo(f"backup: {result.backup}  record: {result.record}")
    if result.cache_hint:
        echo(f"hint: {result.cache_hint}")
    if result.blocked:
        raise ValidationFailed(f"{len(result.blocked)} black-listed shape(s) stay on TransposeD")


@whitelist_group.command("restore")
@click.option("--file", "file", type=click.Path(), default=None, help=FILE_HELP)
@click.option("--force", is_flag=True,
              help="Put the backup back whatever the record says: the file changed since our patch in a way "
                   "the record does not explain, the record is unreadable or missing, or the backup's checksum "
                   "does not match it. The current file is kept as transpose.py.lvvit-opt.replaced (.2, .3, ... "
                   "when that exists); never with no backup.")
@json_option
@handle_errors
def restore_command(file, force, json_out) -> None:
    """Put the original transpose.py back byte for byte and remove our backup and record.

    An interrupted patch is restored too; a backup or record that does not check out is
    refused (exit 2, naming the file and what does not match) unless --force.
    """
    from lvvit_opt.cli.output import start_plan
    from lvvit_opt.whitelist import restore_file

    start_plan(reads={"--file": file, **_own_inputs(file)}, writes={"--json": json_out},
               edits=_edited(file))

    result = restore_file(file, force=force)
    echo(result.message)
    emit_result(result.to_dict())

