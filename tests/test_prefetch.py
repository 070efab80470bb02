"""fit() with data that do not stay on the device (device_data=False, or too large)
gathers each call's chunk on the host, the next one in a worker thread while the current
call runs (by default on a GPU; anywhere with models._PREFETCH = True); on a GPU the
single-step train_step stages each batch in pinned host memory and copies it on the
device's stream.

Checked here: the prefetching fit gives bit-identical weights and history to the
inline gather (the reference order) and to a hand-written loop of train_step;
errors in the data path, in the step and Ctrl-C propagate as before and leave no
thread behind; on a GPU, the staged copies give the CPU's results through batch
size changes and predict / evaluate between steps, and the caller's buffer is free
once the step returns."""
import os
import signal
import threading

import numpy as np
import pytest
from conftest import assert_matches_cpu, cuda_available

import gpuaccel as ga
from gpuaccel import models
from gpuaccel.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D


def small_model(seed=0, device="cpu"):
    m = ga.Sequential([Conv2D(4, 3, padding="same", activation="relu"), MaxPool2D(2), Dropout(0.25),
                       Flatten(), Dense(16, activation="relu"), Dense(5)], input_shape=(2, 12, 12), seed=seed)
    return m.compile(optimizer=ga.optimizers.Adam(1e-2), device=device)


def toy_data(n=100, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 2, 12, 12), dtype=np.float32), rng.integers(0, 5, n)


def fit_run(prefetch, monkeypatch, device="cpu", **kw):
    monkeypatch.setattr(models, "_PREFETCH", prefetch)
    kw.setdefault("device_data", False)  # the chunked host path, where prefetching happens
    x, y = toy_data()
    m = small_model(device=device)
    h = m.fit(x, y, verbose=0, **kw)
    return m.get_weights(), h.history


def assert_same_run(a, b):
    (wa, ha), (wb, hb) = a, b
    assert len(wa) == len(wb)
    for i, (p, q) in enumerate(zip(wa, wb)):
        assert np.array_equal(p, q), f"weights {i} differ"
    for key in ("loss", "accuracy"):
        assert ha[key] == hb[key], key


@pytest.fixture
def no_thread_leak():
    before = threading.active_count()
    yield
    assert threading.active_count() == before, [t.name for t in threading.enumerate()]


# ----------------------------------------------------------------------------
# same batches, same order, same results
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("shuffle", [True, False])
def test_prefetch_is_bit_identical_to_the_inline_gather(monkeypatch, no_thread_leak, shuffle):
    # 100 samples in batches of 16: a short last batch; dropout draws depend on the order too
    kw = {"epochs": 3, "batch_size": 16, "seed": 5, "shuffle": shuffle}
    ref = fit_run(False, monkeypatch, **kw)
    assert_same_run(fit_run(True, monkeypatch, **kw), ref)
    # and to the data kept on the device, batches gathered there
    assert_same_run(fit_run(False, monkeypatch, device_data="auto", **kw), ref)


def test_prefetch_matches_a_hand_written_train_step_loop(monkeypatch, no_thread_leak):
    monkeypatch.setattr(models, "_PREFETCH", True)
    x, y = toy_data()
    w, h = fit_run(True, monkeypatch, epochs=2, batch_size=32, seed=9)
    ref = small_model()
    rng = np.random.default_rng(9)
    losses = []
    for _ in range(2):
        order, total = rng.permutation(len(x)), 0.0
        for i in range(0, len(x), 32):
            idx = order[i:i + 32]
            loss, _ = ref._net.train_step(np.ascontiguousarray(x[idx]), y[idx].astype(np.int32))
            total += loss * len(idx)
        losses.append(total / len(x))
    assert all(np.array_equal(p, q) for p, q in zip(w, ref.get_weights()))
    # fit sums the per-sample losses on the device, the loop here the batch means
    assert h["loss"] == pytest.approx(losses, rel=1e-6)


def test_batches_after_the_first_are_gathered_in_the_worker(monkeypatch, no_thread_leak):
    where = []
    real = models._gather

    def spy(x, y, idx):
        where.append(threading.current_thread() is threading.main_thread())
        return real(x, y, idx)

    monkeypatch.setattr(models, "_gather", spy)
    fit_run(True, monkeypatch, epochs=2, batch_size=16)
    assert len(where) == 2 * 7
    # per epoch: the first batch inline, the other six one step ahead in the worker
    assert where == ([True] + [False] * 6) * 2


def test_auto_keeps_the_data_on_the_device_and_prefetches_chunks_on_a_gpu(monkeypatch, no_thread_leak):
    # device_data='auto': the data set stays where the net reads it (the CPU reads the
    # caller's array in place), so no batch is gathered on the host at all; chunks go
    # inline on the CPU (its step already uses every core) and ahead on a GPU
    where, real = [], models._gather

    def spy(x, y, idx):
        where.append(threading.current_thread() is threading.main_thread())
        return real(x, y, idx)

    monkeypatch.setattr(models, "_gather", spy)
    assert models._PREFETCH == "auto"
    x, y = toy_data()
    small_model().fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert where == []
    small_model().fit(x, y, epochs=1, batch_size=16, verbose=0, device_data=False)
    assert where == [True] * 7
    if cuda_available():
        where.clear()
        small_model(device="cuda").fit(x, y, epochs=1, batch_size=16, verbose=0)
        assert where == []
        small_model(device="cuda").fit(x, y, epochs=1, batch_size=16, verbose=0, device_data=False)
        assert where == [True] + [False] * 6


def test_single_batch_epochs_and_stop_training(monkeypatch, no_thread_leak):
    kw = {"epochs": 2, "batch_size": 500}  # one step per epoch: no worker at all
    assert_same_run(fit_run(True, monkeypatch, **kw), fit_run(False, monkeypatch, **kw))

    class StopAfterFirstEpoch(ga.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    kw = {"epochs": 5, "batch_size": 16, "callbacks": [StopAfterFirstEpoch()]}
    a, b = fit_run(True, monkeypatch, **kw), fit_run(False, monkeypatch, **kw)
    assert len(a[1]["loss"]) == 1
    assert_same_run(a, b)


# ----------------------------------------------------------------------------
# errors and Ctrl-C: same exception, no thread left running, model usable
# ----------------------------------------------------------------------------


class Ends(ga.callbacks.Callback):
    def __init__(self):
        self.ended = 0

    def on_train_end(self, logs=None):
        self.ended += 1


def test_error_in_the_prefetched_gather_reaches_the_caller(monkeypatch, no_thread_leak):
    real, calls = models._gather, []

    def failing(x, y, idx):
        calls.append(threading.current_thread().name)
        if len(calls) == 4:
            raise MemoryError("cannot gather batch 4")
        return real(x, y, idx)

    monkeypatch.setattr(models, "_gather", failing)
    monkeypatch.setattr(models, "_PREFETCH", True)
    x, y = toy_data()
    m, ends = small_model(), Ends()
    with pytest.raises(MemoryError, match="cannot gather batch 4"):
        m.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[ends], device_data=False)
    assert calls[3] != threading.main_thread().name  # it did fail in the worker
    assert ends.ended == 1
    monkeypatch.setattr(models, "_gather", real)
    m.fit(x, y, epochs=1, batch_size=16, verbose=0)  # still trains
    assert np.isfinite(m.evaluate(x, y)[0])


class FailingNet:
    """Wraps the C Net: train_steps raises on its `at`-th call (a failing step)."""

    def __init__(self, net, at):
        self._net, self.at, self.calls = net, at, 0

    def train_steps(self, *a):
        self.calls += 1
        if self.calls == self.at:
            raise RuntimeError("CUDA error in the step (simulated)")
        return self._net.train_steps(*a)

    def __getattr__(self, name):
        return getattr(self._net, name)


def test_error_in_the_step_while_a_gather_is_pending(monkeypatch, no_thread_leak):
    monkeypatch.setattr(models, "_PREFETCH", True)
    x, y = toy_data()
    m, ends = small_model(), Ends()
    net = m._net
    m._net = FailingNet(net, at=3)  # batch 4 is being gathered when step 3 fails
    with pytest.raises(RuntimeError, match="simulated"):
        m.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[ends], device_data=False)
    assert ends.ended == 1
    m._net = net
    m.fit(x, y, epochs=1, batch_size=16, verbose=0)


def test_nan_loss_with_prefetch(monkeypatch, no_thread_leak):
    monkeypatch.setattr(models, "_PREFETCH", True)
    from test_models import small_model as plain_model  # the NaN case there
    from test_models import toy_data as plain_data

    x, y = plain_data(64)
    m = plain_model().compile(optimizer=ga.optimizers.SGD(learning_rate=1e30))
    with pytest.raises(FloatingPointError, match="step"):
        m.fit(x * 1e6, y, epochs=3, batch_size=16, verbose=0, device_data=False)


@pytest.mark.parametrize("how", ["raise", "sigint"])
def test_ctrl_c_during_fit_with_prefetch(monkeypatch, no_thread_leak, how):
    monkeypatch.setattr(models, "_PREFETCH", True)
    x, y = toy_data()
    m, ends = small_model(), Ends()
    seen = []

    class CtrlC(ga.callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            seen.append(batch)
            if len(seen) == 5:
                if how == "raise":
                    raise KeyboardInterrupt
                os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        m.fit(x, y, epochs=50, batch_size=16, verbose=0, callbacks=[CtrlC(), ends], device_data=False)
    assert 5 <= len(seen) <= 6
    assert ends.ended == 1
    assert all(np.isfinite(w).all() for w in m.get_weights())
    m.fit(x, y, epochs=1, batch_size=16, verbose=0)


# ----------------------------------------------------------------------------
# GPU: pinned staging and the copy on the stream
# ----------------------------------------------------------------------------


def test_cuda_fit_prefetch_is_bit_identical_and_matches_cpu(cuda_device, monkeypatch, no_thread_leak):
    kw = {"epochs": 2, "batch_size": 16, "seed": 3}
    a = fit_run(True, monkeypatch, device=cuda_device, **kw)
    assert_same_run(a, fit_run(False, monkeypatch, device=cuda_device, **kw))
    cpu = fit_run(False, monkeypatch, device="cpu", **kw)
    for i, (p, q) in enumerate(zip(a[0], cpu[0])):
        assert_matches_cpu(p, q, rtol=2e-3, what=f"weights {i} after fit")


def test_cuda_staged_batches_through_size_changes_and_inference(cuda_device):
    """Growing batches re-allocate the pinned stage; predict (no labels), evaluate and
    forward reuse it between steps; each result is the CPU's."""
    x, y = toy_data()
    y32 = y.astype(np.int32)
    nets = {d: small_model(device=d)._net for d in ("cpu", cuda_device)}
    out = {d: [] for d in nets}
    for d, net in nets.items():
        for lo, hi in ((0, 8), (8, 40), (40, 56), (56, 100), (0, 3)):
            xb = np.ascontiguousarray(x[lo:hi])
            out[d].append(np.float32(net.train_step(xb, y32[lo:hi])[0]))
            out[d].append(net.predict(xb))
            out[d].append(np.float32(net.evaluate(xb, y32[lo:hi])[0]))
    for i, (g, c) in enumerate(zip(out[cuda_device], out["cpu"])):
        assert_matches_cpu(np.asarray(g, np.float32), c, rtol=2e-3, what=f"result {i}")


def test_cuda_caller_may_reuse_its_buffer_right_after_the_step(cuda_device):
    """The batch is copied out of the caller's array before train_step returns."""
    x, y = toy_data(32)
    y32 = y.astype(np.int32)
    a, b = small_model(device=cuda_device)._net, small_model(device=cuda_device)._net
    buf, lab = x.copy(), y32.copy()
    for _ in range(3):
        la = a.train_step(buf, lab)[0]
        buf[:] = np.nan  # would poison the next step if the stage still pointed here
        lab[:] = 0
        buf[:], lab[:] = x, y32
        lb = b.train_step(x.copy(), y32.copy())[0]
        assert np.isfinite(la) and la == pytest.approx(lb, rel=1e-6)


def test_cuda_refused_calls_between_steps_leave_the_stage_usable(cuda_device):
    x, y = toy_data(32)
    y32 = y.astype(np.int32)
    m, ref = small_model(device=cuda_device), small_model(device=cuda_device)
    assert m._net.train_step(x[:8], y32[:8])[0] == pytest.approx(ref._net.train_step(x[:8], y32[:8])[0], rel=1e-6)
    with pytest.raises(ValueError):
        m._net.train_step(x, np.full(32, 7, np.int32))  # labels out of range: refused
    with pytest.raises(ValueError):
        m._net.evaluate(x[:0], y32[:0])  # empty batch: refused
    assert m._net.train_step(x, y32)[0] == pytest.approx(ref._net.train_step(x, y32)[0], rel=1e-6)
