/* CPU single-precision GEMM, BLIS design.
 *
 * One driver (gemm_cpu.c) packs and blocks the operands and runs OpenMP over
 * the macro loops; small register-blocked micro-kernels, one per instruction
 * set (gemm_ukernel_avx512.c, gemm_ukernel_avx2.c, gemm_ukernel_generic.c),
 * do the arithmetic. The micro-kernel is chosen at run time by CPUID, or forced
 * with the environment variable GPUACCEL_ISA (read once) or ga_gemm_cpu_set_isa. */
#ifndef GA_GEMM_CPU_H
#define GA_GEMM_CPU_H

#include <stdint.h>

#include "core/backend.h"

/* c (m, n) = alpha * op(a) op(b) + beta * c, row-major with leading dims;
 * a is (m, k) with row stride lda, or (k, m) when trans_a; b is (k, n) or
 * (n, k) when trans_b. beta == 0: c is overwritten (NaN in old c not kept).
 * m, n or k may be 0 (k == 0: c = beta * c).
 * variant: GA_VARIANT_FAST (packed, blocked, SIMD) or GA_VARIANT_REF (simple
 * loops, kept as the reference); anything else is GA_ERR_VALUE. */
ga_status ga_gemm_cpu(float *c, const float *a, const float *b, int trans_a, int trans_b,
                      int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc,
                      float alpha, float beta, int variant);
/* The same on at most `max_threads` threads; 1 runs on the calling thread
 * (for callers that are already inside a parallel region). */
ga_status ga_gemm_cpu_threads(float *c, const float *a, const float *b, int trans_a, int trans_b,
                              int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc,
                              float alpha, float beta, int variant, int max_threads);

/* The micro-kernel in use: "avx512", "avx2" or "generic". */
const char *ga_gemm_cpu_isa(void);

/* The micro-kernel's tile: MR rows x NR columns of C (callers that can choose
 * between computing a product or its transpose pick the one that pads less). */
void ga_gemm_cpu_tile(int *mr, int *nr);

/* Force one ("avx512" | "avx2" | "generic" | "auto"); GA_ERR_VALUE if the name
 * is unknown or this CPU (or this build) cannot run it. */
ga_status ga_gemm_cpu_set_isa(const char *isa);

/* ---- internal: the driver <-> micro-kernel contract ----
 *
 * A micro-kernel computes one MR x NR tile of C from packed panels:
 *   a: kc x MR, stored k-major (a[p * MR + i]), alpha already folded in;
 *   b: kc x NR, stored k-major (b[p * NR + j]);
 *   c (mr, nr) with row stride ldc, mr <= MR, nr <= NR (edge tiles are packed
 *   with zero fill, so only the write-back is partial);
 *   c = acc + beta * c, and beta == 0 never reads c. kc >= 1. */
typedef void (*ga_gemm_ukernel_fn)(int64_t kc, const float *a, const float *b, float *c,
                                   int64_t ldc, float beta, int64_t mr, int64_t nr);

/* Transposing pack (optional, per ISA): d[p * width + r] = alpha * s[r * lds + p]
 * for r < rows, p < kc; rows <= r < width are zero-filled. Packs row-major A
 * and transposed B, whose micro-panels are columns of the source. */
typedef void (*ga_gemm_pack_t_fn)(float *d, int64_t width, const float *s, int64_t lds,
                                  int64_t rows, int64_t kc, float alpha);

typedef struct {
    const char *name;
    int mr, nr;
    ga_gemm_ukernel_fn fn;
    ga_gemm_pack_t_fn pack_t; /* NULL: the driver's portable loop */
} ga_gemm_ukernel;

/* The micro-kernel in use, for callers that pack their operands themselves
 * (Winograd's transform-domain products: the filters are packed once per call). */
const ga_gemm_ukernel *ga_gemm_cpu_ukernel(void);

extern const ga_gemm_ukernel ga_gemm_ukernel_generic;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define GA_GEMM_HAVE_X86 1
extern const ga_gemm_ukernel ga_gemm_ukernel_avx2;
extern const ga_gemm_ukernel ga_gemm_ukernel_avx512;
/* AVX2 8x8-transpose packing, shared by the AVX2 and AVX-512 kernels. */
void ga_gemm_pack_t_avx2(float *d, int64_t width, const float *s, int64_t lds, int64_t rows,
                         int64_t kc, float alpha);
#endif

#endif
