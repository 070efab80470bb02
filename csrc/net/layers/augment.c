/* Preprocessing layers: Rescaling (always on) and the random augmentation
 * layers RandomFlip, RandomTranslation, RandomZoom and RandomRotation (training
 * only). The four random kinds differ only in how their spec fills the one
 * augment_affine kernel's parameters (core/augment.h); forward, backward and
 * buffers are shared.
 *
 * A random layer is a view of its input outside training, and it must come
 * before every layer with weights (and outside residual blocks), so that a
 * training step's backward, which stops at the lowest trainable layer, never
 * needs the transpose of the resampling. Its draws follow dropout's scheme:
 * image i of forward k reads ga_rng_uniform(s, i GA_AUG_DRAWS + j) with
 * s = hash(layer stream, ctl[GA_STEP_DRAWS] + k) on the device, so a replayed
 * CUDA graph draws new transforms. The layer stream mixes the model's seed
 * with the layer's seed= (or, without one, its index). */
#include "net/layer.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/augment.h"
#include "core/checks.h"
#include "core/rng.h"
#include "core/steps.h"

static ga_status same_shape_infer(ga_layer *l)
{
    memcpy(l->out, l->in, sizeof l->out);
    return GA_OK;
}

/* ---- Rescaling: y = x scale + offset; dx = g scale ---- */

static ga_status rescaling_infer(ga_net *net, ga_layer *l, int i)
{
    (void)net;
    if (!(isfinite(l->spec.scale) && isfinite(l->spec.offset)))
        return ga_fail(GA_ERR_VALUE, "layer %d (Rescaling): scale and offset must be finite, got %g, %g", i,
                       (double)l->spec.scale, (double)l->spec.offset);
    return same_shape_infer(l);
}

static ga_status rescaling_forward(ga_net *net, ga_layer *l, int64_t n, int training, const float *in, float **y)
{
    (void)training;
    BE(net, scale_shift(*y, in, n * per_sample(l->out), l->spec.scale, l->spec.offset));
    return GA_OK;
}

static ga_status rescaling_backward(ga_net *net, ga_layer *l, int64_t n, int training, int lowest, int need_dx,
                                    float *g, float *spare, int *moved)
{
    (void)training, (void)lowest, (void)spare;
    *moved = 0;
    if (need_dx)
        BE(net, scale_shift(g, g, n * per_sample(l->out), l->spec.scale, 0.0f));
    return GA_OK;
}

const ga_layer_ops ga_rescaling_layer = {
    .kind = "rescaling",
    .name = "Rescaling",
    .keys = {"scale", "offset"},
    .infer = rescaling_infer,
    .reserve = ga_layer_reserve_output,
    .forward = rescaling_forward,
    .backward = rescaling_backward,
};

/* ---- the random layers ---- */

/* Checks shared by the four kinds: the placement rule, the fill mode and the
 * interpolation, the layer's stream; then the kernel's own check on aug. */
static ga_status random_infer(ga_net *net, ga_layer *l, int i)
{
    for (int j = 0; j < i; j++) {
        const ga_layer *b = &net->layers[j];
        if (b->nw + b->nb + b->ns > 0 || b->match >= 0)
            return ga_fail(GA_ERR_VALUE,
                           "layer %d (%s) comes after layer %d (%s), which %s: random augmentation must come before "
                           "every layer with weights and outside residual blocks (put it first, or after "
                           "Rescaling)",
                           i, l->ops->name, j, b->ops->name,
                           b->match >= 0 ? "belongs to a residual block" : "has weights");
    }
    if (l->in[1] < 1 || l->in[2] < 1)
        return ga_fail(GA_ERR_VALUE, "layer %d (%s): needs image input (C, H, W)", i, l->ops->name);
    ga_augment *a = &l->aug;
    a->fill_mode = l->spec.fill_mode;
    a->interpolation = l->spec.interpolation;
    a->fill_value = l->spec.fill_value;
    const uint64_t key = l->spec.seeded ? (uint64_t)l->spec.seed : (0x8000000000000000ull | (uint64_t)i);
    l->aug_seed = ga_rng_hash(net->seed ^ 0xA06E47A11ull, key);
    char what[48];
    snprintf(what, sizeof what, "layer %d (%s)", i, l->ops->name);
    GA_TRY(ga_check_augment(what, a, 0, l->in[0], l->in[1], l->in[2]));
    return same_shape_infer(l);
}

static ga_status flip_infer(ga_net *net, ga_layer *l, int i)
{
    l->aug = (ga_augment){.flip = l->spec.flip_mode, .zoom_keep_aspect = 1};
    if (l->spec.flip_mode < 1 || l->spec.flip_mode > (GA_AUG_FLIP_H | GA_AUG_FLIP_V))
        return ga_fail(GA_ERR_VALUE, "layer %d (RandomFlip): unknown mode %d", i, l->spec.flip_mode);
    return random_infer(net, l, i);
}

static ga_status translation_infer(ga_net *net, ga_layer *l, int i)
{
    l->aug = (ga_augment){.zoom_keep_aspect = 1};
    memcpy(l->aug.translate_h, l->spec.factor_h, sizeof l->aug.translate_h);
    memcpy(l->aug.translate_w, l->spec.factor_w, sizeof l->aug.translate_w);
    return random_infer(net, l, i);
}

static ga_status zoom_infer(ga_net *net, ga_layer *l, int i)
{
    l->aug = (ga_augment){.zoom_keep_aspect = !l->spec.factor_w_set};
    memcpy(l->aug.zoom_h, l->spec.factor_h, sizeof l->aug.zoom_h);
    if (l->spec.factor_w_set)
        memcpy(l->aug.zoom_w, l->spec.factor_w, sizeof l->aug.zoom_w);
    return random_infer(net, l, i);
}

static ga_status rotation_infer(ga_net *net, ga_layer *l, int i)
{
    l->aug = (ga_augment){.zoom_keep_aspect = 1};
    memcpy(l->aug.rotate, l->spec.factor_h, sizeof l->aug.rotate);
    return random_infer(net, l, i);
}

static ga_status random_forward(ga_net *net, ga_layer *l, int64_t n, int training, const float *in, float **y)
{
    if (!training) {
        *y = (float *)in; /* identity: a view */
        return GA_OK;
    }
    /* draw k of this forward: stream hash(aug_seed, draws + k), draws on the device */
    BE(net, augment_affine(*y, in, n, l->in[0], l->in[1], l->in[2], &l->aug, ga_net_stream(net, l->aug_seed),
                           net->ctl + GA_STEP_DRAWS, net->fwd_draws++));
    return GA_OK;
}

static ga_status random_backward(ga_net *net, ga_layer *l, int64_t n, int training, int lowest, int need_dx,
                                 float *g, float *spare, int *moved)
{
    (void)net, (void)n, (void)lowest, (void)spare;
    *moved = 0;
    if (training && need_dx) /* only ga_net_backward asks: a training step stops above this layer */
        return ga_fail(GA_ERR_VALUE,
                       "%s has no input gradient in training mode (random augmentation is meant to sit below every "
                       "layer with weights)",
                       l->ops->name);
    (void)g; /* inference: the identity */
    return GA_OK;
}

#define RANDOM_LAYER(var, kind_name, class_name, infer_fn, ...) \
    const ga_layer_ops var = {                                   \
        .kind = kind_name,                                       \
        .name = class_name,                                      \
        .keys = {__VA_ARGS__},                                   \
        .infer = infer_fn,                                       \
        .reserve = ga_layer_reserve_output,                      \
        .forward = random_forward,                               \
        .backward = random_backward,                             \
    }

RANDOM_LAYER(ga_random_flip_layer, "random_flip", "RandomFlip", flip_infer, "mode", "seed");
RANDOM_LAYER(ga_random_translation_layer, "random_translation", "RandomTranslation", translation_infer,
             "height_factor", "width_factor", "fill_mode", "interpolation", "fill_value", "seed");
RANDOM_LAYER(ga_random_zoom_layer, "random_zoom", "RandomZoom", zoom_infer, "height_factor", "width_factor",
             "fill_mode", "interpolation", "fill_value", "seed");
RANDOM_LAYER(ga_random_rotation_layer, "random_rotation", "RandomRotation", rotation_infer, "factor", "fill_mode",
             "interpolation", "fill_value", "seed");
