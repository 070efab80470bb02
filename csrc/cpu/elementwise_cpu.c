/* Elementwise kernels and small reductions on the CPU. Shapes in core/backend.h. */
#include "cpu/kernels_cpu.h"

#include "core/rng.h"
#include "cpu/omp_util.h"

#define CHECK_PTR(p, n, name)                                                                  \
    do {                                                                                       \
        if ((n) < 0)                                                                           \
            return ga_fail(GA_ERR_VALUE, "%s: negative size", __func__);                       \
        if ((n) > 0 && (p) == NULL)                                                            \
            return ga_fail(GA_ERR_VALUE, "%s: %s is NULL", __func__, name);                    \
    } while (0)

/* y (rows, cols) += b (cols); relu */
ga_status ga_bias_act_cpu(float *y, const float *b, int64_t rows, int64_t cols, int relu)
{
    CHECK_PTR(y, rows * cols, "y");
    if (rows < 0 || cols < 0)
        return ga_fail(GA_ERR_VALUE, "bias_act: negative size");
    GA_PARALLEL_FOR(rows * cols)
    for (int64_t i = 0; i < rows; i++) {
        float *row = y + i * cols;
        if (b)
            for (int64_t j = 0; j < cols; j++)
                row[j] += b[j];
        if (relu)
            for (int64_t j = 0; j < cols; j++)
                row[j] = row[j] > 0.0f ? row[j] : 0.0f;
    }
    return GA_OK;
}

/* y (n) = max(x, 0) */
ga_status ga_relu_forward_cpu(float *y, const float *x, int64_t n)
{
    CHECK_PTR(y, n, "y");
    CHECK_PTR(x, n, "x");
    GA_PARALLEL_FOR(n)
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
    return GA_OK;
}

/* dx (n) = dy where y > 0 */
ga_status ga_relu_backward_cpu(float *dx, const float *y, const float *dy, int64_t n)
{
    CHECK_PTR(dx, n, "dx");
    CHECK_PTR(y, n, "y");
    CHECK_PTR(dy, n, "dy");
    GA_PARALLEL_FOR(n)
    for (int64_t i = 0; i < n; i++)
        dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
    return GA_OK;
}

/* out (cols) = sum over rows of x (rows, cols); columns split across threads,
 * each summing down its own columns so no reduction between threads is needed. */
ga_status ga_sum_rows_cpu(float *out, const float *x, int64_t rows, int64_t cols)
{
    CHECK_PTR(out, cols, "out");
    CHECK_PTR(x, rows * cols, "x");
    if (rows < 0)
        return ga_fail(GA_ERR_VALUE, "sum_rows: negative size");
    const int64_t block = 64;
    const int64_t nblocks = (cols + block - 1) / block;
    GA_PARALLEL_FOR(rows * cols)
    for (int64_t jb = 0; jb < nblocks; jb++) {
        int64_t j0 = jb * block, j1 = j0 + block < cols ? j0 + block : cols;
        float acc[64];
        for (int64_t j = j0; j < j1; j++)
            acc[j - j0] = 0.0f;
        for (int64_t i = 0; i < rows; i++) {
            const float *row = x + i * cols;
            for (int64_t j = j0; j < j1; j++)
                acc[j - j0] += row[j];
        }
        for (int64_t j = j0; j < j1; j++)
            out[j] = acc[j - j0];
    }
    return GA_OK;
}

/* y (n) = a * b */
ga_status ga_mul_cpu(float *y, const float *a, const float *b, int64_t n)
{
    CHECK_PTR(y, n, "y");
    CHECK_PTR(a, n, "a");
    CHECK_PTR(b, n, "b");
    GA_PARALLEL_FOR(n)
    for (int64_t i = 0; i < n; i++)
        y[i] = a[i] * b[i];
    return GA_OK;
}

/* y, mask (n): inverted dropout with the counter-based stream of core/rng.h. */
ga_status ga_dropout_forward_cpu(float *y, float *mask, const float *x, int64_t n, float rate,
                                 uint64_t seed)
{
    CHECK_PTR(y, n, "y");
    CHECK_PTR(mask, n, "mask");
    CHECK_PTR(x, n, "x");
    if (!(rate >= 0.0f && rate < 1.0f))
        return ga_fail(GA_ERR_VALUE, "dropout rate must be in [0, 1), got %g", (double)rate);
    const float keep = 1.0f / (1.0f - rate);
    GA_PARALLEL_FOR(n)
    for (int64_t i = 0; i < n; i++) {
        float m = ga_rng_uniform(seed, (uint64_t)i) >= rate ? keep : 0.0f;
        mask[i] = m;
        y[i] = x[i] * m;
    }
    return GA_OK;
}
