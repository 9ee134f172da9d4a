"""Bring your own ONNX: mainstream exporters' ViT graphs through the seed recipe (issue 20).

Tiny random-weight configs of timm / HuggingFace transformers / torchvision ViTs (and our
LV-ViT golden export), each exported with torch.onnx legacy (opset 13/17/18) and dynamo
(opset 18/20/23), static and dynamic batch: the full product (COMBOS), plus one graph with
external data. For every graph the exporter produces:
  * the input's batch dimension is what was asked for (a dim_param, or 2);
  * `apply --passes fix_shapes,fold_constants[,lower_attention],softmax_transpose --batch-size 2`
    wraps exactly one softmax per attention block of the model and validates equal to
    onnxruntime on the original (the classifier head is re-randomised: timm and HF
    zero-init it, which would make any graph look equal);
  * dynamo at opset 23 emits ONNX `Attention` exactly for the SDPA families; there the
    recipe adds lower_attention, and without it exits 1 "matched 0 of N attention blocks"
    instead of claiming success;
  * `whitelist shapes` of the result lists every Transpose shape apply reported, all static;
  * opset 20/23 graphs get target_opset (opset=18) too, and `atc --dry-run --cann-version 8.0`
    passes the readiness check (opset range, documented operator list, static inputs);
  * `debug layers --fp16` loads and passes (true fp16 is within the fp16 policy).
The combinations the exporter itself cannot export are EXPORTER_REFUSES: each is asserted to
raise the exporter's own error, so the table is exact (an entry that exports fails the test,
and so does a refusal outside it). The exporter matrix table of docs/matrices.md is this file's result.
Exports are cached per session.
"""
from __future__ import annotations

import json
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")

from click.testing import CliRunner  # noqa: E402

from lvvit_opt.cli import main  # noqa: E402
from lvvit_opt.passes import AttentionNotWrapped, apply_file  # noqa: E402
from lvvit_opt.passes.graph_utils import fused_attention_nodes  # noqa: E402
from lvvit_opt.whitelist import transpose_shapes  # noqa: E402
from lvvit_opt.runtime.ort import OrtRunner  # noqa: E402
from lvvit_opt.verify.golden import planned_input_specs  # noqa: E402
from memory import file_bytes, peak_rise  # noqa: E402

BATCH = 2
# issue 20 item 4: the passes' peak RSS rise on each graph, in this (warm) process, is at most
# 2x the model file plus this much per apply that does not grow with the model: shape
# inference, graphsurgeon's folding session, onnxruntime's per-session set-up (measured up to
# ~15 MB on 0.1-0.4 MB graphs). One-time costs (imports, onnx's schemas) are paid by warm_up.
PER_CALL_BYTES = 20 * 1024**2
BLOCKS = 2  # attention blocks of every config below


def _hf(kind: str, attn: str = "eager"):
    transformers = pytest.importorskip("transformers")
    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  image_size=32, patch_size=8, num_labels=10)
    if kind == "vit":
        model = transformers.ViTForImageClassification(transformers.ViTConfig(**common))
    elif kind == "vit_model":
        model = transformers.ViTModel(transformers.ViTConfig(**common), add_pooling_layer=False)
    elif kind == "deit":
        model = transformers.DeiTForImageClassification(transformers.DeiTConfig(**common))
    elif kind == "dinov2":
        config = transformers.Dinov2Config(**{k: v for k, v in common.items() if k != "intermediate_size"}, mlp_ratio=2)
        model = transformers.Dinov2Model(config)
    elif kind == "beit":
        model = transformers.BeitForImageClassification(transformers.BeitConfig(**common, use_relative_position_bias=True))
    elif kind == "swin":
        config = transformers.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2],
                                         window_size=4, num_labels=10)
        model = transformers.SwinForImageClassification(config)
    else:
        raise ValueError(kind)
    model.config._attn_implementation = attn
    for module in model.modules():
        if hasattr(module, "config") and module.config is not None:
            module.config._attn_implementation = attn
    return _TensorOut(model)


class _TensorOut(torch.nn.Module):
    """HF models return ModelOutput: export the first tensor (logits or last_hidden_state)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model(pixel_values=pixel_values)[0]


def _timm(kind: str):
    import timm

    if kind == "swin":
        model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=56, window_size=7,
                                  embed_dim=24, depths=(1, 1), num_heads=(1, 2), num_classes=10)
        return model
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2,
                              num_classes=10)
    if kind == "vit_unfused":
        for module in model.modules():
            if hasattr(module, "fused_attn"):
                module.fused_attn = False
    return model


def _torchvision():
    from torchvision.models import VisionTransformer

    return VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                             num_classes=10)


FAMILIES = {
    "timm_vit_fused": lambda: _timm("vit"),
    "timm_vit_unfused": lambda: _timm("vit_unfused"),
    "timm_swin": lambda: _timm("swin"),
    "hf_vit_eager": lambda: _hf("vit", "eager"),
    "hf_vit_sdpa": lambda: _hf("vit", "sdpa"),
    "hf_vitmodel_sdpa": lambda: _hf("vit_model", "sdpa"),
    "hf_deit": lambda: _hf("deit"),
    "hf_dinov2": lambda: _hf("dinov2"),
    "hf_beit": lambda: _hf("beit"),
    "hf_swin": lambda: _hf("swin"),
    "torchvision_vit": _torchvision,
}
IMAGE = {"timm_swin": 56}

EXPORTERS = [("legacy", 13), ("legacy", 17), ("legacy", 18), ("dynamo", 18), ("dynamo", 20), ("dynamo", 23)]
# families whose attention is torch's scaled_dot_product_attention (F.sdpa, nn.MultiheadAttention);
# the others compute MatMul/Softmax/MatMul themselves
SDPA = {"timm_vit_fused", "hf_vit_sdpa", "hf_vitmodel_sdpa", "torchvision_vit"}

# (family, exporter, opset, dynamic batch, external data): every family x exporter x batch, plus external data
COMBOS = [(family, exporter, opset, dynamic, False)
          for family in FAMILIES for exporter, opset in EXPORTERS for dynamic in (False, True)] + \
         [("hf_vit_eager", "legacy", 17, True, True)]

# (family, exporter, opset) -> (exception, message, reason): combinations the exporter itself refuses,
# static and dynamic batch alike. test_exporter_refuses proves each refusal and every combination
# outside this table must export and pass test_exporter_matrix, so the table is exact.
_NO_SDPA_13 = (torch.onnx.errors.UnsupportedOperatorError,
               r"operator 'aten::scaled_dot_product_attention' to ONNX opset version 13 is not supported",
               "no `scaled_dot_product_attention` export before opset 14")
EXPORTER_REFUSES = {
    ("timm_vit_fused", "legacy", 13): _NO_SDPA_13,
    ("hf_vit_sdpa", "legacy", 13): _NO_SDPA_13,
    ("hf_vitmodel_sdpa", "legacy", 13): _NO_SDPA_13,
    ("torchvision_vit", "legacy", 13): _NO_SDPA_13,
}
EXPORTED = [combo for combo in COMBOS if combo[:3] not in EXPORTER_REFUSES]
REFUSED = [combo for combo in COMBOS if combo[:3] in EXPORTER_REFUSES]


def _label(combo) -> str:
    family, exporter, opset, dynamic, external = combo
    return f"{family}-{exporter}{opset}-{'dyn' if dynamic else 'static'}{'-external' if external else ''}"


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("exporter_matrix")


@pytest.fixture(scope="session")
def opp_env(tmp_path_factory):
    """ASCEND_OPP_PATH of a reconstructed CANN 8.1 tree (tests/fakes/cann_tree.py) for doctor's check."""
    from fakes.cann_tree import build_cann_tree

    tree = build_cann_tree(tmp_path_factory.mktemp("cann") / "Ascend")
    return {"ASCEND_OPP_PATH": str(tree.latest / "opp")}


def _model(family: str):
    """(model in eval mode, example input) of one family, seeded."""
    torch.manual_seed(0)
    model = FAMILIES[family]()
    model.eval()
    with torch.no_grad():  # a zero-init head hides every difference: re-randomise it
        for param in model.parameters():
            if param.dim() >= 1 and float(param.abs().max()) == 0.0:
                param.normal_(0, 0.5)
    size = IMAGE.get(family, 32)
    return model, torch.randn(BATCH, 3, size, size)


def _torch_export(combo, path) -> None:
    family, exporter, opset, dynamic, _ = combo
    model, x = _model(family)
    if exporter == "legacy":
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=opset, input_names=["image"],
                          output_names=["out"], dynamic_axes={"image": {0: "batch"}} if dynamic else None)
    else:
        shapes = ({0: torch.export.Dim("batch", min=1, max=64)},) if dynamic else None
        torch.onnx.export(model, (x,), str(path), dynamo=True, opset_version=opset, input_names=["image"],
                          output_names=["out"], dynamic_shapes=shapes, verbose=False)


def _export(combo, directory):
    """Export one combination (cached by file name in the session directory)."""
    import onnx

    path = directory / f"{_label(combo)}.onnx"
    if not path.exists():
        _torch_export(combo, path)
        if combo[4]:
            graph = onnx.load(str(path))
            onnx.save(graph, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                      location=path.name + ".data", size_threshold=0)
    return path


def _recipe(graph) -> list[str]:
    """The seed recipe for one export: lower_attention only where the exporter fused attention."""
    opset = next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))
    return ["fix_shapes", "fold_constants"] + (["lower_attention"] if fused_attention_nodes(graph.graph) else []) + \
        (["target_opset"] if opset > 18 else []) + ["softmax_transpose"]


@pytest.mark.parametrize("combo", REFUSED, ids=_label)
def test_exporter_refuses(combo, tmp_path):
    """Every EXPORTER_REFUSES combination: the exporter itself raises, with the recorded message."""
    error, message, _ = EXPORTER_REFUSES[combo[:3]]
    with pytest.raises(error, match=message):
        _torch_export(combo, tmp_path / "refused.onnx")


def test_exporter_refusals_are_in_the_product():
    """No stale refusal: each EXPORTER_REFUSES entry names combinations of COMBOS (so each is tested)."""
    assert set(EXPORTER_REFUSES) <= {combo[:3] for combo in COMBOS}
    assert len(EXPORTED) + len(REFUSED) == len(COMBOS) == len(FAMILIES) * len(EXPORTERS) * 2 + 1
    assert {family for family, _, _ in EXPORTER_REFUSES} == SDPA  # the reason recorded is SDPA's, only


@pytest.fixture(scope="session")
def warm_up(golden_onnx, tmp_path_factory) -> None:
    """One apply (and its validation) first, so no graph's memory figure carries the process's
    one-time costs: imports, onnx's operator schemas, onnxruntime's environment."""
    out = tmp_path_factory.mktemp("warm") / "out.onnx"
    apply_file(golden_onnx, out, ["fix_shapes", "fold_constants", "target_opset", "softmax_transpose"], batch_size=BATCH,
               options={"target_opset": {"opset": 17}})


@pytest.mark.parametrize("combo", EXPORTED, ids=_label)
def test_exporter_matrix(combo, export_dir, opp_env, warm_up, tmp_path):
    import onnx

    from lvvit_opt.core.onnx_files import load_onnx

    family, exporter, opset, dynamic, _ = combo
    path = _export(combo, export_dir)
    out = tmp_path / "out.onnx"
    graph = onnx.load(str(path), load_external_data=False)
    # the streamed reader gives every exporter's graph exactly the message onnx parses
    assert load_onnx(path, load_external_data=False) == graph
    batch = graph.graph.input[0].type.tensor_type.shape.dim[0]  # the exporter kept the batch mode asked for
    assert (batch.dim_param != "", batch.dim_value) == ((True, 0) if dynamic else (False, BATCH)), batch
    if not dynamic:  # a static export: whitelist shapes reads concrete shapes before any pass (no unk__N)
        assert all(u.static for u in transpose_shapes(path)), [u.to_dict() for u in transpose_shapes(path)][:3]
    # dynamo at opset 23 turns SDPA into ONNX Attention; a hand-written attention stays MatMul/Softmax
    assert bool(fused_attention_nodes(graph.graph)) == (family in SDPA and exporter == "dynamo" and opset >= 23)
    passes = _recipe(graph)
    if "lower_attention" in passes:  # never silent: the seed recipe alone must refuse
        with pytest.raises(AttentionNotWrapped, match=rf"matched 0 of {BLOCKS} attention blocks"):
            apply_file(path, tmp_path / "seed_only.onnx", [p for p in passes if p not in ("lower_attention", "target_opset")],
                       batch_size=BATCH, validate=False)
    options = {"target_opset": {"opset": 18}} if "target_opset" in passes else None
    # validation reads the candidate's inputs from its graph before its session opens: exactly
    # what onnxruntime reports, on every exporter's graph (verify.golden: one session at a time)
    runner = OrtRunner(str(path))
    assert planned_input_specs(graph, {}) == runner.inputs
    runner.close()
    with peak_rise() as passes_peak:  # issue 20 item 4: the passes' memory, on every exporter's graph
        apply_file(path, tmp_path / "passes_only.onnx", passes, batch_size=BATCH, options=options, validate=False)
    with peak_rise() as validated_peak:
        result = apply_file(path, out, passes, batch_size=BATCH, options=options)
    size = file_bytes(path)
    if os.environ.get("LVVIT_MATRIX_RSS"):  # docs/matrices.md's figures: LVVIT_MATRIX_RSS=FILE appends one line per graph
        with open(os.environ["LVVIT_MATRIX_RSS"], "a") as handle:
            handle.write(f"{_label(combo)}\t{size}\t{passes_peak.rise}\t{validated_peak.rise}\n")
    assert passes_peak.rise <= 2 * size + PER_CALL_BYTES, (
        f"the passes rose {passes_peak.rise / 2**20:.1f} MB on a {size / 2**20:.2f} MB graph")
    wrap = result.passes[-1]
    assert wrap.matched == BLOCKS, wrap.to_dict()
    assert wrap.details["attention_not_wrapped"] == []
    assert result.validation is not None and result.validation.passed, result.validation.format()
    # whitelist shapes lists exactly what apply reported, every one static
    listed = {tuple(u.shape) for u in transpose_shapes(out)}
    reported = {tuple(s) for s in result.transpose_input_shapes()}
    assert reported and reported <= listed, (reported, listed)
    assert all(u.static for u in transpose_shapes(out))
    cli = CliRunner().invoke(main, ["whitelist", "shapes", str(out), "--json", str(tmp_path / "w.json")])
    assert cli.exit_code == 0, cli.output
    assert json.loads((tmp_path / "w.json").read_text())["ok"] is True
    # doctor --model reads the same shapes through the same inference (one reader, issue 20 item 5)
    from lvvit_opt.ascend.doctor import check_transpose

    model_check = check_transpose(None, None, opp_env, out)[-1]
    assert model_check.key == "model", model_check
    assert {tuple(s["shape"]) for s in model_check.details["shapes"]} == listed
    # atc --dry-run: the readiness check (CANN 8.0: opset <= 18, documented operator list) passes
    dry = CliRunner().invoke(main, ["atc", str(out), "--dry-run", "--soc-version", "Ascend310", "--cann-version", "8.0"])
    assert dry.exit_code == 0, dry.output
    # debug layers --fp16 loads every exporter's graph and passes it: true fp16 on honest
    # weights is within the fp16 policy (issue 21); exit 1 saying "internal failure" would be our
    # conversion breaking (or onnxruntime refusing it), exit 1 without it a false FAIL, exit 2 a bad graph
    fp16 = CliRunner().invoke(main, ["debug", "layers", str(out), "--fp16"])
    assert fp16.exit_code == 0, fp16.output


def test_lvvit_golden_export_through_the_recipe(golden_onnx, tmp_path):
    """LV-ViT from our own export (the golden graph, static batch 2, opset 13): 2 blocks wrapped."""
    result = apply_file(golden_onnx, tmp_path / "out.onnx", ["fix_shapes", "fold_constants", "softmax_transpose"],
                        batch_size=BATCH)
    assert result.passes[-1].matched == 2 and result.validation.passed
    assert {tuple(s) for s in result.transpose_input_shapes()} <= {tuple(u.shape) for u in
                                                                  transpose_shapes(tmp_path / "out.onnx")}
