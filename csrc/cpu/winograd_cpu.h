/* Winograd's minimal filtering F(m x m, 3 x 3) for 3x3, stride-1 convolutions
 * on the CPU (winograd_cpu.c), m = 2 or 4: the forward pass (optionally with a
 * max pool fused, as the im2col path), the data gradient and the weight
 * gradient. Internal to csrc/cpu/: conv_cpu.c dispatches here for
 * GA_VARIANT_WINOGRAD2 / GA_VARIANT_WINOGRAD4. */
#ifndef GA_WINOGRAD_CPU_H
#define GA_WINOGRAD_CPU_H

#include "cpu/kernels_cpu.h"

/* Both need ga_winograd_shape(s) (core/backend.h). */
/* y = act(conv(x, w) + b) (ps NULL), or the fused max pool's y and arg. */
ga_status ga_winograd_forward_cpu(float *y, int32_t *arg, const ga_pool_shape *ps, const float *x, const float *w,
                                  const float *b, ga_act act, const ga_conv_shape *s, int m);
/* dx, dw, db as conv2d_backward (dx or dw NULL: skipped; db only with dw); with
 * ps, dy is the fused pool's output gradient (ypool, arg: its forward). */
ga_status ga_winograd_backward_cpu(float *dx, float *dw, float *db, const float *x, const float *w, const float *dy,
                                   const float *ypool, const int32_t *arg, ga_act act, const ga_conv_shape *s,
                                   const ga_pool_shape *ps, int m);

#endif
