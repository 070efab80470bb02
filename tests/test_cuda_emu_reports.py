"""The Python side of the CUDA emulator (issue 11): gpuaccel.cuda, the doctor and the
bench say that an emulated 'cuda' device is not a GPU.

Runs without the emulator: gpuaccel.cuda's module state is replaced by a fake
gpuaccel._cuda (restored after each test). Nothing trains on the fake device; the bench's
formatting is fed result dicts built by hand.
"""
import importlib
import json
import re
import types
import warnings

import numpy as np
import pytest

import gpuaccel as ga
from gpuaccel import bench, cuda

info_mod = importlib.import_module("gpuaccel.info")  # the module, not the function ga.info

EMU_NAME = "gpuaccel CUDA emulator (CPU, not a GPU)"


def fake_module(emulated=1):
    """A stand-in for gpuaccel._cuda as the contract of issue 11 describes it;
    emulated=None: an old build with no EMULATED constant."""
    m = types.SimpleNamespace(
        probe=lambda: (True, ""), device_count=lambda: 1, backend=lambda: "capsule",
        get_device_properties=lambda i: {"name": EMU_NAME if emulated else "NVIDIA H200", "major": 9,
                                         "minor": 0, "compute_capability": "9.0", "multiprocessors": 4,
                                         "total_memory": 8 * 2**30},
        compiled_archs=lambda: ["emulator"] if emulated else ["sm_90", "compute_90"],
        versions=lambda: ({"runtime": "13.0", "driver": "13.0", "cublas": "13.0.0-emulated"} if emulated else
                          {"runtime": "13.0", "driver": "13.0", "cublas": "13.0.0"}))
    if emulated is not None:
        m.EMULATED = emulated
    return m


@pytest.fixture
def fake_cuda():
    """install(module) makes gpuaccel.cuda see `module` as gpuaccel._cuda (None: not built)."""
    saved_state, saved_warned = dict(cuda._state), set(cuda._warned)

    def install(module):
        cuda._state.clear()
        cuda._state.update(module=module, import_error="" if module else cuda.NOT_BUILT)
        cuda._warned.clear()
        return module

    yield install
    cuda._state.clear()
    cuda._state.update(saved_state)
    cuda._warned.clear()
    cuda._warned.update(saved_warned)


@pytest.fixture
def emulator(fake_cuda):
    return fake_cuda(fake_module(1))


# ------------------------------------------------------------------------ gpuaccel.cuda
@pytest.mark.parametrize("module, expected", [(fake_module(1), True), (fake_module(0), False),
                                              (fake_module(None), False), (None, False)])
def test_is_emulated_follows_the_module_constant(fake_cuda, module, expected):
    fake_cuda(module)
    assert cuda.is_emulated() is expected
    assert "is_emulated" in cuda.__all__


def test_the_emulated_device_is_listed(emulator):
    assert cuda.is_available() and ga.devices() == ["cpu", "cuda:0"]


def test_no_arch_warning_on_the_emulator(emulator):
    assert cuda.code_for(9, 0)[0] == "emulated"
    with warnings.catch_warnings():
        warnings.simplefilter("error", cuda.CudaArchWarning)
        assert cuda._backend_capsule() == "capsule"


def test_a_real_gpu_without_native_code_still_warns(fake_cuda):
    m = fake_cuda(fake_module(0))
    m.compiled_archs = lambda: ["sm_80", "compute_80"]
    with pytest.warns(cuda.CudaArchWarning, match="JIT-compiles PTX"):
        cuda._backend_capsule()


# ---------------------------------------------------------------------------- the doctor
def test_info_labels_the_emulator(emulator):
    d = info_mod.info()
    json.dumps(d)
    c = d["cuda"]
    assert c["emulated"] is True and c["available"] and not c["diagnosis"]
    assert c["devices"][0]["code"] == "emulated"
    text = info_mod.format_info(d)
    assert re.search(r"cuda:0\s+" + re.escape(f"{EMU_NAME} -- EMULATED: correctness only, timings are not "
                                               "GPU timings"), text), text
    assert re.search(r"built for\s+CPU emulator of the CUDA execution model \(GPUACCEL_CUDA_EMU=1\)", text)
    assert "GPU 0" not in text and "sm_" not in text and "rebuild" not in text
    assert re.search(r"driver\s+13.0 \(emulated\)", text)


@pytest.mark.parametrize("module", [fake_module(0), fake_module(None)])
def test_info_of_a_real_gpu_has_no_emulator_labels(fake_cuda, module):
    fake_cuda(module)
    d = info_mod.info()
    assert d["cuda"]["emulated"] is False
    text = info_mod.format_info(d)
    assert re.search(r"GPU 0\s+NVIDIA H200, compute capability 9.0, 4 SMs, 8.0 GiB", text)
    assert "emulat" not in text.lower()
    assert re.search(r"built for\s+sm_90 compute_90\n", text)


def test_machine_lines_label_the_emulator(emulator):
    lines = bench.machine_lines(info_mod.info())
    assert f"cuda:0: {EMU_NAME} -- emulated: not GPU timings" in lines
    assert not any(line.startswith("GPU ") for line in lines)


# ----------------------------------------------------------------------------- the bench
def test_default_devices_leave_the_emulator_out(fake_cuda):
    fake_cuda(fake_module(1))
    assert bench.default_devices() == ["cpu"]
    assert bench._cuda_skip_reason() == ("the CUDA emulator (GPUACCEL_CUDA_EMU build) is not a GPU; ask for it "
                                         "with --device cpu,cuda to run it anyway")
    fake_cuda(fake_module(0))
    assert bench.default_devices() == ["cpu", "cuda"]
    fake_cuda(None)
    assert bench.default_devices() == ["cpu"] and bench._cuda_skip_reason() == cuda.NOT_BUILT


def test_train_marks_its_result(emulator):
    """The one source of truth: train() sets result['emulated'] (a fake model, no device)."""
    class Model:
        def fit(self, x, y, epochs, batch_size, validation_data, verbose, seed, callbacks=()):
            return types.SimpleNamespace(history=fake_history(epochs))

    data = (np.zeros((8, 1, 28, 28), np.float32), np.zeros(8, np.uint8)) * 2
    assert bench.train("cuda", data, 2, 8, 0, build=lambda device, seed: Model())["emulated"] is True
    assert bench.train("cpu", data, 2, 8, 0, build=lambda device, seed: Model())["emulated"] is False


def fake_history(epochs=3, base=2.0):
    e = np.arange(epochs, dtype=float)
    return {"loss": list(0.6 / (e + 1)), "accuracy": list(0.8 + 0.02 * e), "val_loss": list(0.5 / (e + 1)),
            "val_accuracy": list(0.85 + 0.01 * e), "epoch_time_s": list(base + (e == 0) * 1.5),
            "step_time_ms_p50": list(4.0 + 0 * e), "step_time_ms_p95": list(6.0 + (e == 0) * 20),
            "images_per_s": list(60000 / (base + (e == 0) * 1.5))}


def result(device, base, emulated=False):
    rows = bench.history_rows(fake_history(3, base))
    for row in rows:
        row["step_times_ms"] = list(np.linspace(3, 9, 10))
    return {"device": device, "emulated": emulated, "epochs": rows, "summary": bench.summarize(rows), "error": None}


def test_summary_gives_no_speedup_for_the_emulator():
    results = [result("cpu", 2.0), result("cuda", 20.0, emulated=True)]
    assert "cuda" not in bench.speedups(results)
    table = bench.format_summary(results)
    cuda_row = next(line for line in table.splitlines() if line.lstrip().startswith("cuda"))
    assert cuda_row.lstrip().startswith("cuda (emulated)") and cuda_row.endswith("n/a (emulated)")
    assert "0.10x" not in table and "1.00x (baseline)" in table
    # a real GPU's row is unchanged
    real = bench.format_summary([result("cpu", 2.0), result("cuda", 0.5)])
    assert "4.00x" in real and "emulated" not in real


def test_sweep_rows_and_columns_are_marked():
    rows = [bench._sweep_row("cpu", "cpu", 4, 8, result("cpu", 2.0)),
            bench._sweep_row("cuda", "cuda", None, 8, result("cuda", 20.0, emulated=True))]
    assert rows[1]["emulated"] is True and rows[1]["label"] == "cuda (emulated)"
    assert "cuda (emulated) images/s" in bench.format_sweep(rows)


def emulated_report():
    return {"tool": "gpuaccel.bench", "created": "2025-01-01T00:00:00+00:00",
            "command": "python -m gpuaccel.bench --device cpu,cuda", "argv": [],
            "settings": {"devices": ["cpu", "cuda"], "epochs": 3, "batch_size": 128, "seed": 0, "threads": 4,
                         "train_images": 64, "test_images": 16, "sweep_images": 64, "sweep_epochs": 2,
                         "model": "reference CNN", "optimizer": "Adam(1e-3)"},
            "how_measured": bench.HOW_MEASURED, "info": info_mod.info(),
            "devices": [result("cpu", 2.0), result("cuda", 20.0, emulated=True)], "skipped_devices": [],
            "peers": [], "speedup": {},
            "sweep": [{"label": "cpu", "device": "cpu", "emulated": False, "threads": 4, "batch_size": bs,
                       "images_per_s": 100.0 * bs, "error": None} for bs in (8, 32)]
            + [{"label": "cuda (emulated)", "device": "cuda", "emulated": True, "threads": None, "batch_size": bs,
                "images_per_s": 1000.0 * bs, "error": None} for bs in (8, 32)],
            "crossover": None}


def test_markdown_report_marks_the_emulator(emulator, tmp_path):
    report = emulated_report()
    bench.write_report(tmp_path, report, plots=False)
    md = (tmp_path / "report.md").read_text()
    assert "## cuda (emulated)" in md and "*emulated: not GPU timings*" in md
    assert "> **Note:** cuda (emulated): EMULATED:" in md and "not GPU timings" in md
    assert "| cuda (emulated) |" in md and "n/a (emulated)" in md and "cuda (emulated) images/s" in md
    assert EMU_NAME in md  # the machine section and the embedded doctor
    saved = json.loads((tmp_path / "report.json").read_text())
    assert [r["emulated"] for r in saved["devices"]] == [False, True]


def test_plots_label_the_emulator_and_leave_it_out_of_the_speedup(emulator):
    pytest.importorskip("matplotlib")
    from gpuaccel import plots

    report = emulated_report()
    fig = plots.plot_epoch_time(report)
    assert "cuda (emulated)" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    fig = plots.plot_speedup(report)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cpu"]
    assert any("cuda (emulated): the CUDA emulator is not a GPU" in t.get_text() for t in ax.texts)
    fig = plots.plot_batch_sweep(report)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert not any("crossover:" in t for t in texts)  # no CPU/GPU crossover with an emulator
    assert any("only cpu measured" in t and "the CUDA emulator is not a GPU" in t for t in texts), texts
    assert "cuda (emulated)" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    plots._pyplot().close("all")
