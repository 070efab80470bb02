/* Elementwise kernels and small reductions on the GPU, the twin of
 * csrc/cpu/elementwise_cpu.c. Shapes and semantics in core/kernels.def. All are
 * memory-bound: grid-stride loops with coalesced accesses are enough. */
#include "cuda/cuda_common.h"

extern "C" {
#include "core/steps.h"
}

namespace {

constexpr int kThreads = 256;

/* The kind is the same for every thread, so the switch in ga_act_eval does
 * not diverge. */
__global__ void bias_act_kernel(float *__restrict__ y, const float *__restrict__ b, int64_t rows,
                                int64_t cols, ga_act act)
{
    GA_GRID_STRIDE(i, rows * cols) {
        float v = y[i];
        if (b)
            v += b[i % cols];
        y[i] = ga_act_eval(act.kind, act.alpha, v);
    }
}

/* y may alias x, dx may alias dy: no __restrict__. */
__global__ void act_forward_kernel(float *y, const float *x, int64_t n, ga_act act)
{
    GA_GRID_STRIDE(i, n) y[i] = ga_act_eval(act.kind, act.alpha, x[i]);
}

__global__ void act_backward_kernel(float *dx, const float *t, const float *dy, int64_t n, ga_act act)
{
    GA_GRID_STRIDE(i, n) dx[i] = ga_act_grad(act.kind, act.alpha, t[i], dy[i]);
}

/* One thread per column, rows summed in order: the same order as the CPU. */
__global__ void sum_rows_kernel(float *__restrict__ out, const float *__restrict__ x, int64_t rows,
                                int64_t cols)
{
    GA_GRID_STRIDE(j, cols) {
        float acc = 0.0f;
        for (int64_t i = 0; i < rows; i++)
            acc += x[i * cols + j];
        out[j] = acc;
    }
}

__global__ void mul_kernel(float *y, const float *a, const float *b, int64_t n)
{
    GA_GRID_STRIDE(i, n) y[i] = a[i] * b[i];
}

/* mask[i] depends only on (seed, i): the CPU draws the same mask. */
__global__ void dropout_kernel(float *y, float *__restrict__ mask, const float *x, int64_t n,
                               float rate, float keep, uint64_t seed, const int64_t *__restrict__ draw,
                               int64_t offset)
{
    if (draw)
        seed = ga_rng_hash(seed, (uint64_t)(*draw + offset));
    GA_GRID_STRIDE(i, n) {
        const float m = ga_rng_uniform(seed, (uint64_t)i) >= rate ? keep : 0.0f;
        mask[i] = m;
        y[i] = x[i] * m;
    }
}

/* One float4 (or float, when rows are not multiples of 4) per thread-step;
 * each batch row reads its source row's index from the order on the device. */
template <int V>
__global__ void gather_kernel(float *__restrict__ xb, int32_t *__restrict__ lb, const float *__restrict__ x,
                              const int32_t *__restrict__ labels, const int32_t *__restrict__ order,
                              const int64_t *__restrict__ pos, int64_t n, int64_t row)
{
    const int64_t p0 = *pos, vrow = row / V;
    GA_GRID_STRIDE(e, n * vrow) {
        const int64_t i = e / vrow, j = e - i * vrow;
        const int64_t src = order ? order[p0 + i] : p0 + i;
        if (V == 4)
            reinterpret_cast<float4 *>(xb)[e] = reinterpret_cast<const float4 *>(x)[src * vrow + j];
        else
            xb[e] = x[src * row + j];
        if (lb && j == 0)
            lb[i] = labels[src];
    }
}

__global__ void advance_kernel(int64_t *ctl, int64_t dt, int64_t ddraws, int64_t dpos)
{
    ctl[GA_STEP_T] += dt;
    ctl[GA_STEP_DRAWS] += ddraws;
    ctl[GA_STEP_POS] += dpos;
}

} // namespace

/* y (rows, cols) = act(y + b), b (cols) or NULL */
ga_status ga_bias_act_cuda(float *y, const float *b, int64_t rows, int64_t cols, ga_act act)
{
    GA_CHECK_SIZE(rows);
    GA_CHECK_SIZE(cols);
    GA_CHECK_PTR(y, rows * cols);
    GA_TRY(ga_check_act("bias_act", act));
    if (rows * cols == 0 || (!b && act.kind == GA_ACT_NONE))
        return GA_OK;
    cudaStream_t s;
    GA_TRY(ga_cuda_stream(&s));
    GA_LAUNCH(ga_cuda_blocks(rows * cols, kThreads), kThreads, 0, s, bias_act_kernel)(y, b, rows, cols, act);
    GA_CUDA_LAUNCH("bias_act_kernel");
    return GA_OK;
}

/* y (n) = act(x); y may alias x */
ga_status ga_act_forward_cuda(float *y, const float *x, int64_t n, ga_act act)
{
    GA_CHECK_SIZE(n);
    GA_CHECK_PTR(y, n);
    GA_CHECK_PTR(x, n);
    GA_TRY(ga_check_act("act_forward", act));
    if (n == 0 || (act.kind == GA_ACT_NONE && y == x))
        return GA_OK;
    cudaStream_t s;
    GA_TRY(ga_cuda_stream(&s));
    GA_LAUNCH(ga_cuda_blocks(n, kThreads), kThreads, 0, s, act_forward_kernel)(y, x, n, act);
    GA_CUDA_LAUNCH("act_forward_kernel");
    return GA_OK;
}

/* dx (n) = dy act'(t), t = y or z (kernels.def); dx may alias dy */
ga_status ga_act_backward_cuda(float *dx, const float *t, const float *dy, int64_t n, ga_act act)
{
    GA_CHECK_SIZE(n);
    GA_CHECK_PTR(dx, n);
    GA_CHECK_PTR(t, n);
    GA_CHECK_PTR(dy, n);
    GA_TRY(ga_check_act("act_backward", act));
    if (n == 0)
        return GA_OK;
    cudaStream_t s;
    GA_TRY(ga_cuda_stream(&s));
    GA_LAUNCH(ga_cuda_blocks(n, kThreads), kThreads, 0, s, act_backward_kernel)(dx, t, dy, n, act);
    GA_CUDA_LAUNCH("act_backward_kernel");
    return GA_OK;
}

/* out (cols) = sum over rows of x (rows, cols) */
ga_status ga_sum_rows_cuda(float *out, const float *x, int64_t rows, int64_t cols)
{
    GA_CHECK_SIZE(rows);
    GA_CHECK_SIZE(cols);
    GA_CHECK_PTR(out, cols);
    GA_CHECK_PTR(x, rows * cols);
    if (cols == 0)
        return GA_OK;
    cudaStream_t s;
    GA_TRY(ga_cuda_stream(&s));
    /* 128-thread blocks: more blocks (SMs) for the narrow matrices of dense layers */
    GA_LAUNCH(ga_cuda_blocks(cols, 128), 128, 0, s, sum_rows_kernel)(out, x, rows, cols);
    GA_CUDA_LAUNCH("sum_rows_kernel");
    return GA_OK;
}

/* y (n) = a * b; y may alias either */
ga_status ga_mul_cuda(float *y, const float *a, const float *b, int64_t n)
{
    GA_CHECK_SIZE(n);
    GA_CHECK_PTR(y, n);
    GA_CHECK_PTR(a, n);
    GA_CHECK_PTR(b, n);
    if (n == 0)
        return GA_OK;
    cudaStream_t s;
    GA_TRY(ga_cuda_stream(&s));
    GA_LAUNCH(ga_cuda_blocks(n, kThreads), kThreads, 0, s, mul_kernel)(y, a, b, n);
    GA_CUDA_LAUNCH("mul_kernel");
    return GA_OK;
}

/* y, mask, x (n): mask = u(seed, i) >= rate ? 1/(1-rate) : 0, y = x * mask */
ga_status ga_dropout_forward_cuda(float *y, float *mask, const float *x, int64_t n, float rate,
                                  uint64_t seed, const int64_t *draw, int64_t offset)
{
    GA_CHECK_SIZE(n);
    GA_CHECK_PTR(y, n);
    GA_CHECK_PTR(mask, n);
    GA_CHECK_PTR(x, n);
    if (!(rate >= 0.0f && rate < 1.0f))
        return ga_fail(GA_ERR_VALUE, "dropout rate must be in [0, 1), got %g", (double)rate);
    if (n == 0)
        return GA_OK;
    const float keep = 1.0f / (1.0f - rate); /* computed as on the CPU, bit for bit */
    cudaStream_t s;
    GA_TRY(ga_cuda_stream(&s));
    GA_LAUNCH(ga_cuda_blocks(n, kThreads), kThreads, 0, s, dropout_kernel)(y, mask, x, n, rate, keep, seed, draw,
                                                                                  offset);
    GA_CUDA_LAUNCH("dropout_kernel");
    return GA_OK;
}

ga_status ga_gather_rows_cuda(float *xb, int32_t *lb, const float *x, const int32_t *labels, const int32_t *order,
                              const int64_t *pos, int64_t n, int64_t row)
{
    GA_CHECK_SIZE(n);
    GA_CHECK_SIZE(row);
    GA_CHECK_PTR(pos, 1);
    GA_CHECK_PTR(xb, n * row);
    GA_CHECK_PTR(x, n * row);
    if ((lb == NULL) != (labels == NULL))
        return ga_fail(GA_ERR_VALUE, "gather_rows: labels and lb must both be given or both be NULL");
    if (n * row == 0)
        return GA_OK;
    cudaStream_t s;
    GA_TRY(ga_cuda_stream(&s));
    const bool vec = row % 4 == 0 && ((uintptr_t)xb | (uintptr_t)x) % 16 == 0;
    if (vec) {
        GA_LAUNCH(ga_cuda_blocks(n * row / 4, kThreads), kThreads, 0, s, gather_kernel<4>)(xb, lb, x, labels, order,
                                                                                          pos, n, row);
    } else {
        GA_LAUNCH(ga_cuda_blocks(n * row, kThreads), kThreads, 0, s, gather_kernel<1>)(xb, lb, x, labels, order,
                                                                                      pos, n, row);
    }
    GA_CUDA_LAUNCH("gather_kernel");
    return GA_OK;
}

ga_status ga_advance_counters_cuda(int64_t *ctl, int64_t dt, int64_t ddraws, int64_t dpos)
{
    GA_CHECK_PTR(ctl, 1);
    cudaStream_t s;
    GA_TRY(ga_cuda_stream(&s));
    GA_LAUNCH(1, 1, 0, s, advance_kernel)(ctl, dt, ddraws, dpos);
    GA_CUDA_LAUNCH("advance_kernel");
    return GA_OK;
}
