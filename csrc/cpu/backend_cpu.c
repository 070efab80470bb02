/* The CPU entry in the device seam: host memory plus the kernels of csrc/cpu/. */
#include <string.h>

#include "core/alloc.h"
#include "cpu/kernels_cpu.h"

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
    .set_device = cpu_set_device,
    .alloc = cpu_alloc,
    .release = ga_host_free,
    .to_device = cpu_copy,
    .to_host = cpu_copy,
    .copy = cpu_copy,
    .zero = cpu_zero,
    .synchronize = cpu_synchronize,
    .gemm = ga_gemm_cpu,
    .bias_act = ga_bias_act_cpu,
    .relu_forward = ga_relu_forward_cpu,
    .relu_backward = ga_relu_backward_cpu,
    .sum_rows = ga_sum_rows_cpu,
    .mul = ga_mul_cpu,
    .im2col = ga_im2col_cpu,
    .conv2d_forward = ga_conv2d_forward_cpu,
    .conv2d_backward = ga_conv2d_backward_cpu,
    .maxpool_forward = ga_maxpool_forward_cpu,
    .maxpool_backward = ga_maxpool_backward_cpu,
    .dropout_forward = ga_dropout_forward_cpu,
    .softmax_xent = ga_softmax_xent_cpu,
    .sgd_update = ga_sgd_update_cpu,
    .adam_update = ga_adam_update_cpu,
    .batchnorm_forward = ga_batchnorm_forward_cpu,
    .batchnorm_backward = ga_batchnorm_backward_cpu,
    .global_avgpool_forward = ga_global_avgpool_forward_cpu,
    .global_avgpool_backward = ga_global_avgpool_backward_cpu,
    .add = ga_add_cpu,
    .conv2d_pool_forward = ga_conv2d_pool_forward_cpu,
    .conv2d_pool_backward = ga_conv2d_pool_backward_cpu,
};
