/* int4 GEMV for CPU decode (AVX2): y = x @ W^T for one or a few tokens, W in the engine's packed int4 layout.

   Weight: packed uint8 [N, K/2] (low nibble = even column, high = odd), per 32-column group an fp32 scale d and
   min m (w = q * d + m; coarser groups are repeated down to 32 at load). Activations are quantized to int16 per
   32-group (xq = round(x / dx), dx = max|x| / 32767: relative error ~1.5e-5, finer than bf16's 2^-9), so a
   group's dot product is an exact integer dot:
       sum_j w_j x_j ~= d * dx * sum_j q_j xq_j + m * sum_j x_j
   (the min term uses the exact fp32 sum of x). int8 activations (llama.cpp's q8) were tried first: twice the
   speed of this, but the error they add (~1% a layer with Q4_1's uncentred codes) visibly changed SmolLM2's
   answers. Built at first use by engine/cpu_q4.py; rows split over OpenMP
   threads (torch's own libgomp runtime, so torch.set_num_threads applies). */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

/* x [K] fp32 -> xq [K] int16 in the weight's nibble order per group (16 even columns, then 16 odd), dx and the
   exact sum of x per group. */
static void quantize_x(const float *x, int64_t K, int16_t *xq, float *dx, float *sx) {
    for (int64_t g = 0; g < K / 32; g++) {
        const float *xg = x + g * 32;
        float amax = 0.f, sum = 0.f;
        for (int j = 0; j < 32; j++) {
            float a = fabsf(xg[j]);
            amax = a > amax ? a : amax;
            sum += xg[j];
        }
        float d = amax / 32767.f, inv = d > 0.f ? 1.f / d : 0.f;
        for (int j = 0; j < 16; j++) {
            xq[g * 32 + j] = (int16_t)lrintf(xg[2 * j] * inv);
            xq[g * 32 + 16 + j] = (int16_t)lrintf(xg[2 * j + 1] * inv);
        }
        dx[g] = d;
        sx[g] = sum;
    }
}

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static float row_dot(const uint8_t *w, const float *d, const float *m, const int16_t *xq, const float *dx,
                     const float *sx, int64_t G) {
    const __m128i low = _mm_set1_epi8(0x0F);
    __m256 acc = _mm256_setzero_ps();
    float accm = 0.f;
    for (int64_t g = 0; g < G; g++) {
        __m128i b = _mm_loadu_si128((const __m128i *)(w + g * 16));
        __m256i qe = _mm256_cvtepu8_epi16(_mm_and_si128(b, low));  /* 16 even columns */
        __m256i qo = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(b, 4), low));  /* 16 odd columns */
        __m256i xe = _mm256_loadu_si256((const __m256i *)(xq + g * 32));
        __m256i xo = _mm256_loadu_si256((const __m256i *)(xq + g * 32 + 16));
        __m256i p = _mm256_add_epi32(_mm256_madd_epi16(qe, xe), _mm256_madd_epi16(qo, xo));  /* 8 int32 sums */
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(d[g] * dx[g]), acc);
        accm += m[g] * sx[g];
    }
    return hsum(acc) + accm;
}

/* x [M, K] fp32, w [N, K/2], d/m [N, K/32] fp32, y [M, N] fp32; scratch: K int16 + 2 * K/32 floats per token. */
void q4_linear(const float *x, int64_t M, int64_t K, const uint8_t *w, const float *d, const float *m,
               int64_t N, float *y, int16_t *xq, float *dx, float *sx) {
    const int64_t G = K / 32;
    for (int64_t t = 0; t < M; t++)
        quantize_x(x + t * K, K, xq + t * K, dx + t * G, sx + t * G);
    #pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++)
        for (int64_t t = 0; t < M; t++)
            y[t * N + n] = row_dot(w + n * (K / 2), d + n * G, m + n * G, xq + t * K, dx + t * G, sx + t * G, G);
}
