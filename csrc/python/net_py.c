/* gpuaccel._C.Net: a network of csrc/net/ owned by a Python object.
 * Every method that runs kernels releases the GIL; a per-net lock keeps two
 * Python threads from running the same network's buffers at once. */
#include "python/common.h"

#include <pythread.h>
#include <string.h>

#include "net/net.h"

typedef struct {
    PyObject_HEAD
    ga_net *net;
    ga_device dev;
    PyThread_type_lock lock;
    PyObject *bound[GA_DATA_SLOTS]; /* what each data slot borrows (an array or a Tensor) */
    PyObject *reducer;              /* the capsule whose ga_net_reducer the net calls (or NULL) */
} GaNet;

/* Run `expr` without the GIL and with the net's lock held. */
#define NET_RUN(self, st, expr)                                 \
    do {                                                        \
        Py_BEGIN_ALLOW_THREADS                                  \
        PyThread_acquire_lock((self)->lock, WAIT_LOCK);         \
        st = (expr);                                            \
        PyThread_release_lock((self)->lock);                    \
        Py_END_ALLOW_THREADS                                    \
    } while (0)

/* 0 when every key of d is "kind" or one of the keys its kind reads (a
 * mistyped key is an error, never read as 0). */
static int check_keys(PyObject *d, int kind, Py_ssize_t i)
{
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(d, &pos, &key, &value)) {
        const char *k = PyUnicode_Check(key) ? PyUnicode_AsUTF8(key) : NULL;
        if (!k) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_TypeError, "layer %zd: spec keys must be strings", i);
            return -1;
        }
        const char *const *keys = ga_layer_kind_keys(kind);
        int known = strcmp(k, "kind") == 0;
        for (int j = 0; !known && j < GA_LAYER_MAX_KEYS && keys[j]; j++)
            known = strcmp(k, keys[j]) == 0;
        if (!known) {
            PyErr_Format(PyExc_ValueError, "layer %zd (%s): unknown spec key '%s'", i, ga_layer_kind_name(kind), k);
            return -1;
        }
    }
    return 0;
}

static const char *const act_names[GA_ACT_KINDS] = GA_ACT_NAMES;
static const float act_alphas[GA_ACT_KINDS] = GA_ACT_DEFAULT_ALPHAS;

/* The activation names (alphas = 0) or default alphas (alphas = 1) as a tuple,
 * index = ga_act_kind: _C.ACTIVATIONS, _C.ACTIVATION_ALPHAS. */
static PyObject *activation_table(int alphas)
{
    PyObject *t = PyTuple_New(GA_ACT_KINDS);
    for (int k = 0; t && k < GA_ACT_KINDS; k++) {
        PyObject *s = alphas ? PyFloat_FromDouble(act_alphas[k]) : PyUnicode_FromString(act_names[k]);
        if (!s) {
            Py_CLEAR(t);
            break;
        }
        PyTuple_SET_ITEM(t, k, s);
    }
    return t;
}

/* "activation": a name of GA_ACT_NAMES (absent or None: linear); "alpha": its
 * parameter (absent or None: the kind's default). */
static int parse_activation(PyObject *d, ga_act *act, Py_ssize_t i)
{
    act->kind = GA_ACT_NONE;
    PyObject *v = PyDict_GetItemString(d, "activation");
    if (v && v != Py_None) {
        const char *name = PyUnicode_Check(v) ? PyUnicode_AsUTF8(v) : NULL;
        if (!name) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_TypeError, "layer %zd: 'activation' must be a string or None", i);
            return -1;
        }
        act->kind = -1;
        for (int k = 0; k < GA_ACT_KINDS; k++)
            if (strcmp(name, act_names[k]) == 0)
                act->kind = k;
        if (act->kind < 0) {
            PyObject *all = activation_table(0);
            if (all)
                PyErr_Format(PyExc_ValueError, "layer %zd: unknown activation '%s' (known: %S)", i, name, all);
            Py_XDECREF(all);
            return -1;
        }
    }
    act->alpha = act_alphas[act->kind];
    if ((v = PyDict_GetItemString(d, "alpha")) && v != Py_None) {
        act->alpha = (float)PyFloat_AsDouble(v);
        if (PyErr_Occurred())
            return -1;
    }
    return 0;
}

static const ga_conv_kernel_name conv_kernels[GA_CONV_KERNEL_COUNT] = GA_CONV_KERNEL_NAMES;

/* "kernel": a convolution algorithm by name (absent: "auto"); the reference
 * loops are for single ops, not networks. */
static int parse_conv_kernel(PyObject *d, int *kernel, Py_ssize_t i)
{
    *kernel = GA_CONV_AUTO;
    PyObject *v = PyDict_GetItemString(d, "kernel");
    if (!v)
        return 0;
    const char *name = PyUnicode_Check(v) ? PyUnicode_AsUTF8(v) : NULL;
    if (!name) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_TypeError, "layer %zd: 'kernel' must be a string", i);
        return -1;
    }
    for (int j = 0; j < GA_CONV_KERNEL_COUNT; j++)
        if (strcmp(name, conv_kernels[j].name) == 0 && conv_kernels[j].variant != GA_VARIANT_REF) {
            *kernel = conv_kernels[j].variant;
            return 0;
        }
    PyErr_Format(PyExc_ValueError,
                 "layer %zd: unknown convolution kernel '%s' (expected auto, im2col, winograd, winograd2, winograd4 or "
                 "implicit)",
                 i, name);
    return -1;
}

/* The name reports use for a variant (its first name in the table). */
static const char *conv_kernel_name(int variant)
{
    for (int j = 0; j < GA_CONV_KERNEL_COUNT; j++)
        if (conv_kernels[j].variant == variant)
            return conv_kernels[j].name;
    return "?";
}

/* d[key] as the index of its name in names (count of them); absent: dflt. */
static int parse_name(PyObject *d, const char *key, const char *const *names, int count, int dflt, int *out,
                      Py_ssize_t i)
{
    *out = dflt;
    PyObject *v = PyDict_GetItemString(d, key);
    if (!v)
        return 0;
    const char *name = PyUnicode_Check(v) ? PyUnicode_AsUTF8(v) : NULL;
    if (!name) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_TypeError, "layer %zd: '%s' must be a string", i, key);
        return -1;
    }
    for (int j = 0; j < count; j++)
        if (strcmp(name, names[j]) == 0) {
            *out = j;
            return 0;
        }
    PyErr_Format(PyExc_ValueError, "layer %zd: unknown %s '%s'", i, key, name);
    return -1;
}

/* d[key] as a pair of floats [lo, hi]; absent or None: *set = 0 and r untouched. */
static int parse_pair(PyObject *d, const char *key, float r[2], int *set, Py_ssize_t i)
{
    *set = 0;
    PyObject *v = PyDict_GetItemString(d, key);
    if (!v || v == Py_None)
        return 0;
    PyObject *seq = PySequence_Fast(v, "");
    if (!seq || PySequence_Fast_GET_SIZE(seq) != 2) {
        Py_XDECREF(seq);
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "layer %zd: '%s' must be a pair of floats (lower, upper)", i, key);
        return -1;
    }
    for (int j = 0; j < 2; j++) {
        r[j] = (float)PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, j));
        if (PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    *set = 1;
    return 0;
}

static const char *const flip_names[GA_AUG_FLIP_MODES] = GA_AUG_FLIP_NAMES;
static const char *const fill_names[GA_FILL_MODES] = GA_FILL_NAMES;
static const char *const interp_names[GA_INTERPS] = GA_INTERP_NAMES;

/* The preprocessing layers' keys (Rescaling, the random augmentation layers). */
static int parse_augment(PyObject *d, ga_layer_spec *sp, Py_ssize_t i)
{
    PyObject *v;
    struct { const char *key; float *dst; float dflt; } floats[] = {
        {"scale", &sp->scale, 1.0f}, {"offset", &sp->offset, 0.0f}, {"fill_value", &sp->fill_value, 0.0f},
    };
    for (size_t j = 0; j < sizeof floats / sizeof floats[0]; j++) {
        *floats[j].dst = floats[j].dflt;
        if (!(v = PyDict_GetItemString(d, floats[j].key)))
            continue;
        *floats[j].dst = (float)PyFloat_AsDouble(v);
        if (PyErr_Occurred())
            return -1;
    }
    int set;
    if (parse_name(d, "mode", flip_names, GA_AUG_FLIP_MODES, GA_AUG_FLIP_H | GA_AUG_FLIP_V, &sp->flip_mode, i) < 0 ||
        parse_name(d, "fill_mode", fill_names, GA_FILL_MODES, GA_FILL_REFLECT, &sp->fill_mode, i) < 0 ||
        parse_name(d, "interpolation", interp_names, GA_INTERPS, GA_INTERP_BILINEAR, &sp->interpolation, i) < 0 ||
        parse_pair(d, "height_factor", sp->factor_h, &set, i) < 0 || parse_pair(d, "factor", sp->factor_h, &set, i) < 0 ||
        parse_pair(d, "width_factor", sp->factor_w, &sp->factor_w_set, i) < 0)
        return -1;
    if ((v = PyDict_GetItemString(d, "seed")) && v != Py_None) {
        sp->seed = PyLong_AsLongLong(v);
        if (sp->seed == -1 && PyErr_Occurred())
            return -1;
        sp->seeded = 1;
    }
    return 0;
}

/* Read one layer description (a dict) into `sp`. */
static int parse_spec(PyObject *d, ga_layer_spec *sp, Py_ssize_t i)
{
    memset(sp, 0, sizeof *sp);
    if (!PyDict_Check(d)) {
        PyErr_Format(PyExc_TypeError, "layer %zd: expected a dict", i);
        return -1;
    }
    PyObject *kind = PyDict_GetItemString(d, "kind");
    const char *k = kind ? PyUnicode_AsUTF8(kind) : NULL;
    if (!k) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "layer %zd: missing 'kind'", i);
        return -1;
    }
    sp->kind = -1;
    for (int j = 0; j < GA_LAYER_KINDS; j++)
        if (strcmp(k, ga_layer_kind_name(j)) == 0)
            sp->kind = j;
    if (sp->kind < 0) {
        PyErr_Format(PyExc_ValueError, "layer %zd: unknown kind '%s'", i, k);
        return -1;
    }
    if (check_keys(d, sp->kind, i) < 0)
        return -1;
    struct { const char *key; int64_t *dst; } ints[] = {
        {"units", &sp->units}, {"kernel_h", &sp->kernel_h}, {"kernel_w", &sp->kernel_w},
        {"stride", &sp->stride}, {"pad", &sp->pad},
    };
    for (size_t j = 0; j < sizeof ints / sizeof ints[0]; j++) {
        PyObject *v = PyDict_GetItemString(d, ints[j].key);
        if (!v)
            continue;
        long long x = PyLong_AsLongLong(v);
        if (x == -1 && PyErr_Occurred())
            return -1;
        *ints[j].dst = x;
    }
    PyObject *v;
    if (parse_activation(d, &sp->act, i) < 0)
        return -1;
    sp->use_bias = 1;
    if ((v = PyDict_GetItemString(d, "use_bias")) && (sp->use_bias = PyObject_IsTrue(v)) < 0)
        return -1;
    struct { const char *key; float *dst; float dflt; } floats[] = {
        {"rate", &sp->rate, 0.0f}, {"momentum", &sp->momentum, 0.99f}, {"eps", &sp->eps, 1e-3f},
    };
    for (size_t j = 0; j < sizeof floats / sizeof floats[0]; j++) {
        *floats[j].dst = floats[j].dflt;
        if (!(v = PyDict_GetItemString(d, floats[j].key)))
            continue;
        *floats[j].dst = (float)PyFloat_AsDouble(v);
        if (PyErr_Occurred())
            return -1;
    }
    if (parse_conv_kernel(d, &sp->kernel, i) < 0)
        return -1;
    sp->projection = GA_PROJ_AUTO;
    if ((v = PyDict_GetItemString(d, "projection"))) {
        if (v == Py_None)
            sp->projection = GA_PROJ_AUTO;
        else if ((sp->projection = PyObject_IsTrue(v)) < 0)
            return -1;
    }
    return parse_augment(d, sp, i);
}

static void net_dealloc(GaNet *self)
{
    if (self->net)
        ga_net_destroy(self->net);
    for (int i = 0; i < GA_DATA_SLOTS; i++)
        Py_CLEAR(self->bound[i]);
    Py_CLEAR(self->reducer);
    if (self->lock)
        PyThread_free_lock(self->lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Net(layers: list[dict], input_shape: (C, H, W), device: str, seed: int) */
static int net_init(GaNet *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"layers", "input_shape", "device", "seed", NULL};
    PyObject *layers;
    long long c, h, w;
    const char *device = "cpu";
    unsigned long long seed = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O(LLL)|sK:Net", kwlist, &layers, &c, &h, &w, &device, &seed))
        return -1;
    if (self->net) {
        PyErr_SetString(PyExc_RuntimeError, "Net is already initialised");
        return -1;
    }
    if (ga_py_device(&self->dev, device) < 0)
        return -1;
    PyObject *seq = PySequence_Fast(layers, "layers must be a list of dicts");
    if (!seq)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n == 0 || n > 4096) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "a network needs between 1 and 4096 layers");
        return -1;
    }
    ga_layer_spec *specs = PyMem_Calloc((size_t)n, sizeof *specs);
    if (!specs) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    int rc = 0;
    for (Py_ssize_t i = 0; i < n && rc == 0; i++)
        rc = parse_spec(PySequence_Fast_GET_ITEM(seq, i), &specs[i], i);
    Py_DECREF(seq);
    if (rc == 0) {
        int64_t shape[3] = {c, h, w};
        ga_status st;
        ga_net *net = NULL;
        Py_BEGIN_ALLOW_THREADS
        st = ga_net_create(&net, self->dev.be, self->dev.index, specs, (int)n, shape, (uint64_t)seed);
        Py_END_ALLOW_THREADS
        if (st != GA_OK) {
            ga_py_raise(NULL, st);
            rc = -1;
        }
        self->net = net;
    }
    PyMem_Free(specs);
    if (rc == 0 && !(self->lock = PyThread_allocate_lock())) {
        PyErr_NoMemory();
        rc = -1;
    }
    return rc;
}

static int ready(GaNet *self)
{
    if (self->net)
        return 0;
    PyErr_SetString(PyExc_RuntimeError, "Net is not initialised");
    return -1;
}

/* A C-contiguous float32 batch (n, C, H, W) matching the net's input. */
static PyArrayObject *batch_x(GaNet *self, PyObject *xo)
{
    if (!PyArray_Check(xo) || PyArray_TYPE((PyArrayObject *)xo) != NPY_FLOAT32) {
        PyErr_SetString(PyExc_TypeError, "x must be a float32 numpy array");
        return NULL;
    }
    PyArrayObject *x = (PyArrayObject *)xo;
    const int64_t *in = self->net->in;
    if (PyArray_NDIM(x) != 4 || PyArray_DIM(x, 1) != in[0] || PyArray_DIM(x, 2) != in[1] ||
        PyArray_DIM(x, 3) != in[2]) {
        PyErr_Format(PyExc_ValueError, "x must have shape (N, %lld, %lld, %lld)", (long long)in[0],
                     (long long)in[1], (long long)in[2]);
        return NULL;
    }
    if (PyArray_DIM(x, 0) == 0) {
        PyErr_SetString(PyExc_ValueError, "empty batch: x has no samples");
        return NULL;
    }
    return (PyArrayObject *)PyArray_FROM_OTF(xo, NPY_FLOAT32, NPY_ARRAY_IN_ARRAY);
}

/* int32 labels (n) within [0, classes). */
static PyArrayObject *batch_labels(GaNet *self, PyObject *yo, npy_intp n)
{
    if (!PyArray_Check(yo) || PyArray_TYPE((PyArrayObject *)yo) != NPY_INT32) {
        PyErr_SetString(PyExc_TypeError, "labels must be an int32 numpy array");
        return NULL;
    }
    PyArrayObject *y = (PyArrayObject *)PyArray_FROM_OTF(yo, NPY_INT32, NPY_ARRAY_IN_ARRAY);
    if (!y)
        return NULL;
    if (PyArray_NDIM(y) != 1 || PyArray_DIM(y, 0) != n) {
        Py_DECREF(y);
        PyErr_Format(PyExc_ValueError, "labels must have shape (%lld,)", (long long)n);
        return NULL;
    }
    const int32_t *lab = PyArray_DATA(y);
    for (npy_intp i = 0; i < n; i++)
        if (lab[i] < 0 || lab[i] >= self->net->classes) {
            PyErr_Format(PyExc_ValueError, "label %d at index %lld is outside [0, %lld)", lab[i], (long long)i,
                         (long long)self->net->classes);
            Py_DECREF(y);
            return NULL;
        }
    return y;
}

static PyObject *net_train_step(GaNet *self, PyObject *args)
{
    PyObject *xo, *yo;
    if (!PyArg_ParseTuple(args, "OO:train_step", &xo, &yo) || ready(self) < 0)
        return NULL;
    PyArrayObject *x = batch_x(self, xo), *y = NULL;
    if (!x || !(y = batch_labels(self, yo, PyArray_DIM(x, 0)))) {
        Py_XDECREF(x);
        return NULL;
    }
    float loss = 0.0f;
    int64_t correct = 0;
    ga_status st;
    NET_RUN(self, st, ga_net_train_step(self->net, PyArray_DATA(x), PyArray_DATA(y), PyArray_DIM(x, 0), &loss, &correct));
    Py_DECREF(x);
    Py_DECREF(y);
    if (st != GA_OK)
        return ga_py_raise(NULL, st);
    return Py_BuildValue("(dL)", (double)loss, (long long)correct);
}

/* ---- data resident on the device ---- */

static int data_slot(int slot)
{
    if (slot < 0 || slot >= GA_DATA_SLOTS) {
        PyErr_Format(PyExc_ValueError, "data slot must be 0 (train), 1 (eval) or 2 (infer), got %d", slot);
        return -1;
    }
    return 0;
}

/* x a float32 (N, C, H, W) array or a Tensor on the net's device, labels int32
 * (N) or None: what the net reads (*x_dev: in place, *x_host: to copy in) and a
 * reference to keep while it does (*keep) or to drop after the copy. */
typedef struct {
    PyObject *keep;
    PyArrayObject *labels;
    const float *x_dev, *x_host;
    int64_t n;
} data_args;

static int parse_data(GaNet *self, PyObject *xo, PyObject *yo, data_args *a)
{
    const int64_t *in = self->net->in;
    *a = (data_args){0};
    if (GaTensor_Check(xo)) {
        GaTensor *t = (GaTensor *)xo;
        if (t->dev.be != self->dev.be || t->dev.index != self->dev.index) {
            PyErr_Format(PyExc_ValueError, "x is a Tensor on %s, the model is on %s", t->dev.name, self->dev.name);
            return -1;
        }
        if (t->ndim != 4 || t->shape[1] != in[0] || t->shape[2] != in[1] || t->shape[3] != in[2] || t->shape[0] == 0) {
            PyErr_Format(PyExc_ValueError, "x must have shape (N, %lld, %lld, %lld) with N >= 1", (long long)in[0],
                         (long long)in[1], (long long)in[2]);
            return -1;
        }
        Py_INCREF(xo);
        a->keep = xo;
        a->x_dev = t->data;
        a->n = t->shape[0];
    } else {
        PyArrayObject *x = batch_x(self, xo);
        if (!x)
            return -1;
        a->keep = (PyObject *)x;
        a->n = PyArray_DIM(x, 0);
        if (self->dev.be->host_memory)
            a->x_dev = PyArray_DATA(x); /* the CPU reads it where it is */
        else
            a->x_host = PyArray_DATA(x);
    }
    if (yo != Py_None && !(a->labels = batch_labels(self, yo, (npy_intp)a->n))) {
        Py_CLEAR(a->keep);
        return -1;
    }
    return 0;
}

/* set_data(slot, x, labels or None): bind a data set (slot 0 train, 1 eval). On the
 * CPU an array is read in place, on a GPU copied in; a Tensor is read in place. */
static PyObject *net_set_data(GaNet *self, PyObject *args)
{
    int slot;
    PyObject *xo, *yo;
    data_args a;
    if (!PyArg_ParseTuple(args, "iOO:set_data", &slot, &xo, &yo) || ready(self) < 0 || data_slot(slot) < 0 ||
        parse_data(self, xo, yo, &a) < 0)
        return NULL;
    ga_status st;
    NET_RUN(self, st, ga_net_set_data(self->net, slot, a.x_dev, a.x_host, a.labels ? PyArray_DATA(a.labels) : NULL,
                                      a.n));
    Py_XDECREF(a.labels);
    if (st != GA_OK || a.x_host) /* failed, or copied: nothing to keep */
        Py_CLEAR(a.keep);
    if (st != GA_OK)
        return ga_py_raise(NULL, st);
    Py_XSETREF(self->bound[slot], a.keep);
    Py_RETURN_NONE;
}

/* infer(x, labels or None, batch): evaluate -> (loss sum, correct), or predict ->
 * logits, over the whole of x in one call: bound, run and unbound under the net's
 * lock, so threads predicting on one model at once do not meet. */
static PyObject *net_infer(GaNet *self, PyObject *args)
{
    PyObject *xo, *yo;
    long long batch;
    data_args a;
    if (!PyArg_ParseTuple(args, "OOL:infer", &xo, &yo, &batch) || ready(self) < 0 || parse_data(self, xo, yo, &a) < 0)
        return NULL;
    PyObject *out = NULL;
    if (!a.labels) {
        npy_intp dims[2] = {(npy_intp)a.n, (npy_intp)self->net->classes};
        if (!(out = PyArray_SimpleNew(2, dims, NPY_FLOAT32))) {
            Py_DECREF(a.keep);
            return NULL;
        }
    }
    double loss_sum = 0.0;
    int64_t correct = 0;
    ga_status st;
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(self->lock, WAIT_LOCK);
    st = ga_net_set_data(self->net, GA_DATA_INFER, a.x_dev, a.x_host, a.labels ? PyArray_DATA(a.labels) : NULL, a.n);
    if (st == GA_OK)
        st = a.labels ? ga_net_evaluate_data(self->net, GA_DATA_INFER, batch, &loss_sum, &correct)
                      : ga_net_predict_data(self->net, GA_DATA_INFER, batch, PyArray_DATA((PyArrayObject *)out));
    ga_net_clear_data(self->net, GA_DATA_INFER);
    PyThread_release_lock(self->lock);
    Py_END_ALLOW_THREADS
    Py_DECREF(a.keep);
    Py_XDECREF(a.labels);
    if (st != GA_OK) {
        Py_XDECREF(out);
        return ga_py_raise(NULL, st);
    }
    return out ? out : Py_BuildValue("(dL)", loss_sum, (long long)correct);
}

static PyObject *net_clear_data(GaNet *self, PyObject *arg)
{
    int slot = (int)PyLong_AsLong(arg);
    if ((slot == -1 && PyErr_Occurred()) || ready(self) < 0 || data_slot(slot) < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(self->lock, WAIT_LOCK);
    ga_net_clear_data(self->net, slot);
    PyThread_release_lock(self->lock);
    Py_END_ALLOW_THREADS
    Py_CLEAR(self->bound[slot]);
    Py_RETURN_NONE;
}

/* set_order(order or None): int32/int64 indices of the bound training data */
static PyObject *net_set_order(GaNet *self, PyObject *arg)
{
    if (ready(self) < 0)
        return NULL;
    PyArrayObject *o = NULL;
    if (arg != Py_None) {
        if (!PyArray_Check(arg) || PyArray_NDIM((PyArrayObject *)arg) != 1 ||
            !PyArray_ISINTEGER((PyArrayObject *)arg)) {
            PyErr_SetString(PyExc_TypeError, "order must be a 1-d integer numpy array or None");
            return NULL;
        }
        if (PyArray_DIM((PyArrayObject *)arg, 0) != self->net->data[GA_DATA_TRAIN].n) {
            PyErr_Format(PyExc_ValueError, "order must have one entry per training sample (%lld), got %lld",
                         (long long)self->net->data[GA_DATA_TRAIN].n, (long long)PyArray_DIM((PyArrayObject *)arg, 0));
            return NULL;
        }
        if (!(o = (PyArrayObject *)PyArray_FROM_OTF(arg, NPY_INT32, NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST)))
            return NULL;
    }
    ga_status st;
    NET_RUN(self, st, ga_net_set_order(self->net, o ? PyArray_DATA(o) : NULL));
    Py_XDECREF(o);
    if (st != GA_OK)
        return ga_py_raise(NULL, st);
    Py_RETURN_NONE;
}

static PyObject *net_train_steps(GaNet *self, PyObject *args)
{
    long long steps, batch;
    if (!PyArg_ParseTuple(args, "LL:train_steps", &steps, &batch) || ready(self) < 0)
        return NULL;
    int64_t done = 0, samples = 0, correct = 0;
    double loss_sum = 0.0;
    ga_status st;
    NET_RUN(self, st, ga_net_train_steps(self->net, steps, batch, &done, &samples, &loss_sum, &correct));
    if (st != GA_OK)
        return ga_py_raise(NULL, st);
    return Py_BuildValue("(LLdL)", (long long)done, (long long)samples, loss_sum, (long long)correct);
}

static PyObject *net_evaluate_data(GaNet *self, PyObject *args)
{
    int slot;
    long long batch;
    if (!PyArg_ParseTuple(args, "iL:evaluate_data", &slot, &batch) || ready(self) < 0 || data_slot(slot) < 0)
        return NULL;
    double loss_sum = 0.0;
    int64_t correct = 0;
    ga_status st;
    NET_RUN(self, st, ga_net_evaluate_data(self->net, slot, batch, &loss_sum, &correct));
    if (st != GA_OK)
        return ga_py_raise(NULL, st);
    return Py_BuildValue("(dL)", loss_sum, (long long)correct);
}

static PyObject *net_predict_data(GaNet *self, PyObject *args)
{
    int slot;
    long long batch;
    if (!PyArg_ParseTuple(args, "iL:predict_data", &slot, &batch) || ready(self) < 0 || data_slot(slot) < 0)
        return NULL;
    const ga_net_data *d = &self->net->data[slot];
    if (!d->x) {
        PyErr_SetString(PyExc_ValueError, "predict_data: no data bound to that slot");
        return NULL;
    }
    npy_intp dims[2] = {(npy_intp)d->n, (npy_intp)self->net->classes};
    PyObject *out = PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (!out)
        return NULL;
    ga_status st;
    NET_RUN(self, st, ga_net_predict_data(self->net, slot, batch, PyArray_DATA((PyArrayObject *)out)));
    if (st != GA_OK) {
        Py_DECREF(out);
        return ga_py_raise(NULL, st);
    }
    return out;
}

/* set_precision(flags): 0 (fp32) or _C.PRECISION_TF32 */
static PyObject *net_set_precision(GaNet *self, PyObject *arg)
{
    long flags = PyLong_AsLong(arg);
    if ((flags == -1 && PyErr_Occurred()) || ready(self) < 0)
        return NULL;
    ga_status st;
    NET_RUN(self, st, ga_net_set_precision(self->net, (int)flags));
    if (st != GA_OK)
        return ga_py_raise(NULL, st);
    Py_RETURN_NONE;
}

/* set_reducer(capsule or None): the gradient reducer of data-parallel training, a
 * "gpuaccel._mpi.reducer" capsule holding a ga_net_reducer (gpuaccel._mpi). The
 * capsule is kept alive as long as the net uses it. */
#define REDUCER_CAPSULE "gpuaccel._mpi.reducer"
static PyObject *net_set_reducer(GaNet *self, PyObject *arg)
{
    if (ready(self) < 0)
        return NULL;
    const ga_net_reducer *r = NULL;
    if (arg != Py_None) {
        if (!PyCapsule_IsValid(arg, REDUCER_CAPSULE)) {
            PyErr_SetString(PyExc_TypeError, "set_reducer: expected a " REDUCER_CAPSULE " capsule or None");
            return NULL;
        }
        if (!(r = PyCapsule_GetPointer(arg, REDUCER_CAPSULE)))
            return NULL;
    }
    ga_status st;
    NET_RUN(self, st, ga_net_set_reducer(self->net, r));
    if (st != GA_OK)
        return ga_py_raise(NULL, st);
    PyObject *old = self->reducer;
    self->reducer = r ? arg : NULL;
    Py_XINCREF(self->reducer);
    Py_XDECREF(old);
    Py_RETURN_NONE;
}

/* set_grad_batch(n): the loss of each later step is divided by n (0: by its own batch) */
static PyObject *net_set_grad_batch(GaNet *self, PyObject *arg)
{
    long long n = PyLong_AsLongLong(arg);
    if ((n == -1 && PyErr_Occurred()) || ready(self) < 0)
        return NULL;
    ga_status st;
    NET_RUN(self, st, ga_net_set_grad_batch(self->net, n));
    if (st != GA_OK)
        return ga_py_raise(NULL, st);
    Py_RETURN_NONE;
}

/* set_rng_salt(k): later dropout masks / augmentation transforms from streams mixed with k (0: the model's own) */
static PyObject *net_set_rng_salt(GaNet *self, PyObject *arg)
{
    unsigned long long salt = PyLong_AsUnsignedLongLong(arg);
    if ((salt == (unsigned long long)-1 && PyErr_Occurred()) || ready(self) < 0)
        return NULL;
    ga_status st;
    NET_RUN(self, st, ga_net_set_rng_salt(self->net, (uint64_t)salt));
    if (st != GA_OK)
        return ga_py_raise(NULL, st);
    Py_RETURN_NONE;
}

static PyObject *net_graph_count(GaNet *self, PyObject *unused)
{
    return ready(self) < 0 ? NULL : PyLong_FromLong(ga_net_graph_count(self->net));
}

static PyObject *net_predict(GaNet *self, PyObject *xo)
{
    if (ready(self) < 0)
        return NULL;
    PyArrayObject *x = batch_x(self, xo);
    if (!x)
        return NULL;
    npy_intp dims[2] = {PyArray_DIM(x, 0), (npy_intp)self->net->classes};
    PyObject *out = PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (!out) {
        Py_DECREF(x);
        return NULL;
    }
    ga_status st;
    NET_RUN(self, st, ga_net_predict(self->net, PyArray_DATA(x), dims[0], PyArray_DATA((PyArrayObject *)out)));
    Py_DECREF(x);
    if (st != GA_OK) {
        Py_DECREF(out);
        return ga_py_raise(NULL, st);
    }
    return out;
}

static PyObject *net_evaluate(GaNet *self, PyObject *args)
{
    PyObject *xo, *yo;
    if (!PyArg_ParseTuple(args, "OO:evaluate", &xo, &yo) || ready(self) < 0)
        return NULL;
    PyArrayObject *x = batch_x(self, xo), *y = NULL;
    if (!x || !(y = batch_labels(self, yo, PyArray_DIM(x, 0)))) {
        Py_XDECREF(x);
        return NULL;
    }
    double loss_sum = 0.0;
    int64_t correct = 0;
    ga_status st;
    NET_RUN(self, st, ga_net_evaluate(self->net, PyArray_DATA(x), PyArray_DATA(y), PyArray_DIM(x, 0), &loss_sum, &correct));
    Py_DECREF(x);
    Py_DECREF(y);
    if (st != GA_OK)
        return ga_py_raise(NULL, st);
    return Py_BuildValue("(dL)", loss_sum, (long long)correct);
}

/* set_optimizer(kind, lr, momentum, beta1, beta2, eps, weight_decay, nesterov) */
static PyObject *net_set_optimizer(GaNet *self, PyObject *args)
{
    const char *kind;
    ga_optimizer o = {0};
    if (!PyArg_ParseTuple(args, "sffffffp:set_optimizer", &kind, &o.lr, &o.momentum, &o.beta1, &o.beta2, &o.eps,
                          &o.weight_decay, &o.nesterov) ||
        ready(self) < 0)
        return NULL;
    if (strcmp(kind, "sgd") == 0)
        o.kind = GA_OPT_SGD;
    else if (strcmp(kind, "adam") == 0)
        o.kind = GA_OPT_ADAM;
    else {
        PyErr_Format(PyExc_ValueError, "unknown optimizer '%s'", kind);
        return NULL;
    }
    ga_status st;
    NET_RUN(self, st, ga_net_set_optimizer(self->net, &o));
    if (st != GA_OK)
        return ga_py_raise(NULL, st);
    Py_RETURN_NONE;
}

static PyObject *net_set_learning_rate(GaNet *self, PyObject *arg)
{
    const double lr = PyFloat_AsDouble(arg);
    if ((lr == -1.0 && PyErr_Occurred()) || ready(self) < 0)
        return NULL;
    ga_status st;
    NET_RUN(self, st, ga_net_set_learning_rate(self->net, (float)lr));
    if (st != GA_OK)
        return ga_py_raise(NULL, st);
    Py_RETURN_NONE;
}

/* A host copy of one of the net's flat blocks (parameters or state). */
static PyObject *block_get(GaNet *self, int64_t count, ga_status (*get)(ga_net *, float *))
{
    npy_intp n = (npy_intp)count;
    PyObject *out = PyArray_SimpleNew(1, &n, NPY_FLOAT32);
    if (!out)
        return NULL;
    ga_status st;
    NET_RUN(self, st, get(self->net, PyArray_DATA((PyArrayObject *)out)));
    if (st != GA_OK) {
        Py_DECREF(out);
        return ga_py_raise(NULL, st);
    }
    return out;
}

/* Overwrite one of the net's flat blocks from a float32 array of `count` values. */
static PyObject *block_set(GaNet *self, PyObject *arg, int64_t count, const char *what,
                           ga_status (*set)(ga_net *, const float *))
{
    if (!PyArray_Check(arg) || PyArray_TYPE((PyArrayObject *)arg) != NPY_FLOAT32) {
        PyErr_Format(PyExc_TypeError, "%s must be a float32 numpy array", what);
        return NULL;
    }
    PyArrayObject *p = (PyArrayObject *)PyArray_FROM_OTF(arg, NPY_FLOAT32, NPY_ARRAY_IN_ARRAY);
    if (!p)
        return NULL;
    if (PyArray_SIZE(p) != (npy_intp)count) {
        Py_DECREF(p);
        PyErr_Format(PyExc_ValueError, "expected %lld %s values", (long long)count, what);
        return NULL;
    }
    ga_status st;
    NET_RUN(self, st, set(self->net, PyArray_DATA(p)));
    Py_DECREF(p);
    if (st != GA_OK)
        return ga_py_raise(NULL, st);
    Py_RETURN_NONE;
}

static PyObject *net_get_params(GaNet *self, PyObject *unused)
{
    return ready(self) < 0 ? NULL : block_get(self, self->net->nparams, ga_net_get_params);
}

static PyObject *net_set_params(GaNet *self, PyObject *arg)
{
    return ready(self) < 0 ? NULL : block_set(self, arg, self->net->nparams, "params", ga_net_set_params);
}

static PyObject *net_get_state(GaNet *self, PyObject *unused)
{
    return ready(self) < 0 ? NULL : block_get(self, self->net->nstate, ga_net_get_state);
}

static PyObject *net_set_state(GaNet *self, PyObject *arg)
{
    return ready(self) < 0 ? NULL : block_set(self, arg, self->net->nstate, "state", ga_net_set_state);
}

/* The optimizer set now as a name, or NULL with ValueError. */
static int opt_kind(const char *name)
{
    if (strcmp(name, "sgd") == 0)
        return GA_OPT_SGD;
    if (strcmp(name, "adam") == 0)
        return GA_OPT_ADAM;
    PyErr_Format(PyExc_ValueError, "unknown optimizer '%s'", name);
    return -1;
}

/* get_opt_state() -> (kind, m1, m2 or None, steps, draws): the optimizer's moment
 * blocks (host copies, the parameter block's layout) and step counters. */
static PyObject *net_get_opt_state(GaNet *self, PyObject *unused)
{
    if (ready(self) < 0)
        return NULL;
    const int kind = self->net->opt.kind;
    npy_intp n = (npy_intp)self->net->nparams;
    PyObject *m1 = PyArray_SimpleNew(1, &n, NPY_FLOAT32);
    PyObject *m2 = kind == GA_OPT_ADAM ? PyArray_SimpleNew(1, &n, NPY_FLOAT32) : (Py_INCREF(Py_None), Py_None);
    if (!m1 || !m2) {
        Py_XDECREF(m1);
        Py_XDECREF(m2);
        return NULL;
    }
    float *p1 = PyArray_DATA((PyArrayObject *)m1);
    float *p2 = m2 == Py_None ? NULL : PyArray_DATA((PyArrayObject *)m2);
    int64_t counters[2] = {0, 0};
    ga_status st;
    NET_RUN(self, st, ga_net_get_opt_state(self->net, kind, self->net->nparams, p1, p2, counters));
    if (st != GA_OK) {
        Py_DECREF(m1);
        Py_DECREF(m2);
        return ga_py_raise(NULL, st);
    }
    return Py_BuildValue("(sNNLL)", kind == GA_OPT_ADAM ? "adam" : "sgd", m1, m2, (long long)counters[0],
                         (long long)counters[1]);
}

/* A float32 array of exactly `count` values (a new reference), or NULL with an error. */
static PyArrayObject *moment_array(PyObject *arg, int64_t count, const char *what)
{
    if (!PyArray_Check(arg) || PyArray_TYPE((PyArrayObject *)arg) != NPY_FLOAT32) {
        PyErr_Format(PyExc_TypeError, "set_opt_state: %s must be a float32 numpy array", what);
        return NULL;
    }
    PyArrayObject *p = (PyArrayObject *)PyArray_FROM_OTF(arg, NPY_FLOAT32, NPY_ARRAY_IN_ARRAY);
    if (p && PyArray_SIZE(p) != (npy_intp)count) {
        PyErr_Format(PyExc_ValueError, "set_opt_state: %s has %lld values, the network has %lld parameters", what,
                     (long long)PyArray_SIZE(p), (long long)count);
        Py_DECREF(p);
        return NULL;
    }
    return p;
}

/* set_opt_state(kind, m1, m2 or None, steps, draws): what get_opt_state returned. */
static PyObject *net_set_opt_state(GaNet *self, PyObject *args)
{
    const char *name;
    PyObject *a1, *a2;
    long long t, draws;
    if (!PyArg_ParseTuple(args, "sOOLL:set_opt_state", &name, &a1, &a2, &t, &draws) || ready(self) < 0)
        return NULL;
    const int kind = opt_kind(name);
    if (kind < 0)
        return NULL;
    if (kind != self->net->opt.kind) {
        PyErr_Format(PyExc_ValueError, "set_opt_state: the state is for %s, the network's optimizer is %s",
                     kind == GA_OPT_ADAM ? "adam" : "sgd", self->net->opt.kind == GA_OPT_ADAM ? "adam" : "sgd");
        return NULL;
    }
    if ((kind == GA_OPT_ADAM) != (a2 != Py_None)) {
        PyErr_SetString(PyExc_ValueError, kind == GA_OPT_ADAM ? "set_opt_state: Adam needs its second moments"
                                                              : "set_opt_state: SGD keeps one moment block (m2 None)");
        return NULL;
    }
    PyArrayObject *p1 = moment_array(a1, self->net->nparams, "m1");
    PyArrayObject *p2 = p1 && a2 != Py_None ? moment_array(a2, self->net->nparams, "m2") : NULL;
    if (!p1 || (a2 != Py_None && !p2)) {
        Py_XDECREF(p1);
        return NULL;
    }
    const int64_t counters[2] = {(int64_t)t, (int64_t)draws};
    const float *d1 = PyArray_DATA(p1), *d2 = p2 ? PyArray_DATA(p2) : NULL;
    ga_status st;
    NET_RUN(self, st, ga_net_set_opt_state(self->net, kind, self->net->nparams, d1, d2, counters));
    Py_DECREF(p1);
    Py_XDECREF(p2);
    if (st != GA_OK)
        return ga_py_raise(NULL, st);
    Py_RETURN_NONE;
}

/* set_trainable(flags): one truthy value per layer of the table */
static PyObject *net_set_trainable(GaNet *self, PyObject *arg)
{
    if (ready(self) < 0)
        return NULL;
    PyObject *seq = PySequence_Fast(arg, "flags must be a sequence");
    if (!seq)
        return NULL;
    const int nl = self->net->nlayers;
    if (PySequence_Fast_GET_SIZE(seq) != nl) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "expected %d trainable flags (one per layer)", nl);
        return NULL;
    }
    int *flags = PyMem_Calloc((size_t)nl, sizeof *flags);
    if (!flags) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (int i = 0; i < nl; i++)
        if ((flags[i] = PyObject_IsTrue(PySequence_Fast_GET_ITEM(seq, i))) < 0) {
            PyMem_Free(flags);
            Py_DECREF(seq);
            return NULL;
        }
    Py_DECREF(seq);
    ga_status st;
    NET_RUN(self, st, ga_net_set_trainable(self->net, flags));
    PyMem_Free(flags);
    if (st != GA_OK)
        return ga_py_raise(NULL, st);
    Py_RETURN_NONE;
}

/* trainable flags as the net holds them, one per layer */
static PyObject *net_get_trainable(GaNet *self, PyObject *unused)
{
    if (ready(self) < 0)
        return NULL;
    PyObject *list = PyList_New(self->net->nlayers);
    if (!list)
        return NULL;
    for (int i = 0; i < self->net->nlayers; i++)
        PyList_SET_ITEM(list, i, PyBool_FromLong(self->net->layers[i].trainable));
    return list;
}

/* [(offset, count), ...] the trainable runs of the parameter block */
static PyObject *net_trainable_ranges(GaNet *self, PyObject *unused)
{
    if (ready(self) < 0)
        return NULL;
    PyObject *list = PyList_New(self->net->nranges);
    if (!list)
        return NULL;
    for (int r = 0; r < self->net->nranges; r++) {
        PyObject *item = Py_BuildValue("(LL)", (long long)self->net->ranges[2 * r], (long long)self->net->ranges[2 * r + 1]);
        if (!item) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, r, item);
    }
    return list;
}

/* [(state_offset, state_count), ...] per layer */
static PyObject *net_state_info(GaNet *self, PyObject *unused)
{
    if (ready(self) < 0)
        return NULL;
    PyObject *list = PyList_New(self->net->nlayers);
    if (!list)
        return NULL;
    for (int i = 0; i < self->net->nlayers; i++) {
        const ga_layer *l = &self->net->layers[i];
        PyObject *item = Py_BuildValue("(LL)", (long long)l->s_off, (long long)l->ns);
        if (!item) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);
    }
    return list;
}

/* forward(x, training) -> the last layer's output (n, classes) */
static PyObject *net_forward(GaNet *self, PyObject *args)
{
    PyObject *xo;
    int training = 0;
    if (!PyArg_ParseTuple(args, "O|p:forward", &xo, &training) || ready(self) < 0)
        return NULL;
    PyArrayObject *x = batch_x(self, xo);
    if (!x)
        return NULL;
    npy_intp dims[2] = {PyArray_DIM(x, 0), (npy_intp)self->net->classes};
    PyObject *out = PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (!out) {
        Py_DECREF(x);
        return NULL;
    }
    ga_status st;
    NET_RUN(self, st, ga_net_forward(self->net, PyArray_DATA(x), dims[0], training, PyArray_DATA((PyArrayObject *)out)));
    Py_DECREF(x);
    if (st != GA_OK) {
        Py_DECREF(out);
        return ga_py_raise(NULL, st);
    }
    return out;
}

/* backward(dout) -> (dx (n, C, H, W), grads (nparams,)) after forward() of the same batch size */
static PyObject *net_backward(GaNet *self, PyObject *arg)
{
    if (ready(self) < 0)
        return NULL;
    if (!PyArray_Check(arg) || PyArray_TYPE((PyArrayObject *)arg) != NPY_FLOAT32) {
        PyErr_SetString(PyExc_TypeError, "dout must be a float32 numpy array");
        return NULL;
    }
    PyArrayObject *d = (PyArrayObject *)PyArray_FROM_OTF(arg, NPY_FLOAT32, NPY_ARRAY_IN_ARRAY);
    if (!d)
        return NULL;
    const int64_t *in = self->net->in;
    if (PyArray_NDIM(d) != 2 || PyArray_DIM(d, 1) != self->net->classes || PyArray_DIM(d, 0) != self->net->last_n ||
        PyArray_DIM(d, 0) == 0) {
        Py_DECREF(d);
        PyErr_Format(PyExc_ValueError, "dout must have shape (%lld, %lld): the batch of the last forward()",
                     (long long)self->net->last_n, (long long)self->net->classes);
        return NULL;
    }
    npy_intp xd[4] = {PyArray_DIM(d, 0), (npy_intp)in[0], (npy_intp)in[1], (npy_intp)in[2]};
    npy_intp np_ = (npy_intp)self->net->nparams;
    PyObject *dx = PyArray_SimpleNew(4, xd, NPY_FLOAT32), *grads = PyArray_SimpleNew(1, &np_, NPY_FLOAT32);
    if (!dx || !grads) {
        Py_DECREF(d);
        Py_XDECREF(dx);
        Py_XDECREF(grads);
        return NULL;
    }
    ga_status st;
    NET_RUN(self, st, ga_net_backward(self->net, xd[0], PyArray_DATA(d), PyArray_DATA((PyArrayObject *)dx),
                                      PyArray_DATA((PyArrayObject *)grads)));
    Py_DECREF(d);
    if (st != GA_OK) {
        Py_DECREF(dx);
        Py_DECREF(grads);
        return ga_py_raise(NULL, st);
    }
    return Py_BuildValue("(NN)", dx, grads);
}

/* [(out_shape, w_offset, w_count, b_offset, b_count), ...] */
static PyObject *net_layer_info(GaNet *self, PyObject *unused)
{
    if (ready(self) < 0)
        return NULL;
    PyObject *list = PyList_New(self->net->nlayers);
    if (!list)
        return NULL;
    for (int i = 0; i < self->net->nlayers; i++) {
        const ga_layer *l = &self->net->layers[i];
        PyObject *item = Py_BuildValue("((LLL)LLLL)", (long long)l->out[0], (long long)l->out[1], (long long)l->out[2],
                                       (long long)l->w_off, (long long)l->nw, (long long)l->b_off, (long long)l->nb);
        if (!item) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);
    }
    return list;
}

/* Per layer: the convolution algorithm its last forward ran ('im2col',
 * 'winograd4', ...; with ' (auto)' when it was measured; 'auto (not run yet)'
 * before that), None for other kinds. */
static PyObject *net_conv_kernels(GaNet *self, PyObject *unused)
{
    if (ready(self) < 0)
        return NULL;
    PyObject *list = PyList_New(self->net->nlayers);
    for (int i = 0; list && i < self->net->nlayers; i++) {
        const ga_layer *l = &self->net->layers[i];
        PyObject *item;
        if (l->spec.kind != GA_LAYER_CONV2D)
            item = Py_NewRef(Py_None);
        else if (l->variant == GA_CONV_AUTO)
            item = PyUnicode_FromString("auto (not run yet)");
        else
            item = PyUnicode_FromFormat("%s%s", conv_kernel_name(l->variant),
                                        l->spec.kernel == GA_CONV_AUTO ? " (auto)" : "");
        if (!item)
            Py_CLEAR(list);
        else
            PyList_SET_ITEM(list, i, item);
    }
    return list;
}

/* [[(name, block 'p' or 's', offset, shape), ...] per layer]: where each array of
 * get_weights() lives, as the layer table in C describes it. */
static PyObject *net_slots(GaNet *self, PyObject *unused)
{
    if (ready(self) < 0)
        return NULL;
    PyObject *list = PyList_New(self->net->nlayers);
    for (int i = 0; list && i < self->net->nlayers; i++) {
        const ga_layer *l = &self->net->layers[i];
        PyObject *row = PyList_New(l->nslots);
        for (int j = 0; row && j < l->nslots; j++) {
            const ga_slot *sl = &l->slots[j];
            PyObject *shape = PyTuple_New(sl->ndim);
            for (int d = 0; shape && d < sl->ndim; d++) {
                PyObject *v = PyLong_FromLongLong(sl->shape[d]);
                if (!v)
                    Py_CLEAR(shape);
                else
                    PyTuple_SET_ITEM(shape, d, v);
            }
            PyObject *item = shape ? Py_BuildValue("(ssLN)", sl->name, sl->block == GA_BLOCK_STATE ? "s" : "p",
                                                   (long long)sl->off, shape)
                                   : NULL;
            if (!item)
                Py_CLEAR(row);
            else
                PyList_SET_ITEM(row, j, item);
        }
        if (!row)
            Py_CLEAR(list);
        else
            PyList_SET_ITEM(list, i, row);
    }
    return list;
}

static PyObject *net_get_nparams(GaNet *self, void *c) { return ready(self) < 0 ? NULL : PyLong_FromLongLong(self->net->nparams); }
static PyObject *net_get_classes(GaNet *self, void *c) { return ready(self) < 0 ? NULL : PyLong_FromLongLong(self->net->classes); }
static PyObject *net_get_steps(GaNet *self, void *c) { return ready(self) < 0 ? NULL : PyLong_FromLongLong(self->net->t); }
static PyObject *net_get_nstate(GaNet *self, void *c) { return ready(self) < 0 ? NULL : PyLong_FromLongLong(self->net->nstate); }
static PyObject *net_get_ntrainable(GaNet *self, void *c) { return ready(self) < 0 ? NULL : PyLong_FromLongLong(self->net->ntrainable); }
static PyObject *net_get_device(GaNet *self, void *c) { return ready(self) < 0 ? NULL : PyUnicode_FromString(self->dev.name); }

static PyMethodDef net_methods[] = {
    {"train_step", (PyCFunction)net_train_step, METH_VARARGS, "train_step(x, labels) -> (mean loss, correct)"},
    {"set_data", (PyCFunction)net_set_data, METH_VARARGS,
     "set_data(slot, x, labels or None): bind a data set on the device (slot 0 train, 1 eval)"},
    {"clear_data", (PyCFunction)net_clear_data, METH_O, "clear_data(slot)"},
    {"infer", (PyCFunction)net_infer, METH_VARARGS,
     "infer(x, labels or None, batch) -> (loss sum, correct) or logits: the whole of x in one call"},
    {"set_order", (PyCFunction)net_set_order, METH_O, "set_order(order or None): the next epoch's order of the train slot"},
    {"train_steps", (PyCFunction)net_train_steps, METH_VARARGS,
     "train_steps(steps, batch) -> (steps done, samples, loss sum, correct): many steps, one call"},
    {"evaluate_data", (PyCFunction)net_evaluate_data, METH_VARARGS, "evaluate_data(slot, batch) -> (loss sum, correct)"},
    {"predict_data", (PyCFunction)net_predict_data, METH_VARARGS, "predict_data(slot, batch) -> logits"},
    {"graph_count", (PyCFunction)net_graph_count, METH_NOARGS, "recorded graphs held now (0 on the CPU)"},
    {"set_reducer", (PyCFunction)net_set_reducer, METH_O,
     "set_reducer(capsule or None): the gradient reducer of data-parallel training (gpuaccel._mpi)"},
    {"set_rng_salt", (PyCFunction)net_set_rng_salt, METH_O,
     "set_rng_salt(k): later dropout masks and augmentation draws from streams mixed with k (0: the model's own)"},
    {"set_grad_batch", (PyCFunction)net_set_grad_batch, METH_O,
     "set_grad_batch(n): divide each later step's loss by n, the global batch (0: by its own batch)"},
    {"set_precision", (PyCFunction)net_set_precision, METH_O, "set_precision(0 | PRECISION_TF32): the GEMMs' arithmetic"},
    {"predict", (PyCFunction)net_predict, METH_O, "predict(x) -> logits"},
    {"evaluate", (PyCFunction)net_evaluate, METH_VARARGS, "evaluate(x, labels) -> (loss sum, correct)"},
    {"set_optimizer", (PyCFunction)net_set_optimizer, METH_VARARGS, "set_optimizer(kind, lr, momentum, beta1, beta2, eps, weight_decay, nesterov)"},
    {"get_params", (PyCFunction)net_get_params, METH_NOARGS, "the flat parameter block (host copy)"},
    {"get_opt_state", (PyCFunction)net_get_opt_state, METH_NOARGS,
     "get_opt_state() -> (kind, m1, m2 or None, steps, draws): the optimizer's moments and step counters"},
    {"set_opt_state", (PyCFunction)net_set_opt_state, METH_VARARGS,
     "set_opt_state(kind, m1, m2 or None, steps, draws): restore what get_opt_state returned"},
    {"set_params", (PyCFunction)net_set_params, METH_O, "overwrite the flat parameter block"},
    {"layer_info", (PyCFunction)net_layer_info, METH_NOARGS, "per layer: (out_shape, w_off, nw, b_off, nb)"},
    {"get_state", (PyCFunction)net_get_state, METH_NOARGS, "the non-trainable state block (batch-norm moving mean, variance)"},
    {"set_state", (PyCFunction)net_set_state, METH_O, "overwrite the state block"},
    {"slots", (PyCFunction)net_slots, METH_NOARGS, "per layer: [(name, block 'p'/'s', offset, shape)] of its weights and state"},
    {"set_learning_rate", (PyCFunction)net_set_learning_rate, METH_O,
     "set_learning_rate(lr): the optimizer's learning rate, its moments kept"},
    {"conv_kernels", (PyCFunction)net_conv_kernels, METH_NOARGS,
     "per layer: the convolution algorithm of its last forward, None if not a convolution"},
    {"state_info", (PyCFunction)net_state_info, METH_NOARGS, "per layer: (state_off, ns)"},
    {"set_trainable", (PyCFunction)net_set_trainable, METH_O, "set_trainable(flags): one per layer"},
    {"get_trainable", (PyCFunction)net_get_trainable, METH_NOARGS, "the per-layer trainable flags"},
    {"trainable_ranges", (PyCFunction)net_trainable_ranges, METH_NOARGS, "[(offset, count)] runs the optimizer updates"},
    {"forward", (PyCFunction)net_forward, METH_VARARGS, "forward(x, training=False) -> last layer's output (for gradient checks)"},
    {"backward", (PyCFunction)net_backward, METH_O, "backward(dout) -> (dx, grads) after forward() (for gradient checks)"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef net_getset[] = {
    {"nparams", (getter)net_get_nparams, NULL, NULL, NULL},
    {"classes", (getter)net_get_classes, NULL, NULL, NULL},
    {"steps", (getter)net_get_steps, NULL, "optimizer steps taken", NULL},
    {"nstate", (getter)net_get_nstate, NULL, "non-trainable state values (batch-norm moving statistics)", NULL},
    {"ntrainable", (getter)net_get_ntrainable, NULL, "parameters the optimizer updates", NULL},
    {"device", (getter)net_get_device, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject GaNet_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gpuaccel._C.Net",
    .tp_basicsize = sizeof(GaNet),
    .tp_dealloc = (destructor)net_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Net(layers, input_shape, device='cpu', seed=0): a sequential network in C.",
    .tp_methods = net_methods,
    .tp_getset = net_getset,
    .tp_init = (initproc)net_init,
    .tp_new = PyType_GenericNew,
};

int ga_net_type_init(PyObject *module)
{
    if (PyType_Ready(&GaNet_Type) < 0)
        return -1;
    Py_INCREF(&GaNet_Type);
    if (PyModule_AddObject(module, "Net", (PyObject *)&GaNet_Type) < 0) {
        Py_DECREF(&GaNet_Type);
        return -1;
    }
    for (int alphas = 0; alphas < 2; alphas++) {
        PyObject *t = activation_table(alphas);
        if (!t || PyModule_AddObject(module, alphas ? "ACTIVATION_ALPHAS" : "ACTIVATIONS", t) < 0) {
            Py_XDECREF(t);
            return -1;
        }
    }
    /* {name: variant} of the convolution algorithms (GA_CONV_AUTO = -1 for "auto") */
    PyObject *kernels = PyDict_New();
    for (int j = 0; kernels && j < GA_CONV_KERNEL_COUNT; j++) {
        PyObject *v = PyLong_FromLong(conv_kernels[j].variant);
        if (!v || PyDict_SetItemString(kernels, conv_kernels[j].name, v) < 0)
            Py_CLEAR(kernels);
        Py_XDECREF(v);
    }
    if (!kernels || PyModule_AddObject(module, "CONV_KERNELS", kernels) < 0) {
        Py_XDECREF(kernels);
        return -1;
    }
    return 0;
}
