/* Shared by the CPU kernels: float32 only, contiguous layouts; each call shares
 * its work out over OpenMP threads itself (PyTorch's own, see selective_scan.c). */
#ifndef STUDY_KERNELS_COMMON_H
#define STUDY_KERNELS_COMMON_H

#include <math.h>
#include <stdint.h>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
/* Products of many decays underflow into subnormal floats, which x86 CPUs
 * process up to ~100x slower. Flush them to zero (FTZ and DAZ bits of MXCSR)
 * for the duration of a kernel on this thread only, then restore the mode. */
typedef unsigned int fp_mode;
static inline fp_mode flush_subnormals(void) {
    fp_mode old = _mm_getcsr();
    _mm_setcsr(old | 0x8040u);
    return old;
}
static inline void restore_fp_mode(fp_mode old) { _mm_setcsr(old); }
#else
typedef int fp_mode;
static inline fp_mode flush_subnormals(void) { return 0; }
static inline void restore_fp_mode(fp_mode old) { (void)old; }
#endif

/* exp(x) as a branch-free expression the compiler can vectorise: x = k ln2 + r
 * with |r| <= ln2/2, exp(r) by its degree-6 Taylor polynomial (truncation error
 * below 1.3e-7 relative), 2^k written into the exponent bits. -fassociative-math
 * may fold ln2_hi + ln2_lo into one float, which adds |k| x 1.9e-9 to the
 * error: under 3e-8 for the decays this model sees (|x| < 10), 2.4e-7 at -87. x is clamped to
 * [-87, 88]: below, the result is exp(-87) ~ 1.6e-38 instead of a subnormal or
 * zero (a decay that small erases the state either way). */
static inline float exp_approx(float x) {
    const float log2e = 1.44269504088896341f;
    const float ln2_hi = 0.693145751953125f;       /* ln 2 split so k * ln2_hi is exact */
    const float ln2_lo = 1.42860682030941723e-6f;
    float xc = x > -87.0f ? x : -87.0f;
    xc = xc < 88.0f ? xc : 88.0f;
    const float kf = rintf(xc * log2e);
    const float r = (xc - kf * ln2_hi) - kf * ln2_lo;
    const float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720))))));
    union { int32_t i; float f; } scale;
    scale.i = ((int32_t)kf + 127) << 23;
    return p * scale.f;
}

#endif
