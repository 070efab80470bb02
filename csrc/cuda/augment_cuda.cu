/* Augmentation kernels on the GPU, the twin of csrc/cpu/augment_cpu.c: the
 * transform and the taps come from core/augment.h, so both devices sample the
 * same points with the same arithmetic. Semantics in core/kernels.def. */
#include "cuda/cuda_common.h"

extern "C" {
#include "core/augment.h"
}

namespace {

constexpr int kThreads = 256;

/* Block (bx, by) serves images by, by + gridDim.y, ...: thread 0 draws the
 * image's map into shared memory once, then each thread takes output pixels
 * of that image (grid-stride in x over h w), computes their taps once and
 * samples every channel through them. The loop over images is uniform across
 * the block, so every thread reaches both barriers. */
__global__ void augment_affine_kernel(float *__restrict__ y, const float *__restrict__ x, int64_t n, int64_t c,
                                      int64_t h, int64_t w, ga_augment a, uint64_t seed,
                                      const int64_t *__restrict__ draw, int64_t offset)
{
    __shared__ float m[6];
    if (draw)
        seed = ga_rng_hash(seed, (uint64_t)(*draw + offset));
    const int64_t plane = h * w;
    for (int64_t i = blockIdx.y; i < n; i += gridDim.y) {
        if (threadIdx.x == 0)
            ga_augment_matrix(m, &a, seed, i, h, w);
        __syncthreads();
        const float mm[6] = {m[0], m[1], m[2], m[3], m[4], m[5]};
        const float *src = x + i * c * plane;
        float *dst = y + i * c * plane;
        for (int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; p < plane; p += (int64_t)gridDim.x * blockDim.x) {
            const int64_t oy = p / w, ox = p - oy * w;
            ga_aug_taps t;
            ga_augment_taps(&t, mm, a.fill_mode, a.interpolation, ox, oy, h, w);
            for (int64_t ch = 0; ch < c; ch++)
                dst[ch * plane + p] = ga_augment_sample(&t, src + ch * plane, a.fill_value, a.interpolation);
        }
        __syncthreads(); /* m is read by all before thread 0 overwrites it */
    }
}

/* y may alias x: no __restrict__. */
__global__ void scale_shift_kernel(float *y, const float *x, int64_t n, float scale, float offset)
{
    GA_GRID_STRIDE(i, n) y[i] = fmaf(x[i], scale, offset);
}

} // namespace

ga_status ga_augment_affine_cuda(float *y, const float *x, int64_t n, int64_t c, int64_t h, int64_t w,
                                 const ga_augment *a, uint64_t seed, const int64_t *draw, int64_t offset)
{
    GA_TRY(ga_check_augment("augment_affine", a, n, c, h, w));
    const int64_t count = n * c * h * w;
    GA_CHECK_PTR(y, count);
    GA_CHECK_PTR(x, count);
    if (count > 0 && y == x)
        return ga_fail(GA_ERR_VALUE, "augment_affine: y must not alias x");
    if (count == 0)
        return GA_OK;
    cudaStream_t s;
    GA_TRY(ga_cuda_stream(&s));
    const int64_t plane = h * w;
    int64_t bx = (plane + kThreads - 1) / kThreads;
    bx = bx < 4096 ? bx : 4096;
    const int64_t by = n < 65535 ? n : 65535;
    GA_LAUNCH(dim3((unsigned)bx, (unsigned)by), kThreads, 0, s, augment_affine_kernel)(y, x, n, c, h, w, *a, seed,
                                                                                      draw, offset);
    GA_CUDA_LAUNCH("augment_affine_kernel");
    return GA_OK;
}

ga_status ga_scale_shift_cuda(float *y, const float *x, int64_t n, float scale, float offset)
{
    GA_CHECK_SIZE(n);
    GA_CHECK_PTR(y, n);
    GA_CHECK_PTR(x, n);
    if (!(isfinite(scale) && isfinite(offset)))
        return ga_fail(GA_ERR_VALUE, "scale_shift: scale and offset must be finite, got %g, %g", (double)scale,
                       (double)offset);
    if (n == 0)
        return GA_OK;
    cudaStream_t s;
    GA_TRY(ga_cuda_stream(&s));
    GA_LAUNCH(ga_cuda_blocks(n, kThreads), kThreads, 0, s, scale_shift_kernel)(y, x, n, scale, offset);
    GA_CUDA_LAUNCH("scale_shift_kernel");
    return GA_OK;
}
