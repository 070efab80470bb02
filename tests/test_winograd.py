"""Winograd convolutions on the CPU (kernel='winograd2' / 'winograd4'), and kernel='auto'.

Winograd F(m x m, 3 x 3) computes the convolution in a transformed domain, so its
rounding error is not bounded elementwise by |x| * |w| as a direct sum's is: the
transforms mix a tile's values with coefficients up to 8 (F(4x4)) before the
products. The tests bound the error by the largest magnitude of the result's
absolute-value computation instead: |out - ref| <= tol * max(|x| * |w|), with tol
per tile size (F(2x2) is as accurate as the direct sum; F(4x4) loses about three
bits). Every case checks the forward pass, both gradients and the bias gradient
against the float64 references, on shapes that exercise the tile overhang (odd
sizes), all three paddings, one image, one channel, planes smaller than a tile,
several chunks of images and several threads."""
import numpy as np
import pytest

import gpuaccel as ga
from gpuaccel import ops
from gpuaccel.layers import Conv2D, Dense, Flatten, MaxPool2D

import reference as R
from conftest import f32

TOL = {"winograd2": 2e-5, "winograd4": 1e-4}

# (n, c, h, w, k, pad)
CASES = [
    (3, 5, 14, 14, 7, 1),     # 'same', even size: whole F(2x2) tiles, F(4x4) overhangs
    (2, 3, 9, 11, 4, 0),      # 'valid', odd sizes
    (2, 4, 7, 6, 3, 2),       # padding 2: the data gradient runs with padding 0
    (1, 1, 3, 3, 2, 0),       # one output pixel, one channel, one image
    (5, 2, 1, 1, 3, 1),       # a 1x1 plane: every tile is mostly padding
    (2, 3, 2, 5, 2, 2),       # planes smaller than a tile, padded on every side
    (4, 32, 14, 14, 64, 1),   # the reference CNN's second convolution
    (3, 1, 28, 28, 32, 1),    # and its first (one input channel)
    (2, 17, 13, 21, 19, 1),   # channel counts off the micro-kernel's tiles
]


def _check(name, got, ref, absref, tol):
    got = np.asarray(got, np.float64)
    scale = float(np.max(absref)) if absref.size else 0.0
    err = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    assert err <= tol * scale + 1e-30, f"{name}: max error {err:.3g} > {tol:g} * {scale:.3g}"


def _references(x, w, b, dy, pad):
    x64, w64, dy64 = (np.asarray(a, np.float64) for a in (x, w, dy))
    y = R.conv2d(x64, w64, np.asarray(b, np.float64), 1, pad)
    ay = R.conv2d(np.abs(x64), np.abs(w64), np.abs(b), 1, pad)
    dx, dw, db = R.conv2d_backward(x64, w64, dy64, 1, pad)
    adx, adw, adb = R.conv2d_backward(np.abs(x64), np.abs(w64), np.abs(dy64), 1, pad)
    return (y, dx, dw, db), (ay, adx, adw, adb)


def _data(case, seed=0):
    n, c, h, w, k, pad = case
    g = np.random.default_rng(seed + n + c + k)
    x = f32(g.standard_normal((n, c, h, w)))
    wt = f32(g.standard_normal((k, c, 3, 3)) / np.sqrt(9 * c))
    b = f32(g.standard_normal(k))
    p, q = h + 2 * pad - 2, w + 2 * pad - 2
    dy = f32(g.standard_normal((n, k, p, q)))
    return x, wt, b, dy


@pytest.mark.parametrize("kernel", ["winograd2", "winograd4"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_winograd_matches_float64(kernel, case):
    pad = case[-1]
    x, w, b, dy = _data(case)
    (y, dx, dw, db), (ay, adx, adw, adb) = _references(x, w, b, dy, pad)
    out = ops.conv2d(x, w, b, padding=pad, kernel=kernel)
    gx, gw, gb = ops.conv2d_backward(x, w, dy, padding=pad, kernel=kernel)
    tol = TOL[kernel]
    _check("y", out, y, ay, tol)
    _check("dx", gx, dx, adx, tol)
    _check("dw", gw, dw, adw, tol)
    _check("db", gb, db, adb, 1e-6)
    assert out.dtype == gx.dtype == gw.dtype == gb.dtype == np.float32


@pytest.mark.parametrize("kernel", ["winograd2", "winograd4"])
def test_winograd_relu_epilogue(kernel):
    """Bias and activation are applied in the shared epilogue, after the output transform."""
    case = CASES[0]
    x, w, b, _ = _data(case, seed=5)
    for act in ("relu", "tanh", "leaky_relu"):
        lin = ops.conv2d(x, w, b, padding=1, kernel=kernel)
        out = ops.conv2d(x, w, b, padding=1, activation=act, kernel=kernel)
        np.testing.assert_allclose(out, ops.activation(lin, act), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kernel", ["winograd2", "winograd4"])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("chunk", ["1", "3", ""])
def test_winograd_chunks_and_threads(monkeypatch, kernel, threads, chunk):
    """Several chunks of images (ragged last one), per-thread partial weight gradients
    summed in a fixed order: the same answer up to rounding, and bit for bit on a rerun."""
    case = (7, 6, 10, 9, 5, 1)
    x, w, b, dy = _data(case, seed=9)
    (y, dx, dw, db), (ay, adx, adw, adb) = _references(x, w, b, dy, 1)
    monkeypatch.setenv("GPUACCEL_CONV_CHUNK", chunk)
    old = ga.get_num_threads()
    try:
        ga.set_num_threads(threads)
        first = [ops.conv2d(x, w, b, padding=1, kernel=kernel), *ops.conv2d_backward(x, w, dy, padding=1, kernel=kernel)]
        again = [ops.conv2d(x, w, b, padding=1, kernel=kernel), *ops.conv2d_backward(x, w, dy, padding=1, kernel=kernel)]
    finally:
        ga.set_num_threads(old)
    for a, c in zip(first, again):
        np.testing.assert_array_equal(a, c)
    tol = TOL[kernel]
    for name, got, ref, absref in zip(("y", "dx", "dw", "db"), first, (y, dx, dw, db), (ay, adx, adw, adb)):
        _check(name, got, ref, absref, tol)


def test_winograd_needs_its_shape():
    x = f32(np.ones((1, 2, 8, 8)))
    for w, stride, pad in ((np.ones((3, 2, 5, 5)), 1, 2), (np.ones((3, 2, 3, 3)), 2, 1), (np.ones((3, 2, 3, 3)), 1, 3)):
        with pytest.raises(ValueError, match="Winograd"):
            ops.conv2d(x, f32(w), stride=stride, padding=pad, kernel="winograd")
        with pytest.raises(ValueError, match="Winograd"):
            ops.conv2d_backward(x, f32(w), f32(np.ones(ops.conv2d(x, f32(w), stride=stride, padding=pad).shape)),
                                stride=stride, padding=pad, kernel="winograd2")
    with pytest.raises(ValueError, match="3x3 kernel"):
        Conv2D(4, 5, padding="same", kernel="winograd")
    with pytest.raises(ValueError, match="3x3 kernel"):
        Conv2D(4, 3, strides=2, kernel="winograd4")
    with pytest.raises(ValueError, match="kernel must be one of"):
        Conv2D(4, 3, kernel="ref")
    with pytest.raises(ValueError, match="unknown convolution kernel"):
        ops.conv2d(x, f32(np.ones((3, 2, 3, 3))), kernel="fft")


def test_auto_picks_a_candidate_and_keeps_it():
    """'auto' measures once per shape and thread count; the same shape then always runs
    the same algorithm (so the same numbers), and it is one of the candidates."""
    x, w, b, dy = _data((4, 8, 12, 12, 16, 1), seed=2)
    first = ops.conv2d(x, w, b, padding=1)
    for _ in range(3):
        np.testing.assert_array_equal(ops.conv2d(x, w, b, padding=1), first)
    matches = [k for k in ("im2col", "winograd2", "winograd4")
               if np.array_equal(ops.conv2d(x, w, b, padding=1, kernel=k), first)]
    assert matches, "'auto' gave a result no candidate gives"
    # a shape Winograd cannot take is im2col's
    w5 = f32(np.random.default_rng(0).standard_normal((3, 8, 5, 5)))
    np.testing.assert_array_equal(ops.conv2d(x, w5, padding=2), ops.conv2d(x, w5, padding=2, kernel="im2col"))


def test_forced_kernel_environment(monkeypatch):
    x, w, b, _ = _data((2, 4, 9, 9, 6, 1), seed=3)
    for name in ("im2col", "winograd2", "winograd4"):
        monkeypatch.setenv("GPUACCEL_CONV_KERNEL", name)
        np.testing.assert_array_equal(ops.conv2d(x, w, b, padding=1), ops.conv2d(x, w, b, padding=1, kernel=name))
    monkeypatch.setenv("GPUACCEL_CONV_KERNEL", "fastest")
    with pytest.raises(ValueError, match="GPUACCEL_CONV_KERNEL=fastest"):
        ops.conv2d(x, w, b, padding=1)


def _pair_net(kernel, seed=0, c=3, k=8, hw=12, pool=True):
    layers = [Conv2D(k, 3, padding="same", activation="relu", kernel=kernel)]
    layers += [MaxPool2D(2)] if pool else []
    layers += [Conv2D(k, 3, padding=1, activation="relu", kernel=kernel), Flatten(), Dense(5)]
    m = ga.Sequential(layers, input_shape=(c, hw, hw), seed=seed)
    m.compile(optimizer=ga.optimizers.SGD(0.0), device="cpu")
    return m


@pytest.mark.parametrize("kernel", ["winograd2", "winograd4"])
@pytest.mark.parametrize("pool", [True, False], ids=["fused-pool", "plain"])
def test_winograd_in_a_network(kernel, pool):
    """Conv2D(kernel='winograd...') inside a network, with the conv + max-pool fusion
    and without: output, input gradient and every weight gradient agree with the same
    network on im2col (itself checked against float64 in test_conv_fusion.py)."""
    g = np.random.default_rng(7)
    x = f32(g.standard_normal((5, 3, 12, 12)))
    wino, ref = _pair_net(kernel, pool=pool), _pair_net("im2col", pool=pool)
    ref.set_weights(wino.get_weights())
    dout = f32(g.standard_normal((5, 5)))
    outs = []
    for m in (wino, ref):
        out = m._net.forward(x, True)
        dx, grads = m._net.backward(dout)
        outs.append((out, dx, grads))
    for name, a, c in zip(("out", "dx", "grads"), *outs):
        scale = float(np.max(np.abs(c)))
        assert float(np.max(np.abs(a - c))) <= 1e-4 * scale, name
    assert [k for k in wino._net.conv_kernels() if k] == [kernel, kernel]


def test_summary_names_the_chosen_kernel(capsys):
    m = _pair_net("auto")
    m.summary()
    assert "auto (not run yet)" in capsys.readouterr().out
    m.predict(f32(np.zeros((2, 3, 12, 12))))
    m.summary()
    text = capsys.readouterr().out
    assert any(f"[{k} (auto)]" in text for k in ("im2col", "winograd2", "winograd4")), text
    fixed = _pair_net("winograd2")
    fixed.predict(f32(np.zeros((2, 3, 12, 12))))
    fixed.summary()
    assert "[winograd2]" in capsys.readouterr().out


def test_kernel_is_saved_with_the_model(tmp_path):
    m = _pair_net("winograd4")
    path = tmp_path / "m.gpuaccel"
    m.save(path)
    back = ga.models.load(path)
    assert [layer.get_config().get("kernel") for layer in back.layers if isinstance(layer, Conv2D)] == \
        ["winograd4", "winograd4"]


def test_resnet_blocks_take_the_winograd_route(monkeypatch):
    """The stride-1 3x3 convolutions of a residual network run Winograd when forced
    (the strided ones and the 1x1 projections keep im2col), with the results of
    im2col up to rounding."""
    from gpuaccel import applications

    g = np.random.default_rng(1)
    x = f32(g.standard_normal((3, 1, 16, 16)))
    dout = f32(g.standard_normal((3, 10)))
    runs = {}
    for name in ("im2col", "winograd4"):
        monkeypatch.setenv("GPUACCEL_CONV_KERNEL", name)
        m = applications.resnet8(width=4, input_shape=(1, 16, 16), seed=0)
        m.compile(optimizer=ga.optimizers.SGD(0.0), device="cpu")
        out = m._net.forward(x, True)
        dx, grads = m._net.backward(dout)
        runs[name] = (out, dx, grads, [k for k in m._net.conv_kernels() if k])
    kernels = runs["winograd4"][3]
    assert kernels.count("winograd4 (auto)") >= 5 and "im2col (auto)" in kernels, kernels
    assert set(runs["im2col"][3]) == {"im2col (auto)"}
    for name, a, c in zip(("out", "dx", "grads"), runs["winograd4"][:3], runs["im2col"][:3]):
        assert float(np.max(np.abs(a - c))) <= 1e-3 * float(np.max(np.abs(c))), name


def test_winograd_is_cpu_only_on_cuda(cuda_device):
    """Winograd is CPU only: asking for it on a GPU is a clear error, per op and per layer,
    and kernel='auto' there is the implicit GEMM (on the emulator in CI)."""
    x, w, b, dy = _data((2, 3, 8, 8, 4, 1), seed=4)
    with pytest.raises(ValueError, match="CPU only"):
        ops.conv2d(x, w, b, padding=1, device=cuda_device, kernel="winograd")
    with pytest.raises(ValueError, match="CPU only"):
        ops.conv2d_backward(x, w, dy, padding=1, device=cuda_device, kernel="winograd2")
    got = ops.conv2d(x, w, b, padding=1, device=cuda_device)  # auto: implicit GEMM on the GPU
    ref = ops.conv2d(x, w, b, padding=1, kernel="im2col")
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    m = ga.Sequential([Conv2D(4, 3, padding="same", kernel="winograd4"), Flatten(), Dense(3)], input_shape=(3, 8, 8))
    m.compile(optimizer="sgd", device=cuda_device)
    with pytest.raises(ValueError, match="CPU only"):
        m.predict(x)
    auto = ga.Sequential([Conv2D(4, 3, padding="same"), Flatten(), Dense(3)], input_shape=(3, 8, 8))
    auto.compile(optimizer="sgd", device=cuda_device)
    auto.predict(x)
    assert [k for k in auto._net.conv_kernels() if k] == ["implicit (auto)"]
