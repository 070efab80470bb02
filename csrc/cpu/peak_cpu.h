/* FP32 FMA-throughput probe (peak_cpu.c). */
#ifndef GA_PEAK_CPU_H
#define GA_PEAK_CPU_H

#include "core/status.h"

/* *gflops = measured FP32 GFLOP/s of `threads` threads running FMAs for about
 * `seconds`; *isa names the vector width used ("avx512", "avx2", "scalar"). */
ga_status ga_cpu_peak_gflops(double *gflops, const char **isa, int threads, double seconds);

#endif
