/* Fused optimizer updates on the CPU: one pass over the flat parameter block.
 * Formulas in core/backend.h. */
#include "cpu/kernels_cpu.h"
#include "core/steps.h"

#include <math.h>

#include "cpu/omp_util.h"

ga_status ga_sgd_update_cpu(float *w, float *vel, const float *g, int64_t n, float lr,
                            float momentum, float weight_decay, int nesterov)
{
    if (n < 0 || (n > 0 && (!w || !g || (momentum != 0.0f && !vel))))
        return ga_fail(GA_ERR_VALUE, "sgd_update: bad arguments");
    if (momentum == 0.0f) {
        GA_PARALLEL_FOR(n)
        for (int64_t i = 0; i < n; i++)
            w[i] -= lr * (g[i] + weight_decay * w[i]);
        return GA_OK;
    }
    GA_PARALLEL_FOR(n)
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] + weight_decay * w[i];
        float v = momentum * vel[i] + gi;
        vel[i] = v;
        w[i] -= lr * (nesterov ? gi + momentum * v : v);
    }
    return GA_OK;
}

/* One thread's share of the Adam update. A plain function with SIMD clones:
 * with sqrtf and a division per element the loop is compute-bound, and the
 * baseline build's scalar SSE code took 56% of a batch-1 step (-fno-math-errno
 * in setup.py lets the compiler use the sqrt instruction instead of a call). */
GA_SIMD_CLONES
static void adam_range(float *restrict w, float *restrict m, float *restrict v, const float *restrict g, int64_t n,
                       float lr, float beta1, float beta2, float eps, float weight_decay, float c1, float c2)
{
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] + weight_decay * w[i];
        float mi = beta1 * m[i] + (1.0f - beta1) * gi;
        float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        w[i] -= lr * (mi * c1) / (sqrtf(vi * c2) + eps);
    }
}

ga_status ga_adam_update_cpu(float *w, float *m, float *v, const float *g, int64_t n, float lr,
                             float beta1, float beta2, float eps, float weight_decay, const int64_t *step)
{
    if (n < 0 || !step || (n > 0 && (!w || !m || !v || !g)))
        return ga_fail(GA_ERR_VALUE, "adam_update: bad arguments");
    const int64_t t = *step;
    if (t < 1)
        return ga_fail(GA_ERR_VALUE, "adam_update: step t must be >= 1, got %lld", (long long)t);
    const float c1 = ga_adam_correction(beta1, t), c2 = ga_adam_correction(beta2, t);
    const int64_t block = 8192, nblocks = (n + block - 1) / block;
    GA_PARALLEL_FOR(n)
    for (int64_t b = 0; b < nblocks; b++) {
        const int64_t i = b * block, len = n - i < block ? n - i : block;
        adam_range(w + i, m + i, v + i, g + i, len, lr, beta1, beta2, eps, weight_decay, c1, c2);
    }
    return GA_OK;
}
