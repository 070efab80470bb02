/* Activations as data: the kinds, their names, and their math, written once
 * for every device. The CPU kernels, the CUDA kernels and the emulator build
 * all evaluate ga_act_eval / ga_act_grad from here, so the devices agree by
 * construction and a new kind is one GA_ACT_LIST line and two cases.
 *
 * The derivative of most kinds is a function of the output y, so a layer that
 * fuses the activation into its epilogue keeps only y (ga_act_from_output).
 * GELU and SiLU are not monotone: their derivative needs the pre-activation z,
 * so a training layer keeps z as well, and they are never fused with a max
 * pool (max and activation do not commute). */
#ifndef GA_ACT_H
#define GA_ACT_H

#include <math.h>
#include <stdint.h>

#if defined(__CUDACC__) || (defined(__cplusplus) && defined(GA_CUDA_EMU))
#define GA_HD __host__ __device__ inline
#else
#define GA_HD static inline
#endif

/* Every kind once: M(enum suffix, name in specs and Python, default alpha,
 * what it computes). The enum, the names, the defaults and the per-kind loops
 * are generated from it. */
#define GA_ACT_LIST(M)                                                        \
    M(NONE, "linear", 0.0f, z)                                                \
    M(RELU, "relu", 0.0f, max(z, 0) (NaN -> 0))                               \
    M(LEAKY_RELU, "leaky_relu", 0.2f, z > 0 ? z : alpha z)                    \
    M(ELU, "elu", 1.0f, z > 0 ? z : alpha (e^z - 1))                          \
    M(TANH, "tanh", 0.0f, tanh z)                                             \
    M(SIGMOID, "sigmoid", 0.0f, 1 / (1 + e^-z))                               \
    M(GELU, "gelu", 0.0f, z/2 (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3))))      \
    M(SILU, "silu", 0.0f, z sigmoid(z) (Keras: swish))

#define GA_ACT_ENUM_(k, name, alpha, math) GA_ACT_##k,
typedef enum { GA_ACT_LIST(GA_ACT_ENUM_) GA_ACT_KINDS } ga_act_kind;
#undef GA_ACT_ENUM_

/* The names, index = ga_act_kind: static const char *n[] = GA_ACT_NAMES. */
#define GA_ACT_NAME_(k, name, alpha, math) name,
#define GA_ACT_NAMES {GA_ACT_LIST(GA_ACT_NAME_)}
/* The default alpha of each kind (as Keras's leaky_relu and elu functions). */
#define GA_ACT_ALPHA_(k, name, alpha, math) alpha,
#define GA_ACT_DEFAULT_ALPHAS {GA_ACT_LIST(GA_ACT_ALPHA_)}

/* A loop per kind: with LOOP(K) defined by the caller,
 *     switch (kind) { GA_ACT_LIST(GA_ACT_CASE) }
 * runs LOOP(GA_ACT_<kind>) with a constant kind, so the switch sits outside the
 * loop and each loop is compiled (and vectorised) for one activation. (A switch
 * inside ga_act_eval / ga_act_grad in a hot loop is not hoisted by the compiler.) */
#define GA_ACT_CASE(k, name, alpha_, math) \
    case GA_ACT_##k:                       \
        LOOP(GA_ACT_##k);                  \
        break;

/* An activation: its kind and its one parameter (the negative slope of
 * leaky_relu, the alpha of elu; unused by the others). Passed by value. */
typedef struct {
    int32_t kind;
    float alpha;
} ga_act;

/* 1 when the derivative can be taken from the output y (no z to keep). */
GA_HD int ga_act_from_output(int kind) { return kind != GA_ACT_GELU && kind != GA_ACT_SILU; }

GA_HD float ga_act_sigmoid(float z) { return 1.0f / (1.0f + expf(-z)); }

#define GA_GELU_C 0.7978845608028654f /* sqrt(2 / pi) */
#define GA_GELU_A 0.044715f

/* y = act(z). */
GA_HD float ga_act_eval(int kind, float alpha, float z)
{
    switch (kind) {
    case GA_ACT_RELU:
        return z > 0.0f ? z : 0.0f;
    case GA_ACT_LEAKY_RELU:
        return z > 0.0f ? z : alpha * z;
    case GA_ACT_ELU:
        return z > 0.0f ? z : alpha * expm1f(z);
    case GA_ACT_TANH:
        return tanhf(z);
    case GA_ACT_SIGMOID:
        return ga_act_sigmoid(z);
    case GA_ACT_GELU:
        return 0.5f * z * (1.0f + tanhf(GA_GELU_C * (z + GA_GELU_A * z * z * z)));
    case GA_ACT_SILU:
        return z * ga_act_sigmoid(z);
    default:
        return z;
    }
}

/* dL/dz from dy = dL/dy and t: the output y for kinds with ga_act_from_output,
 * the pre-activation z for the others. */
GA_HD float ga_act_grad(int kind, float alpha, float t, float dy)
{
    switch (kind) {
    case GA_ACT_RELU:
        return t > 0.0f ? dy : 0.0f;
    case GA_ACT_LEAKY_RELU: /* y > 0 exactly when z > 0 (alpha > 0) */
        return t > 0.0f ? dy : alpha * dy;
    case GA_ACT_ELU: /* for z <= 0, d/dz alpha (e^z - 1) = y + alpha */
        return t > 0.0f ? dy : (t + alpha) * dy;
    case GA_ACT_TANH:
        return (1.0f - t * t) * dy;
    case GA_ACT_SIGMOID:
        return t * (1.0f - t) * dy;
    case GA_ACT_GELU: {
        const float u = GA_GELU_C * (t + GA_GELU_A * t * t * t), th = tanhf(u);
        const float du = GA_GELU_C * (1.0f + 3.0f * GA_GELU_A * t * t);
        return (0.5f * (1.0f + th) + 0.5f * t * (1.0f - th * th) * du) * dy;
    }
    case GA_ACT_SILU: {
        const float s = ga_act_sigmoid(t);
        return s * (1.0f + t * (1.0f - s)) * dy;
    }
    default:
        return dy;
    }
}

#endif
