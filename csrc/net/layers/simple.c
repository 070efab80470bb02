/* Layers without weights that keep the shape (Dropout, ReLU) or only reinterpret
 * it (Flatten): their backward works in place on the gradient. */
#include "net/layer.h"

#include <string.h>

#include "core/rng.h"
#include "core/steps.h"

static ga_status same_infer(ga_net *net, ga_layer *l, int i)
{
    (void)net;
    (void)i;
    memcpy(l->out, l->in, sizeof l->out);
    return GA_OK;
}

/* ---- Flatten: the same memory seen as a vector ---- */

static ga_status flatten_infer(ga_net *net, ga_layer *l, int i)
{
    (void)net;
    (void)i;
    l->out[0] = checked_mul(checked_mul(l->in[0], l->in[1]), l->in[2]);
    l->out[1] = l->out[2] = 1;
    return GA_OK;
}

static ga_status pass_backward(ga_net *net, ga_layer *l, int64_t n, int training, int lowest, int need_dx, float *g,
                               float *spare, int *moved)
{
    (void)net, (void)l, (void)n, (void)training, (void)lowest, (void)need_dx, (void)g, (void)spare;
    *moved = 0;
    return GA_OK;
}

const ga_layer_ops ga_flatten_layer = {
    .kind = "flatten",
    .name = "Flatten",
    .infer = flatten_infer,
    .reserve = ga_layer_reserve_none,
    .forward = ga_layer_forward_view,
    .backward = pass_backward,
};

/* ---- Dropout (inverted): the mask is drawn from the counter-based stream ---- */

static ga_status dropout_infer(ga_net *net, ga_layer *l, int i)
{
    if (!(l->spec.rate >= 0.0f && l->spec.rate < 1.0f))
        return ga_fail(GA_ERR_VALUE, "layer %d (Dropout): rate must be in [0, 1), got %g", i, (double)l->spec.rate);
    return same_infer(net, l, i);
}

static ga_status dropout_reserve(ga_net *net, ga_layer *l, int64_t n, int64_t *ws)
{
    GA_TRY(ga_net_alloc_floats(net, &l->mask, n * per_sample(l->out)));
    return ga_layer_reserve_output(net, l, n, ws);
}

static int dropping(const ga_layer *l, int training) { return training && l->spec.rate > 0.0f; }

static ga_status dropout_layer_forward(ga_net *net, ga_layer *l, int64_t n, int training, const float *in, float **y)
{
    if (!dropping(l, training)) {
        *y = (float *)in; /* identity: a view */
        return GA_OK;
    }
    /* mask k of this forward: seed hash(seed, draws + k), draws on the device (core/steps.h) */
    BE(net, dropout_forward(*y, l->mask, in, n * per_sample(l->out), l->spec.rate, ga_net_stream(net, net->seed ^ 0xD50F0A7ull),
                            net->ctl + GA_STEP_DRAWS, net->fwd_draws++));
    return GA_OK;
}

static ga_status dropout_layer_backward(ga_net *net, ga_layer *l, int64_t n, int training, int lowest, int need_dx,
                                  float *g, float *spare, int *moved)
{
    (void)lowest, (void)need_dx, (void)spare;
    *moved = 0;
    if (dropping(l, training))
        BE(net, mul(g, g, l->mask, n * per_sample(l->out)));
    return GA_OK;
}

const ga_layer_ops ga_dropout_layer = {
    .kind = "dropout",
    .name = "Dropout",
    .keys = {"rate"},
    .infer = dropout_infer,
    .reserve = dropout_reserve,
    .forward = dropout_layer_forward,
    .backward = dropout_layer_backward,
};

/* ---- an activation on its own (ReLU, Activation, LeakyReLU, ELU): its input
 * is its z, so gelu and silu need no extra buffer ---- */

static ga_status activation_layer_forward(ga_net *net, ga_layer *l, int64_t n, int training, const float *in,
                                          float **y)
{
    (void)training;
    BE(net, act_forward(*y, in, n * per_sample(l->out), l->spec.act));
    return GA_OK;
}

static ga_status activation_layer_backward(ga_net *net, ga_layer *l, int64_t n, int training, int lowest,
                                           int need_dx, float *g, float *spare, int *moved)
{
    (void)training, (void)lowest, (void)need_dx, (void)spare;
    *moved = 0;
    const float *t = ga_act_from_output(l->spec.act.kind) ? l->y_seen : l->x_seen;
    BE(net, act_backward(g, t, g, n * per_sample(l->out), l->spec.act));
    return GA_OK;
}

const ga_layer_ops ga_activation_layer = {
    .kind = "activation",
    .name = "Activation",
    .keys = {"activation", "alpha"},
    .infer = same_infer,
    .reserve = ga_layer_reserve_output,
    .forward = activation_layer_forward,
    .backward = activation_layer_backward,
};
