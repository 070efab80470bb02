/* Elementwise kernels and small reductions on the CPU. Shapes in core/backend.h. */
#include "cpu/kernels_cpu.h"

#include <math.h>
#include <string.h>

#include "core/rng.h"
#include "core/steps.h"
#include "cpu/omp_util.h"

#define CHECK_PTR(p, n, name)                                                                  \
    do {                                                                                       \
        if ((n) < 0)                                                                           \
            return ga_fail(GA_ERR_VALUE, "%s: negative size", __func__);                       \
        if ((n) > 0 && (p) == NULL)                                                            \
            return ga_fail(GA_ERR_VALUE, "%s: %s is NULL", __func__, name);                    \
    } while (0)

/* y[i] = act(x[i] + bias), i < n, serial: one loop per kind (act.h). */
GA_SIMD_CLONES
void ga_act_span_cpu(float *y, const float *x, float bias, int64_t n, ga_act act)
{
    const float alpha = act.alpha;
#define LOOP(K)                     \
    for (int64_t i = 0; i < n; i++) \
    y[i] = ga_act_eval(K, alpha, x[i] + bias)
    switch (act.kind) { GA_ACT_LIST(GA_ACT_CASE) }
#undef LOOP
}

/* dx[i] = dy[i] act'(t[i]), i < n, serial (t: y or z, as act_backward). */
GA_SIMD_CLONES
static void act_grad_span(float *dx, const float *t, const float *dy, int64_t n, ga_act act)
{
    const float alpha = act.alpha;
#define LOOP(K)                     \
    for (int64_t i = 0; i < n; i++) \
    dx[i] = ga_act_grad(K, alpha, t[i], dy[i])
    switch (act.kind) { GA_ACT_LIST(GA_ACT_CASE) }
#undef LOOP
}

/* y[i] = fmaf(x[i], scale, offset), serial (vfmadd in the FMA clones, libm's fmaf in the baseline one) */
GA_SIMD_CLONES
static void scale_span(float *y, const float *x, int64_t n, float scale, float offset)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = fmaf(x[i], scale, offset);
}

/* Spans of this many elements per task in the flat elementwise kernels. */
#define SPAN 4096

/* y (rows, cols) = act(y + b), b (cols) or NULL */
ga_status ga_bias_act_cpu(float *y, const float *b, int64_t rows, int64_t cols, ga_act act)
{
    if (rows < 0 || cols < 0)
        return ga_fail(GA_ERR_VALUE, "bias_act: negative size");
    CHECK_PTR(y, rows * cols, "y");
    GA_TRY(ga_check_act("bias_act", act));
    if (!b) /* rows of one flat array */
        return ga_act_forward_cpu(y, y, rows * cols, act);
    GA_PARALLEL_FOR(rows * cols)
    for (int64_t i = 0; i < rows; i++) {
        float *row = y + i * cols;
        for (int64_t j = 0; j < cols; j++)
            row[j] += b[j];
        ga_act_span_cpu(row, row, 0.0f, cols, act);
    }
    return GA_OK;
}

/* y (n) = act(x) */
ga_status ga_act_forward_cpu(float *y, const float *x, int64_t n, ga_act act)
{
    CHECK_PTR(y, n, "y");
    CHECK_PTR(x, n, "x");
    GA_TRY(ga_check_act("act_forward", act));
    if (act.kind == GA_ACT_NONE) {
        if (y != x && n > 0)
            memmove(y, x, (size_t)n * sizeof(float));
        return GA_OK;
    }
    const int64_t spans = (n + SPAN - 1) / SPAN;
    GA_PARALLEL_FOR(n * 4)
    for (int64_t sp = 0; sp < spans; sp++) {
        const int64_t i0 = sp * SPAN, len = n - i0 < SPAN ? n - i0 : SPAN;
        ga_act_span_cpu(y + i0, x + i0, 0.0f, len, act);
    }
    return GA_OK;
}

/* dx (n) = dy act'(t) */
ga_status ga_act_backward_cpu(float *dx, const float *t, const float *dy, int64_t n, ga_act act)
{
    CHECK_PTR(dx, n, "dx");
    CHECK_PTR(t, n, act.kind >= 0 && act.kind < GA_ACT_KINDS && !ga_act_from_output(act.kind) ? "z" : "y");
    CHECK_PTR(dy, n, "dy");
    GA_TRY(ga_check_act("act_backward", act));
    const int64_t spans = (n + SPAN - 1) / SPAN;
    GA_PARALLEL_FOR(n * 4)
    for (int64_t sp = 0; sp < spans; sp++) {
        const int64_t i0 = sp * SPAN, len = n - i0 < SPAN ? n - i0 : SPAN;
        act_grad_span(dx + i0, t + i0, dy + i0, len, act);
    }
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

/* y (n) = x scale + offset (one rounding: fmaf, as on the GPU) */
ga_status ga_scale_shift_cpu(float *y, const float *x, int64_t n, float scale, float offset)
{
    CHECK_PTR(y, n, "y");
    CHECK_PTR(x, n, "x");
    if (!(isfinite(scale) && isfinite(offset)))
        return ga_fail(GA_ERR_VALUE, "scale_shift: scale and offset must be finite, got %g, %g", (double)scale,
                       (double)offset);
    const int64_t spans = (n + SPAN - 1) / SPAN;
    GA_PARALLEL_FOR(n)
    for (int64_t sp = 0; sp < spans; sp++) {
        const int64_t i0 = sp * SPAN, len = n - i0 < SPAN ? n - i0 : SPAN;
        scale_span(y + i0, x + i0, len, scale, offset);
    }
    return GA_OK;
}

/* y, mask (n): inverted dropout with the counter-based stream of core/rng.h. */
ga_status ga_dropout_forward_cpu(float *y, float *mask, const float *x, int64_t n, float rate,
                                 uint64_t seed, const int64_t *draw, int64_t offset)
{
    if (draw)
        seed = ga_rng_hash(seed, (uint64_t)(*draw + offset));
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

/* xb (n, row), lb (n) <- the rows order[*pos + i] (or *pos + i) of x and labels. */
ga_status ga_gather_rows_cpu(float *xb, int32_t *lb, const float *x, const int32_t *labels, const int32_t *order,
                             const int64_t *pos, int64_t n, int64_t row)
{
    if (n < 0 || row < 0 || !pos)
        return ga_fail(GA_ERR_VALUE, "gather_rows: bad arguments");
    CHECK_PTR(xb, n * row, "xb");
    CHECK_PTR(x, n * row, "x");
    if ((lb == NULL) != (labels == NULL))
        return ga_fail(GA_ERR_VALUE, "gather_rows: labels and lb must both be given or both be NULL");
    const int64_t p0 = *pos;
    if (p0 < 0)
        return ga_fail(GA_ERR_VALUE, "gather_rows: position %lld < 0", (long long)p0);
    GA_PARALLEL_FOR(n * row)
    for (int64_t i = 0; i < n; i++) {
        const int64_t src = order ? order[p0 + i] : p0 + i;
        memcpy(xb + i * row, x + src * row, (size_t)row * sizeof(float));
        if (lb)
            lb[i] = labels[src];
    }
    return GA_OK;
}

ga_status ga_advance_counters_cpu(int64_t *ctl, int64_t dt, int64_t ddraws, int64_t dpos)
{
    if (!ctl)
        return ga_fail(GA_ERR_VALUE, "advance_counters: NULL counters");
    ctl[GA_STEP_T] += dt;
    ctl[GA_STEP_DRAWS] += ddraws;
    ctl[GA_STEP_POS] += dpos;
    return GA_OK;
}
