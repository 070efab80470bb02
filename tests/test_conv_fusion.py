"""The CPU conv fast path in chunks, and the fused conv -> max-pool pair.

The fast conv splits the batch into chunks of images, one thread per chunk, with
per-thread partial sums for the weight gradients. GPUACCEL_CONV_CHUNK forces the
chunk size (read on every call), so small test batches run several chunks, a
ragged last chunk and several partial sums.

A network runs a Conv2D followed by a MaxPool2D as one kernel where the device
has it (the conv output is never stored; GPUACCEL_FUSE=0, read when a network is
compiled, turns that off). The pair must give exactly what the two layers give,
bit for bit, and both must match float64 references."""
import numpy as np
import pytest

import gpuaccel as ga
from gpuaccel import ops
from gpuaccel.layers import Conv2D, Dense, Flatten, MaxPool2D

import reference as R
from conftest import assert_close, f32, rtol_for

# (n, c, h, w, k, r, s, stride, padding)
CHUNK_CASES = [
    (7, 3, 9, 8, 5, 3, 3, 1, 1),
    (5, 2, 11, 10, 4, 3, 2, 2, 1),
    (6, 32, 14, 14, 64, 3, 3, 1, 1),   # the reference CNN's second conv, 6 images
    (3, 1, 28, 28, 32, 3, 3, 1, 1),    # and its first
]


@pytest.mark.parametrize("chunk", [1, 2, 4])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("case", CHUNK_CASES, ids=lambda c: "-".join(map(str, c)))
def test_chunked_conv_matches_reference(monkeypatch, case, chunk, threads):
    n, c, h, w, k, r, s, stride, pad = case
    g = np.random.default_rng(n + c + k + chunk)
    x = f32(g.standard_normal((n, c, h, w)))
    wt = f32(g.standard_normal((k, c, r, s)) / np.sqrt(c * r * s))
    b = f32(g.standard_normal(k))
    monkeypatch.setenv("GPUACCEL_CONV_CHUNK", str(chunk))
    old = ga.get_num_threads()
    ga.set_num_threads(threads)
    try:
        y = ops.conv2d(x, wt, b, stride=stride, padding=pad, activation="relu", device="cpu")
        p, q = y.shape[2:]
        dy = f32(g.standard_normal((n, k, p, q)))
        dx, dw, db = ops.conv2d_backward(x, wt, dy, stride=stride, padding=pad, device="cpu")
    finally:
        ga.set_num_threads(old)
    absy = R.conv2d(np.abs(x), np.abs(wt), np.abs(b), stride, pad)
    assert_close(y, R.conv2d(x, wt, b, stride, pad, relu=True), absy, rtol_for(c * r * s), what="y")
    ex = R.conv2d_backward(x, wt, dy, stride, pad)
    ab = R.conv2d_backward(np.abs(x), np.abs(wt), np.abs(dy), stride, pad)
    assert_close(dx, ex[0], ab[0], rtol_for(k * r * s), what="dx")
    assert_close(dw, ex[1], ab[1], rtol_for(n * p * q), what="dw")
    assert_close(db, ex[2], ab[2], rtol_for(n * p * q), what="db")


# (n, c, h, w, filters, kernel, conv stride, padding, relu, pool size, pool stride)
PAIR_CASES = [
    (5, 1, 12, 12, 8, 3, 1, "same", True, 2, 2),      # the reference CNN's pair, small
    (4, 3, 11, 9, 6, 3, 1, "same", True, 2, 2),       # odd sizes: the pool drops a row and a column
    (3, 2, 10, 10, 4, 3, 1, "valid", False, 2, 2),    # no ReLU: no mask
    (3, 2, 13, 12, 5, 3, 1, 1, True, 3, 2),           # overlapping windows (generic path)
    (2, 3, 12, 12, 4, 3, 2, 1, True, 2, 1),           # strided conv, stride-1 pool
    (4, 2, 9, 9, 3, 2, 1, 0, True, 3, 3),             # 3x3 windows, ragged
    (2, 2, 6, 37, 3, 3, 1, "same", True, 2, 2),       # 18 outputs a row: more than one vector
    (2, 2, 4, 66, 3, 3, 1, "same", False, 2, 2),      # 33: two full vectors and one lane
]


def _pair_model(case, seed=0):
    """The conv + pool pair on im2col: 'auto' would time the algorithms, and on a busy
    machine it may pick Winograd (another rounding, and no conv + pool fusion) for one
    model of a comparison and not the other."""
    n, c, h, w, k, ks, st, pad, relu, psize, pstride = case
    layers = [Conv2D(k, ks, strides=st, padding=pad, activation="relu" if relu else None, kernel="im2col"),
              MaxPool2D(psize, pstride), Flatten(), Dense(5)]
    m = ga.Sequential(layers, input_shape=(c, h, w), seed=seed)
    m.compile(optimizer=ga.optimizers.SGD(0.0), device="cpu")
    return m


def _run(m, x, dout):
    out = m._net.forward(x, True)
    dx, grads = m._net.backward(dout)
    return out, dx, grads


def _reference(case, x, wts, dout):
    """float64 forward and analytic backward of conv -> (relu) -> pool -> flatten -> dense."""
    n, c, h, w, k, ks, st, pad, relu, psize, pstride = case
    cw, cb, dw, db = (np.asarray(a, np.float64) for a in wts)
    y1 = R.conv2d(x, cw, cb, st, pad)
    a = R.relu(y1) if relu else y1
    p = R.max_pool2d(a, psize, pstride)
    out = R.dense(p.reshape(n, -1), dw, db)
    dflat, ddw, ddb = R.dense_backward(p.reshape(n, -1), dw, dout)
    da = R.max_pool2d_backward(a, dflat.reshape(p.shape), psize, pstride)
    dy1 = R.relu_backward(a, da) if relu else da
    dx, dcw, dcb = R.conv2d_backward(x, cw, dy1, st, pad)
    return out, dx, [dcw, dcb, ddw, ddb]


@pytest.mark.parametrize("case", PAIR_CASES, ids=lambda c: "-".join(map(str, c)))
def test_fused_pair_is_the_two_layers(monkeypatch, case):
    g = np.random.default_rng(len(str(case)))
    n, c, h, w = case[:4]
    x = f32(g.standard_normal((n, c, h, w)))
    # a third of the inputs exactly zero and the weights rounded: ReLU zeros and tied maxima
    x[g.random(x.shape) < 0.3] = 0.0
    fused = _pair_model(case)
    wts = [f32(np.round(a * 4) / 4) for a in fused.get_weights()]
    fused.set_weights(wts)
    monkeypatch.setenv("GPUACCEL_FUSE", "0")
    plain = _pair_model(case)
    plain.set_weights(wts)
    dout = f32(g.standard_normal((n, 5)))
    for chunk in ("", "1", "3"):
        monkeypatch.setenv("GPUACCEL_CONV_CHUNK", chunk)
        a, b = _run(fused, x, dout), _run(plain, x, dout)
        for u, v, what in zip(a[:2] + tuple(a[2:]), b[:2] + tuple(b[2:]), ("out", "dx", "grads")):
            np.testing.assert_array_equal(u, v, err_msg=f"fused vs two layers: {what} (chunk {chunk!r})")


@pytest.mark.parametrize("case", PAIR_CASES, ids=lambda c: "-".join(map(str, c)))
def test_fused_pair_matches_float64(monkeypatch, case):
    g = np.random.default_rng(100 + len(str(case)))
    n, c, h, w = case[:4]
    x = f32(g.standard_normal((n, c, h, w)))  # continuous values: no ties for the reference to split
    m = _pair_model(case, seed=3)
    wts = m.get_weights()
    dout = f32(g.standard_normal((n, 5)))
    monkeypatch.setenv("GPUACCEL_CONV_CHUNK", "2")
    out, dx, grads = _run(m, x, dout)
    rout, rdx, rgrads = _reference(case, np.asarray(x, np.float64), wts, np.asarray(dout, np.float64))
    ab_out, ab_dx, ab_grads = _reference(case, np.abs(x), [np.abs(a) for a in wts], np.abs(dout))
    assert_close(out, rout, ab_out, 1e-4, what="out")
    assert_close(dx, rdx, ab_dx, 1e-4, what="dx")
    offs = np.cumsum([0] + [a.size for a in wts])
    for i, name in enumerate(("conv w", "conv b", "dense w", "dense b")):
        got = grads[offs[i]:offs[i + 1]].reshape(wts[i].shape)
        assert_close(got, rgrads[i], ab_grads[i], 1e-4, what=f"d {name}")


def test_fused_pair_with_frozen_conv(monkeypatch):
    """A frozen conv in a fused pair: no weight gradients, the same input gradient."""
    case = PAIR_CASES[0]
    g = np.random.default_rng(7)
    x = f32(g.standard_normal(case[:4]))
    dout = f32(g.standard_normal((case[0], 5)))
    m = _pair_model(case)
    _, dx_all, _ = _run(m, x, dout)
    m.layers[0].trainable = False
    m._sync_trainable()
    _, dx, grads = _run(m, x, dout)
    nconv = sum(a.size for a in m.get_weights()[:2])
    assert not grads[:nconv].any()
    assert grads[nconv:].any()
    np.testing.assert_array_equal(dx, dx_all)
