"""Hardening: leaks and reference counts, interrupted saves, Ctrl-C and NaN during fit,
extreme layer sizes, and failing (or missing) GPUs.

- Leaks: thousands of op calls (error paths included), training steps, model
  builds and save/load cycles; process RSS (/proc/self/statm), the refcounts of the
  inputs and the number of gc-tracked objects must stay flat. The numbers are printed.
  `python tests/test_hardening.py lsan-workload` is the short training run that
  `make test-asan` runs under LeakSanitizer (see the Makefile).
- Kill during save: a child process saves a model in a loop (Sequential.save, and
  ModelCheckpoint inside fit); it is SIGKILLed at random moments, 20 times, and the
  previous file must always load, with the weights of one complete save.
- Ctrl-C: SIGINT during fit (from a callback, and from outside at random moments)
  stops at a step boundary: the weights equal those after exactly the completed steps,
  are finite, and the model keeps working. A NaN/Inf loss stops fit with
  FloatingPointError naming the epoch and step.
- GPUs: without one, every way of asking for CUDA raises RuntimeError naming why;
  with one, out-of-memory raises MemoryError naming the bytes and a bad device index
  raises ValueError (those skip here).
"""
import gc
import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
import weakref


def check_sanitizer_logs(folder):
    """Judge the logs of `make test-asan` (ASAN_OPTIONS=log_path=...): any ASan or UBSan
    error fails; a leak fails when its allocation stack runs through gpuaccel's C code
    (csrc/, _C / _cuda), except module initialisation (type objects Python never frees).
    Leaks with only Python / NumPy / tool frames are Python's own never-freed objects."""
    ours = re.compile(r"csrc/|_C\.cpython|_cuda\.cpython")
    init = re.compile(r" in (module_exec|PyInit__C|PyInit__cuda|\w+_type_init|ga_py_\w*init\w*) ")
    errors, leaks, python_only, files = [], [], 0, sorted(os.listdir(folder))
    for name in files:
        with open(os.path.join(folder, name), errors="replace") as f:
            text = f.read()
        if re.search(r"ERROR: AddressSanitizer|runtime error:|ERROR: UndefinedBehaviorSanitizer", text):
            errors.append((name, text))
        for block in re.split(r"\n(?=(?:Direct|Indirect) leak of)", text)[1:]:
            block = block.split("\nSUMMARY:")[0]
            if ours.search(block) and not init.search(block):
                leaks.append((name, block))
            else:
                python_only += 1
    for name, text in errors:
        print(f"== {name}: sanitizer error\n{text[:20000]}")
    for name, block in leaks:
        print(f"== {name}: leak in gpuaccel\n{block[:6000]}")
    print(f"sanitizer logs: {len(files)} files, {len(errors)} with ASan/UBSan errors, {len(leaks)} leak reports "
          f"in gpuaccel's code, {python_only} leak reports of Python's own never-freed objects (ignored)")
    return 1 if errors or leaks else 0


if __name__ == "__main__" and sys.argv[1:2] == ["check-sanitizer-logs"]:  # runs without gpuaccel
    sys.exit(check_sanitizer_logs(sys.argv[2]))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import gpuaccel as ga  # noqa: E402
from conftest import cuda_available  # noqa: E402

L = ga.layers
ops = ga.ops
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def child_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, HERE] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def under_asan():
    with open("/proc/self/maps") as f:
        return "libasan" in f.read()


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def small_model(seed=0, dropout=True):
    layers = [L.Conv2D(4, 3, padding="same", activation="relu"), L.MaxPool2D(2)]
    if dropout:
        layers.append(L.Dropout(0.25))
    layers += [L.Flatten(), L.Dense(16, activation="relu"), L.Dense(3)]
    return ga.Sequential(layers, input_shape=(1, 8, 8), seed=seed)


def data(n=64, seed=0):
    g = np.random.default_rng(seed)
    return g.random((n, 1, 8, 8), dtype=np.float32), g.integers(0, 3, n)


# ----------------------------------------------------------------------------
# leaks and reference counts
# ----------------------------------------------------------------------------

_g = np.random.default_rng(7)
X = _g.standard_normal((4, 3, 16, 16)).astype(np.float32)
W = _g.standard_normal((8, 3, 3, 3)).astype(np.float32)
B = _g.standard_normal(8).astype(np.float32)
DY = _g.standard_normal((4, 8, 16, 16)).astype(np.float32)
XD = _g.standard_normal((32, 200)).astype(np.float32)
WD = _g.standard_normal((64, 200)).astype(np.float32)
BD = _g.standard_normal(64).astype(np.float32)
Z = _g.standard_normal((32, 10)).astype(np.float32)
LAB = _g.integers(0, 10, 32)
PW, PG = XD.copy(), WD[:32].copy()
PM, PV = np.zeros_like(PW), np.ones_like(PW)
XT = XD.T  # non-contiguous: the binding copies
INPUTS = [X, W, B, DY, XD, WD, BD, Z, LAB, PW, PG, PM, PV, XT]


def one_round_of_ops():
    """23 op calls (7 of them refused); returns the outputs."""
    out = [ops.conv2d(X, W, B, padding=1, activation="relu"),
           ops.conv2d(X, W, B, padding=1, kernel="ref"),
           ops.conv2d_backward(X, W, DY, padding=1)]
    y = ops.max_pool2d(X, 2)
    out += [y, ops.max_pool2d_backward(X, y, 2), ops.relu(X), ops.relu_backward(X, X),
            ops.matmul(XD, WD, trans_b=True),
            ops.matmul(XT, XD, trans_a=True, trans_b=True, beta=1.0, c=np.zeros((32, 32), np.float32).T),
            ops.dense(XD, WD, BD, activation="relu"), ops.dense_backward(XD, WD, ops.dense(XD, WD)),
            ops.softmax_cross_entropy(Z, LAB), ops.dropout(X, 0.3, seed=1),
            ops.sgd_step(PW, PG, PM, lr=0.1, momentum=0.9), ops.adam_step(PW, PG, PM, PV, 3)]
    t = ga.tensor(XD)
    out += [t, ops.matmul(t, ga.tensor(WD), trans_b=True).numpy()]
    # error paths must release what they took too
    for bad in (lambda: ops.conv2d(X, W[:, :2]), lambda: ops.matmul(XD, XD),
                lambda: ops.softmax_cross_entropy(Z, LAB + 10), lambda: ops.relu(X.astype(np.float64)),
                lambda: ops.max_pool2d(X, 40), lambda: ops.conv2d(X, W, stride=0), lambda: ops.dense(XD, WD[:, :3])):
        try:
            bad()
        except (ValueError, TypeError):
            pass
        else:
            raise AssertionError("a bad call was accepted")
    return out


def weak_outputs(out):
    """Weak references to every array an op returned (NumPy arrays are not
    tracked by gc, so a leaked output shows only here, or in RSS)."""
    refs = []
    for o in out:
        for item in (o if isinstance(o, tuple) else (o,)):
            if isinstance(item, np.ndarray):
                refs.append(weakref.ref(item))
    return refs


def measure():
    gc.collect()
    return rss_bytes(), len(gc.get_objects()), [sys.getrefcount(a) for a in INPUTS]


def test_op_calls_do_not_leak(capsys):
    for _ in range(30):  # warm-up: allocator pools, lazily created objects
        one_round_of_ops()
    refs = weak_outputs(one_round_of_ops())
    gc.collect()
    alive = [r() for r in refs if r() is not None]
    assert not alive, f"{len(alive)} op outputs still alive with no reference left: {[a.shape for a in alive]}"
    rss0, objs0, refs0 = measure()
    rounds = 400  # x 23 calls = 9,200 op calls
    for _ in range(rounds):
        one_round_of_ops()
    rss1, objs1, refs1 = measure()
    with capsys.disabled():
        print(f"\n[leak] {rounds * 23} op calls: RSS {rss0 / 2**20:.1f} -> {rss1 / 2**20:.1f} MiB, "
              f"gc objects {objs0} -> {objs1}")
    assert refs1 == refs0, f"input refcounts changed: {refs0} -> {refs1}"
    assert objs1 - objs0 < 200, f"gc-tracked objects grew by {objs1 - objs0}"
    # a leaked output per round would be >= 16 KB x 400 = 6 MiB (under ASan freed memory
    # sits in its quarantine, so RSS says nothing there: LSan checks instead)
    assert under_asan() or rss1 - rss0 < 6 * 2**20, f"RSS grew by {(rss1 - rss0) / 2**20:.1f} MiB over {rounds} rounds"


def test_training_steps_and_models_do_not_leak(tmp_path, capsys):
    x, y = data(256)
    refs = lambda: (sys.getrefcount(x), sys.getrefcount(y))  # noqa: E731
    model = small_model().compile(optimizer=ga.optimizers.Adam(1e-3))
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    path = str(tmp_path / "m.npz")

    def cycle():
        model.fit(x, y, epochs=4, batch_size=8, verbose=0)  # 128 steps
        model.evaluate(x, y)
        model.predict(x)
        m2 = small_model(seed=1).compile(optimizer="sgd")  # a Net created and freed
        m2.fit(x[:16], y[:16], epochs=1, batch_size=8, verbose=0)
        model.save(path)
        ga.models.load(path).predict(x[:4])
        try:
            model.fit(x, y[:-1], verbose=0)
        except ValueError:
            pass

    cycle()
    rss0, objs0, r0 = rss_bytes(), (gc.collect(), len(gc.get_objects()))[1], refs()
    loops = 16  # 16 x (128 + 2) = 2,080 training steps, 32 nets built and freed
    for _ in range(loops):
        cycle()
    gc.collect()
    rss1, objs1, r1 = rss_bytes(), len(gc.get_objects()), refs()
    with capsys.disabled():
        print(f"\n[leak] {loops * 130} training steps, {loops * 2} models built+freed, {loops} save/load: "
              f"RSS {rss0 / 2**20:.1f} -> {rss1 / 2**20:.1f} MiB, gc objects {objs0} -> {objs1}")
    assert r1 == r0, f"refcounts of x, y changed: {r0} -> {r1}"
    assert objs1 - objs0 < 300, f"gc-tracked objects grew by {objs1 - objs0}"
    assert under_asan() or rss1 - rss0 < 8 * 2**20, f"RSS grew by {(rss1 - rss0) / 2**20:.1f} MiB"
    assert all(np.isfinite(w).all() for w in model.get_weights())


def lsan_workload(steps=300):
    """The short training run checked by LeakSanitizer in `make test-asan`."""
    x, y = data(128)
    model = small_model().compile(optimizer=ga.optimizers.Adam(1e-3))
    model.fit(x, y, epochs=max(1, steps // 16), batch_size=8, verbose=0)
    model.evaluate(x, y)
    model.predict(x)
    for _ in range(20):
        one_round_of_ops()
    m2 = small_model(seed=3).compile(optimizer="sgd")
    m2.fit(x, y, epochs=1, batch_size=16, verbose=0)
    del m2
    gc.collect()
    print(f"lsan-workload: {max(1, steps // 16) * 16 + 8} training steps, 20 x 23 op calls: done")


# ----------------------------------------------------------------------------
# interrupted saves
# ----------------------------------------------------------------------------

SAVER = textwrap.dedent("""
    import sys, numpy as np, gpuaccel as ga
    from gpuaccel import layers as L
    path, mode = sys.argv[1], sys.argv[2]
    model = ga.Sequential([L.Conv2D(8, 3, activation="relu"), L.Flatten(), L.Dense(512), L.Dense(4)],
                          input_shape=(1, 16, 16), seed=0).compile(optimizer="sgd")
    shapes = [w.shape for w in model.get_weights()]

    def version(i):  # a recognisable set of weights: every value is i
        return [np.full(s, float(i), np.float32) for s in shapes]

    if mode == "save":
        i = int(sys.argv[3])
        model.set_weights(version(i))
        model.save(path)
        print("ready", flush=True)
        while True:
            i += 1
            model.set_weights(version(i))
            model.save(path)
    else:  # ModelCheckpoint after every epoch of a long fit
        x = np.random.default_rng(0).random((8, 1, 16, 16), dtype=np.float32)
        y = np.arange(8) % 4
        model.save(path)
        print("ready", flush=True)
        model.fit(x, y, epochs=10**6, batch_size=8, verbose=0,
                  callbacks=[ga.callbacks.ModelCheckpoint(path, save_best_only=False)])
""")


@pytest.mark.parametrize("mode", ["save", "checkpoint"])
def test_sigkill_during_save_never_loses_the_previous_file(tmp_path, mode, capsys):
    path = str(tmp_path / "model.npz")
    rnd = random.Random(1234 if mode == "save" else 4321)
    start = 0
    kills = 10
    for k in range(kills):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, path, mode, str(start)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=child_env(), text=True)
        try:
            line = proc.stdout.readline()
            assert line.strip() == "ready", f"child did not start: {line!r} {proc.stderr.read()}"
            time.sleep(rnd.uniform(0.0, 0.4))
        finally:
            proc.kill()  # SIGKILL
            proc.wait()
        assert proc.returncode == -signal.SIGKILL
        model = ga.models.load(path)  # never raises: the previous file is intact
        ws = model.get_weights()
        assert all(np.isfinite(w).all() for w in ws)
        if mode == "save":
            vals = {float(v) for w in ws for v in np.unique(w)}
            assert len(vals) == 1, f"a file mixes two saves: {sorted(vals)[:5]}"
            start = int(vals.pop()) + 1
    leftovers = [f for f in os.listdir(tmp_path) if f != "model.npz"]
    with capsys.disabled():
        print(f"\n[kill-save:{mode}] {kills} SIGKILLs, the file always loaded; "
              f"{len(leftovers)} temporary file(s) left by kills mid-write (never read)")
    assert all(f.startswith(".tmp-") for f in leftovers), leftovers


def test_failed_write_keeps_previous_file_and_cleans_up(tmp_path, monkeypatch):
    model = small_model(dropout=False).compile(optimizer="sgd")
    path = str(tmp_path / "m.npz")
    model.save(path)
    before = open(path, "rb").read()

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError):
        model.save(path)
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["m.npz"]
    ga.models.load(path)


def test_load_rejects_truncations_and_edited_config(tmp_path):
    model = small_model(dropout=False).compile(optimizer="sgd")
    path = str(tmp_path / "m.npz")
    model.save(path)
    blob = open(path, "rb").read()
    for cut in sorted({0, 1, 10, 100, len(blob) // 3, len(blob) // 2, len(blob) - 22, len(blob) - 1}):
        bad = str(tmp_path / f"cut{cut}.npz")
        open(bad, "wb").write(blob[:cut])
        with pytest.raises(ValueError, match="cut"):
            ga.models.load(bad)
    # a config edited by hand (valid JSON, valid zip): the weights checksum alone would not notice
    with np.load(path) as d:
        arrays = {k: d[k] for k in d.files}
    config = json.loads(bytes(arrays["config"]).decode())
    for layer in config["layers"]:
        if layer["class"] == "Conv2D":
            layer["config"]["activation"] = None
    arrays["config"] = np.frombuffer(json.dumps(config).encode(), np.uint8)
    edited = str(tmp_path / "edited.npz")
    np.savez(edited, **arrays)
    with pytest.raises(ValueError, match="checksum"):
        ga.models.load(edited)


# ----------------------------------------------------------------------------
# Ctrl-C and NaN during fit
# ----------------------------------------------------------------------------


class CountingNet:
    """Wraps the C Net to count completed training steps (fit runs them through
    train_steps, so many per call with steps_per_execution)."""

    def __init__(self, net):
        self._net, self.steps = net, 0

    def train_steps(self, *a):
        out = self._net.train_steps(*a)
        self.steps += out[0]
        return out

    def __getattr__(self, name):
        return getattr(self._net, name)


def replay(x, y, batch):
    """Yields the weights of a fresh model after 0, 1, 2, ... whole training steps, the
    batches taken in order as fit(shuffle=False) takes them."""
    m = small_model().compile(optimizer=ga.optimizers.Adam(1e-3))
    n, i = x.shape[0], 0
    while True:
        yield m.get_weights()
        j = (i * batch) % n
        m._net.train_step(np.ascontiguousarray(x[j:j + batch]), y[j:j + batch].astype(np.int32))
        i += 1


def whole_steps(ws, x, y, batch, counted):
    """The number of whole steps (counted or counted + 1: the interrupt may land between
    the step's return and the counter) whose weights equal ws exactly; None if neither."""
    it = replay(x, y, batch)
    for _ in range(counted):
        next(it)
    for k in (counted, counted + 1):
        ref = next(it)
        if all(np.array_equal(a, b) for a, b in zip(ws, ref)):
            return k
    return None


def test_keyboard_interrupt_in_fit_stops_at_a_step_boundary():
    x, y = data(64)
    model = small_model().compile(optimizer=ga.optimizers.Adam(1e-3))
    model._net = counter = CountingNet(model._net)

    class CtrlC(ga.callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            if counter.steps == 11:
                os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=5, batch_size=8, shuffle=False, verbose=0, callbacks=[CtrlC()])
    done = counter.steps
    assert 11 <= done <= 12
    ws = model.get_weights()
    assert all(np.isfinite(w).all() for w in ws)
    # exactly `done` whole steps, nothing half-applied
    assert whole_steps(ws, x, y, 8, done) == done
    model._net = counter._net
    # still usable: predict, evaluate, train on
    assert np.isfinite(model.predict(x)).all()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert np.isfinite(model.evaluate(x, y)[0])


SIGINT_CHILD = textwrap.dedent("""
    import sys, numpy as np, gpuaccel as ga
    from test_hardening import small_model, data, CountingNet, whole_steps
    x, y = data(64)
    model = small_model().compile(optimizer=ga.optimizers.Adam(1e-3))
    model._net = counter = CountingNet(model._net)
    print("ready", flush=True)
    try:
        model.fit(x, y, epochs=10**6, batch_size=8, shuffle=False, verbose=0)
    except KeyboardInterrupt:
        pass
    done = counter.steps
    model._net = counter._net
    ws = model.get_weights()
    ok_finite = all(np.isfinite(w).all() for w in ws)
    same = whole_steps(ws, x, y, 8, done) is not None
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)  # the Net lock was not left held
    print("result", done, ok_finite, same, bool(np.isfinite(model.predict(x)).all()), flush=True)
""")


def test_sigint_from_outside_at_random_moments():
    rnd = random.Random(99)
    for trial in range(6):
        proc = subprocess.Popen([sys.executable, "-c", SIGINT_CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=child_env(), text=True, cwd=HERE)
        try:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
            time.sleep(rnd.uniform(0.05, 0.5))
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, err
        res = [l for l in out.splitlines() if l.startswith("result")]
        assert res, f"no result: {out!r} {err!r}"
        _, done, finite, same, pred = res[0].split()
        assert finite == "True" and same == "True" and pred == "True", res[0]


def test_nan_loss_stops_fit_naming_the_step():
    x, y = data(64)
    model = small_model(dropout=False).compile(optimizer=ga.optimizers.SGD(1e12))
    with pytest.raises(FloatingPointError) as info:
        model.fit(x, y, epochs=3, batch_size=8, verbose=0)
    msg = str(info.value)
    assert "step" in msg and "epoch" in msg, msg
    # the model is still a model: weights can be restored and training goes on
    fresh = small_model(dropout=False)
    fresh.build()
    model.set_weights(fresh.get_weights())
    model.compile(optimizer=ga.optimizers.SGD(0.01))
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_nan_in_weights_is_refused_and_inf_data_refused():
    model = small_model(dropout=False).compile(optimizer="sgd")
    ws = model.get_weights()
    ws[0] = ws[0].copy()
    ws[0].flat[0] = np.nan
    with pytest.raises(ValueError):
        model.set_weights(ws)
    x, y = data(16)
    x[3, 0, 2, 2] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        model.fit(x, y, verbose=0)


# ----------------------------------------------------------------------------
# extreme layer sizes (in a child process: a crash fails the test, not the run)
# ----------------------------------------------------------------------------

EXTREME_CHILD = textwrap.dedent("""
    import sys
    import numpy as np, gpuaccel as ga
    from gpuaccel import layers as L
    makers = {
        "Dense(units)": lambda v: [L.Dense(v)],
        "Conv2D(filters)": lambda v: [L.Conv2D(v, 1)],
        "Conv2D(padding)": lambda v: [L.Conv2D(1, 1, padding=v), L.Dense(2)],
        "Conv2D(strides)": lambda v: [L.Conv2D(1, 1, strides=v), L.Dense(2)],
        "Conv2D(kernel)": lambda v: [L.Conv2D(1, v), L.Dense(2)],
        "MaxPool2D(size)": lambda v: [L.MaxPool2D(v), L.Dense(2)],
        "MaxPool2D(strides)": lambda v: [L.MaxPool2D(1, v), L.Dense(2)],
        "input_shape": None,
    }
    MUST_REFUSE = {"Conv2D(padding)", "Conv2D(kernel)", "MaxPool2D(size)"}
    values = [2**20, 2**31 - 1, 2**31, 2**32 + 1, 2**61, 2**62, 2**63 - 1, 2**63, 2**64]
    only = sys.argv[1:]  # optional: one layer name and one value
    if only:
        makers = {only[0]: makers[only[0]]}
        values = [int(only[1])]
    x = np.ones((1, 1, 3, 3), np.float32)
    for name, mk in makers.items():
        for v in values:
            print("case", name, v, flush=True)
            try:
                if mk is None:
                    m = ga.Sequential([L.Dense(2)], input_shape=(1, v, 3))
                else:
                    m = ga.Sequential(mk(v), input_shape=(1, 3, 3))
                m.compile(optimizer="sgd")
                out = m.predict(x)
                if name in MUST_REFUSE:  # a geometry that cannot exist (or needs > 16 TB)
                    print("accepted", name, v, out.shape, flush=True)
            except (ValueError, TypeError, MemoryError, OverflowError) as e:
                assert str(e)
    print("done", flush=True)
""")


def test_extreme_layer_sizes_raise_cleanly():
    """Sizes near and past the int32 / int64 limits: MemoryError / ValueError / OverflowError,
    never a crash, never a model whose geometry wrapped around."""
    proc = subprocess.run([sys.executable, "-c", EXTREME_CHILD], capture_output=True, text=True, env=child_env(),
                          timeout=600)
    lines = proc.stdout.splitlines()
    last = [l for l in lines if l.startswith("case")][-1:] or ["(none)"]
    assert proc.returncode == 0, (f"child died with {proc.returncode} at {last[0]!r} "
                                  f"(repro: ga.Sequential(<that layer>, input_shape=(1, 3, 3)).build()); "
                                  f"{proc.stderr[-2000:]}")
    assert lines[-1] == "done"
    accepted = [l for l in lines if l.startswith("accepted")]
    assert not accepted, f"impossible geometry accepted: {accepted}"


# ----------------------------------------------------------------------------
# GPUs: missing here; failing where present
# ----------------------------------------------------------------------------

needs_no_cuda = pytest.mark.skipif(cuda_available(), reason="CUDA is available (a GPU or the CUDA emulator)")


@needs_no_cuda
@pytest.mark.parametrize("dev", ["cuda", "cuda:0", "cuda:7", "CUDA"])
def test_no_gpu_every_cuda_request_says_why(dev):
    reason = ga.cuda.unavailable_reason()
    assert reason and not ga.cuda.is_available()
    assert ga.cuda.device_count() == 0
    assert ga.devices() == ["cpu"]
    x = np.ones((1, 1, 4, 4), np.float32)
    for call in (lambda: ops.relu(x, device=dev), lambda: ga.tensor(x, device=dev),
                 lambda: small_model().compile(optimizer="sgd", device=dev),
                 lambda: ops.conv2d(x, np.ones((1, 1, 3, 3), np.float32), device=dev)):
        with pytest.raises(RuntimeError) as info:
            call()
        assert reason in str(info.value), str(info.value)
    with pytest.raises(RuntimeError):
        ga.cuda.get_device_properties(0)
    # and the CPU carries on
    assert ops.relu(x).shape == x.shape


@needs_no_cuda
def test_no_gpu_model_load_on_cuda_says_why(tmp_path):
    path = str(tmp_path / "m.npz")
    small_model().compile(optimizer="sgd").save(path)
    with pytest.raises(RuntimeError):
        ga.models.load(path, device="cuda")
    ga.models.load(path)


def test_cuda_out_of_memory_is_memory_error_naming_bytes(cuda_device):
    props = ga.cuda.get_device_properties(0)
    too_many = int(props["total_memory"]) // 4 * 2  # floats: twice the device memory
    with pytest.raises(MemoryError) as info:
        # a Dense layer whose weights alone need more than the device has
        ga.Sequential([L.Dense(too_many // 9 + 1)], input_shape=(1, 3, 3)).compile(optimizer="sgd", device="cuda")
    assert "bytes" in str(info.value) or any(ch.isdigit() for ch in str(info.value)), str(info.value)
    # the process and the device carry on
    x = np.ones((2, 1, 3, 3), np.float32)
    assert np.array_equal(ops.relu(x, device="cuda"), x)
    m = small_model().compile(optimizer="sgd", device="cuda")
    xs, ys = data(16)
    m.fit(xs, ys, epochs=1, batch_size=8, verbose=0)


def test_cuda_bad_device_index_is_value_error(cuda_device):
    n = ga.cuda.device_count()
    x = np.ones((2, 2), np.float32)
    for dev in (f"cuda:{n}", "cuda:7" if n < 8 else "cuda:99"):
        with pytest.raises(ValueError):
            ops.relu(x, device=dev)
        with pytest.raises(ValueError):
            ga.tensor(x, device=dev)


def test_cuda_tensor_too_big_is_memory_error(cuda_device):
    # ops with a device array: ask for an output bigger than the device
    props = ga.cuda.get_device_properties(0)
    side = int((props["total_memory"] * 2 / 4) ** 0.5) + 1
    a = ga.tensor(np.ones((side, 1), np.float32), device="cuda")
    b = ga.tensor(np.ones((1, side), np.float32), device="cuda")
    with pytest.raises(MemoryError) as info:
        ops.matmul(a, b)
    assert any(ch.isdigit() for ch in str(info.value)), str(info.value)
    assert ops.matmul(ga.tensor(np.ones((2, 1), np.float32), "cuda"),
                      ga.tensor(np.ones((1, 2), np.float32), "cuda")).numpy().sum() == 4


if __name__ == "__main__":
    if sys.argv[1:2] == ["lsan-workload"]:
        lsan_workload()
    else:
        print("usage: python tests/test_hardening.py lsan-workload | check-sanitizer-logs DIR")
