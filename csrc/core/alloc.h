/* Host memory: 64-byte aligned (one cache line, one AVX-512 vector). */
#ifndef GA_ALLOC_H
#define GA_ALLOC_H

#include <stddef.h>

#include "status.h"

#define GA_ALIGN 64

/* *p = aligned block of `bytes` (NULL for 0 bytes); sets MemoryError text. */
ga_status ga_host_alloc(void **p, size_t bytes);
void ga_host_free(void *p);

/* A block of at least `floats` floats owned by the calling thread and reused by
 * its later calls with the same slot (contents not kept across growth). */
enum { GA_SCRATCH_GEMM = 0, GA_SCRATCH_CONV = 1, GA_SCRATCH_WINOGRAD = 2, GA_SCRATCH_WINOGRAD_FILTER = 3, GA_SCRATCH_SLOTS = 4 };
ga_status ga_thread_scratch(int slot, size_t floats, float **out);

#endif
