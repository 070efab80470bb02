/* gpuaccel._C: module init, error mapping, the device registry, build info. */
#define GA_PY_MODULE_MAIN
#include "python/common.h"

#include <stdio.h>
#include <string.h>

#include "core/threads.h"

/* The CUDA table, handed over by gpuaccel._cuda through a capsule. */
static const ga_backend *cuda_backend = NULL;

PyObject *ga_py_raise(const ga_backend *be, ga_status st)
{
    const char *msg = be ? be->last_error() : ga_last_error();
    if (!msg || !msg[0])
        msg = "unknown error in gpuaccel's C core";
    PyObject *type;
    switch (st) {
    case GA_ERR_VALUE: type = PyExc_ValueError; break;
    case GA_ERR_TYPE: type = PyExc_TypeError; break;
    case GA_ERR_MEMORY: type = PyExc_MemoryError; break;
    case GA_ERR_NUMERIC: type = PyExc_FloatingPointError; break;
    default: type = PyExc_RuntimeError; break;
    }
    PyErr_SetString(type, msg);
    return NULL;
}

int ga_py_device(ga_device *d, const char *name)
{
    memset(d, 0, sizeof *d);
    if (strcmp(name, "cpu") == 0) {
        d->be = &ga_cpu_backend;
        d->index = 0;
    } else if (strncmp(name, "cuda:", 5) == 0) {
        char *end = NULL;
        long idx = strtol(name + 5, &end, 10);
        if (!end || *end || idx < 0 || idx > 1024) {
            PyErr_Format(PyExc_ValueError, "bad device name '%s'", name);
            return -1;
        }
        if (!cuda_backend) {
            PyErr_SetString(PyExc_RuntimeError,
                            "the CUDA backend is not loaded (use gpuaccel's Python API, which loads it)");
            return -1;
        }
        d->be = cuda_backend;
        d->index = (int)idx;
    } else {
        PyErr_Format(PyExc_ValueError, "unknown device '%s': expected 'cpu' or 'cuda:N'", name);
        return -1;
    }
    snprintf(d->name, sizeof d->name, "%s", name);
    return 0;
}

static PyObject *register_backend(PyObject *self, PyObject *args)
{
    const char *name;
    PyObject *capsule;
    if (!PyArg_ParseTuple(args, "sO:_register_backend", &name, &capsule))
        return NULL;
    if (strcmp(name, "cuda") != 0) {
        PyErr_Format(PyExc_ValueError, "unknown backend '%s'", name);
        return NULL;
    }
    const ga_backend *be = PyCapsule_GetPointer(capsule, "gpuaccel._cuda.backend");
    if (!be)
        return NULL;
    if (be->abi != GA_BACKEND_ABI) {
        PyErr_Format(PyExc_RuntimeError, "gpuaccel._cuda was built for backend ABI %d, _C expects %d",
                     be->abi, GA_BACKEND_ABI);
        return NULL;
    }
    cuda_backend = be;
    Py_RETURN_NONE;
}

static PyObject *set_num_threads(PyObject *self, PyObject *arg)
{
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n < 1 || n > 4096) {
        PyErr_SetString(PyExc_ValueError, "number of threads must be between 1 and 4096");
        return NULL;
    }
    ga_set_num_threads((int)n);
    Py_RETURN_NONE;
}

static PyObject *get_num_threads(PyObject *self, PyObject *unused)
{
    return PyLong_FromLong(ga_get_num_threads());
}

static PyObject *gemm_isa(PyObject *self, PyObject *unused)
{
    return PyUnicode_FromString(ga_cpu_backend.kernel_isa());
}

static PyObject *set_gemm_isa(PyObject *self, PyObject *arg)
{
    const char *name = PyUnicode_AsUTF8(arg);
    if (!name)
        return NULL;
    ga_status st = ga_cpu_backend.set_kernel_isa(name);
    if (st != GA_OK)
        return ga_py_raise(NULL, st);
    Py_RETURN_NONE;
}

static PyObject *build_info(PyObject *self, PyObject *unused)
{
    PyObject *features = PyList_New(0);
    if (!features)
        return NULL;
#if defined(__x86_64__) || defined(__i386__)
    static const char *names[] = {"sse4.2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl"};
    __builtin_cpu_init();
    int have[] = {__builtin_cpu_supports("sse4.2"), __builtin_cpu_supports("avx"),
                  __builtin_cpu_supports("avx2"), __builtin_cpu_supports("fma"),
                  __builtin_cpu_supports("avx512f"), __builtin_cpu_supports("avx512bw"),
                  __builtin_cpu_supports("avx512vl")};
    for (size_t i = 0; i < sizeof have / sizeof have[0]; i++)
        if (have[i]) {
            PyObject *s = PyUnicode_FromString(names[i]);
            if (!s || PyList_Append(features, s) < 0) {
                Py_XDECREF(s);
                Py_DECREF(features);
                return NULL;
            }
            Py_DECREF(s);
        }
#endif
#if defined(__clang__)
    const char *compiler = "clang " __clang_version__;
#elif defined(__GNUC__)
    const char *compiler = "gcc " __VERSION__;
#else
    const char *compiler = "unknown";
#endif
    return Py_BuildValue("{s:s,s:O,s:s,s:i,s:N,s:i}", "compiler", compiler, "openmp",
                         ga_have_openmp() ? Py_True : Py_False, "gemm_isa", ga_cpu_backend.kernel_isa(),
                         "num_threads", ga_get_num_threads(), "cpu_features", features,
                         "backend_abi", GA_BACKEND_ABI);
}

/* cpu_peak_gflops(threads=all, seconds=0.3) -> (GFLOP/s, isa) */
static PyObject *cpu_peak_gflops(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"threads", "seconds", NULL};
    int threads = ga_get_num_threads();
    double seconds = 0.3, gflops = 0.0;
    const char *isa = "";
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|id:cpu_peak_gflops", kwlist, &threads, &seconds))
        return NULL;
    ga_status st;
    Py_BEGIN_ALLOW_THREADS
    st = ga_cpu_backend.peak_gflops(&gflops, &isa, threads, seconds);
    Py_END_ALLOW_THREADS
    if (st != GA_OK)
        return ga_py_raise(NULL, st);
    return Py_BuildValue("(ds)", gflops, isa);
}

static PyMethodDef module_methods[] = {
    {"cpu_peak_gflops", (PyCFunction)(void (*)(void))cpu_peak_gflops, METH_VARARGS | METH_KEYWORDS,
     "Measured FP32 FMA throughput: cpu_peak_gflops(threads, seconds) -> (GFLOP/s, isa)."},
    {"_register_backend", register_backend, METH_VARARGS, "Register a device backend capsule."},
    {"set_num_threads", set_num_threads, METH_O, "Threads used by the CPU kernels."},
    {"get_num_threads", get_num_threads, METH_NOARGS, "Threads used by the CPU kernels."},
    {"gemm_isa", gemm_isa, METH_NOARGS, "The GEMM micro-kernel in use."},
    {"set_gemm_isa", set_gemm_isa, METH_O, "Force a GEMM micro-kernel ('avx512', 'avx2', 'generic', 'auto')."},
    {"build_info", build_info, METH_NOARGS, "How this extension was built and what it runs on."},
    {NULL, NULL, 0, NULL},
};

static int module_exec(PyObject *m)
{
    if (PyArray_ImportNumPyAPI() < 0)
        return -1;
    if (PyModule_AddFunctions(m, ga_ops_methods) < 0)
        return -1;
    if (PyModule_AddFunctions(m, ga_dlpack_methods) < 0)
        return -1;
    if (PyType_Ready(&GaTensor_Type) < 0)
        return -1;
    Py_INCREF(&GaTensor_Type);
    if (PyModule_AddObject(m, "Tensor", (PyObject *)&GaTensor_Type) < 0) {
        Py_DECREF(&GaTensor_Type);
        return -1;
    }
    if (ga_net_type_init(m) < 0)
        return -1;
    /* the precision flag ops.matmul ORs into the variant (core/backend.h) */
    if (PyModule_AddIntConstant(m, "PRECISION_TF32", GA_PRECISION_TF32) < 0)
        return -1;
    return 0;
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gpuaccel._C",
    .m_doc = "gpuaccel's C core: kernels, networks and the device seam.",
    .m_size = 0,
    .m_methods = module_methods,
    .m_slots = module_slots,
};

PyMODINIT_FUNC PyInit__C(void) { return PyModuleDef_Init(&module_def); }
