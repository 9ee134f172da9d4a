"""--shard K/N on preprocess / eval / postprocess and `merge`: the union equals one unsharded run."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from lvvit_opt.cli import main
from lvvit_opt.measure.evaluate import evaluate
from lvvit_opt.data import postprocess, preprocess_dir
from lvvit_opt.data.shard import Shard, merge_results, parse_shard, shard_index, split_by_shard
from lvvit_opt.data.synthetic import make_image_dir, val_name, write_val_txt
from lvvit_opt.core.errors import UserError

IMAGES = 10
SHARDS = 3


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, golden_onnx):
    """10 images; labels chosen from the golden model's own scores so that top-1 and top-5 are
    neither 0 nor 100 %, one image has no label and two labels have no image."""
    root = tmp_path_factory.mktemp("shard_data")
    images = root / "val"
    make_image_dir(images, IMAGES, sizes=((160, 120), (120, 170), (300, 200)), modes=("RGB", "RGB", "L"))
    whole = evaluate(golden_onnx, images, {p.name: 0 for p in sorted(images.iterdir())}, workers=1)
    labels = {}
    for number, stem in enumerate(sorted(whole.predictions), start=1):
        best = whole.predictions[stem]
        if number == 4:
            continue  # an image without a label
        labels[stem + ".JPEG"] = best[0] if number % 3 else (best[3] if number % 2 else 999 - best[0] % 7)
    labels[val_name(IMAGES + 1)] = 1  # labels without an image
    labels[val_name(IMAGES + 2)] = 2
    return images, write_val_txt(root / "val.txt", labels)


@pytest.fixture(scope="module")
def whole_as_one_shard(golden_onnx, dataset) -> dict:
    return evaluate(golden_onnx, *dataset, workers=1, shard=Shard(1, 1)).to_dict()


def _accuracy_fields(accuracy: dict) -> dict:
    keys = ("evaluated", "top1_correct", "top5_correct", "predictions", "labels", "unmatched_predictions",
            "missing_predictions", "unmatched_examples", "missing_examples", "top1", "top5")
    return {k: accuracy[k] for k in keys}


def test_split_rule_is_stable_and_documented():
    # the split must never change between versions: hosts running different versions must agree
    assert [shard_index(val_name(i)[:-5], 4) for i in range(1, 13)] == [1, 1, 3, 2, 2, 2, 4, 1, 3, 2, 3, 3]
    assert Shard(3, 4).holds(val_name(3)) and Shard(3, 4).holds("/x/" + val_name(3)[:-5] + ".bin")
    names = [val_name(i) for i in range(1, 101)]
    groups = split_by_shard(names, 3)
    assert sorted(sum(groups, [])) == names and all(groups)
    assert [Shard(k, 3).select(names) for k in (1, 2, 3)] == groups
    raw = os.fsdecode(b"img_\xff\xfe")  # a name that is not UTF-8: its bytes are hashed
    assert shard_index(raw, 7) == int.from_bytes(hashlib.sha256(b"img_\xff\xfe").digest()[:8], "big") % 7 + 1


@pytest.mark.parametrize("text, why", [("0/4", "between 1 and N"), ("5/4", "between 1 and N"), ("2", "K/N"),
                                       ("a/b", "K/N"), ("1/0", "between 1 and N"), ("-1/4", "K/N")])
def test_bad_shard_text_is_refused(text, why):
    with pytest.raises(UserError, match=why):
        parse_shard(text)
    assert parse_shard(" 2 / 4 ") == Shard(2, 4)


def test_eval_shards_merge_to_the_unsharded_result(golden_onnx, dataset, tmp_path):
    images, val = dataset
    whole = evaluate(golden_onnx, images, val, workers=1)
    assert 0 < whole.accuracy.top1_correct < whole.accuracy.top5_correct < whole.accuracy.evaluated
    assert (whole.accuracy.unmatched_predictions, whole.accuracy.missing_predictions) == (1, 2)

    files = []
    for k in range(1, SHARDS + 1):
        part = evaluate(golden_onnx, images, val, workers=1, shard=Shard(k, SHARDS))
        assert set(part.predictions) == {s for s in whole.predictions if shard_index(s, SHARDS) == k}
        files.append(tmp_path / f"shard{k}.json")
        files[-1].write_text(json.dumps(part.to_dict()))
    merged = merge_results(files[::-1])  # any order
    assert merged.predictions == whole.predictions
    assert _accuracy_fields(merged.accuracy.to_dict()) == _accuracy_fields(whole.accuracy.to_dict())


def test_cli_eval_shards_and_merge(golden_onnx, dataset, tmp_path, cli_runner):
    images, val = dataset
    whole = cli_runner.invoke(main, ["eval", golden_onnx, "--data", str(images), "--labels", str(val),
                                     "--workers", "1", "--json", str(tmp_path / "whole.json")])
    assert whole.exit_code == 0, whole.output
    outs = []
    for k in range(1, SHARDS + 1):
        outs.append(str(tmp_path / f"s{k}.json"))
        run = cli_runner.invoke(main, ["eval", golden_onnx, "--data", str(images), "--labels", str(val),
                                       "--workers", "1", "--shard", f"{k}/{SHARDS}", "--json", outs[-1]])
        assert run.exit_code == 0, run.output
    merged = cli_runner.invoke(main, ["merge", *outs, "--json", str(tmp_path / "merged.json")])
    assert merged.exit_code == 0, merged.output
    top_lines = [line for line in whole.output.splitlines() if line.startswith("top-")]
    assert top_lines and all(line in merged.output for line in top_lines)
    envelope = json.loads((tmp_path / "merged.json").read_text())
    assert (envelope["command"], envelope["ok"], envelope["result"]["shards"]) == ("merge", True, SHARDS)
    result = envelope["result"]
    to_stdout = cli_runner.invoke(main, ["merge", *outs, "--json", "-"])
    assert json.loads(to_stdout.stdout)["result"]["accuracy"] == result["accuracy"]
    expected = json.loads((tmp_path / "whole.json").read_text())
    expected = expected.get("result", expected)
    assert _accuracy_fields(result["accuracy"]) == _accuracy_fields(expected["accuracy"])


def _shard_files(golden_onnx, dataset, tmp_path, count=SHARDS) -> list[Path]:
    images, val = dataset
    files = []
    for k in range(1, count + 1):
        part = evaluate(golden_onnx, images, val, workers=1, shard=Shard(k, count))
        files.append(tmp_path / f"part{k}of{count}.json")
        files[-1].write_text(json.dumps(part.to_dict()))
    return files


def test_merge_refuses_missing_duplicated_and_mixed_shards(golden_onnx, dataset, tmp_path, cli_runner):
    files = _shard_files(golden_onnx, dataset, tmp_path)
    one, two, three = map(str, files)
    cases = [([one, three], "missing shard(s) 2/3"),
             ([one, two, two, three], f"shard 2/3 given twice ({two} and {two})"),
             ([one, two], "missing shard(s) 3/3")]
    for args, message in cases:
        run = cli_runner.invoke(main, ["merge", *args])
        assert run.exit_code == 2 and f"error: {message}" in run.output, run.output
    halves = _shard_files(golden_onnx, dataset, tmp_path, count=2)
    run = cli_runner.invoke(main, ["merge", one, two, three, str(halves[0])])
    assert run.exit_code == 2 and "different splits (N = 2, 3)" in run.output
    unsharded = tmp_path / "plain.json"
    unsharded.write_text(json.dumps(evaluate(*[golden_onnx, *dataset], workers=1).to_dict()))
    run = cli_runner.invoke(main, ["merge", str(unsharded)])
    assert run.exit_code == 2 and "not a shard result" in run.output


def test_merge_refuses_other_label_files_and_overlaps(golden_onnx, dataset, tmp_path):
    files = _shard_files(golden_onnx, dataset, tmp_path)
    data = json.loads(files[1].read_text())
    data["shard"]["labels_digest"] = "0" * 16
    files[1].write_text(json.dumps(data))
    with pytest.raises(UserError, match="different label files"):
        merge_results(files)
    data = json.loads(files[0].read_text())
    stolen = next(iter(json.loads(files[2].read_text())["shard"]["predictions"]))
    data["shard"]["predictions"][stolen] = [1, 2, 3, 4, 5]
    data["shard"]["labels_digest"] = "0" * 16
    files[0].write_text(json.dumps(data))
    files[2].write_text(json.dumps({**json.loads(files[2].read_text()),
                                    "shard": {**json.loads(files[2].read_text())["shard"], "labels_digest": "0" * 16}}))
    with pytest.raises(UserError, match=f"{stolen} has predictions in both"):
        merge_results(files)


def test_merge_reads_the_json_envelope_and_bom(golden_onnx, dataset, tmp_path):
    files = _shard_files(golden_onnx, dataset, tmp_path, count=1)
    data = json.loads(files[0].read_text())
    files[0].write_text("\ufeff" + json.dumps({"command": "eval", "version": "x", "ok": True, "result": data,
                                               "warnings": []}), encoding="utf-8")
    merged = merge_results(files)
    assert merged.accuracy.evaluated == data["accuracy"]["evaluated"]


def test_postprocess_shards_merge_to_the_unsharded_result(tmp_path, cli_runner):
    rng = np.random.default_rng(0)
    out_dir = tmp_path / "dumpOutput_device0"
    out_dir.mkdir()
    labels = {}
    for i in range(1, 31):
        scores = rng.standard_normal(1000).astype(np.float32)
        scores.tofile(out_dir / f"{val_name(i)[:-5]}_1.bin")
        labels[val_name(i)] = int(np.argsort(-scores)[i % 7])  # top-1 for i%7==0, top-5 for i%7<5
    labels[val_name(40)] = 3
    val = write_val_txt(tmp_path / "val.txt", labels)
    whole = postprocess(out_dir, val)
    files = []
    for k in (1, 2, 3, 4):
        files.append(str(tmp_path / f"p{k}.json"))
        run = cli_runner.invoke(main, ["postprocess", str(out_dir), "--labels", str(val), "--shard", f"{k}/4",
                                       "--json", files[-1]])
        assert run.exit_code == 0, run.output
    merged = merge_results(files)
    assert _accuracy_fields(merged.accuracy.to_dict()) == _accuracy_fields(whole.to_dict())
    assert (whole.top1_correct, whole.top5_correct, whole.missing_predictions) == (4, 22, 1)


def test_preprocess_shards_are_disjoint_and_complete(dataset, tmp_path, cli_runner):
    images, _ = dataset
    whole = preprocess_dir(images, tmp_path / "whole", workers=1)
    outputs, results = [], []
    for k in (1, 2):
        info = tmp_path / f"shard{k}.info"
        result = tmp_path / f"prep{k}.json"
        run = cli_runner.invoke(main, ["preprocess", str(images), str(tmp_path / "bins"), "--workers", "1",
                                       "--shard", f"{k}/2", "--info", str(info), "--json", str(result)])
        assert run.exit_code == 0, run.output
        lines = info.read_text().splitlines()
        assert all(Shard(k, 2).holds(line.split()[1]) for line in lines)
        outputs += [line.split()[1] for line in lines]
        results.append(str(result))
    assert sorted(Path(p).name for p in outputs) == sorted(Path(p).name for p in whole.outputs)
    for path in outputs:  # byte-identical to the unsharded run
        assert Path(path).read_bytes() == (tmp_path / "whole" / Path(path).name).read_bytes()
    merged = merge_results(results)
    assert merged.counts == {"images": IMAGES, "written": IMAGES, "skipped": 0, "failed": 0}


def test_an_empty_shard_is_a_valid_result(golden_onnx, dataset, tmp_path):
    images, val = dataset
    files = []
    for k in range(1, 7):  # 2 images in 6 shards: at least 4 shards are empty
        part = evaluate(golden_onnx, images, val, workers=1, limit=2, shard=Shard(k, 6))
        files.append(tmp_path / f"e{k}.json")
        files[-1].write_text(json.dumps(part.to_dict()))
    merged = merge_results(files)
    whole = evaluate(golden_onnx, images, val, workers=1, limit=2)
    assert _accuracy_fields(merged.accuracy.to_dict()) == _accuracy_fields(whole.accuracy.to_dict())


@pytest.mark.parametrize("damage", [
    lambda shard: shard.update(predictions="oops"),
    lambda shard: shard["predictions"].update({"x": [1.5, 2]}),
    lambda shard: shard["predictions"].update({"x": [float("nan")]}),
    lambda shard: shard["labels"].update({"x": -3}),
    lambda shard: shard.pop("labels"),
])
def test_merge_refuses_malformed_shard_records(whole_as_one_shard, tmp_path, cli_runner, damage):
    data = json.loads(json.dumps(whole_as_one_shard))
    damage(data["shard"])
    (tmp_path / "bad.json").write_text(json.dumps(data))
    run = cli_runner.invoke(main, ["merge", str(tmp_path / "bad.json")])
    assert run.exit_code == 2 and "predictions or labels are malformed" in run.output, run.output


def test_merge_lists_unreadable_images_and_exits_1(whole_as_one_shard, tmp_path, cli_runner):
    data = json.loads(json.dumps(whole_as_one_shard))
    data["failed"] = {"ILSVRC2012_val_00000099.JPEG": "cannot identify image file"}
    (tmp_path / "s.json").write_text(json.dumps(data))
    run = cli_runner.invoke(main, ["merge", str(tmp_path / "s.json"), "--json", str(tmp_path / "m.json")])
    assert run.exit_code == 1, run.output
    assert "failed: ILSVRC2012_val_00000099.JPEG: cannot identify image file" in run.output
    envelope = json.loads((tmp_path / "m.json").read_text())
    assert envelope["ok"] is False and envelope["result"]["failed"] == data["failed"]
