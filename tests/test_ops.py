"""Every gpuaccel.ops kernel against the float64 NumPy references of tests/reference.py.

Forward passes on awkward shapes (1x1 images and kernels, odd sizes, stride 2 and 3,
padding 0/1/2/'same'/'valid', batch 1, channel counts that are not a multiple of any SIMD
width or tile), every backward by central finite differences in float64 and against an
analytic float64 reference, and, on a GPU, every result against the CPU's.
"""
import numpy as np
import pytest

import gpuaccel as ga
import reference as ref
from conftest import assert_close, assert_matches_cpu, f32, rtol_for, run_on, to_numpy

ops = ga.ops

KERNELS = ["auto", "ref"]


# ============================================================================
# the references check themselves (cheap; makes a failure below easier to trust)
# ============================================================================


@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1), (3, 2), (1, "same")])
def test_reference_conv_matches_loops(stride, padding):
    r = np.random.default_rng(1)
    x = r.standard_normal((2, 3, 6, 7))
    w = r.standard_normal((4, 3, 3, 3))
    b = r.standard_normal(4)
    np.testing.assert_allclose(ref.conv2d(x, w, b, stride, padding), ref.conv2d_loops(x, w, b, stride, padding),
                               rtol=1e-12, atol=1e-12)


def test_reference_conv_backward_matches_finite_differences():
    r = np.random.default_rng(2)
    x = r.standard_normal((2, 2, 5, 4))
    w = r.standard_normal((3, 2, 3, 2))
    b = r.standard_normal(3)
    dy = r.standard_normal(ref.conv2d(x, w, b, 2, 1).shape)
    num = ref.numerical_grads(lambda x_, w_, b_: float((dy * ref.conv2d(x_, w_, b_, 2, 1)).sum()), [x, w, b])
    ana = ref.conv2d_backward(x, w, dy, 2, 1)
    for n_, a_ in zip(num, ana):
        np.testing.assert_allclose(a_, n_, rtol=1e-6, atol=1e-7)


def test_reference_dropout_hash_vectorised_matches_integer_spec():
    for seed in (0, 1, 12345, 2**40 + 3):
        u = ref.rng_uniform(seed, 64)
        for i in (0, 1, 2, 17, 63):
            assert u[i] == ref.rng_uniform_int(seed, i)
    # a known value of the spec: the hash is SplitMix64 mixing of the combined state
    assert 0.0 <= ref.rng_uniform_int(0, 0) < 1.0


# ============================================================================
# results: types, shapes, devices
# ============================================================================


def test_numpy_in_numpy_out(device):
    r = np.random.default_rng(0)
    x = f32(r.standard_normal((2, 3, 5, 5)))
    w = f32(r.standard_normal((4, 3, 3, 3)))
    y = ops.conv2d(x, w, device=device)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.flags.c_contiguous
    assert y.shape == (2, 4, 3, 3)
    p = ops.max_pool2d(x, device=device)
    assert isinstance(p, np.ndarray) and p.dtype == np.float32 and p.shape == (2, 3, 2, 2)
    loss, d = ops.softmax_cross_entropy(f32(r.standard_normal((4, 3))), np.array([0, 1, 2, 0]), device=device)
    assert isinstance(loss, float)
    assert isinstance(d, np.ndarray) and d.dtype == np.float32 and d.shape == (4, 3)


def test_default_device_is_cpu():
    x = f32(np.linspace(-1, 1, 12).reshape(3, 4))
    np.testing.assert_array_equal(ops.relu(x), ops.relu(x, device="cpu"))


def test_inputs_not_modified(device):
    r = np.random.default_rng(3)
    x = f32(r.standard_normal((2, 3, 6, 6)))
    w = f32(r.standard_normal((4, 3, 3, 3)))
    b = f32(r.standard_normal(4))
    dy = f32(r.standard_normal((2, 4, 6, 6)))
    keep = [a.copy() for a in (x, w, b, dy)]
    ops.conv2d(x, w, b, padding=1, activation="relu", device=device)
    ops.conv2d_backward(x, w, dy, padding=1, device=device)
    ops.relu(x, device=device)
    ops.relu_backward(x, x, device=device)
    ops.max_pool2d(x, device=device)
    ops.dropout(x, 0.5, device=device)
    for a, k in zip((x, w, b, dy), keep):
        np.testing.assert_array_equal(a, k)


# ============================================================================
# matmul (smoke only; GEMM has its own test file)
# ============================================================================


@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_matmul_smoke(device, ta, tb):
    r = np.random.default_rng(4)
    m, k, n = 7, 13, 5
    a = f32(r.standard_normal((k, m) if ta else (m, k)))
    b = f32(r.standard_normal((n, k) if tb else (k, n)))
    out, cpu = run_on(device, ops.matmul, a, b, trans_a=ta, trans_b=tb)
    absref = ref.matmul(np.abs(a), np.abs(b), ta, tb)
    assert_close(out, ref.matmul(a, b, ta, tb), absref, rtol_for(k), what="matmul")
    if cpu is not None:
        assert_matches_cpu(out, cpu, absref)


def test_matmul_alpha_beta_c(device):
    r = np.random.default_rng(5)
    a = f32(r.standard_normal((6, 9)))
    b = f32(r.standard_normal((9, 4)))
    c = f32(r.standard_normal((6, 4)))
    out = ops.matmul(a, b, alpha=0.5, beta=2.0, c=c, device=device)
    absref = ref.matmul(np.abs(a), np.abs(b), alpha=0.5, beta=2.0, c=np.abs(c))
    assert_close(out, ref.matmul(a, b, alpha=0.5, beta=2.0, c=c), absref, rtol_for(9), what="matmul alpha beta")


def test_matmul_kernels_agree(device):
    r = np.random.default_rng(6)
    a = f32(r.standard_normal((33, 17)))
    b = f32(r.standard_normal((17, 9)))
    absref = ref.matmul(np.abs(a), np.abs(b))
    kernels = ["auto", "ref"] + (["cublas"] if device != "cpu" else [])
    for kern in kernels:
        assert_close(ops.matmul(a, b, device=device, kernel=kern), ref.matmul(a, b), absref, rtol_for(17),
                     what=f"matmul kernel={kern}")


# ============================================================================
# conv2d forward
# ============================================================================

# (N, C, H, W, K, R, S, stride, padding, bias, relu)
CONV_CASES = [
    (1, 1, 1, 1, 1, 1, 1, 1, 0, False, False),   # 1x1 image, 1x1 kernel
    (1, 1, 1, 1, 3, 3, 3, 1, 1, True, False),    # 1x1 image, 3x3 kernel padded to fit
    (2, 3, 7, 9, 5, 3, 3, 1, 1, True, False),    # odd sizes
    (1, 17, 11, 13, 33, 3, 3, 2, 1, True, True),  # stride 2, 17 -> 33 channels
    (3, 33, 9, 8, 17, 5, 5, 1, 2, False, True),  # 5x5, padding 2
    (2, 3, 10, 10, 4, 5, 5, 3, 0, True, False),  # stride 3
    (2, 3, 13, 13, 7, 5, 5, 2, 2, True, True),   # stride 2, padding 2
    (2, 1, 6, 7, 3, 3, 5, 1, 0, True, False),    # rectangular kernel
    (1, 3, 8, 9, 2, 1, 3, 2, 1, False, False),   # rectangular 1x3, stride 2
    (2, 5, 7, 6, 4, 5, 2, 1, 1, True, False),    # rectangular 5x2 (even), padding 1
    (2, 16, 7, 7, 8, 1, 1, 1, 0, True, True),    # 1x1 conv
    (1, 3, 7, 7, 2, 1, 1, 3, 0, False, False),   # 1x1 kernel, stride 3 (skips pixels)
    (1, 2, 8, 8, 2, 3, 3, 2, 0, True, False),    # (8-3)/2 not exact: floor
    (1, 3, 3, 3, 2, 3, 3, 1, 2, True, False),    # padding larger than the kernel's half
    (1, 2, 3, 4, 3, 3, 4, 1, 0, True, False),    # kernel == image: 1x1 output
    (1, 3, 2, 2, 2, 5, 5, 1, 2, False, False),   # kernel bigger than the image, padded to fit
    (2, 4, 5, 5, 3, 3, 3, 1, "same", True, True),
    (1, 3, 6, 6, 4, 5, 5, 1, "same", True, False),
    (2, 2, 4, 4, 3, 1, 1, 1, "same", False, False),
    (2, 3, 6, 5, 4, 3, 3, 1, "valid", True, False),
    (2, 3, 9, 9, 4, 3, 3, 2, "valid", False, False),
    (8, 1, 28, 28, 32, 3, 3, 1, "same", True, True),    # the reference CNN's first conv
    (4, 32, 14, 14, 64, 3, 3, 1, "same", True, True),   # and its second
    (3, 130, 9, 9, 257, 3, 3, 2, 1, True, False),        # several GEMM tiles in every direction
    (5, 300, 5, 5, 70, 1, 1, 1, 0, True, True),          # long reduction, 1x1
]


def _conv_id(c):
    n, ch, h, w, k, r, s, st, p, b, relu = c
    return f"n{n}c{ch}h{h}w{w}-k{k}r{r}s{s}-st{st}-p{p}" + ("-b" if b else "") + ("-relu" if relu else "")


def _conv_data(case, seed=0):
    n, c, h, w, k, r, s, stride, padding, has_b, relu = case
    g = np.random.default_rng(seed + n * 7 + c * 13 + h * 17 + k * 19 + r * 23 + s * 29 + stride)
    x = f32(g.standard_normal((n, c, h, w)))
    wt = f32(g.standard_normal((k, c, r, s)) / np.sqrt(c * r * s))
    b = f32(g.standard_normal(k)) if has_b else None
    return x, wt, b


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("case", CONV_CASES, ids=_conv_id)
def test_conv2d_forward(device, kernel, case):
    n, c, h, w, k, r, s, stride, padding, has_b, relu = case
    x, wt, b = _conv_data(case)
    out, cpu = run_on(device, ops.conv2d, x, wt, b, stride=stride, padding=padding,
                      activation="relu" if relu else None, kernel=kernel)
    expect = ref.conv2d(x, wt, b, stride, padding, relu)
    absref = ref.conv2d(np.abs(x), np.abs(wt), None if b is None else np.abs(b), stride, padding)
    if padding == "same":
        assert to_numpy(out).shape == (n, k, h, w)
    assert_close(out, expect, absref, rtol_for(c * r * s), what=f"conv2d kernel={kernel}")
    if cpu is not None:
        assert_matches_cpu(out, cpu, absref)


def test_conv2d_kernels_agree(device):
    case = (2, 17, 9, 11, 33, 3, 3, 1, 1, True, False)
    x, wt, b = _conv_data(case)
    y_auto = ops.conv2d(x, wt, b, padding=1, device=device, kernel="auto")
    y_ref = ops.conv2d(x, wt, b, padding=1, device=device, kernel="ref")
    absref = ref.conv2d(np.abs(x), np.abs(wt), np.abs(b), 1, 1)
    assert_close(y_auto, to_numpy(y_ref), absref, 1e-4, what="conv2d auto vs ref")


def test_conv2d_same_rectangular_kernel(device):
    """'same' with an odd but non-square kernel pads each axis by its own half; a
    build that supports only one padding value must refuse it, not compute garbage."""
    g = np.random.default_rng(9)
    x = f32(g.standard_normal((2, 3, 7, 8)))
    w = f32(g.standard_normal((4, 3, 3, 5)))
    try:
        y = ops.conv2d(x, w, padding="same", device=device)
    except ValueError:
        return
    assert_close(y, ref.conv2d(x, w, None, 1, "same"), ref.conv2d(np.abs(x), np.abs(w), None, 1, "same"),
                 rtol_for(45), what="conv2d same 3x5")


def test_conv2d_padding_int_equals_explicit_zero_padding(device):
    g = np.random.default_rng(10)
    x = f32(g.standard_normal((1, 3, 5, 6)))
    w = f32(g.standard_normal((2, 3, 3, 3)))
    xp = f32(np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2))))
    a = to_numpy(ops.conv2d(x, w, padding=2, device=device))
    bb = to_numpy(ops.conv2d(xp, w, padding=0, device=device))
    np.testing.assert_allclose(a, bb, rtol=1e-5, atol=1e-6)


def test_conv2d_nan_propagates(device):
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 0, 0] = np.nan
    w = np.ones((1, 1, 2, 2), np.float32)
    y = to_numpy(ops.conv2d(x, w, stride=2, device=device))
    assert np.isnan(y[0, 0, 0, 0])
    assert np.all(y.reshape(-1)[1:] == 0)


# ============================================================================
# conv2d backward
# ============================================================================


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("case", CONV_CASES, ids=_conv_id)
def test_conv2d_backward_vs_analytic(device, kernel, case):
    n, c, h, w, k, r, s, stride, padding, _, _ = case
    x, wt, _ = _conv_data(case)
    g = np.random.default_rng(11)
    p, q = ref.conv2d(x[:1, :1], wt[:1, :1], None, stride, padding).shape[2:]
    dy = f32(g.standard_normal((n, k, p, q)))
    out, cpu = run_on(device, ops.conv2d_backward, x, wt, dy, stride=stride, padding=padding, kernel=kernel)
    dx, dw, db = out
    ex = ref.conv2d_backward(x, wt, dy, stride, padding)
    ab = ref.conv2d_backward(np.abs(x), np.abs(wt), np.abs(dy), stride, padding)
    assert_close(dx, ex[0], ab[0], rtol_for(k * r * s), what="conv2d_backward dx")
    assert_close(dw, ex[1], ab[1], rtol_for(n * p * q), what="conv2d_backward dw")
    assert_close(db, ex[2], ab[2], rtol_for(n * p * q), what="conv2d_backward db")
    if cpu is not None:
        for o, cp, a, name in zip(out, cpu, ab, ("dx", "dw", "db")):
            assert_matches_cpu(o, cp, a, what=f"conv2d_backward {name}")


# (N, C, H, W, K, R, S, stride, padding)
CONV_FD_CASES = [
    (2, 3, 5, 5, 4, 3, 3, 1, 1),
    (1, 2, 7, 6, 3, 2, 3, 2, 1),     # even/rectangular kernel, stride 2
    (2, 1, 6, 6, 2, 5, 5, 3, 2),     # stride 3, padding 2
    (1, 3, 4, 4, 2, 1, 1, 2, 0),     # 1x1 kernel, stride 2: some inputs get no gradient
    (1, 2, 5, 5, 3, 3, 3, 1, "same"),
    (1, 1, 1, 1, 2, 1, 1, 1, 0),     # 1x1 everything
]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("case", CONV_FD_CASES, ids=lambda c: "-".join(map(str, c)))
def test_conv2d_backward_finite_differences(device, kernel, case):
    n, c, h, w, k, r, s, stride, padding = case
    g = np.random.default_rng(12 + h + k)
    x = f32(g.standard_normal((n, c, h, w)))
    wt = f32(g.standard_normal((k, c, r, s)))
    b = f32(g.standard_normal(k))
    p, q = ref.conv2d(x, wt, None, stride, padding).shape[2:]
    dy = f32(g.standard_normal((n, k, p, q)))
    dy64 = dy.astype(np.float64)
    num = ref.numerical_grads(lambda x_, w_, b_: float((dy64 * ref.conv2d(x_, w_, b_, stride, padding)).sum()),
                              [x, wt, b])
    dx, dw, db = ops.conv2d_backward(x, wt, dy, stride=stride, padding=padding, device=device, kernel=kernel)
    ab = ref.conv2d_backward(np.abs(x), np.abs(wt), np.abs(dy), stride, padding)
    # finite differences in float64 carry ~1e-9 relative error; the tolerance is the fp32 one
    assert_close(dx, num[0], ab[0], rtol_for(k * r * s), atol=1e-7, what="dx vs finite differences")
    assert_close(dw, num[1], ab[1], rtol_for(n * p * q), atol=1e-7, what="dw vs finite differences")
    assert_close(db, num[2], ab[2], rtol_for(n * p * q), atol=1e-7, what="db vs finite differences")


def test_conv2d_relu_chain_finite_differences(device):
    """conv2d(activation="relu") then relu_backward then conv2d_backward: the gradient of the fused op."""
    g = np.random.default_rng(13)
    x = f32(g.standard_normal((2, 3, 5, 5)))
    wt = f32(g.standard_normal((4, 3, 3, 3)))
    b = f32(g.standard_normal(4))
    y = ops.conv2d(x, wt, b, padding=1, activation="relu", device=device)
    pre = ref.conv2d(x, wt, b, 1, 1)
    assert np.min(np.abs(pre)) > 1e-4, "test data too close to the ReLU kink"
    dy = f32(g.standard_normal(pre.shape))
    dyr = ops.relu_backward(y, dy, device=device)
    dx, dw, db = ops.conv2d_backward(x, wt, dyr, padding=1, device=device)
    dy64 = dy.astype(np.float64)
    num = ref.numerical_grads(lambda x_, w_, b_: float((dy64 * ref.conv2d(x_, w_, b_, 1, 1, relu=True)).sum()),
                              [x, wt, b])
    ab = ref.conv2d_backward(np.abs(x), np.abs(wt), np.abs(dy), 1, 1)
    assert_close(dx, num[0], ab[0], rtol_for(36), atol=1e-7, what="dx (relu chain)")
    assert_close(dw, num[1], ab[1], rtol_for(50), atol=1e-7, what="dw (relu chain)")
    assert_close(db, num[2], ab[2], rtol_for(50), atol=1e-7, what="db (relu chain)")


# ============================================================================
# max pooling
# ============================================================================

# (N, C, H, W, size, stride)
POOL_CASES = [
    (1, 1, 1, 1, 1, None),
    (2, 3, 4, 4, 2, None),
    (2, 3, 7, 9, 2, None),     # odd sizes: last row/column dropped
    (1, 17, 9, 9, 3, 2),       # overlapping windows
    (2, 33, 8, 7, 3, 2),
    (1, 3, 10, 10, 3, 3),      # odd size, stride == size
    (1, 3, 11, 10, 3, None),
    (1, 2, 6, 6, 2, 1),        # stride 1
    (1, 2, 9, 11, 2, 3),       # stride > size: gaps
    (1, 1, 5, 5, 5, None),     # whole image
    (1, 2, 5, 7, 1, 2),        # size 1: subsampling
    (8, 32, 28, 28, 2, None),  # the reference CNN
    (8, 64, 14, 14, 2, 2),
]


def _pool_id(c):
    return f"n{c[0]}c{c[1]}h{c[2]}w{c[3]}-size{c[4]}-stride{c[5]}"


@pytest.mark.parametrize("case", POOL_CASES, ids=_pool_id)
def test_max_pool2d_forward(device, case):
    n, c, h, w, size, stride = case
    g = np.random.default_rng(20 + h * w + c)
    x = f32(g.standard_normal((n, c, h, w)))
    out, cpu = run_on(device, ops.max_pool2d, x, size=size, stride=stride)
    expect = ref.max_pool2d(x, size, stride)
    out = to_numpy(out)
    assert out.dtype == np.float32 and out.shape == expect.shape
    np.testing.assert_array_equal(out, expect.astype(np.float32))
    if cpu is not None:
        np.testing.assert_array_equal(out, to_numpy(cpu))


@pytest.mark.parametrize("case", POOL_CASES, ids=_pool_id)
def test_max_pool2d_backward_vs_reference(device, case):
    n, c, h, w, size, stride = case
    g = np.random.default_rng(21 + h * w + c)
    x = f32(g.standard_normal((n, c, h, w)))
    p, q = ref.max_pool2d(x[:1, :1], size, stride).shape[2:]
    dy = f32(g.standard_normal((n, c, p, q)))
    out, cpu = run_on(device, ops.max_pool2d_backward, x, dy, size=size, stride=stride)
    expect = ref.max_pool2d_backward(x, dy, size, stride)
    absref = ref.max_pool2d_backward(x, np.abs(dy), size, stride)
    assert_close(out, expect, absref, 1e-6, what="max_pool2d_backward")
    if cpu is not None:
        assert_matches_cpu(out, cpu, absref, rtol=1e-6)


@pytest.mark.parametrize("size,stride", [(2, None), (3, 2), (2, 1), (3, 3)])
def test_max_pool2d_ties_first_wins(device, size, stride):
    g = np.random.default_rng(22)
    # small integers: most windows hold ties
    x = f32(g.integers(0, 3, size=(2, 3, 9, 8)))
    p, q = ref.max_pool2d(x[:1, :1], size, stride).shape[2:]
    dy = f32(g.standard_normal((2, 3, p, q)))
    np.testing.assert_array_equal(to_numpy(ops.max_pool2d(x, size, stride, device=device)),
                                  ref.max_pool2d(x, size, stride).astype(np.float32))
    dx = ops.max_pool2d_backward(x, dy, size, stride, device=device)
    assert_close(dx, ref.max_pool2d_backward(x, dy, size, stride),
                 ref.max_pool2d_backward(x, np.abs(dy), size, stride), 1e-6, what="max_pool2d_backward ties")


def test_max_pool2d_all_equal_routes_to_window_start(device):
    x = np.zeros((1, 1, 4, 4), np.float32)
    dy = f32(np.arange(1, 5).reshape(1, 1, 2, 2))
    dx = to_numpy(ops.max_pool2d_backward(x, dy, 2, device=device))
    expect = np.zeros((1, 1, 4, 4), np.float32)
    expect[0, 0, 0, 0], expect[0, 0, 0, 2], expect[0, 0, 2, 0], expect[0, 0, 2, 2] = 1, 2, 3, 4
    np.testing.assert_array_equal(dx, expect)


def test_max_pool2d_all_negative(device):
    """The running maximum must start at the first element (or -inf), not at 0."""
    g = np.random.default_rng(23)
    x = f32(-1.0 - np.abs(g.standard_normal((2, 3, 6, 6))))
    y = to_numpy(ops.max_pool2d(x, 3, 2, device=device))
    np.testing.assert_array_equal(y, ref.max_pool2d(x, 3, 2).astype(np.float32))
    assert np.all(y < 0)
    x2 = np.full((1, 1, 2, 2), -np.inf, np.float32)
    x2[0, 0, 1, 1] = -1e30
    np.testing.assert_array_equal(to_numpy(ops.max_pool2d(x2, 2, device=device)), f32([[[[-1e30]]]]))


@pytest.mark.parametrize("size,stride", [(2, None), (3, 2), (2, 3)])
def test_max_pool2d_backward_finite_differences(device, size, stride):
    g = np.random.default_rng(24)
    n, c, h, w = 2, 2, 7, 7
    # distinct values far apart compared with eps: the max is differentiable there
    x = f32((g.permutation(n * c * h * w) * 0.01 - 1.0).reshape(n, c, h, w))
    p, q = ref.max_pool2d(x, size, stride).shape[2:]
    dy = f32(g.standard_normal((n, c, p, q)))
    dy64 = dy.astype(np.float64)
    (num,) = ref.numerical_grads(lambda x_: float((dy64 * ref.max_pool2d(x_, size, stride)).sum()), [x])
    dx = ops.max_pool2d_backward(x, dy, size, stride, device=device)
    assert_close(dx, num, ref.max_pool2d_backward(x, np.abs(dy), size, stride), 1e-6, atol=1e-7,
                 what="max_pool2d_backward vs finite differences")


# ============================================================================
# relu
# ============================================================================


@pytest.mark.parametrize("shape", [(1,), (7,), (3, 17), (2, 3, 5, 7), (4, 33, 9, 9)])
def test_relu_forward_backward(device, shape):
    g = np.random.default_rng(30 + len(shape))
    x = f32(g.standard_normal(shape))
    x.reshape(-1)[0] = 0.0
    y, ycpu = run_on(device, ops.relu, x)
    np.testing.assert_array_equal(to_numpy(y), np.maximum(x, 0))
    dy = f32(g.standard_normal(shape))
    dx, dxcpu = run_on(device, ops.relu_backward, to_numpy(y), dy)
    np.testing.assert_array_equal(to_numpy(dx), np.where(to_numpy(y) > 0, dy, 0).astype(np.float32))
    if ycpu is not None:
        np.testing.assert_array_equal(to_numpy(y), to_numpy(ycpu))
        np.testing.assert_array_equal(to_numpy(dx), to_numpy(dxcpu))


def test_relu_backward_finite_differences(device):
    g = np.random.default_rng(31)
    x = f32(g.standard_normal((3, 11)))
    x[np.abs(x) < 1e-3] = 0.5
    dy = f32(g.standard_normal((3, 11)))
    dy64 = dy.astype(np.float64)
    (num,) = ref.numerical_grads(lambda x_: float((dy64 * ref.relu(x_)).sum()), [x])
    dx = ops.relu_backward(ops.relu(x, device=device), dy, device=device)
    assert_close(dx, num, np.abs(dy), 1e-6, atol=1e-7, what="relu_backward vs finite differences")


# ============================================================================
# dense
# ============================================================================

# (N, in, out, bias, relu)
DENSE_CASES = [
    (1, 1, 1, True, False),
    (3, 17, 33, True, True),
    (8, 100, 10, True, False),
    (5, 33, 1, False, False),
    (2, 1, 7, True, True),
    (1, 64, 17, True, False),
    (16, 3136, 128, True, True),   # the reference CNN's first dense layer
    (128, 128, 10, True, False),
]


@pytest.mark.parametrize("case", DENSE_CASES, ids=lambda c: "n{}-in{}-out{}-b{:d}-relu{:d}".format(*c))
def test_dense_forward(device, case):
    n, fin, fout, has_b, relu = case
    g = np.random.default_rng(40 + fin + fout)
    x = f32(g.standard_normal((n, fin)))
    w = f32(g.standard_normal((fout, fin)) / np.sqrt(fin))
    b = f32(g.standard_normal(fout)) if has_b else None
    out, cpu = run_on(device, ops.dense, x, w, b, activation="relu" if relu else None)
    absref = ref.dense(np.abs(x), np.abs(w), None if b is None else np.abs(b))
    assert_close(out, ref.dense(x, w, b, relu), absref, rtol_for(fin), what="dense")
    if cpu is not None:
        assert_matches_cpu(out, cpu, absref)


@pytest.mark.parametrize("case", DENSE_CASES, ids=lambda c: "n{}-in{}-out{}".format(*c[:3]))
def test_dense_backward_vs_analytic(device, case):
    n, fin, fout, _, _ = case
    g = np.random.default_rng(41 + fin + fout)
    x = f32(g.standard_normal((n, fin)))
    w = f32(g.standard_normal((fout, fin)))
    dy = f32(g.standard_normal((n, fout)))
    out, cpu = run_on(device, ops.dense_backward, x, w, dy)
    ex = ref.dense_backward(x, w, dy)
    ab = ref.dense_backward(np.abs(x), np.abs(w), np.abs(dy))
    for o, e, a, name, length in zip(out, ex, ab, ("dx", "dw", "db"), (fout, n, n)):
        assert_close(o, e, a, rtol_for(length), what=f"dense_backward {name}")
    if cpu is not None:
        for o, cp, a, name in zip(out, cpu, ab, ("dx", "dw", "db")):
            assert_matches_cpu(o, cp, a, what=f"dense_backward {name}")


@pytest.mark.parametrize("n,fin,fout", [(3, 5, 4), (1, 1, 1), (2, 7, 1)])
def test_dense_backward_finite_differences(device, n, fin, fout):
    g = np.random.default_rng(42 + fin)
    x = f32(g.standard_normal((n, fin)))
    w = f32(g.standard_normal((fout, fin)))
    b = f32(g.standard_normal(fout))
    dy = f32(g.standard_normal((n, fout)))
    dy64 = dy.astype(np.float64)
    num = ref.numerical_grads(lambda x_, w_, b_: float((dy64 * ref.dense(x_, w_, b_)).sum()), [x, w, b])
    out = ops.dense_backward(x, w, dy, device=device)
    ab = ref.dense_backward(np.abs(x), np.abs(w), np.abs(dy))
    for o, nm, a, name in zip(out, num, ab, ("dx", "dw", "db")):
        assert_close(o, nm, a, 1e-4, atol=1e-7, what=f"dense_backward {name} vs finite differences")


# ============================================================================
# softmax cross-entropy
# ============================================================================


def _check_xent(device, logits, labels, loss_rtol=1e-5):
    (loss, d), cpu = run_on(device, ops.softmax_cross_entropy, logits, labels)
    el, ed = ref.softmax_cross_entropy(logits, labels)
    assert isinstance(loss, float), f"loss should be a Python float, got {type(loss).__name__}"
    scale = max(1.0, float(np.max(np.abs(logits))))
    assert abs(loss - el) <= loss_rtol * abs(el) + 1e-6 * scale, f"loss {loss!r}, expected {el!r}"
    n = logits.shape[0]
    onehot = np.zeros_like(ed)
    onehot[np.arange(n), np.asarray(labels).astype(np.int64)] = 1.0 / n
    absref = np.abs(ed) + onehot + 1e-3 / n
    assert_close(d, ed, absref, 1e-4, what="dlogits")
    if cpu is not None:
        assert abs(loss - cpu[0]) <= 1e-4 * max(abs(cpu[0]), 1e-3 * scale), f"loss {loss!r} vs cpu {cpu[0]!r}"
        assert_matches_cpu(d, cpu[1], absref, what="dlogits")
    return loss, to_numpy(d)


@pytest.mark.parametrize("n,k", [(1, 10), (7, 10), (128, 10), (5, 1), (3, 2), (33, 17), (2, 1000)])
def test_softmax_cross_entropy(device, n, k):
    g = np.random.default_rng(50 + n + k)
    logits = f32(g.standard_normal((n, k)) * 3)
    labels = g.integers(0, k, size=n).astype(np.int64)
    _check_xent(device, logits, labels)


def test_softmax_cross_entropy_k1_is_zero(device):
    logits = f32(np.random.default_rng(51).standard_normal((4, 1)) * 100)
    loss, d = ops.softmax_cross_entropy(logits, np.zeros(4, np.int64), device=device)
    assert loss == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(to_numpy(d), 0.0, atol=1e-7)


@pytest.mark.parametrize("big", [1000.0, 5000.0, -3000.0, 1e30])
def test_softmax_cross_entropy_large_logits_stable(device, big):
    g = np.random.default_rng(52)
    logits = f32(big + g.standard_normal((6, 10)) * 5)
    logits[0, 3] = big + 100.0 if big < 1e20 else big * 2  # one dominant logit
    labels = np.array([3, 0, 1, 9, 5, 2])
    loss, d = _check_xent(device, logits, labels, loss_rtol=1e-4)
    assert np.isfinite(loss) and np.all(np.isfinite(d))


def test_softmax_cross_entropy_spread_logits(device):
    """Logits 1000s apart: exp of the differences under/overflows unless computed stably."""
    logits = f32([[1000.0, 0.0, -1000.0], [-1000.0, 0.0, 1000.0], [0.0, 2000.0, 0.0]])
    labels = np.array([0, 0, 2])
    loss, d = ops.softmax_cross_entropy(logits, labels, device=device)
    # losses: 0, 2000, 2000 -> mean 4000/3
    assert loss == pytest.approx(4000.0 / 3.0, rel=1e-5)
    np.testing.assert_allclose(to_numpy(d), [[0, 0, 0], [-1 / 3, 0, 1 / 3], [0, 1 / 3, -1 / 3]], atol=1e-6)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64])
def test_softmax_cross_entropy_label_dtypes(device, dtype):
    g = np.random.default_rng(53)
    logits = f32(g.standard_normal((9, 7)))
    labels = g.integers(0, 7, size=9)
    expect = ops.softmax_cross_entropy(logits, labels.astype(np.int64), device=device)
    got = ops.softmax_cross_entropy(logits, labels.astype(dtype), device=device)
    assert got[0] == expect[0]
    np.testing.assert_array_equal(to_numpy(got[1]), to_numpy(expect[1]))


def test_softmax_cross_entropy_nan_gives_nan_loss(device):
    logits = f32(np.random.default_rng(54).standard_normal((4, 5)))
    logits[2, 1] = np.nan
    loss, d = ops.softmax_cross_entropy(logits, np.array([0, 1, 2, 3]), device=device)
    assert np.isnan(loss)


def test_softmax_cross_entropy_finite_differences(device):
    g = np.random.default_rng(55)
    logits = f32(g.standard_normal((4, 6)) * 2)
    labels = np.array([5, 0, 2, 2])
    (num,) = ref.numerical_grads(lambda z: ref.softmax_cross_entropy(z, labels)[0], [logits])
    _, d = ops.softmax_cross_entropy(logits, labels, device=device)
    assert_close(d, num, np.abs(num) + 1e-3 / 4, 1e-4, atol=1e-7, what="dlogits vs finite differences")


# --- the argmax behind the 'correct' count (stats[1]: the accuracy of evaluate and fit) ---
#
# One rule on both devices, NumPy's: np.argmax treats NaN as the maximum, so the first NaN
# wins; otherwise the first maximum wins ties. ops.softmax_cross_entropy returns only
# (loss, dlogits), and Model.evaluate refuses non-finite inputs, so the count is read here
# from the C network's evaluate on a model with no parameters (Flatten only): its logits
# are the input rows exactly, and it runs the same backend softmax_xent as every step.


def _logits_model(device, classes):
    model = ga.models.Sequential([ga.layers.Flatten()], input_shape=(classes, 1, 1))
    model.compile(device=device)
    np.testing.assert_array_equal(model.predict(np.arange(classes, dtype=np.float32).reshape(1, classes, 1, 1)),
                                  np.arange(classes, dtype=np.float32)[None])  # logits == input
    return model._net


def _correct(net, rows, labels):
    rows = f32(rows)
    _, correct = net.evaluate(rows.reshape(rows.shape[0], rows.shape[1], 1, 1), np.asarray(labels, np.int32))
    return int(correct)


def _argmax_rows(classes, g):
    """(name, row) pairs: NaN first/middle/last, several NaNs (also in one lane, j and j + 32),
    all NaN, NaN beside +inf, +inf, -inf, all -inf, ties (in one lane and across lanes), -0 vs 0."""
    k = classes
    base = g.standard_normal(k).astype(np.float32)
    rows = [("random", base.copy())]

    def put(name, **at):
        r = base.copy()
        for pos, v in at.items():
            r[int(pos[1:]) % k] = v
        rows.append((name, r))

    mid, last = k // 2, k - 1
    put("nan-first", p0=np.nan)
    put("nan-middle", **{f"p{mid}": np.nan})
    put("nan-last", **{f"p{last}": np.nan})
    if k > 2:
        put("nans-middle-last", **{f"p{mid}": np.nan, f"p{last}": np.nan})
        put("nan-after-inf", **{f"p{mid - 1}": np.inf, f"p{mid}": np.nan})
        put("inf-after-nan", **{f"p{mid - 1}": np.nan, f"p{mid}": np.inf})
    if k > 33:
        put("nans-one-lane", **{"p1": np.nan, "p33": np.nan})          # lane 1 holds both
        put("nans-two-lanes", **{"p2": np.nan, "p33": np.nan})         # lane 1's index is larger
        put("ties-one-lane", **{"p3": 50.0, "p35": 50.0})
        put("ties-two-lanes", **{"p5": 50.0, "p36": 50.0, "p4": 49.0})
    rows.append(("all-nan", np.full(k, np.nan, np.float32)))
    put("inf-middle", **{f"p{mid}": np.inf})
    put("infs", **{f"p{last}": np.inf, f"p{mid}": np.inf})
    put("neg-inf", p0=-np.inf)
    rows.append(("all-neg-inf", np.full(k, -np.inf, np.float32)))
    neg = np.full(k, -np.inf, np.float32)
    neg[last] = -3.0e38
    rows.append(("neg-inf-then-finite", neg))
    rows.append(("all-equal", np.full(k, 1.5, np.float32)))
    put("tie-last-two", **{f"p{last - 1}": 40.0, f"p{last}": 40.0})
    z = np.zeros(k, np.float32)
    z[0] = -0.0
    rows.append(("neg-zero-ties-zero", z))
    return rows


@pytest.mark.parametrize("classes", [1, 2, 3, 10, 31, 32, 33, 64, 70])
def test_softmax_cross_entropy_argmax_is_numpys(device, classes):
    """The correct count is that of np.argmax on the rows, on every device (NaN first)."""
    net = _logits_model(device, classes)
    rows = _argmax_rows(classes, np.random.default_rng(56 + classes))
    names = [n for n, _ in rows]
    logits = np.stack([r for _, r in rows])
    expect = np.argmax(logits, axis=1)
    for name, row, e in zip(names, logits, expect):
        if _correct(net, row[None], [e]) != 1:
            got = [j for j in range(classes) if _correct(net, row[None], [j]) == 1]
            pytest.fail(f"{device}, {classes} classes, row {name} {row.tolist()}: argmax {got}, np.argmax {e}")
    # The whole batch at once (warps take several rows each), and labels that must all miss.
    assert _correct(net, logits, expect) == len(rows)
    if classes > 1:
        assert _correct(net, logits, (expect + 1) % classes) == 0


def test_softmax_cross_entropy_argmax_many_rows(device):
    """Hundreds of rows with NaN and ties in random places: the count equals np.argmax's."""
    g = np.random.default_rng(57)
    n, k = 700, 45
    logits = np.round(g.standard_normal((n, k)) * 2).astype(np.float32)  # many ties
    logits[g.random((n, k)) < 0.03] = np.nan
    logits[g.random((n, k)) < 0.02] = np.inf
    logits[g.random((n, k)) < 0.02] = -np.inf
    labels = g.integers(0, k, size=n)
    labels[: n // 2] = np.argmax(logits[: n // 2], axis=1)
    net = _logits_model(device, k)
    assert _correct(net, logits, labels) == int(np.sum(np.argmax(logits, axis=1) == labels))


def test_evaluate_accuracy_matches_argmax_of_predict(device):
    """Through the public API: Model.evaluate's accuracy is np.argmax(model.predict(x)) == y,
    for logits that tie and that overflow to +-inf (finite weights and inputs)."""
    model = ga.models.Sequential([ga.layers.Dense(5)], input_shape=(2, 1, 1))
    model.compile(device=device)
    w = np.array([[1, 0], [1, 0], [0, 1], [3e38, 0], [-3e38, 0]], np.float32)
    model.set_weights([w, np.zeros(5, np.float32)])
    x = np.array([[0, 0], [0, -1], [0, 1], [1, 0], [2, 0], [-2, 0], [2, 5], [1e-3, 1e-3]], np.float32)
    x = x.reshape(-1, 2, 1, 1)
    z = model.predict(x)
    assert np.isposinf(z[4, 3]) and np.isposinf(z[5, 4]) and z[0].tolist() == [0, 0, 0, 0, 0]
    pred = np.argmax(z, axis=1)
    for y in (pred, (pred + 1) % 5, np.arange(8) % 5, np.zeros(8, np.int64)):
        _, acc = model.evaluate(x, y)
        assert acc == pytest.approx(float(np.mean(pred == y))), f"labels {y.tolist()}, np.argmax {pred.tolist()}"


# ============================================================================
# dropout
# ============================================================================


def _check_dropout_exact(x, rate, seed, y, mask):
    y, mask = to_numpy(y), to_numpy(mask)
    assert y.dtype == np.float32 and mask.dtype == np.float32
    assert y.shape == x.shape and mask.shape == x.shape
    emask, u = ref.dropout_mask(x.shape, rate, seed)
    keep = emask > 0
    np.testing.assert_array_equal(mask > 0, keep, err_msg=f"dropout keep pattern differs (rate={rate}, seed={seed})")
    assert np.all(mask[~keep] == 0)
    scale = np.float32(1.0) / (np.float32(1.0) - np.float32(rate))
    np.testing.assert_allclose(mask[keep], scale, rtol=2.5e-7)
    np.testing.assert_allclose(y, x * mask, rtol=2.5e-7, atol=0)
    assert np.all(y[~keep] == 0)


@pytest.mark.parametrize("rate", [0.5, 0.25, 0.75, 0.125])
@pytest.mark.parametrize("seed", [0, 1, 12345, 2**32 + 5])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (7, 33)])
def test_dropout_mask_matches_hash(device, rate, seed, shape):
    g = np.random.default_rng(60)
    x = f32(g.standard_normal(shape))
    y, mask = ops.dropout(x, rate, seed=seed, device=device)
    _check_dropout_exact(x, rate, seed, y, mask)


def test_dropout_default_seed_is_zero(device):
    x = f32(np.ones((4, 50)))
    y0, m0 = ops.dropout(x, 0.5, device=device)
    y1, m1 = ops.dropout(x, 0.5, seed=0, device=device)
    np.testing.assert_array_equal(to_numpy(m0), to_numpy(m1))


def test_dropout_inexact_rate(device):
    """rate 0.3 is not a float32: the kernel compares u with float32(rate); allow a
    difference only for u within one float32 step of the rate."""
    x = f32(np.random.default_rng(61).standard_normal((50, 100)))
    y, mask = ops.dropout(x, 0.3, seed=7, device=device)
    mask = to_numpy(mask)
    emask, u = ref.dropout_mask(x.shape, 0.3, 7)
    differ = (mask > 0) != (emask > 0)
    assert not np.any(differ & (np.abs(u - 0.3) > 2.0**-23))
    np.testing.assert_allclose(mask[mask > 0], 1 / 0.7, rtol=1e-6)


def test_dropout_rate_zero_is_identity(device):
    x = f32(np.random.default_rng(62).standard_normal((3, 4, 5, 6)))
    y, mask = ops.dropout(x, 0.0, seed=3, device=device)
    np.testing.assert_array_equal(to_numpy(mask), np.ones_like(x))
    np.testing.assert_array_equal(to_numpy(y), x)


def test_dropout_large_counts_keep_fraction(device):
    x = np.ones((1000, 1000), np.float32)
    y, mask = ops.dropout(x, 0.4, seed=99, device=device)
    mask = to_numpy(mask)
    kept = float(np.mean(mask > 0))
    assert abs(kept - 0.6) < 0.005
    # the tail of a large tensor uses large counters: spot-check it against the spec
    flat = mask.reshape(-1)
    for i in (0, 999_999, 123_457, 777_777):
        assert (flat[i] > 0) == (ref.rng_uniform_int(99, i) >= np.float32(0.4))


def test_dropout_cuda_matches_cpu(cuda_device):
    x = f32(np.random.default_rng(63).standard_normal((17, 3, 9, 9)))
    yc, mc = ops.dropout(x, 0.5, seed=31, device=cuda_device)
    yh, mh = ops.dropout(x, 0.5, seed=31, device="cpu")
    np.testing.assert_array_equal(to_numpy(mc), to_numpy(mh))
    np.testing.assert_array_equal(to_numpy(yc), to_numpy(yh))


# ============================================================================
# optimizers
# ============================================================================

# Hyper-parameters reach the kernels as float32: 1 - float32(0.999) is already 1.3e-5
# away from 0.001, so Adam's v carries that relative offset. 1e-4 leaves room for it.
OPT_RTOL = 1e-4


@pytest.mark.parametrize("momentum,wd,nesterov", [(0.0, 0.0, False), (0.9, 0.0, False), (0.9, 1e-2, True),
                                                  (0.5, 5e-4, False), (0.0, 1e-2, False), (0.99, 0.0, True)])
def test_sgd_steps(device, momentum, wd, nesterov):
    g = np.random.default_rng(70)
    shape = (33, 17)
    w = f32(g.standard_normal(shape))
    vel = None
    w64, v64 = w.astype(np.float64), None
    lr = 0.05
    for step in range(5):
        grad = f32(g.standard_normal(shape))
        w, vel = ops.sgd_step(w, grad, vel, lr=lr, momentum=momentum, weight_decay=wd, nesterov=nesterov,
                              device=device)
        w = to_numpy(w)
        vel = None if vel is None else to_numpy(vel)
        w64, v64 = ref.sgd_step(w64, grad, v64, lr, momentum, wd, nesterov)
        assert_close(w, w64, np.abs(w64) + lr, OPT_RTOL, what=f"sgd w after step {step + 1}")
        if momentum != 0.0:
            assert vel is not None
            assert_close(vel, v64, np.abs(v64) + 1, OPT_RTOL, what=f"sgd velocity after step {step + 1}")


def test_sgd_vel_none_equals_zeros(device):
    g = np.random.default_rng(71)
    w = f32(g.standard_normal(40))
    grad = f32(g.standard_normal(40))
    a = ops.sgd_step(w, grad, None, lr=0.1, momentum=0.9, device=device)
    b = ops.sgd_step(w, grad, np.zeros(40, np.float32), lr=0.1, momentum=0.9, device=device)
    np.testing.assert_array_equal(to_numpy(a[0]), to_numpy(b[0]))
    np.testing.assert_array_equal(to_numpy(a[1]), to_numpy(b[1]))


@pytest.mark.parametrize("wd", [0.0, 1e-2])
@pytest.mark.parametrize("shape", [(7,), (33, 17), (4, 3, 3, 3)])
def test_adam_steps(device, wd, shape):
    g = np.random.default_rng(72)
    w = f32(g.standard_normal(shape))
    m = np.zeros(shape, np.float32)
    v = np.zeros(shape, np.float32)
    w64, m64, v64 = w.astype(np.float64), m.astype(np.float64), v.astype(np.float64)
    lr = 1e-2
    for t in range(1, 6):
        grad = f32(g.standard_normal(shape))
        w, m, v = (to_numpy(a) for a in ops.adam_step(w, grad, m, v, t, lr=lr, weight_decay=wd, device=device))
        w64, m64, v64 = ref.adam_step(w64, grad, m64, v64, t, lr=lr, weight_decay=wd)
        assert_close(w, w64, np.abs(w64) + lr, OPT_RTOL, what=f"adam w at t={t}")
        assert_close(m, m64, np.abs(m64) + 0.1, OPT_RTOL, what=f"adam m at t={t}")
        assert_close(v, v64, np.abs(v64) + 1e-6, OPT_RTOL, what=f"adam v at t={t}")


def test_adam_hyperparameters_and_large_t(device):
    g = np.random.default_rng(73)
    shape = (100,)
    w = f32(g.standard_normal(shape))
    m = f32(g.standard_normal(shape) * 0.1)
    v = f32(np.abs(g.standard_normal(shape)) * 0.01)
    grad = f32(g.standard_normal(shape))
    kw = dict(lr=3e-3, beta1=0.8, beta2=0.99, eps=1e-5, weight_decay=1e-3)
    for t in (1, 2, 1000):
        out = [to_numpy(a) for a in ops.adam_step(w, grad, m, v, t, device=device, **kw)]
        exp = ref.adam_step(w, grad, m, v, t, **kw)
        assert_close(out[0], exp[0], np.abs(exp[0]) + kw["lr"], OPT_RTOL, what=f"adam w (t={t})")
        assert_close(out[1], exp[1], np.abs(exp[1]) + 0.1, OPT_RTOL, what=f"adam m (t={t})")
        assert_close(out[2], exp[2], np.abs(exp[2]) + 1e-6, OPT_RTOL, what=f"adam v (t={t})")


def test_optimizers_cuda_match_cpu(cuda_device):
    g = np.random.default_rng(74)
    w = f32(g.standard_normal(1000))
    grad = f32(g.standard_normal(1000))
    m = f32(g.standard_normal(1000) * 0.1)
    v = f32(np.abs(g.standard_normal(1000)) * 0.01)
    a = ops.adam_step(w, grad, m, v, 3, weight_decay=1e-3, device=cuda_device)
    b = ops.adam_step(w, grad, m, v, 3, weight_decay=1e-3, device="cpu")
    for x_, y_ in zip(a, b):
        assert_matches_cpu(x_, y_, np.abs(to_numpy(y_)) + 1e-3)
    a = ops.sgd_step(w, grad, m, lr=0.1, momentum=0.9, nesterov=True, device=cuda_device)
    b = ops.sgd_step(w, grad, m, lr=0.1, momentum=0.9, nesterov=True, device="cpu")
    for x_, y_ in zip(a, b):
        assert_matches_cpu(x_, y_, np.abs(to_numpy(y_)) + 1e-1)


# ============================================================================
# Tensor
# ============================================================================


@pytest.mark.parametrize("shape", [(1,), (3, 17), (2, 3, 5, 7)])
def test_tensor_round_trip(device, shape):
    a = f32(np.random.default_rng(80).standard_normal(shape))
    t = ga.tensor(a, device=device)
    assert isinstance(t, ga.Tensor)
    assert t.shape == shape and isinstance(t.shape, tuple)
    assert t.dtype == "float32"
    assert t.device == ("cpu" if device == "cpu" else "cuda:0")
    back = t.numpy()
    assert isinstance(back, np.ndarray) and back.dtype == np.float32 and back.shape == shape
    np.testing.assert_array_equal(back, a)
    a[...] = 1.0  # the tensor holds its own copy
    np.testing.assert_array_equal(t.numpy(), back)


def test_tensor_default_device_cpu():
    t = ga.tensor(np.zeros((2, 2), np.float32))
    assert t.device == "cpu"


def test_tensor_from_noncontiguous(device):
    a = f32(np.random.default_rng(81).standard_normal((4, 6)))
    t = ga.tensor(a.T, device=device)
    assert t.shape == (6, 4)
    np.testing.assert_array_equal(t.numpy(), a.T)


def test_ops_on_tensors_return_tensors(device):
    g = np.random.default_rng(82)
    x = f32(g.standard_normal((2, 3, 6, 6)))
    w = f32(g.standard_normal((4, 3, 3, 3)))
    b = f32(g.standard_normal(4))
    tx, tw, tb = (ga.tensor(a, device=device) for a in (x, w, b))
    dev = tx.device
    y = ops.conv2d(tx, tw, tb, padding=1, activation="relu")
    assert isinstance(y, ga.Tensor) and y.device == dev
    assert_close(y.numpy(), ref.conv2d(x, w, b, 1, 1, True), ref.conv2d(np.abs(x), np.abs(w), np.abs(b), 1, 1),
                 rtol_for(27), what="conv2d on tensors")
    p = ops.max_pool2d(y, 2)
    assert isinstance(p, ga.Tensor) and p.device == dev
    np.testing.assert_array_equal(p.numpy(), ops.max_pool2d(y.numpy(), 2, device="cpu"))
    r = ops.relu(tx)
    assert isinstance(r, ga.Tensor) and r.device == dev
    np.testing.assert_array_equal(r.numpy(), np.maximum(x, 0))
    dy = ga.tensor(f32(g.standard_normal((2, 4, 6, 6))), device=device)
    grads = ops.conv2d_backward(tx, tw, dy, padding=1)
    assert len(grads) == 3
    for gr in grads:
        assert isinstance(gr, ga.Tensor) and gr.device == dev
    xd = ga.tensor(f32(g.standard_normal((5, 8))), device=device)
    wd = ga.tensor(f32(g.standard_normal((3, 8))), device=device)
    yd = ops.dense(xd, wd)
    assert isinstance(yd, ga.Tensor) and yd.device == dev and yd.shape == (5, 3)
    np.testing.assert_allclose(yd.numpy(), xd.numpy() @ wd.numpy().T, rtol=1e-5, atol=1e-5)


def test_explicit_cuda_index(cuda_device):
    x = f32(np.random.default_rng(83).standard_normal((3, 4)))
    np.testing.assert_array_equal(to_numpy(ops.relu(x, device="cuda:0")), np.maximum(x, 0))
    assert ga.tensor(x, device="cuda:0").device == "cuda:0"


# ============================================================================
# non-contiguous, read-only, unaligned inputs give the same results as contiguous ones
# ============================================================================


def _variants(a):
    """Same values, different memory: (name, array) pairs."""
    out = []
    if a.ndim >= 2:
        t = np.ascontiguousarray(np.swapaxes(a, -1, -2))
        out.append(("transposed", np.swapaxes(t, -1, -2)))
        out.append(("fortran", np.asfortranarray(a)))
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), np.float32)
    big[..., ::2] = a
    out.append(("strided", big[..., ::2]))
    out.append(("reversed", np.ascontiguousarray(a[..., ::-1])[..., ::-1]))
    ro = a.copy()
    ro.setflags(write=False)
    out.append(("readonly", ro))
    buf = np.zeros(a.size * 4 + 1, np.uint8)
    un = buf[1:].view(np.float32).reshape(a.shape)
    un[...] = a
    out.append(("unaligned", un))
    for name, v in out:
        np.testing.assert_array_equal(v, a)
    return out


def _same(out, base, what):
    if isinstance(base, tuple):
        assert isinstance(out, tuple) and len(out) == len(base)
        for o, b in zip(out, base):
            _same(o, b, what)
        return
    if isinstance(base, float):
        assert out == pytest.approx(base, rel=1e-6, abs=1e-7), what
        return
    o, b = to_numpy(out), to_numpy(base)
    assert o.shape == b.shape, what
    np.testing.assert_allclose(o, b, rtol=1e-6, atol=1e-6 * (float(np.max(np.abs(b))) if b.size else 0), err_msg=what)


def _layout_cases():
    g = np.random.default_rng(90)
    x = f32(g.standard_normal((2, 3, 7, 6)))
    w = f32(g.standard_normal((4, 3, 3, 3)))
    b = f32(g.standard_normal(4))
    dy = f32(g.standard_normal((2, 4, 7, 6)))
    dyp = f32(g.standard_normal((2, 3, 3, 2)))
    xd = f32(g.standard_normal((5, 9)))
    wd = f32(g.standard_normal((4, 9)))
    bd = f32(g.standard_normal(4))
    dyd = f32(g.standard_normal((5, 4)))
    logits = f32(g.standard_normal((6, 5)))
    labels = np.array([0, 4, 2, 1, 1, 3])
    gw = f32(g.standard_normal((6, 5)))
    mom = f32(g.standard_normal((6, 5)))
    vv = f32(np.abs(g.standard_normal((6, 5))))
    return {
        "conv2d": (lambda x, w, b, device: ops.conv2d(x, w, b, padding=1, activation="relu", device=device), [x, w, b]),
        "conv2d_backward": (lambda x, w, dy, device: ops.conv2d_backward(x, w, dy, padding=1, device=device),
                            [x, w, dy]),
        "max_pool2d": (lambda x, device: ops.max_pool2d(x, 3, 2, device=device), [x]),
        "max_pool2d_backward": (lambda x, dy, device: ops.max_pool2d_backward(x, dy, 3, 2, device=device),
                                [x, dyp]),
        "relu": (lambda x, device: ops.relu(x, device=device), [x]),
        "relu_backward": (lambda y, dy, device: ops.relu_backward(y, dy, device=device), [x, x * 2]),
        "dense": (lambda x, w, b, device: ops.dense(x, w, b, activation="relu", device=device), [xd, wd, bd]),
        "dense_backward": (lambda x, w, dy, device: ops.dense_backward(x, w, dy, device=device), [xd, wd, dyd]),
        "matmul": (lambda a, b, device: ops.matmul(a, b, trans_b=True, device=device), [xd, wd]),
        "softmax_cross_entropy": (lambda z, device: ops.softmax_cross_entropy(z, labels, device=device), [logits]),
        "dropout": (lambda x, device: ops.dropout(x, 0.5, seed=5, device=device), [x]),
        "sgd_step": (lambda w, g_, v, device: ops.sgd_step(w, g_, v, lr=0.1, momentum=0.9, weight_decay=1e-2,
                                                           device=device), [gw, mom, vv]),
        "adam_step": (lambda w, g_, m, v, device: ops.adam_step(w, g_, m, v, 2, device=device), [gw, mom, mom, vv]),
    }


@pytest.mark.parametrize("op", list(_layout_cases()))
def test_noncontiguous_and_readonly_inputs(device, op):
    fn, args = _layout_cases()[op]
    base = fn(*args, device=device)
    for i in range(len(args)):
        for name, v in _variants(args[i]):
            new = list(args)
            new[i] = v
            _same(fn(*new, device=device), base, f"{op}: argument {i} {name}")


def test_noncontiguous_labels(device):
    g = np.random.default_rng(91)
    logits = f32(g.standard_normal((6, 5)))
    labels = np.array([[0, 9], [4, 9], [2, 9], [1, 9], [1, 9], [3, 9]])[:, 0]
    assert not labels.flags.c_contiguous
    a = ops.softmax_cross_entropy(logits, labels, device=device)
    b = ops.softmax_cross_entropy(logits, np.ascontiguousarray(labels), device=device)
    assert a[0] == b[0]
    np.testing.assert_array_equal(to_numpy(a[1]), to_numpy(b[1]))
    ro = np.ascontiguousarray(labels)
    ro.setflags(write=False)
    assert ops.softmax_cross_entropy(logits, ro, device=device)[0] == b[0]


def test_broadcast_bias(device):
    g = np.random.default_rng(92)
    x = f32(g.standard_normal((2, 3, 5, 5)))
    w = f32(g.standard_normal((4, 3, 3, 3)))
    b = np.broadcast_to(np.float32(0.25), (4,))  # zero strides, read-only
    a = to_numpy(ops.conv2d(x, w, b, device=device))
    c = to_numpy(ops.conv2d(x, w, np.full(4, 0.25, np.float32), device=device))
    np.testing.assert_allclose(a, c, rtol=1e-6, atol=1e-6)


# ============================================================================
# threading: the CPU kernels give the same answer on any number of threads
# ============================================================================


def test_thread_count_does_not_change_results():
    g = np.random.default_rng(93)
    x = f32(g.standard_normal((6, 17, 13, 13)))
    w = f32(g.standard_normal((33, 17, 3, 3)) / 12)
    b = f32(g.standard_normal(33))
    dy = f32(g.standard_normal((6, 33, 13, 13)))
    dyp = f32(g.standard_normal((6, 17, 6, 6)))
    xd = f32(g.standard_normal((37, 300)))
    wd = f32(g.standard_normal((70, 300)))

    def run():
        return [
            # im2col pinned: 'auto' may measure a different algorithm per thread count
            # (the Winograd kernels' thread invariance is in test_winograd.py)
            ops.conv2d(x, w, b, padding=1, activation="relu", device="cpu", kernel="im2col"),
            *ops.conv2d_backward(x, w, dy, padding=1, device="cpu", kernel="im2col"),
            ops.max_pool2d_backward(x, dyp, 3, 2, device="cpu"),  # overlapping windows: scatter-add
            ops.dense(xd, wd, device="cpu"),
            *ops.dense_backward(xd, wd, ops.dense(xd, wd, device="cpu"), device="cpu"),
            ops.dropout(x, 0.5, seed=4, device="cpu")[1],
        ]

    old = ga.get_num_threads()
    try:
        results = {}
        for n in (1, 2, 3):
            ga.set_num_threads(n)
            assert ga.get_num_threads() == n
            results[n] = run()
            again = run()
            for a, c in zip(results[n], again):
                np.testing.assert_array_equal(a, c, err_msg=f"two runs on {n} threads differ")
        for n in (2, 3):
            for i, (a, c) in enumerate(zip(results[1], results[n])):
                scale = float(np.max(np.abs(c))) if c.size else 0.0
                np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-6 * scale,
                                           err_msg=f"result {i}: 1 thread vs {n} threads")
    finally:
        ga.set_num_threads(old)
