/* Portable C micro-kernel: 4 x 8 tile of C, written as fixed-size loops over a
 * local accumulator array so that the compiler keeps it in vector registers
 * (SSE2 on baseline x86-64, NEON on arm64). Always built; the fallback when no
 * SIMD kernel fits the CPU. */
#include "cpu/gemm_cpu.h"

#define MR 4 /* 6 and 8 measured slower with SSE2: they run out of the 16 xmm */
#define NR 8

static void ukernel_generic(int64_t kc, const float *restrict a, const float *restrict b,
                            float *restrict c, int64_t ldc, float beta, int64_t mr, int64_t nr)
{
    float acc[MR][NR] = {{0}};
    for (int64_t p = 0; p < kc; p++) {
        for (int i = 0; i < MR; i++) {
            const float ai = a[i];
            for (int j = 0; j < NR; j++)
                acc[i][j] += ai * b[j];
        }
        a += MR;
        b += NR;
    }
    for (int64_t i = 0; i < mr; i++) {
        float *ci = c + i * ldc;
        if (beta == 0.0f)
            for (int64_t j = 0; j < nr; j++)
                ci[j] = acc[i][j];
        else
            for (int64_t j = 0; j < nr; j++)
                ci[j] = acc[i][j] + beta * ci[j];
    }
}

const ga_gemm_ukernel ga_gemm_ukernel_generic = {"generic", MR, NR, ukernel_generic, NULL};
