/* 2-D convolution on the GPU (zero padding), the twin of csrc/cpu/conv_cpu.c.
 * Shapes in core/backend.h: x (n, c, h, w), w (k, c, r, s), y (n, k, p, q),
 * col (c r s, n p q).
 *
 * FAST / BLAS: the whole batch is lowered to one GEMM (im2col), run by the
 * hand-written SGEMM or by cuBLAS; a transposing epilogue turns the GEMM result
 * (k, n p q) into NCHW with bias and activation. Backward transposes dy to (k, n p q)
 * and runs two GEMMs (dw = dy col^T, dcol = w^T dy); col2im is a gather (each
 * dx element sums its own patch entries), so no atomics and a fixed order.
 * REF: direct loops from x, one thread per output element, in the CPU
 * reference's summation order. */
#include "cuda/cuda_common.h"

namespace {

constexpr int kThreads = 256;

ga_status check_variant(int variant)
{
    if (variant == GA_VARIANT_WINOGRAD2 || variant == GA_VARIANT_WINOGRAD4)
        return ga_fail(GA_ERR_VALUE, "conv2d: the Winograd kernels run on the CPU only; use kernel='im2col' or "
                                     "'auto' on a CUDA device");
    if (variant != GA_VARIANT_FAST && variant != GA_VARIANT_REF && variant != GA_VARIANT_BLAS)
        return ga_fail(GA_ERR_VALUE, "conv2d: unknown kernel variant %d", variant);
    return GA_OK;
}

/* Sizes passed by value to kernels (the shape struct lives on the host). */
struct Geo {
    int64_t n, c, h, w, k, r, s, stride, pad, p, q;
};
Geo geo(const ga_conv_shape *s)
{
    return Geo{s->n, s->c, s->h, s->w, s->k, s->r, s->s, s->stride, s->pad, s->p, s->q};
}

/* col (c r s, n p q): one thread per entry, writes coalesced along n p q. */
__global__ void im2col_kernel(float *__restrict__ col, const float *__restrict__ x, Geo g)
{
    const int64_t pq = g.p * g.q, npq = g.n * pq;
    GA_GRID_STRIDE(t, g.c * g.r * g.s * npq) {
        const int64_t row = t / npq, cj = t % npq;
        const int64_t img = cj / pq, i = (cj % pq) / g.q, j = cj % g.q;
        const int64_t c = row / (g.r * g.s), kr = (row / g.s) % g.r, ks = row % g.s;
        const int64_t hi = i * g.stride - g.pad + kr, wi = j * g.stride - g.pad + ks;
        col[t] = (hi >= 0 && hi < g.h && wi >= 0 && wi < g.w)
                     ? x[((img * g.c + c) * g.h + hi) * g.w + wi]
                     : 0.0f;
    }
}

/* y (n, k, pq) = gemm result (k, n, pq) + bias, ReLU */
__global__ void conv_epilogue_kernel(float *__restrict__ y, const float *__restrict__ res,
                                     const float *__restrict__ b, ga_act act, Geo g)
{
    const int64_t pq = g.p * g.q, npq = g.n * pq;
    GA_GRID_STRIDE(t, g.n * g.k * pq) {
        const int64_t img = t / (g.k * pq), k = (t / pq) % g.k, e = t % pq;
        float v = res[k * npq + img * pq + e] + (b ? b[k] : 0.0f);
        y[t] = ga_act_eval(act.kind, act.alpha, v);
    }
}

/* dyt (k, n pq) = dy (n, k, pq) transposed over the first two axes */
__global__ void transpose_dy_kernel(float *__restrict__ dyt, const float *__restrict__ dy, Geo g)
{
    const int64_t pq = g.p * g.q, npq = g.n * pq;
    GA_GRID_STRIDE(t, g.k * npq) {
        const int64_t k = t / npq, cj = t % npq, img = cj / pq, e = cj % pq;
        dyt[t] = dy[(img * g.k + k) * pq + e];
    }
}

/* out[row] = sum of x (rows, len) row: one block per row, a fixed tree order. */
__global__ void row_sum_kernel(float *__restrict__ out, const float *__restrict__ x, int64_t len)
{
    __shared__ float part[kThreads];
    const float *xr = x + (int64_t)blockIdx.x * len;
    float acc = 0.0f;
    for (int64_t i = threadIdx.x; i < len; i += kThreads)
        acc += xr[i];
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int step = kThreads / 2; step > 0; step /= 2) {
        if (threadIdx.x < step)
            part[threadIdx.x] += part[threadIdx.x + step];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        out[blockIdx.x] = part[0];
}

/* dx (n, c, h, w) = col2im(dcol): each input pixel gathers the patch entries it
 * was copied to, in (kr, ks) order as on the CPU. */
__global__ void col2im_kernel(float *__restrict__ dx, const float *__restrict__ dcol, Geo g)
{
    const int64_t pq = g.p * g.q, npq = g.n * pq;
    GA_GRID_STRIDE(t, g.n * g.c * g.h * g.w) {
        const int64_t wi = t % g.w, hi = (t / g.w) % g.h, c = (t / (g.w * g.h)) % g.c,
                      img = t / (g.w * g.h * g.c);
        float acc = 0.0f;
        for (int64_t kr = 0; kr < g.r; kr++) {
            const int64_t hp = hi + g.pad - kr; /* = i * stride for the output row i */
            if (hp < 0 || hp % g.stride != 0 || hp / g.stride >= g.p)
                continue;
            const int64_t i = hp / g.stride;
            for (int64_t ks = 0; ks < g.s; ks++) {
                const int64_t wp = wi + g.pad - ks;
                if (wp < 0 || wp % g.stride != 0 || wp / g.stride >= g.q)
                    continue;
                const int64_t j = wp / g.stride;
                acc += dcol[((c * g.r + kr) * g.s + ks) * npq + img * pq + i * g.q + j];
            }
        }
        dx[t] = acc;
    }
}

/* ---- reference: the definition, one thread per output element ---- */

__global__ void conv_forward_ref_kernel(float *__restrict__ y, const float *__restrict__ x,
                                        const float *__restrict__ w, const float *__restrict__ b,
                                        ga_act act, Geo g)
{
    GA_GRID_STRIDE(t, g.n * g.k * g.p * g.q) {
        const int64_t j = t % g.q, i = (t / g.q) % g.p, k = (t / (g.q * g.p)) % g.k,
                      img = t / (g.q * g.p * g.k);
        float acc = b ? b[k] : 0.0f;
        for (int64_t c = 0; c < g.c; c++)
            for (int64_t kr = 0; kr < g.r; kr++)
                for (int64_t ks = 0; ks < g.s; ks++) {
                    const int64_t hi = i * g.stride - g.pad + kr, wi = j * g.stride - g.pad + ks;
                    if (hi >= 0 && hi < g.h && wi >= 0 && wi < g.w)
                        acc += x[((img * g.c + c) * g.h + hi) * g.w + wi] *
                               w[((k * g.c + c) * g.r + kr) * g.s + ks];
                }
        y[t] = ga_act_eval(act.kind, act.alpha, acc);
    }
}

/* dw (k, c, r, s) = sum over n, p, q of dy * x; db (k) = sum of dy (thread per k) */
__global__ void conv_dw_ref_kernel(float *__restrict__ dw, float *__restrict__ db,
                                   const float *__restrict__ x, const float *__restrict__ dy, Geo g)
{
    GA_GRID_STRIDE(t, g.k * g.c * g.r * g.s) {
        const int64_t ks = t % g.s, kr = (t / g.s) % g.r, c = (t / (g.s * g.r)) % g.c,
                      k = t / (g.s * g.r * g.c);
        float acc = 0.0f, bacc = 0.0f;
        for (int64_t img = 0; img < g.n; img++)
            for (int64_t i = 0; i < g.p; i++)
                for (int64_t j = 0; j < g.q; j++) {
                    const float gy = dy[((img * g.k + k) * g.p + i) * g.q + j];
                    bacc += gy;
                    const int64_t hi = i * g.stride - g.pad + kr, wi = j * g.stride - g.pad + ks;
                    if (hi >= 0 && hi < g.h && wi >= 0 && wi < g.w)
                        acc += gy * x[((img * g.c + c) * g.h + hi) * g.w + wi];
                }
        dw[t] = acc;
        if (db && c == 0 && kr == 0 && ks == 0)
            db[k] = bacc;
    }
}

/* dx (n, c, h, w) = sum over k and the windows covering it of dy * w, in the
 * CPU reference's order (k, then output position ascending). */
__global__ void conv_dx_ref_kernel(float *__restrict__ dx, const float *__restrict__ w,
                                   const float *__restrict__ dy, Geo g)
{
    GA_GRID_STRIDE(t, g.n * g.c * g.h * g.w) {
        const int64_t wi = t % g.w, hi = (t / g.w) % g.h, c = (t / (g.w * g.h)) % g.c,
                      img = t / (g.w * g.h * g.c);
        float acc = 0.0f;
        for (int64_t k = 0; k < g.k; k++)
            for (int64_t kr = g.r - 1; kr >= 0; kr--) {
                const int64_t hp = hi + g.pad - kr;
                if (hp < 0 || hp % g.stride != 0 || hp / g.stride >= g.p)
                    continue;
                for (int64_t ks = g.s - 1; ks >= 0; ks--) {
                    const int64_t wp = wi + g.pad - ks;
                    if (wp < 0 || wp % g.stride != 0 || wp / g.stride >= g.q)
                        continue;
                    acc += dy[((img * g.k + k) * g.p + hp / g.stride) * g.q + wp / g.stride] *
                           w[((k * g.c + c) * g.r + kr) * g.s + ks];
                }
            }
        dx[t] = acc;
    }
}

} // namespace

/* col (c r s, n p q) = im2col(x (n, c, h, w)) */
ga_status ga_im2col_cuda(float *col, const float *x, const ga_conv_shape *s)
{
    GA_TRY(ga_check_conv("im2col", s));
    const int64_t total = ga_conv_col_floats(s);
    if (total == 0)
        return GA_OK;
    GA_CHECK_PTR(col, total);
    GA_CHECK_PTR(x, total);
    cudaStream_t st;
    GA_TRY(ga_cuda_stream(&st));
    GA_LAUNCH(ga_cuda_blocks(total, kThreads), kThreads, 0, st, im2col_kernel)(col, x, geo(s));
    GA_CUDA_LAUNCH("im2col_kernel");
    return GA_OK;
}

/* y (n, k, p, q) = act(conv(x (n, c, h, w), w (k, c, r, s)) + b (k));
 * col (c r s, n p q) and ws (k, n p q) are scratch (unused by REF). */
ga_status ga_conv2d_forward_cuda(float *y, float *col, float *ws, const float *x, const float *w,
                                 const float *b, ga_act act, const ga_conv_shape *s, int variant)
{
    GA_TRY(ga_check_conv("conv2d", s));
    GA_TRY(ga_check_act("conv2d", act));
    GA_TRY(check_variant(variant));
    if (s->n == 0)
        return GA_OK;
    if (!y || !x || !w)
        return ga_fail(GA_ERR_VALUE, "conv2d: NULL argument");
    const Geo g = geo(s);
    const int64_t crs = s->c * s->r * s->s, pq = s->p * s->q, npq = s->n * pq;
    cudaStream_t st;
    GA_TRY(ga_cuda_stream(&st));
    if (variant == GA_VARIANT_REF) {
        GA_LAUNCH(ga_cuda_blocks(s->k * npq, kThreads), kThreads, 0, st, conv_forward_ref_kernel)(
            y, x, w, b, act, g);
        GA_CUDA_LAUNCH("conv_forward_ref_kernel");
        return GA_OK;
    }
    if (!col || !ws)
        return ga_fail(GA_ERR_VALUE, "conv2d: NULL workspace");
    GA_TRY(ga_im2col_cuda(col, x, s));
    GA_TRY(ga_gemm_cuda(ws, w, col, 0, 0, s->k, npq, crs, crs, npq, npq, 1.0f, 0.0f, variant));
    GA_LAUNCH(ga_cuda_blocks(s->k * npq, kThreads), kThreads, 0, st, conv_epilogue_kernel)(y, ws, b, act, g);
    GA_CUDA_LAUNCH("conv_epilogue_kernel");
    return GA_OK;
}

/* dy (n, k, p, q) -> dw (k, c, r, s), db (k) or NULL, dx (n, c, h, w) or NULL.
 * FAST/BLAS read col (c r s, n p q) left by forward and use ws
 * (ga_conv_bwd_ws_floats: dy as (k, n p q), then dcol); REF reads x. */
ga_status ga_conv2d_backward_cuda(float *dx, float *dw, float *db, float *ws, const float *x,
                                  float *col, const float *w, const float *dy,
                                  const ga_conv_shape *s, int variant)
{
    GA_TRY(ga_check_conv("conv2d_backward", s));
    GA_TRY(check_variant(variant));
    const int64_t crs = s->c * s->r * s->s, pq = s->p * s->q, npq = s->n * pq;
    if (!w || (npq > 0 && !dy))
        return ga_fail(GA_ERR_VALUE, "conv2d_backward: NULL argument");
    if (!dw)
        db = NULL; /* a frozen layer: input gradient only */
    const Geo g = geo(s);
    const int64_t nx = s->n * s->c * s->h * s->w;
    cudaStream_t st;
    GA_TRY(ga_cuda_stream(&st));
    if (variant == GA_VARIANT_REF) {
        if (npq > 0 && !x)
            return ga_fail(GA_ERR_VALUE, "conv2d_backward: NULL x");
        if (dw) {
            GA_LAUNCH(ga_cuda_blocks(s->k * crs, kThreads), kThreads, 0, st, conv_dw_ref_kernel)(dw, db, x, dy, g);
            GA_CUDA_LAUNCH("conv_dw_ref_kernel");
        }
        if (dx && nx > 0) {
            GA_LAUNCH(ga_cuda_blocks(nx, kThreads), kThreads, 0, st, conv_dx_ref_kernel)(dx, w, dy, g);
            GA_CUDA_LAUNCH("conv_dx_ref_kernel");
        }
        return GA_OK;
    }
    if (npq > 0 && (!ws || (dw && !col)))
        return ga_fail(GA_ERR_VALUE, "conv2d_backward: NULL workspace or col");
    float *dyt = ws, *dcol = ws ? ws + s->k * npq : NULL;
    if (npq > 0) {
        GA_LAUNCH(ga_cuda_blocks(s->k * npq, kThreads), kThreads, 0, st, transpose_dy_kernel)(dyt, dy, g);
        GA_CUDA_LAUNCH("transpose_dy_kernel");
    }
    /* dw (k, crs) = dyt (k, npq) * col^T; npq == 0 gives zeros */
    if (dw)
        GA_TRY(ga_gemm_cuda(dw, dyt, col, 0, 1, s->k, crs, npq, npq, npq, crs, 1.0f, 0.0f, variant));
    if (db) {
        GA_LAUNCH((unsigned)s->k, kThreads, 0, st, row_sum_kernel)(db, dyt, npq);
        GA_CUDA_LAUNCH("row_sum_kernel");
    }
    if (dx && nx > 0) {
        /* dcol (crs, npq) = w^T (crs, k) * dyt (k, npq) */
        GA_TRY(ga_gemm_cuda(dcol, w, dyt, 1, 0, crs, npq, s->k, crs, npq, npq, 1.0f, 0.0f, variant));
        GA_LAUNCH(ga_cuda_blocks(nx, kThreads), kThreads, 0, st, col2im_kernel)(dx, dcol, g);
        GA_CUDA_LAUNCH("col2im_kernel");
    }
    return GA_OK;
}
