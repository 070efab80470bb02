/* Max pooling on the CPU. Shapes in core/backend.h. Parallel over (n, c)
 * planes: each thread owns whole planes, so the backward scatter needs no
 * atomics even when windows overlap. */
#include "cpu/kernels_cpu.h"

#include <float.h>
#include <string.h>

#include "cpu/omp_util.h"

ga_status ga_check_pool_shape(const ga_pool_shape *s)
{
    if (!s || s->n < 0 || s->c < 0 || s->h <= 0 || s->w <= 0 || s->size <= 0 || s->stride <= 0 ||
        s->p != (s->h - s->size) / s->stride + 1 || s->q != (s->w - s->size) / s->stride + 1 ||
        s->p <= 0 || s->q <= 0)
        return ga_fail(GA_ERR_VALUE, "max_pool2d: inconsistent shape");
    return GA_OK;
}

/* x (n, c, h, w) -> y, arg (n, c, p, q); arg = flat h*w index of the first max. */
ga_status ga_maxpool_forward_cpu(float *y, int32_t *arg, const float *x, const ga_pool_shape *s)
{
    GA_TRY(ga_check_pool_shape(s));
    const int64_t planes = s->n * s->c, hw = s->h * s->w, pq = s->p * s->q;
    if (planes > 0 && (!y || !arg || !x))
        return ga_fail(GA_ERR_VALUE, "max_pool2d: NULL argument");
    GA_PARALLEL_FOR(planes * hw)
    for (int64_t pl = 0; pl < planes; pl++) {
        const float *xp = x + pl * hw;
        float *yp = y + pl * pq;
        int32_t *ap = arg + pl * pq;
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
    GA_TRY(ga_check_pool_shape(s));
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
