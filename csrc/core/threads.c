#include "threads.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* One process-wide setting rather than OpenMP's per-thread ICV, so that a call
 * made from any Python thread uses what ga.set_num_threads() chose.
 * 0 means "not set yet": use OpenMP's default (OMP_NUM_THREADS or all cores). */
static int ga_threads_setting = 0;

int ga_get_num_threads(void)
{
#ifdef _OPENMP
    int n = __atomic_load_n(&ga_threads_setting, __ATOMIC_RELAXED);
    return n > 0 ? n : omp_get_max_threads();
#else
    return 1;
#endif
}

void ga_set_num_threads(int n)
{
#ifdef _OPENMP
    if (n > 0)
        __atomic_store_n(&ga_threads_setting, n, __ATOMIC_RELAXED);
#else
    (void)n;
#endif
}

int ga_have_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}
