/* AVX-512 micro-kernel: 8 x 32 tile of C in 16 zmm accumulators.
 *
 * Per k step: two 16-float loads of packed B, eight broadcasts of packed A,
 * sixteen FMAs. MR = 8 measured faster than 12 or 14 on Zen 4 (whose 512-bit
 * FMAs issue at one per cycle, so 16 independent chains already hide the
 * latency) and divides the CNN's m = 32, 64, 128, 288 without ragged tiles.
 * (Build with -DGA_AVX512_MR=12 or 14 to try the taller tiles; NR stays 32.)
 * Compiled with a target attribute, not -march, so the module still loads on
 * CPUs without AVX-512; the driver only calls it after a CPUID check. */
#include "cpu/gemm_cpu.h"

#ifdef GA_GEMM_HAVE_X86

#include <immintrin.h>

#ifndef GA_AVX512_MR
#define GA_AVX512_MR 8
#endif
#define MR GA_AVX512_MR
#define NR 32

#define TARGET __attribute__((target("avx512f")))

/* c = acc + beta * c over the lanes in mask (beta == 0: c is not read). */
TARGET static inline void store_row(float *c, __m512 acc, float beta, __mmask16 mask)
{
    if (beta != 0.0f)
        acc = _mm512_fmadd_ps(_mm512_set1_ps(beta), _mm512_maskz_loadu_ps(mask, c), acc);
    _mm512_mask_storeu_ps(c, mask, acc);
}

TARGET static inline void store_row_full(float *c, __m512 acc, float beta)
{
    if (beta != 0.0f)
        acc = _mm512_fmadd_ps(_mm512_set1_ps(beta), _mm512_loadu_ps(c), acc);
    _mm512_storeu_ps(c, acc);
}

TARGET static void ukernel_avx512(int64_t kc, const float *restrict a, const float *restrict b,
                                  float *restrict c, int64_t ldc, float beta, int64_t mr,
                                  int64_t nr)
{
    __m512 acc0[MR], acc1[MR];
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
        acc0[i] = _mm512_setzero_ps();
        acc1[i] = _mm512_setzero_ps();
    }
    /* Warm the C tile into cache while the k loop runs. */
    for (int64_t i = 0; i < mr; i++)
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);

#pragma GCC unroll 2
    for (int64_t p = 0; p < kc; p++) {
        __m512 b0 = _mm512_load_ps(b);
        __m512 b1 = _mm512_load_ps(b + 16);
        _mm_prefetch((const char *)(a + 8 * MR), _MM_HINT_T0);
#pragma GCC unroll 16
        for (int i = 0; i < MR; i++) {
            __m512 ai = _mm512_set1_ps(a[i]);
            acc0[i] = _mm512_fmadd_ps(ai, b0, acc0[i]);
            acc1[i] = _mm512_fmadd_ps(ai, b1, acc1[i]);
        }
        a += MR;
        b += NR;
    }

    if (mr == MR && nr == NR) {
#pragma GCC unroll 16
        for (int i = 0; i < MR; i++) {
            store_row_full(c + i * ldc, acc0[i], beta);
            store_row_full(c + i * ldc + 16, acc1[i], beta);
        }
        return;
    }
    /* Edge tile: rows cut at mr, lanes masked at nr. */
    __mmask16 m0 = nr >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nr) - 1u);
    __mmask16 m1 = nr >= 32 ? (__mmask16)0xFFFF
                 : nr > 16  ? (__mmask16)((1u << (nr - 16)) - 1u)
                            : (__mmask16)0;
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
        if (i < mr) {
            store_row(c + i * ldc, acc0[i], beta, m0);
            if (m1)
                store_row(c + i * ldc + 16, acc1[i], beta, m1);
        }
    }
}

const ga_gemm_ukernel ga_gemm_ukernel_avx512 = {"avx512", MR, NR, ukernel_avx512,
                                              ga_gemm_pack_t_avx2};

#endif /* GA_GEMM_HAVE_X86 */
