/* Fused optimizer updates on the GPU, the twin of csrc/cpu/optim_cpu.c: one
 * pass over the flat parameter block, the same float arithmetic in the same
 * order as the CPU (formulas in core/backend.h). */
#include "cuda/cuda_common.h"

extern "C" {
#include "core/steps.h"
}

#include <cmath>

namespace {

constexpr int kThreads = 256;

__global__ void sgd_plain_kernel(float *__restrict__ w, const float *__restrict__ g, int64_t n,
                                 float lr, float weight_decay)
{
    GA_GRID_STRIDE(i, n) w[i] -= lr * (g[i] + weight_decay * w[i]);
}

__global__ void sgd_momentum_kernel(float *__restrict__ w, float *__restrict__ vel,
                                    const float *__restrict__ g, int64_t n, float lr,
                                    float momentum, float weight_decay, int nesterov)
{
    GA_GRID_STRIDE(i, n) {
        const float gi = g[i] + weight_decay * w[i];
        const float v = momentum * vel[i] + gi;
        vel[i] = v;
        w[i] -= lr * (nesterov ? gi + momentum * v : v);
    }
}

/* t = *step is read on the device (a replayed graph sees the step it is at);
 * one thread per block works out the bias corrections, as the CPU does. */
__global__ void adam_kernel(float *__restrict__ w, float *__restrict__ m, float *__restrict__ v,
                            const float *__restrict__ g, int64_t n, float lr, float beta1,
                            float beta2, float eps, float weight_decay, const int64_t *__restrict__ step)
{
    __shared__ float corr[2];
    if (threadIdx.x == 0) {
        corr[0] = ga_adam_correction(beta1, *step);
        corr[1] = ga_adam_correction(beta2, *step);
    }
    __syncthreads();
    const float c1 = corr[0], c2 = corr[1];
    GA_GRID_STRIDE(i, n) {
        const float gi = g[i] + weight_decay * w[i];
        const float mi = beta1 * m[i] + (1.0f - beta1) * gi;
        const float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        w[i] -= lr * (mi * c1) / (sqrtf(vi * c2) + eps);
    }
}

} // namespace

/* w, vel, g (n); vel unused (may be NULL) when momentum == 0 */
ga_status ga_sgd_update_cuda(float *w, float *vel, const float *g, int64_t n, float lr,
                             float momentum, float weight_decay, int nesterov)
{
    GA_CHECK_SIZE(n);
    GA_CHECK_PTR(w, n);
    GA_CHECK_PTR(g, n);
    if (momentum != 0.0f)
        GA_CHECK_PTR(vel, n);
    if (n == 0)
        return GA_OK;
    cudaStream_t s;
    GA_TRY(ga_cuda_stream(&s));
    if (momentum == 0.0f) {
        GA_LAUNCH(ga_cuda_blocks(n, kThreads), kThreads, 0, s, sgd_plain_kernel)(w, g, n, lr, weight_decay);
        GA_CUDA_LAUNCH("sgd_plain_kernel");
    } else {
        GA_LAUNCH(ga_cuda_blocks(n, kThreads), kThreads, 0, s, sgd_momentum_kernel)(
            w, vel, g, n, lr, momentum, weight_decay, nesterov);
        GA_CUDA_LAUNCH("sgd_momentum_kernel");
    }
    return GA_OK;
}

/* w, m, v, g (n); *step >= 1 (device) is the step number (bias correction) */
ga_status ga_adam_update_cuda(float *w, float *m, float *v, const float *g, int64_t n, float lr,
                              float beta1, float beta2, float eps, float weight_decay, const int64_t *step)
{
    GA_CHECK_SIZE(n);
    GA_CHECK_PTR(step, 1);
    GA_CHECK_PTR(w, n);
    GA_CHECK_PTR(m, n);
    GA_CHECK_PTR(v, n);
    GA_CHECK_PTR(g, n);
    if (n == 0)
        return GA_OK;
    cudaStream_t s;
    GA_TRY(ga_cuda_stream(&s));
    GA_LAUNCH(ga_cuda_blocks(n, kThreads), kThreads, 0, s, adam_kernel)(w, m, v, g, n, lr, beta1, beta2,
                                                                 eps, weight_decay, step);
    GA_CUDA_LAUNCH("adam_kernel");
    return GA_OK;
}
