"""CNN backbones for image timesteps (AMAGO's `cnn.py`): float `[M, C, H, W]` -> feature maps; DrQ-v2 random shift."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .common import activation


@torch.no_grad()
def delta_orthogonal_init(module: nn.Module) -> None:
    """Conv2d: zero except an orthogonal [out, in] centre tap (leaky-relu gain); Linear: orthogonal, zero bias."""
    if isinstance(module, nn.Conv2d):
        module.weight.zero_()
        kh, kw = module.weight.shape[-2:]
        centre = torch.empty(module.weight.shape[:2])
        nn.init.orthogonal_(centre, gain=nn.init.calculate_gain("leaky_relu"))
        module.weight[:, :, kh // 2, kw // 2] = centre
    elif isinstance(module, nn.Linear):
        nn.init.orthogonal_(module.weight)
    if isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
        module.bias.zero_()


class NatureCNN(nn.Sequential):
    """conv(C->32, k8, s4) act, conv(32->64, k4, s2) act, conv(64->64, k3, s1) act."""

    def __init__(self, in_channels: int, act: str = "leaky_relu"):
        super().__init__(nn.Conv2d(in_channels, 32, 8, 4), activation(act), nn.Conv2d(32, 64, 4, 2), activation(act),
                         nn.Conv2d(64, 64, 3, 1), activation(act))
        self.apply(delta_orthogonal_init)


class DrQCNN(nn.Sequential):
    """conv(C->32, k3, s2) act + 3 x [conv(32->32, k3, s1) act]."""

    def __init__(self, in_channels: int, act: str = "leaky_relu"):
        layers: list[nn.Module] = [nn.Conv2d(in_channels, 32, 3, 2), activation(act)]
        for _ in range(3):
            layers += [nn.Conv2d(32, 32, 3, 1), activation(act)]
        super().__init__(*layers)
        self.apply(delta_orthogonal_init)


class GridworldCNN(nn.Sequential):
    """Small kernels for tiny symbolic grids (e.g. 7x7 BabyAI views): channels 16/32/48, kernel 2, stride 1."""

    def __init__(self, in_channels: int, act: str = "leaky_relu", channels=(16, 32, 48), kernels=(2, 2, 2),
                 strides=(1, 1, 1)):
        layers: list[nn.Module] = []
        for c, ch, k, s in zip((in_channels, *channels), channels, kernels, strides):
            layers += [nn.Conv2d(c, ch, k, s), activation(act)]
        super().__init__(*layers)


class _ImpalaResBlock(nn.Module):
    """norm(x + conv2(act(conv1(act(x)))))."""

    def __init__(self, depth: int, act: str, post_group_norm: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(depth, depth, 3, padding=1)
        self.conv2 = nn.Conv2d(depth, depth, 3, padding=1)
        self.act1, self.act2 = activation(act), activation(act)
        self.norm = nn.GroupNorm(4, depth) if post_group_norm else nn.Identity()

    def forward(self, x):
        return self.norm(x + self.conv2(self.act2(self.conv1(self.act1(x)))))


class IMPALACNN(nn.Sequential):
    """For each depth: conv3x3 'same' -> MaxPool(3, stride 2) -> 2 residual blocks. No final activation."""

    def __init__(self, in_channels: int, act: str = "leaky_relu", depths=(16, 32, 32), post_group_norm: bool = True):
        layers: list[nn.Module] = []
        for c, d in zip((in_channels, *depths), depths):
            layers += [nn.Conv2d(c, d, 3, padding=1), nn.MaxPool2d(3, 2),
                       _ImpalaResBlock(d, act, post_group_norm), _ImpalaResBlock(d, act, post_group_norm)]
        super().__init__(*layers)


BACKBONES = {"nature": NatureCNN, "drq": DrQCNN, "gridworld": GridworldCNN, "impala": IMPALACNN}


def make_backbone(name: str, in_channels: int, act: str = "leaky_relu") -> nn.Module:
    if name not in BACKBONES:
        raise ValueError(f"unknown cnn backbone {name!r}; expected one of {sorted(BACKBONES)}")
    return BACKBONES[name](in_channels, act=act)


def random_shift(x: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ-v2 augmentation: replicate-pad by `pad`, crop back with an integer shift in [0, 2*pad] per frame."""
    m, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    shift = torch.randint(0, 2 * pad + 1, (m, 2), device=x.device, generator=generator)
    rows = (torch.arange(h, device=x.device) + shift[:, :1])[:, :, None]  # [M, H, 1]
    cols = (torch.arange(w, device=x.device) + shift[:, 1:])[:, None, :]  # [M, 1, W]
    frame = torch.arange(m, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[frame, rows, cols].permute(0, 3, 1, 2)
