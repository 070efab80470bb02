/* Host memory: 64-byte aligned (one cache line, one AVX-512 vector). */
#ifndef GA_ALLOC_H
#define GA_ALLOC_H

#include <stddef.h>

#include "status.h"

#define GA_ALIGN 64

/* *p = aligned block of `bytes` (NULL for 0 bytes); sets MemoryError text. */
ga_status ga_host_alloc(void **p, size_t bytes);
void ga_host_free(void *p);

#endif
