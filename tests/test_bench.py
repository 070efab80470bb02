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

import gpuaccel
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
    """Stands in for a compiled Sequential: fit() calls the callbacks' epoch and batch
    hooks and returns a fake History whose images/s scale with the batch size."""

    def __init__(self, device, base):
        self.device, self.base = device, base

    def fit(self, x, y, epochs, batch_size, validation_data, verbose, seed, callbacks=()):
        assert x.dtype == np.float32 and x.shape[1:] == (1, 28, 28) and len(x) == len(y)
        for epoch in range(epochs):
            for cb in callbacks:
                cb.on_epoch_begin(epoch)
            for step in range(-(-len(x) // batch_size)):
                for cb in callbacks:
                    cb.on_batch_end(step, {})
        history = fake_history(epochs, self.base)
        history["images_per_s"] = [v * batch_size / 128 for v in history["images_per_s"]]
        if validation_data is None:
            del history["val_loss"], history["val_accuracy"]
        return types.SimpleNamespace(history=history)


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
    rc = bench.main(["--device", "cpu", "--epochs", "1", "--limit", "256", "--test-limit", "200",
                     "--batch-sizes", "64,256", "--sweep-limit", "256", "--out", str(tmp_path), "--quiet"])
    report, md = check_report(tmp_path, ["cpu"], 1)
    assert rc == 0
    assert report["settings"]["train_images"] == 256 and report["settings"]["test_images"] == 200
    assert len(report["devices"][0]["epochs"][0]["step_times_ms"]) == 2  # 256 images / batch 128
    kernels = report["devices"][0]["conv_kernels"]  # what each conv ran, measured on this machine
    assert len(kernels) == 2 and all(k.endswith("(auto)") for k in kernels)
    assert f"Convolutions ran: {', '.join(kernels)}." in md
    assert [r["batch_size"] for r in report["sweep"]] == [64, 256]
    assert all(r["images_per_s"] > 0 and r["error"] is None for r in report["sweep"])
    for name, file in report["plots"].items():
        assert (tmp_path / file).stat().st_size > 1000 and f"]({file})" in md


# ------------------------------------------------------------- the pipeline, faked
@pytest.fixture
def fake_run(monkeypatch):
    """Replace the model and the data so main() runs without the C engine."""
    rng = np.random.default_rng(0)
    data = (rng.random((64, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 64, dtype=np.uint8),
            rng.random((16, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 16, dtype=np.uint8))
    monkeypatch.setattr(bench, "load_fashion", lambda limit=None, test_limit=None: data)
    monkeypatch.setattr(bench, "compiled_reference_cnn",
                        lambda device, seed=0, **settings: FakeModel(device, 2.0 if device == "cpu" else 0.5))
    monkeypatch.setattr(bench, "_cuda_status", lambda: (True, ""))
    monkeypatch.setattr(bench, "_cuda_emulated", lambda: False)  # a fake real GPU, also on the emulator


def test_main_with_fake_model_two_devices(tmp_path, fake_run, capsys):
    rc = bench.main(["--device", "cpu,cuda", "--epochs", "3", "--batch-sizes", "8,32", "--out", str(tmp_path)])
    assert rc == 0
    report, md = check_report(tmp_path, ["cpu", "cuda"], 3)
    assert report["speedup"]["cuda"] == {"speedup": pytest.approx(4.0), "basis": "steady"}
    assert "4.00x" in md and "speedup vs cpu" in md
    printed = capsys.readouterr().out
    assert "1 (warm-up)" in printed and "4.00x" in printed
    # every epoch row keeps its step times (64 images / batch 128 = 1 step)
    assert all(len(row["step_times_ms"]) == 1 for row in report["devices"][0]["epochs"])
    # the sweep: one point per device and batch size, no evaluation
    assert [(r["device"], r["batch_size"]) for r in report["sweep"]] == [("cpu", 8), ("cpu", 32), ("cuda", 8), ("cuda", 32)]
    assert report["crossover"]["batch_size"] is None and "cuda is faster at every" in report["crossover"]["note"]
    assert "## Batch-size sweep" in md and "| batch size |" in md
    # the plots exist, are PNG files and are embedded in report.md
    assert set(report["plots"]) == {"epoch_time", "step_time", "batch_sweep", "accuracy", "speedup"}
    for file in report["plots"].values():
        assert (tmp_path / file).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({file})" in md
    assert "## Environment" in md and "CUDA" in md


def test_no_plots_and_no_sweep(tmp_path, fake_run):
    assert bench.main(["--device", "cpu", "--epochs", "1", "--no-sweep", "--no-plots", "--out", str(tmp_path),
                       "--quiet"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["sweep"] == [] and "plots" not in report
    assert not list(tmp_path.glob("*.png"))


def test_peers_missing_are_recorded_not_fatal(tmp_path, fake_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "gpuaccel.study.peers", None)  # import fails...
    monkeypatch.delattr(gpuaccel.study, "peers", raising=False)  # ...even if an earlier test imported it
    rc = bench.main(["--device", "cpu", "--epochs", "2", "--peers", "--no-sweep", "--out", str(tmp_path), "--quiet"])
    assert rc == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert [p["device"] for p in report["peers"]] == ["keras-cpu", "torch-cpu"]
    assert all("gpuaccel.peers is not available" in p["error"] for p in report["peers"])
    assert "keras-cpu" in (tmp_path / "report.md").read_text()


def test_peers_results_join_the_comparison(tmp_path, fake_run, monkeypatch):
    calls = []

    def run(name, data, epochs, batch_size, seed, isolate=False):
        calls.append((name, len(data[0]), epochs, batch_size, seed))
        if name == "torch":
            raise RuntimeError("torch exploded")
        rows = bench.history_rows(fake_history(epochs, 8.0))
        return {"device": f"{name}-cpu", "epochs": rows, "summary": bench.summarize(rows), "error": None}

    monkeypatch.setitem(sys.modules, "gpuaccel.study.peers", types.SimpleNamespace(run=run))
    monkeypatch.delattr(gpuaccel.study, "peers", raising=False)  # an earlier import must not win
    rc = bench.main(["--device", "cpu", "--epochs", "2", "--peers", "--no-sweep", "--out", str(tmp_path), "--quiet"])
    assert rc == 0 and calls == [("keras", 64, 2, 128, 0), ("torch", 64, 2, 128, 0)]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["speedup"]["keras-cpu"]["speedup"] == pytest.approx(0.25)
    assert "torch exploded" in report["peers"][1]["error"]


def test_sweep_with_thread_scaling_and_peers(tmp_path, fake_run, monkeypatch):
    """--sweep-threads 1,2 --peers: every CPU point at each thread count, the peers swept
    the same way (each point in its own call), one column per (device, threads)."""
    calls, threads_seen = [], []
    real_set = gpuaccel.set_num_threads

    def run(name, data, epochs, batch_size, seed, threads=None, isolate=False):
        calls.append((name, batch_size, threads, isolate))
        rows = bench.history_rows(fake_history(epochs, 8.0))
        return {"device": f"{name}-cpu", "epochs": rows, "summary": bench.summarize(rows), "error": None}

    def set_threads(n):
        threads_seen.append(n)
        real_set(n)

    monkeypatch.setitem(sys.modules, "gpuaccel.study.peers", types.SimpleNamespace(run=run))
    monkeypatch.delattr(gpuaccel.study, "peers", raising=False)
    monkeypatch.setattr(gpuaccel, "set_num_threads", set_threads)
    before = gpuaccel.get_num_threads()
    rc = bench.main(["--device", "cpu", "--epochs", "2", "--batch-sizes", "1,8", "--sweep-threads", "1,2",
                     "--peers", "--out", str(tmp_path), "--quiet"])
    assert rc == 0
    assert gpuaccel.get_num_threads() == before  # the sweep puts the thread count back
    assert 1 in threads_seen and 2 in threads_seen
    report = json.loads((tmp_path / "report.json").read_text())
    cpu = [(r["label"], r["threads"], r["batch_size"]) for r in report["sweep"] if r["device"] == "cpu"]
    assert cpu == [("cpu 1 thr", 1, 1), ("cpu 1 thr", 1, 8), ("cpu 2 thr", 2, 1), ("cpu 2 thr", 2, 8)]
    sweep_calls = [c for c in calls if c[2] is not None]
    assert sweep_calls == [(n, bs, t, True) for n in ("keras", "torch") for t in (1, 2) for bs in (1, 8)]
    assert {r["label"] for r in report["sweep"]} >= {"keras-cpu 1 thr", "torch-cpu 2 thr"}
    assert all(r["images_per_s"] > 0 and r["error"] is None for r in report["sweep"])
    md = (tmp_path / "report.md").read_text()
    assert "cpu 1 thr images/s" in md and "keras-cpu 2 thr images/s" in md
    assert report["settings"]["sweep_threads"] == [1, 2]


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


@pytest.mark.parametrize("argv", [["--epochs", "0"], ["--batch-sizes", "32,x"], ["--batch-sizes", "0,8"],
                                  ["--test-limit", "0"], ["--sweep-limit", "-1"]])
def test_bad_options(argv):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)


def test_busy_note():
    assert bench.busy_note({"load_average": [0.3, 0.8], "usable_cores": 2}) == ""
    assert "unreliable" in bench.busy_note({"load_average": [0.3, 5.0], "usable_cores": 2})
    assert bench.busy_note({}) == ""
    # the measured CPU use of other processes wins over the lagging load average
    assert bench.busy_note({"other_cpu_load": 0.1, "load_average": [3.0, 5.0], "usable_cores": 2}) == ""
    note = bench.busy_note({"other_cpu_load": 1.2, "load_average": [0.0, 0.0], "usable_cores": 2})
    assert "1.2 of 2 usable cores" in note and "unreliable" in note


def test_other_cpu_load_sees_another_process_not_this_one():
    import subprocess
    import time

    if bench.cpu_snapshot() is None:
        pytest.skip("no /proc/stat here")
    # what the rest of the machine does anyway (CI or other sessions may share it)
    snap = bench.cpu_snapshot()
    time.sleep(0.6)
    background = bench.other_cpu_load(snap)
    snap = bench.cpu_snapshot()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 0.6:  # this process busy: must not count
        pass
    mine = bench.other_cpu_load(snap)
    spinner = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<5: pass"])
    try:
        time.sleep(0.3)
        snap = bench.cpu_snapshot()
        time.sleep(0.8)
        other = bench.other_cpu_load(snap)  # the spinner is not a waited-for child yet: it counts
    finally:
        spinner.kill()
        spinner.wait()
    # counting this process would add a whole core to what the others use while it sleeps
    assert mine < background + 0.6, (mine, background)
    assert other > 0.5, other


@pytest.mark.parametrize("cpu, gpu, at, words", [
    ([100, 200, 300], [50, 250, 900], 64 * 2 ** (1 / 3), "cuda is faster above a batch of about 81"),
    ([100, 200, 300], [150, 400, 900], None, "cuda is faster at every"),
    ([100, 200, 300], [50, 100, 150], None, "cpu is faster at every"),
])
def test_crossover(cpu, gpu, at, words):
    from gpuaccel.plots import crossover

    sweep = [{"device": d, "batch_size": bs, "images_per_s": v}
             for d, values in (("cpu", cpu), ("cuda", gpu)) for bs, v in zip((32, 128, 512), values)]
    cross = crossover(sweep)
    assert cross["batch_size"] == (None if at is None else pytest.approx(at))
    assert words in cross["note"]
    assert crossover(sweep[:3])["batch_size"] is None  # no GPU rows


def test_plots_of_a_cpu_only_report_with_a_failed_gpu(tmp_path):
    from gpuaccel import plots

    rows = bench.history_rows(fake_history(3))
    for row in rows:
        row["step_times_ms"] = list(np.linspace(3, 9, 20))
    report = {"settings": {"train_images": 64, "test_images": 16, "batch_size": 8, "sweep_images": 64},
              "devices": [{"device": "cpu", "epochs": rows, "summary": bench.summarize(rows), "error": None},
                          {"device": "cuda", "epochs": [], "summary": {"epochs": 0}, "error": "no driver"}],
              "sweep": [{"device": "cpu", "batch_size": 8, "images_per_s": 10.0, "error": None},
                        {"device": "cuda", "batch_size": 8, "images_per_s": None, "error": "no driver"}]}
    written = plots.write_plots(report, tmp_path)
    assert sorted(written) == sorted(plots.PLOTTERS)
    for file in written.values():
        assert (tmp_path / file).stat().st_size > 1000
    empty = plots.write_plots({"devices": []}, tmp_path / "empty")  # nothing trained: still draws, never raises
    assert "batch_sweep" not in empty and len(empty) == 4


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


# ------------------------------------------------------------------- the progress bar
class FakeTTY:
    """A stream that says it is a terminal and records what was written."""

    def __init__(self, tty=True):
        self.text, self.tty = "", tty

    def write(self, s):
        self.text += s

    def flush(self):
        pass

    def isatty(self):
        return self.tty


def drive(bar, epochs=2, steps=50):
    """Call the bar's hooks like fit() does, with no time passing between steps."""
    bar.on_train_begin({"epochs": epochs, "steps": steps})
    for epoch in range(epochs):
        bar.on_epoch_begin(epoch)
        for i in range(steps):
            bar.on_batch_end(i, {"loss": 1.0 / (i + 1), "accuracy": 0.5})
        bar.on_epoch_end(epoch, {"loss": 0.1, "accuracy": 0.9, "val_loss": 0.2, "val_accuracy": 0.8,
                                 "epoch_time_s": 1.5, "step_time_ms_p50": 30.0})


def test_progress_bar_terminal_is_throttled():
    from gpuaccel.callbacks import ProgressBar

    out = FakeTTY()
    drive(ProgressBar(1, stream=out, interval=3600))
    assert out.text.count("Epoch ") == 2 and out.text.count("\n") == 4  # header + final line per epoch
    assert out.text.count("\r") == 4  # one redraw (the first step) and the final line, per epoch
    assert "50/50 [==============================] - 2s 30ms/step - loss: 0.1000" in out.text
    assert "val_accuracy: 0.8000" in out.text and "ETA" in out.text


def test_progress_bar_pipe_writes_finished_lines_only():
    from gpuaccel.callbacks import ProgressBar

    out = FakeTTY(tty=False)
    drive(ProgressBar(1, stream=out, interval=0))
    assert "\r" not in out.text and "ETA" not in out.text
    assert len(out.text.splitlines()) == 4


def test_progress_bar_verbose_2_and_0():
    from gpuaccel.callbacks import ProgressBar

    out = FakeTTY()
    drive(ProgressBar(2, stream=out, interval=0))
    assert out.text.splitlines()[0].startswith("Epoch 1/2 - 1.5s - 30ms/step - loss: 0.1000")
    assert len(out.text.splitlines()) == 2 and "\r" not in out.text
    silent = FakeTTY()
    drive(ProgressBar(0, stream=silent, interval=0))
    assert silent.text == ""
    with pytest.raises(ValueError):
        ProgressBar(3)


def test_progress_bar_in_jupyter_updates_one_display_per_epoch(monkeypatch):
    import IPython.display
    from gpuaccel.callbacks import ProgressBar

    shown = []

    class Handle:
        def __init__(self, i):
            self.i = i

        def update(self, obj, raw=False):
            shown[self.i].append(obj["text/plain"])

    def display(obj, raw=False, display_id=False):
        assert raw and display_id
        shown.append([obj["text/plain"]])
        return Handle(len(shown) - 1)

    monkeypatch.setattr(IPython.display, "display", display)
    out = FakeTTY()
    drive(ProgressBar(1, stream=None, notebook=True, interval=3600), epochs=3)
    assert out.text == "" and len(shown) == 3  # one display per epoch, updated in place
    for epoch, lines in enumerate(shown):
        assert len(lines) == 2  # the first redraw, then the finished line
        assert lines[-1].startswith(f"Epoch {epoch + 1}/3\n50/50 [") and "val_accuracy: 0.8000" in lines[-1]


def test_info_reads_the_nvcc_version(tmp_path):
    nvcc = tmp_path / "nvcc"
    nvcc.write_text("#!/bin/sh\necho 'Cuda compilation tools, release 12.4, V12.4.131'\n")
    nvcc.chmod(0o755)
    assert info_mod._nvcc_version(str(nvcc)) == "12.4"
    assert info_mod._nvcc_version(None) is None


def _colour_folder(root, classes=("cat", "dog", "fox"), per_class=12, size=(20, 26)):
    """A small folder of colour PNG files, one sub-folder per class, each class its own hue."""
    Image = pytest.importorskip("PIL.Image", reason="pip install pillow (make deps)")
    rng = np.random.default_rng(0)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 60, (*size, 3), dtype=np.uint8)
            img[..., k] += 150
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root


def test_bench_on_a_folder_of_your_images(tmp_path, capsys):
    """--data DIR --image-size 16: the reference CNN built for (3, 16, 16) and 3 classes trains
    on the folder on the CPU, the held-out split is the test set, and the report says so."""
    folder = _colour_folder(tmp_path / "photos")
    rc = bench.main(["--device", "cpu", "--data", str(folder), "--image-size", "16", "--epochs", "1",
                     "--no-sweep", "--no-plots", "--out", str(tmp_path / "out"), "--quiet"])
    assert rc == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    s = report["settings"]
    assert s["image_shape"] == [3, 16, 16] and s["classes"] == 3 and s["class_names"] == ["cat", "dog", "fox"]
    assert s["train_images"] + s["test_images"] == 36 and s["test_images"] > 0
    assert report["devices"][0]["error"] is None
    assert str(folder) in (tmp_path / "out" / "report.md").read_text().splitlines()[0]


def test_bench_data_errors_are_clean(tmp_path, capsys):
    assert bench.main(["--device", "cpu", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path),
                       "--quiet"]) == 2
    assert "cannot load" in capsys.readouterr().err
    for argv in (["--image-size", "0"], ["--image-size", "3x"], ["--validation-split", "1.5"]):
        with pytest.raises(SystemExit):
            bench.parse_args(argv)
    assert bench.parse_args(["--image-size", "48x64"]).image_size == (48, 64)


def test_missing_matplotlib_names_the_plots_extra(tmp_path, fake_run, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.delitem(sys.modules, "matplotlib.pyplot", raising=False)
    rc = bench.main(["--device", "cpu", "--epochs", "1", "--no-sweep", "--out", str(tmp_path), "--quiet"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "no plots: matplotlib is not installed" in err and 'pip install "gpuaccel[plots]"' in err
    assert "gpuaccel[plots]" in (tmp_path / "report.md").read_text()


# ------------------------------------------------------------------ --compare (gpuaccel.compare)
def _two_reports(tmp_path, second=()):
    paths = []
    for name, extra in (("a", ["--threads", "1"]), ("b", ["--threads", "2", *second])):
        rc = bench.main(["--device", "cpu,cuda", "--epochs", "2", "--batch-sizes", "8,32", "--out",
                         str(tmp_path / name), "--quiet", *extra])
        assert rc == 0
        paths.append(tmp_path / name / "report.json")
    return paths


def test_compare_sets_two_runs_side_by_side(tmp_path, fake_run, capsys):
    a, b = _two_reports(tmp_path)
    out = tmp_path / "cmp"
    assert bench.main(["--compare", str(a), str(b.parent), "--out", str(out)]) == 0  # a file or its folder
    md = (out / "compare.md").read_text()
    table = json.loads((out / "compare.json").read_text())["rows"]
    assert [(r["run"], r["device"], r["threads"]) for r in table] == [
        ("run A", "cpu", 1), ("run A", "cuda", 1), ("run B", "cpu", 2), ("run B", "cuda", 2)]
    # the fake CPU epoch takes 2.0 s and the fake GPU 0.5 s: speedups over run A's CPU
    assert [round(r["speedup"], 2) for r in table] == [1.0, 4.0, 1.0, 4.0]
    assert "| run B | cuda | 2 | 0.50 |" in md and "4.00x" in md
    assert "not directly comparable" not in md  # only the thread count differs: that is the point
    assert "Images/s per batch size" in md and "run A cpu" in md
    printed = capsys.readouterr().out
    assert "run B         cuda 2 thr:" in printed and "4.00x" in printed and "wrote " in printed
    if importlib.util.find_spec("matplotlib"):
        for png in ("compare_images_per_s.png", "compare_batch_sweep.png", "compare_accuracy.png"):
            assert (out / png).stat().st_size > 1000 and f"({png})" in md


def test_compare_warns_about_unfair_settings(tmp_path, fake_run, capsys):
    a, b = _two_reports(tmp_path, second=["--batch-size", "64", "--epochs", "3"])
    assert bench.main(["--compare", str(a), str(b), "--out", str(tmp_path / "cmp"), "--no-plots"]) == 0
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "not directly comparable" in md and "batch size: run A 128, run B 64" in md and "epochs: run A 2, run B 3" in md
    err = capsys.readouterr().err
    assert "warning: the runs differ in batch size" in err and "warning: the runs differ in epochs" in err


def test_compare_bad_inputs_are_clean_errors(tmp_path, capsys):
    (tmp_path / "x.json").write_text("{}")
    (tmp_path / "bad.json").write_text("{not json")
    for argv, words in ((["--compare", str(tmp_path / "x.json")], "at least two"),
                        (["--compare", str(tmp_path / "x.json"), str(tmp_path / "x.json")], "not a report"),
                        (["--compare", str(tmp_path / "bad.json"), str(tmp_path / "x.json")], "not JSON"),
                        (["--compare", str(tmp_path / "nope.json"), str(tmp_path / "x.json")], "cannot read")):
        assert bench.main(argv + ["--out", str(tmp_path / "o")]) == 2
        assert words in capsys.readouterr().err
