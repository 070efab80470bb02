/* Batch normalisation, global average and max pooling and elementwise add on the GPU:
 * the twin of csrc/cpu/norm_cpu.c.
 * Shapes and semantics in core/backend.h.
 *
 * Batch norm runs one block per channel: the block reduces the channel's
 * statistics in double (two passes, as on the CPU), then the same block writes
 * the channel's outputs, so there is one launch per call, no atomics and no
 * scratch. The backbones this serves have 16-256 channels: enough blocks for a
 * step of this size; a split reduction would be the next step for wide layers. */
#include "cuda/cuda_common.h"

namespace {

constexpr int kThreads = 256;
constexpr int kBnThreads = 512;

/* Sum of v over the block (blockDim.x == T); every thread gets the result. */
template <int T>
__device__ double block_sum(double v, double *sh)
{
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int step = T / 2; step > 0; step >>= 1) {
        if (threadIdx.x < step)
            sh[threadIdx.x] += sh[threadIdx.x + step];
        __syncthreads();
    }
    const double r = sh[0];
    __syncthreads(); /* sh may be reused at once */
    return r;
}

/* Element e of channel ch in (n, c, hw), e in [0, n hw). */
__device__ __forceinline__ int64_t bn_index(int64_t e, int64_t ch, int64_t c, int64_t hw)
{
    return ((e / hw) * c + ch) * hw + e % hw;
}

/* One block per channel (gridDim.x == c). */
__global__ void bn_forward_kernel(float *__restrict__ y, float *__restrict__ save_mean,
                                  float *__restrict__ save_invstd, float *__restrict__ run_mean,
                                  float *__restrict__ run_var, const float *__restrict__ x,
                                  const float *__restrict__ gamma, const float *__restrict__ beta,
                                  int64_t n, int64_t c, int64_t hw, float momentum, float eps,
                                  int training)
{
    __shared__ double sh[kBnThreads];
    const int64_t ch = blockIdx.x, m = n * hw;
    double mean, var;
    if (training) {
        double acc = 0.0;
        for (int64_t e = threadIdx.x; e < m; e += kBnThreads)
            acc += x[bn_index(e, ch, c, hw)];
        mean = block_sum<kBnThreads>(acc, sh) / (double)m;
        double sq = 0.0;
        for (int64_t e = threadIdx.x; e < m; e += kBnThreads) {
            const double d = x[bn_index(e, ch, c, hw)] - mean;
            sq += d * d;
        }
        var = block_sum<kBnThreads>(sq, sh) / (double)m;
    } else {
        mean = run_mean[ch];
        var = run_var[ch];
    }
    const double invstd = 1.0 / sqrt(var + (double)eps);
    if (threadIdx.x == 0) {
        if (save_mean)
            save_mean[ch] = (float)mean;
        if (save_invstd)
            save_invstd[ch] = (float)invstd;
        if (training) { /* only thread 0 touches the running values in training mode */
            run_mean[ch] = (float)(momentum * (double)run_mean[ch] + (1.0 - momentum) * mean);
            run_var[ch] = (float)(momentum * (double)run_var[ch] + (1.0 - momentum) * var);
        }
    }
    const float scale = (float)((double)gamma[ch] * invstd);
    const float shift = (float)((double)beta[ch] - mean * (double)gamma[ch] * invstd);
    for (int64_t e = threadIdx.x; e < m; e += kBnThreads) {
        const int64_t i = bn_index(e, ch, c, hw);
        y[i] = x[i] * scale + shift;
    }
}

/* One block per channel. dx, dgamma, dbeta may be NULL. */
__global__ void bn_backward_kernel(float *__restrict__ dx, float *__restrict__ dgamma,
                                   float *__restrict__ dbeta, const float *__restrict__ dy,
                                   const float *__restrict__ x, const float *__restrict__ gamma,
                                   const float *__restrict__ save_mean,
                                   const float *__restrict__ save_invstd, int64_t n, int64_t c,
                                   int64_t hw, int training, int need_sums)
{
    __shared__ double sh[kBnThreads];
    const int64_t ch = blockIdx.x, m = n * hw;
    const double mean = save_mean[ch], invstd = save_invstd[ch];
    double sum_dy = 0.0, sum_dy_xhat = 0.0;
    if (need_sums) {
        double a = 0.0, b = 0.0;
        for (int64_t e = threadIdx.x; e < m; e += kBnThreads) {
            const int64_t i = bn_index(e, ch, c, hw);
            a += dy[i];
            b += (double)dy[i] * ((x[i] - mean) * invstd);
        }
        sum_dy = block_sum<kBnThreads>(a, sh);
        sum_dy_xhat = block_sum<kBnThreads>(b, sh);
    }
    if (threadIdx.x == 0) {
        if (dgamma)
            dgamma[ch] = (float)sum_dy_xhat;
        if (dbeta)
            dbeta[ch] = (float)sum_dy;
    }
    if (!dx)
        return;
    const double k = (double)gamma[ch] * invstd;
    if (training && m > 0) {
        const double mean_dy = sum_dy / (double)m, mean_dy_xhat = sum_dy_xhat / (double)m;
        for (int64_t e = threadIdx.x; e < m; e += kBnThreads) {
            const int64_t i = bn_index(e, ch, c, hw);
            const double xhat = (x[i] - mean) * invstd;
            dx[i] = (float)(k * (dy[i] - mean_dy - xhat * mean_dy_xhat));
        }
    } else {
        const float kf = (float)k;
        for (int64_t e = threadIdx.x; e < m; e += kBnThreads) {
            const int64_t i = bn_index(e, ch, c, hw);
            dx[i] = kf * dy[i];
        }
    }
}

/* y (nc) = row means of x (nc, hw), summed in order as on the CPU. */
__global__ void gap_forward_kernel(float *__restrict__ y, const float *__restrict__ x, int64_t nc,
                                   int64_t hw, float inv)
{
    GA_GRID_STRIDE(i, nc) {
        const float *xp = x + i * hw;
        float acc = 0.0f;
        for (int64_t j = 0; j < hw; j++)
            acc += xp[j];
        y[i] = acc * inv;
    }
}

__global__ void gap_backward_kernel(float *__restrict__ dx, const float *__restrict__ dy,
                                    int64_t nc, int64_t hw, float inv)
{
    GA_GRID_STRIDE(t, nc * hw) dx[t] = dy[t / hw] * inv;
}

/* One thread per row; strict > from x[0] as on the CPU (first maximum, NaN only at 0). */
__global__ void gmp_forward_kernel(float *__restrict__ y, int32_t *__restrict__ arg, const float *__restrict__ x,
                                   int64_t nc, int64_t hw)
{
    GA_GRID_STRIDE(i, nc) {
        const float *xp = x + i * hw;
        float m = xp[0];
        int64_t best = 0;
        for (int64_t j = 1; j < hw; j++) {
            const float v = xp[j];
            if (v > m) {
                m = v;
                best = j;
            }
        }
        y[i] = m;
        arg[i] = (int32_t)best;
    }
}

/* One thread per dx element: dy where the element is its row's arg, else 0. */
__global__ void gmp_backward_kernel(float *__restrict__ dx, const float *__restrict__ dy,
                                    const int32_t *__restrict__ arg, int64_t nc, int64_t hw)
{
    GA_GRID_STRIDE(t, nc * hw) {
        const int64_t row = t / hw;
        dx[t] = t % hw == arg[row] ? dy[row] : 0.0f;
    }
}

/* y may alias a or b: no __restrict__. */
__global__ void add_kernel(float *y, const float *a, const float *b, int64_t n)
{
    GA_GRID_STRIDE(i, n) y[i] = a[i] + b[i];
}

} // namespace

/* x, y (n, c, hw); gamma, beta, run_mean, run_var, save_mean, save_invstd (c) */
ga_status ga_batchnorm_forward_cuda(float *y, float *save_mean, float *save_invstd, float *run_mean,
                                    float *run_var, const float *x, const float *gamma,
                                    const float *beta, int64_t n, int64_t c, int64_t hw,
                                    float momentum, float eps, int training)
{
    GA_TRY(ga_check_channels("batchnorm_forward", n, c, hw));
    const int64_t total = n * c * hw;
    GA_CHECK_PTR(y, total);
    GA_CHECK_PTR(x, total);
    GA_CHECK_PTR(gamma, c);
    GA_CHECK_PTR(beta, c);
    GA_CHECK_PTR(run_mean, c);
    GA_CHECK_PTR(run_var, c);
    if (!(eps > 0.0f))
        return ga_fail(GA_ERR_VALUE, "batchnorm: epsilon must be > 0");
    if (training && n * hw == 0)
        return ga_fail(GA_ERR_VALUE, "batchnorm: training needs at least one sample");
    cudaStream_t s;
    GA_TRY(ga_cuda_stream(&s));
    GA_LAUNCH((unsigned)c, kBnThreads, 0, s, bn_forward_kernel)(y, save_mean, save_invstd, run_mean, run_var,
                                                          x, gamma, beta, n, c, hw, momentum, eps,
                                                          training);
    GA_CUDA_LAUNCH("bn_forward_kernel");
    return GA_OK;
}

/* dy, x, dx (n, c, hw); gamma, save_mean, save_invstd, dgamma, dbeta (c) */
ga_status ga_batchnorm_backward_cuda(float *dx, float *dgamma, float *dbeta, const float *dy,
                                     const float *x, const float *gamma, const float *save_mean,
                                     const float *save_invstd, int64_t n, int64_t c, int64_t hw,
                                     int training)
{
    GA_TRY(ga_check_channels("batchnorm_backward", n, c, hw));
    const int64_t total = n * c * hw;
    GA_CHECK_PTR(dy, total);
    GA_CHECK_PTR(x, total);
    GA_CHECK_PTR(gamma, c);
    GA_CHECK_PTR(save_mean, c);
    GA_CHECK_PTR(save_invstd, c);
    const int need_sums = dgamma || dbeta || (dx && training);
    if (!dx && !need_sums)
        return GA_OK;
    cudaStream_t s;
    GA_TRY(ga_cuda_stream(&s));
    GA_LAUNCH((unsigned)c, kBnThreads, 0, s, bn_backward_kernel)(dx, dgamma, dbeta, dy, x, gamma, save_mean,
                                                           save_invstd, n, c, hw, training, need_sums);
    GA_CUDA_LAUNCH("bn_backward_kernel");
    return GA_OK;
}

/* x (nc, hw) -> y (nc) */
ga_status ga_global_avgpool_forward_cuda(float *y, const float *x, int64_t nc, int64_t hw)
{
    if (nc < 0 || hw <= 0)
        return ga_fail(GA_ERR_VALUE, "global_avgpool: bad shape");
    GA_CHECK_PTR(y, nc);
    GA_CHECK_PTR(x, nc * hw);
    if (nc == 0)
        return GA_OK;
    cudaStream_t s;
    GA_TRY(ga_cuda_stream(&s));
    GA_LAUNCH(ga_cuda_blocks(nc, kThreads), kThreads, 0, s, gap_forward_kernel)(y, x, nc, hw, 1.0f / (float)hw);
    GA_CUDA_LAUNCH("gap_forward_kernel");
    return GA_OK;
}

/* dy (nc) -> dx (nc, hw) */
ga_status ga_global_avgpool_backward_cuda(float *dx, const float *dy, int64_t nc, int64_t hw)
{
    if (nc < 0 || hw <= 0)
        return ga_fail(GA_ERR_VALUE, "global_avgpool_backward: bad shape");
    GA_CHECK_PTR(dx, nc * hw);
    GA_CHECK_PTR(dy, nc);
    if (nc == 0)
        return GA_OK;
    cudaStream_t s;
    GA_TRY(ga_cuda_stream(&s));
    GA_LAUNCH(ga_cuda_blocks(nc * hw, kThreads), kThreads, 0, s, gap_backward_kernel)(dx, dy, nc, hw, 1.0f / (float)hw);
    GA_CUDA_LAUNCH("gap_backward_kernel");
    return GA_OK;
}

/* x (nc, hw) -> y (nc), arg (nc) */
ga_status ga_global_maxpool_forward_cuda(float *y, int32_t *arg, const float *x, int64_t nc, int64_t hw)
{
    GA_TRY(ga_check_rows("global_max_pool2d", nc, hw));
    GA_CHECK_PTR(y, nc);
    GA_CHECK_PTR(arg, nc);
    GA_CHECK_PTR(x, nc * hw);
    if (nc == 0)
        return GA_OK;
    cudaStream_t s;
    GA_TRY(ga_cuda_stream(&s));
    GA_LAUNCH(ga_cuda_blocks(nc, kThreads), kThreads, 0, s, gmp_forward_kernel)(y, arg, x, nc, hw);
    GA_CUDA_LAUNCH("gmp_forward_kernel");
    return GA_OK;
}

/* dy, arg (nc) -> dx (nc, hw), overwritten */
ga_status ga_global_maxpool_backward_cuda(float *dx, const float *dy, const int32_t *arg, int64_t nc, int64_t hw)
{
    GA_TRY(ga_check_rows("global_max_pool2d_backward", nc, hw));
    GA_CHECK_PTR(dx, nc * hw);
    GA_CHECK_PTR(dy, nc);
    GA_CHECK_PTR(arg, nc);
    if (nc == 0)
        return GA_OK;
    cudaStream_t s;
    GA_TRY(ga_cuda_stream(&s));
    GA_LAUNCH(ga_cuda_blocks(nc * hw, kThreads), kThreads, 0, s, gmp_backward_kernel)(dx, dy, arg, nc, hw);
    GA_CUDA_LAUNCH("gmp_backward_kernel");
    return GA_OK;
}

/* y (n) = a + b */
ga_status ga_add_cuda(float *y, const float *a, const float *b, int64_t n)
{
    GA_CHECK_SIZE(n);
    GA_CHECK_PTR(y, n);
    GA_CHECK_PTR(a, n);
    GA_CHECK_PTR(b, n);
    if (n == 0)
        return GA_OK;
    cudaStream_t s;
    GA_TRY(ga_cuda_stream(&s));
    GA_LAUNCH(ga_cuda_blocks(n, kThreads), kThreads, 0, s, add_kernel)(y, a, b, n);
    GA_CUDA_LAUNCH("add_kernel");
    return GA_OK;
}
