/* gpuaccel._mpi: data-parallel training across processes (MPI) and GPUs (NCCL).
 *
 * An optional extension, built only where `mpicc` is found (setup.py) and
 * imported only by gpuaccel/distributed.py, so `import gpuaccel` never needs
 * MPI; gpuaccel._C never links it. It offers
 *   - init / finalize / abort, rank, size: MPI_COMM_WORLD duplicated into a
 *     private communicator whose error handler is MPI_ERRORS_RETURN;
 *   - allreduce (sum, min, max), bcast and barrier on host buffers (float32,
 *     float64, int64), in place;
 *   - reducer(): a "gpuaccel._mpi.reducer" capsule holding the ga_net_reducer
 *     (net/net.h) that a gpuaccel._C.Net calls between backward and update.
 *
 * Bounded waits. Every collective is nonblocking (MPI_Iallreduce, ...) and
 * polled with MPI_Test against a deadline (set_timeout, GPUACCEL_DIST_TIMEOUT),
 * so a peer that died, raised, or never arrives gives a RuntimeError (or a
 * ga_status through the reducer) instead of a hang. After a timeout the
 * collective is still pending and the communicator is unusable: every later
 * call fails at once, and finalize() is skipped (failed() says so).
 * The GIL is released around every wait; one mutex serialises the module's
 * collectives (MPI_THREAD_SERIALIZED), so two Python threads cannot interleave
 * their collectives on the one communicator.
 *
 * Gradients on a GPU: with NCCL compiled in (GA_HAVE_NCCL: a CUDA toolkit at
 * build time) and use_nccl() called, the reducer queues ncclAllReduce (sum) on
 * the compute stream, on the device pointer: no host copy. On any other device
 * whose memory is not host memory (the CUDA emulator) the block is copied to a
 * host buffer through the backend's table, summed with MPI and copied back. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <mpi.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/backend.h"
#include "net/net.h"

#ifdef GA_HAVE_NCCL
#include <nccl.h>
#endif

#define REDUCER_CAPSULE "gpuaccel._mpi.reducer"

static MPI_Comm g_comm = MPI_COMM_NULL;
static int g_rank = 0, g_size = 1;
static int g_we_initialised = 0; /* MPI_Init was ours (so finalize is too) */
static int g_failed = 0;         /* a collective failed or timed out: the communicator is unusable */
static char g_failure[512];
static double g_timeout = 30.0;  /* seconds; <= 0: wait forever */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

/* the reducer's host staging (devices whose memory is not host memory, without NCCL) */
static float *g_stage;
static int64_t g_stage_cap;

/* what the reducer did, for the study (reducer_stats) */
static int64_t g_calls, g_bytes;
static double g_seconds;

#ifdef GA_HAVE_NCCL
static ncclComm_t g_nccl;
static int g_nccl_device = -1;
typedef ga_status (*ga_stream_fn)(void **stream);
static ga_stream_fn g_stream_fn;
#endif

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- errors: a ga_status with a message, for the reducer and the Python calls alike ---- */

static ga_status mpi_fail(int rc, const char *what)
{
    char text[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS)
        snprintf(text, sizeof text, "MPI error %d", rc);
    g_failed = 1;
    snprintf(g_failure, sizeof g_failure, "distributed: %s failed on rank %d: %s", what, g_rank, text);
    return ga_fail(GA_ERR_RUNTIME, "%s", g_failure);
}

static ga_status check_usable(const char *what)
{
    if (g_comm == MPI_COMM_NULL)
        return ga_fail(GA_ERR_RUNTIME, "distributed: %s: MPI is not initialised (call gpuaccel.distributed.init())",
                       what);
    if (g_failed)
        return ga_fail(GA_ERR_RUNTIME, "distributed: %s refused: an earlier collective failed (%s)", what,
                       g_failure);
    return GA_OK;
}

/* Polls a pending request until it completes, fails, or the deadline passes.
 * Spins for the first ~200 us (a step's allreduce usually ends there: MPI makes
 * progress only inside MPI_Test), then sleeps 50 us between polls. */
static ga_status wait_request(MPI_Request *req, const char *what)
{
    const double t0 = now();
    int flag = 0;
    for (long polls = 0;; polls++) {
        int rc = MPI_Test(req, &flag, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS)
            return mpi_fail(rc, what);
        if (flag)
            return GA_OK;
        const double waited = now() - t0;
        if (g_timeout > 0 && waited > g_timeout) {
            g_failed = 1;
            snprintf(g_failure, sizeof g_failure,
                     "distributed: %s timed out on rank %d after %.1f s (GPUACCEL_DIST_TIMEOUT=%g): another "
                     "rank died, raised, or stopped calling the same collectives",
                     what, g_rank, waited, g_timeout);
            return ga_fail(GA_ERR_RUNTIME, "%s", g_failure);
        }
        if (waited > 2e-4) {
            struct timespec ts = {0, 50000};
            nanosleep(&ts, NULL);
        }
    }
}

/* In-place allreduce of `count` items, in pieces of at most 2^30 (MPI counts are int). */
static ga_status allreduce_locked(void *buf, int64_t count, MPI_Datatype type, size_t item, MPI_Op op,
                                  const char *what)
{
    GA_TRY(check_usable(what));
    const int64_t piece = (int64_t)1 << 30;
    for (int64_t off = 0; off < count; off += piece) {
        const int n = (int)(count - off < piece ? count - off : piece);
        MPI_Request req = MPI_REQUEST_NULL;
        int rc = MPI_Iallreduce(MPI_IN_PLACE, (char *)buf + (size_t)off * item, n, type, op, g_comm, &req);
        if (rc != MPI_SUCCESS)
            return mpi_fail(rc, what);
        GA_TRY(wait_request(&req, what));
    }
    return GA_OK;
}

/* ---- the gradient reducer (net/net.h: ga_net_reducer) ---- */

static ga_status stage_grow(int64_t count)
{
    if (g_stage_cap >= count)
        return GA_OK;
    float *p = malloc((size_t)count * sizeof(float));
    if (!p)
        return ga_fail(GA_ERR_MEMORY, "distributed: no memory for the %lld-float gradient staging buffer",
                       (long long)count);
    free(g_stage);
    g_stage = p;
    g_stage_cap = count;
    return GA_OK;
}

#ifdef GA_HAVE_NCCL
static ga_status nccl_fail(ncclResult_t r, const char *what)
{
    g_failed = 1;
    snprintf(g_failure, sizeof g_failure, "distributed: %s failed on rank %d: %s", what, g_rank,
             ncclGetErrorString(r));
    return ga_fail(GA_ERR_RUNTIME, "%s", g_failure);
}
#endif

static ga_status backend_fail(const ga_backend *be, ga_status st, const char *what)
{
    return ga_fail(st, "distributed: %s: %s", what, be->last_error ? be->last_error() : "device error");
}

static ga_status reduce_locked(const ga_backend *be, int device, float *grads, int64_t count)
{
    GA_TRY(check_usable("the gradient allreduce"));
    if (be->host_memory)
        return allreduce_locked(grads, count, MPI_FLOAT, sizeof(float), MPI_SUM, "the gradient allreduce");
#ifdef GA_HAVE_NCCL
    if (g_nccl && strcmp(be->name, "cuda") == 0) {
        if (device != g_nccl_device)
            return ga_fail(GA_ERR_VALUE, "distributed: the model is on cuda:%d but this rank's NCCL communicator "
                           "was made for cuda:%d", device, g_nccl_device);
        ga_status st = be->set_device(device);
        if (st != GA_OK)
            return backend_fail(be, st, "set_device");
        void *stream = NULL;
        if ((st = g_stream_fn(&stream)) != GA_OK)
            return backend_fail(be, st, "the compute stream");
        ncclResult_t r = ncclAllReduce(grads, grads, (size_t)count, ncclFloat, ncclSum, g_nccl, (cudaStream_t)stream);
        if (r != ncclSuccess)
            return nccl_fail(r, "ncclAllReduce of the gradients");
        return GA_OK;
    }
#endif
    /* a device without NCCL here (the CUDA emulator): through the host */
    GA_TRY(stage_grow(count));
    const size_t bytes = (size_t)count * sizeof(float);
    ga_status st = be->to_host(g_stage, grads, bytes);
    if (st != GA_OK)
        return backend_fail(be, st, "copying the gradients to the host");
    GA_TRY(allreduce_locked(g_stage, count, MPI_FLOAT, sizeof(float), MPI_SUM, "the gradient allreduce"));
    if ((st = be->to_device(grads, g_stage, bytes)) != GA_OK)
        return backend_fail(be, st, "copying the gradients back to the device");
    return GA_OK;
}

/* Called by the net with the GIL released (net_py.c's NET_RUN). */
static ga_status reduce_grads(void *ctx, const ga_backend *be, int device, float *grads, int64_t count)
{
    (void)ctx;
    if (!be || (!grads && count > 0) || count < 0)
        return ga_fail(GA_ERR_VALUE, "distributed: the reducer got no backend, no gradients or a negative count");
    if (count == 0)
        return GA_OK;
    const double t0 = now();
    pthread_mutex_lock(&g_lock);
    ga_status st = reduce_locked(be, device, grads, count);
    g_calls++;
    g_bytes += count * (int64_t)sizeof(float);
    g_seconds += now() - t0;
    pthread_mutex_unlock(&g_lock);
    return st;
}

static const ga_net_reducer g_reducer = {GA_NET_REDUCER_ABI, reduce_grads, NULL, ga_last_error};

/* ---- Python ---- */

static PyObject *raise_status(ga_status st)
{
    PyObject *type = st == GA_ERR_VALUE    ? PyExc_ValueError
                     : st == GA_ERR_TYPE   ? PyExc_TypeError
                     : st == GA_ERR_MEMORY ? PyExc_MemoryError
                                           : PyExc_RuntimeError;
    PyErr_SetString(type, ga_last_error());
    return NULL;
}

static PyObject *py_init(PyObject *self, PyObject *unused)
{
    if (g_comm != MPI_COMM_NULL)
        return Py_BuildValue("(ii)", g_rank, g_size);
    int inited = 0, finalized = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    if (finalized) {
        PyErr_SetString(PyExc_RuntimeError, "distributed: MPI was already finalized in this process");
        return NULL;
    }
    int rc = MPI_SUCCESS, provided = 0;
    const char *step = "MPI_Init_thread";
    Py_BEGIN_ALLOW_THREADS
    if (!inited) {
        rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided);
        g_we_initialised = rc == MPI_SUCCESS;
    } else {
        MPI_Query_thread(&provided);
    }
    if (rc == MPI_SUCCESS) {
        step = "MPI_Comm_set_errhandler";
        MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
        step = "MPI_Comm_dup";
        rc = MPI_Comm_dup(MPI_COMM_WORLD, &g_comm);
    }
    if (rc == MPI_SUCCESS) {
        step = "MPI_Comm_set_errhandler";
        rc = MPI_Comm_set_errhandler(g_comm, MPI_ERRORS_RETURN);
    }
    if (rc == MPI_SUCCESS)
        rc = MPI_Comm_rank(g_comm, &g_rank);
    if (rc == MPI_SUCCESS)
        rc = MPI_Comm_size(g_comm, &g_size);
    Py_END_ALLOW_THREADS
    if (rc != MPI_SUCCESS) {
        g_comm = MPI_COMM_NULL;
        return raise_status(mpi_fail(rc, step));
    }
    if (provided < MPI_THREAD_SERIALIZED) {
        PyErr_Format(PyExc_RuntimeError, "distributed: this MPI gives thread level %d, gpuaccel needs "
                     "MPI_THREAD_SERIALIZED (%d)", provided, MPI_THREAD_SERIALIZED);
        return NULL;
    }
    return Py_BuildValue("(ii)", g_rank, g_size);
}

static PyObject *py_initialized(PyObject *self, PyObject *unused)
{
    return PyBool_FromLong(g_comm != MPI_COMM_NULL);
}

static PyObject *py_rank(PyObject *self, PyObject *unused) { return PyLong_FromLong(g_rank); }
static PyObject *py_size(PyObject *self, PyObject *unused) { return PyLong_FromLong(g_size); }
static PyObject *py_failed(PyObject *self, PyObject *unused)
{
    return g_failed ? PyUnicode_FromString(g_failure) : (Py_INCREF(Py_None), Py_None);
}

static PyObject *py_set_timeout(PyObject *self, PyObject *arg)
{
    double t = PyFloat_AsDouble(arg);
    if (t == -1.0 && PyErr_Occurred())
        return NULL;
    if (!(t == t)) {
        PyErr_SetString(PyExc_ValueError, "timeout must be a number of seconds (<= 0: none)");
        return NULL;
    }
    g_timeout = t;
    Py_RETURN_NONE;
}

static PyObject *py_get_timeout(PyObject *self, PyObject *unused) { return PyFloat_FromDouble(g_timeout); }

/* A writable C-contiguous buffer of float32, float64 or int64 and its MPI type. */
static int get_buffer(PyObject *obj, Py_buffer *view, MPI_Datatype *type)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return -1;
    const char *f = view->format ? view->format : "B";
    if (*f == '=' || *f == '<' || *f == '@')
        f++;
    if (strcmp(f, "f") == 0 && view->itemsize == 4)
        *type = MPI_FLOAT;
    else if (strcmp(f, "d") == 0 && view->itemsize == 8)
        *type = MPI_DOUBLE;
    else if ((strcmp(f, "q") == 0 || strcmp(f, "l") == 0) && view->itemsize == 8)
        *type = MPI_INT64_T;
    else {
        PyErr_Format(PyExc_TypeError, "distributed: buffers must be float32, float64 or int64, got format '%s'",
                     view->format ? view->format : "B");
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* allreduce(buf, op): in place, op 'sum', 'min' or 'max'. */
static PyObject *py_allreduce(PyObject *self, PyObject *args)
{
    PyObject *obj;
    const char *opname = "sum";
    if (!PyArg_ParseTuple(args, "O|s:allreduce", &obj, &opname))
        return NULL;
    MPI_Op op = strcmp(opname, "sum") == 0 ? MPI_SUM : strcmp(opname, "min") == 0 ? MPI_MIN
                : strcmp(opname, "max") == 0 ? MPI_MAX : MPI_OP_NULL;
    if (op == MPI_OP_NULL) {
        PyErr_Format(PyExc_ValueError, "allreduce: op must be 'sum', 'min' or 'max', got '%s'", opname);
        return NULL;
    }
    Py_buffer view;
    MPI_Datatype type;
    if (get_buffer(obj, &view, &type) < 0)
        return NULL;
    ga_status st;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&g_lock);
    st = allreduce_locked(view.buf, view.len / view.itemsize, type, (size_t)view.itemsize, op, "allreduce");
    pthread_mutex_unlock(&g_lock);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (st != GA_OK)
        return raise_status(st);
    Py_RETURN_NONE;
}

static ga_status bcast_locked(void *buf, int64_t bytes, int root)
{
    GA_TRY(check_usable("bcast"));
    const int64_t piece = (int64_t)1 << 30;
    for (int64_t off = 0; off < bytes; off += piece) {
        const int n = (int)(bytes - off < piece ? bytes - off : piece);
        MPI_Request req = MPI_REQUEST_NULL;
        int rc = MPI_Ibcast((char *)buf + off, n, MPI_BYTE, root, g_comm, &req);
        if (rc != MPI_SUCCESS)
            return mpi_fail(rc, "bcast");
        GA_TRY(wait_request(&req, "bcast"));
    }
    return GA_OK;
}

/* bcast(buf, root=0): in place. */
static PyObject *py_bcast(PyObject *self, PyObject *args)
{
    PyObject *obj;
    int root = 0;
    if (!PyArg_ParseTuple(args, "O|i:bcast", &obj, &root))
        return NULL;
    if (root < 0 || root >= g_size) {
        PyErr_Format(PyExc_ValueError, "bcast: root %d is not a rank of %d", root, g_size);
        return NULL;
    }
    Py_buffer view;
    MPI_Datatype type;
    if (get_buffer(obj, &view, &type) < 0)
        return NULL;
    ga_status st;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&g_lock);
    st = bcast_locked(view.buf, view.len, root);
    pthread_mutex_unlock(&g_lock);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (st != GA_OK)
        return raise_status(st);
    Py_RETURN_NONE;
}

static PyObject *py_barrier(PyObject *self, PyObject *unused)
{
    ga_status st = GA_OK;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&g_lock);
    st = check_usable("barrier");
    if (st == GA_OK) {
        MPI_Request req = MPI_REQUEST_NULL;
        int rc = MPI_Ibarrier(g_comm, &req);
        st = rc != MPI_SUCCESS ? mpi_fail(rc, "barrier") : wait_request(&req, "barrier");
    }
    pthread_mutex_unlock(&g_lock);
    Py_END_ALLOW_THREADS
    if (st != GA_OK)
        return raise_status(st);
    Py_RETURN_NONE;
}

static PyObject *py_reducer(PyObject *self, PyObject *unused)
{
    return PyCapsule_New((void *)&g_reducer, REDUCER_CAPSULE, NULL);
}

static PyObject *py_reducer_stats(PyObject *self, PyObject *args)
{
    int reset = 0;
    if (!PyArg_ParseTuple(args, "|p:reducer_stats", &reset))
        return NULL;
    pthread_mutex_lock(&g_lock);
    PyObject *out = Py_BuildValue("(LLd)", (long long)g_calls, (long long)g_bytes, g_seconds);
    if (reset)
        g_calls = g_bytes = 0, g_seconds = 0.0;
    pthread_mutex_unlock(&g_lock);
    return out;
}

static PyObject *py_has_nccl(PyObject *self, PyObject *unused)
{
#ifdef GA_HAVE_NCCL
    Py_RETURN_TRUE;
#else
    Py_RETURN_FALSE;
#endif
}

static PyObject *py_nccl_ready(PyObject *self, PyObject *unused)
{
#ifdef GA_HAVE_NCCL
    return PyBool_FromLong(g_nccl != NULL);
#else
    Py_RETURN_FALSE;
#endif
}

/* use_nccl(backend_capsule, stream_capsule, device): one NCCL communicator over
 * the ranks, this rank on cuda:device; rank 0's unique id goes out by MPI_Bcast. */
static PyObject *py_use_nccl(PyObject *self, PyObject *args)
{
    PyObject *bcap, *scap;
    int device;
    if (!PyArg_ParseTuple(args, "OOi:use_nccl", &bcap, &scap, &device))
        return NULL;
#ifndef GA_HAVE_NCCL
    PyErr_SetString(PyExc_RuntimeError, "distributed: gpuaccel._mpi was built without NCCL (no CUDA toolkit at "
                    "build time, or the emulator build)");
    return NULL;
#else
    const ga_backend *be = PyCapsule_GetPointer(bcap, "gpuaccel._cuda.backend");
    const ga_stream_fn *sf = be ? PyCapsule_GetPointer(scap, "gpuaccel._cuda.stream") : NULL;
    if (!be || !sf)
        return NULL;
    if (be->abi != GA_BACKEND_ABI) {
        PyErr_Format(PyExc_RuntimeError, "distributed: gpuaccel._cuda has backend ABI %d, _mpi expects %d", be->abi,
                     GA_BACKEND_ABI);
        return NULL;
    }
    if (device < 0) {
        PyErr_SetString(PyExc_ValueError, "use_nccl: device must be >= 0");
        return NULL;
    }
    if (g_nccl) {
        if (device == g_nccl_device)
            Py_RETURN_NONE;
        PyErr_Format(PyExc_RuntimeError, "distributed: NCCL is already set up for cuda:%d on this rank", g_nccl_device);
        return NULL;
    }
    ga_status st = GA_OK;
    ncclResult_t r = ncclSuccess;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&g_lock);
    /* rank 0's id and whether it got one: every rank takes part in the broadcast, so a
     * failure on rank 0 is an error on all of them, not a hang in ncclCommInitRank */
    struct {
        int32_t ok;
        ncclUniqueId id;
    } msg;
    memset(&msg, 0, sizeof msg);
    st = check_usable("NCCL setup");
    if (st == GA_OK && g_rank == 0)
        msg.ok = (r = ncclGetUniqueId(&msg.id)) == ncclSuccess;
    if (st == GA_OK)
        st = bcast_locked(&msg, sizeof msg, 0);
    if (st == GA_OK && !msg.ok)
        st = g_rank == 0 ? nccl_fail(r, "ncclGetUniqueId")
                         : ga_fail(GA_ERR_RUNTIME, "distributed: rank 0 could not create the NCCL id");
    if (st == GA_OK && (st = be->set_device(device)) != GA_OK)
        st = backend_fail(be, st, "set_device");
    if (st == GA_OK && (r = ncclCommInitRank(&g_nccl, g_size, msg.id, g_rank)) != ncclSuccess) {
        g_nccl = NULL;
        st = nccl_fail(r, "ncclCommInitRank");
    }
    if (st == GA_OK) {
        g_nccl_device = device;
        g_stream_fn = *sf;
    }
    pthread_mutex_unlock(&g_lock);
    Py_END_ALLOW_THREADS
    if (st != GA_OK)
        return raise_status(st);
    Py_RETURN_NONE;
#endif
}

/* finalize(): the normal end (skipped after a failure: a pending collective would hang it). */
static PyObject *py_finalize(PyObject *self, PyObject *unused)
{
    if (g_comm == MPI_COMM_NULL || g_failed)
        Py_RETURN_NONE;
    int finalized = 0;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&g_lock);
#ifdef GA_HAVE_NCCL
    if (g_nccl) {
        ncclCommDestroy(g_nccl);
        g_nccl = NULL;
    }
#endif
    MPI_Comm_free(&g_comm);
    g_comm = MPI_COMM_NULL;
    MPI_Finalized(&finalized);
    if (g_we_initialised && !finalized)
        MPI_Finalize();
    free(g_stage);
    g_stage = NULL;
    g_stage_cap = 0;
    pthread_mutex_unlock(&g_lock);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* abort(code): MPI_Abort on every rank of the job (used when a rank cannot go on). */
static PyObject *py_abort(PyObject *self, PyObject *arg)
{
    long code = PyLong_AsLong(arg);
    if (code == -1 && PyErr_Occurred())
        return NULL;
    if (g_comm == MPI_COMM_NULL) {
        PyErr_SetString(PyExc_RuntimeError, "distributed: MPI is not initialised");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    MPI_Abort(MPI_COMM_WORLD, (int)code);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_version(PyObject *self, PyObject *unused)
{
    char text[MPI_MAX_LIBRARY_VERSION_STRING] = "";
    int len = 0;
    MPI_Get_library_version(text, &len);
    char *nl = strchr(text, ',');
    if (nl)
        *nl = 0;
    return PyUnicode_FromString(text);
}

static PyMethodDef methods[] = {
    {"init", py_init, METH_NOARGS, "init() -> (rank, size): MPI_Init_thread (serialized) and a private communicator"},
    {"initialized", py_initialized, METH_NOARGS, "True after init() (and before finalize())"},
    {"rank", py_rank, METH_NOARGS, "this process's rank (0 before init)"},
    {"size", py_size, METH_NOARGS, "the number of processes (1 before init)"},
    {"failed", py_failed, METH_NOARGS, "None, or the message of the collective that failed or timed out"},
    {"set_timeout", py_set_timeout, METH_O, "set_timeout(seconds): bound on every wait (<= 0: none)"},
    {"get_timeout", py_get_timeout, METH_NOARGS, "the bound on every wait, in seconds"},
    {"allreduce", py_allreduce, METH_VARARGS, "allreduce(buf, op='sum'): in place; float32, float64 or int64"},
    {"bcast", py_bcast, METH_VARARGS, "bcast(buf, root=0): in place"},
    {"barrier", py_barrier, METH_NOARGS, "barrier()"},
    {"reducer", py_reducer, METH_NOARGS, "the gradient reducer, a 'gpuaccel._mpi.reducer' capsule for Net.set_reducer"},
    {"reducer_stats", py_reducer_stats, METH_VARARGS,
     "reducer_stats(reset=False) -> (calls, bytes, seconds) spent in the gradient reducer"},
    {"has_nccl", py_has_nccl, METH_NOARGS, "True when built with NCCL"},
    {"nccl_ready", py_nccl_ready, METH_NOARGS, "True after use_nccl()"},
    {"use_nccl", py_use_nccl, METH_VARARGS, "use_nccl(backend_capsule, stream_capsule, device)"},
    {"finalize", py_finalize, METH_NOARGS, "MPI_Finalize (skipped after a failed collective)"},
    {"abort", py_abort, METH_O, "abort(code): MPI_Abort on the whole job"},
    {"library_version", py_version, METH_NOARGS, "the MPI library's name and version"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_mpi", "gpuaccel's MPI / NCCL data-parallel layer",
                                       -1, methods};

PyMODINIT_FUNC PyInit__mpi(void)
{
    return PyModule_Create(&moduledef);
}
