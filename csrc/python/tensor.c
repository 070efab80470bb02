/* gpuaccel.Tensor: a contiguous float32 array in one device's memory, so that
 * notebooks can keep data on a GPU between ga.ops calls. */
#include "python/common.h"

#include <string.h>

static int64_t shape_size(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    return n;
}

GaTensor *ga_tensor_new(const ga_device *dev, int ndim, const int64_t *shape)
{
    if (ndim < 0 || ndim > GA_MAX_DIMS) {
        PyErr_Format(PyExc_ValueError, "tensors have at most %d dimensions", GA_MAX_DIMS);
        return NULL;
    }
    GaTensor *t = PyObject_New(GaTensor, &GaTensor_Type);
    if (!t)
        return NULL;
    t->dev = *dev;
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof(int64_t));
    t->size = shape_size(ndim, shape);
    t->data = NULL;
    t->owner = NULL;
    t->owner_kind = 0;
    ga_status st = dev->be->set_device(dev->index);
    if (st == GA_OK)
        st = dev->be->alloc((void **)&t->data, (size_t)t->size * sizeof(float));
    if (st != GA_OK) {
        t->size = 0;
        Py_DECREF(t);
        return (GaTensor *)ga_py_raise(dev->be, st);
    }
    return t;
}

GaTensor *ga_tensor_wrap(const ga_device *dev, int ndim, const int64_t *shape, float *data, void *owner,
                         int owner_kind)
{
    if (ndim < 0 || ndim > GA_MAX_DIMS) {
        PyErr_Format(PyExc_ValueError, "tensors have at most %d dimensions", GA_MAX_DIMS);
        return NULL;
    }
    GaTensor *t = PyObject_New(GaTensor, &GaTensor_Type);
    if (!t)
        return NULL;
    t->dev = *dev;
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof(int64_t));
    t->size = shape_size(ndim, shape);
    t->data = data;
    t->owner = owner;
    t->owner_kind = owner_kind;
    return t;
}

PyObject *ga_tensor_to_numpy(GaTensor *t)
{
    npy_intp dims[GA_MAX_DIMS];
    for (int i = 0; i < t->ndim; i++)
        dims[i] = (npy_intp)t->shape[i];
    PyObject *arr = PyArray_SimpleNew(t->ndim, dims, NPY_FLOAT32);
    if (!arr)
        return NULL;
    ga_status st;
    Py_BEGIN_ALLOW_THREADS
    st = t->dev.be->set_device(t->dev.index);
    if (st == GA_OK)
        st = t->dev.be->to_host(PyArray_DATA((PyArrayObject *)arr), t->data,
                                (size_t)t->size * sizeof(float));
    Py_END_ALLOW_THREADS
    if (st != GA_OK) {
        Py_DECREF(arr);
        return ga_py_raise(t->dev.be, st);
    }
    return arr;
}

/* Tensor(array, device): copies a float32 ndarray to the device. */
static PyObject *tensor_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"array", "device", NULL};
    PyObject *obj;
    const char *device = "cpu";
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|s:Tensor", kwlist, &obj, &device))
        return NULL;
    if (!PyArray_Check(obj) || PyArray_TYPE((PyArrayObject *)obj) != NPY_FLOAT32) {
        PyErr_SetString(PyExc_TypeError, "Tensor() takes a float32 numpy array");
        return NULL;
    }
    ga_device dev;
    if (ga_py_device(&dev, device) < 0)
        return NULL;
    PyArrayObject *arr = (PyArrayObject *)PyArray_FROM_OTF(obj, NPY_FLOAT32, NPY_ARRAY_IN_ARRAY);
    if (!arr)
        return NULL;
    int ndim = PyArray_NDIM(arr);
    if (ndim > GA_MAX_DIMS) {
        Py_DECREF(arr);
        PyErr_Format(PyExc_ValueError, "tensors have at most %d dimensions", GA_MAX_DIMS);
        return NULL;
    }
    int64_t shape[GA_MAX_DIMS];
    for (int i = 0; i < ndim; i++)
        shape[i] = PyArray_DIM(arr, i);
    GaTensor *t = ga_tensor_new(&dev, ndim, shape);
    if (!t) {
        Py_DECREF(arr);
        return NULL;
    }
    ga_status st;
    Py_BEGIN_ALLOW_THREADS
    st = dev.be->to_device(t->data, PyArray_DATA(arr), (size_t)t->size * sizeof(float));
    Py_END_ALLOW_THREADS
    Py_DECREF(arr);
    if (st != GA_OK) {
        Py_DECREF(t);
        return ga_py_raise(dev.be, st);
    }
    return (PyObject *)t;
}

static void tensor_dealloc(GaTensor *t)
{
    if (t->owner) {
        void *owner = t->owner;
        t->owner = NULL;
        t->data = NULL;
        ga_dlpack_release_owner(owner, t->owner_kind);
    } else if (t->data) {
        t->dev.be->set_device(t->dev.index);
        t->dev.be->release(t->data);
    }
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static PyObject *tensor_numpy(GaTensor *t, PyObject *unused) { return ga_tensor_to_numpy(t); }

static PyObject *tensor_get_shape(GaTensor *t, void *closure)
{
    PyObject *tup = PyTuple_New(t->ndim);
    if (!tup)
        return NULL;
    for (int i = 0; i < t->ndim; i++) {
        PyObject *v = PyLong_FromLongLong(t->shape[i]);
        if (!v) {
            Py_DECREF(tup);
            return NULL;
        }
        PyTuple_SET_ITEM(tup, i, v);
    }
    return tup;
}

static PyObject *tensor_get_device(GaTensor *t, void *closure) { return PyUnicode_FromString(t->dev.name); }

static PyObject *tensor_get_data_ptr(GaTensor *t, void *closure) { return PyLong_FromVoidPtr(t->data); }

static PyObject *tensor_get_dtype(GaTensor *t, void *closure) { return PyUnicode_FromString("float32"); }

static PyObject *tensor_repr(GaTensor *t)
{
    PyObject *shape = tensor_get_shape(t, NULL);
    if (!shape)
        return NULL;
    PyObject *r = PyUnicode_FromFormat("gpuaccel.Tensor(shape=%R, dtype=float32, device='%s')", shape, t->dev.name);
    Py_DECREF(shape);
    return r;
}

static PyObject *tensor_array(GaTensor *t, PyObject *args, PyObject *kwds)
{
    return ga_tensor_to_numpy(t); /* numpy.asarray(tensor) */
}

static PyMethodDef tensor_methods[] = {
    {"numpy", (PyCFunction)tensor_numpy, METH_NOARGS, "Copy to a new float32 numpy array."},
    {"__array__", (PyCFunction)(void (*)(void))tensor_array, METH_VARARGS | METH_KEYWORDS, NULL},
    {"__dlpack__", (PyCFunction)(void (*)(void))ga_tensor_dlpack, METH_VARARGS | METH_KEYWORDS,
     "__dlpack__(*, stream=None, max_version=None, dl_device=None, copy=None): a DLPack capsule sharing "
     "this tensor's memory (ARCHITECTURE.md, DLPack)."},
    {"__dlpack_device__", (PyCFunction)ga_tensor_dlpack_device, METH_NOARGS,
     "__dlpack_device__() -> (1, 0) on the CPU, (2, N) on cuda:N."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef tensor_getset[] = {
    {"shape", (getter)tensor_get_shape, NULL, "shape as a tuple", NULL},
    {"device", (getter)tensor_get_device, NULL, "'cpu' or 'cuda:N'", NULL},
    {"dtype", (getter)tensor_get_dtype, NULL, "always 'float32'", NULL},
    {"data_ptr", (getter)tensor_get_data_ptr, NULL,
     "address of the first element in the device's memory (an int; 0 for an empty tensor), "
     "e.g. to check that DLPack shared memory instead of copying", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject GaTensor_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gpuaccel.Tensor",
    .tp_basicsize = sizeof(GaTensor),
    .tp_dealloc = (destructor)tensor_dealloc,
    .tp_repr = (reprfunc)tensor_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Tensor(array, device='cpu'): a float32 array in a device's memory.",
    .tp_methods = tensor_methods,
    .tp_getset = tensor_getset,
    .tp_new = tensor_new,
};
