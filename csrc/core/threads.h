/* Thread count used by the OpenMP kernels (1 when built without OpenMP). */
#ifndef GA_THREADS_H
#define GA_THREADS_H

int ga_get_num_threads(void);
void ga_set_num_threads(int n);
int ga_have_openmp(void);

#endif
