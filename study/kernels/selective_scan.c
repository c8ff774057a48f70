/* The selective scan of Mamba (S6) on the CPU, forward and backward.
 *
 * Per batch row b and channel d, with n over the state:
 *     h[t][n] = exp(delta[t] A[n]) h[t-1][n] + delta[t] u[t] B[t][n]
 *     y[t]    = sum_n C[t][n] h[t][n]
 * The states never leave the cache: the forward keeps one state vector, the
 * backward recomputes the states and decays of one (b, d) sequence into a
 * buffer of 2 L N floats and runs the adjoint recurrence over it in reverse.
 * Layouts (contiguous): u, delta, y, grads of them: (batch, D, L);
 * A: (D, N); B, C and their grads: (batch, L, N). Every batch row is computed
 * by one thread in a fixed order, so results do not depend on how rows are
 * split between threads. Rows are shared out by OpenMP: built with -fopenmp,
 * the library uses the libgomp PyTorch has loaded (same soname), so it runs on
 * PyTorch's own worker threads and their count (torch.set_num_threads). */
#include <stdlib.h>
#include <string.h>

#include "common.h"

static inline __attribute__((always_inline)) void scan_row(
    const float *restrict u, const float *restrict delta, const float *restrict A, const float *restrict B,
    const float *restrict C, float *restrict y, int64_t L, int64_t N, float *restrict h) {
    for (int64_t n = 0; n < N; n++) h[n] = 0.0f;
    for (int64_t t = 0; t < L; t++) {
        const float dt = delta[t], drive = dt * u[t];
        const float *Bt = B + t * N, *Ct = C + t * N;
        float acc = 0.0f;
        for (int64_t n = 0; n < N; n++) {
            h[n] = exp_approx(dt * A[n]) * h[n] + drive * Bt[n];
            acc += Ct[n] * h[n];
        }
        y[t] = acc;
    }
}

int scan_forward(const float *u, const float *delta, const float *A, const float *B, const float *C,
                 float *y, int64_t batch, int64_t D, int64_t L, int64_t N) {
    int failed = 0;
#pragma omp parallel reduction(| : failed)
    {
        float *h = malloc(sizeof(float) * N);
        fp_mode mode = flush_subnormals();
#pragma omp for schedule(static)
        for (int64_t b = 0; b < batch; b++) {
            if (!h) { failed = 1; continue; }
            const float *Bb = B + b * L * N, *Cb = C + b * L * N;
            for (int64_t d = 0; d < D; d++) {
                const int64_t row = (b * D + d) * L;
                if (N == 16)  /* the model's state size: a constant trip count vectorises fully */
                    scan_row(u + row, delta + row, A + d * N, Bb, Cb, y + row, L, 16, h);
                else
                    scan_row(u + row, delta + row, A + d * N, Bb, Cb, y + row, L, N, h);
            }
        }
        restore_fp_mode(mode);
        free(h);
    }
    return failed;
}

static inline __attribute__((always_inline)) void adjoint_row(
    const float *restrict u, const float *restrict delta, const float *restrict A, const float *restrict B,
    const float *restrict C, const float *restrict gy, float *restrict gu, float *restrict gdelta,
    float *restrict gA, float *restrict gB, float *restrict gC, int64_t L, int64_t N,
    float *restrict H, float *restrict decay, float *restrict g, const float *restrict zeros) {
    /* the states h[t] and decays a[t] of this sequence, recomputed */
    for (int64_t t = 0; t < L; t++) {
        const float dt = delta[t], drive = dt * u[t];
        const float *Bt = B + t * N, *prev = t ? H + (t - 1) * N : zeros;
        float *Ht = H + t * N, *at = decay + t * N;
        for (int64_t n = 0; n < N; n++) {
            at[n] = exp_approx(dt * A[n]);
            Ht[n] = at[n] * prev[n] + drive * Bt[n];
        }
    }
    /* g[t] = dLoss/dh[t] = gy[t] C[t] + a[t+1] g[t+1], from the end */
    for (int64_t n = 0; n < N; n++) g[n] = 0.0f;
    for (int64_t t = L - 1; t >= 0; t--) {
        const float gyt = gy[t], dt = delta[t], ut = u[t], du = dt * ut;
        const float *Bt = B + t * N, *Ct = C + t * N, *Ht = H + t * N, *at = decay + t * N;
        const float *prev = t ? H + (t - 1) * N : zeros;
        const float *next = t + 1 < L ? decay + (t + 1) * N : zeros;
        float *gBt = gB + t * N, *gCt = gC + t * N;
        float drive_sum = 0.0f, decay_sum = 0.0f;
        for (int64_t n = 0; n < N; n++) {
            const float gn = gyt * Ct[n] + next[n] * g[n];
            g[n] = gn;
            gCt[n] += gyt * Ht[n];
            gBt[n] += gn * du;
            drive_sum += gn * Bt[n];
            const float q = gn * prev[n] * at[n];  /* dLoss/d(delta[t] A[n]) */
            decay_sum += A[n] * q;
            gA[n] += dt * q;
        }
        gu[t] = dt * drive_sum;
        gdelta[t] = ut * drive_sum + decay_sum;
    }
}

/* gB, gC must be zero on entry (they sum over D); gA: (batch, D, N), one slice
 * per batch row, summed over rows by the caller. */
int scan_backward(const float *u, const float *delta, const float *A, const float *B, const float *C,
                  const float *gy, float *gu, float *gdelta, float *gA, float *gB, float *gC,
                  int64_t batch, int64_t D, int64_t L, int64_t N) {
    int failed = 0;
#pragma omp parallel reduction(| : failed)
    {
        float *work = malloc(sizeof(float) * (2 * L * N + 2 * N));
        fp_mode mode = flush_subnormals();
#pragma omp for schedule(static)
        for (int64_t b = 0; b < batch; b++) {
            if (!work) { failed = 1; continue; }
            float *H = work, *decay = work + L * N, *g = work + 2 * L * N, *zeros = g + N;
            memset(zeros, 0, sizeof(float) * N);
            const float *Bb = B + b * L * N, *Cb = C + b * L * N;
            float *gBb = gB + b * L * N, *gCb = gC + b * L * N;
            for (int64_t d = 0; d < D; d++) {
                const int64_t row = (b * D + d) * L;
                float *gAd = gA + (b * D + d) * N;
                if (N == 16)
                    adjoint_row(u + row, delta + row, A + d * N, Bb, Cb, gy + row, gu + row, gdelta + row, gAd,
                                gBb, gCb, L, 16, H, decay, g, zeros);
                else
                    adjoint_row(u + row, delta + row, A + d * N, Bb, Cb, gy + row, gu + row, gdelta + row, gAd,
                                gBb, gCb, L, N, H, decay, g, zeros);
            }
        }
        restore_fp_mode(mode);
        free(work);
    }
    return failed;
}
