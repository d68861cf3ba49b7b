/* Design: exp in float32 as plain arithmetic, shared by the activation and loss kernels
 * (softmax, sigmoid, tanh, cross-entropy): libm's expf is an opaque call that keeps gcc
 * from vectorizing the loops around it. */
#ifndef FASTGRAD_FAST_EXP_H
#define FASTGRAD_FAST_EXP_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* exp(x) in float32, in plain arithmetic that gcc vectorizes. Relative error below
   2e-7; results under 2.7e-38 (x < -86.5, about FLT_MIN) flush to 0; overflow gives
   inf; NaN stays NaN. x = n ln2 + r with |r| <= ln2/2: n comes from the low mantissa
   bits of x / ln2 + 1.5 * 2^23 (round to nearest), ln2 is split in a part whose product
   with n is exact plus a correction, exp(r) = 1 + r + r^2 q(r) with q a degree-5
   least-squares fit of (exp(r) - 1 - r) / r^2 on Chebyshev nodes of that interval, and
   2^n goes in the exponent bits (as 2^(n-1) * 2, so n = 128 fits). */
static inline float fg_exp_f(float x) {
    const float round_magic = 12582912.0f;               /* 1.5 * 2^23 */
    float xc = x >= -86.5f ? (x < 88.7228394f ? x : 88.7228394f) : -86.5f; /* NaN too */
    float k = xc * 1.44269504088896341f + round_magic;
    int32_t kbits, sbits;
    memcpy(&kbits, &k, sizeof k);
    int32_t n = kbits - 0x4B400000;                      /* the integer in k's low bits */
    float nf = k - round_magic;
    float r = (xc - nf * 0.693359375f) + nf * 2.12194440e-4f;
    float q = 1.98992798687e-4f;
    q = q * r + 1.39336474240e-3f;
    q = q * r + 8.33329837769e-3f;
    q = q * r + 4.16664667428e-2f;
    q = q * r + 1.66666671634e-1f;
    q = q * r + 0.5f;
    float p = 1.0f + r + r * r * q;
    float scale;
    sbits = (n + 126) << 23;                             /* 2^(n-1), n >= -125 */
    memcpy(&scale, &sbits, sizeof scale);
    float y = p * scale * 2.0f;
    y = x > 88.7228394f ? INFINITY : y;
    y = x >= -86.5f ? y : 0.0f;
    return x != x ? x : y;
}

#endif
