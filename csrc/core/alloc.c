#include "alloc.h"

#include <stdlib.h>

ga_status ga_host_alloc(void **p, size_t bytes)
{
    *p = NULL;
    if (bytes == 0)
        return GA_OK;
    size_t rounded = (bytes + GA_ALIGN - 1) / GA_ALIGN * GA_ALIGN;
    if (rounded < bytes)
        return ga_fail(GA_ERR_MEMORY, "allocation of %zu bytes overflows", bytes);
    *p = aligned_alloc(GA_ALIGN, rounded);
    if (*p == NULL)
        return ga_fail(GA_ERR_MEMORY, "out of host memory allocating %zu bytes", bytes);
    return GA_OK;
}

void ga_host_free(void *p) { free(p); }
