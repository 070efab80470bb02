/* The CUDA backend table and its device context: error mapping, one stream and
 * one cuBLAS handle per device, memory, and the split-K scratch.
 *
 * All work of a device goes into one non-blocking stream, in order, so the
 * training step needs no host synchronisation: only to_host and synchronize
 * wait. Errors of asynchronous kernels surface at those calls. */
#include "cuda/cuda_common.h"

#include <atomic>
#include <mutex>

namespace {

constexpr int kMaxDevices = 64;

struct DeviceContext {
    cudaStream_t stream = nullptr;
    cublasHandle_t cublas = nullptr;
    int sms = 0;
    int cc_major = 0; /* compute capability major, 0 until asked */
    void *scratch = nullptr;
    size_t scratch_bytes = 0;
};

DeviceContext g_ctx[kMaxDevices];
std::mutex g_ctx_mutex;     /* guards lazy creation in g_ctx */
std::mutex g_scratch_mutex; /* held from scratch_acquire to scratch_release */
std::atomic<uint64_t> g_scratch_generation{1}; /* bumped when any device's scratch moves */

/* Sticky errors leave the CUDA context unusable until the process restarts. */
bool is_sticky(cudaError_t e)
{
    switch (e) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorAssert:
    case cudaErrorLaunchTimeout:
        return true;
    default:
        return false;
    }
}

ga_status current_device(int *dev)
{
    GA_CUDA(cudaGetDevice(dev));
    if (*dev < 0 || *dev >= kMaxDevices)
        return ga_fail(GA_ERR_RUNTIME, "CUDA device %d is beyond the %d this build supports", *dev,
                       kMaxDevices);
    return GA_OK;
}

/* The context of the current device with its stream created. */
ga_status context(DeviceContext **out)
{
    int dev;
    GA_TRY(current_device(&dev));
    DeviceContext *ctx = &g_ctx[dev];
    std::lock_guard<std::mutex> lock(g_ctx_mutex);
    if (ctx->stream == nullptr) {
        cudaStream_t s;
        GA_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
        ctx->stream = s;
    }
    *out = ctx;
    return GA_OK;
}

} // namespace

ga_status ga_cuda_fail(cudaError_t err, const char *call, size_t bytes)
{
    cudaGetLastError(); /* consume it: the next launch check must not see it again */
    const char *name = cudaGetErrorName(err), *text = cudaGetErrorString(err);
    if (err == cudaErrorMemoryAllocation) {
        if (bytes > 0)
            return ga_fail(GA_ERR_MEMORY,
                           "CUDA out of memory: %s failed for %zu bytes (%.1f MiB): %s (%s)", call,
                           bytes, (double)bytes / (1024.0 * 1024.0), name, text);
        return ga_fail(GA_ERR_MEMORY, "CUDA out of memory in %s: %s (%s)", call, name, text);
    }
    return ga_fail(GA_ERR_RUNTIME, "CUDA error in %s: %s (%s)%s", call, name, text,
                   is_sticky(err) ? "; the CUDA context is now unusable, restart the process" : "");
}

ga_status ga_cublas_fail(cublasStatus_t st, const char *call)
{
    cudaGetLastError();
    return ga_fail(st == CUBLAS_STATUS_ALLOC_FAILED ? GA_ERR_MEMORY : GA_ERR_RUNTIME,
                   "cuBLAS error in %s: %s (%s)", call, cublasGetStatusName(st),
                   cublasGetStatusString(st));
}

ga_status ga_cuda_stream(cudaStream_t *stream)
{
    DeviceContext *ctx = nullptr;
    GA_TRY(context(&ctx));
    *stream = ctx->stream;
    return GA_OK;
}

ga_status ga_cuda_cublas(cublasHandle_t *handle)
{
    DeviceContext *ctx = nullptr;
    GA_TRY(context(&ctx));
    std::lock_guard<std::mutex> lock(g_ctx_mutex);
    if (ctx->cublas == nullptr) {
        cublasHandle_t h;
        GA_CUBLAS(cublasCreate(&h));
        cublasStatus_t st = cublasSetStream(h, ctx->stream);
        if (st != CUBLAS_STATUS_SUCCESS) {
            cublasDestroy(h);
            return ga_cublas_fail(st, "cublasSetStream(handle, stream)");
        }
        /* Default math: SGEMM stays FP32 (TF32 is opt-in), so results match the
         * CPU to fp32 rounding and the speed comparison is like for like. */
        st = cublasSetMathMode(h, CUBLAS_DEFAULT_MATH);
        if (st != CUBLAS_STATUS_SUCCESS) {
            cublasDestroy(h);
            return ga_cublas_fail(st, "cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH)");
        }
        ctx->cublas = h;
    }
    *handle = ctx->cublas;
    return GA_OK;
}

int ga_cuda_sm_count(void)
{
    int dev;
    if (current_device(&dev) != GA_OK)
        return 1;
    std::lock_guard<std::mutex> lock(g_ctx_mutex);
    if (g_ctx[dev].sms == 0) {
        int v = 0;
        if (cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || v <= 0) {
            cudaGetLastError();
            return 1; /* only a tuning input: a wrong guess costs speed, not correctness */
        }
        g_ctx[dev].sms = v;
    }
    return g_ctx[dev].sms;
}

ga_status ga_cuda_cc_major(int *major)
{
    int dev;
    GA_TRY(current_device(&dev));
    std::lock_guard<std::mutex> lock(g_ctx_mutex);
    if (g_ctx[dev].cc_major == 0) {
        int v = 0;
        GA_CUDA(cudaDeviceGetAttribute(&v, cudaDevAttrComputeCapabilityMajor, dev));
        g_ctx[dev].cc_major = v;
    }
    *major = g_ctx[dev].cc_major;
    return GA_OK;
}

ga_status ga_cuda_scratch_acquire(void **p, size_t bytes)
{
    DeviceContext *ctx = nullptr;
    GA_TRY(context(&ctx));
    g_scratch_mutex.lock();
    if (ctx->scratch_bytes < bytes) {
        /* Stream-ordered free/alloc: kernels already enqueued on this stream keep
         * using the old block until they finish; no host synchronisation. */
        if (ctx->scratch) {
            cudaError_t e = cudaFreeAsync(ctx->scratch, ctx->stream);
            ctx->scratch = nullptr;
            ctx->scratch_bytes = 0;
            if (e != cudaSuccess) {
                g_scratch_mutex.unlock();
                return ga_cuda_fail(e, "cudaFreeAsync(scratch, stream)", 0);
            }
        }
        size_t want = bytes + bytes / 4; /* headroom: fewer regrowths */
        cudaError_t e = cudaMallocAsync(&ctx->scratch, want, ctx->stream);
        if (e != cudaSuccess) {
            ctx->scratch = nullptr;
            g_scratch_mutex.unlock();
            return ga_cuda_fail(e, "cudaMallocAsync(scratch, bytes, stream)", want);
        }
        ctx->scratch_bytes = want;
        g_scratch_generation.fetch_add(1);
    }
    *p = ctx->scratch;
    return GA_OK;
}

void ga_cuda_scratch_release(void) { g_scratch_mutex.unlock(); }

/* ---- memory ---- */

ga_status ga_cuda_set_device(int index)
{
    int count = 0, cur = -1;
    /* called before every op: the common case is "already there" */
    if (cudaGetDevice(&cur) == cudaSuccess && cur == index)
        return GA_OK;
    cudaGetLastError();
    GA_CUDA(cudaGetDeviceCount(&count));
    if (index < 0 || index >= count)
        return ga_fail(GA_ERR_VALUE, "CUDA device %d does not exist (this machine has %d)", index,
                       count);
    GA_CUDA(cudaSetDevice(index));
    return GA_OK;
}

/* *p (bytes) on the current device; NULL for 0 bytes. */
ga_status ga_cuda_alloc(void **p, size_t bytes)
{
    if (p == NULL)
        return ga_fail(GA_ERR_VALUE, "alloc: NULL result pointer");
    *p = NULL;
    if (bytes == 0)
        return GA_OK;
    cudaError_t e = cudaMalloc(p, bytes);
    if (e != cudaSuccess) {
        *p = NULL;
        return ga_cuda_fail(e, "cudaMalloc", bytes);
    }
    return GA_OK;
}

/* cudaFree waits for the device, so pending kernels using p finish first. */
void ga_cuda_release(void *p)
{
    if (p != NULL && cudaFree(p) != cudaSuccess)
        cudaGetLastError(); /* nothing to report to: keep the error slot clean */
}

/* dst (device) <- host_src (host). From pageable memory the call returns once
 * the host buffer has been consumed; from pinned memory it is asynchronous and
 * the caller must keep host_src unchanged until the stream reaches the copy. */
ga_status ga_cuda_to_device(void *dst, const void *host_src, size_t bytes)
{
    if (bytes == 0)
        return GA_OK;
    GA_CHECK_PTR(dst, bytes);
    GA_CHECK_PTR(host_src, bytes);
    cudaStream_t s;
    GA_TRY(ga_cuda_stream(&s));
    GA_CUDA(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, s));
    return GA_OK;
}

/* host_dst (host) <- src (device); waits for everything queued before it. */
ga_status ga_cuda_to_host(void *host_dst, const void *src, size_t bytes)
{
    if (bytes == 0)
        return GA_OK;
    GA_CHECK_PTR(host_dst, bytes);
    GA_CHECK_PTR(src, bytes);
    cudaStream_t s;
    GA_TRY(ga_cuda_stream(&s));
    GA_CUDA(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, s));
    GA_CUDA(cudaStreamSynchronize(s));
    return GA_OK;
}

ga_status ga_cuda_copy(void *dst, const void *src, size_t bytes)
{
    if (bytes == 0 || dst == src)
        return GA_OK;
    GA_CHECK_PTR(dst, bytes);
    GA_CHECK_PTR(src, bytes);
    cudaStream_t s;
    GA_TRY(ga_cuda_stream(&s));
    GA_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s));
    return GA_OK;
}

ga_status ga_cuda_zero(void *p, size_t bytes)
{
    if (bytes == 0)
        return GA_OK;
    GA_CHECK_PTR(p, bytes);
    cudaStream_t s;
    GA_TRY(ga_cuda_stream(&s));
    GA_CUDA(cudaMemsetAsync(p, 0, bytes, s));
    return GA_OK;
}

ga_status ga_cuda_synchronize(void)
{
    cudaStream_t s;
    GA_TRY(ga_cuda_stream(&s));
    GA_CUDA(cudaStreamSynchronize(s));
    return GA_OK;
}

/* *p (bytes) of page-locked host memory, so copies from it are true DMA that
 * runs asynchronously on the stream; NULL for 0 bytes. */
ga_status ga_cuda_host_alloc(void **p, size_t bytes)
{
    if (p == NULL)
        return ga_fail(GA_ERR_VALUE, "host_alloc: NULL result pointer");
    *p = NULL;
    if (bytes == 0)
        return GA_OK;
    cudaError_t e = cudaHostAlloc(p, bytes, cudaHostAllocDefault);
    if (e != cudaSuccess) {
        *p = NULL;
        return ga_cuda_fail(e, "cudaHostAlloc", bytes);
    }
    return GA_OK;
}

/* cudaFreeHost waits for the device, so pending copies from p finish first. */
void ga_cuda_host_free(void *p)
{
    if (p != NULL && cudaFreeHost(p) != cudaSuccess)
        cudaGetLastError(); /* nothing to report to: keep the error slot clean */
}

/* ---- graphs: the training steps recorded once and replayed ---- */

/* Thread-local capture: another host thread's unrelated CUDA calls (a
 * notebook's ga.ops in a second thread) neither break nor join the recording. */
static ga_status ga_cuda_graph_begin(void)
{
    cudaStream_t s;
    GA_TRY(ga_cuda_stream(&s));
    GA_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    return GA_OK;
}

static ga_status ga_cuda_graph_end(void **graph)
{
    if (graph == NULL)
        return ga_fail(GA_ERR_VALUE, "graph_end: NULL result pointer");
    *graph = NULL;
    cudaStream_t s;
    GA_TRY(ga_cuda_stream(&s));
    cudaGraph_t g = nullptr;
    GA_CUDA(cudaStreamEndCapture(s, &g));
    cudaGraphExec_t exec = nullptr;
    cudaError_t e = cudaGraphInstantiate(&exec, g, 0);
    cudaGraphDestroy(g);
    if (e != cudaSuccess)
        return ga_cuda_fail(e, "cudaGraphInstantiate", 0);
    *graph = exec;
    return GA_OK;
}

static ga_status ga_cuda_graph_launch(void *graph)
{
    GA_CHECK_PTR(graph, 1);
    cudaStream_t s;
    GA_TRY(ga_cuda_stream(&s));
    GA_CUDA(cudaGraphLaunch((cudaGraphExec_t)graph, s));
    return GA_OK;
}

static void ga_cuda_graph_free(void *graph)
{
    if (graph != NULL && cudaGraphExecDestroy((cudaGraphExec_t)graph) != cudaSuccess)
        cudaGetLastError();
}

static uint64_t ga_cuda_graph_generation(void) { return g_scratch_generation.load(); }

/* The optional kernels of core/kernels.def this device has: one line per
 * optional entry, ga_<name>_cuda or NULL (a new GA_KERNEL_OPT without a line
 * here fails to compile, so nobody forgets to decide). */
#define GA_CUDA_OPT_conv2d_pool_forward ga_conv2d_pool_forward_cuda /* conv_cuda.cu */
#define GA_CUDA_OPT_conv2d_pool_backward ga_conv2d_pool_backward_cuda
#define GA_CUDA_OPT_conv2d_choose ga_conv2d_choose_cuda /* auto = implicit */

/* The table handed to gpuaccel._C in a capsule (order as in core/backend.h). */
/* Designated initializers in declaration order (C++20), the kernels generated
 * from core/kernels.def. */
extern "C" const ga_backend ga_cuda_backend = {
    .abi = GA_BACKEND_ABI,
    .name = "cuda",
    .last_error = ga_last_error,
    .host_memory = 0, /* no ISA switch or peak probe offered: the entries stay NULL */
    .set_device = ga_cuda_set_device,
    .alloc = ga_cuda_alloc,
    .release = ga_cuda_release,
    .to_device = ga_cuda_to_device,
    .to_host = ga_cuda_to_host,
    .copy = ga_cuda_copy,
    .zero = ga_cuda_zero,
    .synchronize = ga_cuda_synchronize,
#define GA_KERNEL(name, args) .name = ga_##name##_cuda,
#define GA_KERNEL_OPT(name, args) .name = GA_CUDA_OPT_##name,
#include "core/kernels.def"
#undef GA_KERNEL
#undef GA_KERNEL_OPT
    .host_alloc = ga_cuda_host_alloc, /* pinned staging for the batch */
    .host_free = ga_cuda_host_free,
    /* the same call: cudaMemcpyAsync on the stream returns at once from pinned memory */
    .to_device_async = ga_cuda_to_device,
    .graph_begin = ga_cuda_graph_begin,
    .graph_end = ga_cuda_graph_end,
    .graph_launch = ga_cuda_graph_launch,
    .graph_free = ga_cuda_graph_free,
    .graph_generation = ga_cuda_graph_generation,
};

/* The current device's stream, for code outside this module that queues work
 * in order with the network's kernels: gpuaccel._mpi's NCCL reducer (the
 * gradient allreduce goes on the compute stream). python/cuda/module.c hands
 * it over in a capsule. */
extern "C" ga_status ga_cuda_current_stream(void **stream)
{
    if (!stream)
        return ga_fail(GA_ERR_VALUE, "ga_cuda_current_stream: NULL output");
    cudaStream_t s = nullptr;
    GA_TRY(ga_cuda_stream(&s));
    *stream = (void *)s;
    return GA_OK;
}
