"""AveragePooling2D and GlobalMaxPooling2D: ops against float64 NumPy references,
backward against finite differences, CUDA against CPU (run_on), bad input, and a small
model that trains and round-trips through save/load."""
import numpy as np
import pytest

import gpuaccel as ga
import reference as ref
from conftest import assert_close, assert_matches_cpu, f32, run_on, to_numpy
from gpuaccel.layers import AveragePooling2D, Conv2D, Dense, GlobalMaxPooling2D

ops = ga.ops


def avg_ref(x, size, stride=None):
    x = np.asarray(x, np.float64)
    stride = size if stride is None else stride
    n, c, h, w = x.shape
    p, q = ref.pool_out_size(h, w, size, stride)
    y = np.empty((n, c, p, q))
    for i in range(p):
        for j in range(q):
            y[:, :, i, j] = x[:, :, i * stride:i * stride + size, j * stride:j * stride + size].mean(axis=(2, 3))
    return y


def avg_backward_ref(x, dy, size, stride=None):
    stride = size if stride is None else stride
    dy = np.asarray(dy, np.float64)
    dx = np.zeros(x.shape)
    for i in range(dy.shape[2]):
        for j in range(dy.shape[3]):
            dx[:, :, i * stride:i * stride + size, j * stride:j * stride + size] += dy[:, :, i:i + 1, j:j + 1] / size**2
    return dx


AVG_CASES = [(2, 3, 8, 8, 2, None), (1, 1, 5, 5, 5, None), (1, 2, 6, 7, 1, 1), (2, 2, 7, 7, 3, 1),
             (1, 3, 9, 11, 2, 3), (3, 1, 7, 5, 3, 2), (1, 70, 4, 4, 2, None)]


@pytest.mark.parametrize("case", AVG_CASES)
def test_avg_pool2d_forward_backward(device, case):
    n, c, h, w, size, stride = case
    g = np.random.default_rng(h * w + c)
    x = f32(g.standard_normal((n, c, h, w)))
    y, cpu = run_on(device, ops.avg_pool2d, x, size=size, stride=stride)
    assert_close(y, avg_ref(x, size, stride), avg_ref(np.abs(x), size, stride), 1e-5, what="avg y")
    if cpu is not None:
        np.testing.assert_array_equal(to_numpy(y), to_numpy(cpu))
    dy = f32(g.standard_normal(to_numpy(y).shape))
    dx, cpu = run_on(device, ops.avg_pool2d_backward, x, dy, size=size, stride=stride)
    absref = avg_backward_ref(x, np.abs(dy), size, stride)
    assert_close(dx, avg_backward_ref(x, dy, size, stride), absref, 1e-5, atol=1e-7, what="avg dx")
    (num,) = ref.numerical_grads(lambda x_: float((avg_ref(x_, size, stride) * dy).sum()), [x])
    assert_close(dx, num, absref, 1e-4, atol=1e-6, what="avg dx vs finite differences")
    if cpu is not None:
        np.testing.assert_array_equal(to_numpy(dx), to_numpy(cpu))


@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (1, 1, 1, 1), (1, 1, 6, 6), (2, 70, 3, 3)])
def test_global_max_pool2d(device, shape):
    g = np.random.default_rng(sum(shape))
    x = f32(g.standard_normal(shape))
    y, cpu = run_on(device, ops.global_max_pool2d, x)
    np.testing.assert_array_equal(to_numpy(y), x.max(axis=(2, 3)))
    dy = f32(g.standard_normal(shape[:2]))
    dx, cpu = run_on(device, ops.global_max_pool2d_backward, x, dy)
    n, c = shape[:2]
    flat = x.reshape(n * c, -1)
    expect = np.zeros_like(flat)
    expect[np.arange(n * c), flat.argmax(axis=1)] = dy.ravel()
    np.testing.assert_array_equal(to_numpy(dx), expect.reshape(shape))
    if cpu is not None:
        np.testing.assert_array_equal(to_numpy(dx), to_numpy(cpu))


def test_global_max_pool2d_ties_first_maximum(device):
    x = np.zeros((1, 2, 3, 3), np.float32)
    x[0, 1, 1, 1] = x[0, 1, 2, 0] = 5.0
    dx = to_numpy(ops.global_max_pool2d_backward(x, f32([[1.0, 2.0]]), device=device))
    expect = np.zeros_like(x)
    expect[0, 0, 0, 0], expect[0, 1, 1, 1] = 1.0, 2.0
    np.testing.assert_array_equal(dx, expect)


def test_bad_input(device):
    x = np.zeros((1, 1, 4, 4), np.float32)
    with pytest.raises(TypeError):
        ops.avg_pool2d(x.astype(np.float64), device=device)
    with pytest.raises(ValueError):
        ops.avg_pool2d(x[0], device=device)
    with pytest.raises(ValueError):
        ops.avg_pool2d(x, 5, device=device)
    with pytest.raises(ValueError):
        ops.avg_pool2d(x, 2, 0, device=device)
    with pytest.raises(ValueError):
        ops.avg_pool2d(np.zeros((0, 1, 4, 4), np.float32), device=device)
    with pytest.raises(ValueError):
        ops.avg_pool2d_backward(x, np.zeros((1, 1, 3, 3), np.float32), device=device)
    with pytest.raises(TypeError):
        ops.global_max_pool2d(x.astype(np.int32), device=device)
    with pytest.raises(ValueError):
        ops.global_max_pool2d(np.zeros((0, 1, 4, 4), np.float32), device=device)
    with pytest.raises(ValueError):
        ops.global_max_pool2d_backward(x, np.zeros((1, 2), np.float32), device=device)


def _model():
    return ga.Sequential([Conv2D(8, 3, padding="same", activation="tanh"), AveragePooling2D(2),
                          Conv2D(8, 3, activation="relu"), GlobalMaxPooling2D(), Dense(10, activation="gelu"),
                          Dense(10)], input_shape=(3, 12, 12), seed=0)


def test_model_trains_and_round_trips(device, tmp_path):
    g = np.random.default_rng(1)
    x, y = g.random((64, 3, 12, 12), dtype=np.float32), g.integers(0, 10, 64)
    losses = {}
    for dev in ["cpu"] + ([device] if device != "cpu" else []):
        m = _model().compile(optimizer=ga.optimizers.Adam(1e-2), device=dev)
        losses[dev] = m.fit(x, y, epochs=4, batch_size=32, verbose=0, shuffle=False).history["loss"]
        assert losses[dev][-1] < losses[dev][0]
        m.save(tmp_path / f"{dev}.npz")
        loaded = ga.models.load(tmp_path / f"{dev}.npz", device=dev)  # the same device: the same kernels
        np.testing.assert_array_equal(loaded.predict(x), m.predict(x))
    if device != "cpu":
        np.testing.assert_allclose(losses[device], losses["cpu"], rtol=1e-4)


def test_layers_in_a_network_match_float64_backprop(device):
    """Inside the engine: AveragePooling2D -> Conv2D(tanh) -> GlobalMaxPooling2D -> Dense, its
    output, input gradient and weight gradients against float64 backpropagation."""
    g = np.random.default_rng(7)
    x = f32(g.standard_normal((3, 2, 10, 10)))
    m = ga.Sequential([AveragePooling2D(2), Conv2D(4, 3, padding=1, activation="tanh"), GlobalMaxPooling2D(),
                       Dense(5)], input_shape=(2, 10, 10), seed=3)
    m.compile(optimizer=ga.optimizers.SGD(0.0), device=device)
    cw, cb, dw, db = (a.astype(np.float64) for a in m.get_weights())
    dout = f32(g.standard_normal((3, 5)))
    out = m._net.forward(x, True)
    dx, grads = m._net.backward(dout)
    p = avg_ref(x, 2)
    a = np.tanh(ref.conv2d(p, cw, cb, 1, 1))
    flat = a.reshape(3, 4, -1)
    arg = flat.argmax(axis=2)
    gmax = np.take_along_axis(flat, arg[..., None], 2)[..., 0]
    assert_close(out, ref.dense(gmax, dw, db), np.abs(gmax) @ np.abs(dw).T + np.abs(db), 1e-4, atol=1e-6,
                 what="out")
    dg, ddw, ddb = ref.dense_backward(gmax, dw, dout.astype(np.float64))
    da = np.zeros_like(flat)
    np.put_along_axis(da, arg[..., None], dg[..., None], 2)
    dz = da.reshape(a.shape) * (1.0 - a * a)
    dp, dcw, dcb = ref.conv2d_backward(p, cw, dz, 1, 1)
    want_dx = avg_backward_ref(x, dp, 2)
    assert_close(dx, want_dx, np.abs(want_dx) + 1e-3, 1e-3, atol=1e-6, what="dx")
    offs = np.cumsum([0] + [w.size for w in (cw, cb, dw, db)])
    for i, (want, what) in enumerate(zip((dcw, dcb, ddw, ddb), ("conv w", "conv b", "dense w", "dense b"))):
        got = grads[offs[i]:offs[i + 1]].reshape(want.shape)
        assert_close(got, want, np.abs(want) + 1e-3, 1e-3, atol=1e-6, what=what)
