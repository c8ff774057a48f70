/* GroupNorm, then 2x2 max-pooling (stride 2), then exact GELU, in one kernel:
 * encoder I-V of UltraLBM-UNet (and its LiteUNet relatives) apply these three
 * to every full-resolution map. Separately they write the normalised map,
 * pool it with int64 indices, and in the backward zero-fill and scatter a
 * full-resolution gradient; here the forward writes only the pooled output,
 * GELU's slope there (when a backward will need it) and the index of each
 * window's maximum (int32, which vectorises with the floats where bytes did
 * not), and the backward reads the pooled gradient and writes the input
 * gradient once.
 *
 * Max-pooling follows PyTorch: windows scanned row by row, the first maximum
 * wins, NaN wins. H and W must be even. Layout as in group_norm.h; outputs
 * are (batch, H/2, W/2, C) channels_last. */
#include <stdint.h>
#include <string.h>

#include "group_norm.h"

#define INV_SQRT2 0.70710678118654752f
#define INV_SQRT_2PI 0.39894228040143268f

/* erf by Abramowitz and Stegun 7.1.26 (absolute error below 1.5e-7). */
static inline float erf_approx(float x) {
    const float ax = fabsf(x), t = 1.0f / (1.0f + 0.3275911f * ax);
    const float poly =
        t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
    return copysignf(1.0f - poly * exp_approx(-ax * ax), x);
}


/* One output row: rows r0 = 2 oh and r1 = 2 oh + 1 of the input. GELU(v) =
 * v Phi(v), its slope Phi(v) + v phi(v) (slope = NULL: not needed). */
static inline __attribute__((always_inline)) void pool_row(const float *restrict r0, const float *restrict r1,
                                                           float *restrict out, float *restrict slope,
                                                           int32_t *restrict which, int64_t OW, int64_t C,
                                                           const float *restrict scale,
                                                           const float *restrict shift) {
    for (int64_t ow = 0; ow < OW; ow++) {
        const float *p0 = r0 + 2 * ow * C, *p1 = p0 + C, *p2 = r1 + 2 * ow * C, *p3 = p2 + C;
        for (int64_t c = 0; c < C; c++) {
            const float v0 = p0[c] * scale[c] + shift[c], v1 = p1[c] * scale[c] + shift[c];
            const float v2 = p2[c] * scale[c] + shift[c], v3 = p3[c] * scale[c] + shift[c];
            float best = v0;
            int k = 0;
            if (v1 > best || v1 != v1) { best = v1; k = 1; }
            if (v2 > best || v2 != v2) { best = v2; k = 2; }
            if (v3 > best || v3 != v3) { best = v3; k = 3; }
            const float cdf = 0.5f * (1.0f + erf_approx(best * INV_SQRT2));
            which[ow * C + c] = k;
            out[ow * C + c] = best * cdf;
            if (slope) slope[ow * C + c] = cdf + best * INV_SQRT_2PI * exp_approx(-0.5f * best * best);
        }
    }
}

/* out, slope (or NULL): (batch, H/2, W/2, C) float; which: same, int32; mean, rstd: (batch, G). */
int group_norm_pool_gelu_forward(const float *x, const float *gamma, const float *beta, float *out, float *slope,
                                 int32_t *which, float *mean, float *rstd, int64_t batch, int64_t H, int64_t W,
                                 int64_t C, int64_t G, double eps) {
    const int64_t OH = H / 2, OW = W / 2;
    float *coef = malloc(sizeof(float) * batch * 2 * C);  /* per row: scale, then shift */
    if (!coef || forward_statistics(x, gamma, beta, mean, rstd, coef, batch, H * W, C, G, eps)) {
        free(coef);
        return 1;
    }
#pragma omp parallel for schedule(static)
    for (int64_t item = 0; item < batch * OH; item++) {
        const int64_t b = item / OH, oh = item % OH, o = item * OW * C;
        const float *r0 = x + ((b * H + 2 * oh) * W) * C, *r1 = r0 + W * C;
        const float *scale = coef + b * 2 * C, *shift = scale + C;
#define ROW(K) pool_row(r0, r1, out + o, slope ? slope + o : NULL, which + o, OW, K, scale, shift)
        DISPATCH_C(ROW, C)
#undef ROW
    }
    free(coef);
    return 0;
}

/* Pass 1 of the backward on one output row: the gradient reaching each window's
 * maximum (kept in grad_max), and its sums: s1 of it, s2 of it times x - mean. */
static inline __attribute__((always_inline)) void gather_row(
    const float *restrict r0, const float *restrict r1, const float *restrict gout, const float *restrict slope,
    const int32_t *restrict which, float *restrict grad_max, int64_t OW, int64_t C, const float *restrict centre,
    double *restrict s1, double *restrict s2) {
    float acc1[C], acc2[C];
    for (int64_t c = 0; c < C; c++) acc1[c] = acc2[c] = 0.0f;
    for (int64_t ow = 0; ow < OW; ow++) {
        const float *p0 = r0 + 2 * ow * C, *p1 = p0 + C, *p2 = r1 + 2 * ow * C, *p3 = p2 + C;
        for (int64_t c = 0; c < C; c++) {
            const int64_t o = ow * C + c;
            const float g = gout[o] * slope[o];
            const int k = which[o];
            const float xk = k == 0 ? p0[c] : k == 1 ? p1[c] : k == 2 ? p2[c] : p3[c];
            grad_max[o] = g;
            acc1[c] += g;
            acc2[c] += g * (xk - centre[c]);
        }
    }
    for (int64_t c = 0; c < C; c++) {
        s1[c] = acc1[c];
        s2[c] = acc2[c];
    }
}

/* Pass 2 on one output row: dx = beta_x x + kappa everywhere, plus alpha times
 * the gradient at each window's maximum. */
static inline __attribute__((always_inline)) void scatter_row(
    const float *restrict r0, const float *restrict r1, float *restrict d0, float *restrict d1,
    const float *restrict grad_max, const int32_t *restrict which, int64_t OW, int64_t C,
    const float *restrict alpha, const float *restrict beta_x, const float *restrict kappa) {
    for (int64_t ow = 0; ow < OW; ow++) {
        const int64_t i0 = 2 * ow * C, i1 = i0 + C;
        for (int64_t c = 0; c < C; c++) {
            const int64_t o = ow * C + c;
            const float lift = alpha[c] * grad_max[o];
            const int k = which[o];
            d0[i0 + c] = beta_x[c] * r0[i0 + c] + kappa[c] + (k == 0 ? lift : 0.0f);
            d0[i1 + c] = beta_x[c] * r0[i1 + c] + kappa[c] + (k == 1 ? lift : 0.0f);
            d1[i0 + c] = beta_x[c] * r1[i0 + c] + kappa[c] + (k == 2 ? lift : 0.0f);
            d1[i1 + c] = beta_x[c] * r1[i1 + c] + kappa[c] + (k == 3 ? lift : 0.0f);
        }
    }
}

/* dgamma, dbeta: (batch, C) per-row parts (may be NULL), summed over rows by the caller. */
int group_norm_pool_gelu_backward(const float *gout, const float *x, const float *slope, const int32_t *which,
                                  const float *mean, const float *rstd, const float *gamma, float *dx,
                                  float *dgamma, float *dbeta, int64_t batch, int64_t H, int64_t W, int64_t C,
                                  int64_t G) {
    const int64_t OH = H / 2, OW = W / 2, per_group = C / G, items = batch * OH;
    double *sums = malloc(sizeof(double) * items * 2 * C);  /* per output row: s1, then s2 */
    float *coef = malloc(sizeof(float) * batch * 3 * C);     /* per batch row: alpha, beta_x, kappa */
    float *grad_max = malloc(sizeof(float) * items * OW * C);
    if (!sums || !coef || !grad_max) { free(sums); free(coef); free(grad_max); return 1; }
#pragma omp parallel
    {
#pragma omp for schedule(static)
        for (int64_t item = 0; item < items; item++) {
            const int64_t b = item / OH, oh = item % OH, o = item * OW * C;
            const float *r0 = x + ((b * H + 2 * oh) * W) * C, *r1 = r0 + W * C;
            float centre[C];
            for (int64_t c = 0; c < C; c++) centre[c] = mean[b * G + c / per_group];
            double *s1 = sums + item * 2 * C, *s2 = s1 + C;
#define GATHER(K) gather_row(r0, r1, gout + o, slope + o, which + o, grad_max + o, OW, K, centre, s1, s2)
            DISPATCH_C(GATHER, C)
#undef GATHER
        }
#pragma omp for schedule(static)
        for (int64_t b = 0; b < batch; b++)
            row_backward_coefficients(sums, OH, b, mean, rstd, gamma, coef, dgamma, dbeta, H * W, C, G);
#pragma omp for schedule(static)
        for (int64_t item = 0; item < items; item++) {
            const int64_t b = item / OH, oh = item % OH, o = item * OW * C, i = ((b * H + 2 * oh) * W) * C;
            const float *alpha = coef + b * 3 * C;
#define SCATTER(K) scatter_row(x + i, x + i + W * C, dx + i, dx + i + W * C, grad_max + o, which + o, OW, K, \
                               alpha, alpha + C, alpha + 2 * C)
            DISPATCH_C(SCATTER, C)
#undef SCATTER
        }
    }
    free(sums);
    free(coef);
    free(grad_max);
    return 0;
}
