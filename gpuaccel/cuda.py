"""CUDA: is a GPU usable here, which one, and what this build carries for it.

The CUDA half of gpuaccel lives in its own extension, ``gpuaccel._cuda``, loaded
on first use. Nothing here raises on import: on a machine without a driver, a
GPU or the cuBLAS library, ``is_available()`` is False and
``unavailable_reason()`` says which of those is missing.

    >>> import gpuaccel as ga
    >>> ga.cuda.is_available(), ga.cuda.unavailable_reason()
    (False, 'no NVIDIA driver: libcuda.so.1 could not be loaded ...')
"""
import importlib
import re
import threading
import warnings

__all__ = ["is_available", "unavailable_reason", "is_emulated", "device_count", "get_device_properties",
           "compiled_archs", "versions", "synchronize", "CudaArchWarning"]

NOT_BUILT = "gpuaccel was built without CUDA (no nvcc at build time)"
EMULATOR_ARCH = "emulator"  # compiled_archs() of the GPUACCEL_CUDA_EMU build
EMULATED_CODE = ("no GPU code: the CUDA kernels were compiled with the host compiler and run on "
                 "the CPU emulator of the CUDA execution model (GPUACCEL_CUDA_EMU=1)")


class CudaArchWarning(RuntimeWarning):
    """The binary has no native code for this GPU: the driver JIT-compiles PTX."""


_lock = threading.Lock()
_state = {}  # 'module', 'import_error', 'probe' once known
_warned = set()


def _module():
    """gpuaccel._cuda, or None (the reason is kept in _state['import_error'])."""
    with _lock:
        if "module" not in _state:
            try:
                # import_module, not `from . import _cuda`: only it says *which*
                # module is missing (a missing build vs. a missing libcublas)
                _state["module"] = importlib.import_module(f"{__package__}._cuda")
                _state["import_error"] = ""
            except ModuleNotFoundError as e:
                _state["module"] = None
                if e.name == f"{__package__}._cuda":
                    _state["import_error"] = NOT_BUILT
                else:
                    _state["import_error"] = f"the CUDA module could not be loaded: {e}"
            except ImportError as e:
                # e.g. "libcublas.so.13: cannot open shared object file"
                _state["module"] = None
                _state["import_error"] = f"the CUDA module gpuaccel._cuda could not be loaded: {e}"
        return _state["module"]


def _probe():
    """(available, reason), asked once per process: a GPU does not appear mid-run."""
    mod = _module()
    if mod is None:
        return False, _state["import_error"]
    with _lock:
        if "probe" not in _state:
            try:
                ok, reason = mod.probe()
            except Exception as e:  # never let a probe failure escape
                ok, reason = False, f"CUDA probe failed: {type(e).__name__}: {e}"
            _state["probe"] = (bool(ok), "" if ok else (reason or "unknown reason"))
        return _state["probe"]


def is_available():
    """True when the CUDA module loaded, the driver works and a GPU is present."""
    return _probe()[0]


def unavailable_reason():
    """'' when CUDA is available, else why not (not built, no cuBLAS, no driver, old driver, no GPU)."""
    return _probe()[1]


def is_emulated():
    """True when gpuaccel._cuda is the CPU emulator build (GPUACCEL_CUDA_EMU=1): the CUDA
    kernels run on the CPU, so results are checked but timings are not a GPU's."""
    mod = _module()
    # builds from before the emulator have no EMULATED constant: they are real
    return mod is not None and getattr(mod, "EMULATED", 0) == 1


def device_count():
    """Number of CUDA devices (0 when CUDA is unavailable)."""
    if not is_available():
        return 0
    return int(_module().device_count())


def _check_index(index):
    if isinstance(index, bool) or not isinstance(index, int):
        raise TypeError(f"device index must be an int, got {type(index).__name__}")
    ok, reason = _probe()
    if not ok:
        raise RuntimeError(f"CUDA is not available: {reason}")
    count = device_count()
    if not 0 <= index < count:
        raise ValueError(f"CUDA device {index} does not exist (this machine has {count})")


def get_device_properties(index=0):
    """dict(name, major, minor, compute_capability, multiprocessors, total_memory,
    clock_rate_khz, memory_clock_rate_khz, memory_bus_width, l2_cache_size)."""
    _check_index(index)
    return dict(_module().get_device_properties(index))


def compiled_archs():
    """What the binary carries: ['sm_75', ..., 'sm_121', 'compute_121'] (native code
    per sm, PTX per compute); [] when built without CUDA."""
    mod = _module()
    return list(mod.compiled_archs()) if mod is not None else []


def versions():
    """dict(runtime, driver, cublas, runtime_built): version strings, None where absent."""
    mod = _module()
    if mod is None:
        return {"runtime": None, "driver": None, "cublas": None, "runtime_built": None}
    return dict(mod.versions())


def synchronize(device=None):
    """Wait until the GPU has finished all queued work (read clocks only after this).
    device: None (the current one), an index, or 'cuda:N'."""
    if isinstance(device, str):
        device = int(device.split(":", 1)[1]) if ":" in device else 0
    _check_index(0 if device is None else device)
    _module().synchronize(-1 if device is None else device)


# ---------------------------------------------------------------------------- arch check
def _arch_number(name):
    """'sm_86' -> (8, 6), 'compute_120' -> (12, 0), 'sm_90a' -> (9, 0); None otherwise."""
    m = re.fullmatch(r"(?:sm|compute)_(\d+)(\d)[a-z]?", name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def code_for(major, minor, archs=None):
    """('native' | 'ptx-jit' | 'none' | 'emulated', detail) for a GPU of compute capability
    major.minor ('emulated': the emulator build, whose compiled_archs() is ['emulator']).

    A cubin for sm_XY runs natively on the same major with a minor >= Y (an 'a'
    variant only on exactly XY); otherwise the driver JIT-compiles PTX of a
    compute_ version <= the GPU's, which costs start-up time and often speed."""
    archs = compiled_archs() if archs is None else archs
    if EMULATOR_ARCH in archs:
        return "emulated", EMULATED_CODE
    cc = (major, minor)
    native = [a for a in archs if a.startswith("sm_") and _arch_number(a)
              and (_arch_number(a) == cc if a.endswith("a") else
                   _arch_number(a)[0] == major and _arch_number(a)[1] <= minor)]
    if native:
        return "native", f"native code ({max(native, key=_arch_number)})"
    ptx = [a for a in archs if a.startswith("compute_") and _arch_number(a) and _arch_number(a) <= cc]
    if ptx:
        return "ptx-jit", (f"no native code for sm_{major}{minor} in this build "
                           f"({', '.join(archs)}): the driver JIT-compiles PTX ({max(ptx, key=_arch_number)}), "
                           f"slower to start and possibly to run; rebuild with GPUACCEL_CUDA_ARCH={major}{minor}")
    return "none", (f"no code for sm_{major}{minor} in this build ({', '.join(archs) or 'nothing'}): "
                    f"kernels cannot run; rebuild with GPUACCEL_CUDA_ARCH={major}{minor}")


def _warn_arch(index):
    """Warn once per compute capability when the GPU must run JIT-compiled PTX."""
    if is_emulated():
        return  # the emulator runs the host-compiled kernels: there is no sm to match
    try:
        props = get_device_properties(index)
    except Exception:
        return
    cc = (props["major"], props["minor"])
    if cc in _warned:
        return
    _warned.add(cc)
    kind, detail = code_for(*cc)
    if kind != "native":
        warnings.warn(f"gpuaccel: {props['name']} (cuda:{index}): {detail}", CudaArchWarning, stacklevel=3)


def _backend_capsule():
    """The kernel table for gpuaccel._C (a PyCapsule); RuntimeError when unavailable."""
    ok, reason = _probe()
    if not ok:
        raise RuntimeError(f"CUDA is not available: {reason}")
    for i in range(device_count()):
        _warn_arch(i)
    return _module().backend()
