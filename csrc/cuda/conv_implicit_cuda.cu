/* Implicit-GEMM convolution on the GPU (GA_VARIANT_IMPLICIT): the three GEMMs
 * of a convolution without the im2col matrix in global memory.
 *
 *   forward  y  (k, n p q)   = w (k, c r s)        x patches (c r s, n p q)
 *   data     dx (c, n h w)   = w permuted (c, k r s) x dy gathered (k r s, n h w)
 *   weights  dw (k, c r s)   = dy (k, n p q)       x patches^T (n p q, c r s)
 *
 * The im2col route writes the patch matrix (c r s times the input: 9x for a 3x3
 * kernel) to global memory and reads it back, and its backward adds d(col)
 * and col2im on top; here each block gathers the operand tile it needs straight
 * from x (or dy) into shared memory, so that traffic never happens and the
 * epilogue writes NCHW directly (bias and activation fused). The data gradient
 * is a transposed convolution: each input pixel sums w * dy over the outputs
 * whose windows hold it (the operand entry is zero where the window does not
 * reach, or at stride > 1 where the pixel falls between outputs), which is
 * col2im fused into the GEMM: no d(col) buffer, no atomics.
 *
 * One kernel template runs all three: a BM x BN block tile, BK-deep slabs,
 * TM x TN outputs per thread in float4 groups as in gemm_cuda.cu's sgemm_tiled
 * (conflict-free shared reads), two shared buffers so that the next slab's
 * gathers (held in registers) overlap this slab's FMAs with one barrier a slab.
 * What differs is an operand functor (Op) that says where element (row, kk) of
 * A and (kk, col) of B lives and where an output goes. Loaders are arranged so
 * that a thread's B column (an output pixel, or a filter tap for dw) is fixed for
 * the whole reduction: its decoding (image, row, column, padding offsets) is done
 * once per thread, and only the reduction index is decoded per slab, in 32-bit
 * arithmetic (64-bit division costs several times more on the GPU; the sizes
 * are checked to fit, ga_conv_implicit_fits). Consecutive threads take
 * consecutive B columns, so the gathers of a warp read neighbouring pixels.
 *
 * The weight gradient has a small output (k x c r s) and a long reduction
 * (n p q): its reduction is split into fixed slices (as gemm_cuda.cu's
 * split-K), each block writes its partial sums, and a second kernel adds the
 * slices in slice order, so the result does not depend on block timing.
 *
 * A forward followed by a 2x2, stride-2 max pool (FwdPool2Op) reorders the
 * columns window by window, so a thread's float4 column group is one window
 * and the epilogue writes only the pooled y and arg. */
#include "cuda/conv_cuda.h"

#include <climits>

namespace {

constexpr int kThreads = 256;
constexpr int kPad = 4; /* smem row padding: keeps float4 alignment, spreads banks */

/* ---- the operands of the three GEMMs ---- */

struct Geo32 {
    int n, c, h, w, k, r, s, stride, pad, p, q;
    int rs, pq, hw;
};

/* forward: A = w (k, c r s) row-major, B = patches of x (c r s, n p q). */
struct FwdOp {
    const float *__restrict__ x;
    const float *__restrict__ w;
    const float *__restrict__ b;
    float *__restrict__ y;
    ga_act act;
    Geo32 g;
    int crs;
    int raw; /* 1: y (k, n p q) plain sums; 0: act(sum + b) into NCHW */
    static constexpr bool kGroup = false; /* outputs one by one (store) */

    struct ARow {
        int kk;
    };
    struct BCol {
        int64_t xbase; /* x offset of the image */
        int hi0, wi0;  /* top-left input pixel of the window */
        bool ok;
    };
    __device__ ARow arow(int kk) const { return ARow{kk}; }
    __device__ float a(const ARow &ar, int row) const { return w[(int64_t)row * crs + ar.kk]; }
    __device__ BCol bcol(int col, bool ok) const
    {
        BCol bc{0, 0, 0, ok};
        if (ok) {
            const int img = col / g.pq, e = col % g.pq, i = e / g.q, j = e % g.q;
            bc.xbase = (int64_t)img * g.c * g.hw;
            bc.hi0 = i * g.stride - g.pad;
            bc.wi0 = j * g.stride - g.pad;
        }
        return bc;
    }
    __device__ float bval(const BCol &bc, int kk) const
    {
        const int c = kk / g.rs, t = kk % g.rs, kr = t / g.s, ks = t % g.s;
        const int hi = bc.hi0 + kr, wi = bc.wi0 + ks;
        if (!bc.ok || hi < 0 || hi >= g.h || wi < 0 || wi >= g.w)
            return 0.0f; /* zero padding */
        return x[bc.xbase + (int64_t)c * g.hw + hi * g.w + wi];
    }
    __device__ void store(int row, int col, float v, int) const
    {
        if (raw) {
            y[(int64_t)row * ((int64_t)g.n * g.pq) + col] = v;
            return;
        }
        const int img = col / g.pq, e = col % g.pq;
        y[((int64_t)img * g.k + row) * g.pq + e] = ga_act_eval(act.kind, act.alpha, v + (b ? b[row] : 0.0f));
    }
};

/* data gradient: A = w as (c, k r s) (entry (ch, (kf, kr, ks)) is w[kf, ch, kr, ks]),
 * B = d gathered (k r s, n h w): the output (i, j) whose tap (kr, ks) is the pixel. */
struct DxOp {
    const float *__restrict__ w;
    const float *__restrict__ d;
    float *__restrict__ dx;
    int64_t s_img, s_k;
    Geo32 g;
    static constexpr bool kGroup = false;

    struct ARow {
        int64_t wbase; /* w offset of (kf, 0, kr, ks) */
    };
    struct BCol {
        int64_t dbase; /* d offset of the image */
        int hp0, wp0;  /* pixel + padding: i stride + kr for the output i that holds it */
        bool ok;
    };
    __device__ ARow arow(int kk) const
    {
        const int kf = kk / g.rs, t = kk % g.rs;
        return ARow{(int64_t)kf * g.c * g.rs + t};
    }
    __device__ float a(const ARow &ar, int row) const { return w[ar.wbase + (int64_t)row * g.rs]; }
    __device__ BCol bcol(int col, bool ok) const
    {
        BCol bc{0, 0, 0, ok};
        if (ok) {
            const int img = col / g.hw, e = col % g.hw;
            bc.dbase = (int64_t)img * s_img;
            bc.hp0 = e / g.w + g.pad;
            bc.wp0 = e % g.w + g.pad;
        }
        return bc;
    }
    __device__ float bval(const BCol &bc, int kk) const
    {
        const int kf = kk / g.rs, t = kk % g.rs, kr = t / g.s, ks = t % g.s;
        int hp = bc.hp0 - kr, wp = bc.wp0 - ks;
        if (!bc.ok || hp < 0 || wp < 0)
            return 0.0f;
        if (g.stride != 1) { /* the pixel lies between two outputs' taps: no term */
            if (hp % g.stride != 0 || wp % g.stride != 0)
                return 0.0f;
            hp /= g.stride;
            wp /= g.stride;
        }
        if (hp >= g.p || wp >= g.q)
            return 0.0f;
        return d[bc.dbase + (int64_t)kf * s_k + hp * g.q + wp];
    }
    __device__ void store(int row, int col, float v, int) const
    {
        const int img = col / g.hw, e = col % g.hw;
        dx[((int64_t)img * g.c + row) * g.hw + e] = v;
    }
};

/* weight gradient: A = d as (k, n p q), B = patches^T (n p q, c r s); output
 * slice z of the split reduction goes to out + z k c r s. */
struct DwOp {
    const float *__restrict__ x;
    const float *__restrict__ d;
    float *__restrict__ out;
    int64_t s_img, s_k;
    Geo32 g;
    int crs;
    static constexpr bool kGroup = false;

    struct ARow {
        int64_t dbase; /* d offset of (img, 0, e) */
    };
    struct BCol {
        int64_t xoff;  /* x offset of channel c in image 0 */
        int kr0, ks0;  /* tap - padding */
        bool ok;
    };
    __device__ ARow arow(int kk) const
    {
        const int img = kk / g.pq, e = kk % g.pq;
        return ARow{(int64_t)img * s_img + e};
    }
    __device__ float a(const ARow &ar, int row) const { return d[ar.dbase + (int64_t)row * s_k]; }
    __device__ BCol bcol(int col, bool ok) const
    {
        BCol bc{0, 0, 0, ok};
        if (ok) {
            const int c = col / g.rs, t = col % g.rs;
            bc.xoff = (int64_t)c * g.hw;
            bc.kr0 = t / g.s - g.pad;
            bc.ks0 = t % g.s - g.pad;
        }
        return bc;
    }
    __device__ float bval(const BCol &bc, int kk) const
    {
        const int img = kk / g.pq, e = kk % g.pq;
        const int hi = (e / g.q) * g.stride + bc.kr0, wi = (e % g.q) * g.stride + bc.ks0;
        if (!bc.ok || hi < 0 || hi >= g.h || wi < 0 || wi >= g.w)
            return 0.0f;
        return x[(int64_t)img * g.c * g.hw + bc.xoff + hi * g.w + wi];
    }
    __device__ void store(int row, int col, float v, int z) const
    {
        out[(int64_t)z * g.k * crs + (int64_t)row * crs + col] = v;
    }
};

/* forward fused with a 2x2, stride-2 max pool: the same product as FwdOp with
 * the columns reordered so that columns 4 u .. 4 u + 3 are the four conv outputs
 * of pooled output u (image, then pooled row, then pooled column; the four in
 * the window's raster order). Every float4 column group of a thread is then one
 * whole window (groups start at multiples of 4), so the epilogue pools in
 * registers (store4) and the conv output is never written anywhere. Conv
 * outputs outside every window (an odd last row or column) are not computed. */
struct FwdPool2Op : FwdOp {
    int32_t *__restrict__ arg;
    int pp, pqq; /* the pooled output's rows and columns */
    static constexpr bool kGroup = true;

    __device__ BCol bcol(int col, bool ok) const
    {
        BCol bc{0, 0, 0, ok};
        if (ok) {
            const int ppq = pp * pqq, img = col / (4 * ppq), u = (col % (4 * ppq)) >> 2, t = col & 3;
            const int i = 2 * (u / pqq) + (t >> 1), j = 2 * (u % pqq) + (t & 1);
            bc.xbase = (int64_t)img * g.c * g.hw;
            bc.hi0 = i * g.stride - g.pad;
            bc.wi0 = j * g.stride - g.pad;
        }
        return bc;
    }
    /* The window's four sums: act(v + b), the first element first, then strict >
     * (conv_cpu.c's rule: the first maximum wins ties, a NaN only as the first). */
    __device__ void store4(int row, int col, const float (&v)[4], int) const
    {
        const int ppq = pp * pqq, img = col / (4 * ppq), u = (col % (4 * ppq)) >> 2;
        const float bias = b ? b[row] : 0.0f;
        float m = ga_act_eval(act.kind, act.alpha, v[0] + bias);
        int best = 0;
#pragma unroll
        for (int t = 1; t < 4; t++) {
            const float val = ga_act_eval(act.kind, act.alpha, v[t] + bias);
            if (val > m) {
                m = val;
                best = t;
            }
        }
        const int64_t o = ((int64_t)img * g.k + row) * ppq + u;
        y[o] = m;
        arg[o] = (int32_t)((2 * (u / pqq) + (best >> 1)) * g.q + 2 * (u % pqq) + (best & 1));
    }
};

/* ---- the tiled kernel ----
 * C (m, n) over the reduction range [blockIdx.z kc, min(kred, (blockIdx.z + 1) kc))
 * for rows m_base + blockIdx.y BM + ..., columns blockIdx.x BN + ...
 * Loader layout: element e = tid + t * kThreads of the A slab is (kk = e % BK,
 * row = e / BK), so a thread's kk is fixed within a slab and one ARow decode
 * serves its A_PER rows; of the B slab (col = e % BN, kk = e / BN), so a
 * thread's column is fixed for the whole reduction (BCol decoded once). */
template <int BM, int BN, int BK, int TM, int TN, class Op>
__global__ void __launch_bounds__(kThreads, 2) /* <= 128 registers: two blocks per SM */
igemm_kernel(Op op, int m, int n, int kred, int kc, int m_base)
{
    static_assert((BM / TM) * (BN / TN) == kThreads, "thread grid");
    static_assert(kThreads % BK == 0 && kThreads % BN == 0, "loader layout");
    static_assert((BM * BK) % kThreads == 0 && (BN * BK) % kThreads == 0, "whole slabs per thread");
    constexpr int A_PER = BM * BK / kThreads, B_PER = BN * BK / kThreads;
    constexpr int A_STEP = kThreads / BK, B_STEP = kThreads / BN;
    constexpr int GM = TM / 4, GN = TN / 4;     /* float4 groups per thread */
    constexpr int SGM = BM / GM, SGN = BN / GN; /* distance between groups */
    constexpr int TX = BN / TN;

    __shared__ __align__(16) float As[2][BK][BM + kPad];
    __shared__ __align__(16) float Bs[2][BK][BN + kPad];

    const int tid = threadIdx.x;
    const int ty = tid / TX, tx = tid % TX;
    const int m0 = m_base + (int)blockIdx.y * BM, n0 = (int)blockIdx.x * BN;
    const int kb = (int)blockIdx.z * kc;
    const int ke = min(kred, kb + kc);
    const int a_k = tid % BK, a_r = tid / BK;
    const int b_c = tid % BN, b_k = tid / BN;
    const typename Op::BCol bc = op.bcol(n0 + b_c, n0 + b_c < n);

    float pa[A_PER], pb[B_PER]; /* the next slab, in flight in registers */
    auto gather = [&](int kt) {
        const int ka = kt + a_k;
        const typename Op::ARow ar = op.arow(ka);
#pragma unroll
        for (int t = 0; t < A_PER; t++) {
            const int row = m0 + a_r + t * A_STEP;
            pa[t] = (ka < ke && row < m) ? op.a(ar, row) : 0.0f;
        }
#pragma unroll
        for (int t = 0; t < B_PER; t++) {
            const int kk = kt + b_k + t * B_STEP;
            pb[t] = kk < ke ? op.bval(bc, kk) : 0.0f;
        }
    };
    auto put = [&](int buf) {
#pragma unroll
        for (int t = 0; t < A_PER; t++)
            As[buf][a_k][a_r + t * A_STEP] = pa[t];
#pragma unroll
        for (int t = 0; t < B_PER; t++)
            Bs[buf][b_k + t * B_STEP][b_c] = pb[t];
    };

    float acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; i++)
#pragma unroll
        for (int j = 0; j < TN; j++)
            acc[i][j] = 0.0f;

    int buf = 0;
    gather(kb);
    put(0);
    __syncthreads();
    for (int kt = kb; kt < ke; kt += BK) {
        const bool more = kt + BK < ke; /* uniform across the block */
        if (more)
            gather(kt + BK);
#pragma unroll
        for (int kk = 0; kk < BK; kk++) {
            float ra[TM], rb[TN];
#pragma unroll
            for (int gi = 0; gi < GM; gi++) {
                const float4 t = *reinterpret_cast<const float4 *>(&As[buf][kk][gi * SGM + ty * 4]);
                ra[gi * 4 + 0] = t.x; ra[gi * 4 + 1] = t.y; ra[gi * 4 + 2] = t.z; ra[gi * 4 + 3] = t.w;
            }
#pragma unroll
            for (int gj = 0; gj < GN; gj++) {
                const float4 t = *reinterpret_cast<const float4 *>(&Bs[buf][kk][gj * SGN + tx * 4]);
                rb[gj * 4 + 0] = t.x; rb[gj * 4 + 1] = t.y; rb[gj * 4 + 2] = t.z; rb[gj * 4 + 3] = t.w;
            }
#pragma unroll
            for (int i = 0; i < TM; i++)
#pragma unroll
                for (int j = 0; j < TN; j++)
                    acc[i][j] = fmaf(ra[i], rb[j], acc[i][j]);
        }
        if (more) /* the other buffer was last read before the previous barrier */
            put(buf ^ 1);
        __syncthreads();
        buf ^= 1;
    }

#pragma unroll
    for (int i = 0; i < TM; i++) {
        const int row = m0 + (i / 4) * SGM + ty * 4 + (i % 4);
        if (row >= m)
            continue;
#pragma unroll
        for (int gj = 0; gj < GN; gj++) {
            const int col = n0 + gj * SGN + tx * 4; /* a multiple of 4 */
            if constexpr (Op::kGroup) { /* n is a multiple of 4: the group is all in or all out */
                const float v[4] = {acc[i][gj * 4 + 0], acc[i][gj * 4 + 1], acc[i][gj * 4 + 2], acc[i][gj * 4 + 3]};
                if (col < n)
                    op.store4(row, col, v, (int)blockIdx.z);
            } else {
#pragma unroll
                for (int j = 0; j < 4; j++)
                    if (col + j < n)
                        op.store(row, col + j, acc[i][gj * 4 + j], (int)blockIdx.z);
            }
        }
    }
}

/* dw = sum over the slices of part (splits, len), in slice order. */
__global__ void slice_sum_kernel(float *__restrict__ dw, const float *__restrict__ part, int64_t len, int splits)
{
    GA_GRID_STRIDE(t, len) {
        float acc = 0.0f;
        for (int z = 0; z < splits; z++)
            acc += part[(int64_t)z * len + t];
        dw[t] = acc;
    }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

Geo32 geo32(const ga_conv_shape *s)
{
    Geo32 g;
    g.n = (int)s->n; g.c = (int)s->c; g.h = (int)s->h; g.w = (int)s->w;
    g.k = (int)s->k; g.r = (int)s->r; g.s = (int)s->s;
    g.stride = (int)s->stride; g.pad = (int)s->pad; g.p = (int)s->p; g.q = (int)s->q;
    g.rs = g.r * g.s; g.pq = g.p * g.q; g.hw = g.h * g.w;
    return g;
}

/* One tile configuration over rows in chunks of the grid's y limit. */
template <int BM, int BN, int BK, int TM, int TN, class Op>
ga_status launch(const Op &op, int64_t m, int64_t n, int64_t kred, int64_t kc, int splits, cudaStream_t st)
{
    const int64_t max_m = 65535LL * BM;
    for (int64_t m_off = 0; m_off < m; m_off += max_m) {
        const int64_t mc = m - m_off < max_m ? m - m_off : max_m;
        dim3 grid((unsigned)ceil_div(n, BN), (unsigned)ceil_div(mc, BM), (unsigned)splits);
        GA_LAUNCH(grid, kThreads, 0, st, igemm_kernel<BM, BN, BK, TM, TN, Op>)(
            op, (int)(m_off + mc), (int)n, (int)kred, (int)kc, (int)m_off);
        GA_CUDA_LAUNCH("igemm_kernel");
    }
    return GA_OK;
}

/* The tile for an (m, n) output with a full reduction: as tall as m needs (the
 * filters or channels: often 32 or 64, where 128-row tiles would be half
 * empty), 128 columns, and 64 x 64 when the big tiles leave SMs idle. */
template <class Op>
ga_status launch_auto(const Op &op, int64_t m, int64_t n, int64_t kred, cudaStream_t st)
{
    const int64_t sms = ga_cuda_sm_count();
    if (m <= 32)
        return launch<32, 128, 16, 4, 4>(op, m, n, kred, kred, 1, st);
    if (m <= 64) {
        if (ceil_div(m, 64) * ceil_div(n, 128) >= sms)
            return launch<64, 128, 16, 4, 8>(op, m, n, kred, kred, 1, st);
        return launch<64, 64, 16, 4, 4>(op, m, n, kred, kred, 1, st);
    }
    if (ceil_div(m, 128) * ceil_div(n, 128) >= sms)
        return launch<128, 128, 8, 8, 8>(op, m, n, kred, kred, 1, st);
    return launch<64, 64, 16, 4, 4>(op, m, n, kred, kred, 1, st);
}

bool below_int(int64_t v) { return v >= 0 && v < (int64_t)INT_MAX; }

} // namespace

ga_status ga_conv_implicit_fits(const char *op, const ga_conv_shape *s)
{
    const int64_t crs = s->c * s->r * s->s, pq = s->p * s->q, hw = s->h * s->w;
    if (below_int(s->c * hw) && below_int(s->k * pq) && below_int(crs) && below_int(s->k * crs) &&
        below_int(s->n * pq) && below_int(s->n * hw) && below_int(s->k * s->r * s->s))
        return GA_OK;
    return ga_fail(GA_ERR_VALUE,
                   "%s: this shape is too large for kernel='implicit' (32-bit indexing of one image, c*r*s, "
                   "n*p*q and n*h*w); use kernel='im2col'",
                   op);
}

ga_status ga_conv_implicit_forward(float *y, const float *x, const float *w, const float *b, ga_act act,
                                   const ga_conv_shape *s, int raw)
{
    GA_TRY(ga_check_conv("conv2d (implicit)", s));
    GA_TRY(ga_conv_implicit_fits("conv2d", s));
    const int64_t crs = s->c * s->r * s->s, npq = s->n * s->p * s->q;
    if (npq == 0 || s->k == 0)
        return GA_OK;
    if (!y || !x || !w)
        return ga_fail(GA_ERR_VALUE, "conv2d (implicit): NULL argument");
    cudaStream_t st;
    GA_TRY(ga_cuda_stream(&st));
    const FwdOp op{x, w, b, y, act, geo32(s), (int)crs, raw ? 1 : 0};
    return launch_auto(op, s->k, npq, crs, st);
}

ga_status ga_conv_implicit_forward_pool2(float *y, int32_t *arg, const float *x, const float *w, const float *b,
                                         ga_act act, const ga_conv_shape *s, const ga_pool_shape *ps)
{
    GA_TRY(ga_check_conv("conv2d_pool (implicit)", s));
    GA_TRY(ga_conv_implicit_fits("conv2d_pool", s));
    if (ps->size != 2 || ps->stride != 2 || ps->h != s->p || ps->w != s->q || ps->p != s->p / 2 ||
        ps->q != s->q / 2)
        return ga_fail(GA_ERR_VALUE, "conv2d_pool (implicit): the in-epilogue pool is 2x2 with stride 2 only");
    const int64_t crs = s->c * s->r * s->s, cols = 4 * s->n * ps->p * ps->q;
    if (cols == 0 || s->k == 0)
        return GA_OK;
    if (!y || !arg || !x || !w)
        return ga_fail(GA_ERR_VALUE, "conv2d_pool (implicit): NULL argument");
    cudaStream_t st;
    GA_TRY(ga_cuda_stream(&st));
    FwdPool2Op op;
    static_cast<FwdOp &>(op) = FwdOp{x, w, b, y, act, geo32(s), (int)crs, 0};
    op.arg = arg;
    op.pp = (int)ps->p;
    op.pqq = (int)ps->q;
    return launch_auto(op, s->k, cols, crs, st);
}

ga_status ga_conv_implicit_dx(float *dx, const float *w, const float *d, int64_t s_img, int64_t s_k,
                              const ga_conv_shape *s)
{
    GA_TRY(ga_check_conv("conv2d_backward (implicit)", s));
    GA_TRY(ga_conv_implicit_fits("conv2d_backward", s));
    const int64_t nhw = s->n * s->h * s->w, krs = s->k * s->r * s->s;
    if (nhw == 0 || s->c == 0)
        return GA_OK;
    if (!dx || !w || !d)
        return ga_fail(GA_ERR_VALUE, "conv2d_backward (implicit): NULL argument");
    cudaStream_t st;
    GA_TRY(ga_cuda_stream(&st));
    const DxOp op{w, d, dx, s_img, s_k, geo32(s)};
    /* krs == 0 cannot happen (checked shapes have k, r, s >= 1), so dx is always written */
    return launch_auto(op, s->c, nhw, krs, st);
}

ga_status ga_conv_implicit_dw(float *dw, const float *x, const float *d, int64_t s_img, int64_t s_k,
                              const ga_conv_shape *s)
{
    GA_TRY(ga_check_conv("conv2d_backward (implicit)", s));
    GA_TRY(ga_conv_implicit_fits("conv2d_backward", s));
    const int64_t crs = s->c * s->r * s->s, npq = s->n * s->p * s->q, nw = s->k * crs;
    if (nw == 0)
        return GA_OK;
    if (!dw)
        return ga_fail(GA_ERR_VALUE, "conv2d_backward (implicit): NULL dw");
    cudaStream_t st;
    GA_TRY(ga_cuda_stream(&st));
    if (npq == 0) /* an empty batch: zero gradients */
        return ga_cuda_zero(dw, (size_t)nw * sizeof(float));
    if (!x || !d)
        return ga_fail(GA_ERR_VALUE, "conv2d_backward (implicit): NULL argument");
    /* k x c r s is a handful of 64 x 64 tiles: split n p q so that about two
     * waves of blocks run, each slice at least 256 long and slab-aligned */
    constexpr int BK = 16;
    const int64_t sms = ga_cuda_sm_count(), tiles = ceil_div(s->k, 64) * ceil_div(crs, 64);
    int64_t splits = 1;
    if (tiles < sms && npq >= 1024) {
        splits = ceil_div(2 * sms, tiles);
        if (splits > npq / 256)
            splits = npq / 256;
        if (splits > 64)
            splits = 64;
    }
    if (splits < 2) {
        const DwOp op{x, d, dw, s_img, s_k, geo32(s), (int)crs};
        return launch<64, 64, BK, 4, 4>(op, s->k, crs, npq, npq, 1, st);
    }
    const int64_t kc = ceil_div(ceil_div(npq, splits), BK) * BK;
    splits = ceil_div(npq, kc);
    void *part = nullptr;
    GA_TRY(ga_cuda_scratch_acquire(&part, (size_t)(splits * nw) * sizeof(float)));
    const DwOp op{x, d, (float *)part, s_img, s_k, geo32(s), (int)crs};
    ga_status r = launch<64, 64, BK, 4, 4>(op, s->k, crs, npq, kc, (int)splits, st);
    if (r == GA_OK) {
        GA_LAUNCH(ga_cuda_blocks(nw, kThreads), kThreads, 0, st, slice_sum_kernel)(dw, (const float *)part, nw,
                                                                                  (int)splits);
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess)
            r = ga_cuda_fail(e, "launch of slice_sum_kernel", 0);
    }
    ga_cuda_scratch_release();
    return r;
}
