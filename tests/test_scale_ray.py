"""eval --engine ray on a local Ray (2 CPUs, 2 declared NPUs) started once for this module:
the same predictions and top-1/top-5 as the local engine, .om workers on Ray's NPU resource."""
from __future__ import annotations

import json
import os
import sys

import pytest

from fakes.ascend_env import FAKE_PYTHON, fake_ais_bench, fake_om, fake_tools  # noqa: F401
from lvvit_opt.cli import main
from lvvit_opt.measure.evaluate import evaluate
from lvvit_opt.data.shard import Shard, merge_results
from lvvit_opt.data.synthetic import make_image_dir, write_val_txt
from lvvit_opt.core.errors import UserError
from lvvit_opt.scale import evaluate_any

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[test]' installs it (ray extra)")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (its start-up takes seconds). Two NPUs are declared as a
    custom resource; their workers import the stand-in ais_bench."""
    if ray.is_initialized():
        ray.shutdown()
    path = os.pathsep.join([str(FAKE_PYTHON), *filter(None, [os.environ.get("PYTHONPATH")])])
    ray.init(num_cpus=2, include_dashboard=False, resources={"NPU": 2}, logging_level="ERROR", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, "FAKE_NPU_COUNT": "1"}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray_images")
    paths = make_image_dir(root / "val", 11, sizes=((160, 120), (120, 170), (300, 200)), modes=("RGB", "L"))
    val = write_val_txt(root / "val.txt", {p.name: (13 * i) % 1000 for i, p in enumerate(paths)})
    return root / "val", val


def _same(a, b) -> None:
    assert a.predictions == b.predictions
    assert {k: v for k, v in a.accuracy.to_dict().items() if k != "source"} == \
        {k: v for k, v in b.accuracy.to_dict().items() if k != "source"}


def test_ray_equals_local_and_streams_progress(local_ray, golden_onnx, images):
    data, val = images
    local = evaluate(golden_onnx, data, val, workers=1)
    seen = []
    on_ray = evaluate_any(golden_onnx, data, val, engine="ray", ray_workers=2, progress=lambda d, t: seen.append((d, t)))
    _same(on_ray, local)
    assert len(local.predictions) == 11
    assert seen == sorted(seen) and seen[-1] == (11, 11) and len(seen) >= 2  # per chunk, as chunks finish
    assert [d["worker"].split(" (")[0] for d in on_ray.workers_detail] == ["ray worker 0", "ray worker 1"]
    assert sum(d["images"] for d in on_ray.workers_detail) == 11
    assert len({d["runner"]["pid"] for d in on_ray.workers_detail} | {os.getpid()}) == 3
    assert on_ray.runner["engine"]["workers"] == 2 and on_ray.runner["engine"]["startup_s"] >= 0
    assert any(note.startswith("ray: 2 worker(s) (1 CPU each)") for note in on_ray.notes)


def test_a_ray_shard_and_a_local_shard_merge_to_the_local_result(local_ray, golden_onnx, images, tmp_path):
    data, val = images
    local = evaluate(golden_onnx, data, val, workers=1)
    files = []
    for k, engine in ((1, "ray"), (2, "local")):  # shards may run on any scheduler
        part = evaluate_any(golden_onnx, data, val, engine=engine, workers=1, shard=Shard(k, 2))
        files.append(tmp_path / f"r{k}.json")
        files[-1].write_text(json.dumps(part.to_dict()))
    merged = merge_results(files)
    assert merged.predictions == local.predictions
    assert merged.accuracy.top1_correct == local.accuracy.top1_correct
    assert merged.accuracy.top5_correct == local.accuracy.top5_correct


def test_om_workers_take_one_npu_each(local_ray, fake_ais_bench, fake_om, images):
    _, om = fake_om
    data, val = images
    local = evaluate(om, data, val, workers=1)
    on_ray = evaluate_any(om, data, val, engine="ray")
    _same(on_ray, local)
    assert sorted(tuple(d["runner"]["npu"]) for d in on_ray.workers_detail) == [("0",), ("1",)]
    assert {d["runner"]["backend"] for d in on_ray.workers_detail} == {"ais_bench"}
    assert on_ray.runner["engine"]["resource"] == "NPU"


def test_cli_eval_engine_ray(local_ray, golden_onnx, images, cli_runner, tmp_path):
    data, val = images
    out = tmp_path / "ray.json"
    run = cli_runner.invoke(main, ["eval", golden_onnx, "--data", str(data), "--labels", str(val),
                                   "--engine", "ray", "--ray-workers", "1", "--json", str(out)])
    assert run.exit_code == 0, run.output
    result = json.loads(out.read_text())
    result = result.get("result", result)
    local = evaluate(golden_onnx, data, val, workers=1)
    assert result["accuracy"]["top5_correct"] == local.accuracy.top5_correct
    assert len(result["workers_detail"]) == 1
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    run = cli_runner.invoke(main, ["eval", str(bad), "--data", str(data), "--labels", str(val), "--engine", "ray"])
    assert run.exit_code == 2 and run.output.startswith(f"error: {bad}: ") and "Traceback" not in run.output
    with pytest.raises(UserError, match="not a readable ONNX model"):  # raised in the actor, same kind here
        evaluate_any(str(bad), data, val, engine="ray", ray_workers=1)
    wrong = write_val_txt(tmp_path / "wrong.txt", {p.name: 1000 for p in sorted(data.iterdir())})
    run = cli_runner.invoke(main, ["eval", golden_onnx, "--data", str(data), "--labels", str(wrong), "--engine", "ray",
                                   "--ray-workers", "1"])
    assert run.exit_code == 2 and "outside the model's 1000 classes" in run.output, run.output
    run = cli_runner.invoke(main, ["eval", golden_onnx, "--data", str(data), "--labels", str(val), "--engine", "ray",
                                   "--device", "0,1"])
    assert run.exit_code == 2 and "Ray picks the chips" in run.output


def test_without_ray_installed_the_message_says_how(monkeypatch, golden_onnx, images):
    from lvvit_opt.scale import ray_engine

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(UserError, match=r"pip install 'lvvit-opt\[ray\]'"):
        ray_engine.import_ray()


def test_chunks_are_whole_batches_and_bounded():
    from lvvit_opt.scale.ray_engine import _chunks

    names = [f"img{i:05d}" for i in range(50000)]
    chunks = _chunks(names, 8, 16)
    assert sum(chunks, []) == names
    assert {len(c) for c in chunks[:-1]} == {32 * 16}  # progress every 512 images on ImageNet
    assert [len(c) for c in _chunks(names[:100], 2, 8)] == [16] * 6 + [4]
    assert _chunks([], 2, 8) == []
