"""The LV-ViT family (TokenLabeling), written here and weight-compatible with the official
checkpoints: same state-dict keys and shapes, same eval output
`head(cls) + 0.5 * max(aux_head(tokens))`.

Importing this module registers lvvit_t / lvvit_s / lvvit_m / lvvit_l (and the tiny test
configuration lvvit_golden) in timm's model registry.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
from timm.layers import DropPath, trunc_normal_
from timm.models import register_model


@dataclass(frozen=True)
class LvvitConfig:
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 3.0
    stem_channels: int = 64  # "4_2" stem: 64, "4_2_128": 128
    skip_lam: float = 1.0
    crop_pct: float = 0.9
    num_classes: int = 1000


CONFIGS: dict[str, LvvitConfig] = {
    "lvvit_t": LvvitConfig(embed_dim=240, depth=12, num_heads=4, skip_lam=1.0),
    "lvvit_s": LvvitConfig(embed_dim=384, depth=16, num_heads=6, skip_lam=2.0),
    "lvvit_m": LvvitConfig(embed_dim=512, depth=20, num_heads=8, skip_lam=2.0, crop_pct=1.0),
    "lvvit_l": LvvitConfig(embed_dim=768, depth=24, num_heads=12, stem_channels=128, skip_lam=3.0, crop_pct=1.0),
    # Tiny configuration for golden tensors and fast tests: real stem, real token-labeling head.
    "lvvit_golden": LvvitConfig(embed_dim=48, depth=2, num_heads=3, skip_lam=2.0),
}


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
    cfg = CONFIGS[name]
    return {
        "num_classes": cfg.num_classes, "input_size": (3, 224, 224), "crop_pct": cfg.crop_pct,
        "interpolation": "bicubic", "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
        "classifier": "head", "architecture": name,
    }


def build_lvvit(name: str, img_size: int = 224, **kwargs) -> LVViT:
    if name not in CONFIGS:
        from .errors import UserError

        raise UserError(f"unknown model {name!r} (choose from {', '.join(CONFIGS)})")
    cfg = CONFIGS[name]
    if kwargs.get("num_classes") is not None:
        cfg = LvvitConfig(**{**cfg.__dict__, "num_classes": int(kwargs["num_classes"])})
    model = LVViT(cfg, img_size=img_size, in_chans=kwargs.get("in_chans", 3),
                  drop_path_rate=kwargs.get("drop_path_rate", 0.0))
    model.default_cfg = default_cfg(name)
    return model


def _timm_entry(name: str) -> Callable[..., LVViT]:
    def create(pretrained: bool = False, **kwargs) -> LVViT:
        if pretrained:
            from .errors import UserError

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
    img_size: int = 224,
    log: Callable[[str], None] | None = None,
) -> LVViT:
    """Build an eval-mode LV-ViT; load `checkpoint` if given, else a deterministic random
    init from `seed` (the caller must say loudly that the weights are random).
    `model.random_tensors` names the tensors a non-strict load left at their random init."""
    torch.manual_seed(seed)
    model = build_lvvit(name, img_size=img_size)
    if checkpoint is not None:
        from .checkpoint import load_checkpoint

        model.random_tensors = load_checkpoint(model, checkpoint, ema=ema, strict=strict, log=log)
    return model.eval()


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
