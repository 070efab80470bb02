/* OpenMP helpers shared by the CPU kernels. */
#ifndef GA_OMP_UTIL_H
#define GA_OMP_UTIL_H

#include "core/threads.h"

/* Below this many elements a parallel region costs more than it saves. */
#define GA_PAR_MIN 32768

#define GA_STR_(x) #x
#define GA_PRAGMA(x) _Pragma(GA_STR_(x))
/* `GA_PARALLEL_FOR(work)` before a for loop: parallel with the process-wide
 * thread count when `work` (elements touched) is large enough. */
#define GA_PARALLEL_FOR(work) \
    GA_PRAGMA(omp parallel for schedule(static) num_threads(ga_get_num_threads()) if ((work) >= GA_PAR_MIN))

/* GA_SIMD_CLONES before a function: compiled for AVX-512, AVX2 and baseline
 * x86-64, picked at load time by the CPU (the package is built for baseline
 * x86-64, so without this the elementwise loops get only SSE2). Put it on
 * plain helper functions called from inside a parallel loop, not on functions
 * holding the omp pragma itself. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(GA_NO_CLONES)
#define GA_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define GA_SIMD_CLONES
#endif

#endif
