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
    GA_LAYER_RELU
} ga_layer_kind;

typedef struct {
    int kind;                     /* ga_layer_kind */
    int64_t units;                /* conv filters, dense units */
    int64_t kernel_h, kernel_w;   /* conv kernel; pool window (kernel_h) */
    int64_t stride, pad;          /* conv and pool */
    int relu;                     /* ReLU fused after conv or dense */
    int use_bias;                 /* conv and dense */
    float rate;                   /* dropout */
} ga_layer_spec;

typedef struct {
    ga_layer_spec spec;
    int64_t in[3], out[3];        /* per-sample (C, H, W); vectors are (F, 1, 1) */
    int64_t w_off, nw, b_off, nb; /* weights and bias inside the parameter block */
    float *y;                     /* output buffer (cap samples); NULL for views */
    float *col;                   /* conv: im2col of the input, kept for backward */
    int32_t *arg;                 /* max-pool: argmax indices */
    float *mask;                  /* dropout: the scaled keep mask */
    const float *x_seen;          /* input and output of the last forward */
    float *y_seen;
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
    float *params, *grads;  /* device: all weights, then all gradients, same layout */
    float *opt1, *opt2;     /* device: momentum / Adam m and v */
    ga_optimizer opt;
    int64_t t;              /* optimizer steps taken */
    uint64_t seed, draws;   /* dropout: seed and masks drawn so far */
    /* activation buffers, sized for `cap` samples */
    int64_t cap;
    float *x;
    int32_t *labels;
    float *grad_a, *grad_b, *ws, *stats;
} ga_net;

ga_status ga_net_create(ga_net **out, const ga_backend *be, int device_index,
                        const ga_layer_spec *specs, int nlayers, const int64_t in_shape[3],
                        uint64_t seed);
void ga_net_destroy(ga_net *net);

/* Replaces the optimizer and clears its state (momentum, Adam moments, step). */
ga_status ga_net_set_optimizer(ga_net *net, const ga_optimizer *opt);

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

#endif
