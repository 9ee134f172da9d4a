"""Slow: every architecture of the ViT family through `lvvit-opt run` (RANDOM weights, batch 1):
export -> softmax_transpose -> validate -> whitelist shapes -> atc commands -> bench, with the
exact attention softmax counts, skips and whitelist shapes of each (scripts/model_matrix.py
prints the same facts as a table)."""
from __future__ import annotations

import json

import onnx
import pytest

from fakes.ascend_env import no_tools  # noqa: F401  (fixture)
from lvvit_opt.cli import main
from lvvit_opt.pipeline.run import RunOptions, run
from lvvit_opt.whitelist import static_shapes, transpose_shapes

RANK5 = "input rank 5, not 4"

# model: (input px, softmaxes in the export, wrapped, {skip reason: count}, whitelist shapes at batch 1)
FAMILY = {
    "lvvit_t": (224, 12, 12, {}, [(1, 4, 197, 197), (1, 197, 197, 4)]),
    "deit_tiny_patch16_224": (224, 12, 12, {}, [(1, 3, 197, 197), (1, 197, 197, 3)]),
    "vit_tiny_patch16_224": (224, 12, 12, {}, [(1, 3, 197, 197), (1, 197, 197, 3)]),
    # shifted-window attention: (batch * windows, heads, 49, 49) per stage
    "swin_tiny_patch4_window7_224": (224, 12, 12, {}, [
        (64, 3, 49, 49), (64, 49, 49, 3), (16, 6, 49, 49), (16, 49, 49, 6),
        (4, 12, 49, 49), (4, 49, 49, 12), (1, 24, 49, 49), (1, 49, 49, 24)]),
    # 24 talking-heads self-attention blocks over the 196 patches (softmax between two permutes),
    # then 2 class-attention blocks (the CLS token attends to all 197)
    "cait_xxs24_224": (224, 26, 26, {}, [(1, 4, 196, 196), (1, 196, 196, 4), (1, 4, 1, 197), (1, 197, 1, 4)]),
    "pit_ti_224": (224, 12, 12, {}, [(1, 2, 730, 730), (1, 730, 730, 2), (1, 4, 197, 197), (1, 197, 197, 4),
                                     (1, 8, 50, 50), (1, 50, 50, 8)]),
    # locally-grouped attention is (B, groups, heads, 49, 49): rank 5, skipped; global sub-sampled attention wrapped
    "twins_svt_small": (224, 18, 9, {RANK5: 9}, [
        (1, 2, 3136, 49), (1, 49, 3136, 2), (1, 4, 784, 49), (1, 49, 784, 4),
        (1, 8, 196, 49), (1, 49, 196, 8), (1, 16, 49, 49), (1, 49, 49, 16)]),
    # two branches (401 and 197 tokens) plus cross-attention of each CLS token to the other branch
    "crossvit_tiny_240": (240, 21, 21, {}, [
        (1, 3, 401, 401), (1, 401, 401, 3), (1, 3, 197, 197), (1, 197, 197, 3),
        (1, 3, 1, 197), (1, 197, 1, 3), (1, 3, 1, 401), (1, 401, 1, 3)]),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAMILY))
def test_family_model_runs_end_to_end(name, tmp_path, no_tools):
    size, found, wrapped, skipped, shapes = FAMILY[name]
    out = tmp_path / "run"
    summary = run(RunOptions(out=str(out), model=name, batch_sizes=(1,), passes=("softmax_transpose", "cleanup"),
                             bench_duration=0.2, bench_rounds=1), log=lambda m: None)
    exported = onnx.load(str(out / f"{name}_bs1.onnx"), load_external_data=False)
    assert sum(n.op_type == "Softmax" for n in exported.graph.node) == found
    assert [d.dim_value for d in exported.graph.input[0].type.tensor_type.shape.dim] == [1, 3, size, size]
    props = {p.key: p.value for p in exported.metadata_props}
    assert props["lvvit_opt.model"] == name and props["lvvit_opt.random_weights"] == "true"
    assert props["lvvit_opt.preprocess.input_size"] == f"3,{size},{size}"

    apply = summary.applies[1]
    details = next(p for p in apply["passes"] if p["name"] == "softmax_transpose")["details"]  # run: ascend310
    assert len(details["wrapped"]) == wrapped and details["already_wrapped"] == []
    reasons: dict[str, int] = {}
    for entry in details["skipped"]:
        reasons[entry["reason"]] = reasons.get(entry["reason"], 0) + 1
    assert reasons == skipped
    assert apply["validation"]["passed"] is True
    assert apply["transpose_input_shapes"] == [list(s) for s in shapes]
    assert sorted(summary.whitelist["created"]) == sorted(list(s) for s in shapes)
    assert all(list(s) in summary.whitelist["shapes"] for s in shapes)  # the one list: the model's own too
    # `lvvit-opt whitelist shapes` reports every one of them as a static Transpose input
    assert set(shapes) <= set(static_shapes(transpose_shapes(str(out / f"{name}_bs1_opt.onnx"))))
    commands = (out / "atc_commands.sh").read_text()
    assert f"--input_shape=image:1,3,{size},{size}" in commands
    report = json.loads((out / "report.json").read_text())
    assert report["random_weights"] is True and report["bench"]["reports"]["1"]["results"]


@pytest.mark.slow
def test_deit_tiny_bs16_whitelist_shapes_by_cli(tmp_path, cli_runner):
    exported, rewritten = tmp_path / "deit_bs16.onnx", tmp_path / "deit_bs16_opt.onnx"
    result = cli_runner.invoke(main, ["export", "--model", "deit_tiny_patch16_224", "--batch-size", "16",
                                      "-o", str(exported)])
    assert result.exit_code == 0, result.output
    result = cli_runner.invoke(main, ["apply", str(exported), "-o", str(rewritten), "--passes", "softmax_transpose"])
    assert result.exit_code == 0, result.output
    shapes = cli_runner.invoke(main, ["whitelist", "shapes", str(rewritten), "--json", "-"])
    assert shapes.exit_code == 0, shapes.output
    uses = {(tuple(t["shape"]), tuple(t["perm"])): t["count"] for t in json.loads(shapes.stdout)["result"]["transposes"]}
    assert uses[((16, 3, 197, 197), (0, 3, 2, 1))] == 12
    assert uses[((16, 197, 197, 3), (0, 3, 2, 1))] == 12
    table = cli_runner.invoke(main, ["whitelist", "shapes", str(rewritten)]).output
    assert "16,3,197,197" in table and "16,197,197,3" in table
