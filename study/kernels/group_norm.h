/* GroupNorm over channels_last float32 tensors: the statistics of the forward
 * and the coefficients of the backward, shared by group_norm.c and
 * group_norm_pool_gelu.c.
 *
 * x is (batch, HW, C) in memory (an NCHW tensor stored channels_last); the
 * C channels form G groups of C/G. Sums are of centred values (no
 * cancellation). Work is shared out by OpenMP (see selective_scan.c). */
#ifndef STUDY_KERNELS_GROUP_NORM_H
#define STUDY_KERNELS_GROUP_NORM_H

#include <math.h>
#include <stdlib.h>

#include "common.h"

/* Channel counts the models use: a constant C lets the compiler unroll and
 * vectorise the per-pixel loops, which a runtime trip count of 8 does not. */
#define DISPATCH_C(call, C)                                  \
    switch (C) {                                             \
        case 4: call(4); break;                              \
        case 8: call(8); break;                              \
        case 12: call(12); break;                            \
        case 16: call(16); break;                            \
        case 24: call(24); break;                            \
        case 32: call(32); break;                            \
        case 48: call(48); break;                            \
        case 64: call(64); break;                            \
        default: call(C);                                    \
    }

/* Per-channel sums over HW pixels of a - ca and of (a - ca) (b - cb), where ca
 * and cb hold a centre per channel (b = NULL: b is a and cb is ca). Centred
 * near the mean, the sums carry no cancellation for the variance or the
 * gradient to lose. LANES pixels are summed side by side (independent
 * dependency chains) in float over blocks of BLOCK pixels, each block then
 * added into the double totals. */
#define LANES 4
#define BLOCK 256
static inline __attribute__((always_inline)) void channel_sums(const float *restrict a, const float *restrict ca,
                                                               const float *restrict b, const float *restrict cb,
                                                               int64_t HW, int64_t C, double *restrict sum_a,
                                                               double *restrict sum_ab) {
    float acc[LANES * C], acc_ab[LANES * C], centre_a[LANES * C], centre_b[LANES * C];
    for (int64_t j = 0; j < LANES * C; j++) {
        centre_a[j] = ca[j % C];
        centre_b[j] = (b ? cb : ca)[j % C];
    }
    if (!b) b = a;
    for (int64_t c = 0; c < C; c++) sum_a[c] = sum_ab[c] = 0.0;
    for (int64_t start = 0; start < HW; start += BLOCK) {
        const int64_t stop = start + BLOCK < HW ? start + BLOCK : HW;
        for (int64_t j = 0; j < LANES * C; j++) acc[j] = acc_ab[j] = 0.0f;
        int64_t p = start;
        for (; p + LANES <= stop; p += LANES) {
            const float *ap = a + p * C, *bp = b + p * C;
            for (int64_t j = 0; j < LANES * C; j++) {
                const float da = ap[j] - centre_a[j];
                acc[j] += da;
                acc_ab[j] += da * (bp[j] - centre_b[j]);
            }
        }
        for (; p < stop; p++) {
            const float *ap = a + p * C, *bp = b + p * C;
            for (int64_t c = 0; c < C; c++) {
                const float da = ap[c] - centre_a[c];
                acc[c] += da;
                acc_ab[c] += da * (bp[c] - centre_b[c]);
            }
        }
        for (int64_t j = 0; j < LANES * C; j++) {
            sum_a[j % C] += acc[j];
            sum_ab[j % C] += acc_ab[j];
        }
    }
}

/* Work is shared out in slices of SLICE pixels of one batch row, so that one
 * image (inference) still uses every thread. Each slice's sums go to its own
 * slot and the slots are added in order: the result does not depend on the
 * number of threads. */
#define SLICE 4096

/* Work item -> its batch row, first pixel and number of pixels. */
static inline void slice_bounds(int64_t item, int64_t slices, int64_t HW, int64_t *row, int64_t *start,
                                int64_t *count) {
    *row = item / slices;
    *start = (item % slices) * SLICE;
    *count = HW - *start < SLICE ? HW - *start : SLICE;
}

/* A row's per-channel pair of sums: its slices' pairs added in order. */
static void add_slices(const double *sums, int64_t slices, int64_t C, double *total) {
    for (int64_t c = 0; c < 2 * C; c++) total[c] = 0.0;
    for (int64_t s = 0; s < slices; s++)
        for (int64_t c = 0; c < 2 * C; c++) total[c] += sums[s * 2 * C + c];
}

/* Forward statistics: mean, rstd (batch, G) and, per row, each channel's
 * scale then shift (coef: batch x 2C) such that the output is x scale + shift.
 * Returns nonzero when a work buffer cannot be allocated. */
static int forward_statistics(const float *x, const float *gamma, const float *beta, float *mean, float *rstd,
                              float *coef, int64_t batch, int64_t HW, int64_t C, int64_t G, double eps) {
    const int64_t per_group = C / G, slices = (HW + SLICE - 1) / SLICE, items = batch * slices;
    const double count = (double)HW * per_group;
    double *sums = malloc(sizeof(double) * items * 2 * C);  /* per slice: sum, then sum of squares */
    if (!sums) return 1;
#pragma omp parallel
    {
#pragma omp for schedule(static)
        for (int64_t item = 0; item < items; item++) {
            int64_t b, start, n;
            slice_bounds(item, slices, HW, &b, &start, &n);
            const float *xs = x + (b * HW + start) * C, *first = x + b * HW * C;  /* centre: the row's first pixel */
            double *sum = sums + item * 2 * C, *sq = sum + C;
#define SUMS(K) channel_sums(xs, first, NULL, NULL, n, K, sum, sq)
            DISPATCH_C(SUMS, C)
#undef SUMS
        }
#pragma omp for schedule(static)
        for (int64_t b = 0; b < batch; b++) {
            double total[2 * C];
            add_slices(sums + b * slices * 2 * C, slices, C, total);
            float *scale = coef + b * 2 * C, *shift = scale + C;
            const float *first = x + b * HW * C;
            for (int64_t g = 0; g < G; g++) {
                /* channel c's sums are of x - first[c]: the group's mean, then its spread about it */
                double m = 0.0, ss = 0.0;
                for (int64_t c = g * per_group; c < (g + 1) * per_group; c++) m += first[c] * (double)HW + total[c];
                m /= count;
                for (int64_t c = g * per_group; c < (g + 1) * per_group; c++) {
                    const double k = first[c] - m;
                    ss += total[C + c] + 2.0 * k * total[c] + HW * k * k;
                }
                const double var = fmax(ss / count, 0.0), r = 1.0 / sqrt(var + eps);
                mean[b * G + g] = (float)m;
                rstd[b * G + g] = (float)r;
                for (int64_t c = g * per_group; c < (g + 1) * per_group; c++) {
                    const double k = r * (gamma ? gamma[c] : 1.0f);
                    scale[c] = (float)k;
                    shift[c] = (float)((beta ? beta[c] : 0.0f) - m * k);
                }
            }
        }
    }
    free(sums);
    return 0;
}

/* Backward coefficients of one row from its per-channel sums s1 = sum of dy and
 * s2 = sum of dy (x - mean): dx = alpha dy + beta_x x + kappa (coef: alpha,
 * beta_x, kappa, C each), and the row's parts of dgamma and dbeta (may be NULL). */
static void backward_coefficients(const double *s1, const double *s2, const float *mean, const float *rstd,
                                  const float *gamma, float *coef, float *dgamma, float *dbeta, int64_t HW,
                                  int64_t C, int64_t G) {
    const int64_t per_group = C / G;
    const double count = (double)HW * per_group;
    float *alpha = coef, *beta_x = coef + C, *kappa = coef + 2 * C;
    for (int64_t g = 0; g < G; g++) {
        const double m = mean[g], r = rstd[g];
        double m1 = 0.0, m2 = 0.0;  /* means over the group of dxhat and of dxhat * (x - mean) */
        for (int64_t c = g * per_group; c < (g + 1) * per_group; c++) {
            const double w = gamma ? gamma[c] : 1.0f;
            if (dgamma) dgamma[c] = (float)(s2[c] * r);
            if (dbeta) dbeta[c] = (float)s1[c];
            m1 += w * s1[c];
            m2 += w * s2[c];
        }
        m1 /= count;
        m2 /= count;
        /* dx = r (w dy - m1) - r^3 m2 (x - mean) = alpha dy + beta_x x + kappa */
        const double r3m2 = r * r * r * m2;
        for (int64_t c = g * per_group; c < (g + 1) * per_group; c++) {
            alpha[c] = (float)(r * (gamma ? gamma[c] : 1.0f));
            beta_x[c] = (float)(-r3m2);
            kappa[c] = (float)(r3m2 * m - r * m1);
        }
    }
}

/* backward_coefficients for row b, from the per-slice sums (slices per row). */
static void row_backward_coefficients(const double *sums, int64_t slices, int64_t b, const float *mean,
                                      const float *rstd, const float *gamma, float *coef, float *dgamma,
                                      float *dbeta, int64_t HW, int64_t C, int64_t G) {
    double total[2 * C];
    add_slices(sums + b * slices * 2 * C, slices, C, total);
    backward_coefficients(total, total + C, mean + b * G, rstd + b * G, gamma, coef + b * 3 * C,
                          dgamma ? dgamma + b * C : NULL, dbeta ? dbeta + b * C : NULL, HW, C, G);
}

#endif
