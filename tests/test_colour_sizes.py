"""Colour and size everywhere (issue 15): 3-channel images of sizes no test chose for
convenience through every layer kind on both devices, the ResNet family at 32x32 and
larger with its stride-2 stem, the shipped grey backbone on colour images, and the
reference CNN (bench --data) for other image shapes and class counts."""
import numpy as np
import pytest

import gpuaccel as ga
from gpuaccel import applications as A
from gpuaccel.layers import (AveragePooling2D, BatchNormalization, Conv2D, Dense, Dropout, Flatten,
                             GlobalAveragePooling2D, GlobalMaxPooling2D, MaxPool2D, ReLU, Residual)

SHAPE = (3, 37, 45)  # colour, odd, not square


def toy(n, shape=SHAPE, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, *shape), dtype=np.float32), rng.integers(0, classes, n).astype(np.int32)


def every_layer(classes=4):
    """One model holding every layer kind: convolutions of both strides and paddings, both
    pools, batch norm, a residual block with a projection, dropout, both global pools."""
    return [Conv2D(8, 3, padding="same", activation="relu"), BatchNormalization(),
            MaxPool2D(2), Conv2D(8, 5, strides=2, padding=1), ReLU(), AveragePooling2D(2),
            Residual([Conv2D(12, 3, padding="same"), BatchNormalization(), ReLU(), Conv2D(12, 3, padding="same")],
                     activation="relu"),
            Dropout(0.25), GlobalAveragePooling2D(), Dense(classes)]


def test_every_layer_takes_colour_at_odd_sizes(device):
    """Six training steps through every layer kind: losses finite and falling on the same
    batch, evaluate and predict agree, and the CUDA run follows the CPU's step for step."""
    x, y = toy(24)
    runs = {}
    for dev in ("cpu", device) if device != "cpu" else ("cpu",):
        m = ga.Sequential(every_layer(), input_shape=SHAPE, seed=3)
        m.compile(optimizer=ga.optimizers.Adam(3e-3), device=dev)
        losses = [m._net.train_step(x, y)[0] for _ in range(6)]
        assert np.isfinite(losses).all() and losses[-1] < losses[0], losses
        logits = m.predict(x)
        assert logits.shape == (24, 4)
        loss, _ = m.evaluate(x, y)
        assert np.isfinite(loss)
        runs[dev] = np.array(losses), logits
    if device != "cpu":
        np.testing.assert_allclose(runs[device][0], runs["cpu"][0], rtol=1e-4)
        np.testing.assert_allclose(runs[device][1], runs["cpu"][1], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("shape", [(3, 32, 32), (3, 64, 64), (3, 50, 70)])
def test_resnet_family_on_colour_images(shape):
    """ResNet-8 trains on colour images of 32x32 and larger; the stem has stride 1 up to
    48 pixels, 2 above (the stages see ~32x32), and the head sees 4 width features."""
    m = A.resnet8(width=4, input_shape=shape, classes=3, seed=0, bn_momentum=0.9)
    m.compile(optimizer=ga.optimizers.Adam(3e-3))
    stem = m.layers[0]
    assert stem.strides == ((1, 1) if min(shape[1:]) <= 48 else (2, 2))
    x, y = toy(16, shape, classes=3)
    losses = [m._net.train_step(x, y)[0] for _ in range(5)]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    feats = A.resnet8(width=4, input_shape=shape, include_top=False).predict(x[:2])
    assert feats.shape == (2, 16)


def test_resnet_stem_strides_is_a_choice():
    assert A.resnet8(width=4, input_shape=(3, 64, 64), stem_strides=1).layers[0].strides == (1, 1)
    with pytest.raises(ValueError, match="stem_strides"):
        A.resnet8(width=4, input_shape=(3, 64, 64), stem_strides=3)
    with pytest.raises(ValueError, match="input_shape"):
        A.resnet8(width=4, input_shape=(3, 4, 64))


def test_grey_pretrained_backbone_serves_colour_images():
    """The shipped backbone (trained on grey 28x28) on RGB images: its stem kernel spread
    evenly over the channels, so a grey image stored as RGB gives the grey features."""
    grey = A.resnet8(include_top=False, weights="fmnist-0to4")
    colour = A.resnet8(include_top=False, weights="fmnist-0to4", input_shape=(3, 28, 28))
    kg, kc = grey.get_weights()[0], colour.get_weights()[0]
    assert kg.shape[1] == 1 and kc.shape[1] == 3
    np.testing.assert_allclose(kc, np.repeat(kg, 3, axis=1) / 3, rtol=1e-7)
    for a, b in zip(grey.get_weights()[1:], colour.get_weights()[1:]):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    np.testing.assert_allclose(colour.predict(np.repeat(x, 3, axis=1)), grey.predict(x), rtol=1e-4, atol=1e-5)
    big = A.resnet8(include_top=False, weights="fmnist-0to4", input_shape=(3, 64, 64))
    assert big.predict(np.zeros((1, 3, 64, 64), np.float32)).shape == (1, 32)


def test_reference_cnn_for_other_shapes_and_classes():
    m = ga.models.reference_cnn(seed=0, input_shape=(3, 64, 64), classes=5)
    m.compile(optimizer=ga.optimizers.Adam(1e-3))
    x, y = toy(8, (3, 64, 64), classes=5)
    assert m.predict(x).shape == (8, 5)
    assert m.get_weights()[0].shape == (32, 3, 3, 3)
    assert m.get_weights()[4].shape == (128, 64 * 16 * 16)
    assert np.isfinite(m._net.train_step(x, y)[0])


def test_fit_takes_uint8_images(tmp_path):
    """uint8 images (what the folder loader returns, often a memory map of its cache) go
    into fit / evaluate / predict as their values, the same run as their float32 copy; a
    Rescaling layer or a division by 255 puts them into [0, 1]."""
    x, y = toy(16, (3, 12, 12))
    x8 = (x * 255).astype(np.uint8)
    mapped = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.uint8, shape=x8.shape)
    mapped[:] = x8
    mapped.flush()
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    runs = []
    for images in (x8.astype(np.float32), x8, mapped):
        m = ga.Sequential([Flatten(), Dense(4)], input_shape=(3, 12, 12), seed=0)
        m.compile(optimizer=ga.optimizers.SGD(1e-4))
        h = m.fit(images, y, epochs=1, batch_size=8, verbose=0, seed=0)
        runs.append((h.history["loss"], m.predict(images), m.evaluate(images, y)))
    for other in runs[1:]:
        assert other[0] == runs[0][0]
        np.testing.assert_array_equal(other[1], runs[0][1])
        assert other[2] == runs[0][2]
