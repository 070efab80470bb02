"""pytest-benchmark hooks for ``pytest benchmarks``: every saved JSON carries the machine.

pytest-benchmark already records Python, the CPU brand and the commit; this adds what
``gpuaccel.info()`` knows (the GEMM micro-kernel in use, OpenMP threads, the CUDA build,
driver and GPUs, or why CUDA cannot be used) under ``machine_info["gpuaccel"]``, plus a
short ``machine_info["gpuaccel_summary"]`` and the load average when the run started, so
that a result file read months later still says what produced it and whether the machine
was busy. See benchmarks/README.md.
"""
import os


def _summary(d):
    """The few facts one compares two runs by."""
    build, cuda = d.get("build", {}), d.get("cuda", {})
    gpus = [g.get("name") for g in cuda.get("devices", []) if "name" in g]
    return {
        "gpuaccel": d.get("gpuaccel"),
        "cpu_model": d.get("cpu", {}).get("model"),
        "usable_cores": d.get("cpu", {}).get("usable_cores"),
        "gemm_isa": build.get("gemm_isa"),
        "num_threads": build.get("num_threads"),
        "openmp": build.get("openmp"),
        "cuda_available": cuda.get("available"),
        "gpus": gpus,
        "cuda_why_not": "" if cuda.get("available") else cuda.get("diagnosis") or cuda.get("reason"),
    }


def pytest_benchmark_update_machine_info(config, machine_info):
    try:
        from gpuaccel.info import info

        d = info()
    except Exception as e:  # a broken build must not lose the benchmark results
        machine_info["gpuaccel_error"] = f"{type(e).__name__}: {e}"
        return
    machine_info["gpuaccel"] = d
    machine_info["gpuaccel_summary"] = _summary(d)
    try:
        machine_info["load_average_at_start"] = list(os.getloadavg())
    except (AttributeError, OSError):
        pass
