/* The implicit-GEMM convolution (conv_implicit_cuda.cu), called by the conv
 * entry points of conv_cuda.cu (GA_VARIANT_IMPLICIT). Shapes in core/backend.h.
 *
 * A gradient of the conv output is passed with its layout: element (img, k, e),
 * e in [0, p q), is d[img * s_img + k * s_k + e]. NCHW dy is (s_img, s_k) =
 * (k p q, p q); the (k, n p q) matrix the fused pool backward builds is
 * (p q, n p q). The sizes must fit the kernels' 32-bit index decoding
 * (ga_conv_implicit_fits); every function checks and returns a status. */
#ifndef GA_CONV_CUDA_H
#define GA_CONV_CUDA_H

#include "cuda/cuda_common.h"

/* GA_OK when s fits the implicit kernels (per-image sizes, c r s, n p q and
 * n h w below 2^31), else an error naming the im2col kernel instead. */
ga_status ga_conv_implicit_fits(const char *op, const ga_conv_shape *s);

/* raw == 0: y (n, k, p, q) = act(w * patches(x) + b) (b may be NULL);
 * raw == 1: y (k, n p q) = w * patches(x), the plain sums (act and b unused),
 * for an epilogue that reads them (the fused max pool). */
ga_status ga_conv_implicit_forward(float *y, const float *x, const float *w, const float *b, ga_act act,
                                   const ga_conv_shape *s, int raw);

/* Forward fused with the 2x2, stride-2 max pool ps that follows: y, arg
 * (n, k, p/2, q/2) straight from the GEMM's registers (bias, activation, then
 * the CPU's max rule); the conv output is never stored. */
ga_status ga_conv_implicit_forward_pool2(float *y, int32_t *arg, const float *x, const float *w, const float *b,
                                         ga_act act, const ga_conv_shape *s, const ga_pool_shape *ps);

/* dx (n, c, h, w) = the transposed convolution of d with w: each input pixel
 * sums w * d over the outputs whose windows hold it (col2im fused: no d(col)). */
ga_status ga_conv_implicit_dx(float *dx, const float *w, const float *d, int64_t s_img, int64_t s_k,
                              const ga_conv_shape *s);

/* dw (k, c, r, s) = d * patches(x)^T, the reduction over n p q split into
 * fixed slices reduced in a fixed order (deterministic for a given SM count). */
ga_status ga_conv_implicit_dw(float *dw, const float *x, const float *d, int64_t s_img, int64_t s_k,
                              const ga_conv_shape *s);

#endif
