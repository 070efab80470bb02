/* ga.ops: single kernels callable from Python, on any registered device.
 *
 * Inputs are float32 ndarrays (any strides: copied to a contiguous block when
 * needed) or gpuaccel.Tensor objects. Outputs are ndarrays, or Tensors when
 * any input was a Tensor. The Python wrappers in gpuaccel/ops.py resolve the
 * device name and keyword defaults; everything is checked again here. */
#include "python/common.h"

#include <string.h>

typedef struct {
    ga_device dev;
    int tensor_out; /* an input was a Tensor: answer with Tensors */
} op_ctx;

typedef struct {
    PyObject *keep;      /* owned: the contiguous ndarray or the Tensor */
    GaTensor *dev_copy;  /* owned: device copy of an ndarray for a GPU op */
    float *ptr;          /* the data, in the op's device memory */
    int ndim;
    int64_t shape[GA_MAX_DIMS];
    int64_t size;
} op_in;

static int ctx_init(op_ctx *c, const char *device)
{
    c->tensor_out = 0;
    return ga_py_device(&c->dev, device);
}

static void in_free(op_in *a)
{
    Py_CLEAR(a->keep);
    Py_CLEAR(a->dev_copy);
}

/* Take `obj` as an input of `ndim` dimensions (-1: any) for the op's device. */
static int in_get(op_ctx *c, op_in *a, PyObject *obj, const char *what, int ndim)
{
    memset(a, 0, sizeof *a);
    if (GaTensor_Check(obj)) {
        GaTensor *t = (GaTensor *)obj;
        if (strcmp(t->dev.name, c->dev.name) != 0) {
            PyErr_Format(PyExc_ValueError, "%s is on %s but the op runs on %s", what, t->dev.name, c->dev.name);
            return -1;
        }
        if (ndim >= 0 && t->ndim != ndim) {
            PyErr_Format(PyExc_ValueError, "%s must have %d dimensions, got %d", what, ndim, t->ndim);
            return -1;
        }
        Py_INCREF(obj);
        a->keep = obj;
        a->ptr = t->data;
        a->ndim = t->ndim;
        memcpy(a->shape, t->shape, sizeof a->shape);
        a->size = t->size;
        c->tensor_out = 1;
        return 0;
    }
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a float32 numpy array or a gpuaccel.Tensor, got %s", what,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    PyArrayObject *arr = (PyArrayObject *)obj;
    if (PyArray_TYPE(arr) != NPY_FLOAT32) {
        PyErr_Format(PyExc_TypeError, "%s must be float32, got %s (convert with .astype(np.float32))", what,
                     PyArray_DESCR(arr)->typeobj->tp_name);
        return -1;
    }
    if (ndim >= 0 && PyArray_NDIM(arr) != ndim) {
        PyErr_Format(PyExc_ValueError, "%s must have %d dimensions, got %d", what, ndim, PyArray_NDIM(arr));
        return -1;
    }
    if (PyArray_NDIM(arr) > GA_MAX_DIMS) {
        PyErr_Format(PyExc_ValueError, "%s has more than %d dimensions", what, GA_MAX_DIMS);
        return -1;
    }
    a->keep = PyArray_FROM_OTF(obj, NPY_FLOAT32, NPY_ARRAY_IN_ARRAY); /* contiguous, aligned */
    if (!a->keep)
        return -1;
    arr = (PyArrayObject *)a->keep;
    a->ndim = PyArray_NDIM(arr);
    a->size = 1;
    for (int i = 0; i < a->ndim; i++) {
        a->shape[i] = PyArray_DIM(arr, i);
        a->size *= a->shape[i];
    }
    if (c->dev.be == &ga_cpu_backend) {
        a->ptr = PyArray_DATA(arr);
        return 0;
    }
    a->dev_copy = ga_tensor_new(&c->dev, a->ndim, a->shape);
    if (!a->dev_copy) {
        in_free(a);
        return -1;
    }
    ga_status st;
    Py_BEGIN_ALLOW_THREADS
    st = c->dev.be->to_device(a->dev_copy->data, PyArray_DATA(arr), (size_t)a->size * sizeof(float));
    Py_END_ALLOW_THREADS
    if (st != GA_OK) {
        in_free(a);
        ga_py_raise(c->dev.be, st);
        return -1;
    }
    a->ptr = a->dev_copy->data;
    return 0;
}

/* A new output; *ptr receives its device memory. */
static PyObject *out_new(op_ctx *c, int ndim, const int64_t *shape, float **ptr)
{
    if (c->dev.be == &ga_cpu_backend && !c->tensor_out) {
        npy_intp dims[GA_MAX_DIMS];
        for (int i = 0; i < ndim; i++)
            dims[i] = (npy_intp)shape[i];
        PyObject *arr = PyArray_SimpleNew(ndim, dims, NPY_FLOAT32);
        if (arr)
            *ptr = PyArray_DATA((PyArrayObject *)arr);
        return arr;
    }
    GaTensor *t = ga_tensor_new(&c->dev, ndim, shape);
    if (t)
        *ptr = t->data;
    return (PyObject *)t;
}

/* Hand an output back: a Tensor becomes an ndarray unless Tensors were given. Steals `o`. */
static PyObject *out_done(op_ctx *c, PyObject *o)
{
    if (!o || c->tensor_out || !GaTensor_Check(o))
        return o;
    PyObject *arr = ga_tensor_to_numpy((GaTensor *)o);
    Py_DECREF(o);
    return arr;
}

/* Device scratch memory for one call. */
static void *scratch(op_ctx *c, size_t bytes)
{
    void *p = NULL;
    ga_status st = c->dev.be->alloc(&p, bytes);
    if (st != GA_OK) {
        ga_py_raise(c->dev.be, st);
        return NULL;
    }
    return p;
}

/* Run backend work with the GIL released; on failure raise and jump to fail. */
#define RUN(c, expr)                                              \
    do {                                                          \
        ga_status run_st_;                                        \
        Py_BEGIN_ALLOW_THREADS                                    \
        run_st_ = (c)->dev.be->set_device((c)->dev.index);        \
        if (run_st_ == GA_OK)                                     \
            run_st_ = (expr);                                     \
        Py_END_ALLOW_THREADS                                      \
        if (run_st_ != GA_OK) {                                   \
            ga_py_raise((c)->dev.be, run_st_);                    \
            goto fail;                                            \
        }                                                         \
    } while (0)

#define BE (c.dev.be)

static int same_shape(const op_in *a, const op_in *b, const char *an, const char *bn)
{
    if (a->ndim == b->ndim && memcmp(a->shape, b->shape, (size_t)a->ndim * sizeof(int64_t)) == 0)
        return 0;
    PyErr_Format(PyExc_ValueError, "%s and %s must have the same shape", an, bn);
    return -1;
}

static int check_variant(int variant)
{
    if (variant == GA_VARIANT_FAST || variant == GA_VARIANT_REF || variant == GA_VARIANT_BLAS)
        return 0;
    PyErr_Format(PyExc_ValueError, "unknown kernel variant %d", variant);
    return -1;
}

/* ---------------------------------------------------------------- matmul */

static PyObject *op_matmul(PyObject *self, PyObject *args)
{
    PyObject *ao, *bo, *co, *out = NULL;
    int ta, tb, variant;
    float alpha, beta;
    const char *device;
    op_ctx c;
    op_in a = {0}, b = {0}, cin = {0};
    if (!PyArg_ParseTuple(args, "OOppffOsi:matmul", &ao, &bo, &ta, &tb, &alpha, &beta, &co, &device, &variant))
        return NULL;
    if (check_variant(variant) < 0 || ctx_init(&c, device) < 0)
        return NULL;
    if (in_get(&c, &a, ao, "a", 2) < 0 || in_get(&c, &b, bo, "b", 2) < 0)
        goto fail;
    int64_t m = ta ? a.shape[1] : a.shape[0], k = ta ? a.shape[0] : a.shape[1];
    int64_t kb = tb ? b.shape[1] : b.shape[0], n = tb ? b.shape[0] : b.shape[1];
    if (k != kb) {
        PyErr_Format(PyExc_ValueError, "matmul: inner sizes differ (%lld vs %lld)", (long long)k, (long long)kb);
        goto fail;
    }
    int64_t shape[2] = {m, n};
    float *cp;
    if (co != Py_None) {
        if (in_get(&c, &cin, co, "c", 2) < 0)
            goto fail;
        if (cin.shape[0] != m || cin.shape[1] != n) {
            PyErr_Format(PyExc_ValueError, "matmul: c must have shape (%lld, %lld)", (long long)m, (long long)n);
            goto fail;
        }
    } else {
        beta = 0.0f;
    }
    if (!(out = out_new(&c, 2, shape, &cp)))
        goto fail;
    if (co != Py_None)
        RUN(&c, BE->copy(cp, cin.ptr, (size_t)(m * n) * sizeof(float)));
    RUN(&c, BE->gemm(cp, a.ptr, b.ptr, ta, tb, m, n, k, a.shape[1], b.shape[1], n, alpha, beta, variant));
    in_free(&a);
    in_free(&b);
    in_free(&cin);
    return out_done(&c, out);
fail:
    Py_XDECREF(out);
    in_free(&a);
    in_free(&b);
    in_free(&cin);
    return NULL;
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
    PyObject *xo, *wo, *bo, *out = NULL;
    long stride, pad;
    int variant;
    ga_act act;
    const char *device;
    op_ctx c;
    op_in x = {0}, w = {0}, b = {0};
    float *col = NULL, *ws = NULL;
    if (!PyArg_ParseTuple(args, "OOOllifsi:conv2d", &xo, &wo, &bo, &stride, &pad, &act.kind, &act.alpha, &device,
                          &variant))
        return NULL;
    if (check_variant(variant) < 0 || ctx_init(&c, device) < 0)
        return NULL;
    if (in_get(&c, &x, xo, "x", 4) < 0 || in_get(&c, &w, wo, "w", 4) < 0)
        goto fail;
    if (bo != Py_None && in_get(&c, &b, bo, "b", 1) < 0)
        goto fail;
    ga_conv_shape s;
    if (conv_geometry(&s, &x, &w, stride, pad) < 0)
        goto fail;
    if (bo != Py_None && b.shape[0] != s.k) {
        PyErr_Format(PyExc_ValueError, "conv2d: b must have %lld entries", (long long)s.k);
        goto fail;
    }
    int64_t shape[4] = {s.n, s.k, s.p, s.q};
    float *y;
    if (!(out = out_new(&c, 4, shape, &y)))
        goto fail;
    if (variant != GA_VARIANT_REF) {
        if (!(col = scratch(&c, (size_t)ga_conv_col_floats(&s) * sizeof(float))) ||
            !(ws = scratch(&c, (size_t)ga_conv_fwd_ws_floats(&s) * sizeof(float))))
            goto fail;
    }
    RUN(&c, BE->conv2d_forward(y, col, ws, x.ptr, w.ptr, bo != Py_None ? b.ptr : NULL, act, &s, variant));
    BE->release(col);
    BE->release(ws);
    in_free(&x);
    in_free(&w);
    in_free(&b);
    return out_done(&c, out);
fail:
    BE->release(col);
    BE->release(ws);
    Py_XDECREF(out);
    in_free(&x);
    in_free(&w);
    in_free(&b);
    return NULL;
}

static PyObject *op_conv2d_backward(PyObject *self, PyObject *args)
{
    PyObject *xo, *wo, *dyo, *dx = NULL, *dw = NULL, *db = NULL;
    long stride, pad;
    int variant;
    const char *device;
    op_ctx c;
    op_in x = {0}, w = {0}, dy = {0};
    float *col = NULL, *ws = NULL;
    if (!PyArg_ParseTuple(args, "OOOllsi:conv2d_backward", &xo, &wo, &dyo, &stride, &pad, &device, &variant))
        return NULL;
    if (check_variant(variant) < 0 || ctx_init(&c, device) < 0)
        return NULL;
    if (in_get(&c, &x, xo, "x", 4) < 0 || in_get(&c, &w, wo, "w", 4) < 0 || in_get(&c, &dy, dyo, "dy", 4) < 0)
        goto fail;
    ga_conv_shape s;
    if (conv_geometry(&s, &x, &w, stride, pad) < 0)
        goto fail;
    if (dy.shape[0] != s.n || dy.shape[1] != s.k || dy.shape[2] != s.p || dy.shape[3] != s.q) {
        PyErr_Format(PyExc_ValueError, "conv2d_backward: dy must have shape (%lld, %lld, %lld, %lld)",
                     (long long)s.n, (long long)s.k, (long long)s.p, (long long)s.q);
        goto fail;
    }
    float *dxp, *dwp, *dbp;
    if (!(dx = out_new(&c, 4, x.shape, &dxp)) || !(dw = out_new(&c, 4, w.shape, &dwp)) ||
        !(db = out_new(&c, 1, &s.k, &dbp)))
        goto fail;
    if (variant != GA_VARIANT_REF) {
        if (!(col = scratch(&c, (size_t)ga_conv_col_floats(&s) * sizeof(float))) ||
            !(ws = scratch(&c, (size_t)ga_conv_bwd_ws_floats(&s) * sizeof(float))))
            goto fail;
        RUN(&c, BE->im2col(col, x.ptr, &s));
    }
    RUN(&c, BE->conv2d_backward(dxp, dwp, dbp, ws, x.ptr, col, w.ptr, dy.ptr, &s, variant));
    BE->release(col);
    BE->release(ws);
    in_free(&x);
    in_free(&w);
    in_free(&dy);
    dx = out_done(&c, dx);
    dw = out_done(&c, dw);
    db = out_done(&c, db);
    if (!dx || !dw || !db)
        goto fail_out;
    return Py_BuildValue("(NNN)", dx, dw, db);
fail:
    BE->release(col);
    BE->release(ws);
    in_free(&x);
    in_free(&w);
    in_free(&dy);
fail_out:
    Py_XDECREF(dx);
    Py_XDECREF(dw);
    Py_XDECREF(db);
    return NULL;
}

/* ---------------------------------------------------------------- pooling */

static int pool_geometry(ga_pool_shape *s, const op_in *x, long size, long stride)
{
    if (size < 1 || stride < 1 || size > INT32_MAX || stride > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "max_pool2d: size and stride must be in [1, 2^31)");
        return -1;
    }
    *s = (ga_pool_shape){.n = x->shape[0], .c = x->shape[1], .h = x->shape[2], .w = x->shape[3],
                         .size = size, .stride = stride};
    if (s->n == 0) {
        PyErr_SetString(PyExc_ValueError, "max_pool2d: empty batch");
        return -1;
    }
    if (s->c <= 0 || size > s->h || size > s->w) {
        PyErr_Format(PyExc_ValueError, "max_pool2d: window %ld does not fit the input %lldx%lld", size,
                     (long long)s->h, (long long)s->w);
        return -1;
    }
    s->p = (s->h - size) / stride + 1;
    s->q = (s->w - size) / stride + 1;
    return 0;
}

/* max_pool2d(x, size, stride, device) -> y; with dy given -> dx. */
static PyObject *pool_op(PyObject *args, int backward)
{
    PyObject *xo, *dyo = NULL, *out = NULL, *tmp = NULL;
    long size, stride;
    const char *device;
    op_ctx c;
    op_in x = {0}, dy = {0};
    int32_t *arg = NULL;
    int ok = backward ? PyArg_ParseTuple(args, "OOlls:max_pool2d_backward", &xo, &dyo, &size, &stride, &device)
                      : PyArg_ParseTuple(args, "Olls:max_pool2d", &xo, &size, &stride, &device);
    if (!ok || ctx_init(&c, device) < 0)
        return NULL;
    if (in_get(&c, &x, xo, "x", 4) < 0)
        goto fail;
    ga_pool_shape s;
    if (pool_geometry(&s, &x, size, stride) < 0)
        goto fail;
    int64_t yshape[4] = {s.n, s.c, s.p, s.q};
    if (backward) {
        if (in_get(&c, &dy, dyo, "dy", 4) < 0)
            goto fail;
        if (memcmp(dy.shape, yshape, sizeof yshape) != 0) {
            PyErr_Format(PyExc_ValueError, "max_pool2d_backward: dy must have shape (%lld, %lld, %lld, %lld)",
                         (long long)s.n, (long long)s.c, (long long)s.p, (long long)s.q);
            goto fail;
        }
    }
    float *y, *dx;
    if (!(arg = scratch(&c, (size_t)(s.n * s.c * s.p * s.q) * sizeof(int32_t))))
        goto fail;
    if (backward) {
        GaTensor *t = ga_tensor_new(&c.dev, 4, yshape);
        if (!(tmp = (PyObject *)t) || !(out = out_new(&c, 4, x.shape, &dx)))
            goto fail;
        RUN(&c, BE->maxpool_forward(t->data, arg, x.ptr, &s));
        RUN(&c, BE->maxpool_backward(dx, dy.ptr, arg, &s));
    } else {
        if (!(out = out_new(&c, 4, yshape, &y)))
            goto fail;
        RUN(&c, BE->maxpool_forward(y, arg, x.ptr, &s));
    }
    BE->release(arg);
    Py_XDECREF(tmp);
    in_free(&x);
    in_free(&dy);
    return out_done(&c, out);
fail:
    BE->release(arg);
    Py_XDECREF(tmp);
    Py_XDECREF(out);
    in_free(&x);
    in_free(&dy);
    return NULL;
}

static PyObject *op_max_pool2d(PyObject *self, PyObject *args) { return pool_op(args, 0); }
static PyObject *op_max_pool2d_backward(PyObject *self, PyObject *args) { return pool_op(args, 1); }

/* ---------------------------------------------------------------- elementwise */

static PyObject *op_activation(PyObject *self, PyObject *args)
{
    PyObject *xo, *out = NULL;
    ga_act act;
    const char *device;
    op_ctx c;
    op_in x = {0};
    if (!PyArg_ParseTuple(args, "Oifs:activation", &xo, &act.kind, &act.alpha, &device) || ctx_init(&c, device) < 0)
        return NULL;
    if (in_get(&c, &x, xo, "x", -1) < 0)
        goto fail;
    float *y;
    if (!(out = out_new(&c, x.ndim, x.shape, &y)))
        goto fail;
    RUN(&c, BE->act_forward(y, x.ptr, x.size, act));
    in_free(&x);
    return out_done(&c, out);
fail:
    Py_XDECREF(out);
    in_free(&x);
    return NULL;
}

/* t: the output y, or the input z for kinds whose derivative needs it (gelu, silu) */
static PyObject *op_activation_backward(PyObject *self, PyObject *args)
{
    PyObject *yo, *dyo, *out = NULL;
    ga_act act;
    const char *device;
    op_ctx c;
    op_in y = {0}, dy = {0};
    if (!PyArg_ParseTuple(args, "OOifs:activation_backward", &yo, &dyo, &act.kind, &act.alpha, &device) ||
        ctx_init(&c, device) < 0)
        return NULL;
    if (in_get(&c, &y, yo, "t", -1) < 0 || in_get(&c, &dy, dyo, "dy", -1) < 0 || same_shape(&y, &dy, "t", "dy") < 0)
        goto fail;
    float *dx;
    if (!(out = out_new(&c, y.ndim, y.shape, &dx)))
        goto fail;
    RUN(&c, BE->act_backward(dx, y.ptr, dy.ptr, y.size, act));
    in_free(&y);
    in_free(&dy);
    return out_done(&c, out);
fail:
    Py_XDECREF(out);
    in_free(&y);
    in_free(&dy);
    return NULL;
}

static PyObject *op_dropout(PyObject *self, PyObject *args)
{
    PyObject *xo, *y = NULL, *mask = NULL;
    float rate;
    unsigned long long seed;
    const char *device;
    op_ctx c;
    op_in x = {0};
    if (!PyArg_ParseTuple(args, "OfKs:dropout", &xo, &rate, &seed, &device) || ctx_init(&c, device) < 0)
        return NULL;
    if (!(rate >= 0.0f && rate < 1.0f)) {
        PyErr_Format(PyExc_ValueError, "dropout rate must be in [0, 1), got %g", (double)rate);
        return NULL;
    }
    if (in_get(&c, &x, xo, "x", -1) < 0)
        goto fail;
    float *yp, *mp;
    if (!(y = out_new(&c, x.ndim, x.shape, &yp)) || !(mask = out_new(&c, x.ndim, x.shape, &mp)))
        goto fail;
    RUN(&c, BE->dropout_forward(yp, mp, x.ptr, x.size, rate, (uint64_t)seed));
    in_free(&x);
    y = out_done(&c, y);
    mask = out_done(&c, mask);
    if (!y || !mask)
        goto fail_out;
    return Py_BuildValue("(NN)", y, mask);
fail:
    in_free(&x);
fail_out:
    Py_XDECREF(y);
    Py_XDECREF(mask);
    return NULL;
}

/* ---------------------------------------------------------------- dense */

static PyObject *op_dense(PyObject *self, PyObject *args)
{
    PyObject *xo, *wo, *bo, *out = NULL;
    ga_act act;
    const char *device;
    op_ctx c;
    op_in x = {0}, w = {0}, b = {0};
    if (!PyArg_ParseTuple(args, "OOOifs:dense", &xo, &wo, &bo, &act.kind, &act.alpha, &device) ||
        ctx_init(&c, device) < 0)
        return NULL;
    if (in_get(&c, &x, xo, "x", 2) < 0 || in_get(&c, &w, wo, "w", 2) < 0)
        goto fail;
    if (bo != Py_None && in_get(&c, &b, bo, "b", 1) < 0)
        goto fail;
    const int64_t n = x.shape[0], fin = x.shape[1], units = w.shape[0];
    if (w.shape[1] != fin || (bo != Py_None && b.shape[0] != units)) {
        PyErr_SetString(PyExc_ValueError, "dense: need x (N, in), w (out, in), b (out)");
        goto fail;
    }
    int64_t shape[2] = {n, units};
    float *y;
    if (!(out = out_new(&c, 2, shape, &y)))
        goto fail;
    RUN(&c, BE->gemm(y, x.ptr, w.ptr, 0, 1, n, units, fin, fin, fin, units, 1.0f, 0.0f, GA_VARIANT_FAST));
    RUN(&c, BE->bias_act(y, bo != Py_None ? b.ptr : NULL, n, units, act));
    in_free(&x);
    in_free(&w);
    in_free(&b);
    return out_done(&c, out);
fail:
    Py_XDECREF(out);
    in_free(&x);
    in_free(&w);
    in_free(&b);
    return NULL;
}

static PyObject *op_dense_backward(PyObject *self, PyObject *args)
{
    PyObject *xo, *wo, *dyo, *dx = NULL, *dw = NULL, *db = NULL;
    const char *device;
    op_ctx c;
    op_in x = {0}, w = {0}, dy = {0};
    if (!PyArg_ParseTuple(args, "OOOs:dense_backward", &xo, &wo, &dyo, &device) || ctx_init(&c, device) < 0)
        return NULL;
    if (in_get(&c, &x, xo, "x", 2) < 0 || in_get(&c, &w, wo, "w", 2) < 0 || in_get(&c, &dy, dyo, "dy", 2) < 0)
        goto fail;
    const int64_t n = x.shape[0], fin = x.shape[1], units = w.shape[0];
    if (w.shape[1] != fin || dy.shape[0] != n || dy.shape[1] != units) {
        PyErr_SetString(PyExc_ValueError, "dense_backward: need x (N, in), w (out, in), dy (N, out)");
        goto fail;
    }
    float *dxp, *dwp, *dbp;
    if (!(dx = out_new(&c, 2, x.shape, &dxp)) || !(dw = out_new(&c, 2, w.shape, &dwp)) ||
        !(db = out_new(&c, 1, &units, &dbp)))
        goto fail;
    RUN(&c, BE->gemm(dwp, dy.ptr, x.ptr, 1, 0, units, fin, n, units, fin, fin, 1.0f, 0.0f, GA_VARIANT_FAST));
    RUN(&c, BE->sum_rows(dbp, dy.ptr, n, units));
    RUN(&c, BE->gemm(dxp, dy.ptr, w.ptr, 0, 0, n, fin, units, units, fin, fin, 1.0f, 0.0f, GA_VARIANT_FAST));
    in_free(&x);
    in_free(&w);
    in_free(&dy);
    dx = out_done(&c, dx);
    dw = out_done(&c, dw);
    db = out_done(&c, db);
    if (!dx || !dw || !db)
        goto fail_out;
    return Py_BuildValue("(NNN)", dx, dw, db);
fail:
    in_free(&x);
    in_free(&w);
    in_free(&dy);
fail_out:
    Py_XDECREF(dx);
    Py_XDECREF(dw);
    Py_XDECREF(db);
    return NULL;
}

/* ---------------------------------------------------------------- loss */

/* labels must be a 1-D int32 ndarray (the Python wrapper converts). */
static PyObject *op_softmax_xent(PyObject *self, PyObject *args)
{
    PyObject *lo, *yo, *dl = NULL;
    const char *device;
    op_ctx c;
    op_in z = {0};
    PyArrayObject *labels = NULL;
    int32_t *dev_labels = NULL;
    float *stats = NULL;
    if (!PyArg_ParseTuple(args, "OOs:softmax_cross_entropy", &lo, &yo, &device) || ctx_init(&c, device) < 0)
        return NULL;
    if (in_get(&c, &z, lo, "logits", 2) < 0)
        goto fail;
    const int64_t n = z.shape[0], k = z.shape[1];
    if (n == 0 || k == 0) {
        PyErr_SetString(PyExc_ValueError, "softmax_cross_entropy: empty batch or no classes");
        goto fail;
    }
    if (!PyArray_Check(yo) || PyArray_TYPE((PyArrayObject *)yo) != NPY_INT32) {
        PyErr_SetString(PyExc_TypeError, "labels must be an int32 numpy array");
        goto fail;
    }
    labels = (PyArrayObject *)PyArray_FROM_OTF(yo, NPY_INT32, NPY_ARRAY_IN_ARRAY);
    if (!labels)
        goto fail;
    if (PyArray_NDIM(labels) != 1 || PyArray_DIM(labels, 0) != n) {
        PyErr_Format(PyExc_ValueError, "labels must have shape (%lld,)", (long long)n);
        goto fail;
    }
    const int32_t *lab = PyArray_DATA(labels);
    for (int64_t i = 0; i < n; i++)
        if (lab[i] < 0 || lab[i] >= k) {
            PyErr_Format(PyExc_ValueError, "label %d at index %lld is outside [0, %lld)", lab[i], (long long)i,
                         (long long)k);
            goto fail;
        }
    float *dlp, host_stats[2];
    if (!(dl = out_new(&c, 2, z.shape, &dlp)))
        goto fail;
    if (!(dev_labels = scratch(&c, (size_t)n * sizeof(int32_t))) || !(stats = scratch(&c, 2 * sizeof(float))))
        goto fail;
    RUN(&c, BE->to_device(dev_labels, lab, (size_t)n * sizeof(int32_t)));
    RUN(&c, BE->zero(stats, 2 * sizeof(float)));
    RUN(&c, BE->softmax_xent(stats, dlp, z.ptr, dev_labels, n, k, 1.0f / (float)n));
    RUN(&c, BE->to_host(host_stats, stats, sizeof host_stats));
    BE->release(dev_labels);
    BE->release(stats);
    Py_DECREF(labels);
    in_free(&z);
    dl = out_done(&c, dl);
    if (!dl)
        return NULL;
    return Py_BuildValue("(dN)", (double)host_stats[0] / (double)n, dl);
fail:
    BE->release(dev_labels);
    BE->release(stats);
    Py_XDECREF(labels);
    Py_XDECREF(dl);
    in_free(&z);
    return NULL;
}

/* ---------------------------------------------------------------- optimizers */

/* Copy `src` into a new output of its shape (or zeros when src is NULL). */
static PyObject *out_copy(op_ctx *c, const op_in *like, const op_in *src, float **ptr)
{
    PyObject *o = out_new(c, like->ndim, like->shape, ptr);
    if (!o)
        return NULL;
    ga_status st = src ? c->dev.be->copy(*ptr, src->ptr, (size_t)like->size * sizeof(float))
                       : c->dev.be->zero(*ptr, (size_t)like->size * sizeof(float));
    if (st != GA_OK) {
        Py_DECREF(o);
        return ga_py_raise(c->dev.be, st);
    }
    return o;
}

static PyObject *op_sgd_step(PyObject *self, PyObject *args)
{
    PyObject *wo, *go, *vo, *wn = NULL, *vn = NULL;
    float lr, momentum, wd;
    int nesterov;
    const char *device;
    op_ctx c;
    op_in w = {0}, g = {0}, v = {0};
    if (!PyArg_ParseTuple(args, "OOOfffps:sgd_step", &wo, &go, &vo, &lr, &momentum, &wd, &nesterov, &device) ||
        ctx_init(&c, device) < 0)
        return NULL;
    if (in_get(&c, &w, wo, "w", -1) < 0 || in_get(&c, &g, go, "g", -1) < 0 || same_shape(&w, &g, "w", "g") < 0)
        goto fail;
    if (vo != Py_None && (in_get(&c, &v, vo, "vel", -1) < 0 || same_shape(&w, &v, "w", "vel") < 0))
        goto fail;
    float *wp, *vp;
    if (!(wn = out_copy(&c, &w, &w, &wp)) || !(vn = out_copy(&c, &w, vo != Py_None ? &v : NULL, &vp)))
        goto fail;
    RUN(&c, BE->sgd_update(wp, vp, g.ptr, w.size, lr, momentum, wd, nesterov));
    in_free(&w);
    in_free(&g);
    in_free(&v);
    wn = out_done(&c, wn);
    vn = out_done(&c, vn);
    if (!wn || !vn)
        goto fail_out;
    return Py_BuildValue("(NN)", wn, vn);
fail:
    in_free(&w);
    in_free(&g);
    in_free(&v);
fail_out:
    Py_XDECREF(wn);
    Py_XDECREF(vn);
    return NULL;
}

static PyObject *op_adam_step(PyObject *self, PyObject *args)
{
    PyObject *wo, *go, *mo, *vo, *wn = NULL, *mn = NULL, *vn = NULL;
    long long t;
    float lr, b1, b2, eps, wd;
    const char *device;
    op_ctx c;
    op_in w = {0}, g = {0}, m = {0}, v = {0};
    if (!PyArg_ParseTuple(args, "OOOOLfffffs:adam_step", &wo, &go, &mo, &vo, &t, &lr, &b1, &b2, &eps, &wd, &device) ||
        ctx_init(&c, device) < 0)
        return NULL;
    if (t < 1) {
        PyErr_SetString(PyExc_ValueError, "adam_step: t counts steps from 1");
        return NULL;
    }
    if (in_get(&c, &w, wo, "w", -1) < 0 || in_get(&c, &g, go, "g", -1) < 0 || in_get(&c, &m, mo, "m", -1) < 0 ||
        in_get(&c, &v, vo, "v", -1) < 0 || same_shape(&w, &g, "w", "g") < 0 || same_shape(&w, &m, "w", "m") < 0 ||
        same_shape(&w, &v, "w", "v") < 0)
        goto fail;
    float *wp, *mp, *vp;
    if (!(wn = out_copy(&c, &w, &w, &wp)) || !(mn = out_copy(&c, &w, &m, &mp)) || !(vn = out_copy(&c, &w, &v, &vp)))
        goto fail;
    RUN(&c, BE->adam_update(wp, mp, vp, g.ptr, w.size, lr, b1, b2, eps, wd, (int64_t)t));
    in_free(&w);
    in_free(&g);
    in_free(&m);
    in_free(&v);
    wn = out_done(&c, wn);
    mn = out_done(&c, mn);
    vn = out_done(&c, vn);
    if (!wn || !mn || !vn)
        goto fail_out;
    return Py_BuildValue("(NNN)", wn, mn, vn);
fail:
    in_free(&w);
    in_free(&g);
    in_free(&m);
    in_free(&v);
fail_out:
    Py_XDECREF(wn);
    Py_XDECREF(mn);
    Py_XDECREF(vn);
    return NULL;
}

/* ---------------------------------------------------------------- average and global max pooling */

/* The avg_pool2d geometry: max_pool2d's rules (pool_geometry) in its own words. */
static int avg_pool_geometry(ga_pool_shape *s, const op_in *x, long size, long stride)
{
    if (size < 1 || stride < 1 || size > INT32_MAX || stride > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "avg_pool2d: size and stride must be in [1, 2^31)");
        return -1;
    }
    *s = (ga_pool_shape){.n = x->shape[0], .c = x->shape[1], .h = x->shape[2], .w = x->shape[3],
                         .size = size, .stride = stride};
    if (s->n == 0) {
        PyErr_SetString(PyExc_ValueError, "avg_pool2d: empty batch");
        return -1;
    }
    if (s->c <= 0 || size > s->h || size > s->w) {
        PyErr_Format(PyExc_ValueError, "avg_pool2d: window %ld does not fit the input %lldx%lld", size,
                     (long long)s->h, (long long)s->w);
        return -1;
    }
    s->p = (s->h - size) / stride + 1;
    s->q = (s->w - size) / stride + 1;
    return 0;
}

/* avg_pool2d(x, size, stride, device) -> y (N, C, P, Q) */
static PyObject *op_avg_pool2d(PyObject *self, PyObject *args)
{
    PyObject *xo, *out = NULL;
    long size, stride;
    const char *device;
    op_ctx c;
    op_in x = {0};
    if (!PyArg_ParseTuple(args, "Olls:avg_pool2d", &xo, &size, &stride, &device) || ctx_init(&c, device) < 0)
        return NULL;
    if (in_get(&c, &x, xo, "x", 4) < 0)
        goto fail;
    ga_pool_shape s;
    if (avg_pool_geometry(&s, &x, size, stride) < 0)
        goto fail;
    int64_t yshape[4] = {s.n, s.c, s.p, s.q};
    float *y;
    if (!(out = out_new(&c, 4, yshape, &y)))
        goto fail;
    RUN(&c, BE->avgpool_forward(y, x.ptr, &s));
    in_free(&x);
    return out_done(&c, out);
fail:
    Py_XDECREF(out);
    in_free(&x);
    return NULL;
}

/* avg_pool2d_backward(x, dy, size, stride, device) -> dx (x's shape; x gives only the shape) */
static PyObject *op_avg_pool2d_backward(PyObject *self, PyObject *args)
{
    PyObject *xo, *dyo, *out = NULL;
    long size, stride;
    const char *device;
    op_ctx c;
    op_in x = {0}, dy = {0};
    if (!PyArg_ParseTuple(args, "OOlls:avg_pool2d_backward", &xo, &dyo, &size, &stride, &device) ||
        ctx_init(&c, device) < 0)
        return NULL;
    if (in_get(&c, &x, xo, "x", 4) < 0)
        goto fail;
    ga_pool_shape s;
    if (avg_pool_geometry(&s, &x, size, stride) < 0 || in_get(&c, &dy, dyo, "dy", 4) < 0)
        goto fail;
    int64_t yshape[4] = {s.n, s.c, s.p, s.q};
    if (memcmp(dy.shape, yshape, sizeof yshape) != 0) {
        PyErr_Format(PyExc_ValueError, "avg_pool2d_backward: dy must have shape (%lld, %lld, %lld, %lld)",
                     (long long)s.n, (long long)s.c, (long long)s.p, (long long)s.q);
        goto fail;
    }
    float *dx;
    if (!(out = out_new(&c, 4, x.shape, &dx)))
        goto fail;
    RUN(&c, BE->avgpool_backward(dx, dy.ptr, &s));
    in_free(&x);
    in_free(&dy);
    return out_done(&c, out);
fail:
    Py_XDECREF(out);
    in_free(&x);
    in_free(&dy);
    return NULL;
}

/* global_max_pool2d(x, device) -> y (N, C); with dy (N, C) given -> dx (N, C, H, W). */
static PyObject *global_max_pool_op(PyObject *args, int backward)
{
    PyObject *xo, *dyo = NULL, *out = NULL, *tmp = NULL;
    const char *device;
    op_ctx c;
    op_in x = {0}, dy = {0};
    int32_t *arg = NULL;
    int ok = backward ? PyArg_ParseTuple(args, "OOs:global_max_pool2d_backward", &xo, &dyo, &device)
                      : PyArg_ParseTuple(args, "Os:global_max_pool2d", &xo, &device);
    if (!ok || ctx_init(&c, device) < 0)
        return NULL;
    if (in_get(&c, &x, xo, "x", 4) < 0)
        goto fail;
    const int64_t nc = x.shape[0] * x.shape[1], hw = x.shape[2] * x.shape[3];
    int64_t yshape[2] = {x.shape[0], x.shape[1]};
    if (x.shape[0] == 0) {
        PyErr_SetString(PyExc_ValueError, "global_max_pool2d: empty batch");
        goto fail;
    }
    if (x.shape[1] <= 0 || hw <= 0) {
        PyErr_SetString(PyExc_ValueError, "global_max_pool2d: zero-sized channels or image");
        goto fail;
    }
    if (backward) {
        if (in_get(&c, &dy, dyo, "dy", 2) < 0)
            goto fail;
        if (memcmp(dy.shape, yshape, sizeof yshape) != 0) {
            PyErr_Format(PyExc_ValueError, "global_max_pool2d_backward: dy must have shape (%lld, %lld)",
                         (long long)yshape[0], (long long)yshape[1]);
            goto fail;
        }
    }
    if (!(arg = scratch(&c, (size_t)nc * sizeof(int32_t))))
        goto fail;
    if (backward) {
        float *dx;
        GaTensor *t = ga_tensor_new(&c.dev, 2, yshape);
        if (!(tmp = (PyObject *)t) || !(out = out_new(&c, 4, x.shape, &dx)))
            goto fail;
        RUN(&c, BE->global_maxpool_forward(t->data, arg, x.ptr, nc, hw));
        RUN(&c, BE->global_maxpool_backward(dx, dy.ptr, arg, nc, hw));
    } else {
        float *y;
        if (!(out = out_new(&c, 2, yshape, &y)))
            goto fail;
        RUN(&c, BE->global_maxpool_forward(y, arg, x.ptr, nc, hw));
    }
    BE->release(arg);
    Py_XDECREF(tmp);
    in_free(&x);
    in_free(&dy);
    return out_done(&c, out);
fail:
    BE->release(arg);
    Py_XDECREF(tmp);
    Py_XDECREF(out);
    in_free(&x);
    in_free(&dy);
    return NULL;
}

static PyObject *op_global_max_pool2d(PyObject *self, PyObject *args) { return global_max_pool_op(args, 0); }
static PyObject *op_global_max_pool2d_backward(PyObject *self, PyObject *args)
{
    return global_max_pool_op(args, 1);
}

PyMethodDef ga_ops_methods[] = {
    {"op_matmul", op_matmul, METH_VARARGS, NULL},
    {"op_conv2d", op_conv2d, METH_VARARGS, NULL},
    {"op_conv2d_backward", op_conv2d_backward, METH_VARARGS, NULL},
    {"op_max_pool2d", op_max_pool2d, METH_VARARGS, NULL},
    {"op_max_pool2d_backward", op_max_pool2d_backward, METH_VARARGS, NULL},
    {"op_activation", op_activation, METH_VARARGS, NULL},
    {"op_activation_backward", op_activation_backward, METH_VARARGS, NULL},
    {"op_dropout", op_dropout, METH_VARARGS, NULL},
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
