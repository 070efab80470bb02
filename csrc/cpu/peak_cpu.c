/* FP32 peak probe: how many fused multiply-adds per second this CPU sustains.
 *
 * Each thread runs independent FMA chains on registers only (no memory
 * traffic), enough chains to hide the FMA latency, with the widest vectors the
 * CPU has. The benchmarks divide kernel GFLOP/s by this to print % of peak. */
#include "cpu/peak_cpu.h"

#include <stdint.h>
#include <time.h>

#include "cpu/omp_util.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define GA_PEAK_X86 1
#endif

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* 12 chains x vector width x 2 flops per FMA, `iters` times. Returns flops. */
#ifdef GA_PEAK_X86
__attribute__((target("avx512f"))) static double fma_avx512(int64_t iters, float *sink)
{
    __m512 a[12], m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++)
        a[i] = _mm512_set1_ps((float)i);
    for (int64_t it = 0; it < iters; it++)
        for (int i = 0; i < 12; i++)
            a[i] = _mm512_fmadd_ps(a[i], m, c);
    __m512 s = a[0];
    for (int i = 1; i < 12; i++)
        s = _mm512_add_ps(s, a[i]);
    *sink = _mm512_reduce_add_ps(s);
    return (double)iters * 12 * 16 * 2;
}

__attribute__((target("avx2,fma"))) static double fma_avx2(int64_t iters, float *sink)
{
    __m256 a[12], m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++)
        a[i] = _mm256_set1_ps((float)i);
    for (int64_t it = 0; it < iters; it++)
        for (int i = 0; i < 12; i++)
            a[i] = _mm256_fmadd_ps(a[i], m, c);
    __m256 s = a[0];
    for (int i = 1; i < 12; i++)
        s = _mm256_add_ps(s, a[i]);
    float out[8];
    _mm256_storeu_ps(out, s);
    *sink = out[0] + out[7];
    return (double)iters * 12 * 8 * 2;
}
#endif

static double fma_scalar(int64_t iters, float *sink)
{
    float a[12];
    for (int i = 0; i < 12; i++)
        a[i] = (float)i;
    for (int64_t it = 0; it < iters; it++)
        for (int i = 0; i < 12; i++)
            a[i] = a[i] * 0.999999f + 1e-7f;
    float s = 0.0f;
    for (int i = 0; i < 12; i++)
        s += a[i];
    *sink = s;
    return (double)iters * 12 * 2;
}

ga_status ga_cpu_peak_gflops(double *gflops, const char **isa, int threads, double seconds)
{
    if (!gflops || threads < 1 || !(seconds > 0.0 && seconds <= 60.0))
        return ga_fail(GA_ERR_VALUE, "peak probe: need threads >= 1 and 0 < seconds <= 60");
    double (*probe)(int64_t, float *) = fma_scalar;
    const char *name = "scalar";
#ifdef GA_PEAK_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) {
        probe = fma_avx512;
        name = "avx512";
    } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        probe = fma_avx2;
        name = "avx2";
    }
#endif
    if (isa)
        *isa = name;
    /* Calibrate on one thread, then run every thread for about `seconds`. */
    float sink;
    int64_t iters = 1 << 16;
    double t0 = now_s();
    probe(iters, &sink);
    double dt = now_s() - t0;
    while (dt < 0.02 && iters < ((int64_t)1 << 40)) {
        iters *= 4;
        t0 = now_s();
        probe(iters, &sink);
        dt = now_s() - t0;
    }
    iters = (int64_t)((double)iters * seconds / (dt > 0 ? dt : 1e-3)) + 1;
    double flops = 0.0, start = now_s();
#pragma omp parallel num_threads(threads) reduction(+ : flops)
    {
        float s;
        flops += probe(iters, &s);
    }
    double elapsed = now_s() - start;
    *gflops = flops / elapsed * 1e-9;
    return GA_OK;
}
