"""BatchNormalization, GlobalAveragePooling2D and Residual blocks (identity and
projection skips), forward against float64 NumPy references, backward against
central finite differences of those references in float64, on every device.

The layers run inside a network (the engine has no separate op binding for them):
Net.forward(x, training) returns the last layer's output and Net.backward(dout)
returns the input gradient and the parameter gradients of that forward."""
import numpy as np
import pytest

import gpuaccel as ga
from gpuaccel import _C
from gpuaccel.layers import (BatchNormalization, Conv2D, Dense, Flatten, GlobalAveragePooling2D, ReLU,
                             Residual)

import reference as R
from conftest import assert_close, assert_matches_cpu, f32, rtol_for, run_on


def build(layers, input_shape, device, seed=0):
    m = ga.Sequential(layers, input_shape=input_shape, seed=seed)
    m.compile(optimizer=ga.optimizers.SGD(0.0), device=device)
    return m


def as64(a):
    return np.asarray(f32(a), np.float64)


# ---- float64 references --------------------------------------------------------

def bn_ref(x, gamma, beta, mean=None, var=None, eps=1e-3):
    """Training mode when mean/var are None (batch statistics, biased variance)."""
    if mean is None:
        mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    b = (None, slice(None), None, None)
    return gamma[b] * (x - mean[b]) / np.sqrt(var[b] + eps) + beta[b], mean, var


def gap_ref(x):
    return x.mean(axis=(2, 3))


def fd_check(f, arrays, analytic, names, rtol=2e-4, atol=1e-5):
    """Analytic gradients (fp32, from the engine) against central differences of the
    float64 reference f."""
    numeric = R.numerical_grads(f, arrays)
    for a, num, name in zip(analytic, numeric, names):
        scale = np.abs(num) + np.abs(num).max()
        assert_close(a, num, absref=scale, rtol=rtol, atol=atol, what=f"d{name}")


# ---- batch normalisation ------------------------------------------------------------

BN_SHAPES = [(4, 3, 5, 5), (1, 2, 3, 3), (7, 5, 1, 1), (3, 17, 2, 3)]


def bn_model(shape, device, rng, momentum=0.9):
    n, c, h, w = shape
    m = build([BatchNormalization(momentum=momentum, epsilon=1e-3), Flatten()], (c, h, w), device)
    gamma, beta = rng.normal(size=c), rng.normal(size=c)
    mm, mv = rng.normal(size=c), rng.uniform(0.5, 2.0, c)
    m.set_weights([f32(gamma), f32(beta), f32(mm), f32(mv)])
    x = rng.normal(size=shape) * 2.0 + 3.0
    return m, as64(gamma), as64(beta), as64(mm), as64(mv), as64(x)


@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batchnorm_forward_training(device, rng, shape):
    n = shape[0]
    m, gamma, beta, mm, mv, x = bn_model(shape, device, rng)
    out = m._net.forward(f32(x), True)
    ref, mean, var = bn_ref(x, gamma, beta)
    b = (None, slice(None), None, None)
    absref = np.abs(gamma[b]) * (np.abs(x) + np.abs(mean[b])) / np.sqrt(var[b] + 1e-3) + np.abs(beta[b])
    assert_close(out, ref.reshape(n, -1), absref=absref.reshape(n, -1), rtol=1e-4, what="bn train y")
    # moving statistics: momentum * old + (1 - momentum) * batch (biased variance, as Keras)
    _, _, new_mm, new_mv = m.get_weights()
    assert_close(new_mm, 0.9 * mm + 0.1 * mean, absref=np.abs(mm) + np.abs(mean), rtol=1e-5, what="moving_mean")
    assert_close(new_mv, 0.9 * mv + 0.1 * var, rtol=1e-5, what="moving_variance")
    if device != "cpu":
        mc, *_ = bn_model(shape, "cpu", np.random.default_rng(0))
        mc.set_weights([f32(gamma), f32(beta), f32(mm), f32(mv)])
        assert_matches_cpu(out, mc._net.forward(f32(x), True), absref=absref.reshape(n, -1), what="bn train y")


@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batchnorm_forward_inference(device, rng, shape):
    n = shape[0]
    m, gamma, beta, mm, mv, x = bn_model(shape, device, rng)
    out = m._net.forward(f32(x), False)
    ref, _, _ = bn_ref(x, gamma, beta, mm, mv)
    assert_close(out, ref.reshape(n, -1), absref=np.abs(ref.reshape(n, -1)) + 1.0, rtol=1e-5, what="bn infer y")
    # predict is inference too, and inference leaves the moving statistics alone
    assert_close(m.predict(f32(x)), ref.reshape(n, -1), absref=np.abs(ref.reshape(n, -1)) + 1.0, rtol=1e-5)
    _, _, mm2, mv2 = m.get_weights()
    np.testing.assert_array_equal(mm2, f32(mm))
    np.testing.assert_array_equal(mv2, f32(mv))


@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batchnorm_backward_training(device, rng, shape):
    n, c = shape[:2]
    m, gamma, beta, _, _, x = bn_model(shape, device, rng)
    dout = rng.normal(size=(n, int(np.prod(shape[1:]))))
    m._net.forward(f32(x), True)
    dx, grads = m._net.backward(f32(dout))

    def f(x_, g_, b_):
        return float((bn_ref(x_, g_, b_)[0].reshape(n, -1) * dout).sum())

    fd_check(f, [x, gamma, beta], [dx, grads[:c], grads[c:]], ["x", "gamma", "beta"], rtol=rtol_for(x.size))


def test_batchnorm_frozen_runs_inference(device, rng):
    """trainable=False: inference statistics in training steps, no weight gradients,
    dx = gamma / sqrt(moving_var + eps) * dout, moving statistics untouched."""
    shape = (5, 3, 4, 4)
    n = shape[0]
    m, gamma, beta, mm, mv, x = bn_model(shape, device, rng)
    m.layers[0].trainable = False
    m._sync_trainable()
    out = m._net.forward(f32(x), True)
    ref, _, _ = bn_ref(x, gamma, beta, mm, mv)
    assert_close(out, ref.reshape(n, -1), absref=np.abs(ref.reshape(n, -1)) + 1.0, rtol=1e-5)
    dout = rng.normal(size=out.shape)
    dx, grads = m._net.backward(f32(dout))
    k = (gamma / np.sqrt(mv + 1e-3))[None, :, None, None]
    assert_close(dx, k * dout.reshape(shape), rtol=1e-5, what="frozen bn dx")
    assert not grads.any()
    _, _, mm2, mv2 = m.get_weights()
    np.testing.assert_array_equal(mm2, f32(mm))
    np.testing.assert_array_equal(mv2, f32(mv))


def test_batchnorm_defaults_and_bad_args():
    bn = BatchNormalization()
    assert (bn.momentum, bn.epsilon) == (0.99, 1e-3)  # Keras defaults
    with pytest.raises(ValueError):
        BatchNormalization(momentum=1.5)
    with pytest.raises(ValueError):
        BatchNormalization(epsilon=0.0)
    with pytest.raises(ValueError):
        _C.Net([{"kind": "batchnorm", "eps": -1.0}, {"kind": "flatten"}], (2, 3, 3))
    m = build([BatchNormalization(), Flatten()], (3, 2, 2), "cpu")
    w = m.get_weights()
    assert [a.shape for a in w] == [(3,)] * 4
    np.testing.assert_array_equal(w[0], 1)  # gamma
    np.testing.assert_array_equal(w[1], 0)  # beta
    np.testing.assert_array_equal(w[2], 0)  # moving mean
    np.testing.assert_array_equal(w[3], 1)  # moving variance


# ---- global average pooling --------------------------------------------------------

@pytest.mark.parametrize("shape", [(3, 4, 5, 5), (1, 1, 1, 1), (2, 7, 3, 2)])
def test_global_avgpool(device, rng, shape):
    n, c, h, w = shape
    m = build([GlobalAveragePooling2D()], (c, h, w), device)
    x = as64(rng.normal(size=shape))
    out = m._net.forward(f32(x), True)
    assert out.shape == (n, c)
    assert_close(out, gap_ref(x), absref=np.abs(x).mean(axis=(2, 3)), rtol=rtol_for(h * w), what="gap y")
    dout = rng.normal(size=(n, c))
    dx, _ = m._net.backward(f32(dout))
    fd_check(lambda x_: float((gap_ref(x_) * dout).sum()), [x], [dx], ["x"])


# ---- residual blocks --------------------------------------------------------------

def test_residual_identity(device, rng):
    """y = relu(conv(relu(conv(x))) + x), then Flatten."""
    n, c, h, w = 2, 3, 5, 4
    m = build([Residual([Conv2D(c, 3, padding="same", activation="relu"), Conv2D(c, 3, padding="same")]),
               Flatten()], (c, h, w), device)
    w1, b1, w2, b2 = [as64(rng.normal(size=a.shape) * 0.3) for a in m.get_weights()]
    m.set_weights([f32(a) for a in (w1, b1, w2, b2)])
    x = as64(rng.normal(size=(n, c, h, w)))

    def fwd(x_, w1_, b1_, w2_, b2_):
        t = R.conv2d(x_, w1_, b1_, padding=1, relu=True)
        return np.maximum(R.conv2d(t, w2_, b2_, padding=1) + x_, 0.0)

    out = m._net.forward(f32(x), True)
    ref = fwd(x, w1, b1, w2, b2)
    assert_close(out, ref.reshape(n, -1), absref=np.abs(ref).reshape(n, -1) + 1.0, rtol=1e-4, what="residual y")
    dout = rng.normal(size=out.shape)
    dx, g = m._net.backward(f32(dout))
    sizes = np.cumsum([0] + [a.size for a in (w1, b1, w2, b2)])
    parts = [g[sizes[i]:sizes[i + 1]].reshape(a.shape) for i, a in enumerate((w1, b1, w2, b2))]
    fd_check(lambda *a: float((fwd(*a).reshape(n, -1) * dout).sum()), [x, w1, b1, w2, b2], [dx] + parts,
             ["x", "w1", "b1", "w2", "b2"], rtol=1e-3)


def test_residual_projection_stride2_with_batchnorm(device, rng):
    """Branch: conv 3x3 stride 2 -> BN (training) -> ReLU -> conv 3x3; skip: 1x1 stride-2
    projection with bias; no activation after the sum; then global average pooling."""
    n, c, h, w, k = 3, 2, 5, 6, 4
    m = build([Residual([Conv2D(k, 3, strides=2, padding=1, use_bias=False), BatchNormalization(), ReLU(),
                         Conv2D(k, 3, padding="same")], activation=None),
               GlobalAveragePooling2D()], (c, h, w), device)
    shapes = [a.shape for a in m.get_weights()]
    assert shapes == [(k, c, 3, 3), (k,), (k,), (k,), (k,), (k, k, 3, 3), (k,), (k, c, 1, 1), (k,)]
    vals = [as64(rng.normal(size=s) * 0.4) for s in shapes]
    vals[3], vals[4] = np.zeros(k), np.ones(k)  # moving statistics (unused in training mode)
    m.set_weights([f32(v) for v in vals])
    w1, gamma, beta, _, _, w2, b2, wp, bp = vals
    x = as64(rng.normal(size=(n, c, h, w)))

    def fwd(x_, w1_, gamma_, beta_, w2_, b2_, wp_, bp_):
        t = R.conv2d(x_, w1_, None, stride=2, padding=1)
        t = np.maximum(bn_ref(t, gamma_, beta_)[0], 0.0)
        t = R.conv2d(t, w2_, b2_, padding=1)
        return gap_ref(t + R.conv2d(x_, wp_, bp_, stride=2))

    out = m._net.forward(f32(x), True)
    ref = fwd(x, w1, gamma, beta, w2, b2, wp, bp)
    assert_close(out, ref, absref=np.abs(ref) + 1.0, rtol=1e-4, what="projection block y")
    dout = rng.normal(size=out.shape)
    dx, g = m._net.backward(f32(dout))
    # flat block: w1, gamma, beta, w2, b2, wp, bp (moving statistics live in the state block)
    params = [w1, gamma, beta, w2, b2, wp, bp]
    sizes = np.cumsum([0] + [a.size for a in params])
    parts = [g[sizes[i]:sizes[i + 1]].reshape(a.shape) for i, a in enumerate(params)]
    fd_check(lambda *a: float((fwd(*a) * dout).sum()), [x] + params, [dx] + parts,
             ["x", "w1", "gamma", "beta", "w2", "b2", "wp", "bp"], rtol=1e-3)


def test_residual_nested_and_dense(device, rng):
    """Blocks nest, and work on vectors: relu(dense(x) + (dense(dense(x)) + dense(x)))."""
    n, f = 4, 6
    m = build([Flatten(), Residual([Dense(f), Residual([Dense(f, activation="relu"), Dense(f)])]), Dense(3)],
              (f, 1, 1), device)
    vals = [as64(rng.normal(size=a.shape) * 0.5) for a in m.get_weights()]
    m.set_weights([f32(v) for v in vals])
    x = as64(rng.normal(size=(n, f, 1, 1)))

    def fwd(x_, w1, b1, w2, b2, w3, b3, w4, b4):
        v = x_.reshape(n, f)
        a = v @ w1.T + b1
        inner = np.maximum(np.maximum(a @ w2.T + b2, 0) @ w3.T + b3 + a, 0)
        return np.maximum(inner + v, 0) @ w4.T + b4

    out = m._net.forward(f32(x), True)
    ref = fwd(x, *vals)
    assert_close(out, ref, absref=np.abs(ref) + 1.0, rtol=1e-4)
    dout = rng.normal(size=out.shape)
    dx, g = m._net.backward(f32(dout))
    sizes = np.cumsum([0] + [a.size for a in vals])
    parts = [g[sizes[i]:sizes[i + 1]].reshape(a.shape) for i, a in enumerate(vals)]
    fd_check(lambda *a: float((fwd(*a) * dout).sum()), [x] + vals, [dx] + parts,
             ["x"] + [f"p{i}" for i in range(len(vals))], rtol=1e-3)


def test_residual_shape_errors():
    with pytest.raises(ValueError, match="projection"):
        build([Residual([Conv2D(4, 3, padding="same")], projection=False), Flatten()], (2, 5, 5), "cpu")
    with pytest.raises(ValueError):
        _C.Net([{"kind": "res_begin"}, {"kind": "flatten"}], (2, 3, 3))
    with pytest.raises(ValueError):
        _C.Net([{"kind": "flatten"}, {"kind": "res_end"}], (2, 3, 3))
    with pytest.raises(TypeError):
        Residual([object()])
    # an explicit projection on a shape-keeping branch is allowed (a 1x1 conv of stride 1)
    m = build([Residual([Conv2D(2, 3, padding="same")], projection=True), Flatten()], (2, 4, 4), "cpu")
    assert [a.shape for a in m.get_weights()][-2:] == [(2, 2, 1, 1), (2,)]


# ---- freezing in the engine ----------------------------------------------------------

def test_frozen_layers_skip_weight_gradients(device, rng):
    """Frozen layers get no weight gradient but still pass the input gradient on; the
    optimizer's runs cover only trainable parameters, merged when contiguous."""
    n, c = 3, 2
    layers = [Conv2D(3, 3, padding="same", activation="relu"), BatchNormalization(),
              Conv2D(3, 3, padding="same"), Flatten(), Dense(4), Dense(2)]
    m = build(layers, (c, 4, 4), device)
    info = m._net.layer_info()
    assert m._net.trainable_ranges() == [(0, m._net.nparams)]
    layers[0].trainable = False
    layers[4].trainable = False
    m._sync_trainable()
    assert m._net.get_trainable() == [False, True, True, True, False, True]
    ranges = m._net.trainable_ranges()
    assert ranges == [(info[1][1], info[3][1] - info[1][1]), (info[5][1], info[5][2] + info[5][4])]
    assert m._net.ntrainable == sum(cnt for _, cnt in ranges)

    x = f32(rng.normal(size=(n, c, 4, 4)))
    m._net.forward(x, True)
    dout = f32(rng.normal(size=(n, 2)))
    dx, g = m._net.backward(dout)
    assert not g[:info[1][1]].any()                       # frozen conv
    assert not g[info[4][1]:info[5][1]].any()             # frozen dense
    assert g[info[2][1]:info[3][1]].any() and g[info[5][1]:].any()
    # the input gradient is the same as with everything trainable (BN stays in training mode)
    layers[0].trainable = layers[4].trainable = True
    m._sync_trainable()
    m._net.forward(x, True)
    dx_all, g_all = m._net.backward(dout)
    assert_close(dx, dx_all.astype(np.float64), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(g[info[1][1]:info[3][1]], g_all[info[1][1]:info[3][1]], rtol=1e-6, atol=1e-7)


# ---- the op bindings (ga.ops.batch_norm, global_avg_pool2d, add) --------------------

@pytest.mark.parametrize("shape", BN_SHAPES + [(6, 4)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_op(device, rng, shape, training):
    c = shape[1]
    x = f32(rng.normal(size=shape) * 2.0 + 3.0)
    gamma, beta, rm = (f32(rng.normal(size=c)) for _ in range(3))
    rv = f32(rng.uniform(0.5, 2.0, c))
    keep = [a.copy() for a in (x, gamma, beta, rm, rv)]
    y, mean, invstd, new_rm, new_rv = ga.ops.batch_norm(x, gamma, beta, rm, rv, training=training, momentum=0.9,
                                                        device=device)
    for a, b in zip(keep, (x, gamma, beta, rm, rv)):
        np.testing.assert_array_equal(a, b)  # inputs unchanged
    x4 = as64(x).reshape(shape[0], c, -1, 1)
    ref, bmean, bvar = bn_ref(x4, as64(gamma), as64(beta), None if training else as64(rm),
                              None if training else as64(rv))
    assert_close(y, ref.reshape(shape), np.abs(ref.reshape(shape)) + 1.0, rtol=1e-4, what="y")
    assert_close(mean, bmean, np.abs(bmean) + 1.0, rtol=1e-5, what="mean")
    assert_close(invstd, 1.0 / np.sqrt(bvar + 1e-3), rtol=1e-4, what="invstd")
    if training:
        assert_close(new_rm, 0.9 * as64(rm) + 0.1 * bmean, np.abs(rm) + np.abs(bmean), rtol=1e-5, what="run mean")
        assert_close(new_rv, 0.9 * as64(rv) + 0.1 * bvar, rtol=1e-5, what="run var")
    else:
        np.testing.assert_array_equal(new_rm, rm)
        np.testing.assert_array_equal(new_rv, rv)


@pytest.mark.parametrize("shape", [(3, 2, 3, 2), (5, 3)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_op_backward_finite_differences(device, rng, shape, training):
    c = shape[1]
    x, dy = as64(rng.normal(size=shape)), as64(rng.normal(size=shape))
    gamma, beta, rm = (as64(rng.normal(size=c)) for _ in range(3))
    rv = as64(rng.uniform(0.5, 2.0, c))
    _, mean, invstd, _, _ = ga.ops.batch_norm(f32(x), f32(gamma), f32(beta), f32(rm), f32(rv), training=training,
                                              device=device)
    dx, dgamma, dbeta = ga.ops.batch_norm_backward(f32(x), f32(dy), f32(gamma), mean, invstd, training=training,
                                                   device=device)

    def loss(x_, g_, b_):
        x4 = x_.reshape(shape[0], c, -1, 1)
        y = bn_ref(x4, g_, b_, None if training else rm, None if training else rv)[0]
        return float((dy.reshape(y.shape) * y).sum())

    fd_check(loss, [x, gamma, beta], [dx, dgamma, dbeta], ["x", "gamma", "beta"])


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 1, 1, 1), (3, 17, 7, 1)])
def test_global_avg_pool_op(device, rng, shape):
    x = f32(rng.normal(size=shape))
    y, cpu = run_on(device, ga.ops.global_avg_pool2d, x)
    assert_close(y, gap_ref(as64(x)), np.abs(x).mean(axis=(2, 3)), rtol=rtol_for(shape[2] * shape[3]), what="gap")
    dy = f32(rng.normal(size=shape[:2]))
    dx = ga.ops.global_avg_pool2d_backward(x, dy, device=device)
    fd_check(lambda x_: float((as64(dy) * gap_ref(x_)).sum()), [as64(x)], [dx], ["x"])
    if cpu is not None:
        assert_matches_cpu(y, cpu, np.abs(x).mean(axis=(2, 3)), what="gap")


def test_add_op(device, rng):
    a, b = f32(rng.normal(size=(3, 1001))), f32(rng.normal(size=(3, 1001)))
    np.testing.assert_array_equal(ga.ops.add(a, b, device=device), a + b)  # one rounding: exact in fp32


def test_norm_op_bad_input():
    x = f32(np.ones((2, 3, 4, 4)))
    c3 = f32(np.ones(3))
    with pytest.raises(ValueError, match="gamma must have shape"):
        ga.ops.batch_norm(x, f32(np.ones(4)), c3, c3, c3)
    with pytest.raises(ValueError, match="got 3 dimensions"):
        ga.ops.batch_norm(x[0], c3, c3, c3, c3)
    with pytest.raises(ValueError, match="momentum in"):
        ga.ops.batch_norm(x, c3, c3, c3, c3, momentum=1.5)
    with pytest.raises(ValueError, match="empty input"):
        ga.ops.batch_norm(x[:0], c3, c3, c3, c3)
    with pytest.raises(TypeError, match="float32"):
        ga.ops.batch_norm(x.astype(np.float64), c3, c3, c3, c3)
    with pytest.raises(ValueError, match="same shape"):
        ga.ops.batch_norm_backward(x, x[:1], c3, c3, c3)
    with pytest.raises(ValueError, match="must have 4 dimensions"):
        ga.ops.global_avg_pool2d(x[0])
    with pytest.raises(ValueError, match="dy must have shape"):
        ga.ops.global_avg_pool2d_backward(x, f32(np.ones((2, 4))))
    with pytest.raises(ValueError, match="same shape"):
        ga.ops.add(x, x[:1])
