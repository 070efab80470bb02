"""Transfer learning: the ResNet family, shipped pretrained weights, new heads on a
backbone, freezing (layer.trainable, model.trainable), save/load of frozen models, and
weights from Keras / PyTorch layouts."""
import os

import numpy as np
import pytest

import gpuaccel as ga
from gpuaccel import applications as A
from gpuaccel.layers import (BatchNormalization, Conv2D, Dense, Flatten, GlobalAveragePooling2D, ReLU,
                             Residual)

from conftest import assert_close, assert_matches_cpu, f32


def toy(n=48, classes=3, shape=(1, 12, 12), seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n).astype(np.int32)
    x = rng.random((n,) + shape).astype(np.float32) * 0.5
    x[:, :, : shape[1] // 2] += y[:, None, None, None] * 0.3  # learnable signal
    return x, y


def flags(model):
    return [tr for _, tr, _ in model._entries()]


# ---- the ResNet family -----------------------------------------------------------------

@pytest.mark.parametrize("depth, fn", [(8, A.resnet8), (14, A.resnet14), (20, A.resnet20)])
def test_resnet_family_shapes(depth, fn):
    m = fn(width=4, classes=7)
    x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    assert m.predict(x).shape == (3, 7)
    blocks = [l for l in m.layers if isinstance(l, Residual)]
    assert len(blocks) == 3 * (depth - 2) // 6
    base = fn(width=4, include_top=False)
    assert isinstance(base.layers[-1], GlobalAveragePooling2D)
    assert base.predict(x).shape == (3, 16)  # 4 * width features
    c = A.resnet(depth, width=2, input_shape=(3, 32, 32), classes=4)
    assert c.predict(np.zeros((2, 3, 32, 32), np.float32)).shape == (2, 4)


def test_resnet_bad_args():
    with pytest.raises(ValueError):
        A.resnet(9)
    with pytest.raises(ValueError):
        A.resnet(8, width=0)
    with pytest.raises(ValueError, match="fmnist-0to4"):
        A.resnet(20, width=16, weights="fmnist-0to4")


def test_resnet_trains(device):
    x, y = toy(64, shape=(1, 16, 16))
    m = A.resnet8(width=4, input_shape=(1, 16, 16), classes=3, seed=1)
    m.compile(optimizer=ga.optimizers.Adam(3e-3), device=device)
    h = m.fit(x, y, epochs=8, batch_size=16, verbose=0, seed=0)
    assert h.history["loss"][-1] < h.history["loss"][0]
    assert h.history["accuracy"][-1] > 0.6


def test_resnet_train_step_matches_cpu(cuda_device):
    x, y = toy(32, shape=(1, 16, 16))
    out = []
    for dev in ("cpu", cuda_device):
        m = A.resnet8(width=4, input_shape=(1, 16, 16), classes=3, seed=3)
        m.compile(optimizer=ga.optimizers.SGD(0.05), device=dev)
        losses = [m._net.train_step(x, y)[0] for _ in range(3)]
        out.append((losses, m.get_weights(), m.predict(x)))
    (lc, wc, pc), (lg, wg, pg) = out
    np.testing.assert_allclose(lg, lc, rtol=1e-4)
    for a, b in zip(wg, wc):
        assert_matches_cpu(a, b, absref=np.abs(b) + np.abs(b).max(), rtol=1e-3)
    assert_matches_cpu(pg, pc, absref=np.abs(pc) + np.abs(pc).max(), rtol=1e-3)


# ---- heads on backbones ---------------------------------------------------------------------

def backbone(seed=1):
    b = A.resnet8(width=4, input_shape=(1, 12, 12), include_top=False, seed=seed)
    b.build()
    return b


def test_with_head_and_keras_idioms_share_weights():
    base = backbone()
    bw = base.get_weights()
    for model in (A.with_head(base, Dense(3)), ga.Sequential([base, Dense(3)]),
                  ga.Sequential(base.layers + [Dense(3)], input_shape=(1, 12, 12))):
        model.build()
        w = model.get_weights()
        assert len(w) == len(bw) + 2
        for a, b in zip(w, bw):
            np.testing.assert_array_equal(a, b)
        assert model.input_shape == (1, 12, 12)


def test_frozen_backbone_does_not_change(device):
    base = backbone()
    base.trainable = False
    assert base.trainable is False
    model = A.with_head(base, Dense(3))
    model.compile(optimizer=ga.optimizers.Adam(1e-2), device=device)
    before = model.get_weights()
    x, y = toy(48)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    after = model.get_weights()
    nb = len(base.get_weights())
    for a, b in zip(before[:nb], after[:nb]):  # weights and batch-norm moving statistics
        np.testing.assert_array_equal(a, b)
    for a, b in zip(before[nb:], after[nb:]):  # the head trains
        assert not np.array_equal(a, b)
    head = 3 * 16 + 3
    assert model._net.ntrainable == head
    assert model._net.trainable_ranges() == [(model._net.nparams - head, head)]


def test_partial_unfreeze_and_resync_after_build(device):
    base = backbone()
    base.trainable = False
    model = A.with_head(base, Dense(3))
    model.compile(optimizer=ga.optimizers.Adam(1e-2), device=device)
    x, y = toy(32)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    # unfreeze the last residual block after the model was built: the next fit passes it on
    last_block = [l for l in model.layers if isinstance(l, Residual)][-1]
    last_block.trainable = True
    k = model.layers.index(last_block)
    before = model.get_weights()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    after = model.get_weights()
    for (idx, blk, _, _, _), a, b in zip(model._slots(), before, after):
        if idx < k:
            np.testing.assert_array_equal(a, b)
        elif idx == k:
            assert not np.array_equal(a, b)


def test_frozen_inner_layer_of_trainable_block(device):
    inner = Conv2D(2, 3, padding="same")
    model = ga.Sequential([Conv2D(2, 3, padding="same"), Residual([inner, BatchNormalization()]),
                           GlobalAveragePooling2D(), Dense(3)], input_shape=(1, 8, 8), seed=0)
    inner.trainable = False
    model.compile(optimizer=ga.optimizers.SGD(0.1), device=device)
    w0 = model.get_weights()
    x, y = toy(16, shape=(1, 8, 8))
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    w1 = model.get_weights()
    changed = [not np.array_equal(a, b) for a, b in zip(w0, w1)]
    # conv W,b | inner conv W,b (frozen) | BN gamma, beta, mean, var | dense W,b
    assert changed == [True, True, False, False, True, True, True, True, True, True]


def test_model_trainable_and_summary(capsys):
    base = backbone()
    total = base._net.nparams
    base.trainable = False
    assert not any(flags(base))
    base.summary()
    out = capsys.readouterr().out
    assert "Trainable params: 0" in out
    assert f"Non-trainable params: {total + base._net.nstate:,}" in out
    assert "Residual" in out and "projection" in out
    base.trainable = True
    assert all(flags(base)) and base.trainable
    base.summary()
    out = capsys.readouterr().out
    assert f"Trainable params: {total:,}" in out
    assert f"Non-trainable params: {base._net.nstate:,}" in out  # the moving statistics
    assert base.count_params() == sum(w.size for w in base.get_weights())


# ---- files ---------------------------------------------------------------------------------

def test_save_load_keeps_trainable_flags_and_predictions(tmp_path, device):
    base = backbone()
    base.trainable = False
    model = A.with_head(base, [Dense(8, activation="relu"), Dense(3)])
    blocks = [l for l in model.layers if isinstance(l, Residual)]
    blocks[-1].trainable = True
    blocks[-1].layers[0].trainable = False  # frozen inside a trainable block
    model.compile(optimizer=ga.optimizers.Adam(1e-2), device=device)
    x, y = toy(32)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    path = tmp_path / "frozen.npz"
    model.save(path)
    loaded = ga.models.load(path, device=device)
    assert flags(loaded) == flags(model)
    assert [l.trainable for l in loaded.layers] == [l.trainable for l in model.layers]
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # the loaded model keeps training with the same frozen set
    w0 = loaded.get_weights()
    loaded.fit(x, y, epochs=1, batch_size=16, verbose=0)
    changed = {idx for (idx, *_), a, b in zip(loaded._slots(), w0, loaded.get_weights()) if not np.array_equal(a, b)}
    k = loaded.layers.index([l for l in loaded.layers if isinstance(l, Residual)][-1])
    assert min(changed) == k and len(loaded.layers) - 1 in changed


def test_load_weights_from_a_path(tmp_path):
    x, y = toy(32, shape=(1, 28, 28))
    full = A.resnet8(width=4, classes=3, seed=5)
    full.compile(optimizer="adam")
    full.fit(x, y, epochs=1, batch_size=16, verbose=0)
    path = tmp_path / "full.npz"
    full.save(path)
    base = A.resnet8(width=4, include_top=False, weights=str(path))
    nb = len(base.get_weights())
    for a, b in zip(base.get_weights(), full.get_weights()[:nb]):
        np.testing.assert_array_equal(a, b)
    same = A.resnet8(width=4, classes=3, weights=str(path))
    np.testing.assert_array_equal(same.predict(x), full.predict(x))
    with pytest.raises(ValueError):
        A.resnet8(width=8, include_top=False, weights=str(path))  # other shapes


def test_shipped_pretrained_backbone():
    path = os.path.join(A.WEIGHTS_DIR, A.PRETRAINED["fmnist-0to4"][(8, 8)])
    assert os.path.getsize(path) < 1_000_000
    card = open(os.path.splitext(path)[0] + ".md").read()
    for word in ("python -m gpuaccel.pretrain", "Fashion-MNIST", "epochs", "test accuracy"):
        assert word in card
    base = A.resnet8(include_top=False, weights="fmnist-0to4")
    feats = base.predict(np.zeros((2, 1, 28, 28), np.float32))
    assert feats.shape == (2, 32) and np.isfinite(feats).all()
    try:
        (_, _), (xt, yt) = ga.datasets.fashion_mnist.load_data()
    except Exception as e:  # pragma: no cover - the data is installed by `make test`
        pytest.skip(f"Fashion-MNIST not available: {e}")
    keep = yt < 5
    xt, yt = (xt[keep][:1000] / 255.0).astype(np.float32)[:, None], yt[keep][:1000].astype(np.int32)
    full = A.resnet8(include_top=True, classes=5, weights="fmnist-0to4")
    _, acc = full.evaluate(xt, yt)
    assert acc > 0.8


# ---- weights from other frameworks -------------------------------------------------------------

def test_set_weights_from_keras_layout(rng):
    """Keras: conv kernel (kh, kw, in, out), dense kernel (in, out), NHWC activations."""
    model = ga.Sequential([Conv2D(4, 3, padding="same", activation="relu"), BatchNormalization(),
                           GlobalAveragePooling2D(), Dense(3)], input_shape=(2, 6, 5))
    k_conv, b_conv = rng.normal(size=(3, 3, 2, 4)), rng.normal(size=4)
    gamma, beta, mean, var = rng.normal(size=4), rng.normal(size=4), rng.normal(size=4), rng.uniform(0.5, 2, 4)
    k_dense, b_dense = rng.normal(size=(4, 3)), rng.normal(size=3)
    model.set_weights([f32(k_conv.transpose(3, 2, 0, 1)), f32(b_conv), f32(gamma), f32(beta), f32(mean),
                       f32(var), f32(k_dense.T), f32(b_dense)])
    x_nhwc = rng.random((5, 6, 5, 2))
    # the Keras computation, in NHWC with its own layouts
    xp = np.pad(x_nhwc, ((0, 0), (1, 1), (1, 1), (0, 0)))
    y = np.zeros((5, 6, 5, 4))
    for di in range(3):
        for dj in range(3):
            y += np.einsum("nhwc,co->nhwo", xp[:, di:di + 6, dj:dj + 5], k_conv[di, dj])
    y = np.maximum(y + b_conv, 0)
    y = gamma * (y - mean) / np.sqrt(var + 1e-3) + beta
    ref = y.mean(axis=(1, 2)) @ k_dense + b_dense
    out = model.predict(f32(x_nhwc.transpose(0, 3, 1, 2)))
    assert_close(out, ref, absref=np.abs(ref) + 1.0, rtol=1e-4)


def test_layers_keep_their_weights_when_their_model_is_dropped():
    """Sequential(base.layers + [head]) built after `base` went away (a helper function that
    returns the new model, compiled outside): the backbone's weights still come along."""
    def with_new_head():
        base = A.resnet8(include_top=False, weights="fmnist-0to4", input_shape=(3, 32, 32))
        base.trainable = False
        return ga.Sequential(base.layers + [Dense(4)], input_shape=(3, 32, 32), seed=0), base.get_weights()

    model, expected = with_new_head()
    import gc
    gc.collect()
    model.compile(optimizer="adam")
    for a, b in zip(model.get_weights(), expected):
        np.testing.assert_array_equal(a, b)
    assert model._net.ntrainable == 32 * 4 + 4
