/* The part of CUDA's warp matrix API (nvcuda::wmma, <mma.h>) that gpuaccel's
 * kernels use, for the CPU emulator: TF32 fragments of shape m16n16k8 with a
 * float accumulator (Ampere and later). setup.py puts csrc/cuda/emu first on
 * the include path of the emulator build, so `#include <mma.h>` lands here.
 *
 * Emulation model. CUDA leaves the mapping of a fragment's elements to the
 * lanes of a warp unspecified, and promises only that code which treats
 * x[0..num_elements) uniformly (scale, convert, fill) is correct. Here every
 * lane holds the whole tile, in row-major order, so num_elements is the tile
 * size (128 for a and b, 256 for the accumulator) where a GPU has 4 and 8;
 * kernels must not assume either number. Loads read the whole tile into every
 * lane; mma_sync computes the whole product in every lane (redundant work,
 * the same result in each); store_matrix_sync writes, from each lane, only
 * the 8 elements that lane holds on a GPU in the accumulator layout PTX
 * documents for mma.m16n8k8 (twice, for the two 8-column halves): (r, c) is
 * lane (r % 8) * 4 + (c % 8) / 2's. So a kernel that reads elements stored by
 * other lanes without a __syncwarp in between sees stale data under a
 * shuffled schedule, as it could on the hardware. Every *_sync call first waits for the
 * warp (__syncwarp), which checks that the whole warp takes part, and checks
 * CUDA's alignment rules (pointer 256-bit aligned, ldm a multiple of 16 bytes)
 * that a GPU may punish with garbage or a fault: a violation is a kernel fault.
 *
 * TF32 rounding, as the hardware does it:
 *   - __float_to_tf32 is PTX `cvt.rna.tf32.f32`: round to nearest, ties away
 *     from zero, to 10 explicit mantissa bits; the result is still a 32-bit
 *     float whose low 13 bits are zero. On sm_86 ptxas lowers it to integer
 *     ops (the sm_86 SASS is shown in
 *     https://enp1s0.github.io/blog/cuda/2023/01/08/tf32-rna.html):
 *         if (!(|x| >= inf))  bits += 0x1000;     (finite only)
 *         bits &= 0xffffe000;
 *     so a carry runs into the exponent (the largest finite floats round to
 *     infinity, as round-to-nearest must), infinities stay, quiet NaNs stay
 *     NaN (their top mantissa bit survives), subnormals round the same way.
 *     A NaN whose payload lies only in the low 13 bits would come out as an
 *     infinity; no arithmetic makes such a NaN, and this code does the same.
 *     The instruction is exact integer arithmetic, so this emulation is
 *     bit-for-bit the hardware's on every input.
 *   - mma_sync on operands that were NOT converted: CUDA asks that tf32
 *     inputs be converted with __float_to_tf32 first (the programming guide's
 *     WMMA section; quoted from memory, not re-read for this header) and does
 *     not specify the rest; the hardware reads only the top 10 mantissa bits
 *     ("only the first 10 bits of the input mantissa are read", PyTorch's notes
 *     on TF32, docs/source/notes/numerical_accuracy.rst), i.e. it truncates. mma_sync
 *     here truncates likewise (a no-op on converted operands), so a kernel that
 *     forgets the conversion still gives TF32-sized errors, but biased toward
 *     zero, which the tests can tell from rounding.
 *   - Products of two TF32 values are exact in fp32 (11 x 11 significant bits);
 *     they are summed into the fp32 accumulator one k at a time with fmaf, in
 *     k order. The tensor core's internal summation order and rounding are
 *     not documented; the difference is within fp32 accumulation error. */
#ifndef GA_EMU_MMA_H
#define GA_EMU_MMA_H

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cuda_runtime.h"

namespace ga_emu {
/* A fault in a kernel (misuse the emulator detects): sticky cudaErrorLaunchFailure
 * naming the kernel, block, thread and `file:line`; the calling thread ends. */
void kernel_fault(const char *what, const char *file, int line);
} // namespace ga_emu

namespace nvcuda {
namespace wmma {

struct row_major;
struct col_major;
struct matrix_a;
struct matrix_b;
struct accumulator;
namespace precision {
struct tf32;
}
enum layout_t { mem_row_major, mem_col_major };

/* cvt.rna.tf32.f32 (see the header comment). */
inline float __float_to_tf32(float in)
{
    uint32_t u;
    std::memcpy(&u, &in, sizeof u);
    if ((u & 0x7f800000u) != 0x7f800000u) /* finite: round half away from zero */
        u += 0x1000u;
    u &= 0xffffe000u;
    float out;
    std::memcpy(&out, &u, sizeof out);
    return out;
}

namespace detail {
/* What the tensor core reads of an unconverted operand: the top 10 mantissa bits. */
inline float tf32_truncate(float in)
{
    uint32_t u;
    std::memcpy(&u, &in, sizeof u);
    u &= 0xffffe000u;
    float out;
    std::memcpy(&out, &u, sizeof out);
    return out;
}

/* Rows x cols of each use's tile; elements are kept row-major. */
template <class Use, int M, int N, int K> struct shape;
template <int M, int N, int K> struct shape<matrix_a, M, N, K> {
    static constexpr int rows = M, cols = K;
};
template <int M, int N, int K> struct shape<matrix_b, M, N, K> {
    static constexpr int rows = K, cols = N;
};
template <int M, int N, int K> struct shape<accumulator, M, N, K> {
    static constexpr int rows = M, cols = N;
};
template <class T> struct storage {
    typedef T type;
};
template <> struct storage<precision::tf32> {
    typedef float type;
};

inline int lane_id()
{
    const unsigned linear = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    return (int)(linear % 32u);
}

/* CUDA's rules for load/store_matrix_sync: mptr 256-bit aligned, ldm a multiple
 * of 16 bytes (4 floats) and at least the tile's row (or column) length. */
inline void check_ptr(const void *p, unsigned ldm, unsigned min_ldm, const char *what, const char *file, int line)
{
    if (((uintptr_t)p & 31u) != 0)
        ga_emu::kernel_fault(what, file, line);
    if (ldm % 4u != 0 || ldm < min_ldm)
        ga_emu::kernel_fault(what, file, line);
}
} // namespace detail

template <class Use, int M, int N, int K, class T, class Layout = void> class fragment {
    static_assert(M == 16 && N == 16 && K == 8, "the emulator's wmma has the m16n16k8 shape only");
    static_assert(std::is_same<Use, accumulator>::value ? std::is_same<T, float>::value && std::is_void<Layout>::value
                                                        : std::is_same<T, precision::tf32>::value &&
                                                              (std::is_same<Layout, row_major>::value ||
                                                               std::is_same<Layout, col_major>::value),
                  "the emulator's wmma has tf32 a/b fragments (row_major or col_major) and float accumulators");

  public:
    typedef detail::shape<Use, M, N, K> tile;
    typedef T element_type;
    typedef typename detail::storage<T>::type storage_element_type;
    enum { num_elements = tile::rows * tile::cols, num_storage_elements = tile::rows * tile::cols };
    storage_element_type x[num_elements];
};

template <class Use, int M, int N, int K, class T, class L>
inline void fill_fragment(fragment<Use, M, N, K, T, L> &f, const typename detail::storage<T>::type &v)
{
    for (int i = 0; i < f.num_elements; i++)
        f.x[i] = v;
}

/* a or b from memory laid out as Layout (row_major: element (r, c) at p[r * ldm + c]). */
template <class Use, int M, int N, int K, class L>
inline void load_matrix_sync(fragment<Use, M, N, K, precision::tf32, L> &f, const float *p, unsigned ldm,
                             const char *file = __builtin_FILE(), int line = __builtin_LINE())
{
    typedef typename fragment<Use, M, N, K, precision::tf32, L>::tile tile;
    constexpr bool rm = std::is_same<L, row_major>::value;
    __syncwarp(0xffffffffu, file, line);
    detail::check_ptr(p, ldm, rm ? tile::cols : tile::rows,
                      "wmma::load_matrix_sync: pointer not 32-byte aligned or bad ldm", file, line);
    for (int r = 0; r < tile::rows; r++)
        for (int c = 0; c < tile::cols; c++)
            f.x[r * tile::cols + c] = rm ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r];
}

template <int M, int N, int K>
inline void load_matrix_sync(fragment<accumulator, M, N, K, float> &f, const float *p, unsigned ldm, layout_t layout,
                             const char *file = __builtin_FILE(), int line = __builtin_LINE())
{
    __syncwarp(0xffffffffu, file, line);
    detail::check_ptr(p, ldm, layout == mem_row_major ? N : M,
                      "wmma::load_matrix_sync: pointer not 32-byte aligned or bad ldm", file, line);
    for (int r = 0; r < M; r++)
        for (int c = 0; c < N; c++)
            f.x[r * N + c] = layout == mem_row_major ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r];
}

/* Each lane writes only the elements a GPU lane would hold (see the header comment). */
template <int M, int N, int K>
inline void store_matrix_sync(float *p, const fragment<accumulator, M, N, K, float> &f, unsigned ldm,
                              layout_t layout, const char *file = __builtin_FILE(), int line = __builtin_LINE())
{
    __syncwarp(0xffffffffu, file, line);
    detail::check_ptr(p, ldm, layout == mem_row_major ? N : M,
                      "wmma::store_matrix_sync: pointer not 32-byte aligned or bad ldm", file, line);
    const int lane = detail::lane_id();
    for (int e = 0; e < M * N; e++) {
        const int r = e / N, c = e % N;
        if ((r % 8) * 4 + (c % 8) / 2 != lane)
            continue;
        if (layout == mem_row_major)
            p[(size_t)r * ldm + c] = f.x[e];
        else
            p[(size_t)c * ldm + r] = f.x[e];
    }
}

/* d = a b + c; d may be c. Operands as the tensor core reads them (truncated
 * to TF32: exact on converted values), fp32 accumulation in k order. */
template <int M, int N, int K, class LA, class LB>
inline void mma_sync(fragment<accumulator, M, N, K, float> &d, const fragment<matrix_a, M, N, K, precision::tf32, LA> &a,
                     const fragment<matrix_b, M, N, K, precision::tf32, LB> &b,
                     const fragment<accumulator, M, N, K, float> &c, const char *file = __builtin_FILE(),
                     int line = __builtin_LINE())
{
    __syncwarp(0xffffffffu, file, line);
    float at[M * K], bt[K * N], out[M * N];
    for (int i = 0; i < M * K; i++)
        at[i] = detail::tf32_truncate(a.x[i]);
    for (int i = 0; i < K * N; i++)
        bt[i] = detail::tf32_truncate(b.x[i]);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float acc = c.x[i * N + j];
            for (int p = 0; p < K; p++)
                acc = fmaf(at[i * K + p], bt[p * N + j], acc);
            out[i * N + j] = acc;
        }
    for (int i = 0; i < M * N; i++)
        d.x[i] = out[i];
}

} // namespace wmma
} // namespace nvcuda

#endif
