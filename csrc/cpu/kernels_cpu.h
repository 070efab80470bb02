/* CPU kernels: one file per op family, twins of csrc/cuda/ (same names with
 * _cpu / _cuda, same argument order as the ga_backend table in core/backend.h,
 * where each function's shapes and semantics are documented). */
#ifndef GA_KERNELS_CPU_H
#define GA_KERNELS_CPU_H

#include "core/backend.h"
#include "cpu/gemm_cpu.h"

/* conv_cpu.c */
ga_status ga_im2col_cpu(float *col, const float *x, const ga_conv_shape *s);
ga_status ga_conv2d_forward_cpu(float *y, float *col, float *ws, const float *x, const float *w,
                                const float *b, int relu, const ga_conv_shape *s, int variant);
ga_status ga_conv2d_backward_cpu(float *dx, float *dw, float *db, float *ws, const float *x,
                                 float *col, const float *w, const float *dy,
                                 const ga_conv_shape *s, int variant);
ga_status ga_conv2d_pool_forward_cpu(float *y, int32_t *arg, float *col, float *ws, const float *x,
                                     const float *w, const float *b, int relu, const ga_conv_shape *cs,
                                     const ga_pool_shape *ps);
ga_status ga_conv2d_pool_backward_cpu(float *dx, float *dw, float *db, float *ws, const float *x, float *col,
                                      const float *w, const float *dy, const float *y, const int32_t *arg,
                                      int relu, const ga_conv_shape *cs, const ga_pool_shape *ps);

/* pool_cpu.c */
ga_status ga_check_pool_shape(const ga_pool_shape *s);
/* One output row of a 2x2, stride-2 max pool of act(v + bias) (act = ReLU when
 * relu) over the input rows r0 and r0 + q: y, arg (flat index: base + offset
 * in the rows) for qq outputs. The kernel suits this CPU (AVX-512 or portable). */
typedef void (*ga_pool2x2_row_fn)(float *y, int32_t *arg, const float *r0, int64_t q, int64_t qq, int32_t base,
                                  float bias, int relu);
ga_pool2x2_row_fn ga_pool2x2_row_kernel(void);
ga_status ga_maxpool_forward_cpu(float *y, int32_t *arg, const float *x, const ga_pool_shape *s);
ga_status ga_maxpool_backward_cpu(float *dx, const float *dy, const int32_t *arg,
                                  const ga_pool_shape *s);

/* elementwise_cpu.c */
ga_status ga_bias_act_cpu(float *y, const float *b, int64_t rows, int64_t cols, int relu);
ga_status ga_relu_forward_cpu(float *y, const float *x, int64_t n);
ga_status ga_relu_backward_cpu(float *dx, const float *y, const float *dy, int64_t n);
ga_status ga_sum_rows_cpu(float *out, const float *x, int64_t rows, int64_t cols);
ga_status ga_mul_cpu(float *y, const float *a, const float *b, int64_t n);
ga_status ga_dropout_forward_cpu(float *y, float *mask, const float *x, int64_t n, float rate,
                                 uint64_t seed);

/* loss_cpu.c */
ga_status ga_softmax_xent_cpu(float *stats, float *dlogits, const float *logits,
                              const int32_t *labels, int64_t n, int64_t classes, float grad_scale);

/* optim_cpu.c */
ga_status ga_sgd_update_cpu(float *w, float *vel, const float *g, int64_t n, float lr,
                            float momentum, float weight_decay, int nesterov);
ga_status ga_adam_update_cpu(float *w, float *m, float *v, const float *g, int64_t n, float lr,
                             float beta1, float beta2, float eps, float weight_decay, int64_t t);

/* norm_cpu.c */
ga_status ga_batchnorm_forward_cpu(float *y, float *save_mean, float *save_invstd, float *run_mean,
                                   float *run_var, const float *x, const float *gamma,
                                   const float *beta, int64_t n, int64_t c, int64_t hw,
                                   float momentum, float eps, int training);
ga_status ga_batchnorm_backward_cpu(float *dx, float *dgamma, float *dbeta, const float *dy,
                                    const float *x, const float *gamma, const float *save_mean,
                                    const float *save_invstd, int64_t n, int64_t c, int64_t hw,
                                    int training);
ga_status ga_global_avgpool_forward_cpu(float *y, const float *x, int64_t nc, int64_t hw);
ga_status ga_global_avgpool_backward_cpu(float *dx, const float *dy, int64_t nc, int64_t hw);
ga_status ga_add_cpu(float *y, const float *a, const float *b, int64_t n);

#endif
