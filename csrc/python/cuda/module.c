/* gpuaccel._cuda: the CUDA backend's extension module.
 *
 * It only answers questions about the machine (probe, devices, versions) and
 * hands the kernel table to gpuaccel._C in a capsule; all computation goes
 * through that table. The CUDA runtime is linked statically and loads the
 * driver (libcuda.so.1) on first use, so importing this module works on a
 * machine without a driver and probe() says what is missing. cuBLAS is linked
 * dynamically: without libcublas the import itself fails with ImportError, which
 * gpuaccel/cuda.py reports as the reason CUDA is unavailable. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cublas_api.h>
#include <cuda_runtime_api.h>

#include "core/backend.h"

extern const ga_backend ga_cuda_backend; /* csrc/cuda/backend_cuda.cu */

#ifndef GA_CUDA_ARCHS
#define GA_CUDA_ARCHS ""
#endif
/* 1 when built against the CUDA emulator (setup.py, GPUACCEL_CUDA_EMU=1):
 * Python labels the device and its timings as emulated. */
#ifndef GA_CUDA_EMU
#define GA_CUDA_EMU 0
#endif

#define CAPSULE_NAME "gpuaccel._cuda.backend"

static PyObject *none(void)
{
    Py_INCREF(Py_None);
    return Py_None;
}

static PyObject *version_string(int v)
{
    /* CUDA encodes versions as 1000 * major + 10 * minor */
    return PyUnicode_FromFormat("%d.%d", v / 1000, (v % 1000) / 10);
}

static PyObject *py_backend(PyObject *self, PyObject *unused)
{
    return PyCapsule_New((void *)&ga_cuda_backend, CAPSULE_NAME, NULL);
}

/* The current device's stream getter, ga_status (*)(void **stream), for
 * gpuaccel._mpi's NCCL reducer (it queues the gradient allreduce there). */
extern ga_status ga_cuda_current_stream(void **stream); /* csrc/cuda/backend_cuda.cu */
typedef ga_status (*ga_stream_fn)(void **stream);
static const ga_stream_fn stream_fn = ga_cuda_current_stream;

static PyObject *py_stream_capsule(PyObject *self, PyObject *unused)
{
    return PyCapsule_New((void *)&stream_fn, "gpuaccel._cuda.stream", NULL);
}

/* (available, reason). The first CUDA call loads the driver and may take a
 * while, so it runs without the GIL. */
static PyObject *py_probe(PyObject *self, PyObject *unused)
{
    int count = 0, driver = 0;
    cudaError_t err, derr;
    Py_BEGIN_ALLOW_THREADS
    derr = cudaDriverGetVersion(&driver);
    err = cudaGetDeviceCount(&count);
    cudaGetLastError(); /* leave no error behind for later launch checks */
    Py_END_ALLOW_THREADS
    if (derr != cudaSuccess)
        driver = 0;
    const int rt = CUDART_VERSION;
    if (err == cudaSuccess && count > 0)
        return Py_BuildValue("(Os)", Py_True, "");
    if (err == cudaSuccess || err == cudaErrorNoDevice)
        return Py_BuildValue("(ON)", Py_False,
                             PyUnicode_FromFormat("no CUDA-capable device is detected (CUDA %d.%d is "
                                                  "installed but sees no GPU; check "
                                                  "CUDA_VISIBLE_DEVICES and nvidia-smi)",
                                                  driver / 1000, (driver % 1000) / 10));
    if (driver == 0)
        return Py_BuildValue("(Os)", Py_False,
                             "no NVIDIA driver: libcuda.so.1 could not be loaded "
                             "(install the NVIDIA driver to use a GPU)");
    if (err == cudaErrorInsufficientDriver || driver / 1000 < rt / 1000)
        return Py_BuildValue("(ON)", Py_False,
                             PyUnicode_FromFormat("the NVIDIA driver is older than the CUDA runtime: "
                                                  "the driver supports CUDA %d.%d, gpuaccel was "
                                                  "built with CUDA %d.%d (update the driver)",
                                                  driver / 1000, (driver % 1000) / 10, rt / 1000,
                                                  (rt % 1000) / 10));
    return Py_BuildValue("(ON)", Py_False,
                         PyUnicode_FromFormat("CUDA initialisation failed: cudaGetDeviceCount: %s (%s)",
                                              cudaGetErrorName(err), cudaGetErrorString(err)));
}

static PyObject *py_device_count(PyObject *self, PyObject *unused)
{
    int count = 0;
    cudaError_t err;
    Py_BEGIN_ALLOW_THREADS
    err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
        cudaGetLastError();
        count = 0; /* no driver or no device: zero devices, probe() says why */
    }
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(count);
}

static int attr(int *v, enum cudaDeviceAttr a, int dev)
{
    if (cudaDeviceGetAttribute(v, a, dev) != cudaSuccess) {
        cudaGetLastError();
        *v = -1;
        return -1;
    }
    return 0;
}

/* dict of the properties bench and info report. clockRate and friends left
 * cudaDeviceProp in CUDA 13: they are read as device attributes. */
static PyObject *py_get_device_properties(PyObject *self, PyObject *arg)
{
    int dev = (int)PyLong_AsLong(arg);
    if (dev == -1 && PyErr_Occurred())
        return NULL;
    int count = 0;
    struct cudaDeviceProp prop;
    int major = 0, minor = 0, sms = 0, clock = 0, mclock = 0, bus = 0, l2 = 0;
    cudaError_t err;
    Py_BEGIN_ALLOW_THREADS
    err = cudaGetDeviceCount(&count);
    if (err == cudaSuccess && dev >= 0 && dev < count) {
        err = cudaGetDeviceProperties(&prop, dev);
        if (err == cudaSuccess) {
            attr(&major, cudaDevAttrComputeCapabilityMajor, dev);
            attr(&minor, cudaDevAttrComputeCapabilityMinor, dev);
            attr(&sms, cudaDevAttrMultiProcessorCount, dev);
            attr(&clock, cudaDevAttrClockRate, dev);
            attr(&mclock, cudaDevAttrMemoryClockRate, dev);
            attr(&bus, cudaDevAttrGlobalMemoryBusWidth, dev);
            attr(&l2, cudaDevAttrL2CacheSize, dev);
        }
    }
    if (err != cudaSuccess)
        cudaGetLastError();
    Py_END_ALLOW_THREADS
    if (err != cudaSuccess) {
        PyErr_Format(PyExc_RuntimeError, "CUDA is not available: %s (%s)", cudaGetErrorName(err),
                     cudaGetErrorString(err));
        return NULL;
    }
    if (dev < 0 || dev >= count) {
        PyErr_Format(PyExc_ValueError, "CUDA device %d does not exist (this machine has %d)", dev,
                     count);
        return NULL;
    }
    prop.name[sizeof prop.name - 1] = '\0';
    return Py_BuildValue("{s:s,s:i,s:i,s:N,s:i,s:K,s:i,s:i,s:i,s:i}", "name", prop.name, "major",
                         major, "minor", minor, "compute_capability",
                         PyUnicode_FromFormat("%d.%d", major, minor), "multiprocessors", sms,
                         "total_memory", (unsigned long long)prop.totalGlobalMem,
                         "clock_rate_khz", clock, "memory_clock_rate_khz", mclock,
                         "memory_bus_width", bus, "l2_cache_size", l2);
}

/* ['sm_75', ..., 'compute_121'] from the comma-separated GA_CUDA_ARCHS setup.py
 * passes: what this binary carries native code (sm_) or PTX (compute_) for. */
static PyObject *py_compiled_archs(PyObject *self, PyObject *unused)
{
    PyObject *s = PyUnicode_FromString(GA_CUDA_ARCHS), *sep = NULL, *parts = NULL, *out = NULL;
    if (!s || !(sep = PyUnicode_FromString(",")) || !(parts = PyUnicode_Split(s, sep, -1)))
        goto fail;
    if (!(out = PyList_New(0)))
        goto fail;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(parts); i++) {
        PyObject *item = PyList_GET_ITEM(parts, i);
        if (PyUnicode_GET_LENGTH(item) > 0 && PyList_Append(out, item) < 0) {
            Py_CLEAR(out);
            goto fail;
        }
    }
fail:
    Py_XDECREF(s);
    Py_XDECREF(sep);
    Py_XDECREF(parts);
    return out;
}

/* runtime (linked), driver (None without one), cublas (the loaded library) */
static PyObject *py_versions(PyObject *self, PyObject *unused)
{
    int rt = 0, drv = 0, cb_major = 0, cb_minor = 0, cb_patch = 0;
    cudaError_t rerr, derr;
    Py_BEGIN_ALLOW_THREADS
    rerr = cudaRuntimeGetVersion(&rt);
    derr = cudaDriverGetVersion(&drv);
    cudaGetLastError();
    Py_END_ALLOW_THREADS
    if (rerr != cudaSuccess)
        rt = CUDART_VERSION;
    PyObject *cublas;
    if (cublasGetProperty(MAJOR_VERSION, &cb_major) == CUBLAS_STATUS_SUCCESS &&
        cublasGetProperty(MINOR_VERSION, &cb_minor) == CUBLAS_STATUS_SUCCESS &&
        cublasGetProperty(PATCH_LEVEL, &cb_patch) == CUBLAS_STATUS_SUCCESS)
        cublas = PyUnicode_FromFormat("%d.%d.%d%s", cb_major, cb_minor, cb_patch,
                                      GA_CUDA_EMU ? "-emulated" : "");
    else
        cublas = none();
    PyObject *driver = (derr == cudaSuccess && drv > 0) ? version_string(drv) : none();
    return Py_BuildValue("{s:N,s:N,s:N,s:N}", "runtime", version_string(rt), "driver", driver,
                         "cublas", cublas, "runtime_built", version_string(CUDART_VERSION));
}

/* Wait for all work queued on device `index` (default: the current one).
 * Benchmarks call it before reading a clock. */
static PyObject *py_synchronize(PyObject *self, PyObject *args)
{
    int dev = -1, prev = 0;
    if (!PyArg_ParseTuple(args, "|i:synchronize", &dev))
        return NULL;
    cudaError_t err = cudaSuccess;
    Py_BEGIN_ALLOW_THREADS
    if (dev >= 0 && (err = cudaGetDevice(&prev)) == cudaSuccess)
        err = cudaSetDevice(dev);
    if (err == cudaSuccess)
        err = cudaDeviceSynchronize();
    if (dev >= 0 && dev != prev)
        cudaSetDevice(prev); /* the backend finds its stream by the current device */
    cudaGetLastError();
    Py_END_ALLOW_THREADS
    if (err != cudaSuccess) {
        PyErr_Format(PyExc_RuntimeError, "CUDA error in cudaDeviceSynchronize: %s (%s)",
                     cudaGetErrorName(err), cudaGetErrorString(err));
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"synchronize", py_synchronize, METH_VARARGS,
     "synchronize(index=-1): wait for all work queued on a device (default: the current one)"},
    {"backend", py_backend, METH_NOARGS,
     "backend() -> PyCapsule 'gpuaccel._cuda.backend' holding the CUDA kernel table"},
    {"stream", py_stream_capsule, METH_NOARGS,
     "stream() -> PyCapsule 'gpuaccel._cuda.stream': the current device's stream getter (for gpuaccel._mpi)"},
    {"probe", py_probe, METH_NOARGS,
     "probe() -> (available, reason): reason is '' when a usable GPU is present"},
    {"device_count", py_device_count, METH_NOARGS, "device_count() -> number of CUDA devices (0 without a driver)"},
    {"get_device_properties", py_get_device_properties, METH_O,
     "get_device_properties(i) -> dict(name, major, minor, compute_capability, multiprocessors, "
     "total_memory, clock_rate_khz, memory_clock_rate_khz, memory_bus_width, l2_cache_size)"},
    {"compiled_archs", py_compiled_archs, METH_NOARGS,
     "compiled_archs() -> ['sm_90', ..., 'compute_121']: native code (sm_) and PTX (compute_) in this build"},
    {"versions", py_versions, METH_NOARGS,
     "versions() -> dict(runtime, driver, cublas, runtime_built)"},
    {NULL, NULL, 0, NULL},
};

static int exec_module(PyObject *m)
{
    if (PyModule_AddStringConstant(m, "CAPSULE_NAME", CAPSULE_NAME) < 0)
        return -1;
    if (PyModule_AddIntConstant(m, "BACKEND_ABI", GA_BACKEND_ABI) < 0)
        return -1;
    if (PyModule_AddIntConstant(m, "EMULATED", GA_CUDA_EMU) < 0)
        return -1;
    return 0;
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
    {0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gpuaccel._cuda",
    .m_doc = "CUDA backend of gpuaccel: device queries and the kernel table (see gpuaccel.cuda)",
    .m_size = 0,
    .m_methods = methods,
    .m_slots = slots,
};

PyMODINIT_FUNC PyInit__cuda(void) { return PyModuleDef_Init(&moduledef); }
