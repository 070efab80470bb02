/* Max and average pooling on the CPU. Shapes in core/backend.h. Parallel over
 * (n, c) planes: each thread owns whole planes, so the backward scatters need
 * no atomics even when windows overlap. */
#include "cpu/kernels_cpu.h"

#include <float.h>
#include <string.h>

#ifdef GA_GEMM_HAVE_X86
#include <immintrin.h>
#endif

#include "cpu/omp_util.h"

/* One output row of a 2x2, stride-2 max pool over bias + ReLU of the input
 * rows r0 and r0 + q: branch-free selects, so it vectorises (the generic loop
 * below does not). Ties keep the first maximum in window order;
 * arg is relative to the plane (base = offset of r0). */
GA_SIMD_CLONES
static void pool2x2_row(float *restrict y, int32_t *restrict arg, const float *restrict r0, int64_t q,
                        int64_t qq, int32_t base, float bias, int relu)
{
    const float *restrict r1 = r0 + q;
    const int32_t w = (int32_t)q;
    for (int32_t j = 0; j < (int32_t)qq; j++) {
        float v0 = r0[2 * j] + bias, v1 = r0[2 * j + 1] + bias, v2 = r1[2 * j] + bias, v3 = r1[2 * j + 1] + bias;
        if (relu) { /* as relu_forward: v > 0 ? v : 0 (NaN -> 0) */
            v0 = v0 > 0.0f ? v0 : 0.0f;
            v1 = v1 > 0.0f ? v1 : 0.0f;
            v2 = v2 > 0.0f ? v2 : 0.0f;
            v3 = v3 > 0.0f ? v3 : 0.0f;
        }
        float m = v0;
        int32_t at = base + 2 * j;
        at = v1 > m ? base + 2 * j + 1 : at;
        m = v1 > m ? v1 : m;
        at = v2 > m ? base + w + 2 * j : at;
        m = v2 > m ? v2 : m;
        at = v3 > m ? base + w + 2 * j + 1 : at;
        m = v3 > m ? v3 : m;
        y[j] = m;
        arg[j] = at;
    }
}

#ifdef GA_GEMM_HAVE_X86

/* pool2x2_row with AVX-512: 16 outputs per step from two 32-float row pieces,
 * split into even and odd columns by permutes; masked loads and stores cover
 * the ragged end (rows here are short: 14 and 7 outputs in the reference CNN,
 * too short for the compiler's vector loop). Same compares as the scalar code
 * (ordered >, so NaN never wins), hence the same y and arg. */
__attribute__((target("avx512f")))
static void pool2x2_row_avx512(float *y, int32_t *arg, const float *r0, int64_t q, int64_t qq, int32_t base,
                               float bias, int relu)
{
    const float *r1 = r0 + q;
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    const __m512 vb = _mm512_set1_ps(bias), zero = _mm512_setzero_ps();
    for (int64_t j0 = 0; j0 < qq; j0 += 16) {
        const int cnt = qq - j0 < 16 ? (int)(qq - j0) : 16;
        const __mmask16 out_m = (__mmask16)((1u << cnt) - 1);
        const __mmask16 lo_m = (__mmask16)(cnt >= 8 ? 0xFFFFu : (1u << (2 * cnt)) - 1);
        const __mmask16 hi_m = (__mmask16)(cnt <= 8 ? 0u : (1u << (2 * cnt - 16)) - 1);
        const float *a = r0 + 2 * j0, *c = r1 + 2 * j0;
        const __m512 alo = _mm512_maskz_loadu_ps(lo_m, a), ahi = _mm512_maskz_loadu_ps(hi_m, a + 16);
        const __m512 clo = _mm512_maskz_loadu_ps(lo_m, c), chi = _mm512_maskz_loadu_ps(hi_m, c + 16);
        __m512 v0 = _mm512_add_ps(_mm512_permutex2var_ps(alo, even, ahi), vb);
        __m512 v1 = _mm512_add_ps(_mm512_permutex2var_ps(alo, odd, ahi), vb);
        __m512 v2 = _mm512_add_ps(_mm512_permutex2var_ps(clo, even, chi), vb);
        __m512 v3 = _mm512_add_ps(_mm512_permutex2var_ps(clo, odd, chi), vb);
        if (relu) { /* max(v, 0) returns 0 for NaN and -0, as v > 0 ? v : 0 does */
            v0 = _mm512_max_ps(v0, zero);
            v1 = _mm512_max_ps(v1, zero);
            v2 = _mm512_max_ps(v2, zero);
            v3 = _mm512_max_ps(v3, zero);
        }
        /* flat index of the top-left entry of each window */
        __m512i at = _mm512_add_epi32(_mm512_set1_epi32(base + 2 * (int32_t)j0), _mm512_slli_epi32(
                                          _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), 1));
        const __m512i one = _mm512_set1_epi32(1), down = _mm512_set1_epi32((int32_t)q);
        __m512 m = v0;
        __m512i best = at;
        __mmask16 gt = _mm512_cmp_ps_mask(v1, m, _CMP_GT_OQ);
        m = _mm512_mask_mov_ps(m, gt, v1);
        best = _mm512_mask_mov_epi32(best, gt, _mm512_add_epi32(at, one));
        gt = _mm512_cmp_ps_mask(v2, m, _CMP_GT_OQ);
        m = _mm512_mask_mov_ps(m, gt, v2);
        best = _mm512_mask_mov_epi32(best, gt, _mm512_add_epi32(at, down));
        gt = _mm512_cmp_ps_mask(v3, m, _CMP_GT_OQ);
        m = _mm512_mask_mov_ps(m, gt, v3);
        best = _mm512_mask_mov_epi32(best, gt, _mm512_add_epi32(at, _mm512_add_epi32(down, one)));
        _mm512_mask_storeu_ps(y + j0, out_m, m);
        _mm512_mask_storeu_epi32(arg + j0, out_m, best);
    }
}
#endif

/* The AVX-512 row kernel where the GEMM runs AVX-512 too (GPUACCEL_ISA=avx2 or
 * generic therefore also tests the portable one). */
ga_pool2x2_row_fn ga_pool2x2_row_kernel(void)
{
#ifdef GA_GEMM_HAVE_X86
    if (strcmp(ga_gemm_cpu_isa(), "avx512") == 0)
        return pool2x2_row_avx512;
#endif
    return pool2x2_row;
}

/* x (n, c, h, w) -> y, arg (n, c, p, q); arg = flat h*w index of the first max. */
ga_status ga_maxpool_forward_cpu(float *y, int32_t *arg, const float *x, const ga_pool_shape *s)
{
    GA_TRY(ga_check_pool("max_pool2d", s));
    const int64_t planes = s->n * s->c, hw = s->h * s->w, pq = s->p * s->q;
    if (planes > 0 && (!y || !arg || !x))
        return ga_fail(GA_ERR_VALUE, "max_pool2d: NULL argument");
    const ga_pool2x2_row_fn row2x2 = ga_pool2x2_row_kernel();
    GA_PARALLEL_FOR(planes * hw)
    for (int64_t pl = 0; pl < planes; pl++) {
        const float *xp = x + pl * hw;
        float *yp = y + pl * pq;
        int32_t *ap = arg + pl * pq;
        if (s->size == 2 && s->stride == 2) {
            for (int64_t i = 0; i < s->p; i++)
                row2x2(yp + i * s->q, ap + i * s->q, xp + 2 * i * s->w, s->w, s->q, (int32_t)(2 * i * s->w), 0.0f, 0);
            continue;
        }
        for (int64_t i = 0; i < s->p; i++)
            for (int64_t j = 0; j < s->q; j++) {
                int64_t h0 = i * s->stride, w0 = j * s->stride;
                int64_t best = h0 * s->w + w0;
                float m = xp[best];
                for (int64_t r = 0; r < s->size; r++)
                    for (int64_t c = 0; c < s->size; c++) {
                        int64_t idx = (h0 + r) * s->w + (w0 + c);
                        if (xp[idx] > m) { /* strict: the first maximum wins ties */
                            m = xp[idx];
                            best = idx;
                        }
                    }
                yp[i * s->q + j] = m;
                ap[i * s->q + j] = (int32_t)best;
            }
    }
    return GA_OK;
}

/* dx (n, c, h, w) = scatter-add of dy (n, c, p, q) through arg. */
ga_status ga_maxpool_backward_cpu(float *dx, const float *dy, const int32_t *arg,
                                  const ga_pool_shape *s)
{
    GA_TRY(ga_check_pool("max_pool2d_backward", s));
    const int64_t planes = s->n * s->c, hw = s->h * s->w, pq = s->p * s->q;
    if (planes > 0 && (!dx || !dy || !arg))
        return ga_fail(GA_ERR_VALUE, "max_pool2d_backward: NULL argument");
    GA_PARALLEL_FOR(planes * hw)
    for (int64_t pl = 0; pl < planes; pl++) {
        float *dxp = dx + pl * hw;
        const float *dyp = dy + pl * pq;
        const int32_t *ap = arg + pl * pq;
        memset(dxp, 0, (size_t)hw * sizeof(float));
        for (int64_t i = 0; i < pq; i++)
            dxp[ap[i]] += dyp[i];
    }
    return GA_OK;
}

/* x (n, c, h, w) -> y (n, c, p, q) window means. Each output row is summed in
 * place over the window's rows, then scaled: every y element receives its
 * window's elements in raster order (the GPU's per-thread order, so the two
 * agree bit for bit) while the inner loop runs along the row. */
ga_status ga_avgpool_forward_cpu(float *y, const float *x, const ga_pool_shape *s)
{
    GA_TRY(ga_check_pool("avg_pool2d", s));
    const int64_t planes = s->n * s->c, hw = s->h * s->w, pq = s->p * s->q;
    if (planes > 0 && (!y || !x))
        return ga_fail(GA_ERR_VALUE, "avg_pool2d: NULL argument");
    const float inv = 1.0f / (float)(s->size * s->size);
    GA_PARALLEL_FOR(planes * hw)
    for (int64_t pl = 0; pl < planes; pl++) {
        const float *xp = x + pl * hw;
        float *yp = y + pl * pq;
        for (int64_t i = 0; i < s->p; i++) {
            float *yrow = yp + i * s->q;
            for (int64_t j = 0; j < s->q; j++)
                yrow[j] = 0.0f;
            for (int64_t r = 0; r < s->size; r++) {
                const float *xrow = xp + (i * s->stride + r) * s->w;
                for (int64_t j = 0; j < s->q; j++) {
                    const float *win = xrow + j * s->stride;
                    float acc = yrow[j];
                    for (int64_t c = 0; c < s->size; c++)
                        acc += win[c];
                    yrow[j] = acc;
                }
            }
            for (int64_t j = 0; j < s->q; j++)
                yrow[j] *= inv;
        }
    }
    return GA_OK;
}

/* dy (n, c, p, q) -> dx (n, c, h, w): each window adds its dy to its elements
 * (windows in raster order, the GPU gather's order), then the plane is scaled
 * by 1 / size^2 once, so no multiply-add can round differently per device. */
ga_status ga_avgpool_backward_cpu(float *dx, const float *dy, const ga_pool_shape *s)
{
    GA_TRY(ga_check_pool("avg_pool2d_backward", s));
    const int64_t planes = s->n * s->c, hw = s->h * s->w, pq = s->p * s->q;
    if (planes > 0 && (!dx || !dy))
        return ga_fail(GA_ERR_VALUE, "avg_pool2d_backward: NULL argument");
    const float inv = 1.0f / (float)(s->size * s->size);
    GA_PARALLEL_FOR(planes * hw)
    for (int64_t pl = 0; pl < planes; pl++) {
        float *dxp = dx + pl * hw;
        const float *dyp = dy + pl * pq;
        memset(dxp, 0, (size_t)hw * sizeof(float));
        for (int64_t i = 0; i < s->p; i++)
            for (int64_t j = 0; j < s->q; j++) {
                const float g = dyp[i * s->q + j];
                float *win = dxp + i * s->stride * s->w + j * s->stride;
                for (int64_t r = 0; r < s->size; r++)
                    for (int64_t c = 0; c < s->size; c++)
                        win[r * s->w + c] += g;
            }
        for (int64_t k = 0; k < hw; k++)
            dxp[k] *= inv;
    }
    return GA_OK;
}
