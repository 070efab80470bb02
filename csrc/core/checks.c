/* Device-independent argument checks (core/checks.h). */
#include "core/checks.h"

#include <math.h>

ga_status ga_check_conv(const char *op, const ga_conv_shape *s)
{
    if (!s || s->n < 0 || s->c <= 0 || s->h <= 0 || s->w <= 0 || s->k <= 0 || s->r <= 0 || s->s <= 0 ||
        s->stride <= 0 || s->pad < 0)
        return ga_fail(GA_ERR_VALUE, "%s: bad shape", op);
    if (s->p != (s->h + 2 * s->pad - s->r) / s->stride + 1 || s->q != (s->w + 2 * s->pad - s->s) / s->stride + 1 ||
        s->p <= 0 || s->q <= 0)
        return ga_fail(GA_ERR_VALUE, "%s: output size does not match the input", op);
    return GA_OK;
}

ga_status ga_check_pool(const char *op, const ga_pool_shape *s)
{
    if (!s || s->n < 0 || s->c < 0 || s->h <= 0 || s->w <= 0 || s->size <= 0 || s->stride <= 0 ||
        s->p != (s->h - s->size) / s->stride + 1 || s->q != (s->w - s->size) / s->stride + 1 || s->p <= 0 ||
        s->q <= 0)
        return ga_fail(GA_ERR_VALUE, "%s: inconsistent shape", op);
    if (s->h * s->w > INT32_MAX)
        return ga_fail(GA_ERR_VALUE, "%s: h*w does not fit the int32 argmax", op);
    return GA_OK;
}

ga_status ga_check_channels(const char *op, int64_t n, int64_t c, int64_t hw)
{
    if (n < 0 || c <= 0 || hw <= 0)
        return ga_fail(GA_ERR_VALUE, "%s: bad shape (n %lld, c %lld, hw %lld)", op, (long long)n, (long long)c,
                       (long long)hw);
    if (c > INT32_MAX)
        return ga_fail(GA_ERR_VALUE, "%s: too many channels", op);
    return GA_OK;
}

ga_status ga_check_rows(const char *op, int64_t nc, int64_t hw)
{
    if (nc < 0 || hw <= 0 || (nc > 0 && hw > INT64_MAX / nc))
        return ga_fail(GA_ERR_VALUE, "%s: bad shape (nc %lld, hw %lld)", op, (long long)nc, (long long)hw);
    if (hw > INT32_MAX)
        return ga_fail(GA_ERR_VALUE, "%s: h*w does not fit the int32 argmax", op);
    return GA_OK;
}

ga_status ga_check_act(const char *op, ga_act act)
{
    if (act.kind < 0 || act.kind >= GA_ACT_KINDS)
        return ga_fail(GA_ERR_VALUE, "%s: unknown activation kind %d", op, (int)act.kind);
    if ((act.kind == GA_ACT_LEAKY_RELU || act.kind == GA_ACT_ELU) && !(act.alpha >= 0.0f && isfinite(act.alpha)))
        return ga_fail(GA_ERR_VALUE, "%s: the %s alpha must be finite and >= 0, got %g", op,
                       act.kind == GA_ACT_ELU ? "elu" : "leaky_relu", (double)act.alpha);
    return GA_OK;
}

ga_status ga_check_act_poolable(const char *op, ga_act act)
{
    GA_TRY(ga_check_act(op, act));
    if (!ga_act_from_output(act.kind))
        return ga_fail(GA_ERR_VALUE, "%s: a non-monotone activation (gelu, silu) cannot be fused with a max pool", op);
    return GA_OK;
}

/* lo <= hi, both finite, inside [min, max] */
static ga_status check_range(const char *op, const char *what, const float r[2], double min, double max)
{
    if (!(isfinite(r[0]) && isfinite(r[1]) && r[0] <= r[1]))
        return ga_fail(GA_ERR_VALUE, "%s: the %s range must be finite with lower <= upper, got (%g, %g)", op, what,
                       (double)r[0], (double)r[1]);
    if (!(r[0] >= min && r[1] <= max))
        return ga_fail(GA_ERR_VALUE, "%s: the %s range must lie in [%g, %g], got (%g, %g)", op, what, min, max,
                       (double)r[0], (double)r[1]);
    return GA_OK;
}

ga_status ga_check_augment(const char *op, const ga_augment *a, int64_t n, int64_t c, int64_t h, int64_t w)
{
    if (!a)
        return ga_fail(GA_ERR_VALUE, "%s: NULL augmentation parameters", op);
    if (n < 0 || c <= 0 || h <= 0 || w <= 0)
        return ga_fail(GA_ERR_VALUE, "%s: bad shape (n %lld, c %lld, h %lld, w %lld)", op, (long long)n,
                       (long long)c, (long long)h, (long long)w);
    if (h >= (1 << 24) || w >= (1 << 24) || c > INT32_MAX || (n > 0 && h * w > INT64_MAX / n / c))
        return ga_fail(GA_ERR_VALUE, "%s: image too large (h and w must be below 2^24)", op);
    if (a->flip < 0 || a->flip > (GA_AUG_FLIP_H | GA_AUG_FLIP_V))
        return ga_fail(GA_ERR_VALUE, "%s: unknown flip bits %d", op, a->flip);
    if (a->fill_mode < 0 || a->fill_mode >= GA_FILL_MODES)
        return ga_fail(GA_ERR_VALUE, "%s: unknown fill mode %d", op, a->fill_mode);
    if (a->interpolation < 0 || a->interpolation >= GA_INTERPS)
        return ga_fail(GA_ERR_VALUE, "%s: unknown interpolation %d", op, a->interpolation);
    if (!isfinite(a->fill_value))
        return ga_fail(GA_ERR_VALUE, "%s: fill_value must be finite, got %g", op, (double)a->fill_value);
    GA_TRY(check_range(op, "height translation", a->translate_h, -1.0, 1.0));
    GA_TRY(check_range(op, "width translation", a->translate_w, -1.0, 1.0));
    GA_TRY(check_range(op, "height zoom", a->zoom_h, -1.0, 1e6));
    if (!a->zoom_keep_aspect)
        GA_TRY(check_range(op, "width zoom", a->zoom_w, -1.0, 1e6));
    GA_TRY(check_range(op, "rotation", a->rotate, -1e6, 1e6));
    return GA_OK;
}
