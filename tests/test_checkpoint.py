"""Checkpoint loading: every official wrapping, the module. prefix, EMA, strictness."""
from __future__ import annotations

import pytest
import torch

from lvvit_opt.models.checkpoint import load_checkpoint, save_checkpoint
from lvvit_opt.core.errors import UserError
from lvvit_opt.models.model import create_model


@pytest.fixture
def source():
    return create_model("lvvit_golden", seed=11)


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model", "state_dict_ema"])
@pytest.mark.parametrize("prefix", [False, True])
@pytest.mark.parametrize("suffix", [".pth", ".pth.tar"])
def test_round_trip_every_wrapping(tmp_path, source, wrapper, prefix, suffix):
    path = tmp_path / f"ckpt{suffix}"
    save_checkpoint(source, path, wrapper=wrapper, module_prefix=prefix)
    target = create_model("lvvit_golden", seed=0)
    assert not _same_weights(source, target)
    load_checkpoint(target, path)
    assert _same_weights(source, target)


def test_ema_picks_the_ema_weights(tmp_path, source):
    path = tmp_path / "ema.pth.tar"
    ema_model = create_model("lvvit_golden", seed=12)
    obj = {"state_dict": source.state_dict(),
           "state_dict_ema": {f"module.{k}": v for k, v in ema_model.state_dict().items()}}
    torch.save(obj, path)
    plain, ema = create_model("lvvit_golden"), create_model("lvvit_golden")
    load_checkpoint(plain, path)
    load_checkpoint(ema, path, ema=True)
    assert _same_weights(plain, source)
    assert _same_weights(ema, ema_model)


def test_ema_requested_but_absent_is_an_error(tmp_path, source):
    path = tmp_path / "plain.pth"
    save_checkpoint(source, path)
    with pytest.raises(UserError, match="--ema"):
        load_checkpoint(create_model("lvvit_golden"), path, ema=True)


def test_timm_training_checkpoint_with_args_namespace(tmp_path, source):
    import argparse

    path = tmp_path / "model_best.pth.tar"
    torch.save({"epoch": 3, "arch": "lvvit_s", "state_dict": source.state_dict(),
                "args": argparse.Namespace(lr=0.1), "version": 2}, path)
    target = create_model("lvvit_golden")
    load_checkpoint(target, path)
    assert _same_weights(source, target)


def test_strict_failure_names_missing_and_unexpected_keys(tmp_path, source):
    state = source.state_dict()
    state.pop("aux_head.weight")
    state["blocks.9.attn.qkv.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save({"state_dict": state}, path)
    target = create_model("lvvit_golden")
    with pytest.raises(UserError) as info:
        load_checkpoint(target, path)
    message = str(info.value)
    assert "1 missing key(s): aux_head.weight" in message
    assert "1 unexpected key(s): blocks.9.attn.qkv.weight" in message
    assert "--non-strict" in message


def test_non_strict_warns_with_the_keys_and_loads_the_rest(tmp_path, source):
    state = source.state_dict()
    state.pop("aux_head.bias")
    state["head.weight"] = torch.zeros(5, 5)  # wrong shape: skipped, reported
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    target = create_model("lvvit_golden", seed=0)
    before = target.state_dict()["head.weight"].clone()
    messages: list[str] = []
    load_checkpoint(target, path, strict=False, log=messages.append)
    assert len(messages) == 1 and "aux_head.bias" in messages[0] and "head.weight (5, 5)" in messages[0]
    assert torch.equal(target.state_dict()["head.weight"], before)
    assert torch.equal(target.state_dict()["norm.weight"], source.state_dict()["norm.weight"])


def test_wrong_architecture_checkpoint_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(torch.nn.Linear(3, 3).state_dict(), path)
    with pytest.raises(UserError, match="missing key"):
        load_checkpoint(create_model("lvvit_golden"), path)


@pytest.mark.parametrize("content", [b"", b"definitely not a checkpoint\n", b"PK\x03\x04garbage"])
def test_not_a_checkpoint_is_a_one_line_error(tmp_path, content):
    path = tmp_path / "junk.pth"
    path.write_bytes(content)
    with pytest.raises(UserError) as info:
        load_checkpoint(create_model("lvvit_golden"), path)
    assert "not a PyTorch checkpoint" in str(info.value)
    assert "\n" not in str(info.value)
