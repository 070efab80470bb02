/* SGEMM on the GPU, the twin of csrc/cpu/gemm_cpu.c. Row-major with leading
 * dimensions, semantics in core/backend.h:
 *   c (m, n) = alpha * op(a) op(b) + beta * c
 *
 * Variants:
 *   GA_VARIANT_FAST  shared-memory tiled, register-blocked kernel below
 *                    (128x128x8 block tile, 8x8 outputs per thread; 64x64x16 with
 *                    4x4 per thread when the big tiles would leave SMs idle; a
 *                    deterministic split-K when even that is too few blocks)
 *   GA_VARIANT_REF   one thread per output, the definition
 *   GA_VARIANT_BLAS  cublasSgemm (column-major, so we compute c^T = op(b)^T op(a)^T)
 * With GA_PRECISION_TF32 OR'ed in, each variant has a TF32 twin in
 * gemm_tf32_cuda.cu (tensor cores, sm_80+; the reference anywhere).
 */
#include "cuda/cuda_common.h"

#include <climits>

namespace {

constexpr int kThreads = 256;
constexpr int kPad = 4; /* smem row padding: keeps float4 alignment, breaks bank conflicts */

/* 4 consecutive floats of a row-major (rows, cols) matrix at (row, col..col+3),
 * zero outside. VEC: ld % 4 == 0 and the base is 16-byte aligned, so a full
 * in-bounds group (col is a multiple of 4) can be one 128-bit load. */
template <bool VEC>
__device__ __forceinline__ float4 load4(const float *__restrict__ p, int64_t ld, int64_t row,
                                        int64_t col, int64_t rows, int64_t cols)
{
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (row >= rows)
        return v;
    const float *r = p + row * ld;
    if (VEC && col + 3 < cols)
        return *reinterpret_cast<const float4 *>(r + col);
    if (col + 0 < cols) v.x = r[col + 0];
    if (col + 1 < cols) v.y = r[col + 1];
    if (col + 2 < cols) v.z = r[col + 2];
    if (col + 3 < cols) v.w = r[col + 3];
    return v;
}

/* One block computes a BM x BN tile of c over the k range
 * [blockIdx.z * kc, min(k, (blockIdx.z + 1) * kc)). Operand slabs are staged in
 * shared memory k-major (As[k][m], Bs[k][n]) so the inner product reads float4
 * rows; two buffers let the next slab's global loads overlap this slab's FMAs
 * with one __syncthreads per step. Each thread owns TM x TN outputs split in
 * float4 groups BM/(TM/4) apart, which keeps smem reads conflict-free.
 * Split-K (gridDim.z > 1) writes raw partial sums to c + z * c_split_stride. */
template <int BM, int BN, int BK, int TM, int TN, bool TA, bool TB, bool VEC>
__global__ void __launch_bounds__(kThreads, 2) /* <= 128 registers: two blocks per SM */
sgemm_tiled(float *__restrict__ c, const float *__restrict__ a, const float *__restrict__ b,
            int64_t m, int64_t n, int64_t k, int64_t kc, int64_t lda, int64_t ldb, int64_t ldc,
            int64_t c_split_stride, float alpha, float beta, bool c_vec)
{
    static_assert(BM * BK / 4 == kThreads && BN * BK / 4 == kThreads, "one float4 per thread per slab");
    static_assert((BM / TM) * (BN / TN) == kThreads, "thread grid");
    constexpr int GM = TM / 4, GN = TN / 4;   /* float4 groups per thread */
    constexpr int SGM = BM / GM, SGN = BN / GN; /* distance between groups */
    constexpr int TX = BN / TN;

    __shared__ __align__(16) float As[2][BK][BM + kPad];
    __shared__ __align__(16) float Bs[2][BK][BN + kPad];

    const int tid = threadIdx.x;
    const int ty = tid / TX, tx = tid % TX;
    const int64_t m0 = (int64_t)blockIdx.y * BM, n0 = (int64_t)blockIdx.x * BN;
    const int64_t kb = (int64_t)blockIdx.z * kc;
    const int64_t ke = min(k, kb + kc);
    c += (int64_t)blockIdx.z * c_split_stride;

    /* Loader coordinates: each thread moves one float4 along the stored row.
     * a stored (m, k) [TA=0] or (k, m) [TA=1]; b stored (k, n) [TB=0] or (n, k). */
    constexpr int A_VPR = TA ? BM / 4 : BK / 4;
    constexpr int B_VPR = TB ? BK / 4 : BN / 4;
    const int a_r = tid / A_VPR, a_c = (tid % A_VPR) * 4;
    const int b_r = tid / B_VPR, b_c = (tid % B_VPR) * 4;

    auto load_a = [&](int64_t kt) {
        return TA ? load4<VEC>(a, lda, kt + a_r, m0 + a_c, ke, m)
                  : load4<VEC>(a, lda, m0 + a_r, kt + a_c, m, ke);
    };
    auto load_b = [&](int64_t kt) {
        return TB ? load4<VEC>(b, ldb, n0 + b_r, kt + b_c, n, ke)
                  : load4<VEC>(b, ldb, kt + b_r, n0 + b_c, ke, n);
    };
    auto store_a = [&](int buf, float4 v) {
        if (TA) {
            *reinterpret_cast<float4 *>(&As[buf][a_r][a_c]) = v;
        } else { /* transpose on the way in: As is k-major */
            As[buf][a_c + 0][a_r] = v.x;
            As[buf][a_c + 1][a_r] = v.y;
            As[buf][a_c + 2][a_r] = v.z;
            As[buf][a_c + 3][a_r] = v.w;
        }
    };
    auto store_b = [&](int buf, float4 v) {
        if (TB) {
            Bs[buf][b_c + 0][b_r] = v.x;
            Bs[buf][b_c + 1][b_r] = v.y;
            Bs[buf][b_c + 2][b_r] = v.z;
            Bs[buf][b_c + 3][b_r] = v.w;
        } else {
            *reinterpret_cast<float4 *>(&Bs[buf][b_r][b_c]) = v;
        }
    };

    float acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; i++)
#pragma unroll
        for (int j = 0; j < TN; j++)
            acc[i][j] = 0.0f;

    int buf = 0;
    store_a(0, load_a(kb));
    store_b(0, load_b(kb));
    __syncthreads();

    for (int64_t kt = kb; kt < ke; kt += BK) {
        const bool more = kt + BK < ke; /* uniform across the block */
        float4 na, nb;
        if (more) {
            na = load_a(kt + BK);
            nb = load_b(kt + BK);
        }
#pragma unroll
        for (int kk = 0; kk < BK; kk++) {
            float ra[TM], rb[TN];
#pragma unroll
            for (int g = 0; g < GM; g++) {
                float4 t = *reinterpret_cast<const float4 *>(&As[buf][kk][g * SGM + ty * 4]);
                ra[g * 4 + 0] = t.x; ra[g * 4 + 1] = t.y; ra[g * 4 + 2] = t.z; ra[g * 4 + 3] = t.w;
            }
#pragma unroll
            for (int g = 0; g < GN; g++) {
                float4 t = *reinterpret_cast<const float4 *>(&Bs[buf][kk][g * SGN + tx * 4]);
                rb[g * 4 + 0] = t.x; rb[g * 4 + 1] = t.y; rb[g * 4 + 2] = t.z; rb[g * 4 + 3] = t.w;
            }
#pragma unroll
            for (int i = 0; i < TM; i++)
#pragma unroll
                for (int j = 0; j < TN; j++)
                    acc[i][j] = fmaf(ra[i], rb[j], acc[i][j]);
        }
        if (more) { /* the other buffer was last read before the previous barrier */
            store_a(buf ^ 1, na);
            store_b(buf ^ 1, nb);
        }
        __syncthreads();
        buf ^= 1;
    }

    /* Epilogue: c = alpha acc + beta c (c not read when beta == 0). */
#pragma unroll
    for (int i = 0; i < TM; i++) {
        const int64_t row = m0 + (i / 4) * SGM + ty * 4 + (i % 4);
        if (row >= m)
            continue;
        float *cr = c + row * ldc;
#pragma unroll
        for (int g = 0; g < GN; g++) {
            const int64_t col = n0 + g * SGN + tx * 4;
            float v[4];
#pragma unroll
            for (int j = 0; j < 4; j++)
                v[j] = alpha * acc[i][g * 4 + j];
            if (c_vec && col + 3 < n) {
                float4 *cp = reinterpret_cast<float4 *>(cr + col);
                if (beta != 0.0f) {
                    float4 o = *cp;
                    v[0] += beta * o.x; v[1] += beta * o.y; v[2] += beta * o.z; v[3] += beta * o.w;
                }
                *cp = make_float4(v[0], v[1], v[2], v[3]);
            } else {
#pragma unroll
                for (int j = 0; j < 4; j++)
                    if (col + j < n)
                        cr[col + j] = beta != 0.0f ? v[j] + beta * cr[col + j] : v[j];
            }
        }
    }
}

/* c = alpha * sum_z ws[z] + beta * c, the split-K reduction in a fixed order
 * (deterministic, unlike atomics). ws (splits, m, n) contiguous. */
__global__ void splitk_reduce(float *__restrict__ c, const float *__restrict__ ws, int64_t m,
                              int64_t n, int64_t ldc, int splits, float alpha, float beta)
{
    const int64_t mn = m * n;
    GA_GRID_STRIDE(idx, mn) {
        float s = 0.0f;
        for (int z = 0; z < splits; z++)
            s += ws[z * mn + idx];
        const int64_t i = idx / n, j = idx % n;
        float *cp = c + i * ldc + j;
        *cp = beta != 0.0f ? alpha * s + beta * *cp : alpha * s;
    }
}

/* The definition: one thread per output. */
__global__ void sgemm_ref(float *__restrict__ c, const float *__restrict__ a,
                          const float *__restrict__ b, int trans_a, int trans_b, int64_t m,
                          int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc, float alpha,
                          float beta)
{
    GA_GRID_STRIDE(idx, m * n) {
        const int64_t i = idx / n, j = idx % n;
        float acc = 0.0f;
        for (int64_t p = 0; p < k; p++) {
            const float av = trans_a ? a[p * lda + i] : a[i * lda + p];
            const float bv = trans_b ? b[j * ldb + p] : b[p * ldb + j];
            acc = fmaf(av, bv, acc);
        }
        float *cp = c + i * ldc + j;
        *cp = beta != 0.0f ? alpha * acc + beta * *cp : alpha * acc;
    }
}

/* c = beta * c (k == 0 or alpha == 0: a and b are not read, as in BLAS). */
__global__ void scale_matrix(float *c, int64_t m, int64_t n, int64_t ldc, float beta)
{
    GA_GRID_STRIDE(idx, m * n) {
        float *cp = c + (idx / n) * ldc + idx % n;
        *cp = beta != 0.0f ? beta * *cp : 0.0f;
    }
}

bool aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

/* Launch one tile configuration; picks the (trans, vec) instantiation. */
template <int BM, int BN, int BK, int TM, int TN>
ga_status launch_tiled(float *c, const float *a, const float *b, int ta, int tb, int64_t m,
                       int64_t n, int64_t k, int64_t kc, int splits, int64_t lda, int64_t ldb,
                       int64_t ldc, int64_t c_split_stride, float alpha, float beta,
                       cudaStream_t stream)
{
    const bool vec = lda % 4 == 0 && ldb % 4 == 0 && aligned16(a) && aligned16(b);
    /* split-K slices start at c + z * c_split_stride: keep those aligned too */
    const bool c_vec = ldc % 4 == 0 && c_split_stride % 4 == 0 && aligned16(c);
    const int64_t max_m = 65535LL * BM; /* gridDim.y limit: larger m goes in chunks */
    for (int64_t m_off = 0; m_off < m; m_off += max_m) {
        const int64_t mc = m - m_off < max_m ? m - m_off : max_m;
        const float *ap = a + (ta ? m_off : m_off * lda);
        float *cp = c + m_off * ldc;
        dim3 grid((unsigned)((n + BN - 1) / BN), (unsigned)((mc + BM - 1) / BM), (unsigned)splits);
#define LAUNCH_TILED(TA_, TB_, V_)                                                   \
    GA_LAUNCH(grid, kThreads, 0, stream, sgemm_tiled<BM, BN, BK, TM, TN, TA_, TB_, V_>)(   \
        cp, ap, b, mc, n, k, kc, lda, ldb, ldc, c_split_stride, alpha, beta, c_vec)
        const int sel = (ta ? 4 : 0) | (tb ? 2 : 0) | (vec ? 1 : 0);
        switch (sel) {
        case 0: LAUNCH_TILED(false, false, false); break;
        case 1: LAUNCH_TILED(false, false, true); break;
        case 2: LAUNCH_TILED(false, true, false); break;
        case 3: LAUNCH_TILED(false, true, true); break;
        case 4: LAUNCH_TILED(true, false, false); break;
        case 5: LAUNCH_TILED(true, false, true); break;
        case 6: LAUNCH_TILED(true, true, false); break;
        default: LAUNCH_TILED(true, true, true); break;
        }
#undef LAUNCH_TILED
        GA_CUDA_LAUNCH("sgemm_tiled");
    }
    return GA_OK;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

ga_status gemm_fast(float *c, const float *a, const float *b, int ta, int tb, int64_t m,
                    int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc, float alpha,
                    float beta, cudaStream_t stream)
{
    const int64_t sms = ga_cuda_sm_count();
    if (ceil_div(m, 128) * ceil_div(n, 128) >= sms)
        return launch_tiled<128, 128, 8, 8, 8>(c, a, b, ta, tb, m, n, k, k, 1, lda, ldb, ldc, 0,
                                               alpha, beta, stream);
    /* Few output tiles (dense layers, conv weight gradients with a long k):
     * smaller tiles, and split k so that about two waves of blocks run. */
    const int64_t tiles = ceil_div(m, 64) * ceil_div(n, 64);
    int64_t splits = 1;
    if (tiles < sms && k >= 1024) {
        splits = ceil_div(2 * sms, tiles);
        if (splits > k / 256) splits = k / 256; /* at least 256 k per block */
        if (splits > 64) splits = 64;
    }
    if (splits < 2)
        return launch_tiled<64, 64, 16, 4, 4>(c, a, b, ta, tb, m, n, k, k, 1, lda, ldb, ldc, 0,
                                              alpha, beta, stream);
    const int64_t kc = ceil_div(ceil_div(k, splits), 16) * 16; /* slab-aligned slices */
    splits = ceil_div(k, kc);
    void *ws = nullptr;
    GA_TRY(ga_cuda_scratch_acquire(&ws, (size_t)(splits * m * n) * sizeof(float)));
    ga_status st = launch_tiled<64, 64, 16, 4, 4>((float *)ws, a, b, ta, tb, m, n, k, kc,
                                                  (int)splits, lda, ldb, n, m * n, 1.0f, 0.0f,
                                                  stream);
    if (st == GA_OK) {
        GA_LAUNCH(ga_cuda_blocks(m * n, kThreads), kThreads, 0, stream, splitk_reduce)(
            c, (const float *)ws, m, n, ldc, (int)splits, alpha, beta);
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess)
            st = ga_cuda_fail(e, "launch of splitk_reduce", 0);
    }
    ga_cuda_scratch_release();
    return st;
}

ga_status gemm_cublas(float *c, const float *a, const float *b, int ta, int tb, int64_t m,
                      int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc, float alpha,
                      float beta)
{
    if (m > INT_MAX || n > INT_MAX || k > INT_MAX || lda > INT_MAX || ldb > INT_MAX ||
        ldc > INT_MAX)
        return ga_fail(GA_ERR_VALUE, "gemm (cuBLAS): sizes above 2^31-1 are not supported");
    cublasHandle_t h;
    GA_TRY(ga_cuda_cublas(&h));
    /* Row-major c = op(a) op(b) is column-major c^T = op(b)^T op(a)^T: a row-major
     * matrix read column-major is its transpose, so the flags carry over as is. */
    GA_CUBLAS(cublasSgemm(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                          (int)n, (int)m, (int)k, &alpha, b, (int)ldb, a, (int)lda, &beta, c,
                          (int)ldc));
    return GA_OK;
}

} // namespace

/* c (m, n), a (m, k) or (k, m) when trans_a, b (k, n) or (n, k) when trans_b;
 * row-major with leading dimensions lda, ldb, ldc. */
ga_status ga_gemm_cuda(float *c, const float *a, const float *b, int trans_a, int trans_b,
                       int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc,
                       float alpha, float beta, int variant)
{
    GA_CHECK_SIZE(m);
    GA_CHECK_SIZE(n);
    GA_CHECK_SIZE(k);
    const int base = ga_variant_base(variant);
    const bool tf32 = ga_variant_tf32(variant);
    if ((variant & ~(GA_VARIANT_MASK | GA_PRECISION_FLAGS)) != 0 ||
        (base != GA_VARIANT_FAST && base != GA_VARIANT_REF && base != GA_VARIANT_BLAS))
        return ga_fail(GA_ERR_VALUE, "gemm: unknown kernel variant %d", variant);
    if (tf32 && base != GA_VARIANT_REF) {
        /* Checked before any size shortcut, so a call fails the same way for every
         * shape. The reference rounds in software and runs on any GPU; cuBLAS would
         * quietly compute in fp32 below sm_80, the WMMA kernel has no code there. */
        int major = 0;
        GA_TRY(ga_cuda_cc_major(&major));
        if (major < 8)
            return ga_fail(GA_ERR_VALUE,
                           "gemm: tf32 runs on tensor cores of compute capability 8.0 or later (sm_80+); "
                           "this GPU is sm_%d.x (use precision='fp32', or kernel='ref' for the TF32 "
                           "arithmetic on CUDA cores)",
                           major);
    }
    if (m == 0 || n == 0)
        return GA_OK;
    GA_CHECK_PTR(c, m * n);
    if (ldc < n)
        return ga_fail(GA_ERR_VALUE, "gemm: ldc (%lld) < n (%lld)", (long long)ldc, (long long)n);
    cudaStream_t stream;
    GA_TRY(ga_cuda_stream(&stream));
    if (k == 0 || alpha == 0.0f) {
        GA_LAUNCH(ga_cuda_blocks(m * n, kThreads), kThreads, 0, stream, scale_matrix)(c, m, n, ldc, beta);
        GA_CUDA_LAUNCH("scale_matrix");
        return GA_OK;
    }
    GA_CHECK_PTR(a, m * k);
    GA_CHECK_PTR(b, k * n);
    if (lda < (trans_a ? m : k) || ldb < (trans_b ? k : n))
        return ga_fail(GA_ERR_VALUE, "gemm: leading dimension too small (lda %lld, ldb %lld)",
                       (long long)lda, (long long)ldb);
    if (tf32)
        return ga_gemm_tf32_cuda(c, a, b, trans_a != 0, trans_b != 0, m, n, k, lda, ldb, ldc, alpha, beta,
                                 base, stream);
    switch (variant) {
    case GA_VARIANT_BLAS:
        return gemm_cublas(c, a, b, trans_a, trans_b, m, n, k, lda, ldb, ldc, alpha, beta);
    case GA_VARIANT_REF:
        GA_LAUNCH(ga_cuda_blocks(m * n, kThreads), kThreads, 0, stream, sgemm_ref)(
            c, a, b, trans_a, trans_b, m, n, k, lda, ldb, ldc, alpha, beta);
        GA_CUDA_LAUNCH("sgemm_ref");
        return GA_OK;
    default:
        return gemm_fast(c, a, b, trans_a != 0, trans_b != 0, m, n, k, lda, ldb, ldc, alpha, beta,
                         stream);
    }
}
