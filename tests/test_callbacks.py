"""The Keras callbacks users reach for: CSVLogger, LearningRateScheduler, ReduceLROnPlateau,
TerminateOnNaN (Keras's argument names), and the in-place learning-rate change under them."""
import csv

import numpy as np
import pytest

import gpuaccel as ga
from gpuaccel.callbacks import CSVLogger, LearningRateScheduler, ReduceLROnPlateau, TerminateOnNaN
from gpuaccel.layers import Dense, Flatten

from test_models import small_model, toy_data


def _model(lr=1e-2, seed=0):
    return small_model(seed=seed).compile(optimizer=ga.optimizers.Adam(lr), device="cpu")


def test_constant_schedule_is_the_plain_run():
    """Setting the same learning rate before every epoch changes nothing, bit for bit:
    the change is in place (Adam's moments and step count are kept, not reset)."""
    x, y = toy_data()
    plain, scheduled = _model(), _model()
    h1 = plain.fit(x, y, epochs=3, batch_size=32, verbose=0, seed=1)
    h2 = scheduled.fit(x, y, epochs=3, batch_size=32, verbose=0, seed=1,
                       callbacks=[LearningRateScheduler(lambda epoch, lr: lr)])
    assert h1.history["loss"] == h2.history["loss"]
    for a, b in zip(plain.get_weights(), scheduled.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_schedule_reaches_the_engine():
    """A learning rate of 0 from epoch 1 on freezes the weights; the schedule sees the
    epoch and the current rate, and the optimizer keeps the last one (it is saved)."""
    x, y = toy_data()
    seen = []

    def schedule(epoch, lr):
        seen.append((epoch, lr))
        return 1e-2 if epoch == 0 else 0.0

    m = _model()
    weights = []

    class Grab(ga.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            weights.append(self.model.get_weights())

    m.fit(x, y, epochs=3, batch_size=32, verbose=0, callbacks=[LearningRateScheduler(schedule), Grab()])
    assert seen == [(0, 1e-2), (1, 1e-2), (2, 0.0)]
    assert m.optimizer.learning_rate == 0.0
    assert any(not np.array_equal(a, b) for a, b in zip(_model().get_weights(), weights[0]))
    for a, b in zip(weights[0], weights[2]):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="finite float >= 0"):
        m.fit(x, y, epochs=1, verbose=0, callbacks=[LearningRateScheduler(lambda e, lr: float("nan"))])
    with pytest.raises(TypeError):
        LearningRateScheduler(0.1)


class _FakeOptimizer:
    learning_rate = 1.0


class _FakeModel:
    def __init__(self):
        self.optimizer = _FakeOptimizer()
        self.rates = []

    def _set_learning_rate(self, lr):
        self.optimizer.learning_rate = lr
        self.rates.append(lr)


def test_reduce_on_plateau_patience_cooldown_and_floor():
    cb = ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2, cooldown=1, min_lr=0.3, min_delta=0.0)
    cb.model = _FakeModel()
    cb.on_train_begin()
    for epoch, v in enumerate([1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]):
        cb.on_epoch_end(epoch, {"val_loss": v})
    # improvements at epochs 0 and 1; reductions after 2 flat epochs (epoch 3), then a
    # cooldown epoch and 2 more (epoch 6: 0.25 -> floored at 0.3), then no lower
    assert cb.model.rates == [0.5, 0.3]
    acc = ReduceLROnPlateau(monitor="val_accuracy", factor=0.1, patience=0)
    acc.model = _FakeModel()
    acc.on_train_begin()
    acc.on_epoch_end(0, {"val_accuracy": 0.5})
    acc.on_epoch_end(1, {"val_accuracy": 0.6})  # higher is better for accuracy
    assert acc.model.rates == []
    acc.on_epoch_end(2, {"val_accuracy": 0.6})
    assert acc.model.rates == [pytest.approx(0.1)]
    with pytest.raises(ValueError):
        ReduceLROnPlateau(factor=1.0)


def test_reduce_on_plateau_in_fit():
    x, y = toy_data()
    m = _model(lr=1e-2)
    m.fit(x, y, epochs=3, batch_size=32, verbose=0, validation_data=(x, y),
          callbacks=[ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=0, min_delta=10.0)])
    assert m.optimizer.learning_rate == pytest.approx(1e-2 * 0.5 ** 2)  # never improves by 10: halved twice


def test_csv_logger_writes_and_appends(tmp_path):
    x, y = toy_data()
    path = tmp_path / "log.csv"
    m = _model()
    m.fit(x, y, epochs=2, batch_size=32, verbose=0, validation_data=(x, y), callbacks=[CSVLogger(path)])
    rows = list(csv.reader(open(path)))
    assert rows[0][0] == "epoch" and {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(rows[0])
    assert [r[0] for r in rows[1:]] == ["0", "1"]
    loss_col = rows[0].index("loss")
    np.testing.assert_allclose([float(r[loss_col]) for r in rows[1:]], m.history.history["loss"])
    m.fit(x, y, epochs=1, batch_size=32, verbose=0, validation_data=(x, y),
          callbacks=[CSVLogger(path, append=True)])
    rows2 = list(csv.reader(open(path)))
    assert rows2[:3] == rows and len(rows2) == 4 and rows2[0] == rows[0]  # one header
    m.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[CSVLogger(path, separator=";")])
    text = open(path).read().splitlines()
    assert text[0].startswith("epoch;") and len(text) == 2  # overwritten


def test_terminate_on_nan(capsys):
    """Without the callback a NaN loss raises; with it, training stops at that batch."""
    x = np.full((64, 1, 4, 4), 3e38, np.float32)  # finite inputs whose logits overflow
    y = np.zeros(64, np.int64)

    def model():
        m = ga.Sequential([Flatten(), Dense(4), Dense(3)], input_shape=(1, 4, 4), seed=0)
        return m.compile(optimizer=ga.optimizers.SGD(1.0), device="cpu")

    with pytest.raises(FloatingPointError):
        model().fit(x, y, epochs=2, batch_size=16, verbose=0)
    m = model()
    h = m.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[TerminateOnNaN()])
    assert m.stop_training and h.history.get("loss", []) == []
    assert "invalid loss" in capsys.readouterr().out
