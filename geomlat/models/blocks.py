"""Residual blocks for CIFAR-style networks.

Every ReLU is its own non-inplace ``nn.ReLU`` so that any activation can be captured by name.
"""
from __future__ import annotations

from torch import Tensor, nn


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, padding=0, bias=False)


class BasicBlock(nn.Module):
    """Post-activation residual block (He et al. 2016a): ``relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut(x))``.

    Shapes: (B, in_channels, H, W) -> (B, out_channels, H / stride, W / stride), output non-negative.
    The shortcut is a strided 1x1 convolution + BN when the shape changes, the identity otherwise.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.relu2(out + identity)


class PreActBlock(nn.Module):
    """Pre-activation residual block (He et al. 2016b; the WideResNet block of Zagoruyko & Komodakis 2016).

    ``a = relu1(bn1(x))`` (skipped when ``preact=False``: the input is then already activated),
    ``out = conv2(dropout(relu2(bn2(conv1(a)))))``, returned as ``out + shortcut``, where the shortcut is
    ``conv1x1(a)`` when the shape changes and ``x`` otherwise (as in the reference WRN code).
    Shapes: (B, in_channels, H, W) -> (B, out_channels, H / stride, W / stride); the output is a residual
    sum, not post-activation.

    ``preact=False`` is used for the first block of a stage whose input comes from a stage ending with
    BN + ReLU: the reference networks apply exactly that BN + ReLU at the start of this block, and since
    the shape changes there, both branches use the activated input, so moving them is the same function.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, preact: bool = True, dropout: float = 0.0):
        super().__init__()
        self.shortcut = conv1x1(in_channels, out_channels, stride) if stride != 1 or in_channels != out_channels else None
        if not preact and self.shortcut is None:
            raise ValueError("preact=False needs a projection shortcut (the identity branch would see the activated input)")
        self.preact = preact
        if preact:
            self.bn1 = nn.BatchNorm2d(in_channels)
            self.relu1 = nn.ReLU()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = conv3x3(out_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        a = self.relu1(self.bn1(x)) if self.preact else x
        out = self.conv2(self.dropout(self.relu2(self.bn2(self.conv1(a)))))
        identity = x if self.shortcut is None else self.shortcut(a)
        return out + identity


def init_cifar_weights(model: nn.Module) -> None:
    """Kaiming-normal (fan_out) convolutions, BN weight 1 / bias 0, linear bias 0 (reference WRN init)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
