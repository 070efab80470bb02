/* Max and average pooling on the GPU, the twin of csrc/cpu/pool_cpu.c. Shapes in
 * core/backend.h: x (n, c, h, w) -> y, arg (n, c, p, q), no padding. */
#include "cuda/cuda_common.h"

namespace {

constexpr int kThreads = 256;

/* One thread per output; strict > so the first maximum (raster order) wins ties. */
__global__ void maxpool_forward_kernel(float *__restrict__ y, int32_t *__restrict__ arg,
                                       const float *__restrict__ x, int64_t planes, int64_t h,
                                       int64_t w, int64_t p, int64_t q, int64_t size,
                                       int64_t stride)
{
    GA_GRID_STRIDE(t, planes * p * q) {
        const int64_t plane = t / (p * q), i = (t / q) % p, j = t % q;
        const float *xp = x + plane * h * w;
        const int64_t h0 = i * stride, w0 = j * stride;
        int64_t best = h0 * w + w0;
        float m = xp[best];
        for (int64_t r = 0; r < size; r++)
            for (int64_t c = 0; c < size; c++) {
                const int64_t idx = (h0 + r) * w + (w0 + c);
                const float v = xp[idx];
                if (v > m) {
                    m = v;
                    best = idx;
                }
            }
        y[t] = m;
        arg[t] = (int32_t)best;
    }
}

/* Gather form: each dx element sums dy over the windows that chose it, in the
 * windows' raster order (the CPU's order), so overlapping windows need no atomics. */
__global__ void maxpool_backward_kernel(float *__restrict__ dx, const float *__restrict__ dy,
                                        const int32_t *__restrict__ arg, int64_t planes, int64_t h,
                                        int64_t w, int64_t p, int64_t q, int64_t size,
                                        int64_t stride)
{
    GA_GRID_STRIDE(t, planes * h * w) {
        const int64_t plane = t / (h * w), hi = (t / w) % h, wi = t % w;
        const int32_t me = (int32_t)(hi * w + wi);
        /* windows i with i*stride <= hi < i*stride + size */
        const int64_t i0 = hi - size + 1 <= 0 ? 0 : (hi - size + stride) / stride;
        const int64_t j0 = wi - size + 1 <= 0 ? 0 : (wi - size + stride) / stride;
        const int64_t i1 = min(p - 1, hi / stride), j1 = min(q - 1, wi / stride);
        const float *dyp = dy + plane * p * q;
        const int32_t *ap = arg + plane * p * q;
        float acc = 0.0f;
        for (int64_t i = i0; i <= i1; i++)
            for (int64_t j = j0; j <= j1; j++)
                if (ap[i * q + j] == me)
                    acc += dyp[i * q + j];
        dx[t] = acc;
    }
}

/* One thread per output: the window summed in raster order (the CPU's order), then scaled. */
__global__ void avgpool_forward_kernel(float *__restrict__ y, const float *__restrict__ x, int64_t planes,
                                       int64_t h, int64_t w, int64_t p, int64_t q, int64_t size,
                                       int64_t stride, float inv)
{
    GA_GRID_STRIDE(t, planes * p * q) {
        const int64_t plane = t / (p * q), i = (t / q) % p, j = t % q;
        const float *win = x + plane * h * w + i * stride * w + j * stride;
        float acc = 0.0f;
        for (int64_t r = 0; r < size; r++)
            for (int64_t c = 0; c < size; c++)
                acc += win[r * w + c];
        y[t] = acc * inv;
    }
}

/* Gather form: each dx element sums dy over the windows that hold it, in the
 * windows' raster order, then scales once (as the CPU): no atomics, and the
 * same rounding on both devices. */
__global__ void avgpool_backward_kernel(float *__restrict__ dx, const float *__restrict__ dy, int64_t planes,
                                        int64_t h, int64_t w, int64_t p, int64_t q, int64_t size,
                                        int64_t stride, float inv)
{
    GA_GRID_STRIDE(t, planes * h * w) {
        const int64_t plane = t / (h * w), hi = (t / w) % h, wi = t % w;
        /* windows i with i*stride <= hi < i*stride + size (none in a gap of stride > size) */
        const int64_t i0 = hi - size + 1 <= 0 ? 0 : (hi - size + stride) / stride;
        const int64_t j0 = wi - size + 1 <= 0 ? 0 : (wi - size + stride) / stride;
        const int64_t i1 = min(p - 1, hi / stride), j1 = min(q - 1, wi / stride);
        const float *dyp = dy + plane * p * q;
        float acc = 0.0f;
        for (int64_t i = i0; i <= i1; i++)
            for (int64_t j = j0; j <= j1; j++)
                acc += dyp[i * q + j];
        dx[t] = acc * inv;
    }
}

} // namespace

/* x (n, c, h, w) -> y (n, c, p, q), arg (n, c, p, q) flat h*w index of each max */
ga_status ga_maxpool_forward_cuda(float *y, int32_t *arg, const float *x, const ga_pool_shape *s)
{
    GA_TRY(ga_check_pool("max_pool2d", s));
    const int64_t planes = s->n * s->c, total = planes * s->p * s->q;
    if (total == 0)
        return GA_OK;
    GA_CHECK_PTR(y, total);
    GA_CHECK_PTR(arg, total);
    GA_CHECK_PTR(x, total);
    cudaStream_t st;
    GA_TRY(ga_cuda_stream(&st));
    GA_LAUNCH(ga_cuda_blocks(total, kThreads), kThreads, 0, st, maxpool_forward_kernel)(
        y, arg, x, planes, s->h, s->w, s->p, s->q, s->size, s->stride);
    GA_CUDA_LAUNCH("maxpool_forward_kernel");
    return GA_OK;
}

/* dy, arg (n, c, p, q) -> dx (n, c, h, w), overwritten */
ga_status ga_maxpool_backward_cuda(float *dx, const float *dy, const int32_t *arg,
                                   const ga_pool_shape *s)
{
    GA_TRY(ga_check_pool("max_pool2d_backward", s));
    const int64_t planes = s->n * s->c, total = planes * s->h * s->w;
    if (total == 0)
        return GA_OK;
    GA_CHECK_PTR(dx, total);
    GA_CHECK_PTR(dy, total);
    GA_CHECK_PTR(arg, total);
    cudaStream_t st;
    GA_TRY(ga_cuda_stream(&st));
    GA_LAUNCH(ga_cuda_blocks(total, kThreads), kThreads, 0, st, maxpool_backward_kernel)(
        dx, dy, arg, planes, s->h, s->w, s->p, s->q, s->size, s->stride);
    GA_CUDA_LAUNCH("maxpool_backward_kernel");
    return GA_OK;
}

/* x (n, c, h, w) -> y (n, c, p, q) window means */
ga_status ga_avgpool_forward_cuda(float *y, const float *x, const ga_pool_shape *s)
{
    GA_TRY(ga_check_pool("avg_pool2d", s));
    const int64_t planes = s->n * s->c, total = planes * s->p * s->q;
    if (total == 0)
        return GA_OK;
    GA_CHECK_PTR(y, total);
    GA_CHECK_PTR(x, total);
    cudaStream_t st;
    GA_TRY(ga_cuda_stream(&st));
    GA_LAUNCH(ga_cuda_blocks(total, kThreads), kThreads, 0, st, avgpool_forward_kernel)(
        y, x, planes, s->h, s->w, s->p, s->q, s->size, s->stride, 1.0f / (float)(s->size * s->size));
    GA_CUDA_LAUNCH("avgpool_forward_kernel");
    return GA_OK;
}

/* dy (n, c, p, q) -> dx (n, c, h, w), overwritten */
ga_status ga_avgpool_backward_cuda(float *dx, const float *dy, const ga_pool_shape *s)
{
    GA_TRY(ga_check_pool("avg_pool2d_backward", s));
    const int64_t planes = s->n * s->c, total = planes * s->h * s->w;
    if (total == 0)
        return GA_OK;
    GA_CHECK_PTR(dx, total);
    GA_CHECK_PTR(dy, total);
    cudaStream_t st;
    GA_TRY(ga_cuda_stream(&st));
    GA_LAUNCH(ga_cuda_blocks(total, kThreads), kThreads, 0, st, avgpool_backward_kernel)(
        dx, dy, planes, s->h, s->w, s->p, s->q, s->size, s->stride, 1.0f / (float)(s->size * s->size));
    GA_CUDA_LAUNCH("avgpool_backward_kernel");
    return GA_OK;
}
