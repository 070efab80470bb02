"""Activations as data (core/act.h): every kind on its own (ops.activation and its
backward), fused into the conv and dense epilogues, inside a network (fused with the
max pool where the kind allows, kept as z for gelu and silu), on every device.

References: float64 NumPy formulas written here from the definitions, their
derivatives checked by central differences, and the kernels checked against both."""
import numpy as np
import pytest

import gpuaccel as ga
import reference as R
from conftest import assert_close, assert_matches_cpu, f32, rtol_for, run_on, to_numpy
from gpuaccel import ops
from gpuaccel.layers import ELU, Activation, Conv2D, Dense, Flatten, LeakyReLU, MaxPool2D, ReLU

KINDS = list(ops.ACTIVATIONS)
NEEDS_Z = {"gelu", "silu"}  # derivative not a function of the output
GELU_C = np.sqrt(2.0 / np.pi)


def act64(z, name, alpha=None):
    alpha = ga._C.ACTIVATION_ALPHAS[KINDS.index(name)] if alpha is None else alpha
    z = np.asarray(z, np.float64)
    if name == "linear":
        return z.copy()
    if name == "relu":
        return np.where(z > 0, z, 0.0)
    if name == "leaky_relu":
        return np.where(z > 0, z, alpha * z)
    if name == "elu":
        return np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0.0)))
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    if name == "gelu":
        return 0.5 * z * (1.0 + np.tanh(GELU_C * (z + 0.044715 * z ** 3)))
    if name == "silu":
        return z / (1.0 + np.exp(-z))
    raise AssertionError(name)


def grad64(z, name, alpha=None):
    """d act / dz in float64, written from the definitions (not from the C code)."""
    alpha = ga._C.ACTIVATION_ALPHAS[KINDS.index(name)] if alpha is None else alpha
    z = np.asarray(z, np.float64)
    if name == "linear":
        return np.ones_like(z)
    if name == "relu":
        return (z > 0).astype(np.float64)
    if name == "leaky_relu":
        return np.where(z > 0, 1.0, alpha)
    if name == "elu":
        return np.where(z > 0, 1.0, alpha * np.exp(np.minimum(z, 0.0)))
    if name == "tanh":
        return 1.0 - np.tanh(z) ** 2
    if name == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-z))
        return s * (1.0 - s)
    if name == "gelu":
        u = GELU_C * (z + 0.044715 * z ** 3)
        return 0.5 * (1.0 + np.tanh(u)) + 0.5 * z * (1.0 - np.tanh(u) ** 2) * GELU_C * (1.0 + 3 * 0.044715 * z ** 2)
    if name == "silu":
        s = 1.0 / (1.0 + np.exp(-z))
        return s * (1.0 + z * (1.0 - s))
    raise AssertionError(name)


def away_from_kinks(shape, seed, lo=0.05):
    """Values in [-4, 4] at least `lo` from 0 (the kink of relu, leaky_relu, elu)."""
    g = np.random.default_rng(seed)
    v = g.uniform(lo, 4.0, shape) * g.choice([-1.0, 1.0], shape)
    return f32(v)


def backward_input(name, z, y):
    """What activation_backward reads: the output, or the input for gelu and silu."""
    return z if ops.activation_needs_input(name) else y


# ---------------------------------------------------------------- the references


@pytest.mark.parametrize("name", KINDS)
def test_reference_derivatives_match_finite_differences(name):
    z = away_from_kinks(200, 1).astype(np.float64)
    h = 1e-6
    num = (act64(z + h, name) - act64(z - h, name)) / (2 * h)
    np.testing.assert_allclose(grad64(z, name), num, rtol=1e-6, atol=1e-8)


def test_names_come_from_c():
    assert KINDS == ["linear", "relu", "leaky_relu", "elu", "tanh", "sigmoid", "gelu", "silu"]
    assert len(ga._C.ACTIVATION_ALPHAS) == len(KINDS)
    assert ops.activation_name("swish") == "silu" and ops.activation_name(None) == "linear"


# ---------------------------------------------------------------- the op on its own


@pytest.mark.parametrize("name", KINDS)
def test_activation_forward(device, name):
    z = f32(np.concatenate([np.linspace(-12, 12, 1001), [0.0, -0.0, 1e-30, -1e-30, 40.0, -40.0]]))
    out, cpu = run_on(device, ops.activation, z, name)
    expect = act64(z, name)
    # fp32 transcendental functions: a few ulps of the result (or of z where y ~ z)
    assert_close(out, expect, np.maximum(np.abs(expect), 1e-3 * np.abs(z)), 2e-6, atol=1e-7, what=name)
    if cpu is not None:
        assert_matches_cpu(out, cpu, np.abs(expect) + 1e-6, rtol=1e-5, what=name)


@pytest.mark.parametrize("name", KINDS)
def test_activation_backward(device, name):
    g = np.random.default_rng(KINDS.index(name))
    z = away_from_kinks((3, 257), 2)  # 771: not a multiple of any vector width or span
    dy = f32(g.standard_normal(z.shape))
    y = ops.activation(z, name, device=device)
    t = backward_input(name, z, to_numpy(y))
    dx, cpu = run_on(device, ops.activation_backward, t, dy, name)
    expect = dy.astype(np.float64) * grad64(z, name)
    # gelu's and silu's derivatives are sums of O(1) terms that cancel near their minima
    floor = 0.05 if name in NEEDS_Z else 1e-3
    assert_close(dx, expect, np.abs(dy) * (np.abs(grad64(z, name)) + floor), 2e-5, atol=1e-7,
                 what=f"{name} backward")
    if cpu is not None:
        assert_matches_cpu(dx, cpu, np.abs(dy) + 1e-6, rtol=1e-5, what=f"{name} backward")


@pytest.mark.parametrize("name,alpha", [("leaky_relu", 0.0), ("leaky_relu", 0.01), ("leaky_relu", 3.0),
                                        ("elu", 0.0), ("elu", 0.5), ("elu", 2.0)])
def test_alpha(device, name, alpha):
    z = away_from_kinks(300, 3)
    dy = f32(np.random.default_rng(4).standard_normal(300))
    y = ops.activation(z, name, alpha=alpha, device=device)
    assert_close(y, act64(z, name, alpha), rtol=2e-6, atol=1e-7, what=f"{name}({alpha})")
    dx = ops.activation_backward(y, dy, name, alpha=alpha, device=device)
    assert_close(dx, dy * grad64(z, name, alpha), np.abs(dy), 2e-6, atol=1e-7, what=f"{name}({alpha}) backward")


def test_in_place_aliases_and_large(device):
    """A span-sized tail and more than one parallel span (elementwise_cpu.c's 4096)."""
    z = away_from_kinks(3 * 4096 + 5, 5)
    for name in ("tanh", "gelu"):
        assert_close(ops.activation(z, name, device=device), act64(z, name), rtol=2e-6, atol=1e-7, what=name)


def test_empty(device):
    z = np.zeros((0, 3), np.float32)
    for name in KINDS:
        assert to_numpy(ops.activation(z, name, device=device)).shape == (0, 3)
        assert to_numpy(ops.activation_backward(z, z, name, device=device)).shape == (0, 3)


def test_nan_and_inf_follow_the_formulas():
    z = f32([np.nan, np.inf, -np.inf])
    assert ops.activation(z, "relu")[0] == 0.0  # max(z, 0) takes NaN to 0 (as ReLU always did)
    assert np.isnan(ops.activation(z, "tanh")[0])
    np.testing.assert_array_equal(ops.activation(z, "tanh")[1:], [1.0, -1.0])
    np.testing.assert_array_equal(ops.activation(z, "sigmoid")[1:], [1.0, 0.0])


# ---------------------------------------------------------------- fused into conv and dense


@pytest.mark.parametrize("kernel", ["auto", "ref"])
@pytest.mark.parametrize("name", KINDS)
def test_conv2d_fused_activation(device, name, kernel):
    g = np.random.default_rng(10 + KINDS.index(name))
    x = f32(g.standard_normal((3, 5, 9, 7)))
    w = f32(g.standard_normal((6, 5, 3, 3)) / np.sqrt(45))
    b = f32(g.standard_normal(6))
    out, cpu = run_on(device, ops.conv2d, x, w, b, stride=2, padding=1, activation=name, kernel=kernel)
    z = R.conv2d(x, w, b, 2, 1)
    absz = R.conv2d(np.abs(x), np.abs(w), np.abs(b), 2, 1)
    # the conv's rounding (rtol * absz) goes through the activation's slope (at most 1.1 here)
    assert_close(out, act64(z, name), 1.2 * absz, rtol_for(45), atol=1e-6, what=f"conv2d + {name}")
    if cpu is not None:
        assert_matches_cpu(out, cpu, absz, what=f"conv2d + {name}")


@pytest.mark.parametrize("name", KINDS)
def test_dense_fused_activation(device, name):
    g = np.random.default_rng(20 + KINDS.index(name))
    x = f32(g.standard_normal((7, 33)))
    w = f32(g.standard_normal((13, 33)) / np.sqrt(33))
    for b in (f32(g.standard_normal(13)), None):
        out, cpu = run_on(device, ops.dense, x, w, b, activation=name)
        z = R.dense(x, w, b)
        absz = R.dense(np.abs(x), np.abs(w), None if b is None else np.abs(b))
        assert_close(out, act64(z, name), 1.2 * absz, rtol_for(33), atol=1e-6, what=f"dense + {name}")
        if cpu is not None:
            assert_matches_cpu(out, cpu, absz, what=f"dense + {name}")


@pytest.mark.parametrize("name", KINDS)
def test_conv2d_activation_chain_finite_differences(device, name):
    """conv2d(activation) -> activation_backward -> conv2d_backward: the gradient of the
    fused op, against central differences of the float64 composite."""
    for seed in range(30, 60):  # the first data whose pre-activations keep off the kinks
        g = np.random.default_rng(seed)
        x = f32(g.standard_normal((2, 2, 5, 5)))
        w = f32(g.standard_normal((3, 2, 3, 3)) / 3)
        b = f32(g.standard_normal(3))
        if np.min(np.abs(R.conv2d(x, w, b, 1, 1))) > 1e-3:
            break
    z32 = ops.conv2d(x, w, b, padding=1, device=device)  # linear: the z gelu and silu read
    y = ops.conv2d(x, w, b, padding=1, activation=name, device=device)
    assert np.min(np.abs(R.conv2d(x, w, b, 1, 1))) > 1e-3, "test data too close to a kink"
    dy = f32(g.standard_normal(to_numpy(y).shape))
    dz = ops.activation_backward(backward_input(name, z32, y), dy, name, device=device)
    dx, dw, db = ops.conv2d_backward(x, w, dz, padding=1, device=device)
    dy64 = dy.astype(np.float64)
    num = R.numerical_grads(lambda x_, w_, b_: float((dy64 * act64(R.conv2d(x_, w_, b_, 1, 1), name)).sum()),
                            [x, w, b])
    ab = R.conv2d_backward(np.abs(x), np.abs(w), np.abs(dy), 1, 1)
    for got, want, a, what in zip((dx, dw, db), num, ab, ("dx", "dw", "db")):
        assert_close(got, want, 1.2 * a, rtol_for(50), atol=1e-6, what=f"{what} ({name})")


# ---------------------------------------------------------------- inside a network


def pair_model(name, device="cpu", seed=0):
    """conv(act) -> max pool -> flatten -> dense(act) -> dense: the conv + pool pair fuses
    for the monotone kinds on the CPU; gelu and silu keep z in both layers."""
    m = ga.Sequential([Conv2D(4, 3, padding="same", activation=name), MaxPool2D(2), Flatten(),
                       Dense(6, activation=name), Dense(5)], input_shape=(2, 8, 8), seed=seed)
    return m.compile(optimizer=ga.optimizers.SGD(0.0), device=device)


def net_reference(name, x, wts, dout):
    """float64 forward and analytic backward of pair_model."""
    cw, cb, w1, b1, w2, b2 = (np.asarray(a, np.float64) for a in wts)
    n = len(x)
    z1 = R.conv2d(x, cw, cb, 1, 1)
    a1 = act64(z1, name)
    p = R.max_pool2d(a1, 2)
    f = p.reshape(n, -1)
    z2 = R.dense(f, w1, b1)
    h = act64(z2, name)
    out = R.dense(h, w2, b2)
    dh, dw2, db2 = R.dense_backward(h, w2, dout)
    df, dw1, db1 = R.dense_backward(f, w1, dh * grad64(z2, name))
    da1 = R.max_pool2d_backward(a1, df.reshape(p.shape), 2)
    dx, dcw, dcb = R.conv2d_backward(x, cw, da1 * grad64(z1, name), 1, 1)
    return out, dx, [dcw, dcb, dw1, db1, dw2, db2]


@pytest.mark.parametrize("fuse", ["1", "0"])
@pytest.mark.parametrize("name", KINDS)
def test_network_matches_float64_backprop(device, monkeypatch, name, fuse):
    monkeypatch.setenv("GPUACCEL_FUSE", fuse)
    g = np.random.default_rng(40 + KINDS.index(name))
    x = f32(g.standard_normal((3, 2, 8, 8)))
    m = pair_model(name, device, seed=2)
    wts = m.get_weights()
    dout = f32(g.standard_normal((3, 5)))
    out = m._net.forward(x, True)
    dx, grads = m._net.backward(dout)
    rout, rdx, rgrads = net_reference(name, x.astype(np.float64), wts, dout.astype(np.float64))
    aout, adx, agrads = net_reference("linear", np.abs(x), [np.abs(a) for a in wts], np.abs(dout))
    assert_close(out, rout, aout, 1e-4, atol=1e-6, what=f"{name}: out")
    assert_close(dx, rdx, adx, 1e-4, atol=1e-6, what=f"{name}: dx")
    offs = np.cumsum([0] + [a.size for a in wts])
    for i, what in enumerate(("conv w", "conv b", "dense w", "dense b", "out w", "out b")):
        assert_close(grads[offs[i]:offs[i + 1]].reshape(wts[i].shape), rgrads[i], agrads[i], 1e-3, atol=1e-6,
                     what=f"{name}: {what}")


@pytest.mark.parametrize("name", ["leaky_relu", "elu", "tanh", "sigmoid", "relu", "linear"])
def test_fused_pair_is_the_two_layers(monkeypatch, name):
    """The conv + max pool kernel with a monotone activation gives exactly what the two
    layers give (values rounded so that activations tie and saturate)."""
    g = np.random.default_rng(50 + KINDS.index(name))
    x = f32(np.round(g.standard_normal((4, 2, 8, 8)) * 4) / 4)
    x[g.random(x.shape) < 0.3] = 0.0
    fused = pair_model(name)
    wts = [f32(np.round(a * 4) / 4) for a in fused.get_weights()]
    fused.set_weights(wts)
    monkeypatch.setenv("GPUACCEL_FUSE", "0")
    plain = pair_model(name)
    plain.set_weights(wts)
    dout = f32(g.standard_normal((4, 5)))
    a = (fused._net.forward(x, True),) + tuple(fused._net.backward(dout))
    b = (plain._net.forward(x, True),) + tuple(plain._net.backward(dout))
    for u, v, what in zip(a, b, ("out", "dx", "grads")):
        np.testing.assert_array_equal(u, v, err_msg=f"{name}: fused vs two layers: {what}")


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "gelu", "silu", "elu"])
def test_smooth_network_gradient_matches_finite_differences(name):
    """The evaluated loss of a whole model with smooth activations, by central differences."""
    from test_models import assert_gradient_matches_finite_differences, toy_data

    x, y = toy_data(8)
    model = ga.Sequential([Conv2D(3, 3, strides=2, padding=1, activation=name), Flatten(),
                           Dense(6, activation=name), Activation(name), Dense(5)], input_shape=(2, 12, 12), seed=1)
    assert_gradient_matches_finite_differences(model, x, y, samples=6)


@pytest.mark.parametrize("layer,name,alpha", [(LeakyReLU(0.1), "leaky_relu", 0.1), (ELU(0.7), "elu", 0.7),
                                              (ReLU(), "relu", None), (Activation("swish"), "silu", None),
                                              (Activation("sigmoid"), "sigmoid", None)])
def test_activation_layers(device, layer, name, alpha):
    g = np.random.default_rng(60)
    x = away_from_kinks((4, 3, 4, 4), 61)
    m = ga.Sequential([layer, Flatten(), Dense(3)], input_shape=(3, 4, 4), seed=0)
    m.compile(optimizer=ga.optimizers.SGD(0.0), device=device)
    dout = f32(g.standard_normal((4, 3)))
    out = m._net.forward(x, True)
    dx, _ = m._net.backward(dout)
    w, b = (a.astype(np.float64) for a in m.get_weights())
    a = act64(x, name, alpha).reshape(4, -1)
    assert_close(out, R.dense(a, w, b), R.dense(np.abs(a), np.abs(w), np.abs(b)), 1e-4, atol=1e-6, what=name)
    da, _, _ = R.dense_backward(a, w, dout.astype(np.float64))
    expect = da.reshape(x.shape) * grad64(x, name, alpha)
    assert_close(dx, expect, np.abs(expect) + 1e-3, 1e-4, atol=1e-6, what=f"{name} dx")


def test_cuda_trains_like_the_cpu(cuda_device):
    """Conv2D(tanh) -> max pool -> Dense(gelu) -> Dense(silu) -> Dense: ten Adam steps on
    the GPU (or the emulator) follow the CPU's losses."""
    from test_models import toy_data

    x, y = toy_data(64)
    losses = {}
    for device in ("cpu", cuda_device):
        m = ga.Sequential([Conv2D(6, 3, padding="same", activation="tanh"), MaxPool2D(2),
                           Conv2D(6, 3, activation="leaky_relu"), Flatten(), Dense(16, activation="gelu"),
                           Dense(16, activation="silu"), Dense(5)], input_shape=(2, 12, 12), seed=5)
        m.compile(optimizer=ga.optimizers.Adam(1e-2), device=device)
        losses[device] = np.array([m._net.train_step(x[i:i + 16], y[i:i + 16].astype(np.int32))[0]
                                   for i in range(0, 64, 16) for _ in range(3)])
    assert losses["cpu"][-1] < losses["cpu"][0]
    np.testing.assert_allclose(losses[cuda_device], losses["cpu"], rtol=1e-4)


def test_save_and_load_keep_the_activations(tmp_path):
    m = ga.Sequential([Conv2D(3, 3, activation="elu"), LeakyReLU(0.05), Flatten(), Dense(4, activation="swish"),
                       Activation("tanh"), Dense(2)], input_shape=(1, 6, 6), seed=3).compile()
    x = f32(np.random.default_rng(0).standard_normal((5, 1, 6, 6)))
    path = tmp_path / "m.gpuaccel"
    m.save(str(path))
    back = ga.models.load(str(path))
    np.testing.assert_array_equal(back.predict(x), m.predict(x))
    assert [type(l).__name__ for l in back.layers] == ["Conv2D", "LeakyReLU", "Flatten", "Dense", "Activation",
                                                       "Dense"]
    assert back.layers[1].negative_slope == 0.05 and back.layers[3].activation == "swish"


# ---------------------------------------------------------------- bad input


def test_bad_activations_are_clear_errors():
    x = f32(np.ones(4))
    with pytest.raises(ValueError, match="unknown activation 'softmax'"):
        ops.activation(x, "softmax")
    with pytest.raises(ValueError, match="unknown activation"):
        Dense(3, activation="Relu")
    with pytest.raises(ValueError, match="unknown activation"):
        Activation(3)
    with pytest.raises(ValueError, match="alpha must be finite and >= 0"):
        ops.activation(x, "leaky_relu", alpha=-0.1)
    with pytest.raises(ValueError, match="alpha must be finite and >= 0"):
        ops.activation(x, "elu", alpha=float("nan"))
    with pytest.raises(ValueError):
        LeakyReLU(-1.0)
    with pytest.raises(ValueError, match="unknown activation kind 99"):
        ga._C.op_activation(x, 99, 0.0, "cpu")
    with pytest.raises(ValueError, match="unknown activation kind -1"):
        ga._C.op_activation_backward(x, x, -1, 0.0, "cpu")
    with pytest.raises(ValueError, match="unknown activation kind"):
        ga._C.op_dense(f32(np.ones((2, 3))), f32(np.ones((4, 3))), None, 8, 0.0, "cpu")
    with pytest.raises(ValueError, match="same shape"):
        ops.activation_backward(x, f32(np.ones(5)), "tanh")


def test_bad_specs_are_clear_errors():
    with pytest.raises(ValueError, match=r"unknown activation 'cube' \(known: \('linear', 'relu'"):
        ga._C.Net([{"kind": "activation", "activation": "cube"}, {"kind": "flatten"},
                   {"kind": "dense", "units": 2}], (1, 2, 2), "cpu", 0)
    with pytest.raises(ValueError, match="alpha must be finite and >= 0"):
        ga._C.Net([{"kind": "flatten"}, {"kind": "dense", "units": 2, "activation": "elu", "alpha": -1.0}],
                  (1, 2, 2), "cpu", 0)
    with pytest.raises(TypeError, match="'activation' must be a string"):
        ga._C.Net([{"kind": "flatten"}, {"kind": "dense", "units": 2, "activation": 1}], (1, 2, 2), "cpu", 0)
    with pytest.raises(ValueError, match="unknown spec key 'relu'"):
        ga._C.Net([{"kind": "flatten"}, {"kind": "dense", "units": 2, "relu": True}], (1, 2, 2), "cpu", 0)


def test_a_model_saved_before_the_redesign_loads():
    """tests/data/model_8eb229b.npz was saved by commit 8eb229b (the `int relu` engine):
    Conv2D(relu), MaxPool2D, BatchNormalization, a Residual with a ReLU layer inside,
    GlobalAveragePooling2D, Dense(relu), Dropout, Dense, trained two epochs. It loads, and
    predicts what it predicted then (same kernels, same order: the same bits)."""
    import os

    data = os.path.join(os.path.dirname(__file__), "data")
    m = ga.models.load(os.path.join(data, "model_8eb229b.npz"))
    io = np.load(os.path.join(data, "model_8eb229b_io.npz"))
    np.testing.assert_allclose(m.predict(io["x"]), io["y"], rtol=1e-6, atol=1e-7)
