/* AVX2 + FMA micro-kernel: 6 x 16 tile of C in 12 ymm accumulators.
 *
 * Per k step: two 8-float loads of packed B, six broadcasts of packed A,
 * twelve FMAs; 12 accumulators + 2 B + 1-2 broadcast registers fit the 16 ymm.
 * Compiled with a target attribute, not -march, so the module still loads on
 * older CPUs; the driver only calls it after a CPUID check. */
#include "cpu/gemm_cpu.h"

#ifdef GA_GEMM_HAVE_X86

#include <immintrin.h>

#define MR 6
#define NR 16

#define TARGET __attribute__((target("avx2,fma")))

TARGET static inline void store_row_full(float *c, __m256 acc, float beta)
{
    if (beta != 0.0f)
        acc = _mm256_fmadd_ps(_mm256_set1_ps(beta), _mm256_loadu_ps(c), acc);
    _mm256_storeu_ps(c, acc);
}

TARGET static void ukernel_avx2(int64_t kc, const float *restrict a, const float *restrict b,
                                float *restrict c, int64_t ldc, float beta, int64_t mr,
                                int64_t nr)
{
    __m256 acc0[MR], acc1[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) {
        acc0[i] = _mm256_setzero_ps();
        acc1[i] = _mm256_setzero_ps();
    }
    for (int64_t i = 0; i < mr; i++)
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);

#pragma GCC unroll 2
    for (int64_t p = 0; p < kc; p++) {
        __m256 b0 = _mm256_load_ps(b);
        __m256 b1 = _mm256_load_ps(b + 8);
        _mm_prefetch((const char *)(a + 8 * MR), _MM_HINT_T0);
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) {
            __m256 ai = _mm256_broadcast_ss(a + i);
            acc0[i] = _mm256_fmadd_ps(ai, b0, acc0[i]);
            acc1[i] = _mm256_fmadd_ps(ai, b1, acc1[i]);
        }
        a += MR;
        b += NR;
    }

    if (mr == MR && nr == NR) {
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) {
            store_row_full(c + i * ldc, acc0[i], beta);
            store_row_full(c + i * ldc + 8, acc1[i], beta);
        }
        return;
    }
    /* Edge tile: spill the accumulators and write back only mr x nr.
     * (AVX2 masked stores are slow on some CPUs; edges are rare.) */
    _Alignas(32) float t[MR * NR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) {
        _mm256_store_ps(t + i * NR, acc0[i]);
        _mm256_store_ps(t + i * NR + 8, acc1[i]);
    }
    for (int64_t i = 0; i < mr; i++) {
        float *ci = c + i * ldc;
        if (beta == 0.0f)
            for (int64_t j = 0; j < nr; j++)
                ci[j] = t[i * NR + j];
        else
            for (int64_t j = 0; j < nr; j++)
                ci[j] = t[i * NR + j] + beta * ci[j];
    }
}

/* Transposing pack (see gemm_cpu.h): 8 source rows x 8 k at a time through
 * an in-register 8x8 transpose, so each load and store moves 8 floats instead
 * of the scalar loop's one. Ragged row groups and the k tail go scalar. */
TARGET void ga_gemm_pack_t_avx2(float *d, int64_t width, const float *s, int64_t lds,
                                int64_t rows, int64_t kc, float alpha)
{
    const __m256 va = _mm256_set1_ps(alpha);
    int64_t r0 = 0;
    for (; r0 + 8 <= rows; r0 += 8) {
        const float *s0 = s + r0 * lds;
        int64_t p = 0;
        for (; p + 8 <= kc; p += 8) {
            __m256 r[8], t[8];
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++)
                r[i] = _mm256_loadu_ps(s0 + i * lds + p);
            /* 8x8 transpose: unpack pairs, then 4-blocks, then 128-bit halves */
#pragma GCC unroll 4
            for (int i = 0; i < 8; i += 2) {
                t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
                t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
            }
#pragma GCC unroll 2
            for (int i = 0; i < 8; i += 4) {
                r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
                r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
                r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
                r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
            }
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++) {
                t[i] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x20);
                t[i + 4] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x31);
            }
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++)
                _mm256_storeu_ps(d + (p + i) * width + r0, _mm256_mul_ps(va, t[i]));
        }
        for (; p < kc; p++)
            for (int64_t i = 0; i < 8; i++)
                d[p * width + r0 + i] = alpha * s0[i * lds + p];
    }
    for (int64_t r = r0; r < rows; r++)
        for (int64_t p = 0; p < kc; p++)
            d[p * width + r] = alpha * s[r * lds + p];
    for (int64_t r = rows; r < width; r++)
        for (int64_t p = 0; p < kc; p++)
            d[p * width + r] = 0.0f;
}

const ga_gemm_ukernel ga_gemm_ukernel_avx2 = {"avx2", MR, NR, ukernel_avx2, ga_gemm_pack_t_avx2};

#endif /* GA_GEMM_HAVE_X86 */
