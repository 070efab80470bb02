"""Keras-style layers. Each layer only describes itself; the network of them
runs in C (csrc/net/), so there is no numeric code here.

Layouts follow PyTorch: Conv2D weights (filters, in_channels, kh, kw), Dense
weights (units, in_features), inputs NCHW, Flatten in C, H, W order."""


def _pair(v, name):
    if isinstance(v, int) and not isinstance(v, bool):
        return (v, v)
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(i, int) and not isinstance(i, bool) for i in v):
        return tuple(v)
    raise TypeError(f"{name} must be an int or a pair of ints, got {v!r}")


def _activation(name):
    if name in (None, "linear"):
        return False
    if name == "relu":
        return True
    raise ValueError(f"unsupported activation {name!r}: use None or 'relu' (softmax is part of the loss)")


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

    def _param_shapes(self, in_shape):
        """Shapes of [W, b] given the per-sample input shape (C, H, W)."""
        return []

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"


class Conv2D(Layer):
    """2-D convolution. padding: 'valid', 'same' (odd kernels, stride 1) or an int."""

    def __init__(self, filters, kernel_size, strides=1, padding="valid", activation=None, use_bias=True, name=None):
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
        self._relu = _activation(activation)

    def _pad(self):
        kh, kw = self.kernel_size
        if self.padding == "valid":
            return 0
        if self.padding == "same":
            if kh != kw or kh % 2 == 0 or self.strides[0] != 1:
                raise ValueError(f"{self.name}: padding='same' needs an odd square kernel and stride 1")
            return (kh - 1) // 2
        return self.padding

    def get_config(self):
        return dict(super().get_config(), filters=self.filters, kernel_size=list(self.kernel_size),
                    strides=self.strides[0], padding=self.padding, activation=self.activation, use_bias=self.use_bias)

    def _spec(self):
        return {"kind": "conv2d", "units": self.filters, "kernel_h": self.kernel_size[0],
                "kernel_w": self.kernel_size[1], "stride": self.strides[0], "pad": self._pad(),
                "relu": self._relu, "use_bias": self.use_bias}

    def _param_shapes(self, in_shape):
        w = (self.filters, in_shape[0]) + self.kernel_size
        return [w, (self.filters,)] if self.use_bias else [w]


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
        self._relu = _activation(activation)

    def get_config(self):
        return dict(super().get_config(), units=self.units, activation=self.activation, use_bias=self.use_bias)

    def _spec(self):
        return {"kind": "dense", "units": self.units, "relu": self._relu, "use_bias": self.use_bias}

    def _param_shapes(self, in_shape):
        fin = in_shape[0] * in_shape[1] * in_shape[2]
        return [(self.units, fin), (self.units,)] if self.use_bias else [(self.units, fin)]


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


class ReLU(Layer):
    def _spec(self):
        return {"kind": "relu"}


LAYERS = {cls.__name__: cls for cls in (Conv2D, MaxPool2D, Flatten, Dense, Dropout, ReLU)}
