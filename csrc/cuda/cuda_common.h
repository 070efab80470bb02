/* Shared by the CUDA kernel files: error checks, the per-device stream and
 * cuBLAS handle, launch sizes, and the prototypes of every ga_*_cuda entry
 * point (the twins of csrc/cpu/, same names and argument order as backend.h).
 *
 * Error policy: every CUDA / cuBLAS call goes through GA_CUDA / GA_CUBLAS and
 * every launch (GA_LAUNCH) is followed by GA_CUDA_LAUNCH; a failure becomes ga_fail(...)
 * with the call text and the error name. Nothing here exits or aborts. */
#ifndef GA_CUDA_COMMON_H
#define GA_CUDA_COMMON_H

#include <cstddef>
#include <cstdint>

#include <cublas_v2.h>
#include <cuda_runtime.h>

/* Every kernel launch is written once for both builds:
 *     GA_LAUNCH(grid, block, shared_bytes, stream, kernel)(args...);
 * is kernel<<<grid, block, shared_bytes, stream>>>(args...) under nvcc, and a
 * launch on the CPU emulator (csrc/cuda/emu/, GPUACCEL_CUDA_EMU=1) otherwise.
 * The kernel comes last so a template's commas need no parentheses. */
#ifdef __CUDACC__
#define GA_LAUNCH(grid, block, shared_bytes, stream, ...) \
    __VA_ARGS__<<<grid, block, shared_bytes, stream>>>
#else
#define GA_LAUNCH(grid, block, shared_bytes, stream, ...) \
    ga_emu::launch(#__VA_ARGS__, grid, block, shared_bytes, stream, __VA_ARGS__)
#endif

extern "C" {
#include "core/backend.h"
#include "core/checks.h"
extern const ga_backend ga_cuda_backend; /* backend_cuda.cu */
}
#include "core/rng.h"

/* ---- errors (backend_cuda.cu) ---- */

/* Map a CUDA error to a status + message; `bytes` > 0 is named for OOM.
 * Also clears the runtime's last-error slot so the next launch check does not
 * report this (non-sticky) error a second time. */
ga_status ga_cuda_fail(cudaError_t err, const char *call, size_t bytes);
ga_status ga_cublas_fail(cublasStatus_t st, const char *call);

#define GA_CUDA(call)                                          \
    do {                                                       \
        cudaError_t ga_e_ = (call);                            \
        if (ga_e_ != cudaSuccess)                              \
            return ga_cuda_fail(ga_e_, #call, 0);              \
    } while (0)

/* After a <<<...>>> launch: catches bad configurations at once; faults inside
 * the kernel surface at the next synchronising call (to_host, synchronize). */
#define GA_CUDA_LAUNCH(name)                                   \
    do {                                                       \
        cudaError_t ga_e_ = cudaGetLastError();                \
        if (ga_e_ != cudaSuccess)                              \
            return ga_cuda_fail(ga_e_, "launch of " name, 0);  \
    } while (0)

#define GA_CUBLAS(call)                                        \
    do {                                                       \
        cublasStatus_t ga_s_ = (call);                         \
        if (ga_s_ != CUBLAS_STATUS_SUCCESS)                    \
            return ga_cublas_fail(ga_s_, #call);               \
    } while (0)

/* Argument checks shared by the entry points (sizes were validated by the
 * caller, but the C seam still refuses nonsense instead of faulting). */
#define GA_CHECK_SIZE(x)                                                        \
    do {                                                                        \
        if ((x) < 0)                                                            \
            return ga_fail(GA_ERR_VALUE, "%s: %s must be >= 0, got %lld", __func__, #x, \
                           (long long)(x));                                     \
    } while (0)
#define GA_CHECK_PTR(p, count)                                                  \
    do {                                                                        \
        if ((p) == NULL && (count) > 0)                                         \
            return ga_fail(GA_ERR_VALUE, "%s: %s is NULL", __func__, #p);       \
    } while (0)

/* ---- the device context (backend_cuda.cu) ---- */

/* Stream of the current device (created on first use, non-blocking so the
 * legacy default stream never serialises against it). */
ga_status ga_cuda_stream(cudaStream_t *stream);
/* cuBLAS handle of the current device, bound to its stream. */
ga_status ga_cuda_cublas(cublasHandle_t *handle);
/* Number of SMs of the current device (cached). */
int ga_cuda_sm_count(void);
/* Compute capability major of the current device (queried once, cached): a
 * correctness input, unlike the SM count, so a failed query is an error. */
ga_status ga_cuda_cc_major(int *major);
/* Per-device grow-only scratch, stream-ordered. acquire() takes a lock that
 * release() drops: call release() once the kernels using *p are enqueued (the
 * stream then orders any later regrowth after them). On failure acquire()
 * holds no lock. */
ga_status ga_cuda_scratch_acquire(void **p, size_t bytes);
void ga_cuda_scratch_release(void);

/* Launch size for a grid-stride loop over n items (n > 0). */
static inline unsigned ga_cuda_blocks(int64_t n, int threads)
{
    int64_t b = (n + threads - 1) / threads;
    const int64_t cap = 65535LL * 16; /* grid-stride beyond this */
    return (unsigned)(b < cap ? b : cap);
}
#define GA_GRID_STRIDE(i, n)                                                  \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (int64_t)gridDim.x * blockDim.x)

/* ---- entry points (the backend table in backend_cuda.cu points at them) ---- */

ga_status ga_cuda_set_device(int index);
ga_status ga_cuda_alloc(void **p, size_t bytes);
void ga_cuda_release(void *p);
ga_status ga_cuda_to_device(void *dst, const void *host_src, size_t bytes);
ga_status ga_cuda_to_host(void *host_dst, const void *src, size_t bytes);
ga_status ga_cuda_copy(void *dst, const void *src, size_t bytes);
ga_status ga_cuda_zero(void *p, size_t bytes);
ga_status ga_cuda_synchronize(void);
ga_status ga_cuda_host_alloc(void **p, size_t bytes);
void ga_cuda_host_free(void *p);

/* The TF32 GEMMs (gemm_tf32_cuda.cu), called by ga_gemm_cuda once it has checked
 * the arguments (m, n > 0, k > 0, alpha != 0, leading dimensions, pointers):
 * base is GA_VARIANT_FAST (WMMA tensor-core kernel), REF or BLAS. */
ga_status ga_gemm_tf32_cuda(float *c, const float *a, const float *b, int trans_a, int trans_b, int64_t m,
                            int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc, float alpha, float beta,
                            int base, cudaStream_t stream);

/* ga_<name>_cuda for every kernel of core/kernels.def, the optional ones
 * included; backend_cuda.cu says which optional ones this device has. */
#define GA_KERNEL(name, args) ga_status ga_##name##_cuda args;
#define GA_KERNEL_OPT(name, args) ga_status ga_##name##_cuda args;
#include "core/kernels.def"
#undef GA_KERNEL
#undef GA_KERNEL_OPT

#endif
