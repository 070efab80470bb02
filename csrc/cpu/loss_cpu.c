/* Softmax cross-entropy on the CPU. Shapes in core/backend.h. */
#include "cpu/kernels_cpu.h"

#include <math.h>

#include "cpu/omp_util.h"

/* logits (n, classes), labels (n), stats[0] += sum of losses, stats[1] += correct,
 * dlogits (n, classes) = (softmax - onehot) * grad_scale (skipped when NULL). */
ga_status ga_softmax_xent_cpu(float *stats, float *dlogits, const float *logits,
                              const int32_t *labels, int64_t n, int64_t classes, float grad_scale)
{
    if (n < 0 || classes <= 0)
        return ga_fail(GA_ERR_VALUE, "softmax_xent: need n >= 0 and classes > 0");
    if (!stats || (n > 0 && (!logits || !labels)))
        return ga_fail(GA_ERR_VALUE, "softmax_xent: NULL argument");
    double loss_sum = 0.0;
    int64_t correct = 0, bad_label = -1;
#pragma omp parallel for schedule(static) num_threads(ga_get_num_threads()) \
    reduction(+ : loss_sum, correct) reduction(max : bad_label) if (n * classes >= GA_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float *z = logits + i * classes;
        int32_t label = labels[i];
        if (label < 0 || label >= classes) {
            bad_label = i;
            continue;
        }
        /* argmax, NumPy's rule (np.argmax), the same on the GPU: a NaN is the maximum,
         * so the first NaN wins; otherwise the first maximum wins ties. */
        int64_t best = 0;
        float zmax = z[0];
        for (int64_t j = 1; j < classes && !isnan(zmax); j++)
            if (isnan(z[j]) || z[j] > zmax) {
                zmax = z[j];
                best = j;
            }
        double sum = 0.0;
        for (int64_t j = 0; j < classes; j++)
            sum += exp((double)(z[j] - zmax));
        double log_sum = log(sum);
        loss_sum += log_sum - (double)(z[label] - zmax);
        correct += best == label;
        if (dlogits) {
            float *d = dlogits + i * classes;
            for (int64_t j = 0; j < classes; j++) {
                double p = exp((double)(z[j] - zmax) - log_sum);
                d[j] = (float)(p - (j == label)) * grad_scale;
            }
        }
    }
    if (bad_label >= 0)
        return ga_fail(GA_ERR_VALUE, "label %d of row %lld is outside [0, %lld)",
                       (int)labels[bad_label], (long long)bad_label, (long long)classes);
    stats[0] += (float)loss_sum;
    stats[1] += (float)correct;
    return GA_OK;
}
