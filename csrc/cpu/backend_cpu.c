/* The CPU entry in the device seam: host memory plus the kernels of csrc/cpu/. */
#include <string.h>

#include "core/alloc.h"
#include "cpu/kernels_cpu.h"
#include "cpu/peak_cpu.h"

static ga_status cpu_set_device(int index)
{
    return index == 0 ? GA_OK : ga_fail(GA_ERR_VALUE, "the CPU has only device index 0");
}

static ga_status cpu_alloc(void **p, size_t bytes) { return ga_host_alloc(p, bytes); }

static ga_status cpu_copy(void *dst, const void *src, size_t bytes)
{
    if (bytes && (!dst || !src))
        return ga_fail(GA_ERR_VALUE, "copy: NULL pointer");
    if (bytes)
        memmove(dst, src, bytes);
    return GA_OK;
}

static ga_status cpu_zero(void *p, size_t bytes)
{
    if (bytes && !p)
        return ga_fail(GA_ERR_VALUE, "zero: NULL pointer");
    if (bytes)
        memset(p, 0, bytes);
    return GA_OK;
}

static ga_status cpu_synchronize(void) { return GA_OK; }

const ga_backend ga_cpu_backend = {
    .abi = GA_BACKEND_ABI,
    .name = "cpu",
    .last_error = ga_last_error,
    .host_memory = 1,
    .kernel_isa = ga_gemm_cpu_isa,
    .set_kernel_isa = ga_gemm_cpu_set_isa,
    .peak_gflops = ga_cpu_peak_gflops,
    .set_device = cpu_set_device,
    .alloc = cpu_alloc,
    .release = ga_host_free,
    .to_device = cpu_copy,
    .to_host = cpu_copy,
    .copy = cpu_copy,
    .zero = cpu_zero,
    .synchronize = cpu_synchronize,
#define GA_KERNEL(name, args) .name = ga_##name##_cpu,
#define GA_KERNEL_OPT GA_KERNEL
#include "core/kernels.def"
#undef GA_KERNEL
#undef GA_KERNEL_OPT
};
