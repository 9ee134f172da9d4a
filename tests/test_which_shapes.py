"""One answer to "which shapes must I whitelist?" (issue 34): apply's report, `whitelist shapes`,
`whitelist patch --from-model`, `doctor --model`, run's report.json / report.md / atc_commands.sh
give the same list (every static Transpose input shape, the softmax wrap's marked), written the
same way (8,3,197,197), on an LV-ViT graph and on a HuggingFace ViT graph."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lvvit_opt.cli import main

FIXTURE = Path(__file__).parent / "fixtures" / "transpose" / "transpose_whitelist_era.py"


def _json(cli_runner, args, path: Path, ok=(0,)) -> dict:
    result = cli_runner.invoke(main, [*args, "--json", str(path)])
    assert result.exit_code in ok, result.output
    return json.loads(path.read_text())["result"]


def _answers(cli_runner, original: str, tmp_path: Path, extra=()) -> tuple[list, list, str]:
    """(the shapes each verb gives, the created shapes, apply's console text)."""
    rewritten = tmp_path / "opt.onnx"
    result = cli_runner.invoke(main, ["apply", original, "-o", str(rewritten), *extra, "--json", str(tmp_path / "a.json")])
    assert result.exit_code == 0, result.output
    applied = json.loads((tmp_path / "a.json").read_text())["result"]
    shapes = _json(cli_runner, ["whitelist", "shapes", str(rewritten), "--file", str(FIXTURE)], tmp_path / "s.json")
    patch = _json(cli_runner, ["whitelist", "patch", "--from-model", str(rewritten), "--file", str(FIXTURE),
                               "--dry-run"], tmp_path / "p.json")
    doctor = _json(cli_runner, ["doctor", "--model", str(rewritten), "--transpose-file", str(FIXTURE)],
                   tmp_path / "d.json", ok=(0, 1))
    model_check = next(c for c in doctor["checks"] if c["key"] == "model")
    answers = [applied["whitelist_shapes"], shapes["whitelist_shapes"],
               [s["shape"] for s in patch["shapes"]], [s["shape"] for s in model_check["details"]["shapes"]]]
    for answer in answers[1:]:
        assert answer == answers[0]
    created = [t["shape"] for t in applied["transposes"] if t["created"]]
    assert created == applied["transpose_input_shapes"]
    assert [t["shape"] for t in shapes["transposes"] if t["created"]] == created
    assert [s["shape"] for s in model_check["details"]["shapes"] if s["created"]] == created
    assert all(t["kernel"] == "TransposeD" for t in shapes["transposes"])  # white-list era, nothing listed yet
    text = result.output
    listed = " ".join(",".join(map(str, s)) for s in answers[0])
    assert f"whitelist these shapes on a white-list-era CANN: {listed}):" in text
    assert "(" + ", ".join(map(str, created[0])) + ")" not in text  # one format: 8,3,197,197, never a tuple
    return answers[0], created, text


def test_lvvit_golden_every_verb_gives_the_same_list(cli_runner, golden_onnx, tmp_path):
    shapes, created, text = _answers(cli_runner, golden_onnx, tmp_path)
    assert created == [[2, 3, 197, 197], [2, 197, 197, 3]]
    assert shapes == [[2, 48, 196], [2, 197, 3, 3, 16], [2, 3, 197, 16], [2, 3, 197, 197], [2, 197, 197, 3]]
    assert re.search(r"^2,3,197,197\s+0,3,2,1\s+2\s+added by softmax_transpose$", text, re.M)
    assert re.search(r"^2,48,196\s+0,2,1\s+1\s+in the model before$", text, re.M)


def test_hf_vit_every_verb_gives_the_same_list(cli_runner, tmp_path):
    transformers = pytest.importorskip("transformers")
    import torch

    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=24, num_hidden_layers=2,
                                    num_attention_heads=3, intermediate_size=32, num_labels=5,
                                    attn_implementation="eager")
    model = transformers.ViTForImageClassification(config).eval()
    path = tmp_path / "hf_vit.onnx"
    with torch.no_grad():
        torch.onnx.export(model, (torch.randn(2, 3, 32, 32),), str(path), input_names=["pixel_values"],
                          output_names=["logits"], opset_version=17, dynamo=False)
    shapes, created, _ = _answers(cli_runner, str(path), tmp_path)
    assert created == [[2, 3, 17, 17], [2, 17, 17, 3]]  # 16 patches + CLS, 3 heads
    assert created[0] in shapes and created[1] in shapes and len(shapes) > len(created)


@pytest.mark.slow
def test_lvvit_s_run_report_and_atc_commands_give_the_same_list(cli_runner, tmp_path):
    out = tmp_path / "run"
    result = cli_runner.invoke(main, ["run", "--model", "lvvit_s", "--batch-sizes", "1", "--out", str(out),
                                      "--bench-duration", "0.2", "--bench-rounds", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    shapes = report["whitelist"]["shapes"]
    assert report["whitelist"]["created"] == [[1, 6, 197, 197], [1, 197, 197, 6]]  # the guide's (bs,6,197,197) pair
    alone = _json(cli_runner, ["whitelist", "shapes", str(out / "lvvit_s_bs1_opt.onnx")], tmp_path / "s.json")
    assert alone["whitelist_shapes"] == shapes
    listed = " ".join(",".join(map(str, s)) for s in shapes)
    assert f"Transpose input shapes to whitelist on a white-list-era CANN: " \
           f"{' '.join('`' + s + '`' for s in listed.split())}." in (out / "report.md").read_text()
    assert "| lvvit_s_bs1_opt.onnx | 1,6,197,197 | 0,3,2,1 | 16 | added by softmax_transpose |" in \
        (out / "report.md").read_text()
    assert f"lvvit-opt whitelist patch {' '.join('--shape ' + s for s in listed.split())}" in \
        (out / "atc_commands.sh").read_text()
