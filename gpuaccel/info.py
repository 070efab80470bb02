"""The environment doctor: what this machine and this build of gpuaccel can do.

``gpuaccel.info()`` returns a dict; ``python -m gpuaccel.info`` prints it for people and
``python -m gpuaccel.info --json`` as JSON. Nothing here raises: every probe that fails
records why instead, so the doctor works precisely when something is broken.
"""
import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys

__all__ = ["info", "cpu_model", "code_for_device", "format_info", "main"]


def _try(fn, *args, default=None):
    """Call ``fn(*args)``; on any exception return ``default`` and the error text."""
    try:
        return fn(*args), None
    except Exception as e:  # the doctor must never raise
        return default, f"{type(e).__name__}: {e}"


def _version():
    try:
        import gpuaccel

        v = getattr(gpuaccel, "__version__", None)
        if v:
            return v
    except Exception:
        pass
    try:
        from importlib.metadata import version

        return version("gpuaccel")
    except Exception:
        return "unknown"


def cpu_model():
    """The CPU's marketing name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Model", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


_FLAGS_OF_INTEREST = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                      "avx512_bf16", "amx_tile", "neon", "asimd", "sve")


def _proc_cpu_flags():
    """SIMD flags from /proc/cpuinfo, for when the C extension cannot tell."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    have = set(line.split(":", 1)[1].split())
                    return [flag for flag in _FLAGS_OF_INTEREST if flag in have]
    except OSError:
        pass
    return []


def _first_line(path):
    with open(path) as f:
        return f.readline().strip()


def _usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def _build():
    """``gpuaccel._C.build_info()``: compiler, OpenMP, GEMM ISA, threads, CPU features."""
    try:
        from gpuaccel import _C
    except Exception as e:
        return {"error": f"the C extension gpuaccel._C cannot be imported ({type(e).__name__}: {e})"}
    build_info = getattr(_C, "build_info", None)
    if build_info is None:
        return {"error": "gpuaccel._C has no build_info()"}
    out, err = _try(build_info)
    if err:
        return {"error": f"build_info() failed: {err}"}
    return dict(out)


# ------------------------------------------------------------------------------ CUDA
def _nvcc_version(nvcc):
    """'12.4' from ``nvcc --version`` ('release 12.4, V12.4.131'), or None."""
    if not nvcc:
        return None
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=20).stdout
    m = re.search(r"release (\d+\.\d+)", out)
    return m.group(1) if m else None


def _arch_number(name):
    """'sm_86' -> (8, 6), 'compute_120' -> (12, 0), 'sm_90a' -> (9, 0); None if unparsable."""
    m = re.fullmatch(r"(?:sm|compute)_(\d+)(\d)[a-z]?", name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _sass_runs(arch, major, minor):
    """A cubin runs on the same major and an equal or higher minor; 'sm_90a' only on 9.0."""
    n = _arch_number(arch)
    if not arch.startswith("sm_") or n is None:
        return False
    if arch.endswith("a"):
        return n == (major, minor)
    return n[0] == major and n[1] <= minor


EMULATED_NOTE = "EMULATED: correctness only, timings are not GPU timings"
EMULATED_BUILT_FOR = "CPU emulator of the CUDA execution model (GPUACCEL_CUDA_EMU=1)"


def code_for_device(major, minor, archs):
    """Say which code in the binary a GPU of compute capability major.minor would run.

    Returns (kind, detail) with kind one of 'native' (a SASS cubin for this major and a
    minor <= the device's: binary compatible), 'ptx-jit' (the driver compiles PTX of an
    older or equal virtual architecture at load time), 'none', or 'emulated' (the
    emulator build, archs ['emulator']: no GPU code at all).
    """
    if "emulator" in archs:
        return "emulated", "no GPU code: host-compiled kernels on the CPU emulator"
    cc = (major, minor)
    sass = [a for a in archs if _sass_runs(a, major, minor)]
    if sass:
        best = max(sass, key=_arch_number)
        return "native", f"native SASS ({best})"
    ptx = [a for a in archs if a.startswith("compute_") and _arch_number(a) and _arch_number(a) <= cc]
    if ptx:
        best = max(ptx, key=_arch_number)
        return "ptx-jit", f"no native code for sm_{major}{minor}: the driver will JIT-compile PTX ({best}) at first use"
    built = ", ".join(archs) or "nothing"
    return "none", (f"no code for sm_{major}{minor} (binary carries {built}); rebuild with "
                    f"GPUACCEL_CUDA_ARCH={major}{minor} pip install .")


def _diagnose(reason, cuda_module_error):
    """Turn an unavailable_reason() into a plain-words diagnosis with a way out."""
    if cuda_module_error:
        return ("gpuaccel.cuda could not be imported, so this build has no working CUDA "
                f"support ({cuda_module_error}).")
    text = (reason or "").lower()
    has_driver_node = os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia/version")
    if "not built" in text or "without cuda" in text or "nvcc" in text:
        return ("This gpuaccel was built without its CUDA part (nvcc was not found at build time). "
                "Install the CUDA toolkit and reinstall gpuaccel (GPUACCEL_FORCE_CUDA=1 pip install .).")
    if "libcuda" in text or "driver" in text:
        if not has_driver_node:
            return ("No NVIDIA driver is loaded on this machine (no /dev/nvidiactl), so there is no GPU "
                    "to use. On a machine with an NVIDIA GPU, install the driver and check `nvidia-smi`. "
                    f"Detail: {reason}")
        return f"The NVIDIA driver is present but cannot be used: {reason}. Check `nvidia-smi`."
    if "cublas" in text:
        return f"The cuBLAS library could not be loaded: {reason}. Install the CUDA libraries (libcublas)."
    if "no cuda-capable device" in text or "no device" in text or "device count" in text:
        return f"The driver works but sees no GPU: {reason}. Check CUDA_VISIBLE_DEVICES and `nvidia-smi`."
    if not has_driver_node:
        return f"CUDA cannot be used: {reason or 'unknown reason'}. No NVIDIA driver is loaded on this machine."
    return f"CUDA cannot be used: {reason or 'unknown reason'}."


def _cuda():
    """Everything gpuaccel.cuda can tell, each call guarded."""
    out = {"built": False, "available": False, "emulated": False, "reason": "", "diagnosis": "",
           "compiled_archs": [], "versions": {}, "devices": [],
           "nvcc": shutil.which("nvcc"), "nvidia_smi": shutil.which("nvidia-smi")}
    out["nvcc_version"], _ = _try(_nvcc_version, out["nvcc"])
    driver_file = "/proc/driver/nvidia/version"
    if os.path.exists(driver_file):
        out["driver_proc"], _ = _try(_first_line, driver_file)
    try:
        from gpuaccel import cuda
    except Exception as e:
        module_error = f"{type(e).__name__}: {e}"
        out["reason"] = module_error
        out["diagnosis"] = _diagnose("", module_error)
        return out

    def call(name, *args, default=None):
        fn = getattr(cuda, name, None)
        if fn is None:
            return default, f"gpuaccel.cuda has no {name}()"
        return _try(fn, *args, default=default)

    archs, _ = call("compiled_archs", default=[])
    out["compiled_archs"] = list(archs or [])
    out["built"] = bool(out["compiled_archs"])
    emulated, _ = call("is_emulated", default=False)
    out["emulated"] = emulated is True
    versions, _ = call("versions", default={})
    out["versions"] = dict(versions or {})
    available, err = call("is_available", default=False)
    out["available"] = bool(available)
    reason, _ = call("unavailable_reason", default="")
    out["reason"] = reason or err or ""
    if not out["available"]:
        out["diagnosis"] = _diagnose(out["reason"], None)
        return out
    count, err = call("device_count", default=0)
    if err:
        out["diagnosis"] = f"CUDA reports available but device_count() failed: {err}"
    for i in range(int(count or 0)):
        props, err = call("get_device_properties", i, default=None)
        if err or not isinstance(props, dict):
            out["devices"].append({"index": i, "error": err or "no properties"})
            continue
        dev = {"index": i, **props}
        if "major" in props and "minor" in props:
            kind, detail = code_for_device(int(props["major"]), int(props["minor"]), out["compiled_archs"])
            dev["code"], dev["code_detail"] = kind, detail
        out["devices"].append(dev)
    unusable = [d for d in out["devices"] if d.get("code") == "none" or "error" in d]
    if unusable and not out["diagnosis"]:
        out["diagnosis"] = "; ".join(f"GPU {d['index']}: {d.get('code_detail') or d.get('error')}" for d in unusable)
    return out


def info():
    """Return a dict describing gpuaccel, Python, NumPy, the CPU, the build and CUDA."""
    try:
        import numpy

        numpy_version = numpy.__version__
    except Exception as e:
        numpy_version = f"unavailable ({e})"
    build = _build()
    return {
        "gpuaccel": _version(),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "numpy": numpy_version,
        "platform": platform.platform(),
        "cpu": {
            "model": cpu_model(),
            "machine": platform.machine(),
            "logical_cores": os.cpu_count(),
            "usable_cores": _usable_cores(),
            "features": list(build.get("cpu_features") or _proc_cpu_flags()),
        },
        "build": build,
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "cuda": _cuda(),
    }


# --------------------------------------------------------------------------- printing
def _gib(n):
    try:
        return f"{int(n) / 2**30:.1f} GiB"
    except (TypeError, ValueError):
        return str(n)


def format_info(d):
    """Render an ``info()`` dict as aligned text sections."""
    lines = []

    def section(title, rows):
        lines.append(title)
        width = max((len(k) for k, _ in rows), default=0)
        lines.extend(f"  {k:<{width}}  {v}" for k, v in rows)
        lines.append("")

    cpu, build, cuda = d["cpu"], d["build"], d["cuda"]
    section("gpuaccel", [("version", d["gpuaccel"]), ("python", f"{d['python']} ({d['python_executable']})"),
                         ("numpy", d["numpy"]), ("platform", d["platform"])])
    rows = [("model", cpu["model"]), ("cores", f"{cpu['logical_cores']} logical, {cpu['usable_cores']} usable"),
            ("features", " ".join(cpu["features"]) or "-")]
    section("CPU", rows)
    if "error" in build:
        section("build", [("error", build["error"])])
    else:
        section("build", [("compiler", build.get("compiler", "?")),
                          ("OpenMP", "yes" if build.get("openmp") else "no (single-threaded)"),
                          ("GEMM kernel", build.get("gemm_isa", "?")),
                          ("threads", f"{build.get('num_threads', '?')}"
                                      + (f" (OMP_NUM_THREADS={d['omp_num_threads_env']})"
                                         if d.get("omp_num_threads_env") else ""))])
    v = cuda.get("versions") or {}
    emu = cuda.get("emulated")
    # the emulator's versions are the CUDA it imitates, not software on this machine
    fake = " (emulated)" if emu else ""
    rows = [("built", "yes" if cuda.get("built") else "no"),
            ("available", "no" if not cuda["available"] else "yes (the CPU emulator, not a GPU)" if emu else "yes"),
            ("built for", EMULATED_BUILT_FOR if emu else
             " ".join(cuda["compiled_archs"]) or "- (no CUDA code in this build)"),
            ("runtime", (v.get("runtime") or "-") + fake),
            ("driver", (v.get("driver") + fake) if v.get("driver") else "- (none loaded)"),
            ("cuBLAS", v.get("cublas") or "-"),
            ("nvcc", (f"{cuda['nvcc_version']} ({cuda['nvcc']})" if cuda.get("nvcc_version") else
                      cuda.get("nvcc") or "not on PATH"))]
    if cuda.get("driver_proc"):
        rows.append(("kernel module", cuda["driver_proc"]))
    for dev in cuda["devices"]:
        if "error" in dev:
            rows.append((f"GPU {dev['index']}", f"error: {dev['error']}"))
            continue
        cc = dev.get("compute_capability") or f"{dev.get('major', '?')}.{dev.get('minor', '?')}"
        if emu:  # named as a device, not a GPU, so nobody reads it as one
            rows.append((f"cuda:{dev['index']}", f"{dev.get('name', '?')} -- {EMULATED_NOTE}"))
            rows.append(("  emulates", (f"compute capability {cc}, {dev.get('multiprocessors', '?')} SMs, "
                                        f"{_gib(dev.get('total_memory'))}")))
            continue
        rows.append((f"GPU {dev['index']}", (f"{dev.get('name', '?')}, compute capability {cc}, "
                                             f"{dev.get('multiprocessors', '?')} SMs, {_gib(dev.get('total_memory'))}")))
        if "code_detail" in dev:
            rows.append(("  code", dev["code_detail"]))
    if not cuda["available"] or cuda.get("diagnosis"):
        rows.append(("diagnosis", cuda.get("diagnosis") or cuda.get("reason") or "-"))
    section("CUDA", rows)
    return "\n".join(lines).rstrip() + "\n"


def main(argv=None):
    """``python -m gpuaccel.info [--json]``."""
    parser = argparse.ArgumentParser(prog="python -m gpuaccel.info", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the info() dict as JSON")
    args = parser.parse_args(argv)
    d = info()
    if args.json:
        print(json.dumps(d, indent=2, default=str))
    else:
        print(format_info(d), end="")
    return 0


class _CallableModule(type(sys.modules[__name__])):
    """`gpuaccel.info` is both this module and, called, the function info()."""

    def __call__(self, *args, **kwargs):
        return info(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    sys.exit(main())
