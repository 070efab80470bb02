/* Dense: y = act(x W^T + b) with the activation fused (gelu and silu keep z:
 * layer.h), W (units, in features), the input read in C, H, W order. */
#include "net/layer.h"

static ga_status infer(ga_net *net, ga_layer *l, int i)
{
    (void)net;
    if (l->spec.units <= 0)
        return ga_fail(GA_ERR_VALUE, "layer %d (Dense): units must be positive", i);
    l->out[0] = l->spec.units;
    l->out[1] = l->out[2] = 1;
    l->nw = checked_mul(l->spec.units, checked_mul(checked_mul(l->in[0], l->in[1]), l->in[2]));
    l->nb = l->spec.use_bias ? l->spec.units : 0;
    return GA_OK;
}

static void describe(ga_layer *l) { ga_layer_kernel_bias_slots(l, 2, l->spec.units, per_sample(l->in), 0, 0); }

static void init(const ga_net *net, const ga_layer *l, int i, float *host)
{
    ga_layer_glorot(net, l, i, (double)per_sample(l->in), (double)l->spec.units, host);
}

static ga_status reserve(ga_net *net, ga_layer *l, int64_t n, int64_t *ws)
{
    GA_TRY(ga_layer_reserve_output(net, l, n, ws));
    return ga_layer_reserve_z(net, l, n);
}

static ga_status forward(ga_net *net, ga_layer *l, int64_t n, int training, const float *in, float **y)
{
    (void)training;
    const int64_t fin = per_sample(l->in), units = l->spec.units;
    const float *b = layer_b(net, l);
    const ga_act act = ga_act_fused(l->spec.act);
    float *out = ga_act_target(l, *y);
    BE(net, gemm(out, in, layer_w(net, l), 0, 1, n, units, fin, fin, fin, units, 1.0f, 0.0f, GA_VARIANT_FAST | net->precision));
    if (b || act.kind != GA_ACT_NONE)
        BE(net, bias_act(out, b, n, units, act));
    return ga_layer_finish_act(net, l, n * units, *y);
}

static ga_status backward(ga_net *net, ga_layer *l, int64_t n, int training, int lowest, int need_dx, float *g,
                          float *spare, int *moved)
{
    (void)training;
    (void)lowest;
    const int64_t fin = per_sample(l->in), units = l->spec.units;
    float *dw = layer_dw(net, l), *db = layer_db(net, l);
    if (l->spec.act.kind != GA_ACT_NONE)
        BE(net, act_backward(g, ga_act_input(l), g, n * units, l->spec.act));
    if (dw) {
        BE(net, gemm(dw, g, l->x_seen, 1, 0, units, fin, n, units, fin, fin, 1.0f, 0.0f, GA_VARIANT_FAST | net->precision));
        if (db)
            BE(net, sum_rows(db, g, n, units));
    }
    if (need_dx)
        BE(net, gemm(spare, g, layer_w(net, l), 0, 0, n, fin, units, units, fin, fin, 1.0f, 0.0f, GA_VARIANT_FAST | net->precision));
    *moved = need_dx;
    return GA_OK;
}

const ga_layer_ops ga_dense_layer = {
    .kind = "dense",
    .name = "Dense",
    .keys = {"units", "activation", "alpha", "use_bias"},
    .infer = infer,
    .describe = describe,
    .init = init,
    .reserve = reserve,
    .forward = forward,
    .backward = backward,
};
