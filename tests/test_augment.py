"""Augmentation layers (issue 15 item 3): Rescaling and RandomFlip / RandomTranslation /
RandomZoom / RandomRotation, in C on both devices through one affine kernel.

Checked here, on the CPU and (emulated or real) GPU:
- ops.random_affine against the float64 NumPy port in tests/reference.py (the transform
  from the counter RNG's uniforms, then the sampling) for every transform, fill mode and
  interpolation, odd and non-square sizes, 1 and 3 channels; exact cases: flips are
  permutations, zero ranges the identity, integer shifts with 'nearest' exact;
- the CPU and CUDA give the same batch for the same seed;
- the layers: identity outside training (predict / evaluate see the raw input), the
  batch a training forward sees is the op's at the layer's stream and draw counter, new
  transforms each step, the same losses for the same seed, graph replays (CUDA) that
  match the uncaptured run bit for bit;
- Rescaling forward and backward between layers; the placement rule; bad arguments;
  save / load and get_config round trips.
"""
import io
import json

import numpy as np
import pytest

import gpuaccel as ga
import reference as R
from conftest import DEVICES, assert_close, to_numpy
from gpuaccel.layers import (BatchNormalization, Conv2D, Dense, Dropout, Flatten, RandomFlip, RandomRotation,
                             RandomTranslation, RandomZoom, Rescaling, Residual)

# the op's Keras-style ranges and the reference's (lo, hi) form of each case
TRANSFORMS = {
    "translation": (dict(height_translation=(-0.3, 0.25), width_translation=0.4),
                    dict(translate_h=(-0.3, 0.25), translate_w=(-0.4, 0.4))),
    "zoom": (dict(height_zoom=(-0.4, 0.5)), dict(zoom_h=(-0.4, 0.5))),
    "zoom_wh": (dict(height_zoom=0.3, width_zoom=(-0.5, 0.2)), dict(zoom_h=(-0.3, 0.3), zoom_w=(-0.5, 0.2))),
    "rotation": (dict(rotation=0.3), dict(rotate=(-0.3, 0.3))),
    "all": (dict(flip="horizontal_and_vertical", height_translation=0.2, width_translation=(-0.1, 0.3),
                 height_zoom=(-0.2, 0.3), rotation=(-0.1, 0.2)),
            dict(flip=3, translate_h=(-0.2, 0.2), translate_w=(-0.1, 0.3), zoom_h=(-0.2, 0.3), rotate=(-0.1, 0.2))),
}
FILLS = R.AUG_FILL_MODES
INTERPS = ("bilinear", "nearest")


def images(n=5, c=3, h=7, w=10, seed=0):
    return np.random.default_rng(seed).random((n, c, h, w), dtype=np.float32)


def affine(x, device, seed=11, draw=0, **kw):
    return to_numpy(ga.ops.random_affine(x, seed=seed, draw=draw, device=device, **kw))


@pytest.mark.parametrize("fill_mode", FILLS)
@pytest.mark.parametrize("interpolation", INTERPS)
@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_random_affine_matches_reference(device, name, fill_mode, interpolation):
    op_kw, ref_kw = TRANSFORMS[name]
    c = 1 if FILLS.index(fill_mode) % 2 else 3  # 1 and 3 channels, odd non-square images
    x = images(4, c, 7, 10, seed=len(name))
    y = affine(x, device, seed=7, draw=3, fill_mode=fill_mode, interpolation=interpolation, fill_value=0.6, **op_kw)
    ref, amb = R.augment_affine(x, R.rng_hash_int(7, 3), fill_mode, interpolation, 0.6, **ref_kw)
    assert y.shape == x.shape and y.dtype == np.float32
    keep = ~np.broadcast_to(amb[:, None], y.shape)
    assert amb.mean() < 0.05  # the ties ignored are rare
    assert_close(y[keep], ref[keep], absref=np.ones(keep.sum()), rtol=2e-5, what=f"{name}/{fill_mode}/{interpolation}")
    if fill_mode != "constant":  # points outside read pixels of the image: values stay in its range
        assert y.min() >= x.min() - 1e-6 and y.max() <= x.max() + 1e-6


@pytest.mark.parametrize("mode", ["horizontal", "vertical", "horizontal_and_vertical"])
def test_flip_is_an_exact_permutation(device, mode):
    x = images(24, 2, 5, 6)
    y = affine(x, device, seed=3, flip=mode, interpolation="bilinear")
    bits = ga.ops.FLIP_MODES[mode]
    seen = set()
    s = R.rng_hash_int(3, 0)
    for i in range(len(x)):
        fh = bool(bits & 1) and R.rng_uniform_int(s, 8 * i) < 0.5
        fv = bool(bits & 2) and R.rng_uniform_int(s, 8 * i + 1) < 0.5
        want = x[i][:, ::-1 if fv else 1, ::-1 if fh else 1]
        np.testing.assert_array_equal(y[i], want)
        seen.add((fh, fv))
    assert len(seen) == (4 if bits == 3 else 2)  # every outcome happens in 24 images


@pytest.mark.parametrize("fill_mode", FILLS)
@pytest.mark.parametrize("interpolation", INTERPS)
def test_zero_ranges_are_the_identity(device, fill_mode, interpolation):
    x = images(3, 3, 9, 4)
    y = affine(x, device, height_translation=0.0, width_translation=(0.0, 0.0), height_zoom=0.0, width_zoom=0.0,
               rotation=(0.0, 0.0), fill_mode=fill_mode, interpolation=interpolation)
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("shift", [(2, -3), (-1, 4), (0, 1)])
def test_integer_translation_with_nearest_is_an_exact_shift(device, shift):
    n, c, h, w = 3, 2, 7, 9
    dy, dx = shift
    x = images(n, c, h, w)
    y = affine(x, device, height_translation=(dy / h, dy / h), width_translation=(dx / w, dx / w),
               fill_mode="constant", fill_value=-1.0, interpolation="nearest")
    want = np.full_like(x, -1.0)
    ys, yd = slice(max(0, -dy), h - max(0, dy)), slice(max(0, dy), h - max(0, -dy))
    xs, xd = slice(max(0, -dx), w - max(0, dx)), slice(max(0, dx), w - max(0, -dx))
    want[:, :, yd, xd] = x[:, :, ys, xs]
    np.testing.assert_array_equal(y, want)


def test_fill_modes_on_a_row():
    """The four modes' definitions on a 1x4 row shifted by 2 (nearest: exact values)."""
    x = np.array([[[[1, 2, 3, 4]]]], np.float32)
    got = {m: affine(x, "cpu", width_translation=(0.5, 0.5), fill_mode=m, interpolation="nearest",
                     fill_value=9.0)[0, 0, 0].tolist() for m in FILLS}
    assert got == {"reflect": [2, 1, 1, 2], "wrap": [3, 4, 1, 2], "constant": [9, 9, 1, 2], "nearest": [1, 1, 1, 2]}


def test_cpu_and_cuda_give_the_same_batch(cuda_device):
    x = images(6, 3, 11, 8)
    kw = dict(TRANSFORMS["all"][0], fill_mode="reflect")
    for interpolation in INTERPS:
        a = affine(x, "cpu", seed=5, draw=2, interpolation=interpolation, **kw)
        b = affine(x, cuda_device, seed=5, draw=2, interpolation=interpolation, **kw)
        assert np.abs(a - b).max() <= 1e-6
    np.testing.assert_array_equal(to_numpy(ga.ops.rescale(x, 0.3, -0.2)),
                                  to_numpy(ga.ops.rescale(x, 0.3, -0.2, device=cuda_device)))


def test_rescale_op(device):
    x = images(2, 3, 4, 5)
    y = to_numpy(ga.ops.rescale(x, 1 / 255, 0.5, device=device))
    assert_close(y, x.astype(np.float64) / 255 + 0.5, rtol=1e-6)


# ---------------------------------------------------------------- layers


def aug_model(layers, device, input_shape=(3, 6, 5), classes=4, seed=3, spe=1):
    m = ga.Sequential(list(layers) + [Flatten(), Dense(classes)], input_shape=input_shape, seed=seed)
    return m.compile(optimizer=ga.optimizers.Adam(1e-2), device=device, steps_per_execution=spe)


def random_layers():
    return [RandomFlip(seed=1), RandomTranslation(0.2, (-0.1, 0.3), fill_mode="nearest", seed=2),
            RandomZoom(0.2, interpolation="nearest"), RandomRotation(0.1, fill_mode="constant", fill_value=0.5)]


def test_layers_are_the_identity_outside_training(device):
    x = images(7, 3, 6, 5)
    m = aug_model([Rescaling(2.0, -1.0)] + random_layers(), device)
    w, b = m.get_weights()
    ref = (2.0 * x.astype(np.float64) - 1.0).reshape(len(x), -1) @ w.T.astype(np.float64) + b
    assert_close(m.predict(x), ref, absref=np.abs(2.0 * x - 1.0).reshape(len(x), -1) @ np.abs(w.T) + np.abs(b))
    labels = np.arange(len(x)) % 4
    loss, _ = m.evaluate(x, labels)
    assert abs(loss - R.softmax_cross_entropy(ref, labels)[0]) < 1e-4


def identity_dense_model(layer, device, shape=(2, 5, 6), seed=9):
    """layer + Flatten + Dense(identity): a training forward's logits are the augmented batch."""
    m = aug_model([layer], device, shape, classes=int(np.prod(shape)), seed=seed)
    k = int(np.prod(shape))
    m.set_weights([np.eye(k, dtype=np.float32), np.zeros(k, np.float32)])
    return m


@pytest.mark.parametrize("kind", ["flip", "translation", "zoom", "rotation"])
def test_layer_forward_is_the_op_at_the_layer_stream(device, kind):
    layer, kw = {
        "flip": (RandomFlip("horizontal", seed=4), dict(flip="horizontal")),
        "translation": (RandomTranslation((-0.2, 0.4), 0.3, fill_mode="wrap", interpolation="nearest"),
                        dict(height_translation=(-0.2, 0.4), width_translation=0.3, fill_mode="wrap",
                             interpolation="nearest")),
        "zoom": (RandomZoom(0.3, (-0.2, 0.1), fill_mode="constant", fill_value=0.25, seed=2**70 + 5),
                 dict(height_zoom=0.3, width_zoom=(-0.2, 0.1), fill_mode="constant", fill_value=0.25)),
        "rotation": (RandomRotation(0.25, seed=8), dict(rotation=0.25)),
    }[kind]
    m = identity_dense_model(layer, device)
    stream = R.augment_layer_stream(m.seed, layer.seed, 0)
    x = images(4, 2, 5, 6)
    outs = []
    for draw in range(3):  # each training forward draws anew: counter 0, 1, 2
        got = m._net.forward(x, True).reshape(x.shape)
        want = affine(x, "cpu", seed=stream, draw=draw, **kw)
        assert np.abs(got - want).max() <= 1e-6
        outs.append(got)
    assert not np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[1], outs[2])
    np.testing.assert_array_equal(m._net.forward(x, False).reshape(x.shape), x)  # inference: the input


def fit_losses(device, seed=3, spe=1, epochs=2, layers=None):
    rng = np.random.default_rng(0)
    x, y = rng.random((48, 3, 6, 5), dtype=np.float32), rng.integers(0, 4, 48)
    m = aug_model(layers() if layers else [Rescaling(0.5)] + random_layers() + [Dropout(0.2)], device, seed=seed,
                  spe=spe)
    h = m.fit(x, y, epochs=epochs, batch_size=8, seed=1, verbose=0)
    return h.history["loss"], m.get_weights()


def test_training_is_reproducible_and_seed_dependent(device):
    a, wa = fit_losses(device)
    b, wb = fit_losses(device)
    assert a == b and all(np.array_equal(p, q) for p, q in zip(wa, wb))
    c, _ = fit_losses(device, seed=4)
    assert c != a


def test_training_matches_across_devices(cuda_device):
    a, wa = fit_losses("cpu", epochs=1)
    b, wb = fit_losses(cuda_device, epochs=1)
    assert_close(np.array(b), np.array(a), rtol=1e-4, what="losses", check_dtype=False)
    for p, q in zip(wb, wa):
        assert_close(p, q, absref=np.abs(q) + 1e-3, rtol=1e-3, what="weights")


def test_cuda_graph_replays_draw_new_transforms(cuda_device, monkeypatch):
    """compile(steps_per_execution=N) on CUDA records the calls and replays them: the replays
    draw new transforms (the draw counter lives on the device) and match the uncaptured
    run bit for bit."""
    runs = {}
    for graphs in ("1", "0"):
        monkeypatch.setenv("GPUACCEL_CUDA_GRAPHS", graphs)
        rng = np.random.default_rng(0)
        x, y = rng.random((8, 3, 6, 5), dtype=np.float32), rng.integers(0, 4, 8).astype(np.int32)
        m = aug_model(random_layers(), cuda_device, spe=2)
        m._net.set_data(0, x, y)
        losses = []
        for _ in range(4):  # the same batch each call: only the draws differ
            m._net.set_order(None)
            losses.append(m._net.train_steps(1, 8)[2])
        runs[graphs] = (losses, m.get_weights(), m._net.graph_count())
    assert runs["1"][0] == runs["0"][0]
    assert all(np.array_equal(p, q) for p, q in zip(runs["1"][1], runs["0"][1]))
    assert runs["1"][2] == 1 and len(set(runs["1"][0])) == 4
    # fit in calls of 3 steps, recorded and replayed, against one step a call, uncaptured
    monkeypatch.setenv("GPUACCEL_CUDA_GRAPHS", "1")
    _, wa = fit_losses(cuda_device, spe=3, epochs=3)
    monkeypatch.setenv("GPUACCEL_CUDA_GRAPHS", "0")
    _, wb = fit_losses(cuda_device, spe=1, epochs=3)
    assert all(np.array_equal(p, q) for p, q in zip(wa, wb))


def test_rescaling_between_layers_forward_and_backward(device):
    """Conv2D -> Rescaling -> Flatten -> Dense: forward against float64, the input and weight
    gradients against central differences of the float64 model."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 1, 4, 4)).astype(np.float32)
    m = ga.Sequential([Conv2D(2, 3), Rescaling(-1.5, 0.25), Flatten(), Dense(3)], input_shape=(1, 4, 4), seed=2)
    m.compile(optimizer=ga.optimizers.SGD(0.1), device=device)
    wc, bc, wd, bd = [a.astype(np.float64) for a in m.get_weights()]
    dout = rng.standard_normal((2, 3))

    def f(xx, wcc):
        h = R.conv2d(xx, wcc, bc) * -1.5 + 0.25
        return h.reshape(len(xx), -1) @ wd.T + bd

    out = m._net.forward(x, True)
    assert_close(out, f(x.astype(np.float64), wc), absref=np.abs(f(np.abs(x), np.abs(wc))) + 1.0)
    dx, grads = m._net.backward(dout.astype(np.float32))
    ndx, ndw = R.numerical_grads(lambda xx, wcc: float((f(xx, wcc) * dout).sum()), [x, wc])
    assert_close(dx, ndx, absref=np.abs(ndx) + 1e-2, rtol=1e-4, what="dx")
    assert_close(grads[:wc.size].reshape(wc.shape), ndw, absref=np.abs(ndw) + 1e-2, rtol=1e-4, what="dw")


@pytest.mark.parametrize("before", ["dense", "conv", "batchnorm", "residual"])
def test_random_layers_must_come_before_layers_with_weights(before):
    first = {"dense": lambda: [Rescaling(1.0), Flatten(), Dense(4, name="conv_w")],
             "conv": lambda: [Conv2D(2, 3, padding="same", name="conv_w")],
             "batchnorm": lambda: [BatchNormalization(name="conv_w")],
             "residual": lambda: [Residual([Rescaling(2.0)], name="conv_w")]}[before]()
    m = ga.Sequential(first + [RandomRotation(0.1, name="rot"), Flatten(), Dense(3)], input_shape=(2, 6, 6))
    with pytest.raises(ValueError, match=r"'rot' after 'conv_w'.*random augmentation must come before"):
        m.compile(optimizer=ga.optimizers.SGD(0.1))
    inside = ga.Sequential([Residual([RandomFlip(name="flip_in")]), Flatten(), Dense(3)], input_shape=(2, 6, 6))
    with pytest.raises(ValueError, match="flip_in"):
        inside.compile(optimizer=ga.optimizers.SGD(0.1))
    # after Rescaling and other weightless layers is fine
    ga.Sequential([Rescaling(0.5), RandomFlip(), RandomZoom(0.1), Conv2D(2, 3), Flatten(), Dense(3)],
                  input_shape=(2, 6, 6)).compile(optimizer=ga.optimizers.SGD(0.1))


@pytest.mark.parametrize("make, match", [
    (lambda: RandomTranslation(1.5, 0.1), "height_factor"),
    (lambda: RandomTranslation(0.1, (0.3, 0.2)), "width_factor"),
    (lambda: RandomTranslation(0.1, (0.1, 0.2, 0.3)), "width_factor"),
    (lambda: RandomZoom((-1.5, 0.2)), "height_factor"),
    (lambda: RandomZoom(0.2, "wide"), "width_factor"),
    (lambda: RandomRotation(float("nan")), "factor"),
    (lambda: RandomRotation(0.1, fill_mode="mirror"), "fill_mode"),
    (lambda: RandomRotation(0.1, interpolation="bicubic"), "interpolation"),
    (lambda: RandomRotation(0.1, fill_value=float("inf")), "fill_value"),
    (lambda: RandomFlip("diagonal"), "mode"),
    (lambda: RandomFlip(seed="a"), "seed"),
    (lambda: RandomFlip(seed=True), "seed"),
    (lambda: Rescaling(float("nan")), "finite"),
    (lambda: Rescaling("x"), "numbers"),
])
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_op_arguments():
    x = images(2, 1, 3, 3)
    with pytest.raises(ValueError):
        ga.ops.random_affine(x[0])  # not (N, C, H, W)
    with pytest.raises(ValueError, match="rotation"):
        ga.ops.random_affine(x, rotation=(0.2, 0.1))
    with pytest.raises(ValueError, match="fill_mode"):
        ga.ops.random_affine(x, fill_mode="mirror")
    with pytest.raises(TypeError):
        ga.ops.random_affine(x.astype(np.float64))
    with pytest.raises(ValueError, match="finite"):
        ga.ops.rescale(x, float("inf"))


def test_save_load_and_config_round_trip(tmp_path):
    layers = [Rescaling(1 / 255, 0.1)] + random_layers() + [RandomZoom((-0.1, 0.2), 0.1, seed=7)]
    m = aug_model(layers, "cpu")
    for layer in m.layers:
        clone = type(layer).from_config(json.loads(json.dumps(layer.get_config())))
        assert json.dumps(clone.get_config()) == json.dumps(layer.get_config())
        assert clone._spec() == layer._spec()
    buf = io.StringIO()
    m.summary(print_fn=lambda s: buf.write(s))
    for name in ("Rescaling", "RandomFlip", "RandomTranslation", "RandomZoom", "RandomRotation"):
        assert name in buf.getvalue()
    path = tmp_path / "aug.npz"
    m.save(path)
    n = ga.models.load(path)
    assert [type(l) for l in n.layers] == [type(l) for l in m.layers]
    x = images(5, 3, 6, 5)
    np.testing.assert_array_equal(n.predict(x), m.predict(x))
    y = np.arange(5) % 4
    # the same seeds: the loaded model draws the same transforms in training
    ha = m.fit(x, y, epochs=2, batch_size=2, seed=0, verbose=0).history["loss"]
    hb = n.fit(x, y, epochs=2, batch_size=2, seed=0, verbose=0).history["loss"]
    assert ha == hb
