"""Keras-style layers. Each layer only describes itself; the network of them
runs in C (csrc/net/), so there is no numeric code here.

Layouts follow PyTorch: Conv2D weights (filters, in_channels, kh, kw), Dense
weights (units, in_features), inputs NCHW, Flatten in C, H, W order.

Freezing: `layer.trainable = False` keeps a layer's weights out of the update
(and out of the backward work, see Sequential.fit); it may be changed after
the model is built, the next fit() passes it to C. A layer inside a Residual
block trains only when it and the block are trainable.

Activations (`activation=` of Conv2D, Dense and Residual, and the Activation
layer) are the names in gpuaccel.ops.ACTIVATIONS (from C): 'linear' (or None),
'relu', 'leaky_relu', 'elu', 'tanh', 'sigmoid', 'gelu' (tanh form) and 'silu'
(alias 'swish'); softmax is part of the loss.

Preprocessing: Rescaling (always on) and the Keras 3 augmentation layers RandomFlip,
RandomTranslation, RandomZoom and RandomRotation (training only, one affine kernel in C on
the model's device, the same draws on every device for the same model and layer seeds;
they must come before every layer with weights: ARCHITECTURE.md, "Augmentation on the
device")."""

import math

from . import ops
from .ops import activation_name


def _pair(v, name):
    if isinstance(v, int) and not isinstance(v, bool):
        return (v, v)
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(i, int) and not isinstance(i, bool) for i in v):
        return tuple(v)
    raise TypeError(f"{name} must be an int or a pair of ints, got {v!r}")


def _activation(name, alpha=None):
    """The spec entries of an activation (validated now, not at build time)."""
    spec = {"activation": activation_name(name)}
    if alpha is not None:
        spec["alpha"] = float(alpha)
    return spec


class Layer:
    """Base class: a name, a `trainable` flag and a config that round-trips."""

    _count = {}

    def __init__(self, name=None):
        kind = type(self).__name__.lower()
        n = Layer._count.get(kind, 0)
        Layer._count[kind] = n + 1
        self.name = name or (kind if n == 0 else f"{kind}_{n}")
        self.trainable = True

    def get_config(self):
        return {"name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def _spec(self):
        raise NotImplementedError

    def _flatten(self, trainable=True, depth=0):
        """The entries of the C layer table this layer expands to, in order:
        [(entry, effective trainable flag, nesting depth)]."""
        return [(self, bool(trainable and self.trainable), depth)]

    def _set_trainable_all(self, value):
        """Set the flag here and on every layer inside (model.trainable = ...)."""
        self.trainable = bool(value)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"


class Conv2D(Layer):
    """2-D convolution. padding: 'valid', 'same' (odd kernels, stride 1) or an int.

    kernel: the convolution algorithm. On the CPU 'auto' (default) measures im2col + GEMM
    against Winograd F(2x2, 3x3) and F(4x4, 3x3) once per layer shape and thread
    count, the first time the layer runs, and keeps the fastest (``summary()``
    shows the choice; the environment variable ``GPUACCEL_CONV_KERNEL`` forces
    one); 'im2col', 'winograd' (= 'winograd4') or 'winograd2' fix it. Winograd
    needs a 3x3 kernel, stride 1 and padding <= 2 and runs on the CPU only. On a
    GPU 'auto' is 'implicit' (implicit GEMM: the im2col matrix is gathered into
    shared memory tile by tile, never stored), which runs on CUDA devices only;
    'im2col' stays selectable there."""

    def __init__(self, filters, kernel_size, strides=1, padding="valid", activation=None, use_bias=True, name=None,
                 kernel="auto"):
        super().__init__(name)
        if not isinstance(filters, int) or filters <= 0:
            raise ValueError(f"filters must be a positive int, got {filters!r}")
        self.filters = filters
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        if self.strides[0] != self.strides[1] or self.strides[0] <= 0:
            raise ValueError("strides must be positive and equal in both directions")
        if padding not in ("valid", "same") and not (isinstance(padding, int) and padding >= 0):
            raise ValueError(f"padding must be 'valid', 'same' or an int >= 0, got {padding!r}")
        self.padding = padding
        self.activation = activation
        self.use_bias = bool(use_bias)
        self._act = _activation(activation)
        from .ops import CONV_KERNELS
        if kernel not in CONV_KERNELS or kernel == "ref":
            raise ValueError(f"kernel must be one of {[k for k in CONV_KERNELS if k != 'ref']}, got {kernel!r}")
        if kernel.startswith("winograd") and (self.kernel_size != (3, 3) or self.strides[0] != 1
                                              or not (padding == "same" or padding == "valid"
                                                      or (isinstance(padding, int) and padding <= 2))):
            raise ValueError(f"kernel={kernel!r} needs a 3x3 kernel, stride 1 and padding 'same', 'valid' or <= 2")
        self.algorithm = kernel  # not `kernel`: in Keras that name is the weights

    def _pad(self):
        kh, kw = self.kernel_size
        if self.padding == "valid":
            return 0
        if self.padding == "same":
            if kh != kw or kh % 2 == 0 or self.strides[0] != 1:
                raise ValueError(f"{self.name}: padding='same' needs an odd square kernel and stride 1")
            return (kh - 1) // 2
        return self.padding

    @classmethod
    def from_config(cls, config):
        # a file saved before the algorithm was a choice ran im2col: it keeps it, and so
        # predicts with the same bits as when it was saved
        return cls(**{"kernel": "im2col", **config})

    def get_config(self):
        return dict(super().get_config(), filters=self.filters, kernel_size=list(self.kernel_size),
                    strides=self.strides[0], padding=self.padding, activation=self.activation, use_bias=self.use_bias,
                    kernel=self.algorithm)

    def _spec(self):
        return {"kind": "conv2d", "units": self.filters, "kernel_h": self.kernel_size[0],
                "kernel_w": self.kernel_size[1], "stride": self.strides[0], "pad": self._pad(),
                "use_bias": self.use_bias, "kernel": self.algorithm, **self._act}


class MaxPool2D(Layer):
    """Max pooling, no padding; strides default to pool_size."""

    def __init__(self, pool_size=2, strides=None, name=None):
        super().__init__(name)
        p = _pair(pool_size, "pool_size")
        s = _pair(strides, "strides") if strides is not None else p
        if p[0] != p[1] or s[0] != s[1] or p[0] <= 0 or s[0] <= 0:
            raise ValueError("pool_size and strides must be positive and square")
        self.pool_size, self.strides = p[0], s[0]

    def get_config(self):
        return dict(super().get_config(), pool_size=self.pool_size, strides=self.strides)

    def _spec(self):
        return {"kind": "maxpool2d", "kernel_h": self.pool_size, "kernel_w": self.pool_size, "stride": self.strides}


MaxPooling2D = MaxPool2D


class AveragePooling2D(MaxPool2D):
    """Average pooling, no padding; strides default to pool_size (MaxPool2D's windows)."""

    def _spec(self):
        return {"kind": "avgpool2d", "kernel_h": self.pool_size, "kernel_w": self.pool_size, "stride": self.strides}


AvgPool2D = AveragePooling2D


class Flatten(Layer):
    def _spec(self):
        return {"kind": "flatten"}


class Dense(Layer):
    """Fully connected: y = x @ W.T + b, W (units, in_features)."""

    def __init__(self, units, activation=None, use_bias=True, name=None):
        super().__init__(name)
        if not isinstance(units, int) or units <= 0:
            raise ValueError(f"units must be a positive int, got {units!r}")
        self.units = units
        self.activation = activation
        self.use_bias = bool(use_bias)
        self._act = _activation(activation)

    def get_config(self):
        return dict(super().get_config(), units=self.units, activation=self.activation, use_bias=self.use_bias)

    def _spec(self):
        return {"kind": "dense", "units": self.units, "use_bias": self.use_bias, **self._act}


class Dropout(Layer):
    """Inverted dropout during training; identity at inference."""

    def __init__(self, rate, name=None):
        super().__init__(name)
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"rate must be in [0, 1), got {rate!r}")
        self.rate = float(rate)

    def get_config(self):
        return dict(super().get_config(), rate=self.rate)

    def _spec(self):
        return {"kind": "dropout", "rate": self.rate}


class Activation(Layer):
    """An activation on its own: y = act(x), act a name of ops.ACTIVATIONS."""

    def __init__(self, activation, name=None):
        super().__init__(name)
        self.activation = activation
        self._act = _activation(activation)

    def get_config(self):
        return dict(super().get_config(), activation=self.activation)

    def _spec(self):
        return {"kind": "activation", **self._act}


class ReLU(Layer):
    def _spec(self):
        return {"kind": "activation", "activation": "relu"}


class LeakyReLU(Layer):
    """y = x for x > 0, else negative_slope * x (Keras's default slope 0.3)."""

    def __init__(self, negative_slope=0.3, name=None):
        super().__init__(name)
        if not float(negative_slope) >= 0.0:
            raise ValueError(f"negative_slope must be >= 0, got {negative_slope!r}")
        self.negative_slope = float(negative_slope)

    def get_config(self):
        return dict(super().get_config(), negative_slope=self.negative_slope)

    def _spec(self):
        return {"kind": "activation", **_activation("leaky_relu", self.negative_slope)}


class ELU(Layer):
    """y = x for x > 0, else alpha (e^x - 1)."""

    def __init__(self, alpha=1.0, name=None):
        super().__init__(name)
        if not float(alpha) >= 0.0:
            raise ValueError(f"alpha must be >= 0, got {alpha!r}")
        self.alpha = float(alpha)

    def get_config(self):
        return dict(super().get_config(), alpha=self.alpha)

    def _spec(self):
        return {"kind": "activation", **_activation("elu", self.alpha)}


class BatchNormalization(Layer):
    """Batch normalisation over channels (axis 1 of NCHW; the features of a vector).

    As in Keras: y = gamma (x - mean) / sqrt(var + epsilon) + beta. Training uses the
    batch mean and biased variance and updates moving_mean / moving_variance with
    `momentum` (moving = momentum moving + (1 - momentum) batch); inference (evaluate,
    predict) uses the moving statistics. A frozen layer (trainable=False) runs in
    inference mode during fit too, as in Keras. Weights: [gamma, beta, moving_mean,
    moving_variance], each (channels,); the last two are non-trainable."""

    def __init__(self, momentum=0.99, epsilon=1e-3, name=None):
        super().__init__(name)
        if not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
        if not float(epsilon) > 0.0:
            raise ValueError(f"epsilon must be > 0, got {epsilon!r}")
        self.momentum, self.epsilon = float(momentum), float(epsilon)

    def get_config(self):
        return dict(super().get_config(), momentum=self.momentum, epsilon=self.epsilon)

    def _spec(self):
        return {"kind": "batchnorm", "momentum": self.momentum, "eps": self.epsilon}


class GlobalAveragePooling2D(Layer):
    """Mean over H and W: (N, C, H, W) -> (N, C) (a (C, 1, 1) vector per sample)."""

    def _spec(self):
        return {"kind": "global_avgpool"}


GlobalAvgPool2D = GlobalAveragePooling2D


class GlobalMaxPooling2D(Layer):
    """Maximum over H and W: (N, C, H, W) -> (N, C); the gradient goes to the first maximum."""

    def _spec(self):
        return {"kind": "global_maxpool"}


GlobalMaxPool2D = GlobalMaxPooling2D


class Rescaling(Layer):
    """y = x * scale + offset, in training and inference alike (as Keras); may sit anywhere
    (its gradient is g * scale)."""

    def __init__(self, scale, offset=0.0, name=None):
        super().__init__(name)
        try:
            self.scale, self.offset = float(scale), float(offset)
        except (TypeError, ValueError):
            raise ValueError(f"scale and offset must be numbers, got {scale!r}, {offset!r}") from None
        if not (math.isfinite(self.scale) and math.isfinite(self.offset)):
            raise ValueError(f"scale and offset must be finite, got {scale!r}, {offset!r}")

    def get_config(self):
        return dict(super().get_config(), scale=self.scale, offset=self.offset)

    def _spec(self):
        return {"kind": "rescaling", "scale": self.scale, "offset": self.offset}


def _seed(seed):
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"seed must be None or an int, got {seed!r}")
    return seed


class _RandomImageLayer(Layer):
    """Random augmentation: active in training only (predict and evaluate see the input
    itself: the layer is a view of it, no copy), in C on the model's device (one affine
    kernel for the four layers, core/augment.h), drawing per image from the counter-based
    stream that dropout uses: the CPU and a GPU draw the same transforms, a recorded CUDA
    graph draws new ones at each replay. The draws depend on the model's seed
    (Sequential(seed=...)) and the layer's `seed` together (None: the layer's place in the
    model), so the same model seed and layer seed give the same run.

    Placement: before every layer with weights (and outside Residual blocks), e.g. first
    or after Rescaling; anything else is refused when the model is built. Input: images
    (C, H, W), any number of channels, any size."""

    def __init__(self, seed=None, name=None, fill_mode="reflect", interpolation="bilinear", fill_value=0.0):
        super().__init__(name)
        self.seed = _seed(seed)
        self.fill_mode = ops.augment_mode(fill_mode, "fill_mode", ops.FILL_MODES)
        self.interpolation = ops.augment_mode(interpolation, "interpolation", ops.INTERPOLATIONS)
        try:
            self.fill_value = float(fill_value)
        except (TypeError, ValueError):
            raise ValueError(f"fill_value must be a number, got {fill_value!r}") from None
        if not math.isfinite(self.fill_value):
            raise ValueError(f"fill_value must be finite, got {fill_value!r}")

    def get_config(self):
        return dict(super().get_config(), fill_mode=self.fill_mode, interpolation=self.interpolation,
                    seed=self.seed, fill_value=self.fill_value)

    def _common_spec(self):
        return {"fill_mode": self.fill_mode, "interpolation": self.interpolation, "fill_value": self.fill_value,
                "seed": None if self.seed is None else self.seed % 2**63}


class RandomFlip(_RandomImageLayer):
    """Flips each image left-right ('horizontal'), upside down ('vertical') or each of the
    two independently ('horizontal_and_vertical'), each with probability 1/2, in training."""

    def __init__(self, mode="horizontal_and_vertical", seed=None, name=None):
        super().__init__(seed, name)
        self.mode = ops.augment_mode(mode, "mode", tuple(ops.FLIP_MODES))

    def get_config(self):
        return {"name": self.name, "mode": self.mode, "seed": self.seed}

    def _spec(self):
        return {"kind": "random_flip", "mode": self.mode, "seed": None if self.seed is None else self.seed % 2**63}


class RandomTranslation(_RandomImageLayer):
    """Shifts each image by a random fraction of its height and width in training (Keras:
    a factor f is the range [-f, f], a pair (lower, upper), fractions in [-1, 1]; positive
    moves the content down / right). fill_mode 'reflect' | 'wrap' | 'constant' | 'nearest',
    interpolation 'bilinear' | 'nearest'."""

    def __init__(self, height_factor, width_factor, fill_mode="reflect", interpolation="bilinear", seed=None,
                 fill_value=0.0, name=None):
        super().__init__(seed, name, fill_mode, interpolation, fill_value)
        self._h = ops.factor_range(height_factor, "height_factor", -1.0, 1.0)
        self._w = ops.factor_range(width_factor, "width_factor", -1.0, 1.0)
        self.height_factor, self.width_factor = height_factor, width_factor

    def get_config(self):
        return dict(super().get_config(), height_factor=self.height_factor, width_factor=self.width_factor)

    def _spec(self):
        return {"kind": "random_translation", "height_factor": self._h, "width_factor": self._w,
                **self._common_spec()}


class RandomZoom(_RandomImageLayer):
    """Zooms each image about its centre by 1 + z in training, z drawn from height_factor
    (Keras: a factor f is [-f, f], a pair (lower, upper), z >= -1; positive zooms out,
    negative zooms in); width_factor None keeps the aspect ratio (one z for both axes)."""

    def __init__(self, height_factor, width_factor=None, fill_mode="reflect", interpolation="bilinear", seed=None,
                 fill_value=0.0, name=None):
        super().__init__(seed, name, fill_mode, interpolation, fill_value)
        self._h = ops.factor_range(height_factor, "height_factor", -1.0)
        self._w = None if width_factor is None else ops.factor_range(width_factor, "width_factor", -1.0)
        self.height_factor, self.width_factor = height_factor, width_factor

    def get_config(self):
        return dict(super().get_config(), height_factor=self.height_factor, width_factor=self.width_factor)

    def _spec(self):
        return {"kind": "random_zoom", "height_factor": self._h, "width_factor": self._w, **self._common_spec()}


class RandomRotation(_RandomImageLayer):
    """Rotates each image about its centre by 2 pi r in training, r drawn from factor (Keras:
    a fraction of a full turn; f is [-f, f], a pair (lower, upper); positive is
    counter-clockwise)."""

    def __init__(self, factor, fill_mode="reflect", interpolation="bilinear", seed=None, fill_value=0.0, name=None):
        super().__init__(seed, name, fill_mode, interpolation, fill_value)
        self._r = ops.factor_range(factor, "factor")
        self.factor = factor

    def get_config(self):
        return dict(super().get_config(), factor=self.factor)

    def _spec(self):
        return {"kind": "random_rotation", "factor": self._r, **self._common_spec()}


class _ResBegin:
    """Opening bracket of a Residual block in the C layer table."""

    def __init__(self, block):
        self.block = block
        self.name = block.name

    def _spec(self):
        return {"kind": "res_begin"}


class _ResEnd(_ResBegin):
    """Closing bracket: adds the (projected) skip, then the block's activation."""

    def _spec(self):
        b = self.block
        return {"kind": "res_end", "projection": b.projection, "stride": b.projection_strides or 0,
                "use_bias": b.use_bias, **b._act}


class Residual(Layer):
    """A residual block: y = act(branch(x) + skip(x)), as one composite layer.

        Residual([Conv2D(32, 3, strides=2, padding=1, use_bias=False), BatchNormalization(), ReLU(),
                  Conv2D(32, 3, padding='same', use_bias=False), BatchNormalization()],
                 projection=None, activation='relu')

    `layers` is the branch (any layers, Residual blocks included). The skip is the
    block's input itself when the branch keeps its shape; otherwise (projection=None,
    the default, decides by shape; True forces it, False forbids it) a 1x1
    convolution with stride `projection_strides` (None: inferred from the shapes)
    and a bias (use_bias) maps the input onto the branch's output shape, as in
    ResNet's option B shortcut. `activation` (any of ops.ACTIVATIONS, or None) follows the sum.

    In C the block is a bracket in the linear layer table: RES_BEGIN, the branch's
    layers, RES_END (which holds the projection's weights). Backward sends the
    gradient through the branch and the skip and sums the two at RES_BEGIN.

    Weights (get_weights order): the branch layers' weights, then the projection's
    [W (filters, in_channels, 1, 1), b] when there is one. `block.trainable = False`
    freezes the whole block (setting the flag to a new value sets it on every inner
    layer too, as in Keras); a layer trains only if it and every block around it are
    trainable, so `block.layers[0].trainable = False` freezes one layer inside."""

    def __init__(self, layers, projection=None, activation="relu", projection_strides=None, use_bias=True,
                 name=None):
        super().__init__(name)
        layers = list(layers)
        for l in layers:
            if not isinstance(l, Layer):
                raise TypeError(f"Residual: expected gpuaccel.layers.Layer objects, got {type(l).__name__}")
        if projection not in (None, True, False):
            raise ValueError(f"projection must be None (auto), True or False, got {projection!r}")
        if projection_strides is not None and (not isinstance(projection_strides, int) or projection_strides <= 0):
            raise ValueError(f"projection_strides must be None or a positive int, got {projection_strides!r}")
        self.layers = layers
        self.projection = projection
        self.projection_strides = projection_strides
        self.activation = activation
        self.use_bias = bool(use_bias)
        self._act = _activation(activation)

    def get_config(self):
        return dict(super().get_config(),
                    layers=[{"class": type(l).__name__, "config": l.get_config(), "trainable": l.trainable}
                            for l in self.layers],
                    projection=self.projection, activation=self.activation,
                    projection_strides=self.projection_strides, use_bias=self.use_bias)

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        inner = []
        for spec in config.pop("layers"):
            layer = LAYERS[spec["class"]].from_config(spec["config"])
            layer.trainable = bool(spec.get("trainable", True))
            inner.append(layer)
        return cls(inner, **config)

    def _flatten(self, trainable=True, depth=0):
        on = bool(trainable and self.trainable)
        out = [(_ResBegin(self), on, depth)]
        for l in self.layers:
            out += l._flatten(on, depth + 1)
        return out + [(_ResEnd(self), on, depth)]

    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        """Sets the block's flag and, when it changes, every inner layer's flag (as Keras
        does). An unchanged value leaves the inner flags alone, so a trainable block may
        keep a frozen layer inside (and ga.models.load restores such a mix)."""
        value = bool(value)
        changed = value != getattr(self, "_trainable", None)
        self._trainable = value
        if changed:
            for l in getattr(self, "layers", ()):
                l._set_trainable_all(value)

    def _set_trainable_all(self, value):
        self._trainable = bool(value)
        for l in self.layers:
            l._set_trainable_all(value)

    def __repr__(self):
        inner = ", ".join(repr(l) for l in self.layers)
        return (f"Residual([{inner}], projection={self.projection!r}, activation={self.activation!r})")


LAYERS = {cls.__name__: cls for cls in (Conv2D, MaxPool2D, AveragePooling2D, Flatten, Dense, Dropout, Activation, ReLU,
                                        LeakyReLU, ELU, BatchNormalization, GlobalAveragePooling2D,
                                        GlobalMaxPooling2D, Residual, Rescaling, RandomFlip, RandomTranslation,
                                        RandomZoom, RandomRotation)}
