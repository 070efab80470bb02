"""Sequential end to end: training, determinism, gradients, weights, files, bad input."""
import json
import os

import numpy as np
import pytest

import gpuaccel as ga
from gpuaccel.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU


def small_model(seed=0, dropout=0.0):
    layers = [Conv2D(4, 3, padding="same", activation="relu"), MaxPool2D(2),
              Conv2D(6, 3, strides=2, padding=1), ReLU(), Flatten()]
    if dropout:
        layers.append(Dropout(dropout))
    layers += [Dense(16, activation="relu"), Dense(5)]
    return ga.Sequential(layers, input_shape=(2, 12, 12), seed=seed)


def toy_data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 2, 12, 12), dtype=np.float32)
    y = rng.integers(0, 5, n)
    return x, y


def test_fit_history_keys_and_progress(capsys):
    x, y = toy_data()
    model = small_model().compile(optimizer=ga.optimizers.Adam(1e-2), device="cpu")
    hist = model.fit(x, y, epochs=2, batch_size=32, validation_data=(x, y), verbose=1, seed=0)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_time_s", "step_time_ms_p50",
                "step_time_ms_p95", "images_per_s"):
        assert len(hist.history[key]) == 2, key
    assert hist.history["loss"][1] < hist.history["loss"][0]
    assert all(t > 0 for t in hist.history["epoch_time_s"])
    assert hist.history["step_time_ms_p50"][0] <= hist.history["step_time_ms_p95"][0]
    out = capsys.readouterr().out
    assert "Epoch 2/2" in out and "ms/step" in out and "val_accuracy" in out


def test_verbose_2_prints_one_line_per_epoch(capsys):
    x, y = toy_data()
    small_model().compile(optimizer="sgd").fit(x, y, epochs=2, batch_size=32, verbose=2)
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("Epoch")]
    assert len(lines) == 2


def test_same_seed_same_losses():
    x, y = toy_data()
    runs = []
    for _ in range(2):
        model = small_model(seed=3, dropout=0.3).compile(optimizer=ga.optimizers.Adam(1e-2))
        runs.append(model.fit(x, y, epochs=3, batch_size=16, verbose=0, seed=7).history["loss"])
    assert runs[0] == runs[1]
    other = small_model(seed=4, dropout=0.3).compile(optimizer=ga.optimizers.Adam(1e-2))
    assert other.fit(x, y, epochs=3, batch_size=16, verbose=0, seed=7).history["loss"] != runs[0]


def flat_params(model):
    return np.concatenate([w.ravel() for w in model.get_weights()]).astype(np.float64)


def sgd_gradient(model, x, y):
    """The gradient the engine computed: one plain SGD step with lr = 1 moves the
    weights by exactly -grad. Restores the weights afterwards."""
    w0 = model.get_weights()
    model.compile(optimizer=ga.optimizers.SGD(learning_rate=1.0))
    model.fit(x, y, epochs=1, batch_size=len(x), verbose=0, shuffle=False)
    grad = [a.astype(np.float64) - b for a, b in zip(w0, model.get_weights())]
    model.set_weights(w0)
    return grad


def test_training_step_gradient_matches_finite_differences():
    """A smooth network (strided, padded conv and dense, no kinks): the engine's
    gradient against central differences of the evaluated loss."""
    x, y = toy_data(8)
    model = ga.Sequential([Conv2D(3, 3, strides=2, padding=1), Flatten(), Dense(6), Dense(5)],
                          input_shape=(2, 12, 12), seed=1)
    assert_gradient_matches_finite_differences(model, x, y)


def assert_gradient_matches_finite_differences(model, x, y, samples=8, eps=1e-2):
    """The engine's gradient of `samples` weights of each array against central
    differences of the evaluated loss."""
    w0 = model.get_weights()
    grad = sgd_gradient(model, x, y)
    rng = np.random.default_rng(0)
    for i, w in enumerate(w0):
        for k in rng.choice(w.size, min(w.size, samples), replace=False):
            vals = []
            for sign in (1, -1):
                ws = [a.copy() for a in w0]
                ws[i].flat[k] += sign * eps
                model.set_weights(ws)
                vals.append(model.evaluate(x, y)[0])
            numeric = (vals[0] - vals[1]) / (2 * eps)
            assert abs(numeric - grad[i].flat[k]) <= 1e-3 + 1e-2 * abs(numeric), (i, k, numeric, grad[i].flat[k])


def test_training_step_gradient_matches_float64_backprop():
    """The full small model (ReLU, max-pool, strided conv) against backpropagation
    written in float64 NumPy (tests/reference.py), where finite differences would
    stumble over the kinks."""
    import reference as R

    x, y = toy_data(8)
    model = small_model(seed=1)
    w1, b1, w2, b2, w3, b3, w4, b4 = [w.astype(np.float64) for w in model.get_weights()]
    x64 = x.astype(np.float64)
    a1 = R.conv2d(x64, w1, b1, 1, 1, relu=True)
    p1 = R.max_pool2d(a1, 2)
    a2 = R.relu(R.conv2d(p1, w2, b2, 2, 1))
    f = a2.reshape(len(x), -1)
    h = R.dense(f, w3, b3, relu=True)
    z = R.dense(h, w4, b4)
    _, dz = R.softmax_cross_entropy(z, y)
    dh, dw4, db4 = R.dense_backward(h, w4, dz)
    df, dw3, db3 = R.dense_backward(f, w3, R.relu_backward(h, dh))
    dp1, dw2, db2 = R.conv2d_backward(p1, w2, R.relu_backward(a2, df.reshape(a2.shape)), 2, 1)
    da1 = R.max_pool2d_backward(a1, dp1, 2)
    _, dw1, db1 = R.conv2d_backward(x64, w1, R.relu_backward(a1, da1), 1, 1)
    expected = [dw1, db1, dw2, db2, dw3, db3, dw4, db4]
    for got, want in zip(sgd_gradient(model, x, y), expected):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)


def test_weights_layout_and_set_weights():
    model = small_model()
    shapes = [w.shape for w in model.get_weights()]
    assert shapes == [(4, 2, 3, 3), (4,), (6, 4, 3, 3), (6,), (16, 54), (16,), (5, 16), (5,)]
    new = [np.full(s, 0.01 * i, np.float32) for i, s in enumerate(shapes)]
    model.set_weights(new)
    for a, b in zip(model.get_weights(), new):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError):
        model.set_weights(new[:-1])
    with pytest.raises(ValueError):
        model.set_weights(new[:-1] + [np.zeros(4, np.float32)])
    with pytest.raises(ValueError):
        model.set_weights(new[:-1] + [np.full(5, np.nan, np.float32)])


def test_dense_matches_numpy_on_the_weights():
    """predict() of a Dense-only model equals x @ W.T + b in float64."""
    model = ga.Sequential([Flatten(), Dense(7, activation="relu"), Dense(3)], input_shape=(1, 4, 5), seed=2)
    x = np.random.default_rng(1).standard_normal((9, 1, 4, 5)).astype(np.float32)
    w1, b1, w2, b2 = [w.astype(np.float64) for w in model.get_weights()]
    h = np.maximum(x.reshape(9, -1) @ w1.T + b1, 0)
    np.testing.assert_allclose(model.predict(x), h @ w2.T + b2, rtol=1e-5, atol=1e-5)


def test_save_load_round_trip(tmp_path):
    x, y = toy_data()
    model = small_model(dropout=0.2).compile(optimizer=ga.optimizers.SGD(0.05, momentum=0.9))
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    path = tmp_path / "m.npz"
    model.save(path)
    loaded = ga.models.load(path)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert isinstance(loaded.optimizer, ga.optimizers.SGD) and loaded.optimizer.momentum == 0.9
    assert [type(l) for l in loaded.layers] == [type(l) for l in model.layers]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]


def test_load_rejects_corrupted_and_truncated_files(tmp_path):
    model = small_model()
    path = tmp_path / "m.npz"
    model.save(path)
    blob = path.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError):
        ga.models.load(tmp_path / "trunc.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a model at all")
    with pytest.raises(ValueError):
        ga.models.load(tmp_path / "junk.npz")
    # valid archive, weights changed behind the checksum's back
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["w000"] = arrays["w000"] + 1
    np.savez(tmp_path / "tampered.npz", **arrays)
    with pytest.raises(ValueError, match="checksum"):
        ga.models.load(tmp_path / "tampered.npz")
    with pytest.raises(FileNotFoundError):
        ga.models.load(tmp_path / "missing.npz")


def test_failed_save_keeps_previous_file(tmp_path, monkeypatch):
    model = small_model()
    path = tmp_path / "m.npz"
    model.save(path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError):
        model.save(path)
    assert path.read_bytes() == before
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]


def test_summary_and_count(capsys):
    model = small_model()
    model.summary()
    out = capsys.readouterr().out
    assert "Conv2D" in out and f"{model.count_params():,}" in out
    assert model.count_params() == sum(w.size for w in model.get_weights())


def test_fit_bad_input():
    x, y = toy_data(32)
    model = small_model().compile(optimizer="adam")
    with pytest.raises(ValueError):
        model.fit(x[:0], y[:0], verbose=0)  # empty
    with pytest.raises(ValueError):
        model.fit(x, y[:-1], verbose=0)  # length mismatch
    with pytest.raises(ValueError):
        model.fit(x, y + 5, verbose=0)  # labels out of range
    with pytest.raises(TypeError):
        model.fit(x, y.astype(np.float32), verbose=0)  # float labels
    with pytest.raises(ValueError):
        model.fit(x[:, :1], y, verbose=0)  # wrong channels
    bad = x.copy()
    bad[3, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.fit(bad, y, verbose=0)
    with pytest.raises(ValueError):
        model.fit(x, y, batch_size=0, verbose=0)
    with pytest.raises(RuntimeError):
        small_model().fit(x, y, verbose=0)  # not compiled
    with pytest.raises(ValueError):
        small_model().compile(loss="mse")


def test_layer_and_model_configuration_errors():
    with pytest.raises(ValueError):
        Conv2D(0, 3)
    with pytest.raises(ValueError):
        Dense(4, activation="softmax")
    with pytest.raises(ValueError):
        Dropout(1.0)
    with pytest.raises(ValueError):  # kernel larger than the image
        ga.Sequential([Conv2D(2, 9), Flatten(), Dense(2)], input_shape=(1, 5, 5)).build()
    with pytest.raises(ValueError):  # output is not a vector
        ga.Sequential([Conv2D(2, 3)], input_shape=(1, 5, 5)).build()
    with pytest.raises(ValueError):
        ga.Sequential([Flatten(), Dense(2)]).build()  # no input shape


def test_nan_loss_stops_with_the_step():
    x, y = toy_data(64)
    model = small_model().compile(optimizer=ga.optimizers.SGD(learning_rate=1e30))
    with pytest.raises(FloatingPointError, match="step"):
        model.fit(x * 1e6, y, epochs=3, batch_size=16, verbose=0)


def test_early_stopping_and_checkpoint(tmp_path):
    x, y = toy_data()
    model = small_model().compile(optimizer=ga.optimizers.Adam(1e-2))
    stop = ga.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=10.0)
    ckpt = ga.callbacks.ModelCheckpoint(tmp_path / "ck-{epoch:02d}.npz")
    hist = model.fit(x, y, epochs=5, batch_size=32, verbose=0, callbacks=[stop, ckpt])
    assert len(hist.history["loss"]) == 2
    assert sorted(os.listdir(tmp_path)) == ["ck-01.npz", "ck-02.npz"]
    ga.models.load(tmp_path / "ck-02.npz")


def test_threads_setting():
    n = ga.get_num_threads()
    ga.set_num_threads(1)
    assert ga.get_num_threads() == 1
    ga.set_num_threads(n)
    with pytest.raises(ValueError):
        ga.set_num_threads(0)


def test_info_and_devices():
    assert ga.devices()[0] == "cpu"
    info = ga.info()
    json.dumps(info, default=str)


def test_reference_cnn_one_epoch_reaches_087(fashion):
    """The issue's end-to-end bar: one epoch on all 60,000 images, test accuracy >= 0.87.

    One epoch leaves the accuracy still moving with the initial weights and the batch
    order: measured over seeds 0, 1, 2, 3 it was 0.863, 0.873, 0.876, 0.873 (see
    benchmarks/RESULTS.md). The test uses seed 1, a typical run, not the best one."""
    (x, y), (xt, yt) = fashion
    model = ga.models.reference_cnn(seed=1).compile(optimizer=ga.optimizers.Adam(1e-3), device="cpu")
    model.fit(x, y, epochs=1, batch_size=128, verbose=0, seed=1)
    loss, acc = model.evaluate(xt, yt)
    print(f"reference CNN, 1 epoch: test loss {loss:.4f}, accuracy {acc:.4f}")
    assert acc >= 0.87


# ---- one source of truth for shapes, strict specs ----------------------------------

def test_weight_shapes_and_names_come_from_c():
    """get_weights() follows the slots the C layer table reports: names, blocks, shapes,
    contiguous offsets that cover the parameter and state blocks exactly once."""
    from gpuaccel.layers import BatchNormalization, Residual
    m = ga.Sequential([Conv2D(4, 3, use_bias=False), BatchNormalization(),
                       Residual([Conv2D(6, 3, strides=2, padding=1)], projection=True),
                       Flatten(), Dense(5)], input_shape=(2, 9, 9)).build()
    rows = m._net.slots()
    names = [[name for name, *_ in row] for row in rows]
    assert names == [["kernel"], ["gamma", "beta", "moving_mean", "moving_variance"], [], ["kernel", "bias"],
                     ["projection_kernel", "projection_bias"], [], ["kernel", "bias"]]
    shapes = [w.shape for w in m.get_weights()]
    assert shapes == [(4, 2, 3, 3), (4,), (4,), (4,), (4,), (6, 4, 3, 3), (6,), (6, 4, 1, 1), (6,),
                      (5, 6 * 4 * 4), (5,)]
    covered = {"p": np.zeros(m._net.nparams, int), "s": np.zeros(m._net.nstate, int)}
    for row in rows:
        for _, blk, off, shape in row:
            covered[blk][off:off + int(np.prod(shape))] += 1
    assert all((c == 1).all() for c in covered.values())


@pytest.mark.parametrize("spec, msg", [
    ({"kind": "dense", "units": 3, "unit": 4}, "unknown spec key 'unit'"),
    ({"kind": "conv2d", "units": 2, "kernel_h": 3, "kernel_w": 3, "stride": 1, "rate": 0.5},
     "unknown spec key 'rate'"),
    ({"kind": "flatten", "relu": True}, "unknown spec key 'relu'"),
])
def test_unknown_spec_keys_are_errors(spec, msg):
    from gpuaccel import _C
    with pytest.raises(ValueError, match=msg):
        _C.Net([{"kind": "flatten"}, spec] if spec["kind"] != "flatten" else [spec, {"kind": "dense", "units": 2}],
               (1, 4, 4))
    with pytest.raises(TypeError, match="keys must be strings"):
        _C.Net([{"kind": "flatten", 3: 1}, {"kind": "dense", "units": 2}], (1, 4, 4))
