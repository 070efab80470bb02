/* The layer interface inside csrc/net/: each layer kind is one file in
 * csrc/net/layers/ that fills a ga_layer_ops table; net.c runs every layer
 * through its table and knows no kind by name. Internal to csrc/net/. */
#ifndef GA_NET_LAYER_H
#define GA_NET_LAYER_H

#include <stdint.h>

#include "core/rng.h"
#include "net/net.h"

struct ga_layer_ops {
    const char *kind;    /* the spec's "kind" */
    const char *name;    /* the Keras class, for messages */
    const char *keys[GA_LAYER_MAX_KEYS]; /* the spec keys it reads besides "kind"; others are errors */
    /* 1 when l runs together with the layer after it (called with l + 1 set up,
     * when fusion is allowed); NULL: never. */
    int (*fuse_next)(const ga_net *net, const ga_layer *l);
    /* From l->in and l->spec: l->out, l->nw, l->nb (weights, bias floats), and
     * any state (ga_net_add_state) or batch statistics (ga_net_add_aux). */
    ga_status (*infer)(ga_net *net, ga_layer *l, int i);
    /* After the offsets are known: l->slots (ga_layer_add_slot), in get_weights() order. */
    void (*describe)(ga_layer *l);
    /* Initial weights and bias into host (the whole parameter block); NULL: none. */
    void (*init)(const ga_net *net, const ga_layer *l, int i, float *host);
    /* Largest buffer per sample besides the output, in floats (-1: too large); NULL: 0. */
    int64_t (*footprint)(const ga_layer *l);
    /* Buffers for n samples (l->y unless the output is a view); *ws = the shared
     * scratch it needs, in floats. */
    ga_status (*reserve)(ga_net *net, ga_layer *l, int64_t n, int64_t *ws);
    /* *y = output of the layer for input `in` (l->y, or a view of `in`). */
    ga_status (*forward)(ga_net *net, ga_layer *l, int64_t n, int training, const float *in, float **y);
    /* g holds the gradient of the layer's output. Either works in place on g
     * (*moved = 0) or writes the input's gradient into spare (*moved = 1; only
     * when need_dx). lowest: the lowest layer backward reaches. */
    ga_status (*backward)(ga_net *net, ga_layer *l, int64_t n, int training, int lowest, int need_dx, float *g,
                          float *spare, int *moved);
};

/* The table of every kind, indexed by ga_layer_kind (net.c). */
extern const ga_layer_ops *const ga_layer_table[GA_LAYER_KINDS];

/* A backend keeps its own last-error text (the CUDA one lives in another
 * shared object): copy it into ours so the binding can raise it. */
ga_status ga_net_backend_failed(const ga_backend *be, ga_status st);

#define BE(net, call)                                       \
    do {                                                    \
        ga_status be_st_ = (net)->be->call;                 \
        if (be_st_ != GA_OK)                                \
            return ga_net_backend_failed((net)->be, be_st_); \
    } while (0)

/* No buffer may hold more than 2^40 floats (4 TiB): far beyond any real network,
 * and small enough that byte counts never overflow. */
#define GA_MAX_ELEMS ((int64_t)1 << 40)
#define GA_MAX_DIM ((int64_t)INT32_MAX)

static inline int64_t per_sample(const int64_t s[3]) { return s[0] * s[1] * s[2]; }

/* The stream seed a random layer hands its kernel: `base` itself unless the net's
 * rng_salt (a data-parallel rank) moves it to an independent stream. */
static inline uint64_t ga_net_stream(const ga_net *net, uint64_t base)
{
    return net->rng_salt ? ga_rng_hash(base, net->rng_salt) : base;
}

/* a * b, or -1 when either is negative or the product passes GA_MAX_ELEMS. */
static inline int64_t checked_mul(int64_t a, int64_t b)
{
    int64_t r;
    if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r) || r > GA_MAX_ELEMS)
        return -1;
    return r;
}

static inline int same_shape(const int64_t a[3], const int64_t b[3])
{
    return a[0] == b[0] && a[1] == b[1] && a[2] == b[2];
}

/* The layer keeps its pre-activation z (gelu, silu): its forward runs the
 * op linear into l->z, then the activation into y; backward reads z. The
 * other kinds are fused into the op's epilogue and differentiated from y. */
static inline int ga_act_needs_z(ga_act act) { return act.kind != GA_ACT_NONE && !ga_act_from_output(act.kind); }
/* What act_backward reads: z or the output of the last forward. */
static inline const float *ga_act_input(const ga_layer *l) { return ga_act_needs_z(l->spec.act) ? l->z : l->y_seen; }
/* The layer's op runs with this activation fused (linear when z is kept). */
static inline ga_act ga_act_fused(ga_act act)
{
    return ga_act_needs_z(act) ? (ga_act){GA_ACT_NONE, 0.0f} : act;
}
/* Where the op writes: l->z when it is kept, else the output y. */
static inline float *ga_act_target(ga_layer *l, float *y) { return ga_act_needs_z(l->spec.act) ? l->z : y; }
/* Reserve l->z for n samples when the activation needs it. */
ga_status ga_layer_reserve_z(ga_net *net, ga_layer *l, int64_t n);
/* After the op wrote ga_act_target with ga_act_fused: y = act(z) when z is kept. */
ga_status ga_layer_finish_act(ga_net *net, ga_layer *l, int64_t count, float *y);

static inline const float *layer_w(const ga_net *net, const ga_layer *l) { return net->params + l->w_off; }
static inline const float *layer_b(const ga_net *net, const ga_layer *l)
{
    return l->nb ? net->params + l->b_off : NULL;
}
/* Gradients of a trainable layer's weights and bias (NULL when frozen). */
static inline float *layer_dw(const ga_net *net, const ga_layer *l) { return l->trainable ? net->grads + l->w_off : NULL; }
static inline float *layer_db(const ga_net *net, const ga_layer *l)
{
    return l->trainable && l->nb ? net->grads + l->b_off : NULL;
}

ga_status ga_net_alloc_floats(ga_net *net, float **p, int64_t count);
/* Shared entries: reserve only the output (l->y); reserve nothing (a view);
 * forward as a view of the input. */
ga_status ga_layer_reserve_output(ga_net *net, ga_layer *l, int64_t n, int64_t *ws);
ga_status ga_layer_reserve_none(ga_net *net, ga_layer *l, int64_t n, int64_t *ws);
ga_status ga_layer_forward_view(ga_net *net, ga_layer *l, int64_t n, int training, const float *in, float **y);
void ga_layer_add_slot(ga_layer *l, const char *name, int block, int64_t off, int ndim, int64_t d0, int64_t d1,
                       int64_t d2, int64_t d3);
/* The standard slots: "kernel" (kernel_ndim dims) then "bias" when there is one. */
void ga_layer_kernel_bias_slots(ga_layer *l, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3);
/* Glorot-uniform weights (the Keras default) with these fans, zero bias, from
 * the counter-based stream of layer i: the same seed gives the same net on
 * every device. */
void ga_layer_glorot(const ga_net *net, const ga_layer *l, int i, double fan_in, double fan_out, float *host);
/* The larger of a convolution's forward and backward scratch, in floats. */
int64_t ga_conv_ws_floats(const ga_conv_shape *s);
/* im2col plus GEMM result per sample for a convolution of shape s (n = 1); -1 when too large. */
int64_t ga_conv_footprint(const ga_conv_shape *s);

#endif
