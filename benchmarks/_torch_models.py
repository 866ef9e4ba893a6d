"""PyTorch twins of decsim's deep networks, for ``benchmarks/deep.py`` only (PyTorch is a
benchmark dependency, never one of decsim).

``LeNet`` is :func:`decsim.problems.nets.lenet` and ``ResNet20`` is
:func:`decsim.problems.nets.resnet20` (option-A shortcuts, BatchNorm with PyTorch's conventions,
which decsim follows): same layers, same padding, same flatten order once the weights are loaded
with :func:`load_lenet` / :func:`load_resnet20` from one worker's slice of decsim's stacked
parameters. Images are NCHW here (PyTorch's layout) and NHWC in decsim; :func:`to_nchw` converts.
``deep.py`` checks that both libraries give the same loss on the same batch before timing.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def to_nchw(x: np.ndarray) -> torch.Tensor:
    """``[..., H, W, C]`` numpy images as a contiguous ``[..., C, H, W]`` float32 tensor."""
    x = np.asarray(x, np.float32)
    axes = tuple(range(x.ndim - 3)) + (x.ndim - 1, x.ndim - 3, x.ndim - 2)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(axes)))


def _t(a) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(a, np.float32)))


def _hwio_to_oihw(w) -> torch.Tensor:
    return _t(np.asarray(w).transpose(3, 2, 0, 1))


class LeNet(nn.Module):
    """``[conv k×k (SAME) + bias → ReLU → 2×2 max pool] × len(channels)`` → flatten →
    ``[dense → ReLU] × len(hidden)`` → dense to ``n_classes`` (decsim's ``nets.lenet``)."""

    def __init__(self, in_shape, channels, kernel_sizes, hidden, n_classes):
        super().__init__()
        h, w, c = in_shape
        self.convs = nn.ModuleList()
        for cout, k in zip(channels, kernel_sizes):
            assert k % 2 == 1, "SAME padding is symmetric only for odd kernels"
            self.convs.append(nn.Conv2d(c, cout, k, padding=k // 2))
            c, h, w = cout, h // 2, w // 2
        self.flat_chw = (c, h, w)
        widths = [c * h * w, *hidden, n_classes]
        self.dense = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x):
        for conv in self.convs:
            x = F.max_pool2d(F.relu(conv(x)), 2)
        x = x.flatten(1)
        for lin in self.dense[:-1]:
            x = F.relu(lin(x))
        return self.dense[-1](x)


def load_lenet(model: LeNet, params, i: int) -> None:
    """Copy worker ``i`` of decsim's stacked LeNet parameters into ``model``. decsim flattens
    ``(h, w, c)`` and PyTorch ``(c, h, w)``: the first dense layer's rows are permuted."""
    with torch.no_grad():
        for conv, p in zip(model.convs, params["conv"]):
            conv.weight.copy_(_hwio_to_oihw(p["w"][i]))
            conv.bias.copy_(_t(p["b"][i]))
        c, h, w = model.flat_chw
        for k, (lin, p) in enumerate(zip(model.dense, params["dense"])):
            wk = np.asarray(p["w"][i])  # [in, out]
            if k == 0:
                wk = wk.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(c * h * w, -1)
            lin.weight.copy_(_t(wk.T))
            lin.bias.copy_(_t(p["b"][i]))


class _Block(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.stride = 1 if cin == cout else 2
        self.conv1 = nn.Conv2d(cin, cout, 3, self.stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)
        self.extra = cout - cin

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        if self.stride != 1:  # option A: subsample, zero-pad the new channels on both sides
            e = self.extra
            s = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, e // 2, e - e // 2))
        else:
            s = x
        return F.relu(h + s)


class ResNet20(nn.Module):
    """He et al.'s CIFAR ResNet-20: conv3×3-16, 3 stages × 3 basic blocks (16/32/64 channels,
    option-A shortcuts), global average pooling, dense (decsim's ``nets.resnet20()``)."""

    def __init__(self, in_channels=3, n_classes=10, width=16, blocks=3):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.stem_bn = nn.BatchNorm2d(width, eps=1e-5, momentum=0.1)
        self.stages = nn.ModuleList()
        c = width
        for s in range(3):
            cout = width * 2**s
            stage = nn.ModuleList()
            for _ in range(blocks):
                stage.append(_Block(c, cout))
                c = cout
            self.stages.append(stage)
        self.fc = nn.Linear(c, n_classes)

    def forward(self, x):
        h = F.relu(self.stem_bn(self.stem(x)))
        for stage in self.stages:
            for block in stage:
                h = block(h)
        return self.fc(h.mean(dim=(2, 3)))


def _load_bn(bn: nn.BatchNorm2d, p, s, i: int) -> None:
    bn.weight.copy_(_t(p["scale"][i]))
    bn.bias.copy_(_t(p["bias"][i]))
    bn.running_mean.copy_(_t(s["mean"][i]))
    bn.running_var.copy_(_t(s["var"][i]))


def load_resnet20(model: ResNet20, params, state, i: int) -> None:
    """Copy worker ``i`` of decsim's stacked ResNet-20 parameters and BatchNorm statistics."""
    with torch.no_grad():
        model.stem.weight.copy_(_hwio_to_oihw(params["stem"]["w"][i]))
        _load_bn(model.stem_bn, params["stem"]["bn"], state["stem"], i)
        for stage, sp, ss in zip(model.stages, params["stages"], state["stages"]):
            for block, bp, bs in zip(stage, sp, ss):
                block.conv1.weight.copy_(_hwio_to_oihw(bp["conv1"][i]))
                block.conv2.weight.copy_(_hwio_to_oihw(bp["conv2"][i]))
                _load_bn(block.bn1, bp["bn1"], bs["bn1"], i)
                _load_bn(block.bn2, bp["bn2"], bs["bn2"], i)
        model.fc.weight.copy_(_t(np.asarray(params["dense"]["w"][i]).T))
        model.fc.bias.copy_(_t(params["dense"]["b"][i]))


def num_params(model: nn.Module) -> int:
    """Trainable scalars (BatchNorm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters())
