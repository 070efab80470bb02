"""The CUDA build and runtime probe, checked WITHOUT needing a GPU.

Where nvcc was present at build time the CUDA module must exist; on a machine
without a GPU, CUDA must report itself unavailable with a reason and asking for
device='cuda' must raise a clear Python error, never crash. Where a GPU is
present the same calls must report it. The CUDA emulator build (GPUACCEL_CUDA_EMU=1)
must load without nvcc or a GPU and say everywhere that it is an emulator."""
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import gpuaccel as ga
from conftest import cuda_emulated, emulator_skip_reason
from gpuaccel import cuda

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env_flag(name):
    return os.environ.get(name, "").strip() not in ("", "0", "false", "no")


def _nvcc_present():
    """The same search as setup.py's find_nvcc()."""
    import shutil

    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home and os.access(os.path.join(home, "bin", "nvcc"), os.X_OK):
            return True
    return os.access("/usr/local/cuda/bin/nvcc", os.X_OK) or shutil.which("nvcc") is not None


def _gpu_present():
    """An NVIDIA device node: the driver is loaded and sees at least one GPU."""
    return os.path.exists("/dev/nvidia0")


def _cuda_module():
    if cuda_emulated():  # built with the host compiler: neither nvcc nor a GPU is needed
        import gpuaccel._cuda as m

        return m
    if _env_flag("GPUACCEL_SKIP_CUDA"):
        pytest.skip("GPUACCEL_SKIP_CUDA is set: CPU-only build")
    if not _nvcc_present():
        pytest.skip("no nvcc on this machine: CPU-only build")
    import gpuaccel._cuda as m

    return m


# ------------------------------------------------------------------------- build
def test_cuda_module_was_built():
    m = _cuda_module()
    assert m.BACKEND_ABI == ga._C.build_info()["backend_abi"]  # the two halves agree on the table
    assert m.CAPSULE_NAME == "gpuaccel._cuda.backend"


def test_backend_capsule_is_named():
    import ctypes

    m = _cuda_module()
    cap = m.backend()
    is_valid = ctypes.pythonapi.PyCapsule_IsValid
    is_valid.restype = ctypes.c_int
    is_valid.argtypes = [ctypes.py_object, ctypes.c_char_p]
    assert is_valid(cap, b"gpuaccel._cuda.backend") == 1
    assert is_valid(cap, b"something.else") == 0


def test_compiled_archs_lists_native_code_and_ptx():
    _cuda_module()
    if cuda_emulated():
        pytest.skip(emulator_skip_reason("the GPU code nvcc compiled: the emulator build carries none"))
    archs = cuda.compiled_archs()
    assert archs, "the CUDA module reports no architectures"
    assert all(re.fullmatch(r"(sm|compute)_\d+[a-z]?", a) for a in archs), archs
    sms = [a for a in archs if a.startswith("sm_")]
    ptx = [a for a in archs if a.startswith("compute_")]
    assert len(ptx) == 1 and archs[-1] == ptx[0], "PTX of exactly one (the newest) arch, listed last"
    assert ptx[0].split("_")[1] == sms[-1].split("_")[1], "the PTX is of the newest native arch"
    wanted = os.environ.get("GPUACCEL_CUDA_ARCH", "").strip()
    if wanted:
        for tok in re.split(r"[;, ]+", wanted):
            if tok:
                assert "sm_" + tok.lower().replace("sm_", "").replace(".", "") in sms
    else:
        for sm in ("sm_75", "sm_80", "sm_86", "sm_89", "sm_90"):
            assert sm in sms, f"{sm} missing from the default build: {archs}"


def test_versions():
    _cuda_module()
    if cuda_emulated():
        pytest.skip(emulator_skip_reason("the versions of a real CUDA runtime, driver and cuBLAS"))
    v = cuda.versions()
    assert set(v) >= {"runtime", "driver", "cublas"}
    assert re.fullmatch(r"\d+\.\d+", v["runtime"])
    assert v["cublas"] is None or re.fullmatch(r"\d+\.\d+\.\d+", v["cublas"])
    if not _gpu_present():
        assert v["driver"] is None or re.fullmatch(r"\d+\.\d+", v["driver"])


def test_probe_shape():
    m = _cuda_module()
    ok, reason = m.probe()
    assert isinstance(ok, bool) and isinstance(reason, str)
    assert (reason == "") == ok


# ---------------------------------------------------------------------- runtime
def test_availability_matches_the_machine():
    reason = cuda.unavailable_reason()
    assert isinstance(reason, str)
    if cuda_emulated():  # the emulated device is there on any machine
        assert cuda.is_available() and reason == "" and cuda.device_count() >= 1
    elif _gpu_present() and cuda.compiled_archs():
        assert cuda.is_available(), f"a GPU is present but CUDA is unavailable: {reason}"
        assert reason == ""
        assert cuda.device_count() >= 1
    else:
        assert cuda.is_available() is False
        assert reason, "unavailable without a reason"
        assert cuda.device_count() == 0


def test_device_properties():
    if not cuda.is_available():
        with pytest.raises(RuntimeError, match="not available"):
            cuda.get_device_properties(0)
        return
    p = cuda.get_device_properties(0)
    for key in ("name", "major", "minor", "compute_capability", "multiprocessors", "total_memory",
                "clock_rate_khz", "memory_clock_rate_khz", "memory_bus_width", "l2_cache_size"):
        assert key in p
    assert p["compute_capability"] == f"{p['major']}.{p['minor']}"
    assert p["multiprocessors"] > 0 and p["total_memory"] > 0
    with pytest.raises(ValueError):
        cuda.get_device_properties(cuda.device_count())
    with pytest.raises(TypeError):
        cuda.get_device_properties("0")


def test_resolve_cuda_without_gpu_raises_with_reason():
    if cuda.is_available():
        assert ga._device.resolve("cuda") == "cuda:0"
        return
    with pytest.raises(RuntimeError) as e:
        ga._device.resolve("cuda")
    assert cuda.unavailable_reason() in str(e.value)
    with pytest.raises(RuntimeError):
        ga._device.resolve("cuda:0")


def test_resolve_bad_device_strings():
    with pytest.raises(ValueError):
        ga._device.resolve("cuda:x")
    with pytest.raises(ValueError):
        ga._device.resolve("tpu")
    assert ga._device.resolve("cpu") == "cpu"


@pytest.mark.skipif(cuda.is_available(), reason="CUDA is available (a GPU or the CUDA emulator)")
def test_cuda_requests_raise_instead_of_crashing():
    a = np.ones((4, 3), np.float32)
    with pytest.raises(RuntimeError, match="not available"):
        ga.tensor(a, device="cuda")
    with pytest.raises(RuntimeError, match="not available"):
        ga.ops.matmul(a, a.T.copy(), device="cuda")
    assert ga.devices() == ["cpu"]


def test_the_emulator_says_it_is_one():
    """The emulator build's contract with gpuaccel.cuda, info and bench (issue 11)."""
    if not cuda_emulated():
        pytest.skip("not the CUDA emulator build (GPUACCEL_CUDA_EMU=1)")
    import warnings

    p = cuda.get_device_properties(0)
    assert "emulator" in p["name"] and "not a GPU" in p["name"]
    assert cuda.compiled_archs() == ["emulator"]
    assert cuda.code_for(p["major"], p["minor"])[0] == "emulated"
    assert cuda.versions()["cublas"].endswith("-emulated")
    assert "cuda:0" in ga.devices()
    with warnings.catch_warnings():
        warnings.simplefilter("error", cuda.CudaArchWarning)  # 'emulator' is no sm to warn about
        cuda._warned.clear()
        cuda._backend_capsule()


# ----------------------------------------------------------- import never fails
def _run(code):
    """Run `code` in a fresh interpreter from the repository root."""
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout.strip()


BLOCK_CUDA = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "gpuaccel._cuda":
            {action}
        return None
sys.meta_path.insert(0, Block())
import gpuaccel as ga
print(ga.cuda.is_available(), ga.cuda.device_count(), ga.cuda.compiled_archs(), ga.devices())
print(ga.cuda.unavailable_reason())
"""


def test_import_without_cuda_module():
    out = _run(BLOCK_CUDA.format(action="raise ModuleNotFoundError('No module named gpuaccel._cuda', name=name)"))
    first, reason = out.splitlines()
    assert first == "False 0 [] ['cpu']"
    assert reason == cuda.NOT_BUILT


def test_import_with_missing_cublas():
    msg = "libcublas.so.13: cannot open shared object file: No such file or directory"
    out = _run(BLOCK_CUDA.format(action=f"raise ImportError({msg!r})"))
    first, reason = out.splitlines()
    assert first == "False 0 [] ['cpu']"
    assert "libcublas.so.13" in reason


# --------------------------------------------------------------- arch decision
@pytest.mark.parametrize("cc, archs, kind", [
    ((9, 0), ["sm_80", "sm_90", "compute_90"], "native"),
    ((8, 9), ["sm_80", "sm_86", "compute_86"], "native"),      # sm_86 cubin runs on 8.9
    ((12, 0), ["sm_80", "sm_90", "compute_90"], "ptx-jit"),     # new GPU, old build: JIT
    ((9, 0), ["sm_90a", "compute_90a"], "native"),
    ((9, 1), ["sm_90a", "compute_90"], "ptx-jit"),              # 'a' cubins are exact-only
    ((7, 5), ["sm_80", "compute_80"], "none"),                  # PTX newer than the GPU
])
def test_code_for(cc, archs, kind):
    got, detail = cuda.code_for(*cc, archs=archs)
    assert got == kind, detail
