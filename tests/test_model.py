"""The LV-ViT family matches the official TokenLabeling parameter names and shapes."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from lvvit_opt.models.model import create_model, parameter_count


def official_state_dict_shapes(dim: int, depth: int, stem: int, classes: int = 1000, tokens: int = 197,
                               mlp_ratio: int = 3) -> dict[str, tuple]:
    """The official lvvit state-dict layout, written out from TokenLabeling's naming."""
    shapes: dict[str, tuple] = {"cls_token": (1, 1, dim), "pos_embed": (1, tokens, dim)}
    shapes["patch_embed.conv1.weight"] = (stem, 3, 7, 7)
    shapes["patch_embed.conv2.weight"] = (stem, stem, 3, 3)
    shapes["patch_embed.conv3.weight"] = (stem, stem, 3, 3)
    for bn in ("bn1", "bn2", "bn3"):
        for field in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"patch_embed.{bn}.{field}"] = (stem,)
        shapes[f"patch_embed.{bn}.num_batches_tracked"] = ()
    shapes["patch_embed.proj.weight"] = (dim, stem, 8, 8)
    shapes["patch_embed.proj.bias"] = (dim,)
    hidden = dim * mlp_ratio
    for i in range(depth):
        p = f"blocks.{i}."
        shapes.update({
            p + "norm1.weight": (dim,), p + "norm1.bias": (dim,),
            p + "attn.qkv.weight": (3 * dim, dim),
            p + "attn.proj.weight": (dim, dim), p + "attn.proj.bias": (dim,),
            p + "norm2.weight": (dim,), p + "norm2.bias": (dim,),
            p + "mlp.fc1.weight": (hidden, dim), p + "mlp.fc1.bias": (hidden,),
            p + "mlp.fc2.weight": (dim, hidden), p + "mlp.fc2.bias": (dim,),
        })
    shapes.update({"norm.weight": (dim,), "norm.bias": (dim,),
                   "head.weight": (classes, dim), "head.bias": (classes,),
                   "aux_head.weight": (classes, dim), "aux_head.bias": (classes,)})
    return shapes


@pytest.mark.parametrize("name, dim, depth, stem, params", [
    ("lvvit_s", 384, 16, 64, 26_151_824),
    ("lvvit_l", 768, 24, 128, 150_021_968),
])
def test_keys_shapes_and_parameter_count_match_official(name, dim, depth, stem, params):
    model = create_model(name)
    actual = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = official_state_dict_shapes(dim, depth, stem)
    assert sorted(actual) == sorted(expected)
    assert actual == expected
    assert parameter_count(model) == params
    if name == "lvvit_s":
        assert round(params / 1e6, 2) == 26.15


def test_eval_output_is_head_plus_half_max_aux_head():
    model = create_model("lvvit_golden", seed=3)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        tokens = model.forward_features(x)
        expected = model.head(tokens[:, 0]) + 0.5 * model.aux_head(tokens[:, 1:]).max(dim=1).values
        assert torch.allclose(model(x), expected)
        assert model(x).shape == (2, 1000)


def test_random_init_is_deterministic_per_seed():
    a, b, c = (create_model("lvvit_golden", seed=s).state_dict() for s in (7, 7, 8))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["pos_embed"], c["pos_embed"])


def test_timm_registry_works_after_import_without_eager_torch():
    code = (
        "import sys, lvvit_opt, lvvit_opt.cli\n"
        "assert 'torch' not in sys.modules and 'timm' not in sys.modules, 'heavy import at startup'\n"
        "import timm\n"
        "m = timm.create_model('lvvit_s')\n"
        "print(sum(p.numel() for p in m.parameters()))\n"
        "print(sorted(n for n in timm.list_models('lvvit_*')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    count, names = out.strip().splitlines()
    assert count == "26151824"
    assert all(n in names for n in ("lvvit_t", "lvvit_s", "lvvit_m", "lvvit_l"))
