"""Data on the device, many steps per call, recorded graphs (issue 14, items 1-3).

Checked here, on the CPU and (emulated or real) GPU:
- fit over data bound on the device (batches gathered there by a kernel from the
  epoch's order) gives the same weights, bit for bit, as the single-step loop of
  train_step over host batches, and as the chunked host path (device_data=False);
- compile(steps_per_execution=N) gives the same weights for every N, and the
  callbacks see every N-th batch, as in Keras;
- fit / evaluate / predict take Tensors on the model's device;
- on a GPU the repeated call is recorded as a graph and replayed: bit-identical to
  GPUACCEL_CUDA_GRAPHS=0, new dropout masks and Adam steps in every replay, and the
  recording is dropped when a buffer it points at moves or a number it holds
  (learning rate) changes;
- the emulator refuses what a capture must not contain.
"""
import numpy as np
import pytest

import gpuaccel as ga
from gpuaccel import models
from gpuaccel.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D


def model(device="cpu", seed=0, spe=1, lr=1e-2):
    m = ga.Sequential([Conv2D(4, 3, padding="same", activation="relu"), MaxPool2D(2), Dropout(0.25),
                       Flatten(), Dense(16, activation="relu"), Dropout(0.1), Dense(5)],
                      input_shape=(2, 12, 12), seed=seed)
    return m.compile(optimizer=ga.optimizers.Adam(lr), device=device, steps_per_execution=spe)


def data(n=100, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 2, 12, 12), dtype=np.float32), rng.integers(0, 5, n)


def same_weights(a, b):
    return len(a) == len(b) and all(np.array_equal(p, q) for p, q in zip(a, b))


def step_loop(device, x, y, epochs, batch, seed):
    """The reference: fit's batches one train_step call each, from the host."""
    m = model(device)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            m._net.train_step(np.ascontiguousarray(x[idx]), y[idx].astype(np.int32))
    return m.get_weights()


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_fit_on_device_data_matches_the_step_loop(device, request):
    if device == "cuda":
        request.getfixturevalue("cuda_device")
    x, y = data()
    ref = step_loop(device, x, y, 2, 16, 3)
    for spe, device_data in [(1, "auto"), (1, False), (3, True), (7, "auto"), (50, False)]:
        m = model(device, spe=spe)
        m.fit(x, y, epochs=2, batch_size=16, seed=3, verbose=0, device_data=device_data)
        assert same_weights(m.get_weights(), ref), (spe, device_data)
        assert m._net.steps == 2 * 7


def test_steps_per_execution_callbacks_see_every_nth_batch():
    x, y = data()
    seen = []

    class Spy(ga.callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            seen.append((batch, logs["loss"]))

    m = model(spe=3)
    h = m.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[Spy()])
    assert [b for b, _ in seen] == [2, 5, 6]  # 7 steps: calls of 3, 3, 1
    assert seen[-1][1] == pytest.approx(h.history["loss"][0])
    assert h.history["step_time_ms_p50"][0] > 0
    one = model(spe=1).fit(x, y, epochs=1, batch_size=16, verbose=0).history["loss"][0]
    assert h.history["loss"][0] == pytest.approx(one, rel=1e-6)


def test_steps_per_execution_is_checked():
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError, match="steps_per_execution"):
            model().compile(steps_per_execution=bad)
    with pytest.raises(ValueError, match="device_data"):
        model().fit(*data(), device_data="yes", verbose=0)


def test_evaluate_and_predict_in_one_call_match_batches():
    x, y = data(70)
    m = model()
    m.fit(x, y, epochs=1, batch_size=16, verbose=0)
    logits = m.predict(x, batch_size=32)
    per_batch = np.concatenate([m._net.predict(x[i:i + 32]) for i in range(0, 70, 32)])
    assert np.array_equal(logits, per_batch)
    loss, acc = m.evaluate(x, y, batch_size=32)
    sums = [m._net.evaluate(x[i:i + 32], y[i:i + 32].astype(np.int32)) for i in range(0, 70, 32)]
    assert loss == pytest.approx(sum(s for s, _ in sums) / 70, rel=1e-6)
    assert acc == sum(c for _, c in sums) / 70


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_tensors_on_the_device_train_evaluate_predict(device, request):
    if device == "cuda":
        device = request.getfixturevalue("cuda_device")
    x, y = data()
    a, b = model(device), model(device)
    a.fit(x, y, epochs=2, batch_size=16, seed=1, verbose=0)
    xt = ga.tensor(x, device)
    b.fit(xt, y, epochs=2, batch_size=16, seed=1, verbose=0, validation_data=(xt, y))
    assert same_weights(a.get_weights(), b.get_weights())
    assert np.array_equal(a.predict(x), b.predict(xt))
    assert a.evaluate(x, y) == b.evaluate(xt, y)
    assert b.history.history["val_loss"][-1] == pytest.approx(b.evaluate(xt, y)[0], rel=1e-6)
    with pytest.raises(ValueError, match="shape"):
        b.fit(ga.tensor(x[:, :1], device), y, verbose=0)
    if device != "cpu":
        with pytest.raises(ValueError, match="Tensor on cpu"):
            b.fit(ga.tensor(x, "cpu"), y, verbose=0)


def test_bound_data_and_order_are_checked():
    x, y = data(20)
    net = model()._net
    with pytest.raises(ValueError, match="no labelled training data"):
        net.train_steps(1, 4)
    net.set_data(0, x, y.astype(np.int32))
    with pytest.raises(ValueError, match="one entry per training sample"):
        net.set_order(np.arange(19))
    with pytest.raises(ValueError, match="outside"):
        net.set_order(np.arange(20) + 1)
    with pytest.raises(ValueError, match="outside"):
        net.set_data(0, x, np.full(20, 9, np.int32))
    with pytest.raises(ValueError, match="steps and batch"):
        net.train_steps(0, 4)
    net.set_order(np.arange(20)[::-1].copy())
    assert net.train_steps(10, 8)[:2] == (3, 20)  # 8 + 8 + 4, none past the end
    assert net.train_steps(10, 8)[:2] == (0, 0)   # the epoch is over
    net.clear_data(0)
    with pytest.raises(ValueError, match="no labelled training data"):
        net.train_steps(1, 4)


def test_the_caller_may_drop_its_arrays_after_fit():
    x, y = data()
    m = model()
    m.fit(x, y, epochs=1, batch_size=16, verbose=0, validation_data=(x, y))
    del x
    import gc

    gc.collect()
    assert np.isfinite(m.predict(data()[0])).all()


# ----------------------------------------------------------------------------
# graphs (CUDA: emulated in CI, real where a GPU is)
# ----------------------------------------------------------------------------


class GraphCount(ga.callbacks.Callback):
    """The recordings the net holds at the end of each epoch (fit drops them at its end,
    with the data they point at)."""

    def __init__(self):
        self.counts = []

    def on_epoch_end(self, epoch, logs=None):
        self.counts.append(self.model._net.graph_count())


def graph_fit(device, monkeypatch, graphs, spe=4, epochs=3, **kw):
    monkeypatch.setenv("GPUACCEL_CUDA_GRAPHS", "1" if graphs else "0")
    x, y = data()
    m = model(device, spe=spe)
    counter = GraphCount()
    h = m.fit(x, y, epochs=epochs, batch_size=16, seed=2, verbose=0, callbacks=[counter], **kw)
    m.graph_counts = counter.counts
    return m, h.history


def test_cuda_graph_replay_is_bit_identical(cuda_device, monkeypatch):
    a, ha = graph_fit(cuda_device, monkeypatch, True)
    b, hb = graph_fit(cuda_device, monkeypatch, False)
    assert same_weights(a.get_weights(), b.get_weights())
    assert ha["loss"] == hb["loss"] and ha["accuracy"] == hb["accuracy"]
    # 7 steps an epoch in calls of 4 steps, then 3: 3 = 2 full + 1 short, so the keys
    # (4, 16), (2, 16), (1, 4); recorded in epoch 2, replayed in epoch 3
    assert a.graph_counts == [0, 3, 3]
    assert b.graph_counts == [0, 0, 0]
    assert a._net.graph_count() == 0  # dropped with the data at the end of fit
    assert a._net.steps == 21


def test_cuda_graph_replays_draw_new_masks_and_steps(cuda_device, monkeypatch):
    """Replays are not copies of the recorded call: the same batch trained on by a
    replay moves the weights differently each time (Adam's t, new dropout masks), as
    it does without graphs."""
    monkeypatch.setenv("GPUACCEL_CUDA_GRAPHS", "1")
    x, y = data(16)
    runs = {}
    for graphs in ("1", "0"):
        monkeypatch.setenv("GPUACCEL_CUDA_GRAPHS", graphs)
        m = model(cuda_device)
        m._net.set_data(0, x, y.astype(np.int32))
        losses = []
        for _ in range(5):
            m._net.set_order(None)
            losses.append(m._net.train_steps(1, 16)[2])
        runs[graphs] = (losses, m.get_weights(), m._net.graph_count())
    assert runs["1"][0] == runs["0"][0]
    assert same_weights(runs["1"][1], runs["0"][1])
    assert runs["1"][2] == 1 and len(set(runs["1"][0])) == 5


def test_cuda_graphs_are_dropped_when_what_they_hold_changes(cuda_device, monkeypatch):
    monkeypatch.setenv("GPUACCEL_CUDA_GRAPHS", "1")
    x, y = data()
    ref = model(cuda_device, spe=4)
    m = model(cuda_device, spe=4)
    for step, change in enumerate([None, "lr", "bigger batch", "trainable", None]):
        for net_model in (m, ref):
            if change == "lr":
                net_model._set_learning_rate(5e-3)
            elif change == "bigger batch":
                net_model.evaluate(x, y, batch_size=100)  # regrows the activation buffers
            elif change == "trainable":
                net_model.layers[0].trainable = False
            monkeypatch.setenv("GPUACCEL_CUDA_GRAPHS", "1" if net_model is m else "0")
            counter = GraphCount()
            net_model.fit(x, y, epochs=2, batch_size=16, seed=step, verbose=0, callbacks=[counter])
            assert counter.counts == ([0, 3] if net_model is m else [0, 0]), change  # replayed
        assert same_weights(m.get_weights(), ref.get_weights()), change


def test_cuda_fit_with_graphs_matches_the_cpu(cuda_device, monkeypatch):
    from conftest import assert_matches_cpu

    g, _ = graph_fit(cuda_device, monkeypatch, True, epochs=2)
    c, _ = graph_fit("cpu", monkeypatch, True, epochs=2)
    for i, (p, q) in enumerate(zip(g.get_weights(), c.get_weights())):
        assert_matches_cpu(p, q, rtol=2e-3, what=f"weights {i}")


def test_cpu_has_no_graphs(monkeypatch):
    m, _ = graph_fit("cpu", monkeypatch, True)
    assert m.graph_counts == [0, 0, 0]
