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
} GaTensor;

extern PyTypeObject GaTensor_Type;
#define GaTensor_Check(o) PyObject_TypeCheck((o), &GaTensor_Type)

/* New tensor of the given shape on `dev` (uninitialised). */
GaTensor *ga_tensor_new(const ga_device *dev, int ndim, const int64_t *shape);
/* Host copy as a new float32 ndarray. */
PyObject *ga_tensor_to_numpy(GaTensor *t);

/* ---- registration of the other binding files into the module ---- */
extern PyMethodDef ga_ops_methods[];
int ga_net_type_init(PyObject *module);

#endif
