/* Random geometric augmentation (RandomFlip, RandomTranslation, RandomZoom,
 * RandomRotation): the parameters, the per-image transform drawn from the
 * counter-based RNG, and the sampling of one output pixel. Written once, for
 * the CPU kernel (cpu/augment_cpu.c), the CUDA kernel (cuda/augment_cuda.cu)
 * and the emulator, so every device computes the same transform and the same
 * taps; tests/reference.py ports it to NumPy.
 *
 * Every multiply-add of the sampling is an explicit fmaf, so a compiler that
 * contracts a*b+c (nvcc by default, the emulator's -ffp-contract=fast, a
 * target clone with FMA) cannot make the devices disagree. The matrix is
 * computed in double and rounded once to float: cos/sin of the CPU's libm and
 * of CUDA differ by at most an ulp of a double, which the rounding hides. */
#ifndef GA_AUGMENT_H
#define GA_AUGMENT_H

#include <math.h>
#include <stdint.h>

#include "core/rng.h"

#if defined(__CUDACC__)
#define GA_AUG_HD __host__ __device__ __forceinline__
#else
#define GA_AUG_HD static inline
#endif

/* flip bits: each one flips the image with probability 1/2 */
enum { GA_AUG_FLIP_H = 1, GA_AUG_FLIP_V = 2 };
/* RandomFlip's mode by value (0: no flip) */
#define GA_AUG_FLIP_NAMES {"none", "horizontal", "vertical", "horizontal_and_vertical"}
#define GA_AUG_FLIP_MODES 4

/* What a point outside the input reads (Keras 3, on integer indices):
 *   reflect  (d c b a | a b c d | d c b a)  index -1 reads 0, n reads n - 1
 *   wrap     (a b c d | a b c d | a b c d)
 *   constant (k k k k | a b c d | k k k k)  k = fill_value
 *   nearest  (a a a a | a b c d | d d d d) */
enum { GA_FILL_REFLECT = 0, GA_FILL_WRAP = 1, GA_FILL_CONSTANT = 2, GA_FILL_NEAREST = 3, GA_FILL_MODES = 4 };
#define GA_FILL_NAMES {"reflect", "wrap", "constant", "nearest"}
enum { GA_INTERP_BILINEAR = 0, GA_INTERP_NEAREST = 1, GA_INTERPS = 2 };
#define GA_INTERP_NAMES {"bilinear", "nearest"}

/* One random affine transform per image, all channels alike. Ranges are
 * [lo, hi] with lo <= hi; a value is lo + (hi - lo) u, u uniform in [0, 1).
 * The inverse map (output pixel -> input point) is F T Z R applied to the
 * output pixel (rotation first), which is the image flipped, then translated,
 * zoomed and rotated (the order of the Keras layers' names), sampled once:
 *   R  rotation by 2 pi r (counter-clockwise for r > 0) about the centre
 *   Z  zoom by zx, zy = 1 + z about the centre (z > 0 zooms out, as Keras)
 *   T  shift by (tx w, ty h) pixels (positive: right, down)
 *   F  mirror x -> (w - 1) - x, y -> (h - 1) - y where the flip is drawn.
 * The centre is ((w - 1) / 2, (h - 1) / 2), as in Keras. */
typedef struct {
    int flip;                         /* GA_AUG_FLIP_* bits */
    float translate_h[2], translate_w[2]; /* fractions of the height / width */
    float zoom_h[2], zoom_w[2];       /* z of each axis, z >= -1 */
    int zoom_keep_aspect;             /* 1: zx = zy (Keras's width_factor=None) */
    float rotate[2];                  /* fractions of a full turn */
    int fill_mode;                    /* GA_FILL_* */
    int interpolation;                /* GA_INTERP_* */
    float fill_value;                 /* for GA_FILL_CONSTANT */
} ga_augment;

/* Uniforms per image: image i reads ga_rng_uniform(s, i * GA_AUG_DRAWS + j). */
enum {
    GA_AUG_U_FLIP_H = 0,
    GA_AUG_U_FLIP_V = 1,
    GA_AUG_U_TRANSLATE_H = 2,
    GA_AUG_U_TRANSLATE_W = 3,
    GA_AUG_U_ZOOM_H = 4,
    GA_AUG_U_ZOOM_W = 5,
    GA_AUG_U_ROTATE = 6,
    GA_AUG_DRAWS = 8
};

/* 3x3 affine product r = a b of 2x3 matrices (the last row 0 0 1). */
GA_AUG_HD void ga_aug_compose(double r[6], const double a[6], const double b[6])
{
    const double t0 = a[0] * b[0] + a[1] * b[3], t1 = a[0] * b[1] + a[1] * b[4];
    const double t2 = a[0] * b[2] + a[1] * b[5] + a[2];
    const double t3 = a[3] * b[0] + a[4] * b[3], t4 = a[3] * b[1] + a[4] * b[4];
    const double t5 = a[3] * b[2] + a[4] * b[5] + a[5];
    r[0] = t0, r[1] = t1, r[2] = t2, r[3] = t3, r[4] = t4, r[5] = t5;
}

/* m: the inverse map of image i of an (h, w) batch under stream seed s:
 * input (x, y) = (m0 ox + m1 oy + m2, m3 ox + m4 oy + m5). */
GA_AUG_HD void ga_augment_matrix(float m[6], const ga_augment *a, uint64_t s, int64_t i, int64_t h, int64_t w)
{
    const uint64_t base = (uint64_t)i * GA_AUG_DRAWS;
#define GA_AUG_U(j) ((double)ga_rng_uniform(s, base + (uint64_t)(j)))
#define GA_AUG_LERP(r, j) ((double)(r)[0] + ((double)(r)[1] - (double)(r)[0]) * GA_AUG_U(j))
    const double wm = (double)(w - 1), hm = (double)(h - 1);
    const double ang = GA_AUG_LERP(a->rotate, GA_AUG_U_ROTATE) * 6.283185307179586476925;
    const double c = cos(ang), sn = sin(ang);
    const double rot[6] = {c, -sn, (wm - (c * wm - sn * hm)) / 2.0, sn, c, (hm - (sn * wm + c * hm)) / 2.0};
    const double zy = 1.0 + GA_AUG_LERP(a->zoom_h, GA_AUG_U_ZOOM_H);
    const double zx = a->zoom_keep_aspect ? zy : 1.0 + GA_AUG_LERP(a->zoom_w, GA_AUG_U_ZOOM_W);
    const double zoom[6] = {zx, 0.0, wm / 2.0 * (1.0 - zx), 0.0, zy, hm / 2.0 * (1.0 - zy)};
    const double dx = GA_AUG_LERP(a->translate_w, GA_AUG_U_TRANSLATE_W) * (double)w;
    const double dy = GA_AUG_LERP(a->translate_h, GA_AUG_U_TRANSLATE_H) * (double)h;
    const double shift[6] = {1.0, 0.0, -dx, 0.0, 1.0, -dy};
    const int fh = (a->flip & GA_AUG_FLIP_H) && GA_AUG_U(GA_AUG_U_FLIP_H) < 0.5;
    const int fv = (a->flip & GA_AUG_FLIP_V) && GA_AUG_U(GA_AUG_U_FLIP_V) < 0.5;
    const double flip[6] = {fh ? -1.0 : 1.0, 0.0, fh ? wm : 0.0, 0.0, fv ? -1.0 : 1.0, fv ? hm : 0.0};
#undef GA_AUG_LERP
#undef GA_AUG_U
    double zr[6], tzr[6], all[6];
    ga_aug_compose(zr, zoom, rot);
    ga_aug_compose(tzr, shift, zr);
    ga_aug_compose(all, flip, tzr);
    for (int k = 0; k < 6; k++)
        m[k] = (float)all[k];
}

/* An index of an axis of n pixels after the fill mode; -1: the fill value. */
GA_AUG_HD int64_t ga_aug_fix(int64_t i, int64_t n, int mode)
{
    if (i >= 0 && i < n)
        return i;
    if (mode == GA_FILL_CONSTANT)
        return -1;
    if (mode == GA_FILL_NEAREST)
        return i < 0 ? 0 : n - 1;
    if (mode == GA_FILL_WRAP) {
        const int64_t k = i % n;
        return k < 0 ? k + n : k;
    }
    const int64_t p = 2 * n; /* reflect */
    int64_t k = i % p;
    if (k < 0)
        k += p;
    return k < n ? k : p - 1 - k;
}

/* Where output pixel (ox, oy) reads: off[] the plane offsets y w + x of its
 * taps (-1: the fill value), bilinear: (x0, y0), (x0 + 1, y0), (x0, y0 + 1),
 * (x0 + 1, y0 + 1) with weights wx, wy of the second column / row; nearest:
 * off[0] only (the point rounded half to even, as jnp.round). */
typedef struct {
    int64_t off[4];
    float wx, wy;
} ga_aug_taps;

GA_AUG_HD void ga_augment_taps(ga_aug_taps *t, const float m[6], int fill_mode, int interpolation, int64_t ox,
                               int64_t oy, int64_t h, int64_t w)
{
    const float fx = (float)ox, fy = (float)oy;
    /* clamped so that the conversions below stay in range (2^24: any image) */
    float x = fmaf(m[0], fx, fmaf(m[1], fy, m[2]));
    float y = fmaf(m[3], fx, fmaf(m[4], fy, m[5]));
    x = fminf(fmaxf(x, -16777216.0f), 16777216.0f);
    y = fminf(fmaxf(y, -16777216.0f), 16777216.0f);
    if (interpolation == GA_INTERP_NEAREST) {
        const int64_t ix = ga_aug_fix((int64_t)rintf(x), w, fill_mode);
        const int64_t iy = ga_aug_fix((int64_t)rintf(y), h, fill_mode);
        t->off[0] = ix < 0 || iy < 0 ? -1 : iy * w + ix;
        t->off[1] = t->off[2] = t->off[3] = -1;
        t->wx = t->wy = 0.0f;
        return;
    }
    const float x0 = floorf(x), y0 = floorf(y);
    t->wx = x - x0; /* exact */
    t->wy = y - y0;
    const int64_t ix0 = ga_aug_fix((int64_t)x0, w, fill_mode), ix1 = ga_aug_fix((int64_t)x0 + 1, w, fill_mode);
    const int64_t iy0 = ga_aug_fix((int64_t)y0, h, fill_mode), iy1 = ga_aug_fix((int64_t)y0 + 1, h, fill_mode);
    t->off[0] = ix0 < 0 || iy0 < 0 ? -1 : iy0 * w + ix0;
    t->off[1] = ix1 < 0 || iy0 < 0 ? -1 : iy0 * w + ix1;
    t->off[2] = ix0 < 0 || iy1 < 0 ? -1 : iy1 * w + ix0;
    t->off[3] = ix1 < 0 || iy1 < 0 ? -1 : iy1 * w + ix1;
}

/* The value of the pixel the taps describe in one channel plane: bilinear as
 * two row lerps then a column lerp (a weight of 0 gives the first tap exactly). */
GA_AUG_HD float ga_augment_sample(const ga_aug_taps *t, const float *plane, float fill, int interpolation)
{
    const float v00 = t->off[0] >= 0 ? plane[t->off[0]] : fill;
    if (interpolation == GA_INTERP_NEAREST)
        return v00;
    const float v01 = t->off[1] >= 0 ? plane[t->off[1]] : fill;
    const float v10 = t->off[2] >= 0 ? plane[t->off[2]] : fill;
    const float v11 = t->off[3] >= 0 ? plane[t->off[3]] : fill;
    const float top = fmaf(t->wx, v01 - v00, v00);
    const float bottom = fmaf(t->wx, v11 - v10, v10);
    return fmaf(t->wy, bottom - top, top);
}

#endif
