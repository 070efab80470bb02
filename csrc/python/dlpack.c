/* DLPack: Tensor.__dlpack__ / __dlpack_device__ (export) and _C._from_dlpack
 * (import of a capsule that gpuaccel.from_dlpack got from any producer). Both
 * directions share memory, never copy (except __dlpack__(copy=True)).
 *
 * Export: the capsule holds a DLManagedTensor[Versioned] whose manager keeps a
 * strong reference to the Tensor and owns the shape/strides arrays; its deleter
 * drops the reference with the GIL taken (consumers may call it from any
 * thread). The capsule's destructor calls the deleter only while the capsule
 * is unconsumed (its name still "dltensor[_versioned]").
 *
 * CUDA streams (array API standard): the consumer names the stream it will
 * use; whatever it is, we wait for this device's stream (be->synchronize)
 * before returning, so every consumer stream sees finished data. stream=-1
 * (the consumer asks for no synchronisation) skips that; 0 is refused (the
 * standard calls it ambiguous).
 *
 * Import: float32, at most GA_MAX_DIMS dimensions, C-contiguous (size-1
 * dimensions may have any stride), writable, on the CPU or a CUDA device whose
 * backend is registered. The new Tensor's `owner` is the managed tensor; its
 * dealloc calls the producer's deleter. */
#include "python/common.h"

#include <stdio.h>
#include <string.h>

#include "python/dlpack_abi.h"

/* ---------------------------------------------------------------- export */

typedef struct {
    PyObject *tensor; /* strong reference: keeps the memory alive */
    int64_t shape[GA_MAX_DIMS];
    int64_t strides[GA_MAX_DIMS];
    ga_DLManagedTensor legacy;
    ga_DLManagedTensorVersioned versioned;
} export_ctx;

static void export_ctx_free(export_ctx *ctx)
{
    if (!ctx)
        return;
    PyGILState_STATE g = PyGILState_Ensure();
    Py_XDECREF(ctx->tensor);
    ctx->tensor = NULL;
    PyGILState_Release(g);
    PyMem_RawFree(ctx);
}

static void legacy_deleter(ga_DLManagedTensor *mt)
{
    if (mt)
        export_ctx_free((export_ctx *)mt->manager_ctx);
}

static void versioned_deleter(ga_DLManagedTensorVersioned *mt)
{
    if (mt)
        export_ctx_free((export_ctx *)mt->manager_ctx);
}

/* Capsule destructors: free only what no consumer took (the name says which). */
static void legacy_capsule_destructor(PyObject *cap)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (PyCapsule_IsValid(cap, GA_DLPACK_CAPSULE)) {
        ga_DLManagedTensor *mt = PyCapsule_GetPointer(cap, GA_DLPACK_CAPSULE);
        if (mt && mt->deleter)
            mt->deleter(mt);
    }
    PyErr_Restore(type, value, tb);
}

static void versioned_capsule_destructor(PyObject *cap)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (PyCapsule_IsValid(cap, GA_DLPACK_CAPSULE_V)) {
        ga_DLManagedTensorVersioned *mt = PyCapsule_GetPointer(cap, GA_DLPACK_CAPSULE_V);
        if (mt && mt->deleter)
            mt->deleter(mt);
    }
    PyErr_Restore(type, value, tb);
}

static int tensor_dl_device(const GaTensor *t, ga_DLDevice *d)
{
    if (t->dev.be->host_memory && strcmp(t->dev.be->name, "cpu") == 0) {
        d->device_type = GA_kDLCPU;
        d->device_id = 0;
    } else {
        /* the CUDA backend, the emulator's included (its memory is host memory, but
         * only gpuaccel itself can be the consumer there: ARCHITECTURE.md) */
        d->device_type = GA_kDLCUDA;
        d->device_id = t->dev.index;
    }
    return 0;
}

PyObject *ga_tensor_dlpack_device(GaTensor *t, PyObject *unused)
{
    ga_DLDevice d;
    tensor_dl_device(t, &d);
    return Py_BuildValue("(ii)", (int)d.device_type, (int)d.device_id);
}

PyObject *ga_tensor_dlpack(GaTensor *t, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"stream", "max_version", "dl_device", "copy", NULL};
    PyObject *stream = Py_None, *max_version = Py_None, *dl_device = Py_None, *copy = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$OOOO:__dlpack__", kwlist, &stream, &max_version, &dl_device,
                                     &copy))
        return NULL;
    ga_DLDevice mine;
    tensor_dl_device(t, &mine);

    int versioned = 0;
    if (max_version != Py_None) {
        unsigned int major = 0, minor = 0;
        if (!PyTuple_Check(max_version) || PyTuple_GET_SIZE(max_version) != 2 ||
            !PyArg_ParseTuple(max_version, "II", &major, &minor)) {
            PyErr_Clear();
            PyErr_SetString(PyExc_TypeError, "__dlpack__: max_version must be None or a tuple (major, minor)");
            return NULL;
        }
        versioned = major >= 1;
    }
    if (dl_device != Py_None) {
        int type = 0, id = 0;
        if (!PyTuple_Check(dl_device) || PyTuple_GET_SIZE(dl_device) != 2 ||
            !PyArg_ParseTuple(dl_device, "ii", &type, &id)) {
            PyErr_Clear();
            PyErr_SetString(PyExc_TypeError, "__dlpack__: dl_device must be None or a tuple (device_type, id)");
            return NULL;
        }
        if (type != mine.device_type || id != mine.device_id) {
            PyErr_Format(PyExc_BufferError,
                         "__dlpack__: this tensor is on %s (DLPack device (%d, %d)); it cannot be exported to "
                         "device (%d, %d): copy it there first",
                         t->dev.name, (int)mine.device_type, (int)mine.device_id, type, id);
            return NULL;
        }
    }
    int want_copy = 0;
    if (copy != Py_None) {
        if (!PyBool_Check(copy)) {
            PyErr_SetString(PyExc_TypeError, "__dlpack__: copy must be None, True or False");
            return NULL;
        }
        want_copy = copy == Py_True; /* False: never copy, which we never need to */
    }
    int sync = mine.device_type == GA_kDLCUDA;
    if (stream != Py_None) {
        if (!PyLong_Check(stream)) {
            PyErr_SetString(PyExc_TypeError, "__dlpack__: stream must be None or an int");
            return NULL;
        }
        long long s = PyLong_AsLongLong(stream);
        if (s == -1 && PyErr_Occurred())
            return NULL;
        if (mine.device_type == GA_kDLCPU && s != -1) {
            PyErr_SetString(PyExc_ValueError, "__dlpack__: stream must be None for a CPU tensor");
            return NULL;
        }
        if (s == 0) {
            PyErr_SetString(PyExc_ValueError,
                            "__dlpack__: stream 0 is ambiguous for CUDA (use 1 for the legacy default stream, "
                            "2 for the per-thread one, or a stream handle)");
            return NULL;
        }
        if (s == -1)
            sync = 0;
    }

    GaTensor *src = t;
    Py_INCREF(src);
    const ga_backend *be = t->dev.be;
    if (want_copy) {
        GaTensor *c = ga_tensor_new(&t->dev, t->ndim, t->shape);
        if (!c) {
            Py_DECREF(src);
            return NULL;
        }
        ga_status st;
        Py_BEGIN_ALLOW_THREADS
        st = be->set_device(t->dev.index);
        if (st == GA_OK && t->size > 0)
            st = be->copy(c->data, t->data, (size_t)t->size * sizeof(float));
        Py_END_ALLOW_THREADS
        Py_DECREF(src);
        if (st != GA_OK) {
            Py_DECREF(c);
            return ga_py_raise(be, st);
        }
        src = c;
        if (mine.device_type == GA_kDLCUDA)
            sync = 1; /* our copy must be finished whatever the consumer asked */
    }
    if (sync) {
        ga_status st;
        Py_BEGIN_ALLOW_THREADS
        st = be->set_device(t->dev.index);
        if (st == GA_OK)
            st = be->synchronize();
        Py_END_ALLOW_THREADS
        if (st != GA_OK) {
            Py_DECREF(src);
            return ga_py_raise(be, st);
        }
    }

    export_ctx *ctx = PyMem_RawCalloc(1, sizeof *ctx);
    if (!ctx) {
        Py_DECREF(src);
        return PyErr_NoMemory();
    }
    ctx->tensor = (PyObject *)src; /* the reference taken above */
    int64_t stride = 1;
    for (int i = src->ndim - 1; i >= 0; i--) {
        ctx->shape[i] = src->shape[i];
        ctx->strides[i] = stride;
        stride *= src->shape[i] > 0 ? src->shape[i] : 1;
    }
    ga_DLTensor dl;
    memset(&dl, 0, sizeof dl);
    dl.data = src->data;
    dl.device = mine;
    dl.ndim = src->ndim;
    dl.dtype.code = GA_kDLFloat;
    dl.dtype.bits = 32;
    dl.dtype.lanes = 1;
    dl.shape = ctx->shape;
    dl.strides = ctx->strides;
    dl.byte_offset = 0;

    PyObject *cap;
    if (versioned) {
        ctx->versioned.version.major = GA_DLPACK_MAJOR;
        ctx->versioned.version.minor = GA_DLPACK_MINOR;
        ctx->versioned.manager_ctx = ctx;
        ctx->versioned.deleter = versioned_deleter;
        ctx->versioned.flags = want_copy ? GA_DLPACK_FLAG_IS_COPIED : 0;
        ctx->versioned.dl_tensor = dl;
        cap = PyCapsule_New(&ctx->versioned, GA_DLPACK_CAPSULE_V, versioned_capsule_destructor);
    } else {
        ctx->legacy.dl_tensor = dl;
        ctx->legacy.manager_ctx = ctx;
        ctx->legacy.deleter = legacy_deleter;
        cap = PyCapsule_New(&ctx->legacy, GA_DLPACK_CAPSULE, legacy_capsule_destructor);
    }
    if (!cap)
        export_ctx_free(ctx);
    return cap;
}

/* ---------------------------------------------------------------- import */

void ga_dlpack_release_owner(void *owner, int owner_kind)
{
    if (!owner)
        return;
    if (owner_kind == 1) {
        ga_DLManagedTensor *mt = owner;
        if (mt->deleter)
            mt->deleter(mt);
    } else if (owner_kind == 2) {
        ga_DLManagedTensorVersioned *mt = owner;
        if (mt->deleter)
            mt->deleter(mt);
    }
}

static const char *dl_device_name(int type)
{
    switch (type) {
    case 1: return "CPU";
    case 2: return "CUDA";
    case 3: return "CUDA host (pinned)";
    case 4: return "OpenCL";
    case 7: return "Vulkan";
    case 8: return "Metal";
    case 10: return "ROCm";
    case 13: return "CUDA managed";
    case 14: return "oneAPI";
    default: return "unknown";
    }
}

/* _from_dlpack(capsule) -> Tensor sharing the capsule's memory. */
static PyObject *from_dlpack_capsule(PyObject *self, PyObject *cap)
{
    if (!PyCapsule_CheckExact(cap)) {
        PyErr_Format(PyExc_TypeError, "_from_dlpack takes a DLPack capsule, not %.100s", Py_TYPE(cap)->tp_name);
        return NULL;
    }
    const char *name = PyCapsule_GetName(cap);
    if (!name && PyErr_Occurred())
        return NULL;
    int kind;
    void *owner;
    ga_DLTensor *dl;
    if (name && strcmp(name, GA_DLPACK_CAPSULE_V) == 0) {
        ga_DLManagedTensorVersioned *mt = PyCapsule_GetPointer(cap, name);
        if (!mt)
            return NULL;
        if (mt->version.major != 1) {
            PyErr_Format(PyExc_BufferError, "DLPack version %u.%u: gpuaccel reads version 1.x",
                         (unsigned)mt->version.major, (unsigned)mt->version.minor);
            return NULL;
        }
        if (mt->flags & GA_DLPACK_FLAG_READ_ONLY) {
            PyErr_SetString(PyExc_BufferError,
                            "the DLPack tensor is read-only and gpuaccel tensors are writable: pass a writable "
                            "array, or copy it first (e.g. x.copy())");
            return NULL;
        }
        kind = 2;
        owner = mt;
        dl = &mt->dl_tensor;
    } else if (name && strcmp(name, GA_DLPACK_CAPSULE) == 0) {
        ga_DLManagedTensor *mt = PyCapsule_GetPointer(cap, name);
        if (!mt)
            return NULL;
        kind = 1;
        owner = mt;
        dl = &mt->dl_tensor;
    } else if (name && (strcmp(name, GA_DLPACK_CAPSULE_USED) == 0 || strcmp(name, GA_DLPACK_CAPSULE_V_USED) == 0)) {
        PyErr_SetString(PyExc_ValueError, "this DLPack capsule was already consumed (a capsule is used once)");
        return NULL;
    } else {
        PyErr_Format(PyExc_TypeError, "not a DLPack capsule (its name is '%s')", name ? name : "(none)");
        return NULL;
    }

    if (dl->dtype.code != GA_kDLFloat || dl->dtype.bits != 32 || dl->dtype.lanes != 1) {
        PyErr_Format(PyExc_TypeError,
                     "gpuaccel tensors are float32 only (got DLPack dtype code %d, %d bits, %d lanes); "
                     "convert first: x.astype(np.float32)",
                     (int)dl->dtype.code, (int)dl->dtype.bits, (int)dl->dtype.lanes);
        return NULL;
    }
    if (dl->ndim < 0 || dl->ndim > GA_MAX_DIMS) {
        PyErr_Format(PyExc_ValueError, "tensors have at most %d dimensions (got %d)", GA_MAX_DIMS, (int)dl->ndim);
        return NULL;
    }
    if (dl->ndim > 0 && !dl->shape) {
        PyErr_SetString(PyExc_BufferError, "the DLPack tensor has no shape");
        return NULL;
    }
    int64_t shape[GA_MAX_DIMS], size = 1;
    for (int i = 0; i < dl->ndim; i++) {
        shape[i] = dl->shape[i];
        if (shape[i] < 0) {
            PyErr_SetString(PyExc_BufferError, "the DLPack tensor has a negative dimension");
            return NULL;
        }
        if (shape[i] > 0 && size > (INT64_MAX / 4) / shape[i]) {
            PyErr_SetString(PyExc_BufferError, "the DLPack tensor is too large");
            return NULL;
        }
        size *= shape[i];
    }
    if (dl->strides && size > 0) {
        int64_t expect = 1;
        for (int i = dl->ndim - 1; i >= 0; i--) {
            if (shape[i] != 1 && dl->strides[i] != expect) {
                PyErr_SetString(PyExc_BufferError,
                                "gpuaccel tensors are C-contiguous and this DLPack tensor is not (strided or "
                                "transposed); copy it first, e.g. np.ascontiguousarray(x)");
                return NULL;
            }
            expect *= shape[i];
        }
    }
    char *data = (char *)dl->data;
    if (data)
        data += dl->byte_offset;
    if (size > 0 && !data) {
        PyErr_SetString(PyExc_BufferError, "the DLPack tensor has no data pointer");
        return NULL;
    }
    if (((uintptr_t)data) % sizeof(float) != 0) {
        PyErr_SetString(PyExc_BufferError, "the DLPack tensor's data is not aligned to 4 bytes");
        return NULL;
    }

    ga_device dev;
    if (dl->device.device_type == GA_kDLCPU) {
        if (ga_py_device(&dev, "cpu") < 0)
            return NULL;
    } else if (dl->device.device_type == GA_kDLCUDA) {
        char devname[32];
        snprintf(devname, sizeof devname, "cuda:%d", (int)dl->device.device_id);
        if (dl->device.device_id < 0 || ga_py_device(&dev, devname) < 0) {
            PyErr_Clear();
            PyErr_Format(PyExc_BufferError,
                         "the DLPack tensor is on CUDA device %d, but gpuaccel's CUDA backend is not loaded "
                         "(gpuaccel.cuda.is_available() is False)",
                         (int)dl->device.device_id);
            return NULL;
        }
    } else {
        PyErr_Format(PyExc_BufferError,
                     "the DLPack tensor is on a %s device (DLPack device type %d); gpuaccel takes CPU and "
                     "CUDA tensors",
                     dl_device_name((int)dl->device.device_type), (int)dl->device.device_type);
        return NULL;
    }

    GaTensor *t = ga_tensor_wrap(&dev, dl->ndim, shape, size > 0 ? (float *)data : NULL, owner, kind);
    if (!t)
        return NULL; /* the capsule still owns the tensor: its destructor frees it */
    /* from here on the Tensor owns it */
    if (PyCapsule_SetName(cap, kind == 2 ? GA_DLPACK_CAPSULE_V_USED : GA_DLPACK_CAPSULE_USED) < 0) {
        t->owner = NULL; /* never happens for a valid capsule; keep the capsule the owner */
        t->data = NULL;
        Py_DECREF(t);
        return NULL;
    }
    return (PyObject *)t;
}

PyMethodDef ga_dlpack_methods[] = {
    {"_from_dlpack", from_dlpack_capsule, METH_O,
     "_from_dlpack(capsule) -> Tensor sharing the memory of a DLPack capsule ('dltensor' or "
     "'dltensor_versioned'), which it marks used; gpuaccel.from_dlpack is the public entry."},
    {NULL, NULL, 0, NULL},
};
