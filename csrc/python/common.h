/* Shared by the binding files (the only C files that include Python.h). */
#ifndef GA_PY_COMMON_H
#define GA_PY_COMMON_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* module.c owns NumPy's API table; the other files import it from there. */
#ifndef GA_PY_MODULE_MAIN
#define NO_IMPORT_ARRAY
#endif
#define PY_ARRAY_UNIQUE_SYMBOL ga_ARRAY_API
#include <numpy/arrayobject.h>

#include "core/backend.h"

#define GA_MAX_DIMS 8

/* Raise the Python exception for `st` with the backend's last message; returns NULL. */
PyObject *ga_py_raise(const ga_backend *be, ga_status st);

/* A device resolved from its canonical name ('cpu', 'cuda:N'). */
typedef struct {
    const ga_backend *be;
    int index;
    char name[32];
} ga_device;

/* Fills `d` from 'cpu' or 'cuda:N'; the CUDA table must have been registered
 * (gpuaccel/_device.py does so). Returns -1 with ValueError/RuntimeError set. */
int ga_py_device(ga_device *d, const char *name);

/* ---- gpuaccel.Tensor: a float32 array in one device's memory ---- */
typedef struct {
    PyObject_HEAD
    ga_device dev;
    int ndim;
    int64_t shape[GA_MAX_DIMS];
    int64_t size;
    float *data;
    /* Memory imported through DLPack (python/dlpack.c) belongs to its producer:
     * owner is the DLManagedTensor (owner_kind 1) or DLManagedTensorVersioned (2)
     * whose deleter dealloc calls instead of the backend's release. NULL/0: ours. */
    void *owner;
    int owner_kind;
} GaTensor;

extern PyTypeObject GaTensor_Type;
#define GaTensor_Check(o) PyObject_TypeCheck((o), &GaTensor_Type)

/* New tensor of the given shape on `dev` (uninitialised). */
GaTensor *ga_tensor_new(const ga_device *dev, int ndim, const int64_t *shape);
/* A tensor over memory it does not own (owner/owner_kind as above; data is
 * `dev`'s memory). On failure returns NULL and leaves `owner` to the caller. */
GaTensor *ga_tensor_wrap(const ga_device *dev, int ndim, const int64_t *shape, float *data, void *owner,
                         int owner_kind);
/* Calls the producer's deleter of an imported tensor's owner (python/dlpack.c). */
void ga_dlpack_release_owner(void *owner, int owner_kind);
/* Tensor.__dlpack__ and Tensor.__dlpack_device__ (python/dlpack.c). */
PyObject *ga_tensor_dlpack(GaTensor *t, PyObject *args, PyObject *kwds);
PyObject *ga_tensor_dlpack_device(GaTensor *t, PyObject *unused);
/* Host copy as a new float32 ndarray. */
PyObject *ga_tensor_to_numpy(GaTensor *t);

/* ---- registration of the other binding files into the module ---- */
extern PyMethodDef ga_ops_methods[];
extern PyMethodDef ga_dlpack_methods[];
int ga_net_type_init(PyObject *module);

#endif
