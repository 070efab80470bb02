"""Small ResNets for images of any size (28x28, 32x32, 64x64, ...), and pretrained weights.

The family is the CIFAR ResNet of He et al. (2016), depth = 6 n + 2: a 3x3 stem
convolution, three stages of n basic blocks with `width`, 2 `width` and 4 `width`
filters (the second and third stages start with stride 2 and a 1x1 projection
shortcut), global average pooling, and a Dense classifier when include_top.
Each basic block is conv 3x3 - BN - ReLU - conv 3x3 - BN, plus the skip, then
ReLU, written as a `gpuaccel.layers.Residual`.

    base = ga.applications.resnet8(include_top=False, weights="fmnist-0to4")
    base.trainable = False                         # freeze the backbone
    model = ga.applications.with_head(base, Dense(5))
    # or, the Keras way: ga.Sequential([base, Dense(5)]) / ga.Sequential(base.layers + [Dense(5)])

weights: None (random), 'fmnist-0to4' (shipped: trained by `python -m gpuaccel.pretrain`
on Fashion-MNIST classes 0-4, see gpuaccel/weights/*.md) or the path of a file written
by Sequential.save (a backbone or a full model of the same architecture). Weights trained
on grey images also serve colour ones: the stem's kernel is spread evenly over the
channels, so a grey picture stored as RGB gives the features it gave in grey."""
import os

import numpy as np

from . import layers as L
from . import models

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")

# name -> {(depth, width): file in WEIGHTS_DIR}; convolutions and global pooling make
# them fit any image size and, through the stem's channel spread, any channel count
PRETRAINED = {
    "fmnist-0to4": {(8, 8): "resnet8_w8_fmnist0to4.npz"},
}


def _conv_bn(filters, strides=1, bn_momentum=0.99):
    pad = "same" if strides == 1 else 1  # 3x3, pad 1: 28 -> 14 -> 7 (32 -> 16 -> 8) at stride 2
    return [L.Conv2D(filters, 3, strides=strides, padding=pad, use_bias=False),
            L.BatchNormalization(momentum=bn_momentum)]


def default_stem_strides(input_shape):
    """1 for images up to 48 pixels on the short side (the CIFAR ResNet), 2 above: the
    stages then see 64x64 photos at the 32x32 scale the family was designed for (and
    4x less work)."""
    return 1 if min(input_shape[1:]) <= 48 else 2


def basic_block(filters, strides=1, name=None, bn_momentum=0.99):
    """conv3x3(strides) - BN - ReLU - conv3x3 - BN, + skip (1x1 projection when the shape changes), ReLU."""
    return L.Residual(_conv_bn(filters, strides, bn_momentum) + [L.ReLU()] + _conv_bn(filters, 1, bn_momentum),
                      projection=None, activation="relu", name=name)


def resnet(depth=8, width=None, input_shape=(1, 28, 28), classes=10, include_top=True, weights=None, name=None,
           seed=0, bn_momentum=0.99, stem_strides=None):
    """ResNet-`depth` (depth = 6 n + 2: 8, 14, 20, 32, ...) for small images, uncompiled.

    width: filters of the first stage (default 16, or the width of the named
    pretrained weights: 8 for 'fmnist-0to4').
    bn_momentum: of every BatchNormalization (Keras's 0.99 by default). The moving
    variance starts at 1 and keeps momentum**steps of that start: short runs (a few
    hundred steps) on small activations want 0.9, or inference sees inflated variances.

    input_shape: (C, H, W), any channel count and size of at least 8x8 (grey or colour).
    stem_strides: of the first convolution; None: default_stem_strides(input_shape).

    include_top=False ends at GlobalAveragePooling2D: predict() then gives (N, 4 width)
    features, and the model is a backbone for a new head (see with_head)."""
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6 n + 2 with n >= 1 (8, 14, 20, ...), got {depth!r}")
    if width is None:
        shipped = [w for d, w in PRETRAINED.get(weights, {}) if d == depth] if isinstance(weights, str) else []
        width = shipped[0] if shipped else 16
    if not isinstance(width, int) or width <= 0:
        raise ValueError(f"width must be a positive int, got {width!r}")
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) != 3 or min(input_shape) < 1 or min(input_shape[1:]) < 8:
        raise ValueError(f"input_shape must be (C, H, W) with H, W >= 8, got {input_shape}")
    stem_strides = default_stem_strides(input_shape) if stem_strides is None else stem_strides
    if stem_strides not in (1, 2):
        raise ValueError(f"stem_strides must be 1 or 2, got {stem_strides!r}")
    n = (depth - 2) // 6
    layers = _conv_bn(width, stem_strides, bn_momentum) + [L.ReLU()]
    for stage, mult in enumerate((1, 2, 4)):
        for b in range(n):
            layers.append(basic_block(width * mult, 2 if stage > 0 and b == 0 else 1, bn_momentum=bn_momentum))
    layers.append(L.GlobalAveragePooling2D())
    if include_top:
        layers.append(L.Dense(classes))
    model = models.Sequential(layers, input_shape=input_shape, seed=seed,
                              name=name or f"resnet{depth}" + ("" if include_top else "_backbone"))
    if weights is not None:
        path = weights
        if weights in PRETRAINED:
            key = (depth, width)
            if key not in PRETRAINED[weights]:
                have = ", ".join(f"resnet{d}(width={w})" for d, w in PRETRAINED[weights])
                raise ValueError(f"no {weights!r} weights for resnet{depth}(width={width}); they exist for {have}")
            path = os.path.join(WEIGHTS_DIR, PRETRAINED[weights][key])
        load_weights(model, path, skip_top=not include_top, spread_channels=True)
    return model


def resnet8(**kwargs):
    """ResNet-8: one basic block per stage (about 20k parameters at width 8, 78k at width 16)."""
    return resnet(8, **kwargs)


def resnet14(**kwargs):
    """ResNet-14: two basic blocks per stage."""
    return resnet(14, **kwargs)


def resnet20(**kwargs):
    """ResNet-20: three basic blocks per stage (He et al.'s smallest CIFAR ResNet)."""
    return resnet(20, **kwargs)


def load_weights(model, path, skip_top=False, spread_channels=False):
    """Copy the weights of a model file (Sequential.save) into `model`, layer by layer.

    The file may hold more top-level layers than `model` (for example a full
    classifier loaded into its backbone); the shared leading layers must match in
    type and weight shapes. spread_channels: a first convolution trained on 1 channel
    fills a C-channel one with its kernel / C on every channel. Returns `model`."""
    src = models.load(path)
    if len(src.layers) < len(model.layers):
        raise ValueError(f"{path}: holds {len(src.layers)} layers, the model has {len(model.layers)}")
    model.build()
    for k, (mine, theirs) in enumerate(zip(model.layers, src.layers)):
        if type(mine) is not type(theirs):
            raise ValueError(f"{path}: layer {k} is {type(theirs).__name__}, the model has {type(mine).__name__}")
        arrays = src._layer_weights(theirs)
        if k == 0 and spread_channels:
            arrays = _spread_channels(arrays, model._layer_weights(mine))
        try:
            model._set_layer_weights(k, arrays)
        except ValueError as e:
            raise ValueError(f"{path}: layer {k} ({type(mine).__name__}) does not fit: {e}") from None
    return model


def _spread_channels(arrays, mine):
    """A grey (K, 1, R, S) kernel as (K, C, R, S) with kernel / C on each of mine's C channels."""
    out = list(arrays)
    if out and mine and out[0].ndim == 4 and out[0].shape[1] == 1 and mine[0].ndim == 4 and mine[0].shape[1] > 1:
        c = mine[0].shape[1]
        out[0] = np.repeat(out[0], c, axis=1) / np.float32(c)
    return out


def with_head(backbone, head, name=None):
    """A new model: `backbone`'s layers (sharing their weights and trainable flags at
    this moment) followed by `head` (a layer or a list of layers), built at once."""
    head = list(head) if isinstance(head, (list, tuple)) else [head]
    backbone.build() if not backbone.built else None
    model = models.Sequential(list(backbone.layers) + head, input_shape=backbone.input_shape,
                              name=name or f"{backbone.name}_with_head", seed=backbone.seed)
    model.device = backbone.device
    return model.build()
