/* CPU kernels: one file per op family, twins of csrc/cuda/ (same names with
 * _cpu / _cuda, prototypes generated from core/kernels.def, where each
 * kernel's shapes and semantics are documented). */
#ifndef GA_KERNELS_CPU_H
#define GA_KERNELS_CPU_H

#include "core/backend.h"
#include "core/checks.h"
#include "cpu/gemm_cpu.h"

/* ga_<name>_cpu for every kernel of core/kernels.def (gemm: gemm_cpu.c). */
#define GA_KERNEL(name, args) ga_status ga_##name##_cpu args;
#define GA_KERNEL_OPT GA_KERNEL
#include "core/kernels.def"
#undef GA_KERNEL
#undef GA_KERNEL_OPT

/* elementwise_cpu.c, shared with the conv epilogues: y[i] = act(x[i] + bias)
 * for i < n, serial (y may alias x). */
void ga_act_span_cpu(float *y, const float *x, float bias, int64_t n, ga_act act);

/* pool_cpu.c, shared with the fused conv + pool of conv_cpu.c */
/* One output row of a 2x2, stride-2 max pool of act(v + bias) (act = ReLU when
 * relu, else linear) over the input rows r0 and r0 + q: y, arg (flat index:
 * base + offset in the rows) for qq outputs. The kernel suits this CPU
 * (AVX-512 or portable). */
typedef void (*ga_pool2x2_row_fn)(float *y, int32_t *arg, const float *r0, int64_t q, int64_t qq, int32_t base,
                                  float bias, int relu);
ga_pool2x2_row_fn ga_pool2x2_row_kernel(void);

#endif
