/* TF32 SGEMM: c (m, n) = alpha * op(a) op(b) + beta * c with the operands
 * rounded to TF32 (8-bit exponent, 10-bit mantissa; round to nearest, ties
 * away from zero: PTX cvt.rna.tf32.f32) and the products summed in fp32.
 * Row-major with leading dimensions, as every gpuaccel GEMM (core/kernels.def).
 * ga_gemm_cuda (gemm_cuda.cu) checks the arguments, the device's compute
 * capability and the trivial cases, then calls ga_gemm_tf32_cuda with
 *   GA_VARIANT_FAST  the hand-written tensor-core kernel below (WMMA m16n16k8)
 *   GA_VARIANT_BLAS  cublasGemmEx with CUBLAS_COMPUTE_32F_FAST_TF32
 *   GA_VARIANT_REF   one thread per output on CUDA cores, operands rounded in
 *                    software: the definition the tests compare against.
 *
 * The tensor-core kernel. A block of 8 warps computes a 128 x 128 tile of c;
 * warp w owns the 64 x 32 sub-tile at ((w / 4) * 64, (w % 4) * 32), i.e. 4 x 2
 * accumulator fragments of 16 x 16. Per k slab of 16, each warp loads 4 a and
 * 2 b fragments (two k steps of 8) from shared memory and issues 16 mma_sync.
 * Operand slabs are staged in shared memory as they lie in global memory (a
 * (m, k) row-major, or (k, m) when trans_a, read as a col_major fragment;
 * likewise b), so the copy needs no transpose and can be cp.async: 16-byte
 * asynchronous copies (sm_80+) into the other of two buffers while the tensor
 * cores work on this one, one __syncthreads per slab. Edges (m, n, k not
 * multiples of the tile) are zero-filled by the copy (cp.async's src-size
 * operand), so the inner loop has no bounds checks; the epilogue does.
 *
 * The TF32 conversion (wmma::__float_to_tf32) is applied to the fragments
 * right after load_matrix_sync rather than while staging: cp.async moves bytes
 * from global to shared memory without passing through registers, so there is
 * no point at which to convert in flight (NVIDIA's tf32TensorCoreGemm sample
 * converts the same way). It must be done: the tensor core reads only the top
 * 10 mantissa bits of an unconverted operand (truncation), which is a biased
 * error, not TF32 rounding (csrc/cuda/emu/mma.h has the sources).
 *
 * Architectures: setup.py builds every .cu for sm_75 too, which has neither
 * TF32 tensor cores nor cp.async (and <mma.h> declares no tf32 types there),
 * so the kernel body exists only where __CUDA_ARCH__ >= 800; on older targets
 * it is an empty stub that is never launched (ga_gemm_cuda refuses tf32 on a
 * device below compute capability 8.0 with a clear error). The emulator
 * (no __CUDA_ARCH__) compiles the full body with plain loads instead of
 * cp.async and csrc/cuda/emu/mma.h for nvcuda::wmma. */
#include "cuda/cuda_common.h"

#include <climits>
#include <type_traits>

#include <mma.h>

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define GA_TF32_MMA 1 /* the tensor-core body is compiled in this pass */
#endif
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define GA_CP_ASYNC 1 /* cp.async exists (never in the emulator) */
#endif

namespace {

constexpr int kThreads = 256;      /* 8 warps */
constexpr int kBM = 128, kBN = 128; /* block tile of c */
#ifdef GA_TF32_MMA
constexpr int kBK = 16;                       /* k slab */
constexpr int kWM = 64, kWN = 32;             /* warp tile */
constexpr int kFM = kWM / 16, kFN = kWN / 16; /* 16 x 16 fragments per warp tile */
constexpr int kPad = 4; /* floats of row padding: keeps 16-byte rows for cp.async and 32-byte
                         * fragment pointers for wmma, and shifts banks between rows */
#endif

/* cvt.rna.tf32.f32 in integer arithmetic, the same rule the instruction follows
 * (csrc/cuda/emu/mma.h gives the source): finite values get half a TF32 ulp added
 * to the magnitude (ties away from zero; a carry into the exponent rounds the
 * largest floats to infinity), then the low 13 bits are cleared; infinities and
 * NaNs are only masked. Written out rather than calling __float_to_tf32 so the
 * reference runs on any GPU and does not share code with what it checks. */
__device__ __forceinline__ float tf32_round(float x)
{
    unsigned u = __float_as_uint(x);
    if ((u & 0x7f800000u) != 0x7f800000u)
        u += 0x1000u;
    return __uint_as_float(u & 0xffffe000u);
}

/* The definition: one thread per output, TF32 operands, fp32 sums in k order. */
__global__ void sgemm_tf32_ref(float *__restrict__ c, const float *__restrict__ a, const float *__restrict__ b,
                               int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, int64_t lda,
                               int64_t ldb, int64_t ldc, float alpha, float beta)
{
    GA_GRID_STRIDE(idx, m * n) {
        const int64_t i = idx / n, j = idx % n;
        float acc = 0.0f;
        for (int64_t p = 0; p < k; p++) {
            const float av = trans_a ? a[p * lda + i] : a[i * lda + p];
            const float bv = trans_b ? b[j * ldb + p] : b[p * ldb + j];
            acc = fmaf(tf32_round(av), tf32_round(bv), acc); /* the product is exact in fp32 */
        }
        float *cp = c + i * ldc + j;
        *cp = beta != 0.0f ? alpha * acc + beta * *cp : alpha * acc;
    }
}

#ifdef GA_TF32_MMA
using namespace nvcuda;

/* 16 (or 4) bytes global -> shared, the bytes past src_bytes zero-filled; src
 * must be a valid, cp-size-aligned global address even when src_bytes is 0. */
__device__ __forceinline__ void copy16(float *dst, const float *src, int src_bytes)
{
#ifdef GA_CP_ASYNC
    const unsigned s = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(src), "r"(src_bytes));
#else
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (src_bytes == 16) {
        v = *reinterpret_cast<const float4 *>(src);
    } else {
        if (src_bytes > 0) v.x = src[0];
        if (src_bytes > 4) v.y = src[1];
        if (src_bytes > 8) v.z = src[2];
    }
    *reinterpret_cast<float4 *>(dst) = v;
#endif
}
__device__ __forceinline__ void copy4(float *dst, const float *src, int src_bytes)
{
#ifdef GA_CP_ASYNC
    const unsigned s = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(src), "r"(src_bytes));
#else
    *dst = src_bytes ? *src : 0.0f;
#endif
}
__device__ __forceinline__ void copy_commit()
{
#ifdef GA_CP_ASYNC
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}
/* Wait until at most N of this thread's committed copy groups are in flight. */
template <int N> __device__ __forceinline__ void copy_wait()
{
#ifdef GA_CP_ASYNC
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

/* Stage the ROWS x COLS slab at (r0, c0) of a row-major (rows, cols) matrix with
 * row stride ld into dst (row stride LD), zeros outside the matrix. VEC: ld % 4
 * == 0 and src 16-byte aligned, so each group of 4 (c0 is a multiple of 4) is
 * one 16-byte copy, partly zero-filled at the right edge. */
template <int ROWS, int COLS, int LD, bool VEC>
__device__ __forceinline__ void stage(float *dst, const float *__restrict__ src, int ld, int r0, int c0,
                                      int rows, int cols, int tid)
{
    constexpr int CPR = COLS / 4; /* 4-float groups per row */
    static_assert((ROWS * CPR) % kThreads == 0, "whole groups per thread");
#pragma unroll
    for (int it = 0; it < ROWS * CPR / kThreads; it++) {
        const int q = tid + it * kThreads;
        const int r = q / CPR, cc = (q % CPR) * 4;
        const int gr = r0 + r, gc = c0 + cc; /* < 2^31: the launcher checks the sizes */
        float *d = dst + r * LD + cc;
        const bool row_ok = gr < rows;
        const float *p = src + (int64_t)gr * ld + gc; /* formed, not read, when out of range */
        if (VEC) {
            int valid = row_ok ? cols - gc : 0;
            valid = valid < 0 ? 0 : (valid > 4 ? 4 : valid);
            copy16(d, valid > 0 ? p : src, valid * 4);
        } else {
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const bool ok = row_ok && gc + j < cols;
                copy4(d + j, ok ? p + j : src, ok ? 4 : 0);
            }
        }
    }
}

/* Load a fragment and round its elements to TF32 (any element mapping: each
 * element is converted where it lies). */
template <class Frag> __device__ __forceinline__ void load_tf32(Frag &f, const float *p, unsigned ldm)
{
    wmma::load_matrix_sync(f, p, ldm);
#pragma unroll
    for (int e = 0; e < f.num_elements; e++)
        f.x[e] = wmma::__float_to_tf32(f.x[e]);
}
#endif /* GA_TF32_MMA */

/* One block: the kBM x kBN tile of c at (blockIdx.y, blockIdx.x), k in slabs of kBK. */
template <bool TA, bool TB, bool VEC>
__global__ void __launch_bounds__(kThreads, 2) /* <= 128 registers: two blocks per SM */
sgemm_tf32_wmma(float *__restrict__ c, const float *__restrict__ a, const float *__restrict__ b, int m, int n,
                int k, int lda, int ldb, int ldc, float alpha, float beta)
{
#ifdef GA_TF32_MMA
    /* a's slab as stored: (kBM, kBK) rows of k, or (kBK, kBM) when trans_a; b's
     * (kBK, kBN), or (kBN, kBK) when trans_b. */
    constexpr int A_ROWS = TA ? kBK : kBM, A_COLS = TA ? kBM : kBK, A_LD = A_COLS + kPad;
    constexpr int B_ROWS = TB ? kBN : kBK, B_COLS = TB ? kBK : kBN, B_LD = B_COLS + kPad;
    constexpr int A_SIZE = A_ROWS * A_LD, B_SIZE = B_ROWS * B_LD;
    static_assert(A_SIZE % 8 == 0 && B_SIZE % 8 == 0, "buffers keep 32-byte alignment");
    static_assert(2 * (A_SIZE + B_SIZE) >= (kThreads / 32) * 256, "epilogue staging fits");
    static_assert(2 * (A_SIZE + B_SIZE) * 4 <= 48 * 1024, "static shared memory limit");
    typedef typename std::conditional<TA, wmma::col_major, wmma::row_major>::type LA;
    typedef typename std::conditional<TB, wmma::col_major, wmma::row_major>::type LB;

    /* [A buf 0][A buf 1][B buf 0][B buf 1]; the epilogue reuses the front */
    __shared__ __align__(128) float smem[2 * (A_SIZE + B_SIZE)];
    float *const As = smem, *const Bs = smem + 2 * A_SIZE;

    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int wm = warp / (kBN / kWN), wn = warp % (kBN / kWN);
    const int m0 = blockIdx.y * kBM, n0 = blockIdx.x * kBN;

    auto stage_slab = [&](int buf, int k0) {
        if (TA)
            stage<A_ROWS, A_COLS, A_LD, VEC>(As + buf * A_SIZE, a, lda, k0, m0, k, m, tid);
        else
            stage<A_ROWS, A_COLS, A_LD, VEC>(As + buf * A_SIZE, a, lda, m0, k0, m, k, tid);
        if (TB)
            stage<B_ROWS, B_COLS, B_LD, VEC>(Bs + buf * B_SIZE, b, ldb, n0, k0, n, k, tid);
        else
            stage<B_ROWS, B_COLS, B_LD, VEC>(Bs + buf * B_SIZE, b, ldb, k0, n0, k, n, tid);
        copy_commit();
    };

    wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc[kFM][kFN];
#pragma unroll
    for (int i = 0; i < kFM; i++)
#pragma unroll
        for (int j = 0; j < kFN; j++)
            wmma::fill_fragment(acc[i][j], 0.0f);

    const int slabs = (int)(((int64_t)k + kBK - 1) / kBK);
    stage_slab(0, 0);
    for (int t = 0; t < slabs; t++) {
        const int cur = (int)(t & 1);
        if (t + 1 < slabs) { /* the other buffer was last read before the previous barrier */
            stage_slab(cur ^ 1, (t + 1) * kBK);
            copy_wait<1>(); /* this slab's copies (all but the newest group) have landed */
        } else {
            copy_wait<0>();
        }
        __syncthreads(); /* ... and every thread's are visible */
        const float *as = As + cur * A_SIZE, *bs = Bs + cur * B_SIZE;
#pragma unroll
        for (int kk = 0; kk < kBK; kk += 8) {
            /* b's fragments stay for the step, a's stream through one at a time:
             * fewer live registers next to the 64 of the accumulators */
            wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, LB> bf[kFN];
#pragma unroll
            for (int j = 0; j < kFN; j++) {
                const int col = wn * kWN + j * 16; /* element (kk, col) of op(b) */
                load_tf32(bf[j], TB ? bs + col * B_LD + kk : bs + kk * B_LD + col, B_LD);
            }
#pragma unroll
            for (int i = 0; i < kFM; i++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, LA> af;
                const int r = wm * kWM + i * 16; /* element (r, kk) of op(a) */
                load_tf32(af, TA ? as + kk * A_LD + r : as + r * A_LD + kk, A_LD);
#pragma unroll
                for (int j = 0; j < kFN; j++)
                    wmma::mma_sync(acc[i][j], af, bf[j], acc[i][j]);
            }
        }
        __syncthreads(); /* buffer `cur` is free for slab t + 2 */
    }

    /* Epilogue through a per-warp 16 x 16 staging tile (the fragment's element
     * mapping is unspecified, so its elements' positions are known only after a
     * store): c = alpha acc + beta c, c not read when beta == 0, bounds checked. */
    float *const st = smem + warp * 256;
#pragma unroll
    for (int i = 0; i < kFM; i++)
#pragma unroll
        for (int j = 0; j < kFN; j++) {
            wmma::store_matrix_sync(st, acc[i][j], 16, wmma::mem_row_major);
            __syncwarp(); /* the tile is written by all lanes, read by each */
            const int r0 = m0 + wm * kWM + i * 16, c0 = n0 + wn * kWN + j * 16;
#pragma unroll
            for (int e = lane; e < 256; e += 32) {
                const int row = r0 + e / 16, col = c0 + e % 16;
                if (row < m && col < n) {
                    float *cp = c + (int64_t)row * ldc + col;
                    const float v = alpha * st[e];
                    *cp = beta != 0.0f ? v + beta * *cp : v;
                }
            }
            __syncwarp(); /* reads done before the next store */
        }
#endif /* GA_TF32_MMA: below sm_80 the body is empty and the kernel is never launched */
}

bool aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

ga_status launch_wmma(float *c, const float *a, const float *b, bool ta, bool tb, int64_t m, int64_t n, int64_t k,
                      int64_t lda, int64_t ldb, int64_t ldc, float alpha, float beta, cudaStream_t stream)
{
    /* 32-bit indices in the kernel (fewer registers beside the accumulators); the
     * tile origins reach m, n, k rounded up to a tile, hence the margin */
    const int64_t lim = INT_MAX - 256;
    if (m > lim || n > lim || k > lim || lda > INT_MAX || ldb > INT_MAX || ldc > INT_MAX)
        return ga_fail(GA_ERR_VALUE, "gemm (tf32): sizes and leading dimensions above 2^31-256 are not supported");
    const bool vec = lda % 4 == 0 && ldb % 4 == 0 && aligned16(a) && aligned16(b);
    const int64_t max_m = 65535LL * kBM; /* gridDim.y limit: larger m goes in chunks */
    for (int64_t m_off = 0; m_off < m; m_off += max_m) {
        const int64_t mc = m - m_off < max_m ? m - m_off : max_m;
        const float *ap = a + (ta ? m_off : m_off * lda);
        float *cp = c + m_off * ldc;
        dim3 grid((unsigned)((n + kBN - 1) / kBN), (unsigned)((mc + kBM - 1) / kBM), 1);
#define LAUNCH_WMMA(TA_, TB_, V_)                                                                            \
    GA_LAUNCH(grid, kThreads, 0, stream, sgemm_tf32_wmma<TA_, TB_, V_>)(cp, ap, b, (int)mc, (int)n, (int)k,    \
                                                                       (int)lda, (int)ldb, (int)ldc, alpha, beta)
        switch ((ta ? 4 : 0) | (tb ? 2 : 0) | (vec ? 1 : 0)) {
        case 0: LAUNCH_WMMA(false, false, false); break;
        case 1: LAUNCH_WMMA(false, false, true); break;
        case 2: LAUNCH_WMMA(false, true, false); break;
        case 3: LAUNCH_WMMA(false, true, true); break;
        case 4: LAUNCH_WMMA(true, false, false); break;
        case 5: LAUNCH_WMMA(true, false, true); break;
        case 6: LAUNCH_WMMA(true, true, false); break;
        default: LAUNCH_WMMA(true, true, true); break;
        }
#undef LAUNCH_WMMA
        GA_CUDA_LAUNCH("sgemm_tf32_wmma");
    }
    return GA_OK;
}

ga_status gemm_cublas_tf32(float *c, const float *a, const float *b, bool ta, bool tb, int64_t m, int64_t n,
                           int64_t k, int64_t lda, int64_t ldb, int64_t ldc, float alpha, float beta)
{
    if (m > INT_MAX || n > INT_MAX || k > INT_MAX || lda > INT_MAX || ldb > INT_MAX || ldc > INT_MAX)
        return ga_fail(GA_ERR_VALUE, "gemm (cuBLAS, tf32): sizes above 2^31-1 are not supported");
    cublasHandle_t h;
    GA_TRY(ga_cuda_cublas(&h));
    /* The compute type asks for TF32 per call; the handle's math mode (shared by
     * every caller of this device) stays CUBLAS_DEFAULT_MATH. Column-major swap
     * as in gemm_cuda.cu: c^T = op(b)^T op(a)^T. */
    GA_CUBLAS(cublasGemmEx(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, (int)n, (int)m,
                           (int)k, &alpha, b, CUDA_R_32F, (int)ldb, a, CUDA_R_32F, (int)lda, &beta, c, CUDA_R_32F,
                           (int)ldc, CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT));
    return GA_OK;
}

} // namespace

ga_status ga_gemm_tf32_cuda(float *c, const float *a, const float *b, int trans_a, int trans_b, int64_t m,
                            int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc, float alpha, float beta,
                            int base, cudaStream_t stream)
{
    /* ga_gemm_cuda checked everything; these guard the internal contract */
    if (m <= 0 || n <= 0 || k <= 0 || !c || !a || !b)
        return ga_fail(GA_ERR_VALUE, "gemm (tf32): internal call with m=%lld n=%lld k=%lld", (long long)m,
                       (long long)n, (long long)k);
    switch (base) {
    case GA_VARIANT_FAST:
        return launch_wmma(c, a, b, trans_a != 0, trans_b != 0, m, n, k, lda, ldb, ldc, alpha, beta, stream);
    case GA_VARIANT_BLAS:
        return gemm_cublas_tf32(c, a, b, trans_a != 0, trans_b != 0, m, n, k, lda, ldb, ldc, alpha, beta);
    case GA_VARIANT_REF:
        GA_LAUNCH(ga_cuda_blocks(m * n, kThreads), kThreads, 0, stream, sgemm_tf32_ref)(
            c, a, b, trans_a, trans_b, m, n, k, lda, ldb, ldc, alpha, beta);
        GA_CUDA_LAUNCH("sgemm_tf32_ref");
        return GA_OK;
    default:
        return ga_fail(GA_ERR_VALUE, "gemm (tf32): no tf32 form of kernel variant %d", base);
    }
}
