"""Resumable training (issue 17 item 4): save keeps the optimizer's state (moments, Adam's
step count, the random-mask counter), load restores it, and fit(initial_epoch=k) with the
same seed continues exactly as the uninterrupted run (epoch k's shuffle order included).
ModelCheckpoint(keep_last=K) keeps the K newest files it wrote. Files without the
optimizer's state (include_optimizer=False, or written before it existed) still load."""
import glob
import hashlib
import io
import json
import os

import numpy as np
import pytest

import gpuaccel as ga
from gpuaccel.callbacks import ModelCheckpoint
from gpuaccel.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, RandomFlip, ReLU

E, K = 4, 2  # epochs in all, epochs before the interruption


@pytest.fixture(autouse=True)
def _fixed_conv_kernel(monkeypatch):
    """The resumed model is a fresh network: with kernel 'auto' it would measure the
    convolution algorithms again and might pick another one (other rounding). Pin it."""
    monkeypatch.setenv("GPUACCEL_CONV_KERNEL", "im2col")


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 2, 10, 10), dtype=np.float32), rng.integers(0, 4, n)


def _model(flip=False, dropout=0.0, seed=3):
    layers = [RandomFlip("horizontal", seed=5)] if flip else []
    layers += [Conv2D(4, 3, padding="same", activation="relu"), MaxPool2D(2), Conv2D(4, 3, padding=1), ReLU(),
               Flatten()]
    if dropout:
        layers.append(Dropout(dropout))
    layers += [Dense(12, activation="relu"), Dense(4)]
    return ga.Sequential(layers, input_shape=(2, 10, 10), seed=seed)


_OPTS = {"adam": lambda: ga.optimizers.Adam(5e-3),
         "sgd_momentum": lambda: ga.optimizers.SGD(5e-2, momentum=0.9, nesterov=True, weight_decay=1e-4)}


def _check_same(h_full, h_rest, full, resumed, device):
    a, b = h_full.history["loss"][K:], h_rest.history["loss"]
    assert len(b) == E - K
    if device == "cpu":  # the same kernels in the same order: bit for bit
        assert a == b
        for wa, wb in zip(full.get_weights(), resumed.get_weights()):
            np.testing.assert_array_equal(wa, wb)
    else:  # the emulator's or a GPU's sums may run in another order between launches
        np.testing.assert_allclose(a, b, rtol=1e-5)
        for wa, wb in zip(full.get_weights(), resumed.get_weights()):
            np.testing.assert_allclose(wa, wb, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("opt", sorted(_OPTS))
@pytest.mark.parametrize("extra", ["plain", "dropout", "flip"])
def test_resume_equals_uninterrupted(tmp_path, device, opt, extra):
    x, y = _data()
    kw = {"dropout": 0.3} if extra == "dropout" else {"flip": True} if extra == "flip" else {}
    full = _model(**kw).compile(optimizer=_OPTS[opt](), device=device)
    h_full = full.fit(x, y, epochs=E, batch_size=16, verbose=0, seed=11)

    first = _model(**kw).compile(optimizer=_OPTS[opt](), device=device)
    first.fit(x, y, epochs=K, batch_size=16, verbose=0, seed=11)
    assert first.history.history["loss"] == h_full.history["loss"][:K] or device != "cpu"
    path = tmp_path / "ckpt.npz"
    first.save(path)
    del first

    resumed = ga.models.load(path, device=device)
    assert resumed.optimizer.get_config() == _OPTS[opt]().get_config()
    assert resumed._net.steps == K * 4  # 64 samples in batches of 16
    h_rest = resumed.fit(x, y, epochs=E, batch_size=16, verbose=0, seed=11, initial_epoch=K)
    _check_same(h_full, h_rest, full, resumed, device)


def test_resume_keeps_the_learning_rate_as_set(tmp_path):
    """A schedule's learning rate at the save is the one the loaded optimizer runs with."""
    x, y = _data()
    m = _model().compile(optimizer=ga.optimizers.Adam(1e-2), device="cpu")
    m.fit(x, y, epochs=1, batch_size=16, verbose=0, seed=1)
    m._set_learning_rate(2.5e-3)
    m.save(tmp_path / "m.npz")
    back = ga.models.load(tmp_path / "m.npz")
    assert back.optimizer.learning_rate == 2.5e-3
    kind, m1, m2, steps, draws = m._net.get_opt_state()
    kind2, n1, n2, steps2, draws2 = back._net.get_opt_state()
    assert (kind, steps, draws) == (kind2, steps2, draws2) == ("adam", 4, 0)
    np.testing.assert_array_equal(m1, n1)
    np.testing.assert_array_equal(m2, n2)


def test_without_the_optimizer_state_the_optimizer_starts_afresh(tmp_path):
    """include_optimizer=False writes what files from before this change hold: the
    optimizer's configuration, no moments. They load, compiled, with a fresh optimizer."""
    x, y = _data()
    m = _model().compile(optimizer=ga.optimizers.SGD(1e-2, momentum=0.9), device="cpu")
    m.fit(x, y, epochs=1, batch_size=16, verbose=0, seed=1)
    m.save(tmp_path / "w.npz", include_optimizer=False)
    with np.load(tmp_path / "w.npz") as data:
        assert not [k for k in data.files if k.startswith("opt_")]
        assert "optimizer_state" not in json.loads(bytes(data["config"]).decode())
    back = ga.models.load(tmp_path / "w.npz")
    assert back._net.steps == 0
    kind, m1, m2, steps, draws = back._net.get_opt_state()
    assert kind == "sgd" and m2 is None and not m1.any()
    for a, b in zip(m.get_weights(), back.get_weights()):
        np.testing.assert_array_equal(a, b)
    back.fit(x, y, epochs=1, batch_size=16, verbose=0)


def _old_format_file(path, model):
    """A file as the code before the optimizer state wrote it (format 1, weights and
    config only, both checksums), built by hand here."""
    weights = model.get_weights()
    digest = hashlib.sha256()
    for w in weights:
        digest.update(np.ascontiguousarray(w).tobytes())
    config = dict(model.get_config(), weights_sha256=digest.hexdigest())
    config["config_sha256"] = hashlib.sha256((json.dumps(config, sort_keys=True) + json.dumps(
        [[list(w.shape), w.dtype.str] for w in weights])).encode()).hexdigest()
    arrays = {f"w{i:03d}": w for i, w in enumerate(weights)}
    arrays["config"] = np.frombuffer(json.dumps(config).encode(), dtype=np.uint8)
    np.savez(path, **arrays)


def test_old_format_files_load(tmp_path):
    x, y = _data()
    m = _model().compile(optimizer="adam", device="cpu")
    m.fit(x, y, epochs=1, batch_size=32, verbose=0, seed=1)
    _old_format_file(tmp_path / "old.npz", m)
    back = ga.models.load(tmp_path / "old.npz")
    assert back.optimizer.kind == "adam" and back._net.steps == 0
    np.testing.assert_array_equal(back.predict(x), m.predict(x))
    # and one without any optimizer (an uncompiled model): loads uncompiled, compile() as before
    u = _model()
    u.build()
    _old_format_file(tmp_path / "raw.npz", u)
    raw = ga.models.load(tmp_path / "raw.npz")
    assert raw.optimizer is None
    raw.compile(optimizer="sgd").fit(x, y, epochs=1, verbose=0)


def _rewrite(src, dst, edit, resign):
    """Copy a model file, `edit`ing its arrays; resign: recompute the optimizer state's
    checksum and the config's (an edited file that passes them, so the later checks run)."""
    with np.load(src) as data:
        arrays = {k: data[k] for k in data.files}
    edit(arrays)
    config = json.loads(bytes(arrays["config"]).decode())
    if resign:
        st = config["optimizer_state"]
        digest = hashlib.sha256()
        for k in st["arrays"]:
            digest.update(np.ascontiguousarray(arrays[k]).tobytes())
        st["sha256"] = digest.hexdigest()
        st["shapes"] = [list(arrays[k].shape) for k in st["arrays"]]
        weights = [arrays[k] for k in sorted(k for k in arrays if k.startswith("w"))]
        rest = {k: v for k, v in config.items() if k != "config_sha256"}
        config["config_sha256"] = hashlib.sha256((json.dumps(rest, sort_keys=True) + json.dumps(
            [[list(w.shape), w.dtype.str] for w in weights])).encode()).hexdigest()
    arrays["config"] = np.frombuffer(json.dumps(config).encode(), dtype=np.uint8)
    np.savez(dst, **arrays)


def test_corrupted_optimizer_state_is_a_clear_error(tmp_path):
    x, y = _data()
    m = _model().compile(optimizer="adam", device="cpu")
    m.fit(x, y, epochs=1, batch_size=32, verbose=0, seed=1)
    m.save(tmp_path / "m.npz")

    def shorter(a):
        a["opt_m2"] = a["opt_m2"][:-3].copy()

    _rewrite(tmp_path / "m.npz", tmp_path / "bad.npz", shorter, resign=False)
    with pytest.raises(ValueError, match="optimizer state does not match its checksum"):
        ga.models.load(tmp_path / "bad.npz")
    _rewrite(tmp_path / "m.npz", tmp_path / "bad2.npz", shorter, resign=True)
    with pytest.raises(ValueError, match=r"bad optimizer state.*m2 has \d+ values, the network has \d+ parameters"):
        ga.models.load(tmp_path / "bad2.npz")

    def wrong_dtype(a):
        a["opt_m1"] = a["opt_m1"].astype(np.float64)

    _rewrite(tmp_path / "m.npz", tmp_path / "bad3.npz", wrong_dtype, resign=True)
    with pytest.raises(ValueError, match="opt_m1 must be a 1-D float32 array"):
        ga.models.load(tmp_path / "bad3.npz")

    def missing(a):
        del a["opt_m2"]

    _rewrite(tmp_path / "m.npz", tmp_path / "bad4.npz", missing, resign=False)
    with pytest.raises(ValueError, match="adam keeps arrays"):
        ga.models.load(tmp_path / "bad4.npz")


def test_net_opt_state_checks_its_arguments():
    m = _model().compile(optimizer="adam", device="cpu")
    kind, m1, m2, steps, draws = m._net.get_opt_state()
    assert kind == "adam" and m1.shape == m2.shape == (m._net.nparams,)
    with pytest.raises(ValueError, match="the state is for sgd"):
        m._net.set_opt_state("sgd", m1, None, 0, 0)
    with pytest.raises(ValueError, match="unknown optimizer"):
        m._net.set_opt_state("rmsprop", m1, m2, 0, 0)
    with pytest.raises(ValueError, match="second moments"):
        m._net.set_opt_state("adam", m1, None, 0, 0)
    with pytest.raises(ValueError, match="m1 has 3 values"):
        m._net.set_opt_state("adam", m1[:3], m2, 0, 0)
    with pytest.raises(TypeError, match="float32"):
        m._net.set_opt_state("adam", m1, m2.astype(np.float64), 0, 0)
    with pytest.raises(ValueError, match=">= 0"):
        m._net.set_opt_state("adam", m1, m2, -1, 0)
    m._net.set_opt_state("adam", m1 + 1, m2, 7, 9)
    assert m._net.steps == 7
    assert m._net.get_opt_state()[3:] == (7, 9)
    sgd = _model().compile(optimizer="sgd", device="cpu")
    with pytest.raises(ValueError, match="one moment block"):
        sgd._net.set_opt_state("sgd", m1, m2, 0, 0)


def test_checkpoint_keep_last(tmp_path):
    x, y = _data()
    stranger = tmp_path / "ckpt-00.npz"  # matches the pattern, not written by the callback
    stranger.write_bytes(b"not mine")
    m = _model().compile(optimizer="adam", device="cpu")
    cb = ModelCheckpoint(str(tmp_path / "ckpt-{epoch:02d}.npz"), keep_last=2)
    m.fit(x, y, epochs=5, batch_size=32, verbose=0, seed=1, callbacks=[cb])
    left = sorted(os.path.basename(p) for p in glob.glob(str(tmp_path / "ckpt-*.npz")))
    assert left == ["ckpt-00.npz", "ckpt-04.npz", "ckpt-05.npz"]
    assert stranger.read_bytes() == b"not mine"
    # the newest checkpoint resumes: epoch 5's state, optimizer included
    back = ga.models.load(tmp_path / "ckpt-05.npz")
    assert back._net.steps == m._net.steps == 10
    # one fixed name: overwritten each epoch, never deleted
    one = ModelCheckpoint(str(tmp_path / "last.npz"), keep_last=1)
    m.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[one])
    assert os.path.exists(tmp_path / "last.npz")
    # weights only: no optimizer state in the file
    wo = ModelCheckpoint(str(tmp_path / "w-{epoch}.npz"), save_weights_only=True)
    m.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[wo])
    with np.load(tmp_path / "w-1.npz") as data:
        assert not [k for k in data.files if k.startswith("opt_")]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="keep_last"):
            ModelCheckpoint("x.npz", keep_last=bad)


def test_initial_epoch_takes_that_epochs_order():
    """fit(initial_epoch=k) shuffles epoch k as a run from 0 does: with plain SGD (no
    state) on a model given the same weights, the epochs' losses match."""
    x, y = _data()
    a = _model().compile(optimizer=ga.optimizers.SGD(0.05), device="cpu")
    h = a.fit(x, y, epochs=3, batch_size=16, verbose=0, seed=4)
    b = _model().compile(optimizer=ga.optimizers.SGD(0.05), device="cpu")
    b.fit(x, y, epochs=2, batch_size=16, verbose=0, seed=4)
    h2 = b.fit(x, y, epochs=3, batch_size=16, verbose=0, seed=4, initial_epoch=2)
    assert h2.history["loss"] == h.history["loss"][2:]
