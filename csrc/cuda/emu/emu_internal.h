/* Between the emulator's runtime (emu_runtime.cpp) and its cuBLAS
 * (emu_cublas.cpp); kernels never see this. */
#ifndef GA_EMU_INTERNAL_H
#define GA_EMU_INTERNAL_H

#include <cstdint>
#include <functional>

#include "cuda_runtime.h"

namespace ga_emu {

/* Queue host-side device work (it runs with device memory accessible, in
 * stream order, at the next synchronising call). */
cudaError_t enqueue(cudaStream_t stream, std::function<void()> work);
/* Is [p, p + bytes) inside one live device allocation? */
bool is_device_range(const void *p, size_t bytes);
/* fn(i) for i in [0, n) on the emulator's worker threads. */
void parallel_for(int64_t n, const std::function<void(int64_t)> &fn);
/* A line on stderr, prefixed with the emulator's name. */
void diagnose(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

} // namespace ga_emu

#endif
