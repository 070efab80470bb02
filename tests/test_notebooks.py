"""Execute the study notebooks top to bottom with nbclient, at small sizes.

GPUACCEL_NB_SMALL=1 makes each notebook's parameter cell pick sizes that run in seconds
on two CPU cores. The committed notebooks keep the outputs of a real run at larger sizes;
executing here works on a copy and never rewrites them. Nothing here checks a timing.
"""
import os
import pathlib

import pytest

from gpuaccel import datasets

nbformat = pytest.importorskip("nbformat", reason="pip install nbformat nbclient ipykernel (make deps)")
nbclient = pytest.importorskip("nbclient", reason="pip install nbclient ipykernel (make deps)")
pytest.importorskip("ipykernel", reason="pip install ipykernel (make deps)")
pytest.importorskip("matplotlib", reason="pip install matplotlib (make deps)")

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
NAMES = ["01_cpu_baseline", "02_gpu_training", "03_cpu_vs_gpu", "04_kernels", "05_transfer_learning",
         "06_your_images"]
NEEDS_DATA = {"01_cpu_baseline", "02_gpu_training", "03_cpu_vs_gpu", "05_transfer_learning", "06_your_images"}
HAVE_DATA = all(os.path.isfile(os.path.join(datasets.DEBIAN_DIR, f + ".gz"))
                for f in datasets.fashion_mnist.files.values()) or bool(os.environ.get("GPUACCEL_DATA"))


def outputs_text(cell):
    """All text a code cell printed or displayed."""
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out["text"])
        elif "data" in out:
            parts.append(out["data"].get("text/plain", ""))
        elif out.get("output_type") == "error":
            parts.append("\n".join(out.get("traceback", [])))
    return "".join(parts)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_top_to_bottom(name, tmp_path, monkeypatch):
    if name in NEEDS_DATA and not HAVE_DATA:
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    monkeypatch.setenv("GPUACCEL_NB_SMALL", "1")
    monkeypatch.setenv("GPUACCEL_NO_DOWNLOAD", "1")
    # the kernel runs in tmp_path: let it import this checkout even when it is not pip-installed
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    params = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "each notebook has exactly one cell tagged 'parameters'"
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the failing cell, on any error
    code = [c for c in nb.cells if c.cell_type == "code"]
    first = outputs_text(code[1])  # the cell after the parameters: when, where, with which sizes
    assert "Executed" in first and "SMALL sizes" in first and "CPU:" in first
    if name in ("01_cpu_baseline", "02_gpu_training"):
        # the progress bar: one display per epoch, updated in place (never one output per step)
        fit_cell = next(c for c in code if ".fit(" in c.source)
        bars = [o for o in fit_cell.outputs if "data" in o and "ms/step" in o["data"].get("text/plain", "")]
        assert len(bars) == 2 and all("val_accuracy" in o["data"]["text/plain"] for o in bars)
    if name == "01_cpu_baseline":
        assert sum("image/png" in o.get("data", {}) for c in code for o in c.outputs) == 2
    if name == "02_gpu_training":
        text = "".join(outputs_text(c) for c in code)
        assert "DEVICE =" in text
        if "DEVICE = cpu" in text and "CPU emulator" not in text:  # the emulator says why itself
            assert "Why (ga.cuda.unavailable_reason()):" in text and "Diagnosis:" in text
    if name == "03_cpu_vs_gpu":
        images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
        assert len(images) == 5
    if name == "06_your_images":
        text = "".join(outputs_text(c) for c in code)
        # the folder was written, loaded (then again from the cache), trained on, fine-tuned
        assert "10 classes" in text and "second load" in text and "(the cache: .gpuaccel-cache" in text
        assert "| cpu |" in text and "pretrained, fine-tuned" in text
        if "cuda" in text.split("Devices:")[1].splitlines()[0]:
            assert "| cuda |" in text and "speed-up" in text
        images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
        assert len(images) == 3


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_carries_a_real_run(name):
    """The notebooks in the repository keep the outputs of a real run, stated as such:
    the first code cell after the parameters says when and on which machine."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    first = outputs_text(code[1])
    assert "Executed" in first and "CPU:" in first, f"{name}: run it and commit it with its outputs"
    assert not any(o.get("output_type") == "error" for c in code for o in c.get("outputs", []))
    assert all(c.get("outputs") or not c.source.strip() for c in code[1:]), f"{name}: a cell has no output"
