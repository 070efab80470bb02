/* Batch normalisation, global average and max pooling and elementwise add on the CPU:
 * the layers a residual backbone needs beyond csrc/cpu/conv_cpu.c. Twin: csrc/cuda/norm_cuda.cu. Shapes and
 * semantics are documented in core/backend.h.
 *
 * Batch statistics are accumulated in double per channel (two passes: mean,
 * then squared deviations), so the variance does not suffer from cancellation
 * and the GPU twin (also double) agrees to fp32 rounding. */
#include "cpu/kernels_cpu.h"

#include <math.h>
#include <string.h>

#include "cpu/omp_util.h"

#define CHECK_PTR(p, n, name)                                                                  \
    do {                                                                                       \
        if ((n) > 0 && (p) == NULL)                                                            \
            return ga_fail(GA_ERR_VALUE, "%s: %s is NULL", __func__, name);                    \
    } while (0)

/* x, y (n, c, hw); gamma, beta, run_mean, run_var, save_mean, save_invstd (c).
 * One channel per task: every channel's statistics are independent. */
ga_status ga_batchnorm_forward_cpu(float *y, float *save_mean, float *save_invstd, float *run_mean,
                                   float *run_var, const float *x, const float *gamma,
                                   const float *beta, int64_t n, int64_t c, int64_t hw,
                                   float momentum, float eps, int training)
{
    GA_TRY(ga_check_channels("batchnorm_forward", n, c, hw));
    const int64_t total = n * c * hw;
    CHECK_PTR(y, total, "y");
    CHECK_PTR(x, total, "x");
    CHECK_PTR(gamma, c, "gamma");
    CHECK_PTR(beta, c, "beta");
    CHECK_PTR(run_mean, c, "run_mean");
    CHECK_PTR(run_var, c, "run_var");
    if (!(eps > 0.0f))
        return ga_fail(GA_ERR_VALUE, "batchnorm: epsilon must be > 0");
    if (training && n * hw == 0)
        return ga_fail(GA_ERR_VALUE, "batchnorm: training needs at least one sample");
    const double m = (double)(n * hw);
    GA_PARALLEL_FOR(total)
    for (int64_t ch = 0; ch < c; ch++) {
        double mean, var;
        if (training) {
            double acc = 0.0;
            for (int64_t i = 0; i < n; i++) {
                const float *xp = x + (i * c + ch) * hw;
                for (int64_t j = 0; j < hw; j++)
                    acc += xp[j];
            }
            mean = acc / m;
            double sq = 0.0;
            for (int64_t i = 0; i < n; i++) {
                const float *xp = x + (i * c + ch) * hw;
                for (int64_t j = 0; j < hw; j++) {
                    const double d = xp[j] - mean;
                    sq += d * d;
                }
            }
            var = sq / m; /* biased, as Keras uses for both the output and the moving value */
            run_mean[ch] = (float)(momentum * (double)run_mean[ch] + (1.0 - momentum) * mean);
            run_var[ch] = (float)(momentum * (double)run_var[ch] + (1.0 - momentum) * var);
        } else {
            mean = run_mean[ch];
            var = run_var[ch];
        }
        const double invstd = 1.0 / sqrt(var + (double)eps);
        if (save_mean)
            save_mean[ch] = (float)mean;
        if (save_invstd)
            save_invstd[ch] = (float)invstd;
        const float scale = (float)((double)gamma[ch] * invstd);
        const float shift = (float)((double)beta[ch] - mean * (double)gamma[ch] * invstd);
        for (int64_t i = 0; i < n; i++) {
            const float *xp = x + (i * c + ch) * hw;
            float *yp = y + (i * c + ch) * hw;
            for (int64_t j = 0; j < hw; j++)
                yp[j] = xp[j] * scale + shift;
        }
    }
    return GA_OK;
}

/* dy, x, dx (n, c, hw); gamma, save_mean, save_invstd, dgamma, dbeta (c). */
ga_status ga_batchnorm_backward_cpu(float *dx, float *dgamma, float *dbeta, const float *dy,
                                    const float *x, const float *gamma, const float *save_mean,
                                    const float *save_invstd, int64_t n, int64_t c, int64_t hw,
                                    int training)
{
    GA_TRY(ga_check_channels("batchnorm_backward", n, c, hw));
    const int64_t total = n * c * hw;
    CHECK_PTR(dy, total, "dy");
    CHECK_PTR(x, total, "x");
    CHECK_PTR(gamma, c, "gamma");
    CHECK_PTR(save_mean, c, "save_mean");
    CHECK_PTR(save_invstd, c, "save_invstd");
    const int need_sums = dgamma || dbeta || (dx && training);
    const double m = (double)(n * hw);
    GA_PARALLEL_FOR(total)
    for (int64_t ch = 0; ch < c; ch++) {
        const double mean = save_mean[ch], invstd = save_invstd[ch];
        double sum_dy = 0.0, sum_dy_xhat = 0.0;
        if (need_sums)
            for (int64_t i = 0; i < n; i++) {
                const float *xp = x + (i * c + ch) * hw, *gp = dy + (i * c + ch) * hw;
                for (int64_t j = 0; j < hw; j++) {
                    sum_dy += gp[j];
                    sum_dy_xhat += (double)gp[j] * ((xp[j] - mean) * invstd);
                }
            }
        if (dgamma)
            dgamma[ch] = (float)sum_dy_xhat;
        if (dbeta)
            dbeta[ch] = (float)sum_dy;
        if (!dx)
            continue;
        const double k = (double)gamma[ch] * invstd;
        if (training && m > 0) {
            const double mean_dy = sum_dy / m, mean_dy_xhat = sum_dy_xhat / m;
            for (int64_t i = 0; i < n; i++) {
                const float *xp = x + (i * c + ch) * hw, *gp = dy + (i * c + ch) * hw;
                float *dp = dx + (i * c + ch) * hw;
                for (int64_t j = 0; j < hw; j++) {
                    const double xhat = (xp[j] - mean) * invstd;
                    dp[j] = (float)(k * (gp[j] - mean_dy - xhat * mean_dy_xhat));
                }
            }
        } else {
            const float kf = (float)k;
            for (int64_t i = 0; i < n; i++) {
                const float *gp = dy + (i * c + ch) * hw;
                float *dp = dx + (i * c + ch) * hw;
                for (int64_t j = 0; j < hw; j++)
                    dp[j] = kf * gp[j];
            }
        }
    }
    return GA_OK;
}

/* x (nc, hw) -> y (nc): the mean of each row, summed in order. */
ga_status ga_global_avgpool_forward_cpu(float *y, const float *x, int64_t nc, int64_t hw)
{
    if (nc < 0 || hw <= 0)
        return ga_fail(GA_ERR_VALUE, "global_avgpool: bad shape");
    CHECK_PTR(y, nc, "y");
    CHECK_PTR(x, nc * hw, "x");
    const float inv = 1.0f / (float)hw;
    GA_PARALLEL_FOR(nc * hw)
    for (int64_t i = 0; i < nc; i++) {
        const float *xp = x + i * hw;
        float acc = 0.0f;
        for (int64_t j = 0; j < hw; j++)
            acc += xp[j];
        y[i] = acc * inv;
    }
    return GA_OK;
}

/* dy (nc) -> dx (nc, hw) = dy / hw */
ga_status ga_global_avgpool_backward_cpu(float *dx, const float *dy, int64_t nc, int64_t hw)
{
    if (nc < 0 || hw <= 0)
        return ga_fail(GA_ERR_VALUE, "global_avgpool_backward: bad shape");
    CHECK_PTR(dx, nc * hw, "dx");
    CHECK_PTR(dy, nc, "dy");
    const float inv = 1.0f / (float)hw;
    GA_PARALLEL_FOR(nc * hw)
    for (int64_t i = 0; i < nc; i++) {
        const float g = dy[i] * inv;
        float *dp = dx + i * hw;
        for (int64_t j = 0; j < hw; j++)
            dp[j] = g;
    }
    return GA_OK;
}

/* x (nc, hw) -> y (nc) row maxima, arg (nc) the index of the first maximum.
 * Strict > from x[0], as max pooling: ties keep the first, a NaN wins only at
 * index 0 (no later value compares greater than it). */
ga_status ga_global_maxpool_forward_cpu(float *y, int32_t *arg, const float *x, int64_t nc, int64_t hw)
{
    GA_TRY(ga_check_rows("global_max_pool2d", nc, hw));
    CHECK_PTR(y, nc, "y");
    CHECK_PTR(arg, nc, "arg");
    CHECK_PTR(x, nc * hw, "x");
    GA_PARALLEL_FOR(nc * hw)
    for (int64_t i = 0; i < nc; i++) {
        const float *xp = x + i * hw;
        float m = xp[0];
        int64_t best = 0;
        for (int64_t j = 1; j < hw; j++)
            if (xp[j] > m) {
                m = xp[j];
                best = j;
            }
        y[i] = m;
        arg[i] = (int32_t)best;
    }
    return GA_OK;
}

/* dy (nc), arg (nc) -> dx (nc, hw): dy at each row's arg, 0 elsewhere. An arg
 * outside [0, hw) routes nothing (as the GPU's gather), never a stray write. */
ga_status ga_global_maxpool_backward_cpu(float *dx, const float *dy, const int32_t *arg, int64_t nc, int64_t hw)
{
    GA_TRY(ga_check_rows("global_max_pool2d_backward", nc, hw));
    CHECK_PTR(dx, nc * hw, "dx");
    CHECK_PTR(dy, nc, "dy");
    CHECK_PTR(arg, nc, "arg");
    GA_PARALLEL_FOR(nc * hw)
    for (int64_t i = 0; i < nc; i++) {
        float *dp = dx + i * hw;
        memset(dp, 0, (size_t)hw * sizeof(float));
        if (arg[i] >= 0 && arg[i] < hw)
            dp[arg[i]] = dy[i];
    }
    return GA_OK;
}

/* y (n) = a + b; y may alias a or b */
ga_status ga_add_cpu(float *y, const float *a, const float *b, int64_t n)
{
    if (n < 0)
        return ga_fail(GA_ERR_VALUE, "add: negative size");
    CHECK_PTR(y, n, "y");
    CHECK_PTR(a, n, "a");
    CHECK_PTR(b, n, "b");
    GA_PARALLEL_FOR(n)
    for (int64_t i = 0; i < n; i++)
        y[i] = a[i] + b[i];
    return GA_OK;
}
