#define _GNU_SOURCE
#include "alloc.h"

#include <pthread.h>
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

/* Per-thread scratch: each slot keeps its largest block for the thread's later
 * calls, so steady state allocates nothing; a pthread key per slot frees the
 * block when the thread exits. */
static _Thread_local float *tl_buf[GA_SCRATCH_SLOTS];
static _Thread_local size_t tl_cap[GA_SCRATCH_SLOTS]; /* floats */
static pthread_key_t g_key[GA_SCRATCH_SLOTS];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void key_init(void)
{
    for (int i = 0; i < GA_SCRATCH_SLOTS; i++)
        (void)pthread_key_create(&g_key[i], free);
}

ga_status ga_thread_scratch(int slot, size_t floats, float **out)
{
    *out = NULL;
    if (slot < 0 || slot >= GA_SCRATCH_SLOTS)
        return ga_fail(GA_ERR_VALUE, "scratch slot %d out of range", slot);
    if (floats > tl_cap[slot]) {
        pthread_once(&g_once, key_init);
        ga_host_free(tl_buf[slot]);
        tl_buf[slot] = NULL;
        tl_cap[slot] = 0;
        (void)pthread_setspecific(g_key[slot], NULL);
        GA_TRY(ga_host_alloc((void **)&tl_buf[slot], floats * sizeof(float)));
        tl_cap[slot] = floats;
        (void)pthread_setspecific(g_key[slot], tl_buf[slot]);
    }
    *out = tl_buf[slot];
    return GA_OK;
}
