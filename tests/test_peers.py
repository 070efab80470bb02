"""gpuaccel.peers: the Keras and PyTorch reference CNNs behind `python -m gpuaccel.bench --peers`.

TensorFlow and torch are not installed by CI (`make peers` installs them): without them
every test here either checks the error path or skips. Nothing is timed: only that the
figures exist and are sane.
"""
import importlib.util
import math
import os
import sys

import numpy as np
import pytest

from gpuaccel import bench, peers

HAVE = {"keras": importlib.util.find_spec("tensorflow") is not None,
        "torch": importlib.util.find_spec("torch") is not None}

FAKE_REF = '''
NAME = "{name}"
calls = []

def train(x, y, xt, yt, epochs=1, batch_size=128, seed=0, threads=None, verbose=0):
    calls.append(dict(n=len(x), epochs=epochs, batch_size=batch_size, seed=seed, threads=threads))
    e = list(range(epochs))
    hist = {{"loss": [0.5 / (i + 1) for i in e], "accuracy": [0.8 + 0.01 * i for i in e],
             "val_loss": [0.6 / (i + 1) for i in e], "val_accuracy": [0.7 + 0.01 * i for i in e],
             "epoch_time_s": [2.0 + (i == 0) for i in e], "step_time_ms_p50": [4.0 for i in e],
             "step_time_ms_p95": [5.0 for i in e], "images_per_s": [len(x) / (2.0 + (i == 0)) for i in e]}}
    return {{"history": hist, "threads": {threads_in_force}, "versions": {{"fake": "1"}}, "config": {{}}}}
'''


def tiny_data(n=128, nt=64, seed=0):
    """Synthetic images in [0, 1] whose class is easy to see (a bright row at 2 * label)."""
    rng = np.random.default_rng(seed)

    def make(m):
        y = rng.integers(0, 10, m).astype(np.uint8)
        x = (0.1 * rng.random((m, 1, 28, 28))).astype(np.float32)
        x[np.arange(m), 0, 2 * y + 4, :] = 1.0
        return x, y

    (x, y), (xt, yt) = make(n), make(nt)
    return x, y, xt, yt


@pytest.fixture
def fake_peers(tmp_path, monkeypatch):
    """keras_ref.py / torch_ref.py stand-ins in a temporary folder, the frameworks taken as present."""
    def write(threads_in_force=2, body=None):
        for name, filename in (("keras", "keras_ref.py"), ("torch", "torch_ref.py")):
            text = body or FAKE_REF.format(name=name, threads_in_force=threads_in_force)
            (tmp_path / filename).write_text(text)
            sys.modules.pop(f"gpuaccel_peer_{name}_ref", None)
        return tmp_path

    monkeypatch.setenv("GPUACCEL_PEERS_DIR", str(tmp_path))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    yield write
    for name in peers.NAMES:
        sys.modules.pop(f"gpuaccel_peer_{name}_ref", None)


# ----------------------------------------------------------------------- availability
def test_available_names_and_types():
    avail = peers.available()
    assert set(avail) == {"keras", "torch"}
    for name, value in avail.items():
        if value is True:
            assert HAVE[name]
        else:
            assert isinstance(value, peers.Unavailable) and not value and str(value)


def test_unavailable_is_a_false_reason():
    why = peers.Unavailable("torch is not installed")
    assert not why and why == "torch is not installed" and "installed" in why


def test_shipped_model_files_are_found():
    """The package carries both reference models (gpuaccel.study.peer_models, imported by
    name, so they ship in the wheel), and loading one imports no framework."""
    assert peers.peers_dir() is None  # no GPUACCEL_PEERS_DIR override in the test environment
    for module in ("keras_ref", "torch_ref"):
        spec = importlib.util.find_spec(f"gpuaccel.study.peer_models.{module}")
        assert spec is not None and spec.origin.endswith(os.path.join("gpuaccel", "study", "peer_models", module + ".py"))
    before = set(sys.modules)
    for name in peers.NAMES:
        mod = peers.load(name)
        assert callable(mod.train) and mod.NAME == name
        assert mod.__name__ == f"gpuaccel.study.peer_models.{name}_ref"
    new = set(sys.modules) - before
    assert not any(m == "tensorflow" or m == "torch" or m.startswith(("tensorflow.", "torch.")) for m in new)


# ------------------------------------------------------------------------ error paths
@pytest.mark.parametrize("name", ["keras", "torch"])
def test_missing_framework_is_an_error_result(name, monkeypatch):
    real = importlib.util.find_spec
    package = {"keras": "tensorflow", "torch": "torch"}[name]
    monkeypatch.setattr(importlib.util, "find_spec", lambda mod, *a: None if mod == package else real(mod, *a))
    assert not peers.available()[name]
    r = peers.run(name, tiny_data(), epochs=1, batch_size=32, seed=0)
    assert r["device"] == f"{name}-cpu"
    assert r["epochs"] == [] and r["summary"] == {"epochs": 0}
    assert package in r["error"] and "make peers" in r["error"]


def test_unknown_peer_is_an_error_result():
    r = peers.run("caffe", tiny_data(), epochs=1, batch_size=32, seed=0)
    assert r["error"] and "unknown peer" in r["error"] and r["epochs"] == []
    with pytest.raises(ValueError):
        peers.load("caffe")


def test_missing_model_file_is_an_error_result(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUACCEL_PEERS_DIR", str(tmp_path))
    assert all(not v and "not found" in v for v in peers.available().values())
    r = peers.run("torch", tiny_data(), epochs=1, batch_size=32, seed=0)
    assert "not found" in r["error"]


def test_failing_peer_is_an_error_result_not_an_exception(fake_peers):
    fake_peers(body="def train(*a, **k):\n    raise RuntimeError('boom')\n")
    r = peers.run("keras", tiny_data(), epochs=1, batch_size=32, seed=0)
    assert r["error"] == "RuntimeError: boom" and r["epochs"] == []


def test_import_error_inside_peer_says_how_to_install(fake_peers):
    fake_peers(body="def train(*a, **k):\n    import tensorflow_does_not_exist\n")
    r = peers.run("keras", tiny_data(), epochs=1, batch_size=32, seed=0)
    assert "does not import" in r["error"] and "make peers" in r["error"]


# ------------------------------------------------------------------ result shape (fake)
def test_run_is_shaped_like_bench_train(fake_peers):
    fake_peers(threads_in_force=2)
    data = tiny_data()
    r = peers.run("torch", data, epochs=3, batch_size=32, seed=5, threads=2)
    assert r["error"] is None and r["device"] == "torch-cpu"
    assert r["epochs"] == bench.history_rows(peers.load("torch").train(*data, epochs=3)["history"])
    assert [row["epoch"] for row in r["epochs"]] == [1, 2, 3]
    assert r["epochs"][0]["warmup"] and not r["epochs"][1]["warmup"]
    assert r["summary"] == bench.summarize(r["epochs"])
    assert r["summary"]["steady_epoch_time_s"] == 2.0 and r["summary"]["warmup_epoch_time_s"] == 3.0
    assert r["threads"] == 2 and "warning" not in r
    call = peers.load("torch").calls[0]
    assert call == dict(n=128, epochs=3, batch_size=32, seed=5, threads=2)
    # bench's formatters take a peer result next to gpuaccel's.
    assert "torch-cpu" in bench.format_summary([r])
    assert "warm-up" in bench.format_epochs(r["epochs"])


def test_threads_default_to_gpuaccel_and_a_mismatch_is_reported(fake_peers):
    import gpuaccel as ga

    fake_peers(threads_in_force=99)
    r = peers.run("keras", tiny_data(), epochs=1, batch_size=32, seed=0)
    assert peers.load("keras").calls[0]["threads"] == ga.get_num_threads()
    assert r["error"] is None and "99" in r["warning"]


def test_images_per_s_prefers_steady_state():
    rows = bench.history_rows({"epoch_time_s": [3.0, 2.0, 2.0], "images_per_s": [10.0, 15.0, 15.0]})
    assert peers.images_per_s({"epochs": rows, "summary": bench.summarize(rows)}) == (15.0, "steady")
    rows = rows[:1]
    assert peers.images_per_s({"epochs": rows, "summary": bench.summarize(rows)}) == (10.0, "epoch 1")
    assert peers.images_per_s({"epochs": [], "summary": {"epochs": 0}}) == (None, None)


# --------------------------------------------------------- the real frameworks (if any)
def check_real(r, name, epochs, n):
    assert r["error"] is None, r["error"]
    assert r["device"] == f"{name}-cpu" and len(r["epochs"]) == epochs
    for row in r["epochs"]:
        assert set(bench.EPOCH_KEYS) <= set(row)
        assert row["epoch_time_s"] > 0 and math.isclose(row["images_per_s"], n / row["epoch_time_s"])
        assert 0 < row["step_time_ms_p50"] <= row["step_time_ms_p95"]
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["val_accuracy"] <= 1.0
        assert math.isfinite(row["loss"]) and row["loss"] > 0 and math.isfinite(row["val_loss"])
    assert r["summary"]["epochs"] == epochs


@pytest.mark.skipif(not HAVE["torch"], reason="torch is not installed (make peers)")
def test_torch_trains_the_reference_cnn():
    data = tiny_data(192, 64)
    r = peers.run("torch", data, epochs=2, batch_size=64, seed=0, isolate=True)
    check_real(r, "torch", 2, 192)
    assert r["versions"]["torch"]
    # The model is the reference CNN: same parameter count as gpuaccel's.
    model = peers.load("torch").build_model(0)
    assert sum(p.numel() for p in model.parameters()) == 421642
    # Glorot-uniform weights, zero biases.
    conv = model[0]
    limit = math.sqrt(6.0 / (9 * 1 + 9 * 32))
    assert float(conv.weight.detach().abs().max()) <= limit and float(conv.bias.detach().abs().max()) == 0.0


@pytest.mark.skipif(not HAVE["keras"], reason="tensorflow is not installed (make peers)")
def test_keras_trains_the_reference_cnn():
    data = tiny_data(192, 64)
    r = peers.run("keras", data, epochs=2, batch_size=64, seed=0, isolate=True)
    check_real(r, "keras", 2, 192)
    assert r["versions"]["tensorflow"] and r["versions"]["keras"]
    model = peers.load("keras").build_model(0)
    assert model.count_params() == 421642
