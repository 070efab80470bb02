"""Single kernels, callable from Python: the building blocks of the training step.

Every function takes float32 NumPy arrays (any strides) or :class:`gpuaccel.Tensor`
objects and a ``device`` ('cpu', 'cuda', 'cuda:N'; default: where the Tensor
inputs live, else 'cpu'). NumPy in, NumPy out; Tensors in, Tensors out.
Layouts follow PyTorch: images NCHW, conv weights (K, C, R, S), dense weights
(out, in). ``kernel`` picks the implementation: 'auto' (the tuned one), 'ref'
(the simple reference kept beside it) or, for matmul on a GPU, 'cublas'; matmul's
``precision`` ('fp32', or 'tf32' on a GPU of compute capability 8.0+) picks the arithmetic.
Convolutions have several algorithms (:data:`CONV_KERNELS`): 'im2col'
(im2col + GEMM), 'winograd2' / 'winograd4' (Winograd F(2x2, 3x3) / F(4x4, 3x3),
CPU only, 3x3 kernels at stride 1 with padding <= 2; 'winograd' is
'winograd4') and 'ref'; there 'auto' measures the candidates once per shape and
thread count and keeps the fastest (``GPUACCEL_CONV_KERNEL`` forces one).
'implicit' (implicit GEMM, CUDA only: the patches are gathered into shared
memory tile by tile instead of an im2col matrix in memory) is what 'auto'
runs on a GPU.
"""
import numpy as np

from . import _C
from ._device import resolve

_VARIANTS = {"auto": 0, "fast": 0, "ref": 1, "cublas": 2}
#: The convolution algorithms by name (the table lives in C: core/backend.h).
CONV_KERNELS = tuple(_C.CONV_KERNELS)


def _device_of(device, *inputs):
    if device is None:
        for t in inputs:
            if isinstance(t, _C.Tensor):
                return t.device
        return "cpu"
    return resolve(device)


def _variant(kernel, device):
    if kernel not in _VARIANTS:
        raise ValueError(f"unknown kernel {kernel!r}: expected one of {sorted(_VARIANTS)}")
    if kernel == "cublas" and not device.startswith("cuda"):
        raise ValueError("kernel='cublas' needs a CUDA device")
    return _VARIANTS[kernel]


def _conv_variant(kernel):
    if kernel not in _C.CONV_KERNELS:
        raise ValueError(f"unknown convolution kernel {kernel!r}: expected one of {list(CONV_KERNELS)}")
    return _C.CONV_KERNELS[kernel]


def _int(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return int(value)


#: The activation names the kernels know (their order is the C enum, core/act.h).
ACTIVATIONS = _C.ACTIVATIONS
_ALIASES = {None: "linear", "swish": "silu"}


def activation_name(name):
    """The canonical name of an activation (None -> 'linear', 'swish' -> 'silu'); ValueError if unknown."""
    key = _ALIASES.get(name, name)
    if not isinstance(key, str) or key not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}: expected None or one of {list(ACTIVATIONS)} (or 'swish'); "
                         "softmax is part of the loss")
    return key


def _act(activation, alpha):
    """(kind, alpha) for the C ops; alpha defaults per kind (leaky_relu 0.2, elu 1.0: core/act.h)."""
    kind = ACTIVATIONS.index(activation_name(activation))
    return kind, _C.ACTIVATION_ALPHAS[kind] if alpha is None else float(alpha)


def _conv_padding(padding, w, stride):
    """'valid' -> 0; 'same' -> (k-1)/2 for odd square kernels at stride 1; int -> int."""
    if isinstance(padding, str):
        if padding == "valid":
            return 0
        if padding == "same":
            shape = tuple(getattr(w, "shape", ()))
            r, s = shape[2:4] if len(shape) == 4 else (None, None)
            if stride != 1 or r != s or r is None or r % 2 == 0:
                raise ValueError("padding='same' needs stride 1 and an odd square kernel; give an int instead")
            return (r - 1) // 2
        raise ValueError(f"padding must be an int, 'same' or 'valid', got {padding!r}")
    return _int(padding, "padding")


#: matmul's precision= values: the flag each ORs into the kernel variant (core/backend.h).
PRECISIONS = {"fp32": 0, "tf32": _C.PRECISION_TF32}


def _precision(precision, device):
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: expected one of {sorted(PRECISIONS)}")
    if precision == "tf32" and not device.startswith("cuda"):
        raise ValueError("precision='tf32' runs on NVIDIA tensor cores (sm_80+); the CPU computes in fp32")
    return PRECISIONS[precision]


def matmul(a, b, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, c=None, device=None, kernel="auto",
           precision="fp32"):
    """alpha * op(a) @ op(b) + beta * c (op = transpose when asked).

    precision='tf32' (CUDA, compute capability 8.0 or later) rounds the operands to TF32
    (10 mantissa bits, round to nearest with ties away from zero) and sums the products in
    fp32: on tensor cores with kernel='auto' (a WMMA kernel) or 'cublas', and in the
    one-thread-per-output reference with kernel='ref'. Results differ from fp32 by about
    2^-11 relative per operand; the default 'fp32' is exact single precision."""
    dev = _device_of(device, a, b, c)
    variant = _variant(kernel, dev) | _precision(precision, dev)
    return _C.op_matmul(a, b, bool(trans_a), bool(trans_b), float(alpha), float(beta), c, dev, variant)


def conv2d(x, w, b=None, stride=1, padding=0, activation=None, alpha=None, device=None, kernel="auto"):
    """2-D convolution (cross-correlation) with zero padding and the activation fused:
    x (N,C,H,W), w (K,C,R,S) -> act(conv + b) (N,K,P,Q)."""
    dev = _device_of(device, x, w, b)
    stride = _int(stride, "stride")
    kind, alpha = _act(activation, alpha)
    return _C.op_conv2d(x, w, b, stride, _conv_padding(padding, w, stride), kind, alpha, dev, _conv_variant(kernel))


def conv2d_backward(x, w, dy, stride=1, padding=0, device=None, kernel="auto"):
    """Gradients of conv2d: returns (dx, dw, db) for the upstream gradient dy (N,K,P,Q)."""
    dev = _device_of(device, x, w, dy)
    stride = _int(stride, "stride")
    return _C.op_conv2d_backward(x, w, dy, stride, _conv_padding(padding, w, stride), dev, _conv_variant(kernel))


def conv2d_max_pool2d(x, w, b=None, stride=1, padding=0, activation=None, alpha=None, pool_size=2, pool_stride=None,
                      device=None, kernel="auto"):
    """conv2d (+ b, activation) followed by max_pool2d, as the one fused call a network makes
    (the conv output is never returned): (y (N,K,P',Q'), arg), arg (int32, same shape) the
    flat P*Q index of each window's maximum in the conv output plane (the first maximum wins
    ties; a NaN wins only as a window's first element). The activation must be monotone
    (not gelu or silu)."""
    dev = _device_of(device, x, w, b)
    stride = _int(stride, "stride")
    kind, alpha = _act(activation, alpha)
    size = _int(pool_size, "pool_size")
    pstride = size if pool_stride is None else _int(pool_stride, "pool_stride")
    y, arg = _C.op_conv2d_max_pool2d(x, w, b, stride, _conv_padding(padding, w, stride), kind, alpha, size, pstride,
                                     dev, _conv_variant(kernel))
    if isinstance(arg, _C.Tensor):
        arg = arg.numpy()
    return y, arg.view(np.int32)


def conv2d_max_pool2d_backward(x, w, b, dy, stride=1, padding=0, activation=None, alpha=None, pool_size=2,
                               pool_stride=None, device=None, kernel="auto"):
    """Gradients of conv2d_max_pool2d for the pooled output's gradient dy: (dx, dw, db)
    (the forward runs again for the argmax)."""
    dev = _device_of(device, x, w, b, dy)
    stride = _int(stride, "stride")
    kind, alpha = _act(activation, alpha)
    size = _int(pool_size, "pool_size")
    pstride = size if pool_stride is None else _int(pool_stride, "pool_stride")
    return _C.op_conv2d_max_pool2d_backward(x, w, b, dy, stride, _conv_padding(padding, w, stride), kind, alpha,
                                            size, pstride, dev, _conv_variant(kernel))


def max_pool2d(x, size=2, stride=None, device=None):
    """Max pooling over size x size windows (stride defaults to size), no padding."""
    size = _int(size, "size")
    stride = size if stride is None else _int(stride, "stride")
    return _C.op_max_pool2d(x, size, stride, _device_of(device, x))


def max_pool2d_backward(x, dy, size=2, stride=None, device=None):
    """Gradient of max_pool2d w.r.t. x: dy goes to the first maximum of each window."""
    size = _int(size, "size")
    stride = size if stride is None else _int(stride, "stride")
    return _C.op_max_pool2d_backward(x, dy, size, stride, _device_of(device, x, dy))


def global_avg_pool2d(x, device=None):
    """Mean over H and W: x (N, C, H, W) -> (N, C)."""
    return _C.op_global_avg_pool2d(x, _device_of(device, x))


def global_avg_pool2d_backward(x, dy, device=None):
    """Gradient of global_avg_pool2d: dx (N, C, H, W) = dy / (H W) (x gives the shape)."""
    return _C.op_global_avg_pool2d_backward(x, dy, _device_of(device, x, dy))


def batch_norm(x, gamma, beta, running_mean, running_var, training=True, momentum=0.99, eps=1e-3, device=None):
    """Batch normalisation over the channels of x (N, C, H, W) or the features of x (N, F), Keras semantics.

    Returns (y, mean, invstd, new_running_mean, new_running_var): training uses the batch
    mean and biased variance and moves the running statistics by `momentum`; inference
    uses (and returns unchanged) the running ones. mean and invstd feed batch_norm_backward."""
    dev = _device_of(device, x, gamma, beta, running_mean, running_var)
    return _C.op_batch_norm(x, gamma, beta, running_mean, running_var, float(momentum), float(eps), bool(training),
                            dev)


def batch_norm_backward(x, dy, gamma, mean, invstd, training=True, device=None):
    """Gradients of batch_norm: (dx, dgamma, dbeta). In inference the statistics are constants."""
    dev = _device_of(device, x, dy, gamma, mean, invstd)
    return _C.op_batch_norm_backward(x, dy, gamma, mean, invstd, bool(training), dev)


def add(a, b, device=None):
    """a + b elementwise (same shapes)."""
    return _C.op_add(a, b, _device_of(device, a, b))
def avg_pool2d(x, size=2, stride=None, device=None):
    """Average pooling over size x size windows (stride defaults to size), no padding."""
    size = _int(size, "size")
    stride = size if stride is None else _int(stride, "stride")
    return _C.op_avg_pool2d(x, size, stride, _device_of(device, x))


def avg_pool2d_backward(x, dy, size=2, stride=None, device=None):
    """Gradient of avg_pool2d w.r.t. x (x gives only the shape): each window spreads
    dy / size**2 over its elements, overlapping windows adding up."""
    size = _int(size, "size")
    stride = size if stride is None else _int(stride, "stride")
    return _C.op_avg_pool2d_backward(x, dy, size, stride, _device_of(device, x, dy))


def global_max_pool2d(x, device=None):
    """Maximum over H and W: x (N, C, H, W) -> (N, C)."""
    return _C.op_global_max_pool2d(x, _device_of(device, x))


def global_max_pool2d_backward(x, dy, device=None):
    """Gradient of global_max_pool2d w.r.t. x: dy (N, C) goes to the first maximum of
    each plane (as max_pool2d's rule), zeros elsewhere."""
    return _C.op_global_max_pool2d_backward(x, dy, _device_of(device, x, dy))


def activation(x, name, alpha=None, device=None):
    """y = act(x) elementwise, act one of ACTIVATIONS (alpha: leaky_relu's slope, elu's alpha)."""
    kind, alpha = _act(name, alpha)
    return _C.op_activation(x, kind, alpha, _device_of(device, x))


def activation_backward(t, dy, name, alpha=None, device=None):
    """dx = dy * act'(z). t is the output y = act(z), or z itself for 'gelu' and 'silu'
    (their derivative is not a function of y): see activation_needs_input."""
    kind, alpha = _act(name, alpha)
    return _C.op_activation_backward(t, dy, kind, alpha, _device_of(device, t, dy))


def activation_needs_input(name):
    """True when activation_backward takes the input z rather than the output y."""
    return activation_name(name) in ("gelu", "silu")


def relu(x, device=None):
    return activation(x, "relu", device=device)


def relu_backward(y, dy, device=None):
    """dx = dy where the ReLU output y is positive, else 0."""
    return activation_backward(y, dy, "relu", device=device)


def dense(x, w, b=None, activation=None, alpha=None, device=None):
    """act(x (N, in) @ w.T (in, out) + b), the activation fused."""
    kind, alpha = _act(activation, alpha)
    return _C.op_dense(x, w, b, kind, alpha, _device_of(device, x, w, b))


def dense_backward(x, w, dy, device=None):
    """Gradients of dense (before any activation): returns (dx, dw, db)."""
    return _C.op_dense_backward(x, w, dy, _device_of(device, x, w, dy))


def _labels(labels):
    arr = np.asarray(labels) if not isinstance(labels, np.ndarray) else labels
    if arr.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() > np.iinfo(np.int32).max):
        raise ValueError("labels must be non-negative class indices")
    return arr.astype(np.int32, copy=False)


def softmax_cross_entropy(logits, labels, device=None):
    """Mean softmax cross-entropy of logits (N, K) against integer labels (N,).
    Returns (loss, dlogits) with dlogits = (softmax - onehot) / N."""
    return _C.op_softmax_cross_entropy(logits, _labels(labels), _device_of(device, logits))


def dropout(x, rate, seed=0, device=None):
    """Inverted dropout: returns (y, mask), mask = (u >= rate) / (1 - rate) with u from
    the counter-based stream (seed, element index), identical on every device."""
    return _C.op_dropout(x, float(rate), _int(seed, "seed") & (2**64 - 1), _device_of(device, x))


def sgd_step(w, g, vel=None, lr=0.01, momentum=0.0, weight_decay=0.0, nesterov=False, device=None):
    """One SGD step (PyTorch form); returns (w_new, vel_new)."""
    dev = _device_of(device, w, g, vel)
    return _C.op_sgd_step(w, g, vel, float(lr), float(momentum), float(weight_decay), bool(nesterov), dev)


def adam_step(w, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7, weight_decay=0.0, device=None):
    """One Adam step at step number t (from 1); returns (w_new, m_new, v_new)."""
    dev = _device_of(device, w, g, m, v)
    return _C.op_adam_step(w, g, m, v, _int(t, "t"), float(lr), float(beta1), float(beta2), float(eps),
                           float(weight_decay), dev)


# ---- augmentation (core/augment.h) ----------------------------------------------

#: RandomFlip's modes (their values are the flip bits: 1 horizontal, 2 vertical).
FLIP_MODES = {"horizontal": 1, "vertical": 2, "horizontal_and_vertical": 3}
#: Fill modes and interpolations, in the order of the C enums (core/augment.h).
FILL_MODES = ("reflect", "wrap", "constant", "nearest")
INTERPOLATIONS = ("bilinear", "nearest")


def factor_range(factor, name, low=None, high=None):
    """A Keras factor as (lower, upper): a number f is (-|f|, |f|), a pair is (lower, upper)
    with lower <= upper; both finite and inside [low, high] where given (ValueError)."""
    if isinstance(factor, (tuple, list)):
        if len(factor) != 2:
            raise ValueError(f"{name} must be a number or a pair (lower, upper), got {factor!r}")
        lo, hi = factor
    else:
        lo = hi = factor
    try:
        lo, hi = float(lo), float(hi)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or a pair of numbers, got {factor!r}") from None
    if not isinstance(factor, (tuple, list)):
        lo, hi = -abs(lo), abs(hi)
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi:
        raise ValueError(f"{name} must be finite with lower <= upper, got {factor!r}")
    if (low is not None and lo < low) or (high is not None and hi > high):
        raise ValueError(f"{name} must lie in [{low}, {high}], got {factor!r}")
    return lo, hi


def augment_mode(value, name, names):
    if value not in names:
        raise ValueError(f"{name} must be one of {list(names)}, got {value!r}")
    return value


def random_affine(x, flip=None, height_translation=0.0, width_translation=0.0, height_zoom=0.0, width_zoom=None,
                  rotation=0.0, fill_mode="reflect", interpolation="bilinear", fill_value=0.0, seed=0, draw=0,
                  device=None):
    """x (N, C, H, W) resampled through one random affine map per image (all channels alike),
    the kernel of the RandomFlip / RandomTranslation / RandomZoom / RandomRotation layers.

    flip: None or a RandomFlip mode; the other transforms take Keras factors (a number f is
    the range [-f, f], a pair is (lower, upper)): translations as fractions of the height /
    width, zooms z (zoom factor 1 + z: positive zooms out; width_zoom None keeps the aspect),
    rotation as a fraction of a full turn (positive: counter-clockwise). The map applies to
    the image the flip, then the translation, the zoom and the rotation, sampled once.
    fill_mode: 'reflect', 'wrap', 'constant' (fill_value) or 'nearest'; interpolation:
    'bilinear' or 'nearest'. Image i draws ga_rng_uniform(hash(seed, draw), 8 i + j): the
    same batch on every device; a network's layer runs it with its own stream and the
    network's draw counter (csrc/net/layers/augment.c)."""
    flip_bits = 0 if flip is None else FLIP_MODES[augment_mode(flip, "flip", tuple(FLIP_MODES))]
    th = factor_range(height_translation, "height_translation", -1.0, 1.0)
    tw = factor_range(width_translation, "width_translation", -1.0, 1.0)
    zh = factor_range(height_zoom, "height_zoom", -1.0)
    zw = zh if width_zoom is None else factor_range(width_zoom, "width_zoom", -1.0)
    rot = factor_range(rotation, "rotation")
    fill = FILL_MODES.index(augment_mode(fill_mode, "fill_mode", FILL_MODES))
    interp = INTERPOLATIONS.index(augment_mode(interpolation, "interpolation", INTERPOLATIONS))
    if not np.isfinite(float(fill_value)):
        raise ValueError(f"fill_value must be finite, got {fill_value!r}")
    return _C.op_random_affine(x, flip_bits, th, tw, zh, zw, width_zoom is None, rot, fill, interp, float(fill_value),
                               _int(seed, "seed") & (2**64 - 1), _int(draw, "draw") & (2**64 - 1),
                               _device_of(device, x))


def rescale(x, scale, offset=0.0, device=None):
    """y = x * scale + offset (one rounding, fmaf: the Rescaling layer's kernel)."""
    return _C.op_rescale(x, float(scale), float(offset), _device_of(device, x))
