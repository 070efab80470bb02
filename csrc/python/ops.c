/* ga.ops: single kernels callable from Python, on any registered device.
 *
 * Inputs are float32 ndarrays (any strides: copied to a contiguous block when
 * needed) or gpuaccel.Tensor objects. Outputs are ndarrays, or Tensors when
 * any input was a Tensor. The Python wrappers in gpuaccel/ops.py resolve the
 * device name and keyword defaults; everything is checked again here. */
#include "python/common.h"

#include <string.h>

#include "core/rng.h"

typedef struct {
    PyObject *keep;      /* owned: the contiguous ndarray or the Tensor */
    GaTensor *dev_copy;  /* owned: device copy of an ndarray for a GPU op */
    float *ptr;          /* the data, in the op's device memory */
    int ndim;
    int64_t shape[GA_MAX_DIMS];
    int64_t size;
} op_in;

/* One op call: its device, inputs, outputs and scratch memory, all released by
 * call_end, so that every op reads: parse, take inputs, check shapes, make
 * outputs, run, end. Each call_* returns NULL (or -1) with a Python error set;
 * the op then returns call_end(k, 0). */
enum { CALL_MAX_IN = 6, CALL_MAX_OUT = 5, CALL_MAX_SCRATCH = 4 };
typedef struct {
    ga_device dev;
    int tensor_out; /* an input was a Tensor: answer with Tensors */
    int nin, nout, nscratch;
    op_in in[CALL_MAX_IN];
    PyObject *out[CALL_MAX_OUT];
    void *scratch[CALL_MAX_SCRATCH];
} op_call;

static int call_begin(op_call *k, const char *device)
{
    memset(k, 0, sizeof *k);
    return ga_py_device(&k->dev, device);
}

static void in_free(op_in *a)
{
    Py_CLEAR(a->keep);
    Py_CLEAR(a->dev_copy);
}

/* Take `obj` as an input of `ndim` dimensions (-1: any) for the op's device. */
static const op_in *call_in(op_call *k, PyObject *obj, const char *what, int ndim)
{
    op_in *a = &k->in[k->nin];
    memset(a, 0, sizeof *a);
    if (GaTensor_Check(obj)) {
        GaTensor *t = (GaTensor *)obj;
        if (strcmp(t->dev.name, k->dev.name) != 0) {
            PyErr_Format(PyExc_ValueError, "%s is on %s but the op runs on %s", what, t->dev.name, k->dev.name);
            return NULL;
        }
        if (ndim >= 0 && t->ndim != ndim) {
            PyErr_Format(PyExc_ValueError, "%s must have %d dimensions, got %d", what, ndim, t->ndim);
            return NULL;
        }
        Py_INCREF(obj);
        a->keep = obj;
        a->ptr = t->data;
        a->ndim = t->ndim;
        memcpy(a->shape, t->shape, sizeof a->shape);
        a->size = t->size;
        k->tensor_out = 1;
        k->nin++;
        return a;
    }
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a float32 numpy array or a gpuaccel.Tensor, got %s", what,
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    PyArrayObject *arr = (PyArrayObject *)obj;
    if (PyArray_TYPE(arr) != NPY_FLOAT32) {
        PyErr_Format(PyExc_TypeError, "%s must be float32, got %s (convert with .astype(np.float32))", what,
                     PyArray_DESCR(arr)->typeobj->tp_name);
        return NULL;
    }
    if (ndim >= 0 && PyArray_NDIM(arr) != ndim) {
        PyErr_Format(PyExc_ValueError, "%s must have %d dimensions, got %d", what, ndim, PyArray_NDIM(arr));
        return NULL;
    }
    if (PyArray_NDIM(arr) > GA_MAX_DIMS) {
        PyErr_Format(PyExc_ValueError, "%s has more than %d dimensions", what, GA_MAX_DIMS);
        return NULL;
    }
    a->keep = PyArray_FROM_OTF(obj, NPY_FLOAT32, NPY_ARRAY_IN_ARRAY); /* contiguous, aligned */
    if (!a->keep)
        return NULL;
    k->nin++; /* from here on call_end releases it */
    arr = (PyArrayObject *)a->keep;
    a->ndim = PyArray_NDIM(arr);
    a->size = 1;
    for (int i = 0; i < a->ndim; i++) {
        a->shape[i] = PyArray_DIM(arr, i);
        a->size *= a->shape[i];
    }
    if (k->dev.be->host_memory) {
        a->ptr = PyArray_DATA(arr);
        return a;
    }
    if (!(a->dev_copy = ga_tensor_new(&k->dev, a->ndim, a->shape)))
        return NULL;
    ga_status st;
    Py_BEGIN_ALLOW_THREADS
    st = k->dev.be->to_device(a->dev_copy->data, PyArray_DATA(arr), (size_t)a->size * sizeof(float));
    Py_END_ALLOW_THREADS
    if (st != GA_OK) {
        ga_py_raise(k->dev.be, st);
        return NULL;
    }
    a->ptr = a->dev_copy->data;
    return a;
}

/* A new output (uninitialised device memory) at *ptr (NULL when empty): an
 * ndarray on the CPU unless Tensors came in, else a Tensor (copied to an
 * ndarray at call_end). */
static int call_out(op_call *k, float **ptr, int ndim, const int64_t *shape)
{
    PyObject *o;
    if (k->dev.be->host_memory && !k->tensor_out) {
        npy_intp dims[GA_MAX_DIMS];
        for (int i = 0; i < ndim; i++)
            dims[i] = (npy_intp)shape[i];
        if (!(o = PyArray_SimpleNew(ndim, dims, NPY_FLOAT32)))
            return -1;
        *ptr = PyArray_DATA((PyArrayObject *)o);
    } else {
        GaTensor *t = ga_tensor_new(&k->dev, ndim, shape);
        if (!t)
            return -1;
        o = (PyObject *)t;
        *ptr = t->data;
    }
    k->out[k->nout++] = o;
    return 0;
}

/* Device scratch memory for this call at *p (NULL for 0 bytes). */
static int call_scratch(op_call *k, void *p, size_t bytes)
{
    void **slot = &k->scratch[k->nscratch];
    ga_status st = k->dev.be->alloc(slot, bytes);
    if (st != GA_OK) {
        ga_py_raise(k->dev.be, st);
        return -1;
    }
    k->nscratch++;
    memcpy(p, slot, sizeof *slot); /* p: the address of any pointer variable */
    return 0;
}

/* Release the inputs and scratch; with ok, the outputs (one, or a tuple of all),
 * Tensors turned into ndarrays unless Tensors came in; else NULL. */
static PyObject *call_end(op_call *k, int ok)
{
    for (int i = 0; i < k->nin; i++)
        in_free(&k->in[i]);
    for (int i = 0; i < k->nscratch; i++)
        k->dev.be->release(k->scratch[i]);
    for (int i = 0; ok && i < k->nout; i++)
        if (!k->tensor_out && GaTensor_Check(k->out[i])) {
            PyObject *arr = ga_tensor_to_numpy((GaTensor *)k->out[i]);
            Py_SETREF(k->out[i], arr);
            ok = arr != NULL;
        }
    PyObject *r = NULL;
    if (ok)
        r = k->nout == 1 ? k->out[0] : PyTuple_New(k->nout);
    if (r && k->nout != 1)
        for (int i = 0; i < k->nout; i++)
            PyTuple_SET_ITEM(r, i, k->out[i]); /* steals */
    if (!r)
        for (int i = 0; i < k->nout; i++)
            Py_XDECREF(k->out[i]);
    k->nin = k->nout = k->nscratch = 0;
    return r;
}

/* Run backend work with the GIL released; on failure raise and end the call. */
#define RUN(k, expr)                                              \
    do {                                                          \
        ga_status run_st_;                                        \
        Py_BEGIN_ALLOW_THREADS                                    \
        run_st_ = (k)->dev.be->set_device((k)->dev.index);        \
        if (run_st_ == GA_OK)                                     \
            run_st_ = (expr);                                     \
        Py_END_ALLOW_THREADS                                      \
        if (run_st_ != GA_OK) {                                   \
            ga_py_raise((k)->dev.be, run_st_);                    \
            return call_end((k), 0);                              \
        }                                                         \
    } while (0)

/* A new output at *p holding a copy of src (zeros when src is NULL), shaped like `like`. */
static int call_out_copy(op_call *k, float **p, const op_in *like, const op_in *src)
{
    if (call_out(k, p, like->ndim, like->shape) < 0)
        return -1;
    ga_status st;
    const size_t bytes = (size_t)like->size * sizeof(float);
    Py_BEGIN_ALLOW_THREADS
    st = k->dev.be->set_device(k->dev.index);
    if (st == GA_OK)
        st = src ? k->dev.be->copy(*p, src->ptr, bytes) : k->dev.be->zero(*p, bytes);
    Py_END_ALLOW_THREADS
    if (st != GA_OK) {
        ga_py_raise(k->dev.be, st);
        return -1;
    }
    return 0;
}

#define BE (k.dev.be)
#define FAIL return call_end(&k, 0)

static int same_shape(const op_in *a, const op_in *b, const char *an, const char *bn)
{
    if (a->ndim == b->ndim && memcmp(a->shape, b->shape, (size_t)a->ndim * sizeof(int64_t)) == 0)
        return 0;
    PyErr_Format(PyExc_ValueError, "%s and %s must have the same shape", an, bn);
    return -1;
}

/* A GEMM's variant: one of FAST, REF, BLAS, possibly with a precision flag
 * (GA_PRECISION_TF32); whether the device runs it is the device's answer. */
static int check_variant(int variant)
{
    const int base = ga_variant_base(variant);
    if ((variant & ~(GA_VARIANT_MASK | GA_PRECISION_FLAGS)) == 0 &&
        (base == GA_VARIANT_FAST || base == GA_VARIANT_REF || base == GA_VARIANT_BLAS))
        return 0;
    PyErr_Format(PyExc_ValueError, "unknown kernel variant %d", variant);
    return -1;
}

/* A convolution's algorithm: the variants conv2d knows, or GA_CONV_AUTO. */
static int check_conv_variant(int variant)
{
    if (variant == GA_CONV_AUTO || variant == GA_VARIANT_FAST || variant == GA_VARIANT_REF ||
        variant == GA_VARIANT_WINOGRAD2 || variant == GA_VARIANT_WINOGRAD4 || variant == GA_VARIANT_IMPLICIT)
        return 0;
    PyErr_Format(PyExc_ValueError, "unknown convolution kernel variant %d", variant);
    return -1;
}

/* kernel='auto': the algorithm the device measures fastest for shape s
 * (conv2d_choose times the candidates once per shape, GIL released). */
#define CHOOSE_CONV(k, variant, s)                                  \
    do {                                                            \
        if ((variant) == GA_CONV_AUTO) {                            \
            (variant) = GA_VARIANT_FAST;                            \
            if ((k)->dev.be->conv2d_choose)                         \
                RUN((k), (k)->dev.be->conv2d_choose(&(variant), &(s))); \
        }                                                           \
    } while (0)

static int is_winograd(int variant) { return variant == GA_VARIANT_WINOGRAD2 || variant == GA_VARIANT_WINOGRAD4; }
/* The algorithms that need no im2col matrix (and no GEMM workspace) from the caller. */
static int needs_no_col(int variant) { return variant == GA_VARIANT_REF || is_winograd(variant) || variant == GA_VARIANT_IMPLICIT; }

/* ---------------------------------------------------------------- matmul */

static PyObject *op_matmul(PyObject *self, PyObject *args)
{
    PyObject *ao, *bo, *co;
    int ta, tb, variant;
    float alpha, beta;
    const char *device;
    op_call k;
    if (!PyArg_ParseTuple(args, "OOppffOsi:matmul", &ao, &bo, &ta, &tb, &alpha, &beta, &co, &device, &variant))
        return NULL;
    if (check_variant(variant) < 0 || call_begin(&k, device) < 0)
        return NULL;
    const op_in *a, *b, *cin = NULL;
    if (!(a = call_in(&k, ao, "a", 2)) || !(b = call_in(&k, bo, "b", 2)))
        FAIL;
    int64_t m = ta ? a->shape[1] : a->shape[0], kk = ta ? a->shape[0] : a->shape[1];
    int64_t kb = tb ? b->shape[1] : b->shape[0], n = tb ? b->shape[0] : b->shape[1];
    if (kk != kb) {
        PyErr_Format(PyExc_ValueError, "matmul: inner sizes differ (%lld vs %lld)", (long long)kk, (long long)kb);
        FAIL;
    }
    if (co != Py_None) {
        if (!(cin = call_in(&k, co, "c", 2)))
            FAIL;
        if (cin->shape[0] != m || cin->shape[1] != n) {
            PyErr_Format(PyExc_ValueError, "matmul: c must have shape (%lld, %lld)", (long long)m, (long long)n);
            FAIL;
        }
    } else {
        beta = 0.0f;
    }
    int64_t shape[2] = {m, n};
    float *cp;
    if ((cin ? call_out_copy(&k, &cp, cin, cin) : call_out(&k, &cp, 2, shape)) < 0)
        FAIL;
    RUN(&k, BE->gemm(cp, a->ptr, b->ptr, ta, tb, m, n, kk, a->shape[1], b->shape[1], n, alpha, beta, variant));
    return call_end(&k, 1);
}

/* ---------------------------------------------------------------- conv2d */

/* Shape of a convolution from x (N,C,H,W) and w (K,C,R,S); -1 with ValueError. */
static int conv_geometry(ga_conv_shape *s, const op_in *x, const op_in *w, long stride, long pad)
{
    if (stride < 1 || pad < 0 || stride > INT32_MAX || pad > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "conv2d: need 1 <= stride < 2^31 and 0 <= padding < 2^31");
        return -1;
    }
    *s = (ga_conv_shape){.n = x->shape[0], .c = x->shape[1], .h = x->shape[2], .w = x->shape[3],
                         .k = w->shape[0], .r = w->shape[2], .s = w->shape[3], .stride = stride, .pad = pad};
    if (s->n == 0) {
        PyErr_SetString(PyExc_ValueError, "conv2d: empty batch");
        return -1;
    }
    if (w->shape[1] != s->c) {
        PyErr_Format(PyExc_ValueError, "conv2d: x has %lld channels but w expects %lld", (long long)s->c,
                     (long long)w->shape[1]);
        return -1;
    }
    if (s->c <= 0 || s->h <= 0 || s->w <= 0 || s->k <= 0 || s->r <= 0 || s->s <= 0) {
        PyErr_SetString(PyExc_ValueError, "conv2d: zero-sized channels, image or kernel");
        return -1;
    }
    if (s->r > s->h + 2 * pad || s->s > s->w + 2 * pad) {
        PyErr_Format(PyExc_ValueError, "conv2d: kernel %lldx%lld is larger than the padded input %lldx%lld",
                     (long long)s->r, (long long)s->s, (long long)(s->h + 2 * pad), (long long)(s->w + 2 * pad));
        return -1;
    }
    s->p = (s->h + 2 * pad - s->r) / stride + 1;
    s->q = (s->w + 2 * pad - s->s) / stride + 1;
    return 0;
}

static PyObject *op_conv2d(PyObject *self, PyObject *args)
{
    PyObject *xo, *wo, *bo;
    long stride, pad;
    int variant;
    ga_act act;
    const char *device;
    op_call k;
    if (!PyArg_ParseTuple(args, "OOOllifsi:conv2d", &xo, &wo, &bo, &stride, &pad, &act.kind, &act.alpha, &device,
                          &variant))
        return NULL;
    if (check_conv_variant(variant) < 0 || call_begin(&k, device) < 0)
        return NULL;
    const op_in *x, *w, *b = NULL;
    if (!(x = call_in(&k, xo, "x", 4)) || !(w = call_in(&k, wo, "w", 4)) ||
        (bo != Py_None && !(b = call_in(&k, bo, "b", 1))))
        FAIL;
    ga_conv_shape s;
    if (conv_geometry(&s, x, w, stride, pad) < 0)
        FAIL;
    if (b && b->shape[0] != s.k) {
        PyErr_Format(PyExc_ValueError, "conv2d: b must have %lld entries", (long long)s.k);
        FAIL;
    }
    int64_t shape[4] = {s.n, s.k, s.p, s.q};
    float *y, *col = NULL, *ws = NULL;
    if (call_out(&k, &y, 4, shape) < 0)
        FAIL;
    CHOOSE_CONV(&k, variant, s);
    if (!needs_no_col(variant) && (call_scratch(&k, &col, (size_t)ga_conv_col_floats(&s) * sizeof(float)) < 0 ||
                                      call_scratch(&k, &ws, (size_t)ga_conv_fwd_ws_floats(&s) * sizeof(float)) < 0))
        FAIL;
    RUN(&k, BE->conv2d_forward(y, col, ws, x->ptr, w->ptr, b ? b->ptr : NULL, act, &s, variant));
    return call_end(&k, 1);
}

static PyObject *op_conv2d_backward(PyObject *self, PyObject *args)
{
    PyObject *xo, *wo, *dyo;
    long stride, pad;
    int variant;
    const char *device;
    op_call k;
    if (!PyArg_ParseTuple(args, "OOOllsi:conv2d_backward", &xo, &wo, &dyo, &stride, &pad, &device, &variant))
        return NULL;
    if (check_conv_variant(variant) < 0 || call_begin(&k, device) < 0)
        return NULL;
    const op_in *x, *w, *dy;
    if (!(x = call_in(&k, xo, "x", 4)) || !(w = call_in(&k, wo, "w", 4)) || !(dy = call_in(&k, dyo, "dy", 4)))
        FAIL;
    ga_conv_shape s;
    if (conv_geometry(&s, x, w, stride, pad) < 0)
        FAIL;
    if (dy->shape[0] != s.n || dy->shape[1] != s.k || dy->shape[2] != s.p || dy->shape[3] != s.q) {
        PyErr_Format(PyExc_ValueError, "conv2d_backward: dy must have shape (%lld, %lld, %lld, %lld)",
                     (long long)s.n, (long long)s.k, (long long)s.p, (long long)s.q);
        FAIL;
    }
    float *dx, *dw, *db, *col = NULL, *ws = NULL;
    if (call_out(&k, &dx, 4, x->shape) < 0 || call_out(&k, &dw, 4, w->shape) < 0 || call_out(&k, &db, 1, &s.k) < 0)
        FAIL;
    CHOOSE_CONV(&k, variant, s);
    if (!needs_no_col(variant)) {
        if (call_scratch(&k, &col, (size_t)ga_conv_col_floats(&s) * sizeof(float)) < 0 ||
            call_scratch(&k, &ws, (size_t)ga_conv_bwd_ws_floats(&s) * sizeof(float)) < 0)
            FAIL;
        RUN(&k, BE->im2col(col, x->ptr, &s));
    }
    RUN(&k, BE->conv2d_backward(dx, dw, db, ws, x->ptr, col, w->ptr, dy->ptr, &s, variant));
    return call_end(&k, 1);
}

/* conv2d (+ b, act) then max pool, as the one fused backend call a network
 * makes (conv2d_pool_forward): -> (y, arg), arg's int32 indices in a float32
 * array's bytes (the Python wrapper views them as int32). With dy given ->
 * (dx, dw, db) through conv2d_pool_backward, the forward run again first for
 * y and arg (as max_pool2d_backward does). */
static PyObject *conv_pool_op(PyObject *args, int backward)
{
    const char *op = backward ? "conv2d_max_pool2d_backward" : "conv2d_max_pool2d";
    PyObject *xo, *wo, *bo, *dyo = NULL;
    long stride, pad, size, pstride;
    int variant;
    ga_act act;
    const char *device;
    op_call k;
    int ok = backward ? PyArg_ParseTuple(args, "OOOOllifllsi:conv2d_max_pool2d_backward", &xo, &wo, &bo, &dyo,
                                         &stride, &pad, &act.kind, &act.alpha, &size, &pstride, &device, &variant)
                      : PyArg_ParseTuple(args, "OOOllifllsi:conv2d_max_pool2d", &xo, &wo, &bo, &stride, &pad,
                                         &act.kind, &act.alpha, &size, &pstride, &device, &variant);
    if (!ok || check_conv_variant(variant) < 0 || call_begin(&k, device) < 0)
        return NULL;
    if (variant == GA_VARIANT_REF) {
        PyErr_Format(PyExc_ValueError, "%s: the fused pair has no reference kernel; run conv2d and max_pool2d", op);
        return NULL;
    }
    if (!k.dev.be->conv2d_pool_forward || !k.dev.be->conv2d_pool_backward) {
        PyErr_Format(PyExc_ValueError, "%s: device %s has no fused conv + max pool", op, k.dev.name);
        return NULL;
    }
    const op_in *x, *w, *b = NULL, *dy = NULL;
    if (!(x = call_in(&k, xo, "x", 4)) || !(w = call_in(&k, wo, "w", 4)) ||
        (bo != Py_None && !(b = call_in(&k, bo, "b", 1))))
        FAIL;
    ga_conv_shape cs;
    if (conv_geometry(&cs, x, w, stride, pad) < 0)
        FAIL;
    if (b && b->shape[0] != cs.k) {
        PyErr_Format(PyExc_ValueError, "%s: b must have %lld entries", op, (long long)cs.k);
        FAIL;
    }
    if (size < 1 || pstride < 1 || size > INT32_MAX || pstride > INT32_MAX || size > cs.p || size > cs.q) {
        PyErr_Format(PyExc_ValueError, "%s: pool size %ld (stride %ld) does not fit the conv output %lldx%lld", op,
                     size, pstride, (long long)cs.p, (long long)cs.q);
        FAIL;
    }
    ga_pool_shape ps = {.n = cs.n, .c = cs.k, .h = cs.p, .w = cs.q, .size = size, .stride = pstride,
                        .p = (cs.p - size) / pstride + 1, .q = (cs.q - size) / pstride + 1};
    int64_t yshape[4] = {cs.n, cs.k, ps.p, ps.q};
    const size_t ny = (size_t)(cs.n * cs.k * ps.p * ps.q);
    CHOOSE_CONV(&k, variant, cs);
    float *y, *argf, *col = NULL, *ws = NULL;
    if ((!needs_no_col(variant) && call_scratch(&k, &col, (size_t)ga_conv_col_floats(&cs) * sizeof(float)) < 0) ||
        (!is_winograd(variant) && call_scratch(&k, &ws, (size_t)ga_conv_bwd_ws_floats(&cs) * sizeof(float)) < 0))
        FAIL;
    if (!backward) {
        if (call_out(&k, &y, 4, yshape) < 0 || call_out(&k, &argf, 4, yshape) < 0)
            FAIL;
        RUN(&k, BE->conv2d_pool_forward(y, (int32_t *)argf, col, ws, x->ptr, w->ptr, b ? b->ptr : NULL, act, &cs,
                                        &ps, variant));
        return call_end(&k, 1);
    }
    if (!(dy = call_in(&k, dyo, "dy", 4)))
        FAIL;
    if (memcmp(dy->shape, yshape, sizeof yshape) != 0) {
        PyErr_Format(PyExc_ValueError, "%s: dy must have shape (%lld, %lld, %lld, %lld)", op, (long long)cs.n,
                     (long long)cs.k, (long long)ps.p, (long long)ps.q);
        FAIL;
    }
    int32_t *arg;
    float *dx, *dw, *db;
    if (call_scratch(&k, &y, ny * sizeof(float)) < 0 || call_scratch(&k, &arg, ny * sizeof(int32_t)) < 0 ||
        call_out(&k, &dx, 4, x->shape) < 0 || call_out(&k, &dw, 4, w->shape) < 0 || call_out(&k, &db, 1, &cs.k) < 0)
        FAIL;
    RUN(&k, BE->conv2d_pool_forward(y, arg, col, ws, x->ptr, w->ptr, b ? b->ptr : NULL, act, &cs, &ps, variant));
    RUN(&k, BE->conv2d_pool_backward(dx, dw, db, ws, x->ptr, col, w->ptr, dy->ptr, y, arg, act, &cs, &ps, variant));
    return call_end(&k, 1);
}

static PyObject *op_conv2d_max_pool2d(PyObject *self, PyObject *args) { return conv_pool_op(args, 0); }
static PyObject *op_conv2d_max_pool2d_backward(PyObject *self, PyObject *args) { return conv_pool_op(args, 1); }

/* ---------------------------------------------------------------- pooling */

static int pool_geometry(ga_pool_shape *s, const op_in *x, long size, long stride, const char *op)
{
    if (size < 1 || stride < 1 || size > INT32_MAX || stride > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: size and stride must be in [1, 2^31)", op);
        return -1;
    }
    *s = (ga_pool_shape){.n = x->shape[0], .c = x->shape[1], .h = x->shape[2], .w = x->shape[3],
                         .size = size, .stride = stride};
    if (s->n == 0) {
        PyErr_Format(PyExc_ValueError, "%s: empty batch", op);
        return -1;
    }
    if (s->c <= 0 || size > s->h || size > s->w) {
        PyErr_Format(PyExc_ValueError, "%s: window %ld does not fit the input %lldx%lld", op, size,
                     (long long)s->h, (long long)s->w);
        return -1;
    }
    s->p = (s->h - size) / stride + 1;
    s->q = (s->w - size) / stride + 1;
    return 0;
}

/* max_pool2d / avg_pool2d(x, size, stride, device) -> y; with dy given -> dx
 * (the max pool runs its forward again for the argmax; the average pool needs
 * only x's shape). */
static PyObject *pool_op(PyObject *args, int backward, int avg)
{
    static const char *const names[2][2] = {{"max_pool2d", "max_pool2d_backward"},
                                            {"avg_pool2d", "avg_pool2d_backward"}};
    const char *op = names[avg][backward];
    PyObject *xo, *dyo = NULL;
    long size, stride;
    const char *device;
    op_call k;
    static const char *const formats[2][2] = {{"Olls:max_pool2d", "OOlls:max_pool2d_backward"},
                                              {"Olls:avg_pool2d", "OOlls:avg_pool2d_backward"}};
    int ok = backward ? PyArg_ParseTuple(args, formats[avg][1], &xo, &dyo, &size, &stride, &device)
                      : PyArg_ParseTuple(args, formats[avg][0], &xo, &size, &stride, &device);
    if (!ok || call_begin(&k, device) < 0)
        return NULL;
    const op_in *x, *dy = NULL;
    if (!(x = call_in(&k, xo, "x", 4)))
        FAIL;
    ga_pool_shape s;
    if (pool_geometry(&s, x, size, stride, names[avg][0]) < 0)
        FAIL;
    int64_t yshape[4] = {s.n, s.c, s.p, s.q};
    const size_t ny = (size_t)(s.n * s.c * s.p * s.q);
    float *y, *dx;
    if (!backward) {
        if (call_out(&k, &y, 4, yshape) < 0)
            FAIL;
        if (avg) {
            RUN(&k, BE->avgpool_forward(y, x->ptr, &s));
        } else {
            int32_t *arg;
            if (call_scratch(&k, &arg, ny * sizeof(int32_t)) < 0)
                FAIL;
            RUN(&k, BE->maxpool_forward(y, arg, x->ptr, &s));
        }
        return call_end(&k, 1);
    }
    if (!(dy = call_in(&k, dyo, "dy", 4)))
        FAIL;
    if (memcmp(dy->shape, yshape, sizeof yshape) != 0) {
        PyErr_Format(PyExc_ValueError, "%s: dy must have shape (%lld, %lld, %lld, %lld)", op, (long long)s.n,
                     (long long)s.c, (long long)s.p, (long long)s.q);
        FAIL;
    }
    if (call_out(&k, &dx, 4, x->shape) < 0)
        FAIL;
    if (avg) {
        RUN(&k, BE->avgpool_backward(dx, dy->ptr, &s));
    } else {
        int32_t *arg;
        if (call_scratch(&k, &arg, ny * sizeof(int32_t)) < 0 || call_scratch(&k, &y, ny * sizeof(float)) < 0)
            FAIL;
        RUN(&k, BE->maxpool_forward(y, arg, x->ptr, &s));
        RUN(&k, BE->maxpool_backward(dx, dy->ptr, arg, &s));
    }
    return call_end(&k, 1);
}

static PyObject *op_max_pool2d(PyObject *self, PyObject *args) { return pool_op(args, 0, 0); }
static PyObject *op_max_pool2d_backward(PyObject *self, PyObject *args) { return pool_op(args, 1, 0); }
static PyObject *op_avg_pool2d(PyObject *self, PyObject *args) { return pool_op(args, 0, 1); }
static PyObject *op_avg_pool2d_backward(PyObject *self, PyObject *args) { return pool_op(args, 1, 1); }

/* x (N, C, H, W) as (nc, hw) planes: -1 with ValueError when empty. */
static int planes_of(const op_in *x, const char *op, int64_t *nc, int64_t *hw)
{
    *nc = x->shape[0] * x->shape[1];
    *hw = x->shape[2] * x->shape[3];
    if (x->shape[0] == 0 || x->shape[1] == 0 || *hw == 0) {
        PyErr_Format(PyExc_ValueError, "%s: empty input", op);
        return -1;
    }
    return 0;
}

/* global_avg_pool2d / global_max_pool2d(x) -> y (N, C); with dy (N, C) given
 * -> dx (N, C, H, W) (the max runs its forward again for the argmax). */
static PyObject *global_pool_op(PyObject *args, int backward, int max)
{
    static const char *const names[2][2] = {{"global_avg_pool2d", "global_avg_pool2d_backward"},
                                            {"global_max_pool2d", "global_max_pool2d_backward"}};
    const char *op = names[max][backward];
    PyObject *xo, *dyo = NULL;
    const char *device;
    op_call k;
    static const char *const formats[2][2] = {{"Os:global_avg_pool2d", "OOs:global_avg_pool2d_backward"},
                                              {"Os:global_max_pool2d", "OOs:global_max_pool2d_backward"}};
    int ok = backward ? PyArg_ParseTuple(args, formats[max][1], &xo, &dyo, &device)
                      : PyArg_ParseTuple(args, formats[max][0], &xo, &device);
    if (!ok || call_begin(&k, device) < 0)
        return NULL;
    const op_in *x, *dy = NULL;
    int64_t nc, hw;
    if (!(x = call_in(&k, xo, "x", 4)) || planes_of(x, names[max][0], &nc, &hw) < 0)
        FAIL;
    const int64_t yshape[2] = {x->shape[0], x->shape[1]};
    float *y, *dx;
    int32_t *arg = NULL;
    if (max && call_scratch(&k, &arg, (size_t)nc * sizeof(int32_t)) < 0)
        FAIL;
    if (!backward) {
        if (call_out(&k, &y, 2, yshape) < 0)
            FAIL;
        if (max)
            RUN(&k, BE->global_maxpool_forward(y, arg, x->ptr, nc, hw));
        else
            RUN(&k, BE->global_avgpool_forward(y, x->ptr, nc, hw));
        return call_end(&k, 1);
    }
    if (!(dy = call_in(&k, dyo, "dy", 2)))
        FAIL;
    if (dy->shape[0] != yshape[0] || dy->shape[1] != yshape[1]) {
        PyErr_Format(PyExc_ValueError, "%s: dy must have shape (%lld, %lld)", op, (long long)yshape[0],
                     (long long)yshape[1]);
        FAIL;
    }
    if (call_out(&k, &dx, 4, x->shape) < 0)
        FAIL;
    if (max) {
        if (call_scratch(&k, &y, (size_t)nc * sizeof(float)) < 0)
            FAIL;
        RUN(&k, BE->global_maxpool_forward(y, arg, x->ptr, nc, hw));
        RUN(&k, BE->global_maxpool_backward(dx, dy->ptr, arg, nc, hw));
    } else {
        RUN(&k, BE->global_avgpool_backward(dx, dy->ptr, nc, hw));
    }
    return call_end(&k, 1);
}

static PyObject *op_global_avg_pool2d(PyObject *self, PyObject *args) { return global_pool_op(args, 0, 0); }
static PyObject *op_global_avg_pool2d_backward(PyObject *self, PyObject *args) { return global_pool_op(args, 1, 0); }
static PyObject *op_global_max_pool2d(PyObject *self, PyObject *args) { return global_pool_op(args, 0, 1); }
static PyObject *op_global_max_pool2d_backward(PyObject *self, PyObject *args) { return global_pool_op(args, 1, 1); }

/* ---------------------------------------------------------------- batch norm */

/* x (N, C, H, W) or (N, F) as (n, c, hw); -1 with ValueError otherwise. */
static int channels_of(const op_in *x, int64_t *n, int64_t *c, int64_t *hw)
{
    if (x->ndim != 2 && x->ndim != 4) {
        PyErr_Format(PyExc_ValueError, "batch_norm: x must be (N, C, H, W) or (N, F), got %d dimensions", x->ndim);
        return -1;
    }
    *n = x->shape[0];
    *c = x->shape[1];
    *hw = x->ndim == 4 ? x->shape[2] * x->shape[3] : 1;
    if (*n == 0 || *c == 0 || *hw == 0) {
        PyErr_SetString(PyExc_ValueError, "batch_norm: empty input");
        return -1;
    }
    return 0;
}

static int per_channel(const op_in *v, int64_t c, const char *what)
{
    if (v->ndim == 1 && v->shape[0] == c)
        return 0;
    PyErr_Format(PyExc_ValueError, "batch_norm: %s must have shape (%lld,)", what, (long long)c);
    return -1;
}

/* batch_norm(x, gamma, beta, run_mean, run_var, momentum, eps, training)
 * -> (y, save_mean, save_invstd, new run_mean, new run_var); inputs unchanged. */
static PyObject *op_batch_norm(PyObject *self, PyObject *args)
{
    PyObject *xo, *go, *bo, *mo, *vo;
    float momentum, eps;
    int training;
    const char *device;
    op_call k;
    if (!PyArg_ParseTuple(args, "OOOOOffps:batch_norm", &xo, &go, &bo, &mo, &vo, &momentum, &eps, &training,
                          &device) ||
        call_begin(&k, device) < 0)
        return NULL;
    const op_in *x, *gamma, *beta, *rm, *rv;
    int64_t n, c, hw;
    if (!(x = call_in(&k, xo, "x", -1)) || channels_of(x, &n, &c, &hw) < 0 ||
        !(gamma = call_in(&k, go, "gamma", -1)) || per_channel(gamma, c, "gamma") < 0 ||
        !(beta = call_in(&k, bo, "beta", -1)) || per_channel(beta, c, "beta") < 0 ||
        !(rm = call_in(&k, mo, "running_mean", -1)) || per_channel(rm, c, "running_mean") < 0 ||
        !(rv = call_in(&k, vo, "running_var", -1)) || per_channel(rv, c, "running_var") < 0)
        FAIL;
    if (!(momentum >= 0.0f && momentum <= 1.0f) || !(eps > 0.0f)) {
        PyErr_SetString(PyExc_ValueError, "batch_norm: need momentum in [0, 1] and eps > 0");
        FAIL;
    }
    float *y, *mean, *invstd, *new_rm, *new_rv;
    if (call_out(&k, &y, x->ndim, x->shape) < 0 || call_out(&k, &mean, 1, &c) < 0 || call_out(&k, &invstd, 1, &c) < 0 ||
        call_out_copy(&k, &new_rm, rm, rm) < 0 || call_out_copy(&k, &new_rv, rv, rv) < 0)
        FAIL;
    RUN(&k, BE->batchnorm_forward(y, mean, invstd, new_rm, new_rv, x->ptr, gamma->ptr, beta->ptr, n, c, hw, momentum,
                                  eps, training));
    return call_end(&k, 1);
}

/* batch_norm_backward(x, dy, gamma, save_mean, save_invstd, training) -> (dx, dgamma, dbeta) */
static PyObject *op_batch_norm_backward(PyObject *self, PyObject *args)
{
    PyObject *xo, *dyo, *go, *mo, *io;
    int training;
    const char *device;
    op_call k;
    if (!PyArg_ParseTuple(args, "OOOOOps:batch_norm_backward", &xo, &dyo, &go, &mo, &io, &training, &device) ||
        call_begin(&k, device) < 0)
        return NULL;
    const op_in *x, *dy, *gamma, *mean, *invstd;
    int64_t n, c, hw;
    if (!(x = call_in(&k, xo, "x", -1)) || channels_of(x, &n, &c, &hw) < 0 || !(dy = call_in(&k, dyo, "dy", -1)) ||
        same_shape(x, dy, "x", "dy") < 0 || !(gamma = call_in(&k, go, "gamma", -1)) ||
        per_channel(gamma, c, "gamma") < 0 || !(mean = call_in(&k, mo, "save_mean", -1)) ||
        per_channel(mean, c, "save_mean") < 0 || !(invstd = call_in(&k, io, "save_invstd", -1)) ||
        per_channel(invstd, c, "save_invstd") < 0)
        FAIL;
    float *dx, *dgamma, *dbeta;
    if (call_out(&k, &dx, x->ndim, x->shape) < 0 || call_out(&k, &dgamma, 1, &c) < 0 || call_out(&k, &dbeta, 1, &c) < 0)
        FAIL;
    RUN(&k, BE->batchnorm_backward(dx, dgamma, dbeta, dy->ptr, x->ptr, gamma->ptr, mean->ptr, invstd->ptr, n, c, hw,
                                   training));
    return call_end(&k, 1);
}

/* ---------------------------------------------------------------- elementwise */

static PyObject *op_activation(PyObject *self, PyObject *args)
{
    PyObject *xo;
    ga_act act;
    const char *device;
    op_call k;
    if (!PyArg_ParseTuple(args, "Oifs:activation", &xo, &act.kind, &act.alpha, &device) || call_begin(&k, device) < 0)
        return NULL;
    const op_in *x;
    float *y;
    if (!(x = call_in(&k, xo, "x", -1)) || call_out(&k, &y, x->ndim, x->shape) < 0)
        FAIL;
    RUN(&k, BE->act_forward(y, x->ptr, x->size, act));
    return call_end(&k, 1);
}

/* t: the output y, or the input z for kinds whose derivative needs it (gelu, silu) */
static PyObject *op_activation_backward(PyObject *self, PyObject *args)
{
    PyObject *to, *dyo;
    ga_act act;
    const char *device;
    op_call k;
    if (!PyArg_ParseTuple(args, "OOifs:activation_backward", &to, &dyo, &act.kind, &act.alpha, &device) ||
        call_begin(&k, device) < 0)
        return NULL;
    const op_in *t, *dy;
    float *dx;
    if (!(t = call_in(&k, to, "t", -1)) || !(dy = call_in(&k, dyo, "dy", -1)) || same_shape(t, dy, "t", "dy") < 0 ||
        call_out(&k, &dx, t->ndim, t->shape) < 0)
        FAIL;
    RUN(&k, BE->act_backward(dx, t->ptr, dy->ptr, t->size, act));
    return call_end(&k, 1);
}

static PyObject *op_add(PyObject *self, PyObject *args)
{
    PyObject *ao, *bo;
    const char *device;
    op_call k;
    if (!PyArg_ParseTuple(args, "OOs:add", &ao, &bo, &device) || call_begin(&k, device) < 0)
        return NULL;
    const op_in *a, *b;
    float *y;
    if (!(a = call_in(&k, ao, "a", -1)) || !(b = call_in(&k, bo, "b", -1)) || same_shape(a, b, "a", "b") < 0 ||
        call_out(&k, &y, a->ndim, a->shape) < 0)
        FAIL;
    RUN(&k, BE->add(y, a->ptr, b->ptr, a->size));
    return call_end(&k, 1);
}

static PyObject *op_dropout(PyObject *self, PyObject *args)
{
    PyObject *xo;
    float rate;
    unsigned long long seed;
    const char *device;
    op_call k;
    if (!PyArg_ParseTuple(args, "OfKs:dropout", &xo, &rate, &seed, &device))
        return NULL;
    if (!(rate >= 0.0f && rate < 1.0f)) {
        PyErr_Format(PyExc_ValueError, "dropout rate must be in [0, 1), got %g", (double)rate);
        return NULL;
    }
    if (call_begin(&k, device) < 0)
        return NULL;
    const op_in *x;
    float *y, *mask;
    if (!(x = call_in(&k, xo, "x", -1)) || call_out(&k, &y, x->ndim, x->shape) < 0 ||
        call_out(&k, &mask, x->ndim, x->shape) < 0)
        FAIL;
    RUN(&k, BE->dropout_forward(y, mask, x->ptr, x->size, rate, (uint64_t)seed, NULL, 0));
    return call_end(&k, 1);
}

/* ---------------------------------------------------------------- augmentation */

/* random_affine(x, flip, (th), (tw), (zh), (zw), keep_aspect, (rot), fill_mode,
 * interpolation, fill_value, seed, draw, device): the kernel with stream
 * hash(seed, draw), what a network's layer runs at draw counter `draw`. */
static PyObject *op_random_affine(PyObject *self, PyObject *args)
{
    PyObject *xo;
    ga_augment a = {0};
    int keep;
    unsigned long long seed, draw;
    const char *device;
    op_call k;
    if (!PyArg_ParseTuple(args, "Oi(ff)(ff)(ff)(ff)p(ff)iifKKs:random_affine", &xo, &a.flip, &a.translate_h[0],
                          &a.translate_h[1], &a.translate_w[0], &a.translate_w[1], &a.zoom_h[0], &a.zoom_h[1],
                          &a.zoom_w[0], &a.zoom_w[1], &keep, &a.rotate[0], &a.rotate[1], &a.fill_mode,
                          &a.interpolation, &a.fill_value, &seed, &draw, &device))
        return NULL;
    a.zoom_keep_aspect = keep;
    if (call_begin(&k, device) < 0)
        return NULL;
    const op_in *x;
    float *y;
    if (!(x = call_in(&k, xo, "x", 4)) || call_out(&k, &y, 4, x->shape) < 0)
        FAIL;
    RUN(&k, BE->augment_affine(y, x->ptr, x->shape[0], x->shape[1], x->shape[2], x->shape[3], &a,
                               ga_rng_hash((uint64_t)seed, (uint64_t)draw), NULL, 0));
    return call_end(&k, 1);
}

/* rescale(x, scale, offset, device): y = x scale + offset */
static PyObject *op_rescale(PyObject *self, PyObject *args)
{
    PyObject *xo;
    float scale, offset;
    const char *device;
    op_call k;
    if (!PyArg_ParseTuple(args, "Offs:rescale", &xo, &scale, &offset, &device) || call_begin(&k, device) < 0)
        return NULL;
    const op_in *x;
    float *y;
    if (!(x = call_in(&k, xo, "x", -1)) || call_out(&k, &y, x->ndim, x->shape) < 0)
        FAIL;
    RUN(&k, BE->scale_shift(y, x->ptr, x->size, scale, offset));
    return call_end(&k, 1);
}

/* ---------------------------------------------------------------- dense */

static PyObject *op_dense(PyObject *self, PyObject *args)
{
    PyObject *xo, *wo, *bo;
    ga_act act;
    const char *device;
    op_call k;
    if (!PyArg_ParseTuple(args, "OOOifs:dense", &xo, &wo, &bo, &act.kind, &act.alpha, &device) ||
        call_begin(&k, device) < 0)
        return NULL;
    const op_in *x, *w, *b = NULL;
    if (!(x = call_in(&k, xo, "x", 2)) || !(w = call_in(&k, wo, "w", 2)) ||
        (bo != Py_None && !(b = call_in(&k, bo, "b", 1))))
        FAIL;
    const int64_t n = x->shape[0], fin = x->shape[1], units = w->shape[0];
    if (w->shape[1] != fin || (b && b->shape[0] != units)) {
        PyErr_SetString(PyExc_ValueError, "dense: need x (N, in), w (out, in), b (out)");
        FAIL;
    }
    int64_t shape[2] = {n, units};
    float *y;
    if (call_out(&k, &y, 2, shape) < 0)
        FAIL;
    RUN(&k, BE->gemm(y, x->ptr, w->ptr, 0, 1, n, units, fin, fin, fin, units, 1.0f, 0.0f, GA_VARIANT_FAST));
    RUN(&k, BE->bias_act(y, b ? b->ptr : NULL, n, units, act));
    return call_end(&k, 1);
}

static PyObject *op_dense_backward(PyObject *self, PyObject *args)
{
    PyObject *xo, *wo, *dyo;
    const char *device;
    op_call k;
    if (!PyArg_ParseTuple(args, "OOOs:dense_backward", &xo, &wo, &dyo, &device) || call_begin(&k, device) < 0)
        return NULL;
    const op_in *x, *w, *dy;
    if (!(x = call_in(&k, xo, "x", 2)) || !(w = call_in(&k, wo, "w", 2)) || !(dy = call_in(&k, dyo, "dy", 2)))
        FAIL;
    const int64_t n = x->shape[0], fin = x->shape[1], units = w->shape[0];
    if (w->shape[1] != fin || dy->shape[0] != n || dy->shape[1] != units) {
        PyErr_SetString(PyExc_ValueError, "dense_backward: need x (N, in), w (out, in), dy (N, out)");
        FAIL;
    }
    float *dx, *dw, *db;
    if (call_out(&k, &dx, 2, x->shape) < 0 || call_out(&k, &dw, 2, w->shape) < 0 || call_out(&k, &db, 1, &units) < 0)
        FAIL;
    RUN(&k, BE->gemm(dw, dy->ptr, x->ptr, 1, 0, units, fin, n, units, fin, fin, 1.0f, 0.0f, GA_VARIANT_FAST));
    RUN(&k, BE->sum_rows(db, dy->ptr, n, units));
    RUN(&k, BE->gemm(dx, dy->ptr, w->ptr, 0, 0, n, fin, units, units, fin, fin, 1.0f, 0.0f, GA_VARIANT_FAST));
    return call_end(&k, 1);
}

/* ---------------------------------------------------------------- loss */

/* labels must be a 1-D int32 ndarray (the Python wrapper converts). Returns (mean loss, dlogits). */
static PyObject *op_softmax_xent(PyObject *self, PyObject *args)
{
    PyObject *lo, *yo;
    const char *device;
    op_call k;
    if (!PyArg_ParseTuple(args, "OOs:softmax_cross_entropy", &lo, &yo, &device) || call_begin(&k, device) < 0)
        return NULL;
    const op_in *z;
    if (!(z = call_in(&k, lo, "logits", 2)))
        FAIL;
    const int64_t n = z->shape[0], classes = z->shape[1];
    if (n == 0 || classes == 0) {
        PyErr_SetString(PyExc_ValueError, "softmax_cross_entropy: empty batch or no classes");
        FAIL;
    }
    if (!PyArray_Check(yo) || PyArray_TYPE((PyArrayObject *)yo) != NPY_INT32) {
        PyErr_SetString(PyExc_TypeError, "labels must be an int32 numpy array");
        FAIL;
    }
    PyArrayObject *labels = (PyArrayObject *)PyArray_FROM_OTF(yo, NPY_INT32, NPY_ARRAY_IN_ARRAY);
    if (!labels)
        FAIL;
    k.in[k.nin++].keep = (PyObject *)labels; /* released with the inputs */
    if (PyArray_NDIM(labels) != 1 || PyArray_DIM(labels, 0) != n) {
        PyErr_Format(PyExc_ValueError, "labels must have shape (%lld,)", (long long)n);
        FAIL;
    }
    const int32_t *lab = PyArray_DATA(labels);
    for (int64_t i = 0; i < n; i++)
        if (lab[i] < 0 || lab[i] >= classes) {
            PyErr_Format(PyExc_ValueError, "label %d at index %lld is outside [0, %lld)", lab[i], (long long)i,
                         (long long)classes);
            FAIL;
        }
    float *dl, *stats, host_stats[2];
    int32_t *dev_labels;
    if (call_out(&k, &dl, 2, z->shape) < 0 || call_scratch(&k, &dev_labels, (size_t)n * sizeof(int32_t)) < 0 ||
        call_scratch(&k, &stats, 2 * sizeof(float)) < 0)
        FAIL;
    RUN(&k, BE->to_device(dev_labels, lab, (size_t)n * sizeof(int32_t)));
    RUN(&k, BE->zero(stats, 2 * sizeof(float)));
    RUN(&k, BE->softmax_xent(stats, dl, z->ptr, dev_labels, n, classes, 1.0f / (float)n));
    RUN(&k, BE->to_host(host_stats, stats, sizeof host_stats));
    PyObject *dlogits = call_end(&k, 1);
    return dlogits ? Py_BuildValue("(dN)", (double)host_stats[0] / (double)n, dlogits) : NULL;
}

/* ---------------------------------------------------------------- optimizers */

static PyObject *op_sgd_step(PyObject *self, PyObject *args)
{
    PyObject *wo, *go, *vo;
    float lr, momentum, wd;
    int nesterov;
    const char *device;
    op_call k;
    if (!PyArg_ParseTuple(args, "OOOfffps:sgd_step", &wo, &go, &vo, &lr, &momentum, &wd, &nesterov, &device) ||
        call_begin(&k, device) < 0)
        return NULL;
    const op_in *w, *g, *v = NULL;
    if (!(w = call_in(&k, wo, "w", -1)) || !(g = call_in(&k, go, "g", -1)) || same_shape(w, g, "w", "g") < 0)
        FAIL;
    if (vo != Py_None && (!(v = call_in(&k, vo, "vel", -1)) || same_shape(w, v, "w", "vel") < 0))
        FAIL;
    float *wn, *vn;
    if (call_out_copy(&k, &wn, w, w) < 0 || call_out_copy(&k, &vn, w, v) < 0)
        FAIL;
    RUN(&k, BE->sgd_update(wn, vn, g->ptr, w->size, lr, momentum, wd, nesterov));
    return call_end(&k, 1);
}

static PyObject *op_adam_step(PyObject *self, PyObject *args)
{
    PyObject *wo, *go, *mo, *vo;
    long long t;
    float lr, b1, b2, eps, wd;
    const char *device;
    op_call k;
    if (!PyArg_ParseTuple(args, "OOOOLfffffs:adam_step", &wo, &go, &mo, &vo, &t, &lr, &b1, &b2, &eps, &wd, &device))
        return NULL;
    if (t < 1) {
        PyErr_SetString(PyExc_ValueError, "adam_step: t counts steps from 1");
        return NULL;
    }
    if (call_begin(&k, device) < 0)
        return NULL;
    const op_in *w, *g, *m, *v;
    if (!(w = call_in(&k, wo, "w", -1)) || !(g = call_in(&k, go, "g", -1)) || !(m = call_in(&k, mo, "m", -1)) ||
        !(v = call_in(&k, vo, "v", -1)) || same_shape(w, g, "w", "g") < 0 || same_shape(w, m, "w", "m") < 0 ||
        same_shape(w, v, "w", "v") < 0)
        FAIL;
    float *wn, *mn, *vn;
    if (call_out_copy(&k, &wn, w, w) < 0 || call_out_copy(&k, &mn, w, m) < 0 || call_out_copy(&k, &vn, w, v) < 0)
        FAIL;
    /* the kernel reads the step number from device memory (a network's step counter) */
    const int64_t step = (int64_t)t;
    int64_t *step_dev;
    if (call_scratch(&k, &step_dev, sizeof step) < 0)
        FAIL;
    RUN(&k, BE->to_device(step_dev, &step, sizeof step));
    RUN(&k, BE->adam_update(wn, mn, vn, g->ptr, w->size, lr, b1, b2, eps, wd, step_dev));
    return call_end(&k, 1);
}

PyMethodDef ga_ops_methods[] = {
    {"op_matmul", op_matmul, METH_VARARGS, NULL},
    {"op_conv2d", op_conv2d, METH_VARARGS, NULL},
    {"op_conv2d_backward", op_conv2d_backward, METH_VARARGS, NULL},
    {"op_conv2d_max_pool2d", op_conv2d_max_pool2d, METH_VARARGS, NULL},
    {"op_conv2d_max_pool2d_backward", op_conv2d_max_pool2d_backward, METH_VARARGS, NULL},
    {"op_max_pool2d", op_max_pool2d, METH_VARARGS, NULL},
    {"op_max_pool2d_backward", op_max_pool2d_backward, METH_VARARGS, NULL},
    {"op_global_avg_pool2d", op_global_avg_pool2d, METH_VARARGS, NULL},
    {"op_global_avg_pool2d_backward", op_global_avg_pool2d_backward, METH_VARARGS, NULL},
    {"op_batch_norm", op_batch_norm, METH_VARARGS, NULL},
    {"op_batch_norm_backward", op_batch_norm_backward, METH_VARARGS, NULL},
    {"op_activation", op_activation, METH_VARARGS, NULL},
    {"op_activation_backward", op_activation_backward, METH_VARARGS, NULL},
    {"op_add", op_add, METH_VARARGS, NULL},
    {"op_dropout", op_dropout, METH_VARARGS, NULL},
    {"op_random_affine", op_random_affine, METH_VARARGS, NULL},
    {"op_rescale", op_rescale, METH_VARARGS, NULL},
    {"op_dense", op_dense, METH_VARARGS, NULL},
    {"op_dense_backward", op_dense_backward, METH_VARARGS, NULL},
    {"op_softmax_cross_entropy", op_softmax_xent, METH_VARARGS, NULL},
    {"op_sgd_step", op_sgd_step, METH_VARARGS, NULL},
    {"op_adam_step", op_adam_step, METH_VARARGS, NULL},
    {"op_avg_pool2d", op_avg_pool2d, METH_VARARGS, NULL},
    {"op_avg_pool2d_backward", op_avg_pool2d_backward, METH_VARARGS, NULL},
    {"op_global_max_pool2d", op_global_max_pool2d, METH_VARARGS, NULL},
    {"op_global_max_pool2d_backward", op_global_max_pool2d_backward, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};
