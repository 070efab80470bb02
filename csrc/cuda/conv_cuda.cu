/* 2-D convolution on the GPU (zero padding), the twin of csrc/cpu/conv_cpu.c.
 * Shapes in core/backend.h: x (n, c, h, w), w (k, c, r, s), y (n, k, p, q),
 * col (c r s, n p q).
 *
 * FAST / BLAS: the whole batch is lowered to one GEMM (im2col), run by the
 * hand-written SGEMM or by cuBLAS; a transposing epilogue turns the GEMM result
 * (k, n p q) into NCHW with bias and activation. Backward transposes dy to (k, n p q)
 * and runs two GEMMs (dw = dy col^T, dcol = w^T dy); col2im is a gather (each
 * dx element sums its own patch entries), so no atomics and a fixed order.
 * IMPLICIT: the same three products without col or dcol in memory
 * (conv_implicit_cuda.cu); what 'auto' runs here (conv2d_choose below).
 * REF: direct loops from x, one thread per output element, in the CPU
 * reference's summation order.
 *
 * Conv + max pool (conv2d_pool_*): with IMPLICIT and a 2x2, stride-2 pool the
 * implicit GEMM orders its columns window by window and pools in its epilogue,
 * in registers (conv_implicit_cuda.cu, FwdPool2Op): the conv output is never
 * stored. Otherwise two passes: the conv's plain sums go to ws as (k, n p q)
 * (im2col GEMM or implicit GEMM), then one kernel adds the bias, applies the
 * activation and pools with the CPU's rule (strict >: the first maximum in
 * raster order wins, a NaN only as a window's first element); there a window
 * can straddle the GEMM's column tiles. The backward gathers dy through arg
 * (times the activation's derivative at the pooled y) straight into the
 * (k, n p q) layout both backward paths read, in the pooled outputs' raster
 * order, which is the CPU's scatter order: no atomics, the CPU's sums. */
#include "cuda/conv_cuda.h"

#include <cstdlib>
#include <cstring>

namespace {

constexpr int kThreads = 256;

/* The variants the entry points run here; the Winograd ones are CPU only, and
 * anything else (an unknown number, a flag bit such as a precision mode this
 * code does not implement) is refused rather than guessed at. */
ga_status check_variant(const char *op, int variant, int pool)
{
    if (variant == GA_VARIANT_WINOGRAD2 || variant == GA_VARIANT_WINOGRAD4)
        return ga_fail(GA_ERR_VALUE, "%s: the Winograd kernels run on the CPU only; use kernel='implicit', "
                                     "'im2col' or 'auto' on a CUDA device", op);
    if (variant == GA_VARIANT_FAST || variant == GA_VARIANT_BLAS || variant == GA_VARIANT_IMPLICIT ||
        (!pool && variant == GA_VARIANT_REF))
        return GA_OK;
    /* TF32: the im2col paths hand the flag to their GEMMs (tensor cores) */
    if (variant == (GA_VARIANT_FAST | GA_PRECISION_TF32) || variant == (GA_VARIANT_BLAS | GA_PRECISION_TF32))
        return GA_OK;
    if (ga_variant_tf32(variant) && (ga_variant_base(variant) == GA_VARIANT_IMPLICIT ||
                                     ga_variant_base(variant) == GA_VARIANT_REF))
        return ga_fail(GA_ERR_VALUE, "%s: the %s convolution computes in fp32; with precision 'tf32' use "
                                     "kernel='im2col' or 'auto' (im2col on the tensor cores)", op,
                       ga_variant_base(variant) == GA_VARIANT_IMPLICIT ? "implicit-GEMM" : "reference");
    return ga_fail(GA_ERR_VALUE, "%s: unknown kernel variant %d (0x%x) on CUDA: expected im2col (%d), %s"
                   "cuBLAS (%d) or implicit (%d)", op, variant, (unsigned)variant, GA_VARIANT_FAST,
                   pool ? "" : "ref (1), ", GA_VARIANT_BLAS, GA_VARIANT_IMPLICIT);
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

/* db[k] = sum over images and positions of d (element (img, k, e) at
 * d[img s_img + k s_k + e]): one block per k, thread t takes the flat indices
 * t, t + 256, ... of the (n, p q) plane, then a fixed tree, so the order is
 * fixed. For the (k, n p q) layout that is the plain row sum. */
__global__ void bias_grad_kernel(float *__restrict__ db, const float *__restrict__ d, int64_t n, int64_t pq,
                                 int64_t s_img, int64_t s_k)
{
    __shared__ float part[kThreads];
    const float *dk = d + (int64_t)blockIdx.x * s_k;
    float acc = 0.0f;
    if (s_img == pq) /* (k, n p q): a contiguous row, no index arithmetic (same order) */
        for (int64_t i = threadIdx.x; i < n * pq; i += kThreads)
            acc += dk[i];
    else
        for (int64_t i = threadIdx.x; i < n * pq; i += kThreads)
            acc += dk[(i / pq) * s_img + i % pq];
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int step = kThreads / 2; step > 0; step /= 2) {
        if (threadIdx.x < step)
            part[threadIdx.x] += part[threadIdx.x + step];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        db[blockIdx.x] = part[0];
}

/* The fused pool's forward epilogue: res (k, n p q) holds the conv's plain sums;
 * one thread per pooled output (n, k, pp, pq) takes act(sum + b) over its window
 * with the CPU's rule (conv_cpu.c ga_conv_store_pooled): the window's first
 * element first, then strict >, so the first maximum in raster order wins and a
 * NaN wins only as the first element. arg is the flat p q index of the max. */
__global__ void pool_epilogue_kernel(float *__restrict__ y, int32_t *__restrict__ arg, const float *__restrict__ res,
                                     const float *__restrict__ b, ga_act act, Geo g, int64_t size, int64_t pstride,
                                     int64_t pp, int64_t pqq)
{
    const int64_t pq = g.p * g.q, npq = g.n * pq, ppq = pp * pqq;
    GA_GRID_STRIDE(t, g.n * g.k * ppq) {
        const int64_t plane = t / ppq, img = plane / g.k, k = plane % g.k;
        const int64_t i = (t % ppq) / pqq, j = t % pqq;
        const float *src = res + k * npq + img * pq;
        const float bias = b ? b[k] : 0.0f;
        int64_t best = i * pstride * g.q + j * pstride;
        float m = ga_act_eval(act.kind, act.alpha, src[best] + bias);
        for (int64_t r = 0; r < size; r++)
            for (int64_t c = 0; c < size; c++) {
                const int64_t idx = (i * pstride + r) * g.q + j * pstride + c;
                const float v = ga_act_eval(act.kind, act.alpha, src[idx] + bias);
                if (v > m) {
                    m = v;
                    best = idx;
                }
            }
        y[t] = m;
        arg[t] = (int32_t)best;
    }
}

/* The fused pool's backward: dyt (k, n p q) at conv output (img, k, e) = sum of
 * act'(y) dy over the pooled outputs whose window holds e and chose it, in
 * their raster order, the order of the CPU's scatter (dst[arg[i]] += ... for
 * i ascending), so the sums are the CPU's. A gather: no atomics. */
__global__ void pool_grad_kernel(float *__restrict__ dyt, const float *__restrict__ dy, const float *__restrict__ y,
                                 const int32_t *__restrict__ arg, ga_act act, Geo g, int64_t size, int64_t pstride,
                                 int64_t pp, int64_t pqq)
{
    const int64_t pq = g.p * g.q, npq = g.n * pq, ppq = pp * pqq;
    GA_GRID_STRIDE(t, g.k * npq) {
        const int64_t k = t / npq, img = (t % npq) / pq, e = t % pq, hi = e / g.q, wi = e % g.q;
        /* pooled outputs (i, j) with i pstride <= hi < i pstride + size */
        const int64_t i0 = hi - size + 1 <= 0 ? 0 : (hi - size + pstride) / pstride;
        const int64_t j0 = wi - size + 1 <= 0 ? 0 : (wi - size + pstride) / pstride;
        const int64_t i1 = min(pp - 1, hi / pstride), j1 = min(pqq - 1, wi / pstride);
        const int64_t plane = (img * g.k + k) * ppq;
        float acc = 0.0f;
        for (int64_t i = i0; i <= i1; i++)
            for (int64_t j = j0; j <= j1; j++)
                if (arg[plane + i * pqq + j] == (int32_t)e)
                    acc += ga_act_grad(act.kind, act.alpha, y[plane + i * pqq + j], dy[plane + i * pqq + j]);
        dyt[t] = acc;
    }
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


namespace {

/* Conv output gradient layouts (conv_cuda.h): NCHW dy, and the (k, n p q)
 * matrix the im2col GEMMs and the fused pool backward use. */
struct Layout {
    int64_t s_img, s_k;
};
Layout nchw(const ga_conv_shape *s) { return Layout{s->k * s->p * s->q, s->p * s->q}; }
Layout kmajor(const ga_conv_shape *s) { return Layout{s->p * s->q, s->n * s->p * s->q}; }

ga_status bias_grad(float *db, const float *d, Layout l, const ga_conv_shape *s, cudaStream_t st)
{
    GA_LAUNCH((unsigned)s->k, kThreads, 0, st, bias_grad_kernel)(db, d, s->n, s->p * s->q, l.s_img, l.s_k);
    GA_CUDA_LAUNCH("bias_grad_kernel");
    return GA_OK;
}

/* The plain sums w * patches(x) as (k, n p q) into res: the im2col GEMM (col
 * filled, FAST / BLAS) or the implicit one (col untouched). */
ga_status conv_sums(float *res, float *col, const float *x, const float *w, const ga_conv_shape *s, int variant)
{
    if (variant == GA_VARIANT_IMPLICIT)
        return ga_conv_implicit_forward(res, x, w, NULL, ga_act{GA_ACT_NONE, 0.0f}, s, 1);
    const int64_t crs = s->c * s->r * s->s, npq = s->n * s->p * s->q;
    GA_TRY(ga_im2col_cuda(col, x, s));
    return ga_gemm_cuda(res, w, col, 0, 0, s->k, npq, crs, crs, npq, npq, 1.0f, 0.0f, variant);
}

/* dx, dw, db from the conv output's gradient d (layout l; npq > 0).
 * FAST / BLAS need d as (k, n p q) (kmajor), col from forward and dcol
 * (c r s, n p q) scratch; IMPLICIT reads any layout, x instead of col, and
 * needs no scratch of the caller's. */
ga_status backward_from(float *dx, float *dw, float *db, float *dcol, const float *x, const float *col,
                        const float *w, const float *d, Layout l, const ga_conv_shape *s, int variant,
                        cudaStream_t st)
{
    const int64_t crs = s->c * s->r * s->s, npq = s->n * s->p * s->q, nx = s->n * s->c * s->h * s->w;
    if (variant == GA_VARIANT_IMPLICIT) {
        if (dw)
            GA_TRY(ga_conv_implicit_dw(dw, x, d, l.s_img, l.s_k, s));
        if (db)
            GA_TRY(bias_grad(db, d, l, s, st));
        if (dx && nx > 0)
            GA_TRY(ga_conv_implicit_dx(dx, w, d, l.s_img, l.s_k, s));
        return GA_OK;
    }
    /* dw (k, crs) = d (k, npq) * col^T */
    if (dw)
        GA_TRY(ga_gemm_cuda(dw, d, col, 0, 1, s->k, crs, npq, npq, npq, crs, 1.0f, 0.0f, variant));
    if (db)
        GA_TRY(bias_grad(db, d, l, s, st));
    if (dx && nx > 0) {
        /* dcol (crs, npq) = w^T (crs, k) * d (k, npq) */
        GA_TRY(ga_gemm_cuda(dcol, w, d, 1, 0, crs, npq, s->k, crs, npq, npq, 1.0f, 0.0f, variant));
        GA_LAUNCH(ga_cuda_blocks(nx, kThreads), kThreads, 0, st, col2im_kernel)(dx, dcol, geo(s));
        GA_CUDA_LAUNCH("col2im_kernel");
    }
    return GA_OK;
}

ga_status check_pair(const char *op, const ga_conv_shape *cs, const ga_pool_shape *ps, ga_act act, int variant)
{
    GA_TRY(ga_check_conv(op, cs));
    GA_TRY(ga_check_pool(op, ps));
    GA_TRY(ga_check_act_poolable(op, act));
    GA_TRY(check_variant(op, variant, 1));
    if (ps->n != cs->n || ps->c != cs->k || ps->h != cs->p || ps->w != cs->q)
        return ga_fail(GA_ERR_VALUE, "%s: the pool's input is not the conv's output", op);
    if (cs->p * cs->q > INT32_MAX)
        return ga_fail(GA_ERR_VALUE, "%s: a conv output plane above 2^31 elements does not fit arg", op);
    return GA_OK;
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
 * col (c r s, n p q) and ws (k, n p q) are scratch (unused by REF and IMPLICIT). */
ga_status ga_conv2d_forward_cuda(float *y, float *col, float *ws, const float *x, const float *w,
                                 const float *b, ga_act act, const ga_conv_shape *s, int variant)
{
    GA_TRY(ga_check_conv("conv2d", s));
    GA_TRY(ga_check_act("conv2d", act));
    GA_TRY(check_variant("conv2d", variant, 0));
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
    if (variant == GA_VARIANT_IMPLICIT) /* bias and activation in the GEMM's epilogue, NCHW */
        return ga_conv_implicit_forward(y, x, w, b, act, s, 0);
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
 * (ga_conv_bwd_ws_floats: dy as (k, n p q), then dcol); REF and IMPLICIT read
 * x (IMPLICIT: dy as it is, no workspace). */
ga_status ga_conv2d_backward_cuda(float *dx, float *dw, float *db, float *ws, const float *x,
                                  float *col, const float *w, const float *dy,
                                  const ga_conv_shape *s, int variant)
{
    GA_TRY(ga_check_conv("conv2d_backward", s));
    GA_TRY(check_variant("conv2d_backward", variant, 0));
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
    if (npq == 0) { /* an empty batch (n == 0): zero weight gradients, nothing else */
        if (dw)
            GA_TRY(ga_cuda_zero(dw, (size_t)(s->k * crs) * sizeof(float)));
        if (db)
            GA_TRY(ga_cuda_zero(db, (size_t)s->k * sizeof(float)));
        return GA_OK;
    }
    if (variant == GA_VARIANT_IMPLICIT) {
        if (dw && !x)
            return ga_fail(GA_ERR_VALUE, "conv2d_backward: NULL x");
        return backward_from(dx, dw, db, NULL, x, NULL, w, dy, nchw(s), s, variant, st);
    }
    if (!ws || (dw && !col))
        return ga_fail(GA_ERR_VALUE, "conv2d_backward: NULL workspace or col");
    float *dyt = ws, *dcol = ws + s->k * npq;
    GA_LAUNCH(ga_cuda_blocks(s->k * npq, kThreads), kThreads, 0, st, transpose_dy_kernel)(dyt, dy, g);
    GA_CUDA_LAUNCH("transpose_dy_kernel");
    return backward_from(dx, dw, db, dcol, x, col, w, dyt, kmajor(s), s, variant, st);
}

/* Conv (+ bias, act) then max pool ps: y, arg (n, k, pp, pq) as the two layers
 * give them. ws (ga_conv_fwd_ws_floats) receives the conv's sums as (k, n p q);
 * col is filled by FAST / BLAS (backward reads it), unused by IMPLICIT. */
ga_status ga_conv2d_pool_forward_cuda(float *y, int32_t *arg, float *col, float *ws, const float *x,
                                      const float *w, const float *b, ga_act act, const ga_conv_shape *cs,
                                      const ga_pool_shape *ps, int variant)
{
    GA_TRY(check_pair("conv2d_pool", cs, ps, act, variant));
    if (cs->n == 0)
        return GA_OK;
    if (!y || !arg || !x || !w || !ws || (variant != GA_VARIANT_IMPLICIT && !col))
        return ga_fail(GA_ERR_VALUE, "conv2d_pool: NULL argument");
    if (variant == GA_VARIANT_IMPLICIT && ps->size == 2 && ps->stride == 2) /* pooled in the GEMM's epilogue */
        return ga_conv_implicit_forward_pool2(y, arg, x, w, b, act, cs, ps);
    cudaStream_t st;
    GA_TRY(ga_cuda_stream(&st));
    GA_TRY(conv_sums(ws, col, x, w, cs, variant));
    const int64_t total = cs->n * cs->k * ps->p * ps->q;
    if (total == 0)
        return GA_OK;
    GA_LAUNCH(ga_cuda_blocks(total, kThreads), kThreads, 0, st, pool_epilogue_kernel)(
        y, arg, ws, b, act, geo(cs), ps->size, ps->stride, ps->p, ps->q);
    GA_CUDA_LAUNCH("pool_epilogue_kernel");
    return GA_OK;
}

/* The pair's backward from the pool's dy, y, arg: the conv output's gradient
 * (times act' at y) is gathered into ws as (k, n p q), then the conv's
 * backward (FAST / BLAS with col and dcol = the rest of ws; IMPLICIT from x).
 * ws: ga_conv_bwd_ws_floats. */
ga_status ga_conv2d_pool_backward_cuda(float *dx, float *dw, float *db, float *ws, const float *x, float *col,
                                       const float *w, const float *dy, const float *y, const int32_t *arg,
                                       ga_act act, const ga_conv_shape *cs, const ga_pool_shape *ps,
                                       int variant)
{
    GA_TRY(check_pair("conv2d_pool_backward", cs, ps, act, variant));
    if (!dw)
        db = NULL;
    const int64_t crs = cs->c * cs->r * cs->s, npq = cs->n * cs->p * cs->q;
    if (npq == 0) {
        if (dw)
            GA_TRY(ga_cuda_zero(dw, (size_t)(cs->k * crs) * sizeof(float)));
        if (db)
            GA_TRY(ga_cuda_zero(db, (size_t)cs->k * sizeof(float)));
        return GA_OK;
    }
    if (!w || !dy || !y || !arg || !ws || (dw && !x) || (dw && variant != GA_VARIANT_IMPLICIT && !col))
        return ga_fail(GA_ERR_VALUE, "conv2d_pool_backward: NULL argument");
    cudaStream_t st;
    GA_TRY(ga_cuda_stream(&st));
    float *dyt = ws, *dcol = ws + cs->k * npq;
    GA_LAUNCH(ga_cuda_blocks(cs->k * npq, kThreads), kThreads, 0, st, pool_grad_kernel)(
        dyt, dy, y, arg, act, geo(cs), ps->size, ps->stride, ps->p, ps->q);
    GA_CUDA_LAUNCH("pool_grad_kernel");
    return backward_from(dx, dw, db, dcol, x, col, w, dyt, kmajor(cs), cs, variant, st);
}

/* kernel='auto' on CUDA: the implicit GEMM wherever it fits, without timing
 * (it does the im2col route's products without writing and re-reading the
 * patch matrix; no GPU has measured the two against each other for this
 * code yet, see ARCHITECTURE.md). GPUACCEL_CONV_KERNEL=im2col|implicit forces
 * one; the CPU-only names (winograd*) do not apply here and leave the default. */
ga_status ga_conv2d_choose_cuda(int *variant, const ga_conv_shape *s)
{
    if (!variant || !s)
        return ga_fail(GA_ERR_VALUE, "conv2d_choose: NULL argument");
    *variant = GA_VARIANT_FAST;
    GA_TRY(ga_check_conv("conv2d_choose", s));
    static const ga_conv_kernel_name names[GA_CONV_KERNEL_COUNT] = GA_CONV_KERNEL_NAMES;
    const char *env = getenv("GPUACCEL_CONV_KERNEL");
    int forced = GA_CONV_AUTO;
    if (env && *env) {
        int known = 0;
        for (int i = 0; i < GA_CONV_KERNEL_COUNT; i++)
            if (strcmp(env, names[i].name) == 0 && names[i].variant != GA_VARIANT_REF) {
                known = 1;
                forced = names[i].variant;
            }
        if (!known)
            return ga_fail(GA_ERR_VALUE, "GPUACCEL_CONV_KERNEL=%s: expected auto, im2col, winograd, winograd2, "
                                         "winograd4 or implicit",
                           env);
    }
    if (forced == GA_VARIANT_FAST)
        return GA_OK;
    /* auto, implicit, or a CPU-only name: implicit where the shape fits its indexing */
    if (ga_conv_implicit_fits("conv2d_choose", s) == GA_OK)
        *variant = GA_VARIANT_IMPLICIT;
    else
        ga_clear_error();
    return GA_OK;
}
