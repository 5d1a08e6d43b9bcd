"""Train a network that has no normalisation with BatchNorm added, and ship it without.

A BatchNorm straight after a conv or linear layer is, once training ends, an affine map per
output channel, which folds exactly into that layer's weight and bias. So the tutorial CNN can
train with a BatchNorm after every layer but its last (better conditioned, so a higher learning
rate holds) and still ship as the tutorial's network, tensor for tensor: the checkpoint, the
service and the tutorial's own loading code see no difference.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from models.architectures import fold_norm

_LAYERS = (nn.Conv2d, nn.Linear)


def _norm_for(layer: nn.Module) -> nn.Module:
    if isinstance(layer, nn.Conv2d):
        return nn.BatchNorm2d(layer.out_channels)
    return nn.BatchNorm1d(layer.out_features)


def with_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of `model` with a BatchNorm after each conv and linear layer of its Sequentials,
    except the last such layer of each (the logits stay unnormalised)."""
    model = copy.deepcopy(model)
    for module in list(model.modules()):
        if not isinstance(module, nn.Sequential):
            continue
        layers = list(module)
        last = max((i for i, m in enumerate(layers) if isinstance(m, _LAYERS)), default=-1)
        expanded: list[nn.Module] = []
        for i, layer in enumerate(layers):
            expanded.append(layer)
            if isinstance(layer, _LAYERS) and i != last:
                expanded.append(_norm_for(layer))
        for name in list(module._modules):
            del module._modules[name]
        for i, layer in enumerate(expanded):
            module.add_module(str(i), layer)
    return model


@torch.no_grad()
def fold_into(trained: nn.Module, plain: nn.Module) -> nn.Module:
    """Fold `trained`'s BatchNorms (running statistics) into the layers before them and load
    the result into `plain`, the same network without them; returns `plain`, whose eval-mode
    output is `trained`'s. `trained` is left as it was."""
    trained = copy.deepcopy(trained).float()
    layers: list[nn.Module] = []
    for module in trained.modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module)
        for i, layer in enumerate(children):
            if not isinstance(layer, _LAYERS):
                continue
            after = children[i + 1] if i + 1 < len(children) else None
            if isinstance(after, nn.modules.batchnorm._BatchNorm):
                fold_norm(layer, after)
            layers.append(layer)
    targets = [m for m in plain.modules() if isinstance(m, _LAYERS)]
    if [type(m) for m in targets] != [type(m) for m in layers]:
        raise ValueError("the trained network's layers do not match the plain one's")
    for target, layer in zip(targets, layers, strict=True):
        target.weight.copy_(layer.weight)
        target.bias.copy_(layer.bias)
    return plain
