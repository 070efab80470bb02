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

#endif
