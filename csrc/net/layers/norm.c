/* BatchNormalization over channels (Keras semantics, core/backend.h): gamma and
 * beta are its weights and bias, the moving mean and variance its state, the
 * batch mean and invstd of the last forward its aux. Frozen, it runs in
 * inference mode in training too, as in Keras. */
#include "net/layer.h"

#include <math.h>
#include <string.h>

static ga_status infer(ga_net *net, ga_layer *l, int i)
{
    const ga_layer_spec *sp = &l->spec;
    const int64_t c = l->in[0];
    if (!(sp->momentum >= 0.0f && sp->momentum <= 1.0f) || !(sp->eps > 0.0f) || !isfinite(sp->eps))
        return ga_fail(GA_ERR_VALUE, "layer %d (BatchNormalization): momentum must be in [0, 1] and epsilon > 0", i);
    memcpy(l->out, l->in, sizeof l->out);
    l->nw = c; /* gamma */
    l->nb = c; /* beta */
    l->ns = 2 * c;
    l->s_off = net->nstate;
    net->nstate += l->ns;
    l->a_off = net->naux;
    net->naux += 2 * c;
    return GA_OK;
}

static void describe(ga_layer *l)
{
    const int64_t c = l->in[0];
    ga_layer_add_slot(l, "gamma", GA_BLOCK_PARAMS, l->w_off, 1, c, 0, 0, 0);
    ga_layer_add_slot(l, "beta", GA_BLOCK_PARAMS, l->b_off, 1, c, 0, 0, 0);
    ga_layer_add_slot(l, "moving_mean", GA_BLOCK_STATE, l->s_off, 1, c, 0, 0, 0);
    ga_layer_add_slot(l, "moving_variance", GA_BLOCK_STATE, l->s_off + c, 1, c, 0, 0, 0);
}

static void init(const ga_net *net, const ga_layer *l, int i, float *host)
{
    (void)net, (void)i;
    for (int64_t j = 0; j < l->nw; j++) /* gamma = 1; beta = 0 (the block starts zeroed) */
        host[l->w_off + j] = 1.0f;
}

static ga_status forward(ga_net *net, ga_layer *l, int64_t n, int training, const float *in, float **y)
{
    const int64_t c = l->in[0], hw = l->in[1] * l->in[2];
    float *save = net->aux + l->a_off, *run = net->state + l->s_off;
    BE(net, batchnorm_forward(*y, save, save + c, run, run + c, in, layer_w(net, l), layer_b(net, l), n, c, hw,
                              l->spec.momentum, l->spec.eps, training && l->trainable));
    return GA_OK;
}

static ga_status backward(ga_net *net, ga_layer *l, int64_t n, int training, int lowest, int need_dx, float *g,
                          float *spare, int *moved)
{
    (void)lowest;
    const int64_t c = l->in[0], hw = l->in[1] * l->in[2];
    const float *save = net->aux + l->a_off;
    *moved = need_dx;
    if (l->trainable || need_dx)
        BE(net, batchnorm_backward(need_dx ? spare : NULL, layer_dw(net, l), layer_db(net, l), g, l->x_seen,
                                   layer_w(net, l), save, save + c, n, c, hw, training && l->trainable));
    return GA_OK;
}

const ga_layer_ops ga_batchnorm_layer = {
    .kind = "batchnorm",
    .name = "BatchNormalization",
    .keys = {"momentum", "eps"},
    .infer = infer,
    .describe = describe,
    .init = init,
    .reserve = ga_layer_reserve_output,
    .forward = forward,
    .backward = backward,
};
