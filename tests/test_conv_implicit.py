"""The implicit-GEMM convolution on CUDA (kernel='implicit') and the CUDA conv + max-pool fusion.

kernel='implicit' gathers the patches of x (or dy) tile by tile into shared memory instead
of writing an im2col matrix: forward (bias and activation in the epilogue), the data
gradient as a transposed convolution, the weight gradient with a fixed-order split
reduction. Each is checked against float64 NumPy references over awkward shapes (strides,
paddings, 1x1 to 5x5 and rectangular kernels, odd sizes, one channel, one image, sizes
that are not multiples of any tile, several tiles each way) and against the CUDA im2col
kernel. The fused conv + max pool (ops.conv2d_max_pool2d, what a network runs for a
Conv2D followed by a MaxPool2D; with the implicit GEMM and a 2x2, stride-2 pool the pool runs
in the GEMM's epilogue, other pools in a second pass) must give the CPU's argmax indices
exactly (ties: the first maximum; NaN: only as a window's first element) and its values and
gradients to tolerance. On CUDA, kernel='auto' is the implicit GEMM unless GPUACCEL_CONV_KERNEL says
otherwise (tests/conftest.py pins im2col for the tests that compare devices, and that pin
must still give im2col). The CPU refuses 'implicit' by name.

Runs on a GPU or on the CUDA emulator (GPUACCEL_CUDA_EMU build, GPUACCEL_TESTS=cuda)."""
import numpy as np
import pytest

import gpuaccel as ga
from gpuaccel import _C, ops
from gpuaccel.layers import Conv2D, Dense, Flatten, MaxPool2D

import reference as R
from conftest import DEVICE_RTOL, assert_close, f32, rtol_for, to_numpy
from test_activations import act64, grad64

KINDS = list(ops.ACTIVATIONS)
MONOTONE = [k for k in KINDS if k not in ("gelu", "silu")]

# (n, c, h, w, k, r, s, stride, padding)
CASES = [
    (1, 1, 1, 1, 1, 1, 1, 1, 0),        # 1x1 image, 1x1 kernel, one of everything
    (1, 1, 1, 1, 3, 3, 3, 1, 1),        # 1x1 image, 3x3 kernel padded to fit
    (2, 3, 7, 9, 5, 3, 3, 1, 1),        # odd sizes
    (1, 17, 11, 13, 33, 3, 3, 2, 1),    # stride 2, 33 filters: two 32-row tiles
    (3, 33, 9, 8, 17, 5, 5, 1, 2),      # 5x5, padding 2
    (2, 3, 10, 10, 4, 5, 5, 3, 0),      # stride 3
    (2, 3, 13, 13, 7, 5, 5, 2, 2),      # stride 2, padding 2
    (2, 1, 6, 7, 3, 3, 5, 1, 0),        # rectangular kernel, one channel
    (1, 3, 8, 9, 2, 1, 3, 2, 1),        # rectangular 1x3, stride 2
    (2, 5, 7, 6, 4, 5, 2, 1, 1),        # rectangular 5x2 (even)
    (2, 16, 7, 7, 8, 1, 1, 1, 0),       # 1x1 conv
    (1, 3, 7, 7, 2, 1, 1, 3, 0),        # 1x1 kernel, stride 3 (skips pixels)
    (1, 2, 8, 8, 2, 3, 3, 2, 0),        # (8-3)/2 not exact: floor
    (1, 3, 3, 3, 2, 3, 3, 1, 2),        # padding larger than the kernel's half
    (1, 3, 2, 2, 2, 5, 5, 1, 2),        # kernel bigger than the image, padded to fit
    (2, 4, 6, 6, 3, 2, 2, 2, 1),        # even kernel, stride 2, padding 1
    (4, 1, 28, 28, 32, 3, 3, 1, 1),     # the reference CNN's first conv
    (2, 32, 14, 14, 64, 3, 3, 1, 1),    # and its second
    (2, 7, 9, 9, 65, 3, 3, 1, 1),       # 65 filters: past the 64-row tile
    (3, 130, 9, 9, 257, 3, 3, 2, 1),    # several 128x128 tiles in every direction
    (5, 300, 5, 5, 70, 1, 1, 1, 0),     # long reduction, 1x1
    (9, 4, 16, 16, 8, 3, 3, 1, 1),      # n p q = 2304: the weight gradient splits (many SMs)
]


def _id(c):
    n, ch, h, w, k, r, s, st, p = c
    return f"n{n}c{ch}h{h}w{w}-k{k}r{r}s{s}-st{st}-p{p}"


def _data(case, seed=0):
    n, c, h, w, k, r, s, stride, pad = case
    g = np.random.default_rng(seed + n * 7 + c * 13 + h * 17 + w * 3 + k * 19 + r * 23 + s * 29 + stride * 31 + pad)
    x = f32(g.standard_normal((n, c, h, w)))
    wt = f32(g.standard_normal((k, c, r, s)) / np.sqrt(c * r * s))
    b = f32(g.standard_normal(k))
    return x, wt, b, g


# ---------------------------------------------------------------- single ops


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_implicit_forward(cuda_device, case, bias):
    n, c, h, w, k, r, s, stride, pad = case
    x, wt, b, _ = _data(case)
    b = b if bias else None
    y = ops.conv2d(x, wt, b, stride=stride, padding=pad, activation="relu", device=cuda_device, kernel="implicit")
    absref = R.conv2d(np.abs(x), np.abs(wt), None if b is None else np.abs(b), stride, pad)
    assert_close(y, R.conv2d(x, wt, b, stride, pad, relu=True), absref, rtol_for(c * r * s), what="implicit y")
    im2col = ops.conv2d(x, wt, b, stride=stride, padding=pad, activation="relu", device=cuda_device, kernel="im2col")
    assert_close(y, to_numpy(im2col), absref, DEVICE_RTOL, what="implicit vs im2col y")


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_implicit_backward(cuda_device, case):
    n, c, h, w, k, r, s, stride, pad = case
    x, wt, _, g = _data(case, seed=1)
    p, q = R.conv2d(x[:1], wt, None, stride, pad).shape[2:]
    dy = f32(g.standard_normal((n, k, p, q)))
    dx, dw, db = ops.conv2d_backward(x, wt, dy, stride=stride, padding=pad, device=cuda_device, kernel="implicit")
    ex = R.conv2d_backward(x, wt, dy, stride, pad)
    ab = R.conv2d_backward(np.abs(x), np.abs(wt), np.abs(dy), stride, pad)
    assert_close(dx, ex[0], ab[0], rtol_for(k * r * s), what="implicit dx")
    assert_close(dw, ex[1], ab[1], rtol_for(n * p * q), what="implicit dw")
    assert_close(db, ex[2], ab[2], rtol_for(n * p * q), what="implicit db")
    other = ops.conv2d_backward(x, wt, dy, stride=stride, padding=pad, device=cuda_device, kernel="im2col")
    for got, o, a, what in zip((dx, dw, db), other, ab, ("dx", "dw", "db")):
        assert_close(got, to_numpy(o), a, max(DEVICE_RTOL, rtol_for(n * p * q) if what != "dx" else DEVICE_RTOL),
                     what=f"implicit vs im2col {what}")


def _random_cases(count, seed=11):
    g = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        n, c, k = (int(v) for v in g.integers(1, [5, 10, 41]))
        h, w = (int(v) for v in g.integers(1, 13, 2))
        r, s = (int(v) for v in g.integers(1, 6, 2))
        stride, pad = int(g.integers(1, 4)), int(g.integers(0, 4))
        if h + 2 * pad >= r and w + 2 * pad >= s:
            out.append((n, c, h, w, k, r, s, stride, pad))
    return out


@pytest.mark.parametrize("case", _random_cases(40), ids=_id)
def test_implicit_random_shapes(cuda_device, case):
    """Seeded random geometries (padding up to 3 past kernels of 1 to 5, strides 1 to 3):
    forward and both gradients against float64."""
    n, c, h, w, k, r, s, stride, pad = case
    x, wt, b, g = _data(case, seed=4)
    ref = R.conv2d(x, wt, b, stride, pad)
    y = ops.conv2d(x, wt, b, stride=stride, padding=pad, device=cuda_device, kernel="implicit")
    assert_close(y, ref, R.conv2d(np.abs(x), np.abs(wt), np.abs(b), stride, pad), rtol_for(c * r * s), what="y")
    dy = f32(g.standard_normal(ref.shape))
    got = ops.conv2d_backward(x, wt, dy, stride=stride, padding=pad, device=cuda_device, kernel="implicit")
    ex = R.conv2d_backward(x, wt, dy, stride, pad)
    ab = R.conv2d_backward(np.abs(x), np.abs(wt), np.abs(dy), stride, pad)
    red = n * ref.shape[2] * ref.shape[3]
    for a, e, m, what, length in zip(got, ex, ab, ("dx", "dw", "db"), (k * r * s, red, red)):
        assert_close(a, e, m, rtol_for(length), atol=1e-7, what=what)


def test_implicit_backward_is_deterministic(cuda_device):
    """The weight gradient's split reduction adds its slices in a fixed order: the same bits every run."""
    case = (9, 4, 16, 16, 8, 3, 3, 1, 1)
    x, wt, _, g = _data(case, seed=2)
    dy = f32(g.standard_normal((9, 8, 16, 16)))
    runs = [ops.conv2d_backward(x, wt, dy, padding=1, device=cuda_device, kernel="implicit") for _ in range(3)]
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)


def test_implicit_gradients_match_finite_differences(cuda_device):
    """The analytic gradients of sum(dy * conv(x)) against central differences of the float64 definition."""
    case = (2, 2, 5, 4, 3, 3, 2, 2, 1)
    x, wt, b, g = _data(case, seed=3)
    y = R.conv2d(x, wt, b, 2, 1)
    dy = g.standard_normal(y.shape)
    num = R.numerical_grads(lambda x_, w_, b_: float((dy * R.conv2d(x_, w_, b_, 2, 1)).sum()),
                            [x.astype(np.float64), wt.astype(np.float64), b.astype(np.float64)])
    got = ops.conv2d_backward(x, wt, f32(dy), stride=2, padding=1, device=cuda_device, kernel="implicit")
    for a, e, what in zip(got, num, ("dx", "dw", "db")):
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4, err_msg=what)


@pytest.mark.parametrize("name", KINDS)
def test_implicit_fused_activation(cuda_device, name):
    g = np.random.default_rng(10 + KINDS.index(name))
    x = f32(g.standard_normal((3, 5, 9, 7)))
    w = f32(g.standard_normal((6, 5, 3, 3)) / np.sqrt(45))
    b = f32(g.standard_normal(6))
    out = ops.conv2d(x, w, b, stride=2, padding=1, activation=name, device=cuda_device, kernel="implicit")
    z = R.conv2d(x, w, b, 2, 1)
    absz = R.conv2d(np.abs(x), np.abs(w), np.abs(b), 2, 1)
    assert_close(out, act64(z, name), 1.2 * absz, rtol_for(45), atol=1e-6, what=f"implicit conv2d + {name}")
    alpha = ops.conv2d(x, w, b, stride=2, padding=1, activation=name, alpha=0.3, device=cuda_device,
                       kernel="implicit")
    assert_close(alpha, act64(z, name, 0.3), 1.2 * absz, rtol_for(45), atol=1e-6, what=f"{name} alpha 0.3")


def test_implicit_nan_propagates(cuda_device):
    x = np.ones((1, 1, 6, 6), np.float32)
    x[0, 0, 2, 3] = np.nan
    w = np.ones((1, 1, 3, 3), np.float32)
    y = to_numpy(ops.conv2d(x, w, padding=1, device=cuda_device, kernel="implicit"))
    windows = R.conv2d(np.isnan(x).astype(np.float64), w, None, 1, 1) > 0
    assert np.array_equal(np.isnan(y), windows)


# ---------------------------------------------------------------- conv + max pool, fused

# (n, c, h, w, k, kernel, conv stride, padding, activation, pool size, pool stride)
PAIR_CASES = [
    (5, 1, 12, 12, 8, 3, 1, 1, "relu", 2, 2),          # the reference CNN's pair, small
    (4, 3, 11, 9, 6, 3, 1, 1, "relu", 2, 2),           # odd sizes: the pool drops a row and a column
    (3, 2, 10, 10, 4, 3, 1, 0, "linear", 2, 2),        # no activation
    (3, 2, 13, 12, 5, 3, 1, 1, "relu", 3, 2),          # overlapping windows
    (2, 3, 12, 12, 4, 3, 2, 1, "leaky_relu", 2, 1),    # strided conv, stride-1 pool
    (4, 2, 9, 9, 3, 2, 1, 0, "tanh", 3, 3),            # 3x3 windows, ragged
    (2, 2, 6, 37, 3, 3, 1, 1, "elu", 2, 2),            # a long row
    (2, 3, 7, 7, 70, 3, 1, 1, "sigmoid", 2, 2),        # 70 filters: several row tiles
    (1, 1, 5, 5, 1, 1, 1, 0, "relu", 5, 1),            # one window covers the whole plane
    (3, 2, 13, 11, 5, 3, 2, 1, "relu", 2, 2),          # strided conv, 2x2 pool of a 7x6 output
    (4, 3, 16, 16, 40, 3, 1, 1, "relu", 2, 2),         # 1024 pooled columns: several column tiles
    (2, 6, 5, 7, 3, 1, 1, 0, "leaky_relu", 2, 2),      # 1x1 conv, odd sizes
]


def _pair_id(c):
    return "-".join(map(str, c))


def _quantized(case, seed):
    """Inputs on a grid of 1/4, weights and bias on 1/16, a third of x exactly zero: every conv
    sum is exact in float32 whatever the order, so both devices see the same conv output and
    the same ties (zeros under ReLU, equal neighbours)."""
    n, c, h, w, k, ks = case[:6]
    g = np.random.default_rng(seed)
    x = f32(np.round(g.uniform(-1, 1, (n, c, h, w)) * 4) / 4)
    x[g.random(x.shape) < 0.3] = 0.0
    wt = f32(np.round(g.uniform(-0.25, 0.25, (k, c, ks, ks)) * 16) / 16)
    b = f32(np.round(g.uniform(-0.25, 0.25, k) * 16) / 16)
    return x, wt, b, g


def _pair_args(case):
    n, c, h, w, k, ks, st, pad, act, psize, pstride = case
    return dict(stride=st, padding=pad, activation=act, pool_size=psize, pool_stride=pstride)


def _pair_reference(case, x, wt, b, arg, dy, act=None):
    """float64: z = conv, a = act(z), y = a at arg, and the gradients with dy routed through arg.
    act='linear' on absolute values gives the error scale (every slope here is at most 1)."""
    n, c, h, w, k, ks, st, pad, case_act, psize, pstride = case
    act = case_act if act is None else act
    z = R.conv2d(x, wt, b, st, pad)
    a = act64(z, act)
    flat = a.reshape(n, k, -1)
    idx = arg.reshape(n, k, -1).astype(np.int64)
    y = np.take_along_axis(flat, idx, axis=2).reshape(arg.shape)
    da = np.zeros_like(flat)
    for i in range(n):
        for j in range(k):
            np.add.at(da[i, j], idx[i, j], np.asarray(dy, np.float64).reshape(n, k, -1)[i, j])
    dz = da.reshape(z.shape) * grad64(z, act)
    return y, R.conv2d_backward(x, wt, dz, st, pad), z


@pytest.mark.parametrize("kernel", ["implicit", "im2col"])
@pytest.mark.parametrize("case", PAIR_CASES, ids=_pair_id)
def test_fused_pair_matches_the_cpu(cuda_device, case, kernel):
    x, wt, b, g = _quantized(case, len(str(case)))
    kw = _pair_args(case)
    y, arg = ops.conv2d_max_pool2d(x, wt, b, device=cuda_device, kernel=kernel, **kw)
    cy, carg = ops.conv2d_max_pool2d(x, wt, b, device="cpu", kernel="im2col", **kw)
    assert arg.dtype == np.int32
    np.testing.assert_array_equal(arg, carg, err_msg="argmax indices, CUDA vs CPU")
    assert_close(y, cy.astype(np.float64), rtol=1e-6, atol=1e-7, what="pooled y vs cpu")
    # the CPU's indices are the first maximum of each window in float64 too
    n, c, h, w, k, ks, st, pad, act, psize, pstride = case
    a = act64(R.conv2d(x, wt, b, st, pad), act)
    ry, rarg = R.max_pool2d_argmax(a, psize, pstride)
    if act in ("linear", "relu", "leaky_relu"):  # exact activations: ties are the same ties
        np.testing.assert_array_equal(carg, rarg)
    # gradients
    dy = f32(g.standard_normal(y.shape))
    dx, dw, db = ops.conv2d_max_pool2d_backward(x, wt, b, dy, device=cuda_device, kernel=kernel, **kw)
    cdx, cdw, cdb = ops.conv2d_max_pool2d_backward(x, wt, b, dy, device="cpu", kernel="im2col", **kw)
    ry, (rdx, rdw, rdb), z = _pair_reference(case, x, wt, b, carg, dy)
    _, (adx, adw, adb), _ = _pair_reference(case, np.abs(x), np.abs(wt), np.abs(b), carg, np.abs(dy), "linear")
    assert_close(y, ry, np.abs(ry), 1e-5, atol=1e-7, what="pooled y vs float64")
    for got, cpu, ref_, ab, what in ((dx, cdx, rdx, adx, "dx"), (dw, cdw, rdw, adw, "dw"), (db, cdb, rdb, adb, "db")):
        assert_close(got, ref_, ab, 2e-4, atol=1e-6, what=f"fused {what} vs float64")
        assert_close(got, cpu.astype(np.float64), ab, 2e-4, atol=1e-6, what=f"fused {what} vs cpu")


@pytest.mark.parametrize("kernel", ["implicit", "im2col"])
def test_fused_pair_ties_and_nan(cuda_device, kernel):
    """Constant regions tie every window (the first element wins); a NaN in x makes NaN conv
    outputs, which win a window only as its first element (strict >), as on the CPU."""
    case = (2, 1, 8, 8, 2, 3, 1, 1, "linear", 2, 2)
    x = np.zeros((2, 1, 8, 8), np.float32)
    x[0, 0, :4, :4] = 1.0  # constant block: equal conv outputs inside it
    x[1, 0, 5, 5] = np.nan
    wt = np.ones((2, 1, 3, 3), np.float32)
    wt[1] *= -1.0
    b = np.zeros(2, np.float32)
    for act in ("linear", "relu", "tanh"):
        kw = dict(_pair_args(case), activation=act)
        y, arg = ops.conv2d_max_pool2d(x, wt, b, device=cuda_device, kernel=kernel, **kw)
        cy, carg = ops.conv2d_max_pool2d(x, wt, b, device="cpu", kernel="im2col", **kw)
        np.testing.assert_array_equal(arg, carg, err_msg=f"{act}: argmax with ties and NaN")
        np.testing.assert_array_equal(np.isnan(y), np.isnan(cy))
        np.testing.assert_allclose(y, cy, rtol=1e-6, atol=1e-7)
        dy = np.ones(y.shape, np.float32)
        got = ops.conv2d_max_pool2d_backward(x, wt, b, dy, device=cuda_device, kernel=kernel, **kw)
        cpu = ops.conv2d_max_pool2d_backward(x, wt, b, dy, device="cpu", kernel="im2col", **kw)
        for a, c_, what in zip(got, cpu, ("dx", "dw", "db")):
            np.testing.assert_array_equal(np.isnan(a), np.isnan(c_), err_msg=f"{act} {what} NaNs")
            np.testing.assert_allclose(a, c_, rtol=1e-5, atol=1e-5, err_msg=f"{act} {what}")
    # a NaN that is a window's first conv output wins it; a NaN elsewhere does not
    flat = np.zeros((1, 1, 4, 4), np.float32)
    flat[0, 0, 0, 0] = np.nan   # window (0, 0): first element
    flat[0, 0, 2, 3] = np.nan   # window (1, 1): last element
    one = np.ones((1, 1, 1, 1), np.float32)
    y, arg = ops.conv2d_max_pool2d(flat, one, None, device=cuda_device, kernel=kernel, pool_size=2)
    cy, carg = ops.conv2d_max_pool2d(flat, one, None, device="cpu", kernel="im2col", pool_size=2)
    np.testing.assert_array_equal(arg, carg)
    assert np.isnan(y[0, 0, 0, 0]) and arg[0, 0, 0, 0] == 0
    assert not np.isnan(y[0, 0, 1, 1])


def test_fused_pair_refuses_what_it_cannot_do(cuda_device):
    x = np.ones((1, 1, 6, 6), np.float32)
    w = np.ones((2, 1, 3, 3), np.float32)
    with pytest.raises(ValueError, match="gelu"):
        ops.conv2d_max_pool2d(x, w, None, activation="gelu", device=cuda_device, kernel="implicit")
    with pytest.raises(ValueError, match="reference kernel"):
        ops.conv2d_max_pool2d(x, w, None, device=cuda_device, kernel="ref")
    with pytest.raises(ValueError, match="CPU only"):
        ops.conv2d_max_pool2d(x, w, None, device=cuda_device, kernel="winograd")
    with pytest.raises(ValueError, match="pool size"):
        ops.conv2d_max_pool2d(x, w, None, device=cuda_device, kernel="implicit", pool_size=7)


# ---------------------------------------------------------------- the kernel choice and bad variants


def test_cpu_refuses_implicit_by_name():
    x = np.ones((1, 1, 5, 5), np.float32)
    w = np.ones((1, 1, 3, 3), np.float32)
    for call in (lambda: ops.conv2d(x, w, device="cpu", kernel="implicit"),
                 lambda: ops.conv2d_backward(x, w, np.ones((1, 1, 3, 3), np.float32), device="cpu", kernel="implicit"),
                 lambda: ops.conv2d_max_pool2d(x, w, device="cpu", kernel="implicit")):
        with pytest.raises(ValueError, match="CUDA devices only.*im2col.*winograd"):
            call()
    m = ga.Sequential([Conv2D(2, 3, kernel="implicit"), Flatten(), Dense(2)], input_shape=(1, 5, 5))
    m.compile(device="cpu")
    with pytest.raises(ValueError, match="CUDA devices only"):
        m.predict(np.ones((2, 1, 5, 5), np.float32))


def test_cpu_ignores_implicit_in_the_environment(monkeypatch):
    """GPUACCEL_CONV_KERNEL is process-wide: 'implicit' is for the GPU, and the CPU's auto measures as usual."""
    monkeypatch.setenv("GPUACCEL_CONV_KERNEL", "implicit")
    x = f32(np.random.default_rng(0).standard_normal((2, 3, 6, 6)))
    w = f32(np.random.default_rng(1).standard_normal((4, 3, 3, 3)))
    y = ops.conv2d(x, w, padding=1, device="cpu")
    assert_close(y, R.conv2d(x, w, None, 1, 1), R.conv2d(np.abs(x), np.abs(w), None, 1, 1), rtol_for(27))
    monkeypatch.setenv("GPUACCEL_CONV_KERNEL", "fastest")
    with pytest.raises(ValueError, match="GPUACCEL_CONV_KERNEL=fastest.*implicit"):
        ops.conv2d(x, w, padding=1, device="cpu")


def test_names_table():
    assert _C.CONV_KERNELS["implicit"] == 5
    assert "implicit" in ops.CONV_KERNELS
    Conv2D(4, 3, kernel="implicit")  # accepted by the layer


def test_cuda_refuses_unknown_variants(cuda_device):
    x = np.ones((1, 1, 5, 5), np.float32)
    w = np.ones((1, 1, 3, 3), np.float32)
    with pytest.raises(ValueError, match="CPU only"):
        ops.conv2d(x, w, device=cuda_device, kernel="winograd2")
    for bad in (6, 0x100 | 5, 0x100):  # past the table, and a flag bit this code does not implement
        with pytest.raises(ValueError, match="unknown convolution kernel variant"):
            _C.op_conv2d(x, w, None, 1, 0, 0, 0.0, cuda_device, bad)


def _small_cnn(kernel, seed=0):
    return ga.Sequential([Conv2D(8, 3, padding="same", activation="relu", kernel=kernel), MaxPool2D(2),
                          Conv2D(12, 3, padding="same", activation="relu", kernel=kernel), MaxPool2D(2),
                          Conv2D(6, 3, strides=2, padding=1, activation="tanh", kernel=kernel),
                          Flatten(), Dense(10)], input_shape=(1, 12, 12), seed=seed)


def _train(model, device, x, y, steps, batch):
    model.compile(optimizer=ga.optimizers.Adam(1e-3), device=device)
    losses = [model._net.train_step(x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch])[0]
              for i in range(steps)]
    return np.array(losses), model.get_weights(), [k for k in model._net.conv_kernels() if k]


def _train_data(n=96):
    g = np.random.default_rng(5)
    x = f32(g.standard_normal((n, 1, 12, 12)))
    y = g.integers(0, 10, n).astype(np.int32)
    return x, y


@pytest.mark.parametrize("kernel", ["implicit", "auto"])
def test_network_on_cuda_follows_the_cpu(cuda_device, monkeypatch, kernel):
    """A CNN (two conv + pool pairs, fused on both devices, and a strided conv) trained a few Adam
    steps on CUDA with the implicit GEMM, kernel='implicit' or 'auto' with no pin in the
    environment, against the CPU's im2col run."""
    monkeypatch.delenv("GPUACCEL_CONV_KERNEL", raising=False)
    x, y = _train_data()
    cpu_loss, cpu_w, cpu_k = _train(_small_cnn("im2col"), "cpu", x, y, 6, 16)
    dev_loss, dev_w, dev_k = _train(_small_cnn(kernel), cuda_device, x, y, 6, 16)
    assert all(k.startswith("implicit") for k in dev_k), dev_k
    assert all(k.startswith("im2col") for k in cpu_k), cpu_k
    np.testing.assert_allclose(dev_loss, cpu_loss, rtol=1e-4)
    for i, (a, b) in enumerate(zip(dev_w, cpu_w)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4, err_msg=f"weight array {i}")


def test_the_im2col_pin_still_runs_im2col_on_cuda(cuda_device, monkeypatch):
    """tests/conftest.py sets GPUACCEL_CONV_KERNEL=im2col for tests that run CUDA code: under it,
    'auto' on CUDA runs im2col, bit for bit what kernel='im2col' gives."""
    monkeypatch.setenv("GPUACCEL_CONV_KERNEL", "im2col")
    x, y = _train_data(32)
    a_loss, a_w, a_k = _train(_small_cnn("auto"), cuda_device, x, y, 2, 16)
    b_loss, b_w, _ = _train(_small_cnn("im2col"), cuda_device, x, y, 2, 16)
    assert all(k == "im2col (auto)" for k in a_k), a_k
    np.testing.assert_array_equal(a_loss, b_loss)
    for a, b in zip(a_w, b_w):
        np.testing.assert_array_equal(a, b)
    monkeypatch.setenv("GPUACCEL_CONV_KERNEL", "implicit")
    xs = f32(np.ones((1, 1, 5, 5)))
    w = f32(np.ones((1, 1, 3, 3)))
    np.testing.assert_array_equal(ops.conv2d(xs, w, device=cuda_device),
                                  ops.conv2d(xs, w, device=cuda_device, kernel="implicit"))


def test_conv_benchmark_runs_on_cuda(cuda_device, capsys):
    """benchmarks/conv_kernels.py --device cuda starts and times both kernels (on the emulator at 2 images)."""
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks", "conv_kernels.py")
    spec = importlib.util.spec_from_file_location("conv_kernels_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--device", cuda_device, "--batch-size", "4", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("implicit") >= 2 and out.count("im2col") >= 2, out


def test_reference_cnn_auto_on_cuda_follows_the_cpu(cuda_device, fashion, monkeypatch):
    """The reference CNN with kernel='auto' everywhere: on CUDA (no pin) that is the implicit GEMM
    with both conv + pool pairs pooled in its epilogue; five Adam steps against the CPU's im2col."""
    (x, y), _ = fashion
    batch, steps = 64, 5
    runs = {}
    for device in ("cpu", cuda_device):
        if device == "cpu":
            monkeypatch.setenv("GPUACCEL_CONV_KERNEL", "im2col")
        else:
            monkeypatch.delenv("GPUACCEL_CONV_KERNEL", raising=False)
        model = ga.models.reference_cnn(seed=0).compile(optimizer=ga.optimizers.Adam(1e-3), device=device)
        loss = [model._net.train_step(x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch].astype(np.int32))[0]
                for i in range(steps)]
        runs[device] = (np.array(loss), model.get_weights(), [k for k in model._net.conv_kernels() if k])
    (cl, cw, ck), (dl, dw, dk) = runs["cpu"], runs[cuda_device]
    assert dk == ["implicit (auto)"] * 2 and ck == ["im2col (auto)"] * 2, (dk, ck)
    np.testing.assert_allclose(dl, cl, rtol=1e-4)
    for i, (a, b) in enumerate(zip(dw, cw)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4, err_msg=f"weight array {i}")
