"""Small models for the embedded data sets, fast on a CPU: SmallCNN (8x8 digits), Conv1dNet (MNIST-1D), MLP."""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Sequence

from torch import Tensor, nn

from .common import check_positive_int, find_relu_names, output_size, pooled_features


def conv_bn_relu(conv: nn.Module, bn: nn.Module) -> nn.Sequential:
    """One stage ``conv - bn - relu`` with named children (``stage.conv``, ``stage.bn``, ``stage.relu``); the
    ReLU is its own module, so the stage output (post-ReLU, non-negative) can be captured."""
    return nn.Sequential(OrderedDict(conv=conv, bn=bn, relu=nn.ReLU()))


class SmallCNN(nn.Module):
    """Three-stage CNN for 8x8 images (scikit-learn digits).

    ``stage1``: conv3x3(in, w) - BN - ReLU at 8x8; ``stage2``: conv3x3(w, 2w, stride 2) - BN - ReLU at 4x4;
    ``stage3``: conv3x3(2w, 4w, stride 2) - BN - ReLU at 2x2; ``pool`` (global average) -> ``fc``.
    Parameters: 9 in w + 18 w^2 + 72 w^2 + 14 w + (4 w + 1) output_dim (+ in-channel terms), e.g. 24,394 for
    w = 16 and 10 classes, 6,346 for w = 8, 1,690 for w = 4, 379,594 for w = 64.

    Shapes: (B, in_channels, 8, 8) -> (B, output_dim) (any H, W >= 1 works); ``pool`` gives (B, 4w) >= 0.
    """

    def __init__(self, width: int = 16, num_classes: int = 10, in_channels: int = 1, out_dim: int | None = None):
        super().__init__()
        check_positive_int(width, "width")
        check_positive_int(in_channels, "in_channels")
        self.width = width
        self.output_dim = output_size(num_classes, out_dim)
        channels = [in_channels, width, 2 * width, 4 * width]
        for s in range(3):
            conv = nn.Conv2d(channels[s], channels[s + 1], 3, stride=1 if s == 0 else 2, padding=1, bias=False)
            self.add_module(f"stage{s + 1}", conv_bn_relu(conv, nn.BatchNorm2d(channels[s + 1])))
        self.pool = pooled_features(2)
        self.fc = nn.Linear(channels[3], self.output_dim)
        self.stage_names = ["stage1", "stage2", "stage3"]
        self.feature_name = "pool"
        self.relu_names = find_relu_names(self)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"SmallCNN expects images (B, C, H, W), got shape {tuple(x.shape)}")
        return self.fc(self.pool(self.stage3(self.stage2(self.stage1(x)))))


class Conv1dNet(nn.Module):
    """Three-stage 1-D CNN for MNIST-1D signals (B, 1, 40).

    ``stage1``: conv5(in, w) - BN - ReLU at length 40; ``stage2``: conv3(w, 2w, stride 2) - BN - ReLU at 20;
    ``stage3``: conv3(2w, 4w, stride 2) - BN - ReLU at 10; ``pool`` (global average) -> ``fc``.
    ``depth`` (default 3, the network above) sets the number of stages: ``depth = 1`` or ``2`` keeps the
    first stages only; each stage beyond the third is conv3(4w, 4w, stride 1) - BN - ReLU at length 10.

    Shapes: (B, in_channels, L) -> (B, output_dim); ``pool`` gives (B, channels of the last stage) >= 0.
    """

    def __init__(self, width: int = 16, num_classes: int = 10, in_channels: int = 1, out_dim: int | None = None,
                 depth: int = 3):
        super().__init__()
        check_positive_int(width, "width")
        check_positive_int(in_channels, "in_channels")
        check_positive_int(depth, "depth")
        self.width, self.depth = width, depth
        self.output_dim = output_size(num_classes, out_dim)
        channels = [in_channels] + [min(2**s, 4) * width for s in range(depth)]
        for s in range(depth):
            kernel, stride = (5, 1) if s == 0 else (3, 2 if s < 3 else 1)
            conv = nn.Conv1d(channels[s], channels[s + 1], kernel, stride=stride, padding=kernel // 2, bias=False)
            self.add_module(f"stage{s + 1}", conv_bn_relu(conv, nn.BatchNorm1d(channels[s + 1])))
        self.pool = pooled_features(1)
        self.fc = nn.Linear(channels[-1], self.output_dim)
        self.stage_names = [f"stage{s + 1}" for s in range(depth)]
        self.feature_name = "pool"
        self.relu_names = find_relu_names(self)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3:
            raise ValueError(f"Conv1dNet expects signals (B, C, L), got shape {tuple(x.shape)}")
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.fc(self.pool(x))


class MLP(nn.Module):
    """Multi-layer perceptron on flattened inputs: ``stage{i}`` = Linear - ReLU for each hidden size, then ``fc``.

    Args:
        in_features: input size, or an input shape (e.g. ``splits.input_shape``) whose product is used.
        hidden: sizes of the hidden layers (at least one).

    Shapes: ``(B, *input_shape) -> (B, output_dim)``. The features (``feature_name``) are the last hidden
    layer's post-ReLU output (B, hidden[-1]).
    """

    def __init__(
        self,
        in_features: int | Sequence[int],
        hidden: Sequence[int] = (128, 128),
        num_classes: int = 10,
        out_dim: int | None = None,
    ):
        super().__init__()
        if isinstance(in_features, (tuple, list)):
            for d in in_features:
                check_positive_int(d, "in_features entries")
            in_features = math.prod(in_features)
        check_positive_int(in_features, "in_features")
        hidden = tuple(hidden)
        if not hidden:
            raise ValueError("MLP needs at least one hidden layer (hidden=() given)")
        for h in hidden:
            check_positive_int(h, "hidden sizes")
        self.in_features = in_features
        self.output_dim = output_size(num_classes, out_dim)
        self.flatten = nn.Flatten(1)
        sizes = (in_features, *hidden)
        for i in range(len(hidden)):
            self.add_module(f"stage{i + 1}", nn.Sequential(OrderedDict(linear=nn.Linear(sizes[i], sizes[i + 1]), relu=nn.ReLU())))
        self.fc = nn.Linear(hidden[-1], self.output_dim)
        self.stage_names = [f"stage{i + 1}" for i in range(len(hidden))]
        self.feature_name = self.stage_names[-1]
        self.relu_names = find_relu_names(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.flatten(x)
        if x.shape[1] != self.in_features:
            raise ValueError(f"MLP expects {self.in_features} input features, got {x.shape[1]} (input shape {tuple(x.shape)})")
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.fc(x)
