/* Softmax cross-entropy on the GPU, the twin of csrc/cpu/loss_cpu.c.
 *
 * One warp per row, the same arithmetic as the CPU (float differences from the
 * row maximum, exp/log in double, argmax by np.argmax's rule). The whole
 * batch runs in ONE block so the batch sums are reduced in a fixed order and
 * added to stats by one thread: the reported loss is bit-for-bit repeatable run
 * after run (atomicAdd across blocks would not be). A batch is a few hundred
 * rows of a few classes, far below what one block handles in microseconds. */
#include "cuda/cuda_common.h"

#include <cmath>
#include <cstdint>

namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;

/* argmax, NumPy's rule (np.argmax), the same on the CPU: a NaN is the maximum, so the
 * first NaN wins; otherwise the first maximum wins ties. On (value, index) pairs this
 * keeps the greater of a strict total order (NaN above every number; among NaNs and
 * among equal values the lower index is greater), so the selection is commutative and
 * associative: every lane of the butterfly ends with the same pair, whatever order the
 * pairs meet in. (-inf, INT64_MAX) is its identity: any element of the row beats it. */
__device__ __forceinline__ void better(float &v, int64_t &i, float v2, int64_t i2)
{
    const bool nan = std::isnan(v), nan2 = std::isnan(v2);
    const bool take = (nan || nan2) ? nan2 && (!nan || i2 < i)
                                    : v2 > v || (v2 == v && i2 < i);
    if (take) {
        v = v2;
        i = i2;
    }
}

__global__ void __launch_bounds__(kThreads)
softmax_xent_kernel(float *__restrict__ stats, float *__restrict__ dlogits,
                    const float *__restrict__ logits, const int32_t *__restrict__ labels,
                    int64_t n, int64_t classes, float grad_scale)
{
    __shared__ double warp_loss[kWarps];
    __shared__ long long warp_correct[kWarps];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    double loss = 0.0;
    long long correct = 0;

    for (int64_t row = warp; row < n; row += kWarps) {
        const float *z = logits + row * classes;
        const int32_t label = labels[row];
        /* argmax by better()'s rule, starting from its identity */
        float zmax = -INFINITY;
        int64_t best = INT64_MAX;
        for (int64_t j = lane; j < classes; j += 32)
            better(zmax, best, z[j], j);
        for (int off = 16; off > 0; off /= 2) {
            const float v2 = __shfl_xor_sync(0xffffffffu, zmax, off);
            const long long i2 = __shfl_xor_sync(0xffffffffu, (long long)best, off);
            better(zmax, best, v2, i2);
        }
        /* classes >= 1, so lane 0 held a real element and best < classes: an all-NaN
         * row gives (NaN, 0), as np.argmax and the CPU do. zmax is NaN for a row with
         * a NaN, and its loss and dlogits are NaN, on both devices. */
        double sum = 0.0;
        for (int64_t j = lane; j < classes; j += 32)
            sum += exp((double)(z[j] - zmax));
        for (int off = 16; off > 0; off /= 2)
            sum += __shfl_xor_sync(0xffffffffu, sum, off);
        const double log_sum = log(sum);
        const bool valid = label >= 0 && label < classes; /* the caller checks; never read outside */
        if (lane == 0 && valid) {
            loss += log_sum - (double)(z[label] - zmax);
            correct += best == label;
        }
        if (dlogits) {
            float *d = dlogits + row * classes;
            for (int64_t j = lane; j < classes; j += 32) {
                const double p = exp((double)(z[j] - zmax) - log_sum);
                d[j] = valid ? (float)(p - (j == label)) * grad_scale : 0.0f;
            }
        }
    }
    if (lane == 0) {
        warp_loss[warp] = loss;
        warp_correct[warp] = correct;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        double total = 0.0;
        long long hits = 0;
        for (int w = 0; w < kWarps; w++) {
            total += warp_loss[w];
            hits += warp_correct[w];
        }
        stats[0] += (float)total;
        stats[1] += (float)hits;
    }
}

} // namespace

/* stats (2), dlogits (n, classes) or NULL, logits (n, classes), labels (n) int32 */
ga_status ga_softmax_xent_cuda(float *stats, float *dlogits, const float *logits,
                               const int32_t *labels, int64_t n, int64_t classes,
                               float grad_scale)
{
    GA_CHECK_SIZE(n);
    if (classes <= 0)
        return ga_fail(GA_ERR_VALUE, "softmax_xent: classes must be > 0, got %lld",
                       (long long)classes);
    GA_CHECK_PTR(stats, 2);
    GA_CHECK_PTR(logits, n * classes);
    GA_CHECK_PTR(labels, n);
    if (n == 0)
        return GA_OK;
    cudaStream_t s;
    GA_TRY(ga_cuda_stream(&s));
    GA_LAUNCH(1, kThreads, 0, s, softmax_xent_kernel)(stats, dlogits, logits, labels, n, classes,
                                               grad_scale);
    GA_CUDA_LAUNCH("softmax_xent_kernel");
    return GA_OK;
}
