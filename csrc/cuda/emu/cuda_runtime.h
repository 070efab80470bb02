/* The device side of the gpuaccel CUDA emulator: what a .cu file sees of CUDA
 * when it is compiled by the host C++ compiler (GPUACCEL_CUDA_EMU=1) instead
 * of nvcc. The kernel bodies are unchanged; this header gives them
 *
 *   - the qualifiers (__global__, __device__, __shared__, ...),
 *   - threadIdx / blockIdx / blockDim / gridDim of the emulated thread running,
 *   - __syncthreads (a real barrier: the threads of a block are fibers that
 *     switch at every barrier), the warp shuffles, votes and __syncwarp with
 *     32-lane semantics, atomics, the vector types and intrinsics in use,
 *   - ga_emu::launch, which GA_LAUNCH (csrc/cuda/cuda_common.h) calls in
 *     place of <<<...>>>: the grid is queued on the stream and runs when the
 *     host synchronises (emu_runtime.cpp).
 *
 * __shared__ is a static thread-local: one OS thread runs one block at a time
 * (all of its fibers), so each block in flight has its own copy. */
#ifndef GA_EMU_CUDA_RUNTIME_H
#define GA_EMU_CUDA_RUNTIME_H

#include "cuda_runtime_api.h"

#ifdef __cplusplus

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

/* ---- qualifiers ---- */
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static __thread
#define __constant__ static

/* ---- built-in vector types ---- */
struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};
struct __align__(8) float2 { float x, y; };
struct __align__(16) float4 { float x, y, z, w; };
struct __align__(8) int2 { int x, y; };
struct __align__(16) int4 { int x, y, z, w; };
struct __align__(16) double2 { double x, y; };
static inline float2 make_float2(float x, float y) { return float2{x, y}; }
static inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
static inline int2 make_int2(int x, int y) { return int2{x, y}; }
static inline int4 make_int4(int x, int y, int z, int w) { return int4{x, y, z, w}; }
static inline double2 make_double2(double x, double y) { return double2{x, y}; }

static constexpr int warpSize = 32;

namespace ga_emu {

/* What a kernel can ask of the thread running it. */
struct ThreadView {
    uint3 thread_idx;
    uint3 block_idx;
    dim3 block_dim;
    dim3 grid_dim;
};
/* The emulated thread on this OS thread (set by the scheduler at each switch). */
extern __thread const ThreadView *current_view;

/* The block barrier; `file:line` names the call site so that threads waiting
 * at different barriers are reported instead of released together. */
void syncthreads(const char *file, int line);

/* One warp-collective operation: waits until every lane named in `mask` has
 * reached a collective, then returns this lane's result. */
enum WarpOp { WARP_SYNC, WARP_SHFL_IDX, WARP_SHFL_UP, WARP_SHFL_DOWN, WARP_SHFL_XOR, WARP_BALLOT };
uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t value, int arg, int width,
                         const char *file, int line);
unsigned active_mask(void);

template <class T> inline uint64_t to_bits(T v)
{
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a type over 8 bytes");
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    return bits;
}
template <class T> inline T from_bits(uint64_t bits)
{
    T v;
    std::memcpy(&v, &bits, sizeof(T));
    return v;
}

/* A launch as queued: its name, configuration and the body every thread runs. */
struct Launch {
    const char *name;
    dim3 grid, block;
    size_t shared_bytes;
    cudaStream_t stream;
    std::function<void()> body;
};
/* Checks the configuration as CUDA does (the error is returned by the next
 * cudaGetLastError) and queues the grid on its stream. */
void submit(Launch &&launch);

/* What GA_LAUNCH(grid, block, shared, stream, kernel) evaluates to: a callable
 * taking the kernel's arguments, which are converted to its parameter types
 * and copied, as a real launch copies them. */
template <class... P> struct Launcher {
    const char *name;
    dim3 grid, block;
    size_t shared_bytes;
    cudaStream_t stream;
    void (*kernel)(P...);

    template <class... A> void operator()(A &&...args) const
    {
        static_assert(sizeof...(A) == sizeof...(P), "kernel launched with the wrong number of arguments");
        auto params = std::make_shared<std::tuple<std::decay_t<P>...>>(std::forward<A>(args)...);
        void (*k)(P...) = kernel;
        submit(Launch{name, grid, block, shared_bytes, stream, [k, params]() { std::apply(k, *params); }});
    }
};
template <class... P>
Launcher<P...> launch(const char *name, dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
                      void (*kernel)(P...))
{
    return Launcher<P...>{name, grid, block, shared_bytes, stream, kernel};
}

} // namespace ga_emu

#define threadIdx (ga_emu::current_view->thread_idx)
#define blockIdx (ga_emu::current_view->block_idx)
#define blockDim (ga_emu::current_view->block_dim)
#define gridDim (ga_emu::current_view->grid_dim)

/* ---- synchronisation and warp collectives ---- */
static inline void __syncthreads(const char *file = __builtin_FILE(), int line = __builtin_LINE())
{
    ga_emu::syncthreads(file, line);
}
static inline void __syncwarp(unsigned mask = 0xffffffffu, const char *file = __builtin_FILE(),
                              int line = __builtin_LINE())
{
    ga_emu::warp_collective(ga_emu::WARP_SYNC, mask, 0, 0, 32, file, line);
}
#define GA_EMU_SHFL(fn, op)                                                                      \
    template <class T>                                                                           \
    inline T fn(unsigned mask, T var, int arg, int width = 32, const char *file = __builtin_FILE(), \
                int line = __builtin_LINE())                                                     \
    {                                                                                            \
        return ga_emu::from_bits<T>(                                                             \
            ga_emu::warp_collective(op, mask, ga_emu::to_bits(var), arg, width, file, line));    \
    }
GA_EMU_SHFL(__shfl_sync, ga_emu::WARP_SHFL_IDX)
GA_EMU_SHFL(__shfl_up_sync, ga_emu::WARP_SHFL_UP)
GA_EMU_SHFL(__shfl_down_sync, ga_emu::WARP_SHFL_DOWN)
GA_EMU_SHFL(__shfl_xor_sync, ga_emu::WARP_SHFL_XOR)
#undef GA_EMU_SHFL
static inline unsigned __ballot_sync(unsigned mask, int pred, const char *file = __builtin_FILE(),
                                     int line = __builtin_LINE())
{
    return (unsigned)ga_emu::warp_collective(ga_emu::WARP_BALLOT, mask, pred != 0, 0, 32, file, line);
}
static inline int __any_sync(unsigned mask, int pred, const char *file = __builtin_FILE(),
                             int line = __builtin_LINE())
{
    return __ballot_sync(mask, pred, file, line) != 0;
}
static inline int __all_sync(unsigned mask, int pred, const char *file = __builtin_FILE(),
                             int line = __builtin_LINE())
{
    return __ballot_sync(mask, pred, file, line) == mask;
}
static inline unsigned __activemask(void) { return ga_emu::active_mask(); }
static inline void __threadfence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void __threadfence_block(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

/* ---- atomics: blocks run in parallel on host threads, so these are real ---- */
template <class T> inline T ga_emu_atomic_update(T *p, T (*f)(T, T), T v)
{
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(p, &old, f(old, v), true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
    }
    return old;
}
template <class T> inline T ga_emu_atomic_float(T *p, T (*f)(T, T), T v)
{
    static_assert(sizeof(T) == 4 || sizeof(T) == 8, "float or double");
    using U = typename std::conditional<sizeof(T) == 4, uint32_t, uint64_t>::type;
    U *u = reinterpret_cast<U *>(p);
    U old = __atomic_load_n(u, __ATOMIC_RELAXED), next;
    do {
        T o, n;
        std::memcpy(&o, &old, sizeof o);
        n = f(o, v);
        std::memcpy(&next, &n, sizeof n);
    } while (!__atomic_compare_exchange_n(u, &old, next, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
    T o;
    std::memcpy(&o, &old, sizeof o);
    return o;
}
static inline int atomicAdd(int *p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
static inline unsigned atomicAdd(unsigned *p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
static inline unsigned long long atomicAdd(unsigned long long *p, unsigned long long v)
{
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
static inline float atomicAdd(float *p, float v)
{
    return ga_emu_atomic_float<float>(p, [](float a, float b) { return a + b; }, v);
}
static inline double atomicAdd(double *p, double v)
{
    return ga_emu_atomic_float<double>(p, [](double a, double b) { return a + b; }, v);
}
static inline int atomicSub(int *p, int v) { return __atomic_fetch_sub(p, v, __ATOMIC_SEQ_CST); }
static inline int atomicExch(int *p, int v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
static inline unsigned atomicExch(unsigned *p, unsigned v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
static inline float atomicExch(float *p, float v)
{
    return ga_emu_atomic_float<float>(p, [](float, float b) { return b; }, v);
}
static inline int atomicMax(int *p, int v)
{
    return ga_emu_atomic_update<int>(p, [](int a, int b) { return a > b ? a : b; }, v);
}
static inline int atomicMin(int *p, int v)
{
    return ga_emu_atomic_update<int>(p, [](int a, int b) { return a < b ? a : b; }, v);
}
static inline int atomicCAS(int *p, int compare, int v)
{
    __atomic_compare_exchange_n(p, &compare, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return compare;
}
static inline unsigned atomicCAS(unsigned *p, unsigned compare, unsigned v)
{
    __atomic_compare_exchange_n(p, &compare, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return compare;
}
static inline unsigned long long atomicCAS(unsigned long long *p, unsigned long long compare,
                                           unsigned long long v)
{
    __atomic_compare_exchange_n(p, &compare, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return compare;
}

/* ---- device math: CUDA's overloads of min/max and its fast intrinsics (glibc has
 * __expf and __logf) ---- */
template <class A, class B> inline typename std::common_type<A, B>::type min(A a, B b)
{
    typedef typename std::common_type<A, B>::type T;
    return (T)b < (T)a ? (T)b : (T)a;
}
template <class A, class B> inline typename std::common_type<A, B>::type max(A a, B b)
{
    typedef typename std::common_type<A, B>::type T;
    return (T)a < (T)b ? (T)b : (T)a;
}
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline double rsqrt(double x) { return 1.0 / sqrt(x); }
static inline float __fdividef(float a, float b) { return a / b; }
static inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
template <class T> inline T __ldg(const T *p) { return *p; }
/* bit casts between float and 32-bit integers */
static inline unsigned __float_as_uint(float x)
{
    unsigned u;
    std::memcpy(&u, &x, sizeof u);
    return u;
}
static inline float __uint_as_float(unsigned u)
{
    float x;
    std::memcpy(&x, &u, sizeof x);
    return x;
}
static inline int __float_as_int(float x) { return (int)__float_as_uint(x); }
static inline float __int_as_float(int i) { return __uint_as_float((unsigned)i); }

#endif /* __cplusplus */

#endif
