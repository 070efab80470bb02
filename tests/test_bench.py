"""gpuaccel.bench (the main job) and gpuaccel.info (the doctor it embeds).

No timing is asserted anywhere: only that the figures exist and are sane.
"""
import importlib
import json
import math
import os
import sys
import types

import numpy as np
import pytest

from gpuaccel import bench, datasets

# `from gpuaccel import info` would give the function gpuaccel.info(); we want the module.
info_mod = importlib.import_module("gpuaccel.info")

HAVE_DATA = all(os.path.isfile(os.path.join(datasets.DEBIAN_DIR, s + ".gz"))
                for s in datasets.fashion_mnist.files.values())


def fake_history(epochs=3, base=2.0):
    """A History.history as fit() returns it, with made-up but plausible values."""
    e = np.arange(epochs, dtype=float)
    return {"loss": list(0.6 / (e + 1)), "accuracy": list(0.8 + 0.02 * e),
            "val_loss": list(0.5 / (e + 1)), "val_accuracy": list(0.85 + 0.01 * e),
            "epoch_time_s": list(base + (e == 0) * 1.5), "step_time_ms_p50": list(4.0 + 0 * e),
            "step_time_ms_p95": list(6.0 + (e == 0) * 20), "images_per_s": list(60000 / (base + (e == 0) * 1.5))}


class FakeModel:
    """Stands in for a compiled Sequential: fit() returns a fake History."""

    def __init__(self, device, base):
        self.device, self.base = device, base

    def fit(self, x, y, epochs, batch_size, validation_data, verbose, seed):
        assert x.dtype == np.float32 and x.shape[1:] == (1, 28, 28) and len(x) == len(y)
        return types.SimpleNamespace(history=fake_history(epochs, self.base))


def check_report(out_dir, devices, epochs):
    """report.json and report.md exist and carry the per-epoch keys with sane values."""
    with open(out_dir / "report.json") as f:
        report = json.load(f)
    assert [r["device"] for r in report["devices"]] == devices
    assert report["command"].startswith("python -m gpuaccel.bench")
    assert "cpu" in report["info"] and "cuda" in report["info"]
    for r in report["devices"]:
        assert r["error"] is None
        assert len(r["epochs"]) == epochs
        assert r["epochs"][0]["warmup"] and not any(row["warmup"] for row in r["epochs"][1:])
        for row in r["epochs"]:
            assert set(bench.EPOCH_KEYS) <= set(row)
            assert row["epoch_time_s"] > 0 and row["images_per_s"] > 0
            assert 0 < row["step_time_ms_p50"] <= row["step_time_ms_p95"]
            assert 0.0 <= row["val_accuracy"] <= 1.0 and 0.0 <= row["accuracy"] <= 1.0
            assert math.isfinite(row["loss"]) and row["loss"] > 0
    md = (out_dir / "report.md").read_text()
    assert "## Summary" in md and "warm-up" in md and "| epoch |" in md
    return report, md


# ----------------------------------------------------------------------- the real job
@pytest.mark.skipif(not HAVE_DATA, reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_main_cpu_one_epoch(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUACCEL_NO_DOWNLOAD", "1")
    rc = bench.main(["--device", "cpu", "--epochs", "1", "--limit", "512", "--out", str(tmp_path), "--quiet"])
    report, _ = check_report(tmp_path, ["cpu"], 1)
    assert rc == 0
    assert report["settings"]["train_images"] == 512 and report["settings"]["test_images"] == 10000


# ------------------------------------------------------------- the pipeline, faked
@pytest.fixture
def fake_run(monkeypatch):
    """Replace the model and the data so main() runs without the C engine."""
    rng = np.random.default_rng(0)
    data = (rng.random((64, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 64, dtype=np.uint8),
            rng.random((16, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 16, dtype=np.uint8))
    monkeypatch.setattr(bench, "load_fashion", lambda limit=None: data)
    monkeypatch.setattr(bench, "compiled_reference_cnn",
                        lambda device, seed=0: FakeModel(device, 2.0 if device == "cpu" else 0.5))
    monkeypatch.setattr(bench, "_cuda_status", lambda: (True, ""))


def test_main_with_fake_model_two_devices(tmp_path, fake_run, capsys):
    rc = bench.main(["--device", "cpu,cuda", "--epochs", "3", "--out", str(tmp_path)])
    assert rc == 0
    report, md = check_report(tmp_path, ["cpu", "cuda"], 3)
    assert report["speedup"]["cuda"] == {"speedup": pytest.approx(4.0), "basis": "steady"}
    assert "4.00x" in md and "speedup vs cpu" in md
    printed = capsys.readouterr().out
    assert "1 (warm-up)" in printed and "4.00x" in printed


def test_failed_device_is_reported(tmp_path, fake_run, monkeypatch):
    monkeypatch.setattr(bench, "_cuda_status", lambda: (False, "no NVIDIA driver"))
    rc = bench.main(["--device", "cpu,cuda", "--epochs", "2", "--out", str(tmp_path), "--quiet"])
    assert rc == 1
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["devices"][1]["error"] == "CUDA not available: no NVIDIA driver"
    assert "no NVIDIA driver" in (tmp_path / "report.md").read_text()


def test_missing_data_is_a_clean_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GPUACCEL_NO_DOWNLOAD", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("GPUACCEL_DATA", raising=False)
    monkeypatch.setattr(datasets, "DEBIAN_DIR", str(tmp_path / "nodebian"))
    assert bench.main(["--device", "cpu", "--out", str(tmp_path), "--quiet"]) == 2
    assert "apt-get install dataset-fashion-mnist" in capsys.readouterr().err


def test_bad_options():
    with pytest.raises(SystemExit):
        bench.parse_args(["--epochs", "0"])


# ------------------------------------------------------------------ formatting only
def test_epoch_table_formatting():
    rows = bench.history_rows(fake_history(3))
    text = bench.format_epochs(rows)
    lines = text.splitlines()
    assert len(lines) == 4 and lines[0].split()[:3] == ["epoch", "time", "s"]
    assert "1 (warm-up)" in lines[1] and "3.50" in lines[1] and "26.0" in lines[1]
    assert lines[2].split()[0] == "2" and "2.00" in lines[2] and "30,000" in lines[2]
    assert len({len(line) for line in lines}) == 1  # aligned columns
    md = bench.format_epochs(rows, markdown=True).splitlines()
    assert md[0].startswith("| epoch |") and md[1].startswith("|---:") and len(md) == 5


def test_summary_steady_state_and_single_epoch():
    s = bench.summarize(bench.history_rows(fake_history(3)))
    assert s["warmup_epoch_time_s"] == 3.5 and s["steady_epoch_time_s"] == 2.0
    assert s["final_val_accuracy"] == pytest.approx(0.87)
    one = bench.summarize(bench.history_rows(fake_history(1)))
    assert one["epochs"] == 1 and one["steady_epoch_time_s"] is None
    results = [{"device": "cpu", "summary": one, "error": None},
               {"device": "cuda", "summary": bench.summarize(bench.history_rows(fake_history(1, 0.25))), "error": None}]
    assert bench.speedups(results)["cuda"]["basis"] == "warmup"
    table = bench.format_summary(results)
    assert "(warm-up)" in table and "-" in table


# ------------------------------------------------------------------------ the doctor
def test_info_never_raises_and_is_json():
    d = info_mod.info()
    json.dumps(d)
    assert d["python"] and d["cpu"]["logical_cores"] >= 1
    assert isinstance(d["cuda"]["available"], bool)
    if not d["cuda"]["available"]:
        assert d["cuda"]["diagnosis"]
    assert "CUDA" in info_mod.format_info(d)


def test_info_with_a_fake_gpu(monkeypatch):
    fake = types.ModuleType("gpuaccel.cuda")
    fake.is_available = lambda: True
    fake.unavailable_reason = lambda: ""
    fake.device_count = lambda: 2
    fake.compiled_archs = lambda: ["sm_80", "sm_90", "compute_90"]
    fake.versions = lambda: {"runtime": "12.4", "driver": "12.6", "cublas": "12.4.5"}

    def props(i):
        if i == 1:
            raise RuntimeError("device 1 fell off the bus")
        return {"name": "NVIDIA H200", "major": 9, "minor": 0, "compute_capability": "9.0",
                "multiprocessors": 132, "total_memory": 141 * 2**30}

    fake.get_device_properties = props
    import gpuaccel

    monkeypatch.setitem(sys.modules, "gpuaccel.cuda", fake)
    monkeypatch.setattr(gpuaccel, "cuda", fake, raising=False)
    d = info_mod.info()
    gpu0, gpu1 = d["cuda"]["devices"]
    assert gpu0["code"] == "native" and "sm_90" in gpu0["code_detail"]
    assert "fell off the bus" in gpu1["error"]
    text = info_mod.format_info(d)
    assert "NVIDIA H200" in text and "native SASS" in text and "141.0 GiB" in text


def test_info_with_a_broken_cuda_module(monkeypatch):
    fake = types.ModuleType("gpuaccel.cuda")  # has none of the functions
    import gpuaccel

    monkeypatch.setitem(sys.modules, "gpuaccel.cuda", fake)
    monkeypatch.setattr(gpuaccel, "cuda", fake, raising=False)
    d = info_mod.info()
    assert d["cuda"]["available"] is False and d["cuda"]["diagnosis"]


@pytest.mark.parametrize("cc, archs, kind", [
    ((9, 0), ["sm_90"], "native"),
    ((8, 6), ["sm_80"], "native"),          # same major, higher minor: binary compatible
    ((9, 0), ["sm_80", "compute_80"], "ptx-jit"),
    ((8, 0), ["sm_90", "compute_90"], "none"),  # PTX newer than the device cannot run
    ((9, 0), ["sm_90a"], "native"),
    ((10, 0), ["sm_90a", "compute_90"], "ptx-jit"),
])
def test_code_for_device(cc, archs, kind):
    assert info_mod.code_for_device(*cc, archs)[0] == kind


def test_info_cli(capsys):
    assert info_mod.main(["--json"]) == 0
    assert "cuda" in json.loads(capsys.readouterr().out)
