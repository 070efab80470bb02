"""Threads: the GIL is released inside the C kernels and training steps; ops and
predict from several Python threads at once give the same results as run serially;
changing the OpenMP thread count between (and during) calls is safe."""
import sys
import threading

import numpy as np
import pytest

import gpuaccel as ga
from conftest import assert_close

ops = ga.ops
L = ga.layers
NTHREADS = 4


def run_threads(fns):
    """Start every fn at once (a barrier), return their results; re-raise the first error."""
    barrier = threading.Barrier(len(fns))
    results, errors = [None] * len(fns), []

    def worker(i, fn):
        try:
            barrier.wait()
            results[i] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i, fn)) for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
        assert not t.is_alive(), "a thread hung"
    if errors:
        raise errors[0]
    return results


def op_suite(seed):
    """A list of (name, thunk) of op calls on inputs of its own."""
    g = np.random.default_rng(seed)
    x = g.standard_normal((4, 3, 20, 20)).astype(np.float32)
    w = g.standard_normal((16, 3, 3, 3)).astype(np.float32)
    b = g.standard_normal(16).astype(np.float32)
    dy = g.standard_normal((4, 16, 20, 20)).astype(np.float32)
    a = g.standard_normal((150, 230)).astype(np.float32)
    bm = g.standard_normal((230, 170)).astype(np.float32)
    z = g.standard_normal((64, 10)).astype(np.float32)
    lab = g.integers(0, 10, 64)
    return [
        # im2col pinned: 'auto' measures per thread count and may pick Winograd at some,
        # whose rounding differs by more than these thread-count comparisons allow
        ("conv2d", lambda: ops.conv2d(x, w, b, padding=1, activation="relu", kernel="im2col")),
        ("conv2d_ref", lambda: ops.conv2d(x, w, b, padding=1, kernel="ref")),
        ("conv2d_backward", lambda: ops.conv2d_backward(x, w, dy, padding=1, kernel="im2col")),
        ("matmul", lambda: ops.matmul(a, bm)),
        ("matmul_t", lambda: ops.matmul(bm, a, trans_a=True, trans_b=True)),
        ("max_pool2d", lambda: ops.max_pool2d(x, 2)),
        ("max_pool2d_backward", lambda: ops.max_pool2d_backward(x, ops.max_pool2d(x, 2), 2)),
        ("dense", lambda: ops.dense(a, bm.T, activation="relu")),
        ("softmax", lambda: ops.softmax_cross_entropy(z, lab)),
        ("dropout", lambda: ops.dropout(x, 0.4, seed=seed)),
        ("adam", lambda: ops.adam_step(a, a * 0.5, a * 0.1, np.abs(a), 2)),
    ]


def flatten(res):
    if isinstance(res, tuple):
        return [np.asarray(r, np.float64) if not isinstance(r, np.ndarray) else r for r in res]
    return [res]


def same(a, b, what):
    for u, v in zip(flatten(a), flatten(b)):
        np.testing.assert_array_equal(u, v, err_msg=what)


def test_ops_from_several_threads_match_serial():
    suites = [op_suite(seed) for seed in range(NTHREADS)]
    serial = [[fn() for _, fn in suite] for suite in suites]

    def run_suite(i):
        def go():
            out = []
            for _ in range(5):
                out = [fn() for _, fn in suites[i]]
            return out
        return go

    parallel = run_threads([run_suite(i) for i in range(NTHREADS)])
    for i in range(NTHREADS):
        for (name, _), s, p in zip(suites[i], serial[i], parallel[i]):
            same(p, s, f"thread {i}: {name}")


def test_same_op_same_inputs_from_many_threads():
    """Many threads on the very same (read-only) input arrays."""
    suite = op_suite(42)
    serial = [fn() for _, fn in suite]
    for k, (name, fn) in enumerate(suite):
        outs = run_threads([fn] * NTHREADS)
        for o in outs:
            same(o, serial[k], name)


def _model(seed):
    return ga.Sequential([L.Conv2D(8, 3, padding="same", activation="relu"), L.MaxPool2D(2),
                          L.Conv2D(8, 3, padding="same", activation="relu"), L.MaxPool2D(2),
                          L.Dense(32, activation="relu"), L.Dropout(0.3), L.Dense(10)],
                         input_shape=(1, 16, 16), seed=seed).compile(optimizer="adam")


def test_predict_from_several_threads_matches_serial():
    g = np.random.default_rng(0)
    xs = [g.random((70, 1, 16, 16), dtype=np.float32) for _ in range(NTHREADS)]
    shared = _model(1)
    own = [_model(10 + i) for i in range(NTHREADS)]
    serial_shared = [shared.predict(x, batch_size=32) for x in xs]
    serial_own = [m.predict(x, batch_size=32) for m, x in zip(own, xs)]
    # one model shared by every thread (its Net lock serialises them), and one model each
    par_shared = run_threads([lambda x=x: [shared.predict(x, batch_size=32) for _ in range(3)][-1] for x in xs])
    par_own = run_threads([lambda m=m, x=x: [m.predict(x, batch_size=32) for _ in range(3)][-1]
                           for m, x in zip(own, xs)])
    for i in range(NTHREADS):
        np.testing.assert_array_equal(par_shared[i], serial_shared[i])
        np.testing.assert_array_equal(par_own[i], serial_own[i])


def test_fit_and_predict_concurrently_on_one_model_is_safe():
    g = np.random.default_rng(1)
    x, y = g.random((128, 1, 16, 16), dtype=np.float32), g.integers(0, 10, 128)
    model = _model(3)
    results = run_threads([lambda: model.fit(x, y, epochs=2, batch_size=16, verbose=0),
                           lambda: [model.predict(x) for _ in range(10)][-1],
                           lambda: [model.evaluate(x, y) for _ in range(5)][-1]])
    assert results[1].shape == (128, 10) and np.isfinite(results[1]).all()
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_fit_of_separate_models_in_threads_matches_serial():
    g = np.random.default_rng(2)
    x, y = g.random((96, 1, 16, 16), dtype=np.float32), g.integers(0, 10, 96)

    def train(seed):
        m = _model(seed)
        m.fit(x, y, epochs=1, batch_size=16, verbose=0, seed=seed)
        return m.get_weights()

    serial = [train(s) for s in range(NTHREADS)]
    parallel = run_threads([lambda s=s: train(s) for s in range(NTHREADS)])
    for s in range(NTHREADS):
        for a, b in zip(parallel[s], serial[s]):
            np.testing.assert_array_equal(a, b)


def test_gil_is_released_during_kernels():
    """With a huge switch interval a pure-Python thread can only run while the main
    thread has given up the GIL: it finishes its count during the C call iff the C
    code released the GIL (between the calls this thread holds it, running Python)."""
    g = np.random.default_rng(3)
    x = g.standard_normal((16, 16, 48, 48)).astype(np.float32)
    w = g.standard_normal((32, 16, 3, 3)).astype(np.float32)
    a = g.standard_normal((700, 700)).astype(np.float32)
    m = _model(5)
    xm = g.random((512, 1, 16, 16), dtype=np.float32)
    ym = g.integers(0, 10, 512)
    calls = {"conv2d": lambda: ops.conv2d(x, w, padding=1), "matmul": lambda: ops.matmul(a, a),
             "conv2d_backward": lambda: ops.conv2d_backward(x, w, ops.conv2d(x, w, padding=1), padding=1),
             "train_step": lambda: m._net.train_step(xm, ym.astype(np.int32)),
             "predict": lambda: m._net.predict(xm)}
    old = sys.getswitchinterval()
    try:
        for name, call in calls.items():
            call()  # warm-up outside the measurement
            go, counted = threading.Event(), []

            def counter():
                go.wait()
                n = 0
                while n < 1000:
                    n += 1
                counted.append(n)

            t = threading.Thread(target=counter)
            t.start()
            sys.setswitchinterval(100.0)
            go.set()
            for _ in range(50):  # on a loaded machine the counter may need several calls to get a core
                call()
                if counted:
                    break
            ran_during_call = bool(counted)
            sys.setswitchinterval(old)
            t.join(timeout=60)
            assert ran_during_call, f"{name}: another Python thread could not run during the call (GIL held)"
    finally:
        sys.setswitchinterval(old)


def thread_atol(name, ref):
    """Conv weight gradients are batch sums split into per-thread partial sums
    (as oneDNN and PyTorch do), so their rounding depends on the thread count:
    they are compared on the scale of their largest entry."""
    return 1e-5 * float(np.abs(ref).max()) if name == "conv2d_backward" else 1e-6


def test_changing_thread_count_between_calls_is_safe():
    old = ga.get_num_threads()
    suite = op_suite(7)
    try:
        ga.set_num_threads(1)
        base = [fn() for _, fn in suite]
        for n in (2, 1, 3, 8, 1, 2):
            ga.set_num_threads(n)
            assert ga.get_num_threads() == n
            for (name, fn), b in zip(suite, base):
                for u, v in zip(flatten(fn()), flatten(b)):
                    assert_close(u.astype(np.float32), v, rtol=1e-5, atol=thread_atol(name, v),
                                 what=f"{name} at {n} threads")
        for bad in (0, -1):
            with pytest.raises((ValueError, RuntimeError)):
                ga.set_num_threads(bad)
    finally:
        ga.set_num_threads(old)


def test_changing_thread_count_while_other_threads_compute():
    old = ga.get_num_threads()
    suite = op_suite(8)
    base = [fn() for _, fn in suite]
    stop = threading.Event()

    def flipper():
        k = 0
        while not stop.is_set():
            ga.set_num_threads(1 + k % 3)
            k += 1
        return k

    def worker():
        try:
            for _ in range(4):
                for (name, fn), b in zip(suite, base):
                    for u, v in zip(flatten(fn()), flatten(b)):
                        assert_close(u.astype(np.float32), v, rtol=1e-5, atol=thread_atol(name, v), what=name)
        finally:
            stop.set()

    try:
        flips = run_threads([flipper, worker, worker])[0]
        assert flips > 0
    finally:
        ga.set_num_threads(old)
