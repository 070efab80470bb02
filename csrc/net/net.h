/* A sequential network on one device: the layer table, its buffers, and the
 * training step (forward, loss, backward, update) as one call.
 *
 * Every kernel goes through net->be (core/backend.h), so the same code trains
 * on the CPU and on a GPU; only the table differs. All buffers live on the
 * device; the host sees only the batch going in and two numbers coming out. */
#ifndef GA_NET_H
#define GA_NET_H

#include <stdint.h>

#include "core/backend.h"

typedef enum {
    GA_LAYER_CONV2D = 0,
    GA_LAYER_MAXPOOL2D,
    GA_LAYER_FLATTEN,
    GA_LAYER_DENSE,
    GA_LAYER_DROPOUT,
    GA_LAYER_ACTIVATION,     /* an activation on its own (ReLU, Activation, LeakyReLU, ELU) */
    GA_LAYER_BATCHNORM,      /* per-channel normalisation, gamma/beta + moving mean/var */
    GA_LAYER_GLOBAL_AVGPOOL, /* (C, H, W) -> (C, 1, 1) */
    GA_LAYER_RES_BEGIN,      /* residual block: remembers its input (the skip) */
    GA_LAYER_RES_END,        /* residual block: y = act(branch + skip (or 1x1 projection of it)) */
    GA_LAYER_AVGPOOL2D,      /* window means, the MaxPool2D geometry */
    GA_LAYER_GLOBAL_MAXPOOL, /* (C, H, W) -> (C, 1, 1) maxima, argmax kept */
    GA_LAYER_KINDS
} ga_layer_kind;

/* The most spec keys a kind reads besides "kind". */
#define GA_LAYER_MAX_KEYS 10

/* A kind's name in a spec ("conv2d", ...) and the spec keys it reads besides
 * "kind" (a list ended by NULL, at most 8); NULL for an unknown kind. */
const char *ga_layer_kind_name(int kind);
const char *const *ga_layer_kind_keys(int kind);

typedef struct ga_layer_ops ga_layer_ops; /* net/layer.h: what each kind does */

/* Residual blocks are brackets in the linear table: RES_BEGIN, the branch's
 * layers, RES_END (nesting allowed). Forward: RES_BEGIN is a view of its input;
 * RES_END adds that input (through a 1x1 convolution with stride when
 * `projection` is on) to the branch output and applies its activation.
 * Backward: RES_END passes its gradient to the branch unchanged and keeps the
 * skip's gradient (through the projection) in `dskip`; RES_BEGIN adds it. */
enum { GA_PROJ_NONE = 0, GA_PROJ_YES = 1, GA_PROJ_AUTO = 2 };

typedef struct {
    int kind;                     /* ga_layer_kind */
    int64_t units;                /* conv filters, dense units */
    int64_t kernel_h, kernel_w;   /* conv kernel; pool window (kernel_h) */
    int64_t stride, pad;          /* conv and pool */
    ga_act act;                   /* conv, dense, residual end (fused), activation layer */
    int use_bias;                 /* conv and dense */
    int kernel;                   /* conv: the algorithm, a GA_VARIANT_* or GA_CONV_AUTO */
    float rate;                   /* dropout */
    float momentum, eps;          /* batch norm (Keras: 0.99, 1e-3) */
    int projection;               /* residual end: GA_PROJ_* (AUTO: iff shapes differ);
                                     stride 0 = inferred, use_bias for the projection */
} ga_layer_spec;

/* One named array of a layer's weights or state, as get_weights() shows it:
 * where it lives (the parameter or the state block), its offset and shape. */
enum { GA_BLOCK_PARAMS = 0, GA_BLOCK_STATE = 1 };
#define GA_MAX_SLOTS 4
typedef struct {
    const char *name;             /* "kernel", "bias", "gamma", "moving_mean", ... */
    int block;                    /* GA_BLOCK_* */
    int ndim;
    int64_t off;                  /* in floats, inside its block */
    int64_t shape[4];
} ga_slot;

typedef struct {
    ga_layer_spec spec;
    const ga_layer_ops *ops;      /* the kind's operations (csrc/net/layers/) */
    int64_t in[3], out[3];        /* per-sample (C, H, W); vectors are (F, 1, 1) */
    int64_t w_off, nw, b_off, nb; /* weights and bias inside the parameter block */
    float *y;                     /* output buffer (cap samples); NULL for views */
    float *col;                   /* conv: im2col of the input, kept for backward */
    int32_t *arg;                 /* max-pool, global max-pool: argmax indices */
    float *mask;                  /* dropout: the scaled keep mask */
    float *z;                     /* the pre-activation, kept when the activation's
                                     derivative needs it (gelu, silu: ga_act_needs_z) */
    const float *x_seen;          /* input and output of the last forward */
    float *y_seen;
    int trainable;                /* weights updated, their gradients computed (default 1) */
    int match;                    /* residual: index of the matching begin / end */
    int proj;                     /* residual end: 1 when the skip goes through a 1x1 conv */
    int64_t proj_stride;          /* residual end: stride of that conv */
    int64_t skip[3];              /* residual end: per-sample shape of the skip */
    float *dskip;                 /* residual end: gradient of the skip (cap samples) */
    int64_t s_off, ns;            /* batch norm: moving mean, variance in the state block */
    int64_t a_off;                /* batch norm: batch mean, invstd of the last forward in aux */
    int variant;                  /* conv: the algorithm its last forward ran (GA_VARIANT_*;
                                     GA_CONV_AUTO before the first forward measured it) */
    int fused_pool;               /* conv: runs with the max pool after it as one kernel
                                     (its own output is never stored; y is NULL) */
    int nslots;                   /* its weights and state, in get_weights() order */
    ga_slot slots[GA_MAX_SLOTS];
} ga_layer;

enum { GA_OPT_SGD = 0, GA_OPT_ADAM = 1 };

typedef struct {
    int kind;
    float lr, momentum, beta1, beta2, eps, weight_decay;
    int nesterov;
} ga_optimizer;

typedef struct ga_net {
    const ga_backend *be;
    int device_index;
    int nlayers;
    ga_layer *layers;
    int64_t in[3];
    int64_t classes;
    int64_t nparams;
    int64_t footprint;      /* largest buffer, in floats per sample (checked against overflow) */
    float *params, *grads;  /* device: all weights, then all gradients, same layout */
    float *opt1, *opt2;     /* device: momentum / Adam m and v */
    int64_t nstate;
    float *state;           /* device: non-trainable state (batch-norm moving mean, variance) */
    float *aux;             /* device: batch-norm statistics of the last forward */
    int64_t naux;
    int64_t *ranges;        /* host: nranges (offset, count) runs of trainable parameters */
    int nranges;
    int64_t ntrainable;     /* trainable parameters (sum of the runs) */
    int lowest;             /* lowest layer with trainable weights (-1: none): backward stops there */
    int last_training;      /* mode of the last forward (for ga_net_backward) */
    int64_t last_n;
    ga_optimizer opt;
    int64_t t;              /* optimizer steps taken */
    uint64_t seed, draws;   /* dropout: seed and masks drawn so far */
    /* activation buffers, sized for `cap` samples */
    int64_t cap;
    float *x;
    int32_t *labels;
    float *grad_a, *grad_b, *ws, *stats;
    /* host, only when the backend has host_alloc (a GPU): pinned staging for one
     * batch of `cap` samples, the input (cap C H W floats) then the labels (cap
     * int32). The batch is copied here and sent with to_device_async, so the
     * copy runs on the device's stream instead of as a pageable (blocking) copy. */
    void *stage;
    int staged;             /* 1 while a copy out of `stage` may still be in flight
                               (set when queued, cleared by the call's read-back) */
} ga_net;

ga_status ga_net_create(ga_net **out, const ga_backend *be, int device_index,
                        const ga_layer_spec *specs, int nlayers, const int64_t in_shape[3],
                        uint64_t seed);
void ga_net_destroy(ga_net *net);

/* Replaces the optimizer and clears its state (momentum, Adam moments, step). */
ga_status ga_net_set_optimizer(ga_net *net, const ga_optimizer *opt);
/* A new learning rate for the optimizer in place; its moments and step count stay
 * (learning-rate schedules). */
ga_status ga_net_set_learning_rate(ga_net *net, float lr);

/* x_host (n, C, H, W), labels_host (n) in [0, classes): one SGD/Adam step.
 * loss = mean loss of the batch before the update, correct = right argmaxes. */
ga_status ga_net_train_step(ga_net *net, const float *x_host, const int32_t *labels_host,
                            int64_t n, float *loss, int64_t *correct);

/* Inference (dropout off): logits_host (n, classes). */
ga_status ga_net_predict(ga_net *net, const float *x_host, int64_t n, float *logits_host);

/* Inference loss: *loss_sum = sum of the n losses, *correct = right argmaxes. */
ga_status ga_net_evaluate(ga_net *net, const float *x_host, const int32_t *labels_host,
                          int64_t n, double *loss_sum, int64_t *correct);

/* Host copies of the parameter block (nparams floats) and optimizer state. */
ga_status ga_net_get_params(ga_net *net, float *host);
ga_status ga_net_set_params(ga_net *net, const float *host);

/* Host copies of the non-trainable state block (nstate floats). */
ga_status ga_net_get_state(ga_net *net, float *host);
ga_status ga_net_set_state(ga_net *net, const float *host);

/* flags (nlayers): 1 = the layer's weights train. The optimizer then updates
 * only the trainable runs of the parameter block; frozen layers skip their
 * weight gradients (frozen batch norm runs in inference mode, as in Keras), and
 * backward stops at the lowest trainable layer. */
ga_status ga_net_set_trainable(ga_net *net, const int *flags);

/* For gradient checks: forward of x_host (n, C, H, W) in the given mode
 * (training: dropout on, batch norm on batch statistics and updating the
 * moving ones), out_host (n, classes) the last layer's output. */
ga_status ga_net_forward(ga_net *net, const float *x_host, int64_t n, int training, float *out_host);
/* After ga_net_forward with the same n: backward from dout_host (n, classes);
 * dx_host (n, C, H, W) (may be NULL) the input gradient, grads_host (nparams,
 * may be NULL) the parameter gradients (zero for frozen layers). */
ga_status ga_net_backward(ga_net *net, int64_t n, const float *dout_host, float *dx_host,
                          float *grads_host);

#endif
