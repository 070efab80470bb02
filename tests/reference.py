"""Naive float64 NumPy references for the gpuaccel ops, written for clarity, not speed.

Everything here works in float64 and follows the layouts of DESIGN.md: activations
NCHW, conv weights (K, C, R, S), dense weights (out, in). Nothing in this file imports
gpuaccel: it is the independent yardstick the kernels are measured against.
"""
import numpy as np

# ----------------------------------------------------------------------------
# convolution
# ----------------------------------------------------------------------------


def conv_pads(padding, r, s):
    """Resolve the `padding` argument to (pad_h, pad_w) the way the API defines it."""
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0
        if padding == "same":
            return (r - 1) // 2, (s - 1) // 2
        raise ValueError(padding)
    if isinstance(padding, tuple):
        return int(padding[0]), int(padding[1])
    return int(padding), int(padding)


def conv_out_size(h, w, r, s, stride, ph, pw):
    return (h + 2 * ph - r) // stride + 1, (w + 2 * pw - s) // stride + 1


def conv2d(x, w, b=None, stride=1, padding=0, relu=False):
    """y[n,k,p,q] = sum_{c,r,s} xpad[n, c, p*stride + r, q*stride + s] * w[k,c,r,s] + b[k]."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n, c, h, wd = x.shape
    k, c2, r, s = w.shape
    assert c == c2
    ph, pw = conv_pads(padding, r, s)
    p, q = conv_out_size(h, wd, r, s, stride, ph, pw)
    assert p >= 1 and q >= 1
    xp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw))
    xp[:, :, ph:ph + h, pw:pw + wd] = x
    y = np.zeros((n, k, p, q))
    for i in range(r):
        for j in range(s):
            patch = xp[:, :, i:i + stride * (p - 1) + 1:stride, j:j + stride * (q - 1) + 1:stride]
            y += np.einsum("ncpq,kc->nkpq", patch, w[:, :, i, j])
    if b is not None:
        y += np.asarray(b, np.float64)[None, :, None, None]
    if relu:
        y = np.maximum(y, 0.0)
    return y


def conv2d_backward(x, w, dy, stride=1, padding=0):
    """Gradients of sum(dy * conv2d(x, w, b)) with respect to x, w and b."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    dy = np.asarray(dy, np.float64)
    n, c, h, wd = x.shape
    k, _, r, s = w.shape
    ph, pw = conv_pads(padding, r, s)
    p, q = conv_out_size(h, wd, r, s, stride, ph, pw)
    assert dy.shape == (n, k, p, q)
    xp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw))
    xp[:, :, ph:ph + h, pw:pw + wd] = x
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for i in range(r):
        for j in range(s):
            sl = (slice(None), slice(None),
                  slice(i, i + stride * (p - 1) + 1, stride),
                  slice(j, j + stride * (q - 1) + 1, stride))
            dw[:, :, i, j] = np.einsum("nkpq,ncpq->kc", dy, xp[sl])
            dxp[sl] += np.einsum("nkpq,kc->ncpq", dy, w[:, :, i, j])
    dx = dxp[:, :, ph:ph + h, pw:pw + wd]
    db = dy.sum(axis=(0, 2, 3))
    return dx, dw, db


def conv2d_loops(x, w, b=None, stride=1, padding=0):
    """The same convolution as six explicit loops (used on tiny shapes to check conv2d)."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n, c, h, wd = x.shape
    k, _, r, s = w.shape
    ph, pw = conv_pads(padding, r, s)
    p, q = conv_out_size(h, wd, r, s, stride, ph, pw)
    y = np.zeros((n, k, p, q))
    for a in range(n):
        for o in range(k):
            for pi in range(p):
                for qi in range(q):
                    acc = 0.0 if b is None else float(b[o])
                    for ci in range(c):
                        for i in range(r):
                            for j in range(s):
                                hh = pi * stride + i - ph
                                ww = qi * stride + j - pw
                                if 0 <= hh < h and 0 <= ww < wd:
                                    acc += x[a, ci, hh, ww] * w[o, ci, i, j]
                    y[a, o, pi, qi] = acc
    return y


# ----------------------------------------------------------------------------
# max pooling (no padding; floor of the output size; the first maximum wins)
# ----------------------------------------------------------------------------


def pool_out_size(h, w, size, stride):
    return (h - size) // stride + 1, (w - size) // stride + 1


def max_pool2d_argmax(x, size=2, stride=None):
    """Returns (y, arg) where arg[n,c,p,q] is the flat h*w index of the first maximum
    of the window in row-major window order."""
    x = np.asarray(x, np.float64)
    stride = size if stride is None else stride
    n, c, h, w = x.shape
    p, q = pool_out_size(h, w, size, stride)
    y = np.empty((n, c, p, q))
    arg = np.empty((n, c, p, q), np.int64)
    for pi in range(p):
        for qi in range(q):
            h0, w0 = pi * stride, qi * stride
            win = x[:, :, h0:h0 + size, w0:w0 + size].reshape(n, c, size * size)
            a = np.argmax(win, axis=2)  # np.argmax returns the first maximum
            y[:, :, pi, qi] = np.take_along_axis(win, a[:, :, None], axis=2)[:, :, 0]
            arg[:, :, pi, qi] = (h0 + a // size) * w + (w0 + a % size)
    return y, arg


def max_pool2d(x, size=2, stride=None):
    return max_pool2d_argmax(x, size, stride)[0]


def max_pool2d_backward(x, dy, size=2, stride=None):
    """dx = dy routed to the first maximum of each window (summed where windows overlap)."""
    x = np.asarray(x, np.float64)
    dy = np.asarray(dy, np.float64)
    n, c, h, w = x.shape
    _, arg = max_pool2d_argmax(x, size, stride)
    dx = np.zeros((n, c, h * w))
    flat_dy = dy.reshape(n, c, -1)
    flat_arg = arg.reshape(n, c, -1)
    for a in range(n):
        for ch in range(c):
            np.add.at(dx[a, ch], flat_arg[a, ch], flat_dy[a, ch])
    return dx.reshape(n, c, h, w)


# ----------------------------------------------------------------------------
# relu, dense
# ----------------------------------------------------------------------------


def relu(x):
    return np.maximum(np.asarray(x, np.float64), 0.0)


def relu_backward(y, dy):
    y = np.asarray(y, np.float64)
    return np.where(y > 0, np.asarray(dy, np.float64), 0.0)


def dense(x, w, b=None, relu=False):
    y = np.asarray(x, np.float64) @ np.asarray(w, np.float64).T
    if b is not None:
        y = y + np.asarray(b, np.float64)[None, :]
    if relu:
        y = np.maximum(y, 0.0)
    return y


def dense_backward(x, w, dy):
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    dy = np.asarray(dy, np.float64)
    return dy @ w, dy.T @ x, dy.sum(axis=0)


def matmul(a, b, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, c=None):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if trans_a:
        a = a.T
    if trans_b:
        b = b.T
    out = alpha * (a @ b)
    if c is not None and beta != 0.0:
        out = out + beta * np.asarray(c, np.float64)
    return out


# ----------------------------------------------------------------------------
# softmax cross-entropy
# ----------------------------------------------------------------------------


def softmax_cross_entropy(logits, labels):
    """(mean loss, dlogits = (softmax - onehot) / N), computed stably."""
    z = np.asarray(logits, np.float64)
    labels = np.asarray(labels).astype(np.int64)
    n, k = z.shape
    zmax = z.max(axis=1, keepdims=True)
    e = np.exp(z - zmax)
    s = e.sum(axis=1)
    # log(s) - (z_label - zmax): never adds a small number to a huge one
    loss = np.log(s) - (z[np.arange(n), labels] - zmax[:, 0])
    prob = e / s[:, None]
    onehot = np.zeros_like(prob)
    onehot[np.arange(n), labels] = 1.0
    return float(loss.mean()), (prob - onehot) / n


# ----------------------------------------------------------------------------
# dropout: the counter hash of csrc/core/rng.h
# ----------------------------------------------------------------------------

_M64 = (1 << 64) - 1


def rng_hash_int(seed, counter):
    """SplitMix64-style hash, in Python integers (the specification)."""
    z = (seed * 0x9E3779B97F4A7C15 + counter * 0xD1B54A32D192ED03 + 0x632BE59BD9B4E019) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def rng_uniform_int(seed, counter):
    return (rng_hash_int(seed, counter) >> 40) * 2.0 ** -24


def rng_hash(seed, counters):
    """The same hash vectorised over an array of counters (uint64 arithmetic wraps mod 2**64)."""
    c = np.asarray(counters, dtype=np.uint64)
    s = np.array([seed & _M64], dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = s * np.uint64(0x9E3779B97F4A7C15) + c * np.uint64(0xD1B54A32D192ED03) + np.uint64(0x632BE59BD9B4E019)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def rng_uniform(seed, n):
    """u_i for i in [0, n): 24 random bits as a float in [0, 1) (exact in float32)."""
    h = rng_hash(seed, np.arange(n, dtype=np.uint64))
    return (h >> np.uint64(40)).astype(np.float64) * 2.0 ** -24


def dropout_mask(shape, rate, seed=0):
    """mask[i] = (u_i >= rate) / (1 - rate), i the C-order flat index. Returned in float64,
    with rate = float32(rate), which is what the C kernel sees (at rate 0.99 the float32
    rate alone moves 1 / (1 - rate) by 1e-6 relative)."""
    n = int(np.prod(shape))
    u = rng_uniform(seed, n)
    rate = float(np.float32(rate))
    keep = u >= rate
    return (keep / (1.0 - rate)).reshape(shape), u.reshape(shape)


# ----------------------------------------------------------------------------
# optimizers
# ----------------------------------------------------------------------------


def sgd_step(w, g, vel=None, lr=0.01, momentum=0.0, weight_decay=0.0, nesterov=False):
    w = np.asarray(w, np.float64)
    g = np.asarray(g, np.float64) + weight_decay * w
    v = np.zeros_like(w) if vel is None else np.asarray(vel, np.float64)
    v = momentum * v + g
    step = g + momentum * v if nesterov else v
    return w - lr * step, v


def adam_step(w, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7, weight_decay=0.0):
    w = np.asarray(w, np.float64)
    g = np.asarray(g, np.float64) + weight_decay * w
    m = beta1 * np.asarray(m, np.float64) + (1 - beta1) * g
    v = beta2 * np.asarray(v, np.float64) + (1 - beta2) * g * g
    mhat = m / (1 - beta1 ** t)
    vhat = v / (1 - beta2 ** t)
    return w - lr * mhat / (np.sqrt(vhat) + eps), m, v


# ----------------------------------------------------------------------------
# finite differences
# ----------------------------------------------------------------------------


def numerical_grads(f, arrays, eps=1e-6):
    """Central differences of the scalar f(*arrays) with respect to each array (float64).

    `arrays` is a list of float64 arrays (None entries are skipped and give None)."""
    arrays = [None if a is None else np.array(a, np.float64) for a in arrays]
    grads = []
    for idx, a in enumerate(arrays):
        if a is None:
            grads.append(None)
            continue
        g = np.zeros_like(a)
        flat = a.reshape(-1)
        gflat = g.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + eps
            fp = f(*arrays)
            flat[i] = old - eps
            fm = f(*arrays)
            flat[i] = old
            gflat[i] = (fp - fm) / (2 * eps)
        grads.append(g)
    return grads


# ----------------------------------------------------------------------------
# augmentation: the transform of csrc/core/augment.h and its sampling, in float64
# ----------------------------------------------------------------------------

AUG_DRAWS = 8
AUG_FILL_MODES = ("reflect", "wrap", "constant", "nearest")


def _aug_compose(a, b):
    a3 = np.array([a[:3], a[3:], [0.0, 0.0, 1.0]])
    b3 = np.array([b[:3], b[3:], [0.0, 0.0, 1.0]])
    r = a3 @ b3
    return np.concatenate([r[0], r[1]])


def augment_matrix(stream, i, h, w, flip=0, translate_h=(0.0, 0.0), translate_w=(0.0, 0.0), zoom_h=(0.0, 0.0),
                   zoom_w=None, rotate=(0.0, 0.0)):
    """The inverse map (output pixel -> input point) of image i, as float32 (6,): the C
    code computes it in double from float32 range ends and rounds once. flip: bits 1
    horizontal, 2 vertical; zoom_w None keeps the aspect."""
    u = [rng_uniform_int(stream, i * AUG_DRAWS + j) for j in range(7)]

    def lerp(r, uj):
        lo, hi = float(np.float32(r[0])), float(np.float32(r[1]))
        return lo + (hi - lo) * uj

    wm, hm = float(w - 1), float(h - 1)
    ang = lerp(rotate, u[6]) * 2.0 * np.pi
    c, s = np.cos(ang), np.sin(ang)
    rot = [c, -s, (wm - (c * wm - s * hm)) / 2.0, s, c, (hm - (s * wm + c * hm)) / 2.0]
    zy = 1.0 + lerp(zoom_h, u[4])
    zx = zy if zoom_w is None else 1.0 + lerp(zoom_w, u[5])
    zoom = [zx, 0.0, wm / 2.0 * (1.0 - zx), 0.0, zy, hm / 2.0 * (1.0 - zy)]
    dx, dy = lerp(translate_w, u[3]) * w, lerp(translate_h, u[2]) * h
    shift = [1.0, 0.0, -dx, 0.0, 1.0, -dy]
    fh = bool(flip & 1) and u[0] < 0.5
    fv = bool(flip & 2) and u[1] < 0.5
    fl = [-1.0 if fh else 1.0, 0.0, wm if fh else 0.0, 0.0, -1.0 if fv else 1.0, hm if fv else 0.0]
    return _aug_compose(fl, _aug_compose(shift, _aug_compose(zoom, rot))).astype(np.float32)


def _aug_fix(i, n, mode):
    """Indices after the fill mode (Keras 3 on integer indices); -1 marks the fill value."""
    i = np.asarray(i, np.int64)
    inside = (i >= 0) & (i < n)
    if mode == "constant":
        return np.where(inside, i, -1)
    if mode == "nearest":
        return np.clip(i, 0, n - 1)
    if mode == "wrap":
        return np.mod(i, n)
    k = np.mod(i, 2 * n)  # reflect: (d c b a | a b c d | d c b a)
    return np.where(k < n, k, 2 * n - 1 - k)


def augment_affine(x, stream, fill_mode="reflect", interpolation="bilinear", fill_value=0.0, **transform):
    """(y float64, ambiguous (n, h, w) bool): x (n, c, h, w) resampled through each image's
    map. ambiguous marks nearest-interpolated pixels whose point lies within 1e-3 of a
    rounding tie, where float32 and float64 coordinates may pick different pixels."""
    x = np.asarray(x, np.float64)
    n, c, h, w = x.shape
    y = np.empty_like(x)
    amb = np.zeros((n, h, w), bool)
    oy, ox = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    for i in range(n):
        m = augment_matrix(stream, i, h, w, **transform).astype(np.float64)
        px = m[0] * ox + m[1] * oy + m[2]
        py = m[3] * ox + m[4] * oy + m[5]
        planes = np.concatenate([x[i].reshape(c, h * w), np.full((c, 1), fill_value)], axis=1)  # index -1: fill

        def tap(ix, iy):
            fx, fy = _aug_fix(ix, w, fill_mode), _aug_fix(iy, h, fill_mode)
            off = np.where((fx < 0) | (fy < 0), h * w, fy * w + fx)
            return planes[:, off]

        if interpolation == "nearest":
            y[i] = tap(np.rint(px).astype(np.int64), np.rint(py).astype(np.int64))
            amb[i] = (np.abs(np.abs(px - np.floor(px)) - 0.5) < 1e-3) | (np.abs(np.abs(py - np.floor(py)) - 0.5) < 1e-3)
        else:
            x0, y0 = np.floor(px), np.floor(py)
            wx, wy = px - x0, py - y0
            x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
            y[i] = ((1 - wx) * (1 - wy) * tap(x0, y0) + wx * (1 - wy) * tap(x0 + 1, y0)
                    + (1 - wx) * wy * tap(x0, y0 + 1) + wx * wy * tap(x0 + 1, y0 + 1))
    return y, amb


def augment_layer_stream(model_seed, layer_seed, index):
    """The stream of a random augmentation layer (csrc/net/layers/augment.c): the model's
    seed mixed with the layer's seed (None: its index in the C layer table)."""
    key = (1 << 63) | index if layer_seed is None else layer_seed % 2**63
    return rng_hash_int((model_seed ^ 0xA06E47A11) & _M64, key)
