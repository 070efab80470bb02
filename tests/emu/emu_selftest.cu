/* Self-test of the gpuaccel CUDA emulator (csrc/cuda/emu/, issue 11).
 *
 * A standalone program, not part of the package: tests/test_cuda_emu.py compiles it
 * with the host C++ compiler exactly as setup.py compiles the emulated module
 * (-x c++, -Icsrc/cuda/emu first, -DGA_CUDA_EMU=1, linked with emu_runtime.cpp and
 * emu_cublas.cpp), once plainly and once with AddressSanitizer, and runs it once per
 * scenario under the emulator's settings (GPUACCEL_EMU_SCHEDULE, _SMS, _MEMORY,
 * _WORKERS). The kernels are ordinary CUDA written once for both builds: launches go
 * through GA_LAUNCH (csrc/cuda/cuda_common.h), no #ifdef in a kernel body, so the file
 * also compiles with nvcc (where the emulator-only scenarios, such as the diagnostics
 * and the guard pages, of course behave as the hardware does).
 *
 *     emu_selftest SCENARIO [ARG]
 *
 * prints `RESULT key=value ...` (and `MESSAGE ...` / `NAME ...` where a text is
 * reported) and exits 0; the Python test decides what the values must be. A CUDA call
 * that fails where it must not prints `FAIL file:line: call -> cudaError...` and exits 1.
 * Scenarios: barrier VARIANT, warp, race, float_order, oob_write INDEX, host_deref,
 * uninit, streams, limits, oom, diag_barrier, diag_shuffle, device, semantics. */
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <cmath>

#include "cuda/cuda_common.h"

#define CHECK(call)                                                                                \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            printf("FAIL %s:%d: %s -> %s (%s)\n", __FILE__, __LINE__, #call, cudaGetErrorName(e_), \
                   cudaGetErrorString(e_));                                                        \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

constexpr int kBlock = 256; /* threads per block of the shared-memory kernels */

/* ------------------------------------------------------------------ kernels */

/* 1. A block reverses its slice through shared memory; the racy twin lacks the barrier. */
__global__ void reverse_in_block(const float *in, float *out)
{
    __shared__ float s[kBlock];
    const int t = threadIdx.x, base = blockIdx.x * blockDim.x;
    s[t] = in[base + t];
    __syncthreads();
    out[base + t] = s[blockDim.x - 1 - t];
}
__global__ void reverse_in_block_racy(const float *in, float *out)
{
    __shared__ float s[kBlock];
    const int t = threadIdx.x, base = blockIdx.x * blockDim.x;
    s[t] = in[base + t];
    /* the __syncthreads() is missing */
    out[base + t] = s[blockDim.x - 1 - t];
}
/* Each thread takes its left neighbour's value: the racy twin is right whenever thread
 * t - 1 happens to run before thread t (the forward order), wrong otherwise. */
__global__ void shift_in_block(const float *in, float *out)
{
    __shared__ float s[kBlock];
    const int t = threadIdx.x, base = blockIdx.x * blockDim.x;
    s[t] = in[base + t];
    __syncthreads();
    out[base + t] = t > 0 ? s[t - 1] : 0.0f;
}
__global__ void shift_in_block_racy(const float *in, float *out)
{
    __shared__ float s[kBlock];
    const int t = threadIdx.x, base = blockIdx.x * blockDim.x;
    s[t] = in[base + t];
    /* the __syncthreads() is missing */
    out[base + t] = t > 0 ? s[t - 1] : 0.0f;
}

/* 2. Warp collectives. out: kWarpOut ints per thread. */
constexpr int kWarpOut = 11;
__global__ void warp_ops(const int *in, int *out)
{
    const int t = threadIdx.x, lane = t & 31;
    const int v = in[t];
    int x = v; /* butterfly: every lane ends with the warp's sum */
    for (int o = 16; o > 0; o >>= 1)
        x += __shfl_xor_sync(0xffffffffu, x, o);
    int d = v; /* tree: lane 0 ends with the sum */
    for (int o = 16; o > 0; o >>= 1)
        d += __shfl_down_sync(0xffffffffu, d, o);
    int u = v; /* inclusive scan */
    for (int o = 1; o < 32; o <<= 1) {
        const int y = __shfl_up_sync(0xffffffffu, u, o);
        if (lane >= o)
            u += y;
    }
    const int bcast = __shfl_sync(0xffffffffu, v, 5, 16); /* lane 5 of each 16-lane segment */
    const unsigned ballot = __ballot_sync(0xffffffffu, v % 3 == 0);
    const int any = __any_sync(0xffffffffu, v == in[(t & ~31) + 7]); /* true: lane 7 itself */
    const int none = __any_sync(0xffffffffu, v < 0);
    const int all = __all_sync(0xffffffffu, v > 0);
    const int not_all = __all_sync(0xffffffffu, lane != 9);
    /* width 8, xor 8: lanes may read an earlier segment, never a later one (their own value) */
    const int xseg = __shfl_xor_sync(0xffffffffu, v, 8, 8);
    float f = 0.5f * (float)v; /* a float butterfly within 8-lane segments */
    for (int o = 4; o > 0; o >>= 1)
        f += __shfl_xor_sync(0xffffffffu, f, o, 8);
    int *r = out + t * kWarpOut;
    r[0] = x;
    r[1] = d;
    r[2] = u;
    r[3] = bcast;
    r[4] = (int)ballot;
    r[5] = any;
    r[6] = none;
    r[7] = all;
    r[8] = not_all;
    r[9] = (int)(2.0f * f); /* exact: sums of halves of small integers */
    r[10] = xseg;
}

/* 3. Races. */
__global__ void count_racy(int *out) /* read, a warp collective, write: lost updates */
{
    __shared__ int count;
    if (threadIdx.x == 0)
        count = 0;
    __syncthreads();
    const int v = count;
    __syncwarp();
    count = v + 1;
    __syncthreads();
    if (threadIdx.x == 0)
        out[blockIdx.x] = count;
}
__global__ void count_atomic(int *out)
{
    __shared__ int count;
    if (threadIdx.x == 0)
        count = 0;
    __syncthreads();
    atomicAdd(&count, 1);
    __syncwarp();
    __syncthreads();
    if (threadIdx.x == 0)
        out[blockIdx.x] = count;
}
__global__ void last_writer(int *out) /* every thread writes, no order: who wins? */
{
    __shared__ int winner;
    winner = threadIdx.x;
    __syncthreads();
    if (threadIdx.x == 0)
        out[blockIdx.x] = winner;
}
__global__ void count_global_atomic(int *total) { atomicAdd(total, 1); }

/* 4. A sum in the order the threads arrive (atomicAdd on a shared accumulator). */
__global__ void arrival_sum(const float *v, float *out)
{
    __shared__ float acc;
    if (threadIdx.x == 0)
        acc = 0.0f;
    __syncthreads();
    atomicAdd(&acc, v[threadIdx.x]);
    __syncthreads();
    if (threadIdx.x == 0)
        *out = acc;
}

/* 5, 6. Memory. */
__global__ void store_one(float *p, long long i, float v)
{
    if (threadIdx.x == 0 && blockIdx.x == 0)
        p[i] = v;
}
__global__ void fill(float *p, long long n, float v) { GA_GRID_STRIDE(i, n) p[i] = v; }

/* 8. Launch limits: counts the threads that ran. */
__global__ void count_threads(int *counter) { atomicAdd(counter, 1); }

/* 10. Faults the emulator diagnoses (the markers name the lines for the test). */
__global__ void divergent_barrier(float *p)
{
    if (threadIdx.x < 16) {
        p[threadIdx.x] = 1.0f;
        __syncthreads(); // DIAG:divergent-low
    } else {
        __syncthreads(); // DIAG:divergent-high
    }
}
__global__ void shuffle_after_exit(float *p)
{
    const int lane = threadIdx.x & 31;
    if (lane >= 16)
        return;
    /* the exited lanes may stay in the mask; reading one (lane ^ 16) is what is undefined */
    const float v = __shfl_xor_sync(0xffffffffu, p[lane], 16); // DIAG:exited-lane
    p[lane] = v;
}

/* Lanes 16-31 shuffle among themselves, then the whole warp meets at __syncwarp:
 * legal since Volta, whichever half arrives first. */
__global__ void subwarp_then_full(int *out)
{
    const int lane = threadIdx.x & 31;
    int v = lane;
    if (lane >= 16)
        v = __shfl_xor_sync(0xffff0000u, v, 1);
    __syncwarp();
    out[threadIdx.x] = v;
}
/* Exited lanes may stay in a collective's mask: only the non-exited ones take part. */
__global__ void ballot_after_exit(unsigned *out)
{
    if (threadIdx.x >= 20)
        return;
    out[threadIdx.x] = __ballot_sync(0xffffffffu, 1);
}
/* A 48-thread block: its second warp has lanes 0-15 only, the full mask is still fine. */
__global__ void partial_warp(int *out)
{
    out[threadIdx.x] = __shfl_sync(0xffffffffu, (int)threadIdx.x * 10, 0);
}
/* A delta is unsigned: -1 is larger than any width, so each lane keeps its value. */
__global__ void shuffle_huge_delta(int *out)
{
    out[threadIdx.x] = __shfl_down_sync(0xffffffffu, (int)threadIdx.x, (unsigned)-1);
}

/* ------------------------------------------------------------------ scenarios */

static float *device_floats(size_t n)
{
    float *d = nullptr;
    CHECK(cudaMalloc((void **)&d, n * sizeof(float)));
    return d;
}

static int scenario_barrier(const char *variant)
{
    const int blocks = 4, n = blocks * kBlock;
    const bool shift = !strncmp(variant, "shift", 5);
    std::vector<float> in(n), out(n, -1.0f);
    for (int i = 0; i < n; i++)
        in[i] = (float)(i + 1); /* distinct in every block: stale shared memory shows too */
    float *din = device_floats(n), *dout = device_floats(n);
    CHECK(cudaMemcpy(din, in.data(), n * sizeof(float), cudaMemcpyHostToDevice));
    if (!strcmp(variant, "reverse"))
        GA_LAUNCH(dim3(blocks), dim3(kBlock), 0, nullptr, reverse_in_block)(din, dout);
    else if (!strcmp(variant, "reverse_racy"))
        GA_LAUNCH(dim3(blocks), dim3(kBlock), 0, nullptr, reverse_in_block_racy)(din, dout);
    else if (!strcmp(variant, "shift"))
        GA_LAUNCH(dim3(blocks), dim3(kBlock), 0, nullptr, shift_in_block)(din, dout);
    else if (!strcmp(variant, "shift_racy"))
        GA_LAUNCH(dim3(blocks), dim3(kBlock), 0, nullptr, shift_in_block_racy)(din, dout);
    else {
        printf("FAIL unknown barrier variant %s\n", variant);
        return 1;
    }
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(out.data(), dout, n * sizeof(float), cudaMemcpyDeviceToHost));
    int wrong = 0, first = -1;
    for (int i = 0; i < n; i++) {
        const int b = i / kBlock, t = i % kBlock;
        const float want = shift ? (t > 0 ? in[i - 1] : 0.0f) : in[b * kBlock + kBlock - 1 - t];
        if (out[i] != want) {
            wrong++;
            if (first < 0)
                first = i;
        }
    }
    printf("RESULT wrong=%d total=%d first_wrong=%d\n", wrong, n, first);
    CHECK(cudaFree(din));
    CHECK(cudaFree(dout));
    return 0;
}

static int scenario_warp(void)
{
    const int n = 64; /* two warps */
    std::vector<int> in(n), out(n * kWarpOut, -12345);
    for (int i = 0; i < n; i++)
        in[i] = (i * 37 + 11) % 101 + 1;
    int *din, *dout;
    CHECK(cudaMalloc((void **)&din, n * sizeof(int)));
    CHECK(cudaMalloc((void **)&dout, out.size() * sizeof(int)));
    CHECK(cudaMemcpy(din, in.data(), n * sizeof(int), cudaMemcpyHostToDevice));
    GA_LAUNCH(dim3(1), dim3(n), 0, nullptr, warp_ops)(din, dout);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(out.data(), dout, out.size() * sizeof(int), cudaMemcpyDeviceToHost));
    int bad = 0;
    std::string first;
    for (int t = 0; t < n; t++) {
        const int w = t / 32 * 32, lane = t % 32, seg16 = lane / 16 * 16, seg8 = lane / 8 * 8;
        int sum = 0, scan = 0, seg8sum = 0;
        unsigned ballot = 0;
        for (int j = 0; j < 32; j++) {
            sum += in[w + j];
            if (j <= lane)
                scan += in[w + j];
            if (in[w + j] % 3 == 0)
                ballot |= 1u << j;
        }
        for (int j = 0; j < 8; j++)
            seg8sum += in[w + seg8 + j];
        /* __shfl_down_sync: only lane 0's value is checked (it holds the sum) */
        const int want[kWarpOut] = {sum, lane == 0 ? sum : out[t * kWarpOut + 1], scan, in[w + seg16 + 5],
                                    (int)ballot, 1, 0, 1, 0, seg8sum, lane & 8 ? in[w + (lane ^ 8)] : in[t]};
        for (int k = 0; k < kWarpOut; k++)
            if (out[t * kWarpOut + k] != want[k]) {
                if (!bad)
                    first = "thread " + std::to_string(t) + " value " + std::to_string(k) + ": got " +
                            std::to_string(out[t * kWarpOut + k]) + ", want " + std::to_string(want[k]);
                bad++;
            }
    }
    printf("RESULT mismatches=%d lane0_sum=%d warp1_bcast=%d\n", bad, out[1], out[(32 + 20) * kWarpOut + 3]);
    if (bad)
        printf("MESSAGE %s\n", first.c_str());
    CHECK(cudaFree(din));
    CHECK(cudaFree(dout));
    return 0;
}

static int scenario_race(void)
{
    const int blocks = 3, gblocks = 64;
    int *d, *total;
    CHECK(cudaMalloc((void **)&d, 3 * blocks * sizeof(int)));
    CHECK(cudaMalloc((void **)&total, sizeof(int)));
    CHECK(cudaMemset(total, 0, sizeof(int)));
    GA_LAUNCH(dim3(blocks), dim3(kBlock), 0, nullptr, count_racy)(d);
    GA_LAUNCH(dim3(blocks), dim3(kBlock), 0, nullptr, count_atomic)(d + blocks);
    GA_LAUNCH(dim3(blocks), dim3(kBlock), 0, nullptr, last_writer)(d + 2 * blocks);
    GA_LAUNCH(dim3(gblocks), dim3(kBlock), 0, nullptr, count_global_atomic)(total);
    CHECK(cudaGetLastError());
    int h[3 * blocks], ht = 0;
    CHECK(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(&ht, total, sizeof ht, cudaMemcpyDeviceToHost));
    printf("RESULT racy=%d,%d,%d atomic=%d,%d,%d winner=%d,%d,%d global_atomic=%d expected=%d global_expected=%d\n",
           h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8], ht, kBlock, gblocks * kBlock);
    CHECK(cudaFree(d));
    CHECK(cudaFree(total));
    return 0;
}

static int scenario_float_order(void)
{
    std::vector<float> v(kBlock, 1.0f);
    v[0] = 1e8f; /* 1 is below half an ulp of 1e8 (8): added after it, every 1 is lost */
    float *dv = device_floats(kBlock), *dout = device_floats(1), out = 0.0f;
    CHECK(cudaMemcpy(dv, v.data(), kBlock * sizeof(float), cudaMemcpyHostToDevice));
    GA_LAUNCH(dim3(1), dim3(kBlock), 0, nullptr, arrival_sum)(dv, dout);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(&out, dout, sizeof out, cudaMemcpyDeviceToHost));
    uint32_t bits;
    memcpy(&bits, &out, sizeof bits);
    printf("RESULT sum=%.1f bits=0x%08x\n", out, bits);
    CHECK(cudaFree(dv));
    CHECK(cudaFree(dout));
    return 0;
}

static int scenario_oob_write(long long index)
{
    const int n = 1000;
    float *d = device_floats(n);
    CHECK(cudaMemset(d, 0, n * sizeof(float)));
    printf("STEP writing element %lld of a %d-float allocation\n", index, n);
    fflush(stdout);
    GA_LAUNCH(dim3(1), dim3(32), 0, nullptr, store_one)(d, index, 7.0f);
    CHECK(cudaGetLastError());
    CHECK(cudaDeviceSynchronize());
    float last = 0.0f;
    CHECK(cudaMemcpy(&last, d + n - 1, sizeof last, cudaMemcpyDeviceToHost));
    printf("RESULT last=%g\n", last);
    CHECK(cudaFree(d));
    return 0;
}

static int scenario_host_deref(void)
{
    float *d = device_floats(1024);
    CHECK(cudaMemset(d, 0, 1024 * sizeof(float)));
    CHECK(cudaDeviceSynchronize());
    printf("STEP dereferencing a device pointer on the host\n");
    fflush(stdout);
    const float x = *(volatile float *)d; /* on the emulator: PROT_NONE, SIGSEGV */
    printf("RESULT read=%g\n", x);
    CHECK(cudaFree(d));
    return 0;
}

static int count_bits(const std::vector<float> &v, size_t lo, size_t hi, uint32_t bits)
{
    int c = 0;
    for (size_t i = lo; i < hi; i++) {
        uint32_t b;
        memcpy(&b, &v[i], sizeof b);
        c += b == bits;
    }
    return c;
}

static int scenario_uninit(void)
{
    const int n = 1000, half = 500;
    float *d = device_floats(n);
    std::vector<float> h(n, 0.0f);
    CHECK(cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost));
    const int fresh_ff = count_bits(h, 0, n, 0xFFFFFFFFu);
    GA_LAUNCH(dim3(2), dim3(128), 0, nullptr, fill)(d, (long long)half, 2.0f); /* the first half only */
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost));
    int written = 0, nan_rest = 0;
    for (int i = 0; i < half; i++)
        written += h[i] == 2.0f;
    for (int i = half; i < n; i++)
        nan_rest += h[i] != h[i];
    const int ff_rest = count_bits(h, half, n, 0xFFFFFFFFu);
    /* freed and allocated again: not the old contents */
    GA_LAUNCH(dim3(4), dim3(256), 0, nullptr, fill)(d, (long long)n, 3.0f);
    CHECK(cudaGetLastError());
    CHECK(cudaFree(d));
    d = device_floats(n);
    CHECK(cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost));
    const int realloc_ff = count_bits(h, 0, n, 0xFFFFFFFFu);
    CHECK(cudaMemset(d, 0, n * sizeof(float)));
    CHECK(cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost));
    const int zeros = count_bits(h, 0, n, 0u);
    printf("RESULT fresh_ff=%d written=%d nan_rest=%d ff_rest=%d realloc_ff=%d memset_zeros=%d n=%d half=%d\n",
           fresh_ff, written, nan_rest, ff_rest, realloc_ff, zeros, n, half);
    CHECK(cudaFree(d));
    return 0;
}

static int scenario_streams(void)
{
    const int n = 256;
    cudaStream_t s;
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    float *pinned = nullptr;
    CHECK(cudaHostAlloc((void **)&pinned, n * sizeof(float), cudaHostAllocDefault));
    float *d1 = device_floats(n), *d2 = device_floats(n);
    std::vector<float> pageable(n), h(n);

    /* host-to-device from pinned memory: read when the copy runs */
    for (int i = 0; i < n; i++)
        pinned[i] = 1.0f;
    CHECK(cudaMemcpyAsync(d1, pinned, n * sizeof(float), cudaMemcpyHostToDevice, s));
    const cudaError_t query_before = cudaStreamQuery(s);
    for (int i = 0; i < n; i++)
        pinned[i] = 2.0f; /* too early: the copy has not run yet */
    CHECK(cudaStreamSynchronize(s));
    const cudaError_t query_after = cudaStreamQuery(s);
    CHECK(cudaMemcpy(h.data(), d1, n * sizeof(float), cudaMemcpyDeviceToHost));
    const float pinned_seen = h[0], pinned_seen_last = h[n - 1];

    /* from pageable memory: taken at the call */
    for (int i = 0; i < n; i++)
        pageable[i] = 1.0f;
    CHECK(cudaMemcpyAsync(d2, pageable.data(), n * sizeof(float), cudaMemcpyHostToDevice, s));
    for (int i = 0; i < n; i++)
        pageable[i] = 2.0f;
    CHECK(cudaStreamSynchronize(s));
    CHECK(cudaMemcpy(h.data(), d2, n * sizeof(float), cudaMemcpyDeviceToHost));
    const float pageable_seen = h[0];

    /* device-to-pinned after a kernel: nothing has arrived before the sync */
    cudaEvent_t e0, e1;
    CHECK(cudaEventCreate(&e0));
    CHECK(cudaEventCreate(&e1));
    CHECK(cudaEventRecord(e0, s));
    GA_LAUNCH(dim3(1), dim3(n), 0, s, fill)(d1, (long long)n, 3.0f);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpyAsync(pinned, d1, n * sizeof(float), cudaMemcpyDeviceToHost, s));
    CHECK(cudaEventRecord(e1, s));
    const float d2h_before = pinned[0];
    const cudaError_t event_query_before = cudaEventQuery(e1);
    float ms = -1.0f;
    const cudaError_t elapsed_before = cudaEventElapsedTime(&ms, e0, e1);
    CHECK(cudaEventSynchronize(e1));
    const cudaError_t event_query_after = cudaEventQuery(e1);
    const float d2h_after = pinned[0];
    ms = -1.0f;
    const cudaError_t elapsed_rc = cudaEventElapsedTime(&ms, e0, e1);
    printf("RESULT query_before=%d query_after=%d pinned_seen=%g pinned_seen_last=%g pageable_seen=%g "
           "d2h_before=%g d2h_after=%g event_query_before=%d event_query_after=%d elapsed_before=%d "
           "elapsed_rc=%d elapsed_ms_nonneg=%d\n",
           (int)query_before, (int)query_after, pinned_seen, pinned_seen_last, pageable_seen, d2h_before,
           d2h_after, (int)event_query_before, (int)event_query_after, (int)elapsed_before, (int)elapsed_rc,
           ms >= 0.0f);
    CHECK(cudaEventDestroy(e0));
    CHECK(cudaEventDestroy(e1));
    CHECK(cudaFree(d1));
    CHECK(cudaFree(d2));
    CHECK(cudaFreeHost(pinned));
    CHECK(cudaStreamDestroy(s));
    return 0;
}

__global__ void add_one(int *p) { atomicAdd(p, 1); }
__global__ void scale_by(int *p, int k) { *p *= k; }

/* Stream capture: the recorded launches run only when the graph is launched, again
 * at every launch, with the arguments they were recorded with; a synchronisation
 * inside a capture fails and spoils it (CUDA's rule: cudaErrorStreamCaptureUnsupported,
 * then cudaErrorStreamCaptureInvalidated from the end of the capture). */
static int scenario_graphs(void)
{
    cudaStream_t s;
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    int *d = nullptr;
    CHECK(cudaMalloc((void **)&d, sizeof(int)));
    CHECK(cudaMemsetAsync(d, 0, sizeof(int), s));
    CHECK(cudaStreamSynchronize(s));
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    enum cudaStreamCaptureStatus during;
    CHECK(cudaStreamIsCapturing(s, &during));
    GA_LAUNCH(dim3(2), dim3(32), 0, s, add_one)(d); /* + 64 */
    GA_LAUNCH(dim3(1), dim3(1), 0, s, scale_by)(d, 3);
    cudaGraph_t g = nullptr;
    CHECK(cudaStreamEndCapture(s, &g));
    int h = -1;
    CHECK(cudaMemcpy(&h, d, sizeof(int), cudaMemcpyDeviceToHost));
    const int after_capture = h; /* recorded, not run */
    cudaGraphExec_t exec = nullptr;
    CHECK(cudaGraphInstantiate(&exec, g, 0));
    CHECK(cudaGraphLaunch(exec, s));
    CHECK(cudaGraphLaunch(exec, s));
    CHECK(cudaStreamSynchronize(s));
    CHECK(cudaMemcpy(&h, d, sizeof(int), cudaMemcpyDeviceToHost));
    const int after_two = h; /* ((0 + 64) 3 + 64) 3 = 768 */
    /* a synchronisation inside a capture */
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    GA_LAUNCH(dim3(1), dim3(1), 0, s, add_one)(d);
    const cudaError_t sync_rc = cudaStreamSynchronize(s);
    cudaGraph_t bad = nullptr;
    const cudaError_t end_rc = cudaStreamEndCapture(s, &bad);
    cudaGetLastError();
    enum cudaStreamCaptureStatus after;
    CHECK(cudaStreamIsCapturing(s, &after));
    CHECK(cudaMemcpy(&h, d, sizeof(int), cudaMemcpyDeviceToHost));
    printf("RESULT capturing=%d after_capture=%d after_two=%d sync_rc=%d end_rc=%d bad_null=%d after=%d final=%d\n",
           (int)during, after_capture, after_two, (int)sync_rc, (int)end_rc, bad == nullptr, (int)after, h);
    CHECK(cudaGraphExecDestroy(exec));
    CHECK(cudaGraphDestroy(g));
    CHECK(cudaFree(d));
    CHECK(cudaStreamDestroy(s));
    return 0;
}

/* A launch of count_threads; returns (first cudaGetLastError) and stores the second. */
static cudaError_t try_launch(dim3 grid, dim3 block, size_t shared, int *counter, cudaError_t *second)
{
    GA_LAUNCH(grid, block, shared, nullptr, count_threads)(counter);
    const cudaError_t e = cudaGetLastError();
    *second = cudaGetLastError();
    return e;
}

static int scenario_limits(void)
{
    int *counter;
    CHECK(cudaMalloc((void **)&counter, sizeof(int)));
    CHECK(cudaMemset(counter, 0, sizeof(int)));
    struct Case {
        const char *name;
        dim3 grid, block;
        size_t shared;
        long long threads; /* that run, if it is valid */
    } cases[] = {
        {"threads1025", dim3(1), dim3(1025), 0, 0},
        {"threads33x32", dim3(1), dim3(33, 32), 0, 0},
        {"blockz65", dim3(1), dim3(1, 1, 65), 0, 0},
        {"gridy65536", dim3(1, 65536), dim3(1), 0, 0},
        {"gridz65536", dim3(1, 1, 65536), dim3(1), 0, 0},
        {"gridx0", dim3(0), dim3(32), 0, 0},
        {"shared48k1", dim3(1), dim3(32), 48 * 1024 + 1, 0},
        /* the limits themselves are fine */
        {"threads1024", dim3(1), dim3(1024), 0, 1024},
        {"blockz64", dim3(1), dim3(1, 1, 64), 0, 64},
        {"gridy65535", dim3(1, 65535), dim3(1), 0, 65535},
        {"shared48k", dim3(2), dim3(32), 48 * 1024, 64},
    };
    long long expected = 0;
    std::string line = "RESULT";
    for (const Case &c : cases) {
        cudaError_t second;
        const cudaError_t e = try_launch(c.grid, c.block, c.shared, counter, &second);
        if (e == cudaSuccess)
            expected += c.threads;
        line += std::string(" ") + c.name + "=" + std::to_string((int)e) + " " + c.name + "_after=" +
                std::to_string((int)second);
    }
    const cudaError_t sync = cudaDeviceSynchronize();
    int ran = -1;
    CHECK(cudaMemcpy(&ran, counter, sizeof ran, cudaMemcpyDeviceToHost));
    printf("%s sync=%d ran=%d expected_ran=%lld\n", line.c_str(), (int)sync, ran, expected);
    CHECK(cudaFree(counter));
    return 0;
}

static int scenario_oom(void)
{
    size_t free0 = 0, total = 0, free1 = 0, free2 = 0;
    CHECK(cudaMemGetInfo(&free0, &total));
    void *big = (void *)1, *a = nullptr, *b = (void *)1, *c = nullptr, *e = nullptr, *over = (void *)1;
    const cudaError_t big_rc = cudaMalloc(&big, 2u << 20);
    const cudaError_t last = cudaGetLastError(), cleared = cudaGetLastError();
    const cudaError_t a_rc = cudaMalloc(&a, 768u << 10);
    CHECK(cudaMemGetInfo(&free1, &total));
    const cudaError_t b_rc = cudaMalloc(&b, 512u << 10); /* 256 KiB left */
    (void)cudaGetLastError();
    CHECK(cudaFree(a));
    const cudaError_t c_rc = cudaMalloc(&c, 512u << 10); /* reusable after the free */
    const cudaError_t e_rc = cudaMalloc(&e, 512u << 10); /* exactly the limit */
    const cudaError_t over_rc = cudaMalloc(&over, 1);
    (void)cudaGetLastError();
    /* the memory works */
    if (c_rc == cudaSuccess) {
        GA_LAUNCH(dim3(4), dim3(256), 0, nullptr, fill)((float *)c, (long long)(128 << 10), 5.0f);
        CHECK(cudaGetLastError());
    }
    float probe = 0.0f;
    if (c_rc == cudaSuccess)
        CHECK(cudaMemcpy(&probe, (float *)c + (128 << 10) - 1, sizeof probe, cudaMemcpyDeviceToHost));
    CHECK(cudaFree(c));
    CHECK(cudaFree(e));
    CHECK(cudaMemGetInfo(&free2, &total));
    printf("RESULT total=%zu free0=%zu big=%d big_null=%d last=%d cleared=%d a=%d free_a=%zu b=%d b_null=%d "
           "c=%d e=%d over=%d over_null=%d probe=%g free_end=%zu\n",
           total, free0, (int)big_rc, big == nullptr, (int)last, (int)cleared, (int)a_rc, free1, (int)b_rc,
           b == nullptr, (int)c_rc, (int)e_rc, (int)over_rc, over == nullptr, probe, free2);
    return 0;
}

static int scenario_diag(bool barrier)
{
    float *d = device_floats(64);
    CHECK(cudaMemset(d, 0, 64 * sizeof(float)));
    if (barrier)
        GA_LAUNCH(dim3(1), dim3(64), 0, nullptr, divergent_barrier)(d);
    else
        GA_LAUNCH(dim3(1), dim3(32), 0, nullptr, shuffle_after_exit)(d);
    const cudaError_t launch = cudaGetLastError(); /* the launch itself is fine */
    const cudaError_t sync = cudaDeviceSynchronize();
    const std::string message = cudaGetErrorString(sync);
    void *p = nullptr;
    const cudaError_t after = cudaMalloc(&p, 16); /* sticky: the context is unusable */
    const cudaError_t last = cudaGetLastError(), last2 = cudaGetLastError();
    const cudaError_t sync2 = cudaDeviceSynchronize();
    printf("RESULT launch=%d sync=%d after=%d last=%d last2=%d sync2=%d\n", (int)launch, (int)sync, (int)after,
           (int)last, (int)last2, (int)sync2);
    printf("MESSAGE %s\n", message.c_str());
    return 0;
}

static int scenario_device(void)
{
    int count = 0, sms = 0, warp = 0, threads = 0, smem = 0;
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceCount(&count));
    CHECK(cudaGetDeviceProperties(&prop, 0));
    CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    CHECK(cudaDeviceGetAttribute(&warp, cudaDevAttrWarpSize, 0));
    CHECK(cudaDeviceGetAttribute(&threads, cudaDevAttrMaxThreadsPerBlock, 0));
    CHECK(cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlock, 0));
    printf("RESULT count=%d sms=%d prop_sms=%d warp=%d max_threads=%d max_shared=%d\n", count, sms,
           prop.multiProcessorCount, warp, threads, smem);
    printf("NAME %s\n", prop.name);
    return 0;
}

/* Semantics found wrong by a review and fixed: sub-warp collectives, exited lanes in a
 * mask, copies below an allocation, double cudaFreeAsync, an event recorded on a bad
 * stream, polling, host-to-host copies, cuBLAS with k == 0. */
static int scenario_semantics(void)
{
    int *di = nullptr;
    CHECK(cudaMalloc((void **)&di, 64 * sizeof(int)));
    int h[64];
    GA_LAUNCH(dim3(1), dim3(32), 0, nullptr, subwarp_then_full)(di);
    CHECK(cudaMemcpy(h, di, 32 * sizeof(int), cudaMemcpyDeviceToHost));
    int subwarp_ok = 1;
    for (int l = 0; l < 32; l++)
        subwarp_ok &= h[l] == (l >= 16 ? l ^ 1 : l);
    GA_LAUNCH(dim3(1), dim3(32), 0, nullptr, ballot_after_exit)((unsigned *)di);
    CHECK(cudaMemcpy(h, di, 20 * sizeof(int), cudaMemcpyDeviceToHost));
    const unsigned ballot = (unsigned)h[0];
    GA_LAUNCH(dim3(1), dim3(48), 0, nullptr, partial_warp)(di);
    CHECK(cudaMemcpy(h, di, 48 * sizeof(int), cudaMemcpyDeviceToHost));
    const int partial_ok = h[5] == 0 && h[40] == 320;
    GA_LAUNCH(dim3(1), dim3(32), 0, nullptr, shuffle_huge_delta)(di);
    CHECK(cudaMemcpy(h, di, 32 * sizeof(int), cudaMemcpyDeviceToHost));
    const int huge_delta_ok = h[0] == 0 && h[31] == 31;

    float *d = device_floats(1024), hf[2] = {1.0f, 2.0f};
    const cudaError_t below = cudaMemcpy(d - 1, hf, sizeof hf, cudaMemcpyDefault);
    cudaGetLastError();
    float *d2 = device_floats(16);
    CHECK(cudaFreeAsync(d2, nullptr));
    const cudaError_t free_twice = cudaFreeAsync(d2, nullptr);
    cudaGetLastError();
    const cudaError_t memset_freed = cudaMemsetAsync(d2, 0, 16, nullptr);
    cudaGetLastError();
    CHECK(cudaDeviceSynchronize());

    cudaEvent_t ev;
    CHECK(cudaEventCreate(&ev));
    const cudaError_t bad_record = cudaEventRecord(ev, (cudaStream_t)(uintptr_t)0x1234);
    cudaGetLastError();
    const cudaError_t query_unrecorded = cudaEventQuery(ev);
    CHECK(cudaMemsetAsync(d, 0, 4096, nullptr));
    int polls = 0;
    while (cudaStreamQuery(nullptr) == cudaErrorNotReady && polls < 100)
        polls++;
    CHECK(cudaEventDestroy(ev));

    float *p1 = nullptr, *p2 = nullptr;
    CHECK(cudaMallocHost((void **)&p1, 16));
    CHECK(cudaMallocHost((void **)&p2, 16));
    p1[0] = 5.0f;
    p2[0] = 0.0f;
    CHECK(cudaMemcpyAsync(p2, p1, sizeof(float), cudaMemcpyHostToHost, nullptr));
    const int h2h_done = p2[0] == 5.0f;
    CHECK(cudaFreeHost(p1));
    CHECK(cudaFreeHost(p2));

    cublasHandle_t blas;
    if (cublasCreate(&blas) != CUBLAS_STATUS_SUCCESS)
        return printf("FAIL cublasCreate\n"), 1;
    float c[4] = {1, 2, 3, 4}, *dc = device_floats(4);
    CHECK(cudaMemcpy(dc, c, sizeof c, cudaMemcpyHostToDevice));
    const float alpha = INFINITY, beta = 1.0f;
    const cublasStatus_t gemm = cublasSgemm(blas, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 0, &alpha, d, 2, d, 1, &beta,
                                            dc, 2);
    CHECK(cudaMemcpy(c, dc, sizeof c, cudaMemcpyDeviceToHost));
    const int k0_ok = gemm == CUBLAS_STATUS_SUCCESS && c[0] == 1 && c[3] == 4;
    cublasDestroy(blas);

    printf("RESULT subwarp_ok=%d ballot=0x%x partial_ok=%d huge_delta_ok=%d below=%d free_twice=%d "
           "memset_freed=%d bad_record=%d query_unrecorded=%d polls=%d h2h_done=%d k0_ok=%d\n",
           subwarp_ok, ballot, partial_ok, huge_delta_ok, (int)below, (int)free_twice, (int)memset_freed,
           (int)bad_record, (int)query_unrecorded, polls, h2h_done, k0_ok);
    CHECK(cudaFree(d));
    CHECK(cudaFree(dc));
    CHECK(cudaFree(di));
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, nullptr, _IOLBF, 0);
    const char *s = argc > 1 ? argv[1] : "";
    const char *arg = argc > 2 ? argv[2] : "";
    if (!strcmp(s, "barrier"))
        return scenario_barrier(arg);
    if (!strcmp(s, "warp"))
        return scenario_warp();
    if (!strcmp(s, "race"))
        return scenario_race();
    if (!strcmp(s, "float_order"))
        return scenario_float_order();
    if (!strcmp(s, "oob_write"))
        return scenario_oob_write(strtoll(arg, nullptr, 10));
    if (!strcmp(s, "host_deref"))
        return scenario_host_deref();
    if (!strcmp(s, "uninit"))
        return scenario_uninit();
    if (!strcmp(s, "streams"))
        return scenario_streams();
    if (!strcmp(s, "graphs"))
        return scenario_graphs();
    if (!strcmp(s, "limits"))
        return scenario_limits();
    if (!strcmp(s, "oom"))
        return scenario_oom();
    if (!strcmp(s, "diag_barrier"))
        return scenario_diag(true);
    if (!strcmp(s, "diag_shuffle"))
        return scenario_diag(false);
    if (!strcmp(s, "device"))
        return scenario_device();
    if (!strcmp(s, "semantics"))
        return scenario_semantics();
    printf("FAIL unknown scenario '%s'\n", s);
    return 2;
}
