/* Counter-based random numbers (a SplitMix64-style hash of seed and counter).
 *
 * Element i of a stream depends only on (seed, i), never on what was drawn
 * before, so the CPU and the CUDA kernels produce the same stream whatever their
 * threading, and a dropout mask can be regenerated anywhere. */
#ifndef GA_RNG_H
#define GA_RNG_H

#include <stdint.h>

#if defined(__CUDACC__)
#define GA_RNG_HD __host__ __device__ __forceinline__
#else
#define GA_RNG_HD static inline
#endif

GA_RNG_HD uint64_t ga_rng_hash(uint64_t seed, uint64_t counter)
{
    uint64_t z = seed * 0x9E3779B97F4A7C15ull + counter * 0xD1B54A32D192ED03ull + 0x632BE59BD9B4E019ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform float in [0, 1) with 24 random bits. */
GA_RNG_HD float ga_rng_uniform(uint64_t seed, uint64_t counter)
{
    return (float)(ga_rng_hash(seed, counter) >> 40) * (1.0f / 16777216.0f);
}

#endif
