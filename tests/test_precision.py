"""compile(precision='tf32'): the network's matrix products on tensor cores (issue 14,
item 4), checked on the emulator (which rounds operands to TF32 as the hardware does)
and on a GPU where one is present.

- the logits of a TF32 network differ from the fp32 ones by a TF32-sized amount: more
  than fp32 rounding (so the flag reached the kernels), less than TF32's bound;
- the gradients of one step likewise, and training with TF32 learns;
- graphs and steps_per_execution give the same bits under TF32 as without them;
- the CPU refuses 'tf32' with a clear message; 'fp32' stays the default.
"""
import numpy as np
import pytest

import gpuaccel as ga
from gpuaccel.layers import Conv2D, Dense, Flatten, MaxPool2D

TF32_EPS = 2.0 ** -11  # unit roundoff of a 10-bit mantissa, round to nearest


def model(device, precision="fp32", seed=0, spe=1):
    m = ga.Sequential([Conv2D(8, 3, padding="same", activation="relu"), MaxPool2D(2),
                       Conv2D(8, 3, padding="same", activation="relu"), Flatten(),
                       Dense(32, activation="relu"), Dense(5)], input_shape=(3, 10, 10), seed=seed)
    return m.compile(optimizer=ga.optimizers.Adam(1e-3), device=device, precision=precision,
                     steps_per_execution=spe)


def data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 3, 10, 10), dtype=np.float32), rng.integers(0, 5, n)


def test_tf32_logits_and_gradients_differ_by_a_tf32_amount(cuda_device):
    x, y = data()
    out, grads = {}, {}
    for p in ("fp32", "tf32"):
        m = model(cuda_device, p)
        out[p] = m._net.forward(x, False)
        dout = np.random.default_rng(1).standard_normal(out[p].shape).astype(np.float32)
        m._net.forward(x, False)
        grads[p] = m._net.backward(dout)[1]
    scale = np.abs(out["fp32"]).max()
    d = np.abs(out["tf32"] - out["fp32"]).max() / scale
    assert 1e-6 < d < 200 * TF32_EPS, d  # rounded (not fp32), but only as much as TF32 rounds
    g = np.abs(grads["tf32"] - grads["fp32"]).max() / np.abs(grads["fp32"]).max()
    assert 1e-6 < g < 200 * TF32_EPS, g


def test_tf32_trains_and_keeps_graph_bit_identity(cuda_device, monkeypatch):
    x, y = data(96)
    runs = {}
    for graphs, spe in (("0", 1), ("1", 4)):
        monkeypatch.setenv("GPUACCEL_CUDA_GRAPHS", graphs)
        m = model(cuda_device, "tf32", spe=spe)
        h = m.fit(x, y, epochs=3, batch_size=16, seed=0, verbose=0)
        runs[graphs] = (m.get_weights(), h.history["loss"])
    assert all(np.array_equal(a, b) for a, b in zip(runs["0"][0], runs["1"][0]))
    assert runs["1"][1][-1] < runs["1"][1][0]  # it learns


def test_precision_is_checked_and_fp32_is_the_default():
    m = model("cpu")
    assert m.precision == "fp32"
    with pytest.raises(ValueError, match="tensor cores"):
        model("cpu", "tf32")
    with pytest.raises(ValueError, match="unknown precision"):
        model("cpu", "fp16")
    with pytest.raises(ValueError, match="tensor cores"):
        m._net.set_precision(ga._C.PRECISION_TF32)


def test_tf32_convolutions_run_im2col_on_the_tensor_cores(cuda_device, monkeypatch):
    monkeypatch.delenv("GPUACCEL_CONV_KERNEL", raising=False)  # 'auto' as users get it
    x, y = data(16)
    m = model(cuda_device, "tf32")
    m.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert [k for k in m._net.conv_kernels() if k] == ["im2col (auto)"] * 2
    f = model(cuda_device, "fp32")
    f.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert [k for k in f._net.conv_kernels() if k] == ["implicit (auto)"] * 2
    e = ga.Sequential([Conv2D(4, 3, kernel="implicit"), Flatten(), Dense(5)], input_shape=(3, 10, 10), seed=0)
    e.compile(device=cuda_device, precision="tf32")
    with pytest.raises(ValueError, match="fp32"):
        e.fit(x, y, epochs=1, batch_size=16, verbose=0)
