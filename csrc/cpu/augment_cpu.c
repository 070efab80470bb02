/* Augmentation kernels on the CPU, the twin of csrc/cuda/augment_cuda.cu: the
 * transform and the taps come from core/augment.h, so both devices sample the
 * same points with the same arithmetic. Semantics in core/kernels.def. */
#include "cpu/kernels_cpu.h"

#include "core/augment.h"
#include "core/rng.h"
#include "cpu/omp_util.h"

/* Output pixels per block of a row: their taps are computed once, then every
 * channel is sampled through them (the row stays contiguous in each plane). */
#define AUG_BLOCK 64

/* One row oy of image i, all channels. */
GA_SIMD_CLONES
static void augment_row(float *y, const float *x, int64_t c, int64_t h, int64_t w, const ga_augment *a,
                        const float m[6], int64_t oy)
{
    ga_aug_taps taps[AUG_BLOCK];
    const int64_t plane = h * w;
    for (int64_t ox0 = 0; ox0 < w; ox0 += AUG_BLOCK) {
        const int64_t len = w - ox0 < AUG_BLOCK ? w - ox0 : AUG_BLOCK;
        for (int64_t j = 0; j < len; j++)
            ga_augment_taps(&taps[j], m, a->fill_mode, a->interpolation, ox0 + j, oy, h, w);
        for (int64_t ch = 0; ch < c; ch++) {
            const float *src = x + ch * plane;
            float *dst = y + ch * plane + oy * w + ox0;
            for (int64_t j = 0; j < len; j++)
                dst[j] = ga_augment_sample(&taps[j], src, a->fill_value, a->interpolation);
        }
    }
}

ga_status ga_augment_affine_cpu(float *y, const float *x, int64_t n, int64_t c, int64_t h, int64_t w,
                                const ga_augment *a, uint64_t seed, const int64_t *draw, int64_t offset)
{
    GA_TRY(ga_check_augment("augment_affine", a, n, c, h, w));
    const int64_t count = n * c * h * w;
    if (count > 0 && (!y || !x))
        return ga_fail(GA_ERR_VALUE, "augment_affine: NULL %s", y ? "x" : "y");
    if (count > 0 && y == x)
        return ga_fail(GA_ERR_VALUE, "augment_affine: y must not alias x");
    if (count == 0)
        return GA_OK;
    if (draw)
        seed = ga_rng_hash(seed, (uint64_t)(*draw + offset));
    const ga_augment params = *a;
    GA_PARALLEL_FOR(count * 4)
    for (int64_t r = 0; r < n * h; r++) {
        const int64_t i = r / h, oy = r - i * h;
        float m[6]; /* the image's map, recomputed per row: a few dozen flops */
        ga_augment_matrix(m, &params, seed, i, h, w);
        augment_row(y + i * c * h * w, x + i * c * h * w, c, h, w, &params, m, oy);
    }
    return GA_OK;
}
