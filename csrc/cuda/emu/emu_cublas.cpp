/* cuBLAS on the gpuaccel CUDA emulator: SGEMM (and GemmEx on floats, with TF32
 * operands when asked) is a plain reference GEMM with
 * cuBLAS's semantics (column-major, op(A) and op(B), host alpha and beta, C
 * not read when beta == 0, A and B not read when alpha == 0 or k == 0),
 * queued on the handle's stream like any device work. Products are summed in
 * double, so the result is at least as accurate as cuBLAS's. */
#include "cublas_api.h"

#include <cstdint>
#include <cstring>
#include <mutex>
#include <set>
#include <vector>

#include "emu_internal.h"

struct cublasContext {
    cudaStream_t stream = nullptr;
    cublasMath_t mode = CUBLAS_DEFAULT_MATH;
};

namespace {
std::mutex g_handles_mutex;
std::set<cublasHandle_t> g_handles;

bool live(cublasHandle_t h)
{
    std::lock_guard<std::mutex> lock(g_handles_mutex);
    return h && g_handles.count(h);
}
} // namespace

extern "C" {

cublasStatus_t cublasCreate(cublasHandle_t *handle)
{
    if (!handle)
        return CUBLAS_STATUS_INVALID_VALUE;
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    cublasHandle_t h = new cublasContext;
    std::lock_guard<std::mutex> lock(g_handles_mutex);
    g_handles.insert(h);
    *handle = h;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle)
{
    {
        std::lock_guard<std::mutex> lock(g_handles_mutex);
        if (!handle || !g_handles.erase(handle))
            return CUBLAS_STATUS_NOT_INITIALIZED;
    }
    delete handle;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream)
{
    if (!live(handle))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    handle->stream = stream;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetStream(cublasHandle_t handle, cudaStream_t *stream)
{
    if (!live(handle))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!stream)
        return CUBLAS_STATUS_INVALID_VALUE;
    *stream = handle->stream;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode)
{
    if (!live(handle))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (mode < CUBLAS_DEFAULT_MATH || mode > CUBLAS_TF32_TENSOR_OP_MATH)
        return CUBLAS_STATUS_INVALID_VALUE;
    handle->mode = mode; /* CUBLAS_TF32_TENSOR_OP_MATH rounds SGEMM's operands to TF32 */
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetProperty(libraryPropertyType type, int *value)
{
    if (!value)
        return CUBLAS_STATUS_INVALID_VALUE;
    switch (type) {
    case MAJOR_VERSION: *value = CUDART_VERSION / 1000; break;
    case MINOR_VERSION: *value = CUDART_VERSION % 1000 / 10; break;
    case PATCH_LEVEL: *value = 0; break;
    default: return CUBLAS_STATUS_INVALID_VALUE;
    }
    return CUBLAS_STATUS_SUCCESS;
}

const char *cublasGetStatusName(cublasStatus_t status)
{
    switch (status) {
#define NAME(x) case x: return #x;
    NAME(CUBLAS_STATUS_SUCCESS) NAME(CUBLAS_STATUS_NOT_INITIALIZED) NAME(CUBLAS_STATUS_ALLOC_FAILED)
    NAME(CUBLAS_STATUS_INVALID_VALUE) NAME(CUBLAS_STATUS_ARCH_MISMATCH) NAME(CUBLAS_STATUS_MAPPING_ERROR)
    NAME(CUBLAS_STATUS_EXECUTION_FAILED) NAME(CUBLAS_STATUS_INTERNAL_ERROR) NAME(CUBLAS_STATUS_NOT_SUPPORTED)
#undef NAME
    }
    return "CUBLAS_STATUS_UNKNOWN";
}

const char *cublasGetStatusString(cublasStatus_t status)
{
    switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
    default: return "an unsupported value or parameter was passed to the function";
    }
}

} /* extern "C" */

namespace {

/* TF32 as the tensor cores take it from a cuBLAS TF32 GEMM: cvt.rna.tf32.f32
 * (round to nearest, ties away from zero, low 13 bits cleared; infinities and
 * NaNs only masked). Which conversion cuBLAS's own kernels apply is not
 * documented; this is the one CUDA provides (see mma.h for the sources). */
float tf32_rna(float x)
{
    uint32_t u;
    std::memcpy(&u, &x, sizeof u);
    if ((u & 0x7f800000u) != 0x7f800000u)
        u += 0x1000u;
    u &= 0xffffe000u;
    std::memcpy(&x, &u, sizeof x);
    return x;
}

/* cublasSgemm's work, with the operands rounded to TF32 first when `tf32`. */
cublasStatus_t sgemm(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                     int k, const float *alpha, const float *A, int lda, const float *B, int ldb,
                     const float *beta, float *C, int ldc, bool tf32, const char *name)
{
    if (!live(handle))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    const bool ta = transa != CUBLAS_OP_N, tb = transb != CUBLAS_OP_N;
    if ((unsigned)transa > CUBLAS_OP_C || (unsigned)transb > CUBLAS_OP_C || m < 0 || n < 0 || k < 0 ||
        lda < (ta ? (k > 1 ? k : 1) : (m > 1 ? m : 1)) || ldb < (tb ? (n > 1 ? n : 1) : (k > 1 ? k : 1)) ||
        ldc < (m > 1 ? m : 1) || !alpha || !beta)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (m == 0 || n == 0)
        return CUBLAS_STATUS_SUCCESS;
    const float a = *alpha, b = *beta; /* host pointer mode: read at the call */
    const bool reads_ab = a != 0.0f && k > 0;
    /* stored extents, column-major: A is (m, k) or (k, m), B is (k, n) or (n, k) */
    const size_t a_rows = ta ? k : m, a_cols = ta ? m : k, b_rows = tb ? n : k, b_cols = tb ? k : n;
    if (!ga_emu::is_device_range(C, ((size_t)(n - 1) * ldc + m) * sizeof(float)) ||
        (reads_ab && (!ga_emu::is_device_range(A, ((a_cols - 1) * lda + a_rows) * sizeof(float)) ||
                      !ga_emu::is_device_range(B, ((b_cols - 1) * ldb + b_rows) * sizeof(float))))) {
        ga_emu::diagnose("%s: an operand is not (wholly) in device memory", name);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    cudaError_t e = ga_emu::enqueue(handle->stream, [=]() {
        auto in = [tf32](float v) { return tf32 ? tf32_rna(v) : v; };
        /* op(A) row-major (m, k), so each output is a contiguous dot product */
        std::vector<float> arow;
        if (reads_ab) {
            arow.resize((size_t)m * k);
            for (int i = 0; i < m; i++)
                for (int p = 0; p < k; p++)
                    arow[(size_t)i * k + p] = in(ta ? A[(size_t)i * lda + p] : A[(size_t)p * lda + i]);
        }
        ga_emu::parallel_for(n, [&](int64_t j) {
            std::vector<float> bcol(reads_ab ? k : 0);
            for (int p = 0; p < (int)bcol.size(); p++)
                bcol[p] = in(tb ? B[(size_t)p * ldb + j] : B[(size_t)j * ldb + p]);
            float *c = C + (size_t)j * ldc;
            for (int i = 0; i < m; i++) {
                double acc = 0.0;
                if (reads_ab) {
                    const float *ar = &arow[(size_t)i * k];
                    for (int p = 0; p < k; p++)
                        acc += (double)ar[p] * bcol[p];
                }
                const float v = reads_ab ? (float)((double)a * acc) : 0.0f; /* alpha * nothing */
                c[i] = b == 0.0f ? (reads_ab ? v : 0.0f) : v + b * c[i];
            }
        });
    });
    return e == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

} // namespace

extern "C" {

/* In CUBLAS_TF32_TENSOR_OP_MATH mode cuBLAS may run SGEMM on TF32 tensor cores;
 * here it then always does, the least precise choice the mode allows. */
cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                           int m, int n, int k, const float *alpha, const float *A, int lda,
                           const float *B, int ldb, const float *beta, float *C, int ldc)
{
    if (!live(handle))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    return sgemm(handle, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc,
                 handle->mode == CUBLAS_TF32_TENSOR_OP_MATH, "cublasSgemm");
}

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
                            int n, int k, const void *alpha, const void *A, cudaDataType Atype, int lda,
                            const void *B, cudaDataType Btype, int ldb, const void *beta, void *C,
                            cudaDataType Ctype, int ldc, cublasComputeType_t computeType, cublasGemmAlgo_t algo)
{
    if (!live(handle))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (algo != CUBLAS_GEMM_DEFAULT && algo != CUBLAS_GEMM_DEFAULT_TENSOR_OP)
        return CUBLAS_STATUS_NOT_SUPPORTED; /* the emulator has one algorithm */
    if (Atype != CUDA_R_32F || Btype != CUDA_R_32F || Ctype != CUDA_R_32F)
        return CUBLAS_STATUS_NOT_SUPPORTED; /* only float matrices are emulated */
    bool tf32;
    switch (computeType) {
    case CUBLAS_COMPUTE_32F: /* the handle's math mode applies, as for cublasSgemm */
        tf32 = handle->mode == CUBLAS_TF32_TENSOR_OP_MATH;
        break;
    case CUBLAS_COMPUTE_32F_PEDANTIC: tf32 = false; break;
    case CUBLAS_COMPUTE_32F_FAST_TF32: tf32 = true; break;
    default: return CUBLAS_STATUS_NOT_SUPPORTED; /* half / bfloat16 inputs are not emulated */
    }
    return sgemm(handle, transa, transb, m, n, k, (const float *)alpha, (const float *)A, lda,
                 (const float *)B, ldb, (const float *)beta, (float *)C, ldc, tf32, "cublasGemmEx");
}

} /* extern "C" */
