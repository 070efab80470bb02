/* The network's step counters: a few int64 in device memory that the kernels
 * of a training step read (and one kernel advances), instead of numbers the
 * host passes by value. A recorded step (a CUDA graph) then replays as the
 * next step, not as a copy of the one recorded: Adam's bias correction, the
 * dropout masks and the batch position all move on by themselves. */
#ifndef GA_STEPS_H
#define GA_STEPS_H

#include <math.h>
#include <stdint.h>

#if defined(__CUDACC__) || (defined(__cplusplus) && defined(GA_CUDA_EMU))
#define GA_STEPS_HD __host__ __device__ inline
#else
#define GA_STEPS_HD static inline
#endif

enum {
    GA_STEP_T = 0,     /* optimizer steps taken (Adam's t after the update's advance) */
    GA_STEP_DRAWS = 1, /* dropout masks drawn so far (each mask's seed is a hash of it) */
    GA_STEP_POS = 2,   /* the next batch's first position in the data set's order */
    GA_STEP_ZERO = 3,  /* always 0: the position of batches given by address */
    GA_STEP_COUNTERS = 4
};

/* Adam's bias corrections 1 / (1 - beta^t), in double and rounded once, so the
 * CPU and the GPU get the same float (a float powf differs by an ulp between
 * libm and CUDA, and twenty Adam steps amplify that past the tolerances). */
GA_STEPS_HD float ga_adam_correction(float beta, int64_t t)
{
    return (float)(1.0 / (1.0 - pow((double)beta, (double)t)));
}

#endif
