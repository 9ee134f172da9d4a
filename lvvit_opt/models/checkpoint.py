"""Checkpoint loading that never silently runs a half-random model.

Accepts a raw state dict or one wrapped under `state_dict` / `state_dict_ema` / `model`
(as timm's and TokenLabeling's training scripts save them), with or without the
`module.` prefix that DataParallel/DistributedDataParallel adds. Strict by default: a
missing or unexpected key is an error listing the keys (the seed's strict=False hid them).
"""
from __future__ import annotations

import argparse
import logging
import os
import re
from pathlib import Path
from typing import Callable, Mapping

import torch

from lvvit_opt.core.errors import UserError, reason_of, shown
from lvvit_opt.core.logs import LogCallback, reporter

logger = logging.getLogger(__name__)

WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema")
EMA_KEYS = ("state_dict_ema", "model_ema")


def read_state_dict(path: str | os.PathLike, ema: bool = False) -> dict[str, torch.Tensor]:
    """Read a checkpoint file and return the (unwrapped, unprefixed) state dict."""
    from lvvit_opt.core.readers import CHECKPOINT, check_loadable

    path = Path(path)
    if not path.exists():
        raise UserError(f"{shown(path)}: no such checkpoint file")
    check_loadable(path, "--checkpoint", CHECKPOINT)  # a FIFO or device: refused unopened; its tensors fit memory
    if path.suffix == ".safetensors":  # timm's Hugging Face hub format: a flat tensor map
        return _read_safetensors(path)
    try:
        # timm's training checkpoints (the seed's model_best.pth.tar) also pickle the
        # argparse Namespace of the run; allow exactly that, nothing else.
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(_load_refusal(path, exc)) from None
    state = _unwrap(obj, path, ema)
    return _strip_prefix(state)


def _load_refusal(path: Path, exc: Exception) -> str:
    """One whole sentence for a checkpoint torch.load refused. Its weights-only refusal is a
    page of advice; what the user needs is which object it holds and what to do about it."""
    text = str(exc)
    unsupported = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if unsupported:
        return (f"{shown(path)}: refused to unpickle it: it holds a pickled {unsupported.group(1)} object, which "
                f"could run code on load. If you trust its source, re-save just the weights (torch.save("
                f"torch.load(PATH, weights_only=False)['state_dict'], 'clean.pth')) and give that file")
    unpickler = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    if unpickler:  # not a pickle at all (a text file, a truncated download): the unpickler's own words
        return f"{shown(path)}: not a PyTorch checkpoint (unpickling failed: {unpickler.group(1).strip()[:120]})"
    return f"{shown(path)}: not a PyTorch checkpoint ({reason_of(exc, 160)})"


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return _strip_prefix(load_file(str(path), device="cpu"))
    except Exception as exc:
        raise UserError(f"{shown(path)}: not a safetensors checkpoint ({reason_of(exc, 160)})") from None


def _unwrap(obj, path: Path, ema: bool) -> Mapping[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise UserError(f"{shown(path)}: checkpoint holds a {type(obj).__name__}, not a state dict")
    if ema:
        for key in EMA_KEYS:
            if isinstance(obj.get(key), Mapping):
                return obj[key]
        raise UserError(f"{shown(path)}: --ema asked for, but the checkpoint has no {' / '.join(EMA_KEYS)} entry "
                        f"(top-level keys: {', '.join(map(str, list(obj)[:8]))})")
    for key in WRAPPER_KEYS:
        if isinstance(obj.get(key), Mapping):
            return obj[key]
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    raise UserError(f"{shown(path)}: no state dict found (top-level keys: {', '.join(map(str, list(obj)[:8]))})")


def _strip_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def load_checkpoint(
    model: torch.nn.Module,
    path: str | os.PathLike,
    *,
    ema: bool = False,
    strict: bool = True,
    log: LogCallback = None,
    convert: Callable[[dict, torch.nn.Module], dict] | None = None,
) -> list[str]:
    """Load weights into `model`. Strict: mismatched keys or shapes raise UserError listing
    them. Non-strict: the same list is logged as a warning, and the names of the model's
    tensors left at their random init (missing or wrong shape) are returned.

    `convert(state_dict, model)` (timm's `checkpoint_filter_fn`) maps another layout, such as
    an official repository's, to the model's; it is used only when the state dict as saved
    does not match and the converted one does, and the log says so.
    """
    state = read_state_dict(path, ema=ema)
    expected = model.state_dict()
    if convert is not None and _mismatch(state, expected):
        converted = _try_convert(convert, state, model)
        if converted is not None and not _mismatch(converted, expected):
            reporter(logger, log)(f"{path}: converted from the official layout with timm's "
                                  f"{convert.__module__}.{convert.__name__}")
            state = converted
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
                   for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    problems = _describe(missing, unexpected, wrong_shape)
    if problems and strict:
        raise UserError(f"{shown(path)}: checkpoint does not match the model: {problems} (use --non-strict to load anyway)")
    _refuse_integer_weights(path, state, expected)
    random_tensors = missing + [k.split(" ")[0] for k in wrong_shape]
    if problems:
        reporter(logger, log).warning(f"{path}: non-strict load: {problems}")
        for k in wrong_shape:
            state.pop(k.split(" ")[0])
    model.load_state_dict(state, strict=False)
    return random_tensors


def _refuse_integer_weights(path, state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> None:
    """load_state_dict casts int64 (bool, complex) values into float parameters without a word: a
    quantized or corrupted checkpoint would export as a model of rounded weights. Refuse it."""
    wrong = [key for key, want in expected.items()
             if isinstance(state.get(key), torch.Tensor) and want.is_floating_point()
             and not state[key].is_floating_point() and tuple(state[key].shape) == tuple(want.shape)]
    if wrong:
        key = wrong[0]
        raise UserError(f"{shown(path)}: {key} holds {str(state[key].dtype).removeprefix('torch.')} values where the "
                        f"model has {str(expected[key].dtype).removeprefix('torch.')} weights ({len(wrong)} such "
                        f"tensor(s)); not a float checkpoint of this model (quantized or converted?)")


def _mismatch(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> bool:
    return set(state) != set(expected) or any(tuple(state[k].shape) != tuple(v.shape) for k, v in expected.items())


def _try_convert(convert, state: dict, model: torch.nn.Module) -> dict | None:
    try:
        converted = convert(dict(state), model)
    except Exception:  # a converter for another layout fails in its own ways; keep the original report
        return None
    return dict(converted) if isinstance(converted, Mapping) else None


def _describe(missing: list[str], unexpected: list[str], wrong_shape: list[str]) -> str:
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {', '.join(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {', '.join(unexpected)}")
    if wrong_shape:
        parts.append(f"{len(wrong_shape)} shape mismatch(es): {'; '.join(wrong_shape)}")
    return "; ".join(parts)


def save_checkpoint(model: torch.nn.Module, path: str | os.PathLike, wrapper: str | None = "state_dict",
                    module_prefix: bool = False, ema_copy: bool = False) -> None:
    """Save in the official checkpoint layout (used by tests and the golden generator)."""
    from lvvit_opt.core.fileio import atomic_path

    state = model.state_dict()
    if module_prefix:
        state = {f"module.{k}": v for k, v in state.items()}
    obj: dict = dict(state) if wrapper is None else {wrapper: state, "epoch": 0, "arch": "lvvit"}
    if ema_copy:
        obj["state_dict_ema"] = {k: v.clone() for k, v in state.items()}
    with atomic_path(path, suffix=".pth") as tmp:
        torch.save(obj, str(tmp))
