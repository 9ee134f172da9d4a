"""The LV-ViT family (TokenLabeling), written here and weight-compatible with the official
checkpoints: same state-dict keys and shapes, same eval output
`head(cls) + 0.5 * max(aux_head(tokens))`.

Importing this module registers lvvit_t / lvvit_s / lvvit_m / lvvit_l (and the tiny test
configuration lvvit_golden) in timm's model registry.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
import torch.nn as nn
from timm.layers import DropPath, trunc_normal_
from timm.models import register_model

from lvvit_opt.models.zoo import CONFIGS, LvvitConfig, is_lvvit, lvvit_pretrained_cfg


class ConvStem(nn.Module):
    """4-conv patch embedding: 7x7/2 conv, two 3x3 convs (each with BN + ReLU), then an
    8x8/8 projection, i.e. a 16x16 patch overall."""

    def __init__(self, img_size: int = 224, in_chans: int = 3, channels: int = 64, embed_dim: int = 384):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, channels, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.proj = nn.Conv2d(channels, embed_dim, kernel_size=8, stride=8)
        self.num_patches = (img_size // 16) ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.relu(self.bn3(self.conv3(x)))
        return self.proj(x)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)  # (batch, heads, tokens, tokens)
        x = (attn @ v).transpose(1, 2).reshape(batch, tokens, dim)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # erf form
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block whose residual branches are scaled by 1/skip_lam."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, skip_lam: float, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.skip_lam = skip_lam

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x))) / self.skip_lam
        return x + self.drop_path(self.mlp(self.norm2(x))) / self.skip_lam


class LVViT(nn.Module):
    """LV-ViT for inference. Training-only features (MixToken, dense token targets) are
    not needed for deployment and are left out; the parameters are the same."""

    def __init__(self, cfg: LvvitConfig, img_size: int = 224, in_chans: int = 3, drop_path_rate: float = 0.0):
        super().__init__()
        self.cfg = cfg
        self.num_classes = cfg.num_classes
        self.num_features = self.embed_dim = cfg.embed_dim
        self.patch_embed = ConvStem(img_size, in_chans, cfg.stem_channels, cfg.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, cfg.embed_dim))
        rates = torch.linspace(0, drop_path_rate, cfg.depth).tolist()
        self.blocks = nn.ModuleList(
            Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, cfg.skip_lam, rate) for rate in rates
        )
        self.norm = nn.LayerNorm(cfg.embed_dim)
        self.head = nn.Linear(cfg.embed_dim, cfg.num_classes)
        self.aux_head = nn.Linear(cfg.embed_dim, cfg.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        return self.head(x[:, 0]) + 0.5 * self.aux_head(x[:, 1:]).max(dim=1)[0]


def default_cfg(name: str) -> dict:
    return lvvit_pretrained_cfg(name)


def build_lvvit(name: str, img_size: int = 224, **kwargs) -> LVViT:
    if name not in CONFIGS:
        from lvvit_opt.core.errors import UserError

        raise UserError(f"unknown model {name!r} (choose from {', '.join(CONFIGS)})")
    cfg = CONFIGS[name]
    if kwargs.get("num_classes") is not None:
        cfg = LvvitConfig(**{**cfg.__dict__, "num_classes": int(kwargs["num_classes"])})
    model = LVViT(cfg, img_size=img_size, in_chans=kwargs.get("in_chans", 3),
                  drop_path_rate=kwargs.get("drop_path_rate", 0.0))
    model.default_cfg = model.pretrained_cfg = lvvit_pretrained_cfg(name, img_size)
    return model


def _timm_entry(name: str) -> Callable[..., LVViT]:
    def create(pretrained: bool = False, **kwargs) -> LVViT:
        if pretrained:
            from lvvit_opt.core.errors import UserError

            raise UserError("no download here: pass the official checkpoint with lvvit_opt.load_checkpoint")
        for timm_only in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "features_only"):
            kwargs.pop(timm_only, None)
        return build_lvvit(name, **kwargs)

    create.__name__ = name
    create.__qualname__ = name
    create.__doc__ = f"LV-ViT {name} ({CONFIGS[name]})"
    create.__module__ = __name__
    return create


for _name in CONFIGS:
    globals()[_name] = register_model(_timm_entry(_name))


def create_model(
    name: str = "lvvit_s",
    checkpoint: str | None = None,
    *,
    ema: bool = False,
    strict: bool = True,
    seed: int = 0,
    img_size: int | None = None,
    log: Callable[[str], None] | None = None,
) -> nn.Module:
    """Build an eval-mode LV-ViT or timm model; load `checkpoint` if given, else a
    deterministic random init from `seed` (the caller must say loudly that the weights are
    random). `img_size` None keeps the model's own input size (224 for LV-ViT).
    `model.random_tensors` names the tensors a non-strict load left at their random init.

    A timm checkpoint is loaded strictly as saved; if its keys do not match and timm has a
    converter for that architecture (its `checkpoint_filter_fn`, which maps the official
    repositories' layouts to timm's), the converted state dict is loaded strictly instead.
    """
    from lvvit_opt.models.checkpoint import load_checkpoint

    torch.manual_seed(seed)
    if is_lvvit(name):
        model = build_lvvit(name, img_size=img_size or 224)
        convert = None
    else:
        model, convert = _create_timm(name, img_size)
    if checkpoint is not None:
        model.random_tensors = load_checkpoint(model, checkpoint, ema=ema, strict=strict, log=log, convert=convert)
    return model.eval()


def _create_timm(name: str, img_size: int | None) -> tuple[nn.Module, Callable | None]:
    import sys

    import timm

    from lvvit_opt.core.errors import UserError, reason_of

    kwargs = {} if img_size is None else {"img_size": img_size}
    try:
        model = timm.create_model(name, pretrained=False, **kwargs)
    except (RuntimeError, TypeError, ValueError, AssertionError) as exc:
        message = reason_of(exc, 200)
        raise UserError(f"timm could not build {name!r}{f' at --img-size {img_size}' if kwargs else ''}: "
                        f"{message}") from None
    entry = timm.models.model_entrypoint(name.split(".", 1)[0])
    convert = getattr(sys.modules.get(entry.__module__), "checkpoint_filter_fn", None)
    return model, convert


@contextmanager
def plain_attention(model: nn.Module) -> Iterator[int]:
    """timm's fused attention off while the block runs, restored afterwards.

    timm decides at construction (`self.fused_attn = use_fused_attn()`) whether attention
    runs as F.scaled_dot_product_attention, which the TorchScript exporter cannot write at
    opset 13. Inside this block every such module computes the plain
    MatMul -> Softmax -> MatMul, and `use_fused_attn()` answers False for code that asks
    at call time (timm's `exportable` layer config). Yields how many modules were switched.
    """
    from timm.layers import set_layer_config

    switched = [m for m in model.modules() if getattr(m, "fused_attn", None) is True]
    for module in switched:
        module.fused_attn = False
    try:
        with set_layer_config(exportable=True):
            yield len(switched)
    finally:
        for module in switched:
            module.fused_attn = True


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
