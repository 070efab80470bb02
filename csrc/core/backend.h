/* The device seam: one table of kernel entry points per device.
 *
 * csrc/net/ runs a network only through a `ga_backend`, never by calling a
 * device's kernels by name, so the CPU (csrc/cpu/, always built into
 * gpuaccel._C) and CUDA (csrc/cuda/, built into gpuaccel._cuda and handed to
 * _C at run time in a PyCapsule) are interchangeable. Every pointer passed to a
 * backend function is memory of that backend's device, except where a comment
 * says "host". All tensors are contiguous float32 unless noted, NCHW for
 * images, PyTorch layouts for weights: conv (K, C, R, S), dense (out, in).
 *
 * Every function returns GA_OK or an error status; on error the backend's own
 * last_error() holds the message (the CUDA module is a separate shared object
 * with its own copy of status.c, so the dispatcher copies the text across). */
#ifndef GA_BACKEND_H
#define GA_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define GA_BACKEND_ABI 4

/* Kernel variants, selectable for tests and benchmarks. */
enum {
    GA_VARIANT_FAST = 0, /* the tuned kernel (default)                      */
    GA_VARIANT_REF = 1,  /* the simple reference kernel kept beside it      */
    GA_VARIANT_BLAS = 2  /* vendor library (cuBLAS); CUDA only              */
};

/* Convolution geometry. x (n, c, h, w), w (k, c, r, s), y (n, k, p, q) with
 * p = (h + 2 pad - r) / stride + 1, q = (w + 2 pad - s) / stride + 1. */
typedef struct {
    int64_t n, c, h, w;
    int64_t k, r, s;
    int64_t stride, pad;
    int64_t p, q;
} ga_conv_shape;

/* Max-pool geometry: x (n, c, h, w) -> y (n, c, p, q), window size x size,
 * p = (h - size) / stride + 1 (no padding). */
typedef struct {
    int64_t n, c, h, w;
    int64_t size, stride;
    int64_t p, q;
} ga_pool_shape;

/* Scratch sizes (in floats) the conv kernels need, same on every device. */
static inline int64_t ga_conv_col_floats(const ga_conv_shape *s)
{
    return s->c * s->r * s->s * s->n * s->p * s->q; /* im2col (c r s, n p q) */
}
static inline int64_t ga_conv_fwd_ws_floats(const ga_conv_shape *s)
{
    return s->k * s->n * s->p * s->q; /* GEMM result (k, n p q) */
}
static inline int64_t ga_conv_bwd_ws_floats(const ga_conv_shape *s)
{
    /* dy as (k, n p q) and d(col) */
    return s->k * s->n * s->p * s->q + ga_conv_col_floats(s);
}

typedef struct ga_backend {
    int abi;                  /* GA_BACKEND_ABI */
    const char *name;         /* "cpu" or "cuda" */
    const char *(*last_error)(void);

    /* --- memory on this device (index selects the GPU; ignored on the CPU) --- */
    ga_status (*set_device)(int index);
    ga_status (*alloc)(void **p, size_t bytes); /* *p = NULL when bytes == 0 */
    void (*release)(void *p);                   /* NULL is fine */
    ga_status (*to_device)(void *dst, const void *host_src, size_t bytes);
    ga_status (*to_host)(void *host_dst, const void *src, size_t bytes);
    ga_status (*copy)(void *dst, const void *src, size_t bytes);
    ga_status (*zero)(void *p, size_t bytes);
    ga_status (*synchronize)(void);

    /* --- GEMM, row-major with leading dimensions ---
     * c (m, n) = alpha * op(a) op(b) + beta * c, op(a) (m, k), op(b) (k, n).
     * a is (m, k) with row stride lda, or (k, m) when trans_a; likewise b is
     * (k, n) or (n, k). beta == 0 overwrites c (NaNs in c are not kept). */
    ga_status (*gemm)(float *c, const float *a, const float *b, int trans_a, int trans_b,
                      int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc,
                      float alpha, float beta, int variant);

    /* --- elementwise and reductions --- */
    /* y (rows, cols) += b (cols) broadcast over rows (b may be NULL); relu. */
    ga_status (*bias_act)(float *y, const float *b, int64_t rows, int64_t cols, int relu);
    /* y = max(x, 0); y may alias x. */
    ga_status (*relu_forward)(float *y, const float *x, int64_t n);
    /* dx = dy where y > 0 else 0; dx may alias dy. */
    ga_status (*relu_backward)(float *dx, const float *y, const float *dy, int64_t n);
    /* out (cols) = sum over rows of x (rows, cols). */
    ga_status (*sum_rows)(float *out, const float *x, int64_t rows, int64_t cols);
    /* y = a * b elementwise; y may alias either. */
    ga_status (*mul)(float *y, const float *a, const float *b, int64_t n);

    /* --- convolution (zero padding) ---
     * col (c r s, n p q): im2col of x.
     * Forward: col = im2col(x); y = w * col (+ b, relu); ws: ga_conv_fwd_ws_floats.
     * Backward: dy must already hold the gradient after the activation.
     *   dw (k, c, r, s) = dy * col^T, db (k) = sums of dy (dw may be NULL for a
     *   frozen layer: then db and col are not used; db may be NULL),
     *   dx (n, c, h, w) = col2im(w^T * dy) (dx may be NULL: skipped);
     *   col is what forward left there (im2col of x; the fast variant reads col,
     *   the reference variant reads x); ws: ga_conv_bwd_ws_floats. */
    ga_status (*im2col)(float *col, const float *x, const ga_conv_shape *s);
    ga_status (*conv2d_forward)(float *y, float *col, float *ws, const float *x, const float *w,
                                const float *b, int relu, const ga_conv_shape *s, int variant);
    ga_status (*conv2d_backward)(float *dx, float *dw, float *db, float *ws, const float *x,
                                 float *col, const float *w, const float *dy,
                                 const ga_conv_shape *s, int variant);

    /* --- max pooling: arg (n, c, p, q) holds the flat h*w index of each max --- */
    ga_status (*maxpool_forward)(float *y, int32_t *arg, const float *x, const ga_pool_shape *s);
    /* dx (n, c, h, w) = scatter-add of dy through arg (dx is overwritten). */
    ga_status (*maxpool_backward)(float *dx, const float *dy, const int32_t *arg,
                                  const ga_pool_shape *s);

    /* --- dropout (inverted): mask[i] = u(seed, i) >= rate ? 1/(1-rate) : 0, y = x*mask.
     * u is ga_rng_uniform from core/rng.h, so both devices draw the same mask. */
    ga_status (*dropout_forward)(float *y, float *mask, const float *x, int64_t n, float rate,
                                 uint64_t seed);

    /* --- softmax cross-entropy over logits (n, classes), labels int32 in [0, classes)
     * (the caller checks the range). stats (2 floats, device): [0] += sum of the
     * n losses, [1] += number of rows whose argmax is the label (np.argmax's rule: the
     * first NaN, else the first maximum). dlogits (may be NULL) = (softmax - onehot) *
     * grad_scale. */
    ga_status (*softmax_xent)(float *stats, float *dlogits, const float *logits,
                              const int32_t *labels, int64_t n, int64_t classes,
                              float grad_scale);

    /* --- optimizers, fused over a flat parameter block of n floats ---
     * SGD (PyTorch form): g' = g + wd w; v = momentum v + g';
     *   w -= lr (nesterov ? g' + momentum v : v)   (v unused when momentum == 0)
     * Adam: g' = g + wd w; m = b1 m + (1-b1) g'; v = b2 v + (1-b2) g'^2;
     *   w -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps), t >= 1. */
    ga_status (*sgd_update)(float *w, float *vel, const float *g, int64_t n, float lr,
                            float momentum, float weight_decay, int nesterov);
    ga_status (*adam_update)(float *w, float *m, float *v, const float *g, int64_t n, float lr,
                             float beta1, float beta2, float eps, float weight_decay, int64_t t);

    /* --- batch normalisation over the channels of x (n, c, hw) (NCHW with hw = h w; a
     * vector batch (n, f) is (n, f, 1)); gamma, beta, run_mean, run_var, save_mean,
     * save_invstd are (c). Keras semantics:
     *   training:  mean, var = batch mean and biased variance over (n, hw) per channel;
     *              run_mean = momentum run_mean + (1 - momentum) mean (run_var likewise);
     *   inference: mean, var = run_mean, run_var (left unchanged);
     *   invstd = 1 / sqrt(var + eps); y = gamma (x - mean) invstd + beta.
     * save_mean / save_invstd receive the mean and invstd used (both modes), for backward. */
    ga_status (*batchnorm_forward)(float *y, float *save_mean, float *save_invstd, float *run_mean,
                                   float *run_var, const float *x, const float *gamma,
                                   const float *beta, int64_t n, int64_t c, int64_t hw,
                                   float momentum, float eps, int training);
    /* xhat = (x - save_mean) save_invstd, m = n hw.
     *   dgamma (c) = sum of dy xhat, dbeta (c) = sum of dy (either may be NULL: skipped);
     *   dx (n, c, hw) (may be NULL) = training:  gamma invstd / m (m dy - sum dy - xhat sum dy xhat)
     *                                 inference: gamma invstd dy  (statistics are constants). */
    ga_status (*batchnorm_backward)(float *dx, float *dgamma, float *dbeta, const float *dy,
                                    const float *x, const float *gamma, const float *save_mean,
                                    const float *save_invstd, int64_t n, int64_t c, int64_t hw,
                                    int training);
    /* --- global average pooling: x (nc, hw) -> y (nc) means; dx (nc, hw) = dy / hw. */
    ga_status (*global_avgpool_forward)(float *y, const float *x, int64_t nc, int64_t hw);
    ga_status (*global_avgpool_backward)(float *dx, const float *dy, int64_t nc, int64_t hw);
    /* y (n) = a + b elementwise; y may alias either (residual sums, gradient merges). */
    ga_status (*add)(float *y, const float *a, const float *b, int64_t n);

    /* --- optional fusions (NULL: the network runs the layers one by one) ---
     * conv2d (+ bias, relu) followed by max pool ps (ps input = conv output):
     * forward writes only the pool's y and arg, exactly as the two layers
     * would (the conv output is never stored); backward takes dy, y, arg of
     * the pool and gives dx, dw, db of the conv (the ReLU mask is y > 0).
     * col, ws: as conv2d_forward / conv2d_backward (fast variant). */
    ga_status (*conv2d_pool_forward)(float *y, int32_t *arg, float *col, float *ws, const float *x,
                                     const float *w, const float *b, int relu, const ga_conv_shape *cs,
                                     const ga_pool_shape *ps);
    ga_status (*conv2d_pool_backward)(float *dx, float *dw, float *db, float *ws, const float *x,
                                      float *col, const float *w, const float *dy, const float *y,
                                      const int32_t *arg, int relu, const ga_conv_shape *cs,
                                      const ga_pool_shape *ps);

    /* --- optional host staging (NULL on the CPU: its "device" is host memory, so
     * the network copies the caller's batch straight in and needs no staging) ---
     * host_alloc: *p = bytes of page-locked (pinned) host memory, host; NULL for
     * 0 bytes. host_free: releases it (NULL is fine); waits for the device.
     * to_device_async: dst (device) <- host_src (host memory from host_alloc),
     * queued on the stream every kernel of this device runs on, so kernels
     * launched after it see the data; returns before the copy is done: the
     * caller must leave host_src unchanged until its next synchronising call
     * (to_host, synchronize) has returned. */
    ga_status (*host_alloc)(void **p, size_t bytes);
    void (*host_free)(void *p);
    ga_status (*to_device_async)(void *dst, const void *host_src, size_t bytes);
} ga_backend;

/* The CPU table (csrc/cpu/backend_cpu.c). */
extern const ga_backend ga_cpu_backend;

#endif
