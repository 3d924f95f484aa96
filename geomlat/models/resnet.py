"""CIFAR-style ResNet18 (post-activation) and PreActResNet18: 3x3 stem, no max-pool, 4 stages of 2 blocks."""
from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from .blocks import BasicBlock, PreActBlock, conv3x3, init_cifar_weights
from .common import check_positive_int, find_relu_names, output_size, pooled_features


class ResNet18(nn.Module):
    """ResNet18 for 32x32 inputs (He et al. 2016a; the usual CIFAR variant with a 3x3 stem and no max-pool).

    Layout: ``conv1``-``bn1``-``relu`` stem -> ``stage1..4`` (2 :class:`BasicBlock` each, channels
    w, 2w, 4w, 8w with w = ``width`` (64), strides 1, 2, 2, 2) -> ``pool`` -> ``fc``. Every block ends with
    a ReLU, so stage outputs are non-negative. 11,173,962 parameters for width 64 and 10 classes.

    Shapes: (B, in_channels, H, W) -> (B, output_dim); ``pool`` gives (B, 8w).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, out_dim: int | None = None, width: int = 64):
        super().__init__()
        check_positive_int(in_channels, "in_channels")
        check_positive_int(width, "width")
        self.output_dim = output_size(num_classes, out_dim)
        channels = [width, width, 2 * width, 4 * width, 8 * width]
        self.conv1 = conv3x3(in_channels, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        for s in range(4):
            stride = 1 if s == 0 else 2
            blocks = OrderedDict(
                block0=BasicBlock(channels[s], channels[s + 1], stride),
                block1=BasicBlock(channels[s + 1], channels[s + 1], 1),
            )
            self.add_module(f"stage{s + 1}", nn.Sequential(blocks))
        self.pool = pooled_features(2)
        self.fc = nn.Linear(channels[4], self.output_dim)
        init_cifar_weights(self)
        self.stage_names = ["stage1", "stage2", "stage3", "stage4"]
        self.feature_name = "pool"
        self.relu_names = find_relu_names(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.stage4(self.stage3(self.stage2(self.stage1(x))))
        return self.fc(self.pool(x))


class PreActResNet18(nn.Module):
    """Pre-activation ResNet18 for 32x32 inputs (He et al. 2016b), the network of the robustness experiments.

    Layout: 3x3 stem conv -> ``stage1..4`` (2 :class:`PreActBlock` each, channels w, 2w, 4w, 8w, strides
    1, 2, 2, 2), each stage ending with BN + ReLU -> ``pool`` -> ``fc``. The BN + ReLU at the end of
    stages 1-3 are the pre-activation of the next stage's first block moved outside it (same function);
    the one ending stage 4 is the final activation of He et al. (the popular kuangliu CIFAR code omits it,
    one BatchNorm = 2 * 8w parameters less). Stage outputs are therefore post-ReLU. 11,172,170 parameters
    for width 64 and 10 classes.

    Shapes: (B, in_channels, H, W) -> (B, output_dim); ``pool`` gives (B, 8w).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, out_dim: int | None = None, width: int = 64):
        super().__init__()
        check_positive_int(in_channels, "in_channels")
        check_positive_int(width, "width")
        self.output_dim = output_size(num_classes, out_dim)
        channels = [width, width, 2 * width, 4 * width, 8 * width]
        self.conv1 = conv3x3(in_channels, width)
        for s in range(4):
            stride = 1 if s == 0 else 2
            blocks = OrderedDict(
                block0=PreActBlock(channels[s], channels[s + 1], stride, preact=(s == 0)),
                block1=PreActBlock(channels[s + 1], channels[s + 1], 1),
                bn=nn.BatchNorm2d(channels[s + 1]),
                relu=nn.ReLU(),
            )
            self.add_module(f"stage{s + 1}", nn.Sequential(blocks))
        self.pool = pooled_features(2)
        self.fc = nn.Linear(channels[4], self.output_dim)
        init_cifar_weights(self)
        self.stage_names = ["stage1", "stage2", "stage3", "stage4"]
        self.feature_name = "pool"
        self.relu_names = find_relu_names(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        x = self.stage4(self.stage3(self.stage2(self.stage1(x))))
        return self.fc(self.pool(x))
