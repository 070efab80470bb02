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

#include "act.h"
#include "augment.h"
#include "status.h"

#define GA_BACKEND_ABI 10

/* Kernel variants, selectable for tests and benchmarks. */
enum {
    GA_VARIANT_FAST = 0, /* the tuned kernel (default)                      */
    GA_VARIANT_REF = 1,  /* the simple reference kernel kept beside it      */
    GA_VARIANT_BLAS = 2, /* vendor library (cuBLAS); CUDA only              */
    /* convolution only, CPU only: Winograd F(2x2, 3x3) and F(4x4, 3x3) for 3x3,
     * stride-1 convolutions with padding <= 2 (cpu/winograd_cpu.h) */
    GA_VARIANT_WINOGRAD2 = 3,
    GA_VARIANT_WINOGRAD4 = 4,
    /* convolution only, CUDA only: implicit GEMM, the im2col matrix gathered
     * tile by tile into shared memory and never stored (cuda/conv_implicit_cuda.cu);
     * col is neither written by the forward nor read by the backward */
    GA_VARIANT_IMPLICIT = 5,
    GA_VARIANTS = 6
};

/* Precision flags, OR'ed into a GEMM's variant (the low byte is the variant above,
 * so new variants never collide with a flag):
 *   GA_PRECISION_TF32  operands rounded to TF32 (1 sign, 8 exponent, 10 mantissa
 *                      bits; round to nearest, ties away from zero, as
 *                      cvt.rna.tf32.f32), products summed in fp32: NVIDIA tensor
 *                      cores, sm_80 and later. CUDA only; with FAST (the WMMA
 *                      kernel), BLAS (cuBLAS, CUBLAS_COMPUTE_32F_FAST_TF32) or REF
 *                      (one thread per output, the definition tests compare with).
 * Only gemm takes flags; every other kernel refuses a variant outside its enum. */
#define GA_PRECISION_TF32 0x100
#define GA_VARIANT_MASK 0xff
#define ga_variant_base(v) ((v) & GA_VARIANT_MASK)
#define ga_variant_tf32(v) (((v) & GA_PRECISION_TF32) != 0)
/* The flags a gemm variant may carry (anything else in the high bits is an error). */
#define GA_PRECISION_FLAGS GA_PRECISION_TF32

/* The convolution algorithms by the names of Python's kernel= (ops.conv2d and
 * Conv2D): a variant's first name is the one reports use; GA_CONV_AUTO asks
 * the device's conv2d_choose (measured once per shape). */
#define GA_CONV_AUTO (-1)
typedef struct {
    const char *name;
    int variant;
} ga_conv_kernel_name;
#define GA_CONV_KERNEL_NAMES                                                                       \
    {                                                                                              \
        {"auto", GA_CONV_AUTO}, {"im2col", GA_VARIANT_FAST}, {"winograd2", GA_VARIANT_WINOGRAD2},     \
            {"winograd4", GA_VARIANT_WINOGRAD4}, {"winograd", GA_VARIANT_WINOGRAD4},                  \
            {"implicit", GA_VARIANT_IMPLICIT}, {"ref", GA_VARIANT_REF}                                \
    }
#define GA_CONV_KERNEL_COUNT 7

/* Convolution geometry. x (n, c, h, w), w (k, c, r, s), y (n, k, p, q) with
 * p = (h + 2 pad - r) / stride + 1, q = (w + 2 pad - s) / stride + 1. */
typedef struct {
    int64_t n, c, h, w;
    int64_t k, r, s;
    int64_t stride, pad;
    int64_t p, q;
} ga_conv_shape;

/* Pool geometry (max and average): x (n, c, h, w) -> y (n, c, p, q), window size x size,
 * p = (h - size) / stride + 1 (no padding). */
typedef struct {
    int64_t n, c, h, w;
    int64_t size, stride;
    int64_t p, q;
} ga_pool_shape;

/* 1 when the Winograd variants apply to s: a 3x3 kernel, stride 1, padding 0,
 * 1 or 2 (the data gradient is the same correlation on dy, padded 2 - pad). */
static inline int ga_winograd_shape(const ga_conv_shape *s)
{
    return s->r == 3 && s->s == 3 && s->stride == 1 && s->pad >= 0 && s->pad <= 2;
}

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

    /* --- what the device is, for the bindings (NULL: not offered) ---
     * host_memory: 1 when device memory is host memory (the CPU): the bindings hand
     *   NumPy's buffers to the kernels without copies.
     * kernel_isa: the instruction set the hand-written kernels run ("avx512", ...);
     *   set_kernel_isa forces one ("auto": the best this machine has).
     * peak_gflops: measured FP32 FMA throughput of `threads` threads running for about
     *   `seconds`; *isa names the vector width used. */
    int host_memory;
    const char *(*kernel_isa)(void);
    ga_status (*set_kernel_isa)(const char *isa);
    ga_status (*peak_gflops)(double *gflops, const char **isa, int threads, double seconds);

    /* --- memory on this device (index selects the GPU; ignored on the CPU) --- */
    ga_status (*set_device)(int index);
    ga_status (*alloc)(void **p, size_t bytes); /* *p = NULL when bytes == 0 */
    void (*release)(void *p);                   /* NULL is fine */
    ga_status (*to_device)(void *dst, const void *host_src, size_t bytes);
    ga_status (*to_host)(void *host_dst, const void *src, size_t bytes);
    ga_status (*copy)(void *dst, const void *src, size_t bytes);
    ga_status (*zero)(void *p, size_t bytes);
    ga_status (*synchronize)(void);

    /* --- the kernels (core/kernels.def documents each) --- */
#define GA_KERNEL(name, args) ga_status(*name) args;
#define GA_KERNEL_OPT GA_KERNEL
#include "kernels.def"
#undef GA_KERNEL
#undef GA_KERNEL_OPT

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

    /* --- optional recording of work as a graph (NULL on the CPU) ---
     * graph_begin: what this host thread queues on the device's stream from now on
     *   is recorded, not run, until graph_end, which hands the recording back in
     *   *graph ready to run (on failure nothing is kept and recording has ended).
     *   No synchronising call (to_host, synchronize) and no allocation may happen
     *   in between.
     * graph_launch: queues a recorded graph's work on the stream, in its order,
     *   as if it were queued again; graph_free releases one (NULL is fine).
     * graph_generation: changes whenever memory the backend gives its kernels by
     *   itself (the split-K scratch) moves; a graph recorded under another
     *   generation may point at freed memory and must be recorded again. */
    ga_status (*graph_begin)(void);
    ga_status (*graph_end)(void **graph);
    ga_status (*graph_launch)(void *graph);
    void (*graph_free)(void *graph);
    uint64_t (*graph_generation)(void);
} ga_backend;

/* The CPU table (csrc/cpu/backend_cpu.c). */
extern const ga_backend ga_cpu_backend;

#endif
