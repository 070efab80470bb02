"""Build of gpuaccel: the C extension gpuaccel._C (core, CPU kernels, network,
bindings) and, where nvcc is found, the CUDA extension gpuaccel._cuda.

Environment switches:
  GPUACCEL_SKIP_CUDA=1   build the CPU part only
  GPUACCEL_FORCE_CUDA=1  fail if nvcc is missing
  GPUACCEL_CUDA_ARCH     e.g. "90" or "75;80;90" (default: every sm this nvcc lists)
  GPUACCEL_NO_OPENMP=1   build single-threaded
  GPUACCEL_SANITIZE=1    build with -fsanitize=address,undefined (for `make test-asan`)
  GPUACCEL_CUDA_EMU=1    build gpuaccel._cuda from the same .cu sources with the host C++
                         compiler against the CUDA emulator (csrc/cuda/emu/): no nvcc, no
                         driver, no GPU; a test and learning backend, never a GPU timing
  GPUACCEL_SKIP_MPI=1    do not build gpuaccel._mpi (data-parallel training), even with mpicc
  GPUACCEL_NO_NCCL=1     build gpuaccel._mpi without NCCL, even with a CUDA toolkit
"""
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import warnings

import numpy
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


def sources(*patterns):
    out = []
    for p in patterns:
        out += sorted(glob.glob(os.path.join("csrc", p)))
    return out


def env_flag(name):
    return os.environ.get(name, "").strip() not in ("", "0", "false", "no")


def compiler_accepts(compiler, flags, code="int main(void){return 0;}\n"):
    """Probe: does the C compiler compile and link `code` with `flags`?"""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(code)
        try:
            objs = compiler.compile([src], output_dir=tmp, extra_postargs=flags)
            compiler.link_executable(objs, os.path.join(tmp, "probe"), extra_postargs=flags)
        except Exception:
            return False
    return True


OMP_PROBE = "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n"


class BuildExt(build_ext):
    """Adds the probed flags (OpenMP, sanitizers) and builds .cu sources with nvcc."""

    def build_extensions(self):
        cc = self.compiler
        if "-Wstrict-prototypes" in getattr(cc, "compiler_so", []):
            cc.compiler_so.remove("-Wstrict-prototypes")
        extra, link = [], []
        if not env_flag("GPUACCEL_NO_OPENMP") and compiler_accepts(cc, ["-fopenmp"], OMP_PROBE):
            extra.append("-fopenmp")
            link.append("-fopenmp")
        else:
            warnings.warn("gpuaccel: compiler does not accept -fopenmp; building single-threaded")
        if env_flag("GPUACCEL_SANITIZE"):
            san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
            extra += san
            link += san
        for ext in self.extensions:
            ext.extra_compile_args = list(ext.extra_compile_args) + extra
            ext.extra_link_args = list(ext.extra_link_args) + link
        super().build_extensions()

    def build_extension(self, ext):
        # .cu (and the emulator's .cpp) go to nvcc or, for the emulator, the host C++ compiler
        cuda_sources = [s for s in ext.sources if s.endswith((".cu", ".cpp"))]
        if cuda_sources:
            ext.sources = [s for s in ext.sources if s not in cuda_sources]
            compile_cuda = emu_compile if getattr(ext, "cuda_emulated", False) else nvcc_compile
            objects = compile_cuda(cuda_sources, self.build_temp)
            ext.extra_objects = list(ext.extra_objects) + objects
            ext.depends = list(ext.depends) + objects  # new objects (other flags) relink
        super().build_extension(ext)


# ----------------------------------------------------------------------------
# CUDA: nvcc probe and compile
# ----------------------------------------------------------------------------
# Native code (SASS) for these and every newer sm this nvcc lists, plus PTX of
# the newest so future GPUs can JIT. CUDA 13 starts at sm_75.
CUDA_BASE_ARCHS = ["75", "80", "86", "89", "90"]


def find_nvcc():
    """nvcc from CUDA_HOME / CUDA_PATH, then /usr/local/cuda, then PATH (or None)."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home and os.access(os.path.join(home, "bin", "nvcc"), os.X_OK):
            return os.path.join(home, "bin", "nvcc")
    if os.access("/usr/local/cuda/bin/nvcc", os.X_OK):
        return "/usr/local/cuda/bin/nvcc"
    return shutil.which("nvcc")


def cuda_paths(nvcc):
    """(include dir, library dir) of the toolkit that owns nvcc."""
    home = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    inc = os.path.join(home, "include")
    for lib in ("lib64", "lib", os.path.join("targets", "x86_64-linux", "lib")):
        if os.path.exists(os.path.join(home, lib, "libcudart_static.a")):
            return inc, os.path.join(home, lib)
    return inc, os.path.join(home, "lib64")


def _arch_key(a):
    digits = "".join(ch for ch in a if ch.isdigit())
    return (int(digits or 0), a)


def nvcc_gpu_codes(nvcc):
    """The sm_XX this nvcc can target, from `nvcc --list-gpu-code` ([] if it cannot say)."""
    try:
        out = subprocess.run([nvcc, "--list-gpu-code"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [w[3:] for w in out.split() if w.startswith("sm_")]


_ARCHS = {}


def cuda_archs(nvcc):
    """The sm numbers to build ('90', '120', ...), oldest first; GPUACCEL_CUDA_ARCH overrides."""
    if nvcc in _ARCHS:
        return _ARCHS[nvcc]
    listed = nvcc_gpu_codes(nvcc)
    wanted = os.environ.get("GPUACCEL_CUDA_ARCH", "").strip()
    if wanted:
        archs = []
        for tok in wanted.replace(",", ";").replace(" ", ";").split(";"):
            tok = tok.strip().lower().replace("sm_", "").replace("compute_", "").replace(".", "")
            if tok and tok not in archs:
                archs.append(tok)
        bad = [a for a in archs if listed and a not in listed]
        if bad or not archs:
            raise RuntimeError(
                f"GPUACCEL_CUDA_ARCH={wanted!r}: {', '.join('sm_' + a for a in bad) or 'no arch given'} "
                f"not supported by {nvcc} (it lists: {', '.join('sm_' + a for a in listed)})"
            )
    elif listed:
        newest_base = max(int(a) for a in CUDA_BASE_ARCHS)
        archs = [a for a in CUDA_BASE_ARCHS if a in listed]
        archs += [a for a in listed if a.isdigit() and int(a) > newest_base]
    else:
        archs = list(CUDA_BASE_ARCHS)
    archs = sorted(set(archs), key=_arch_key)
    _ARCHS[nvcc] = archs
    return archs


def gencode_flags(archs):
    flags = []
    for a in archs:
        flags += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
    newest = archs[-1]
    return flags + ["-gencode", f"arch=compute_{newest},code=compute_{newest}"]


def archs_label(archs):
    """What compiled_archs() reports: 'sm_75,...,sm_121,compute_121'."""
    return ",".join([f"sm_{a}" for a in archs] + [f"compute_{archs[-1]}"])


def compile_objects(tool, srcs, flags, build_temp, cmd_of):
    """Compile `srcs` to objects in parallel with `cmd_of(src, obj)`; returns the paths.

    Objects are reused when newer than their source and every header they may
    include (csrc/cuda/*.h, csrc/cuda/emu/*.h, csrc/core/*.h); the flags are
    hashed into the folder name so other flags never reuse stale objects."""
    import concurrent.futures
    import hashlib
    import time

    tag = hashlib.sha1(" ".join([tool] + flags).encode()).hexdigest()[:10]
    out_dir = os.path.join(build_temp, f"{os.path.basename(tool)}-{tag}")
    os.makedirs(out_dir, exist_ok=True)
    headers = sources("cuda/*.h", "cuda/emu/*.h", "core/*.h", "core/*.def")
    newest_dep = max([os.path.getmtime(h) for h in headers] + [0])

    def compile_one(src):
        obj = os.path.join(out_dir, os.path.splitext(os.path.basename(src))[0] + ".o")
        if os.path.exists(obj) and os.path.getmtime(obj) >= max(os.path.getmtime(src), newest_dep):
            return obj, 0.0, "up to date"
        t0 = time.time()
        cmd = cmd_of(src, obj)
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"{tool} failed on {src}:\n{' '.join(cmd)}\n{res.stdout}{res.stderr}")
        return obj, time.time() - t0, (res.stdout + res.stderr).strip()

    jobs = int(os.environ.get("GPUACCEL_NVCC_JOBS", "0") or 0) or os.cpu_count() or 1
    # Largest files first: the GEMM (many template instances) sets the wall time.
    order = sorted(srcs, key=lambda s: -os.path.getsize(s))
    print(f"gpuaccel: {tool} {len(order)} files with {jobs} jobs", flush=True)
    t0 = time.time()
    objs = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        for src, (obj, dt, msg) in zip(order, pool.map(compile_one, order)):
            objs[src] = obj
            print(f"gpuaccel: {tool} {src}: {dt:.1f} s{' (' + msg + ')' if msg == 'up to date' else ''}", flush=True)
            if msg and msg != "up to date":
                print(msg, flush=True)
    print(f"gpuaccel: {tool} done in {time.time() - t0:.1f} s", flush=True)
    return [objs[s] for s in srcs]


def nvcc_compile(cu_sources, build_temp):
    """Compile .cu files to objects with nvcc for every arch in cuda_archs()."""
    nvcc = find_nvcc()
    if nvcc is None:
        raise RuntimeError("CUDA sources given but nvcc was not found")
    inc, _ = cuda_paths(nvcc)
    archs = cuda_archs(nvcc)
    flags = ["-O3", "-std=c++20", "-lineinfo", "-Xcompiler", "-fPIC", "-Xcompiler", "-fvisibility=hidden",
             "-Icsrc", f"-I{inc}"] + gencode_flags(archs)
    if env_flag("GPUACCEL_SANITIZE"):
        flags = [f for f in flags if f != "-O3"] + ["-O1", "-g"]
    print(f"gpuaccel: nvcc for {archs_label(archs)}", flush=True)
    return compile_objects(nvcc, cu_sources, flags, build_temp,
                           lambda src, obj: [nvcc, "-c", src, "-o", obj] + flags)


# ----------------------------------------------------------------------------
# The CUDA emulator: the same .cu files, compiled as C++ by the host compiler
# ----------------------------------------------------------------------------
EMU_DIR = os.path.join("csrc", "cuda", "emu")


def compiler_accepts_cxx(cxx, flag):
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.cpp")
        with open(src, "w") as f:
            f.write("int main() { return 0; }\n")
        res = subprocess.run([cxx, flag, src, "-o", os.path.join(tmp, "probe")], capture_output=True)
    return res.returncode == 0


def emu_compile(srcs, build_temp):
    """Compile the .cu files (as C++) and the emulator's .cpp files with the host C++
    compiler; csrc/cuda/emu comes first on the include path, so <cuda_runtime.h> and
    <cublas_v2.h> are the emulator's."""
    cxx = os.environ.get("CXX", "c++")
    # -march=native: this build runs where it is built (a test backend, never shipped), and
    # with FMA, fmaf and the contraction of a*b+c (nvcc's default, --fmad=true) are one
    # instruction as on the GPU instead of a libm call: the emulated GEMM runs 2x faster
    native = ["-march=native"] if compiler_accepts_cxx(cxx, "-march=native") else []
    # TLS descriptors: threadIdx and friends are thread-locals of a dlopen'ed module, read
    # by every emulated thread; this makes each read a few instructions, not a libc call
    native += ["-mtls-dialect=gnu2"] if compiler_accepts_cxx(cxx, "-mtls-dialect=gnu2") else []
    flags = ["-std=c++20", "-O3"] + native + ["-ffp-contract=fast", "-fPIC", "-fvisibility=hidden", "-pthread", "-Wall",
             "-Wno-unused-parameter", "-Wno-unused-function", "-Wno-unknown-pragmas", "-Wno-sign-compare",
             f"-I{EMU_DIR}", "-Icsrc", "-DGA_CUDA_EMU=1"]
    if env_flag("GPUACCEL_SANITIZE"):
        flags = [f for f in flags if f != "-O3"] + ["-O1", "-g", "-fsanitize=address,undefined",
                                                     "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
    return compile_objects(cxx, srcs, flags, build_temp,
                           lambda src, obj: [cxx] + (["-x", "c++"] if src.endswith(".cu") else [])
                           + ["-c", src, "-o", obj] + flags)


def emu_extension():
    cu = sources("cuda/*.cu")
    emu = sources("cuda/emu/*.cpp")
    ext = Extension(
        "gpuaccel._cuda",
        sources=cu + emu + sources("core/status.c", "core/alloc.c", "core/checks.c", "python/cuda/module.c"),
        depends=cu + emu + sources("cuda/*.h", "cuda/emu/*.h", "core/*.h", "core/*.def"),
        include_dirs=[EMU_DIR, "csrc"],
        define_macros=[("GA_CUDA_ARCHS", '"emulator"'), ("GA_CUDA_EMU", "1")],
        extra_compile_args=C_FLAGS + ["-fvisibility=hidden"],
        libraries=["stdc++", "pthread"],
    )
    ext.cuda_emulated = True
    return ext


def cuda_extensions():
    """[gpuaccel._cuda]: the emulator when asked for, else with nvcc when found (and not skipped)."""
    if env_flag("GPUACCEL_SKIP_CUDA"):
        return []
    if env_flag("GPUACCEL_CUDA_EMU"):
        return [emu_extension()]
    nvcc = find_nvcc()
    if nvcc is None:
        msg = ("nvcc not found (looked in $CUDA_HOME, $CUDA_PATH, /usr/local/cuda and PATH): "
               "building gpuaccel without CUDA")
        if env_flag("GPUACCEL_FORCE_CUDA"):
            raise RuntimeError("GPUACCEL_FORCE_CUDA=1 but " + msg.split(":")[0])
        warnings.warn("gpuaccel: " + msg)
        return []
    inc, lib = cuda_paths(nvcc)
    archs = cuda_archs(nvcc)
    cu = sources("cuda/*.cu")
    return [
        Extension(
            "gpuaccel._cuda",
            sources=cu + sources("core/status.c", "core/alloc.c", "core/checks.c", "python/cuda/module.c"),
            depends=cu + sources("cuda/*.h", "core/*.h", "core/*.def"),
            include_dirs=["csrc", inc],
            define_macros=[("GA_CUDA_ARCHS", f'"{archs_label(archs)}"')],
            extra_compile_args=C_FLAGS + ["-fvisibility=hidden"],
            library_dirs=[lib],
            # cudart static (works without libcudart.so on the target), cuBLAS
            # dynamic; the toolkit's lib folder goes in the rpath so it is found.
            libraries=["cudart_static", "cublas", "dl", "rt", "pthread", "stdc++"],
            runtime_library_dirs=[lib],
            # keep the static runtime's symbols private: another CUDA user in the
            # process (PyTorch's libcudart.so) must not bind to ours, nor we to it
            extra_link_args=["-Wl,--exclude-libs,ALL"],
        )
    ]


# -fno-math-errno: nothing here reads errno after a math call, and without it
# sqrtf cannot become the vector instruction (the optimizers' loops stay scalar)
C_FLAGS = ["-std=c11", "-O3", "-fno-math-errno", "-Wall", "-Wextra", "-Wno-unused-parameter",
           "-Wno-missing-field-initializers"]
if env_flag("GPUACCEL_SANITIZE"):
    C_FLAGS = [f for f in C_FLAGS if f != "-O3"] + ["-O1", "-g"]

core_ext = Extension(
    "gpuaccel._C",
    sources=sources("core/*.c", "cpu/*.c", "net/*.c", "net/layers/*.c", "python/*.c"),
    include_dirs=["csrc", numpy.get_include()],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_21_API_VERSION")],
    extra_compile_args=C_FLAGS,
)

# ----------------------------------------------------------------------------
# gpuaccel._mpi: data-parallel training (MPI, and NCCL where a CUDA toolkit is)
# ----------------------------------------------------------------------------
def mpicc_flags(mpicc):
    """(compile flags, link flags) from Open MPI's wrapper, or None when it cannot say."""
    try:
        comp = subprocess.run([mpicc, "--showme:compile"], capture_output=True, text=True, timeout=30)
        link = subprocess.run([mpicc, "--showme:link"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if comp.returncode != 0 or link.returncode != 0:
        return None
    return comp.stdout.split(), link.stdout.split()


def nccl_paths():
    """(include dir, library dir) of the CUDA toolkit's NCCL, or None (emulator builds: never)."""
    if env_flag("GPUACCEL_NO_NCCL") or env_flag("GPUACCEL_CUDA_EMU") or env_flag("GPUACCEL_SKIP_CUDA"):
        return None
    nvcc = find_nvcc()
    if nvcc is None:
        return None
    inc, lib = cuda_paths(nvcc)
    home = os.path.dirname(inc)
    if not os.path.exists(os.path.join(inc, "nccl.h")):
        return None
    for d in (lib, os.path.join(home, "lib"), os.path.join(home, "lib64"), "/usr/lib/x86_64-linux-gnu"):
        if os.path.exists(os.path.join(d, "libnccl.so")):
            return inc, d
    return None


def mpi_extensions():
    """[gpuaccel._mpi] when mpicc is found (and not skipped), else [] with a note."""
    if env_flag("GPUACCEL_SKIP_MPI"):
        return []
    mpicc = shutil.which("mpicc")
    flags = mpicc_flags(mpicc) if mpicc else None
    if flags is None:
        print("gpuaccel: mpicc not found (or it gave no flags): building without gpuaccel._mpi "
              "(data-parallel training); install openmpi-bin libopenmpi-dev for it", flush=True)
        return []
    comp, link = flags
    macros, incs, libs, libdirs, rpath = [], [], [], [], []
    nccl = nccl_paths()
    if nccl is not None:
        inc, lib = nccl
        macros.append(("GA_HAVE_NCCL", "1"))
        incs.append(inc)
        libs.append("nccl")
        libdirs.append(lib)
        rpath.append(lib)
        print(f"gpuaccel: gpuaccel._mpi with NCCL ({lib})", flush=True)
    else:
        print("gpuaccel: gpuaccel._mpi without NCCL (no CUDA toolkit, or the emulator build): "
              "GPU gradients go through the host", flush=True)
    return [Extension(
        "gpuaccel._mpi",
        sources=sources("python/mpi/module.c", "core/status.c"),
        depends=sources("net/net.h", "core/*.h"),
        include_dirs=["csrc"] + incs,
        define_macros=macros,
        extra_compile_args=C_FLAGS + ["-fvisibility=hidden"] + comp,
        extra_link_args=link,
        libraries=libs + ["pthread"],
        library_dirs=libdirs,
        runtime_library_dirs=rpath,
    )]


setup(ext_modules=[core_ext] + cuda_extensions() + mpi_extensions(), cmdclass={"build_ext": BuildExt})
