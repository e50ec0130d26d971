/* int4 GEMV for CPU decode (AVX2): y = x @ W^T for one or a few tokens, W in the engine's packed int4 layout.

   Weight: packed uint8 [N, K/2] (low nibble = even column, high = odd), per 32-column group an fp32 scale d and
   min m (w = q * d + m; coarser groups are repeated down to 32 at load). Activations are quantized to int16 per
   32-group (xq = round(x / dx), dx = max|x| / 32767: relative error ~1.5e-5, finer than bf16's 2^-9), so a
   group's dot product is an exact integer dot:
       sum_j w_j x_j ~= d * dx * sum_j q_j xq_j + m * sum_j x_j
   (the min term uses the exact fp32 sum of x). int8 activations (llama.cpp's q8) were tried first: twice the
   speed of this, but the error they add (~1% a layer with Q4_1's uncentred codes) visibly changed SmolLM2's
   answers. Long prompt chunks take q4_dequant + torch's fp32 GEMM instead (engine/cpu_q4.py). Built at first
   use by engine/cpu_q4.py; rows split over OpenMP threads (torch's own libgomp runtime, so
   torch.set_num_threads applies). */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

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

/* One weight row against NT tokens (NT a literal 1..4, so the token loops unroll and the accumulators stay in
   registers): a group's codes are unpacked once for all NT tokens. Each token's arithmetic is the one-token
   dot's, in the same order, so a token's result does not depend on how many tokens share the call (speculative
   verification stays bit-identical to decoding one token at a time). Token t's result goes to y[t * N]. */
static inline __attribute__((always_inline)) void row_dot(const uint8_t *w, const float *d, const float *m,
                                                          const int16_t *xq, const float *dx, const float *sx,
                                                          int64_t G, int64_t K, int NT, float *y, int64_t N) {
    const __m128i low = _mm_set1_epi8(0x0F);
    __m256 acc[4];
    float accm[4];
    for (int t = 0; t < NT; t++) {
        acc[t] = _mm256_setzero_ps();
        accm[t] = 0.f;
    }
    for (int64_t g = 0; g < G; g++) {
        __m128i b = _mm_loadu_si128((const __m128i *)(w + g * 16));
        __m256i qe = _mm256_cvtepu8_epi16(_mm_and_si128(b, low));  /* 16 even columns */
        __m256i qo = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(b, 4), low));  /* 16 odd columns */
        for (int t = 0; t < NT; t++) {
            const int16_t *xt = xq + t * K + g * 32;
            __m256i xe = _mm256_loadu_si256((const __m256i *)xt);
            __m256i xo = _mm256_loadu_si256((const __m256i *)(xt + 16));
            __m256i p = _mm256_add_epi32(_mm256_madd_epi16(qe, xe), _mm256_madd_epi16(qo, xo));  /* 8 int32 sums */
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(d[g] * dx[t * G + g]), acc[t]);
            accm[t] = fmaf(m[g], sx[t * G + g], accm[t]);  /* explicit: the same rounding in every inlined copy */
        }
    }
    for (int t = 0; t < NT; t++) y[t * N] = hsum(acc[t]) + accm[t];
}

/* Rows go to the threads in blocks of ROW_BLOCK and meet the tokens four at a time: a block's weights stay in L2
   and four tokens' activations in L1 while they are used. */
#define ROW_BLOCK 32

/* x [M, K] fp32, w [N, K/2], d/m [N, K/32] fp32, y [M, N] fp32; scratch: K int16 + 2 * K/32 floats per token. */
void q4_linear(const float *x, int64_t M, int64_t K, const uint8_t *w, const float *d, const float *m,
               int64_t N, float *y, int16_t *xq, float *dx, float *sx) {
    const int64_t G = K / 32;
    for (int64_t t = 0; t < M; t++)
        quantize_x(x + t * K, K, xq + t * K, dx + t * G, sx + t * G);
    #pragma omp parallel for schedule(static)
    for (int64_t n0 = 0; n0 < N; n0 += ROW_BLOCK) {
        const int64_t n1 = n0 + ROW_BLOCK < N ? n0 + ROW_BLOCK : N;
        for (int64_t t = 0; t < M; t += 4) {
            const int64_t nt = M - t < 4 ? M - t : 4;
            const int16_t *xt = xq + t * K;
            const float *dxt = dx + t * G, *sxt = sx + t * G;
            for (int64_t n = n0; n < n1; n++) {
                const uint8_t *wn = w + n * (K / 2);
                const float *dn = d + n * G, *mn = m + n * G;
                float *yn = y + t * N + n;
                switch (nt) {
                    case 4: row_dot(wn, dn, mn, xt, dxt, sxt, G, K, 4, yn, N); break;
                    case 3: row_dot(wn, dn, mn, xt, dxt, sxt, G, K, 3, yn, N); break;
                    case 2: row_dot(wn, dn, mn, xt, dxt, sxt, G, K, 2, yn, N); break;
                    default: row_dot(wn, dn, mn, xt, dxt, sxt, G, K, 1, yn, N);
                }
            }
        }
    }
}

/* W = q * d + m as fp32 [N, K] in natural column order, for prompts long enough that a dense fp32 GEMM on the
   dequantized weight beats the int16 dot above (the GEMM reuses each weight value across many tokens in
   registers; the dot redoes its per-group float work for every token). */
void q4_dequant(const uint8_t *w, const float *d, const float *m, int64_t N, int64_t K, float *out) {
    const int64_t G = K / 32;
    const __m128i low = _mm_set1_epi8(0x0F);
    #pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++)
        for (int64_t g = 0; g < G; g++) {
            __m128i b = _mm_loadu_si128((const __m128i *)(w + n * (K / 2) + g * 16));
            __m128i lo = _mm_and_si128(b, low), hi = _mm_and_si128(_mm_srli_epi16(b, 4), low);
            __m128i codes[2] = {_mm_unpacklo_epi8(lo, hi), _mm_unpackhi_epi8(lo, hi)};  /* columns 0-15, 16-31 */
            const __m256 dg = _mm256_set1_ps(d[n * G + g]), mg = _mm256_set1_ps(m[n * G + g]);
            float *o = out + n * K + g * 32;
            for (int h = 0; h < 2; h++) {
                __m256 c0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(codes[h]));
                __m256 c1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(codes[h], 8)));
                _mm256_storeu_ps(o + 16 * h, _mm256_fmadd_ps(c0, dg, mg));
                _mm256_storeu_ps(o + 16 * h + 8, _mm256_fmadd_ps(c1, dg, mg));
            }
        }
}

/* y = x @ (s * Q)^T for an int8 weight Q [N, K] with one fp32 scale per row (the CPU head's ranking pass,
   engine/cpu_head.py); activations in int16 per 32-group as above, fp32 output. */
void q8_linear(const float *x, int64_t K, const int8_t *w, const float *s, int64_t N, float *y, int16_t *xq,
               float *dx, float *sx) {
    const int64_t G = K / 32;
    quantize_x(x, K, xq, dx, sx);  /* even/odd order: the weight rows are stored in the same order at load */
    #pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const int8_t *wn = w + n * K;
        __m256 acc = _mm256_setzero_ps();
        for (int64_t g = 0; g < G; g++) {
            __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(wn + g * 32)));
            __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(wn + g * 32 + 16)));
            __m256i x0 = _mm256_loadu_si256((const __m256i *)(xq + g * 32));
            __m256i x1 = _mm256_loadu_si256((const __m256i *)(xq + g * 32 + 16));
            __m256i p = _mm256_add_epi32(_mm256_madd_epi16(w0, x0), _mm256_madd_epi16(w1, x1));
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dx[g]), acc);
        }
        y[n] = hsum(acc) * s[n];
    }
}

/* ---- one whole decoder layer for up to max_tokens tokens of one or more sequences: model.Block in C ------- */

typedef struct {  /* one int4 linear: packed [n, k/2], d/m [n, k/32] */
    const uint8_t *w;
    const float *d, *m;
    int64_t n, k;
} Q4Mat;

typedef struct {  /* everything a layer's step reads besides x, the rotary rows and the positions */
    Q4Mat qkv, o, gate_up, down;
    const float *ln1, *ln2;
    /* this layer's K/V: slot s of a sequence whose block table is tbl lies at
       cache + tbl[s / block_size] * block_stride + (s % block_size) * slot_stride + head * head_stride.
       The paged pool [blocks, block_size, kv_heads, head_dim] and a contiguous row [kv_heads, max_seq, head_dim]
       (one block of max_seq slots, table {0}) are both this form. */
    float *k_cache, *v_cache;
    int64_t block_size, block_stride, slot_stride, head_stride;
    int64_t hidden, heads, kv_heads, head_dim, max_len, inter;
    float eps, scale, residual_scale;
    /* scratch for up to max_tokens tokens (T x each): h [max(hidden, inter)], qkv [qkv.n], att [heads * head_dim],
       gu [gate_up.n], out [hidden], xq int16 [max k], dx / sx [max k / 32], scores [heads * max_len] */
    float *h, *qkv_out, *att, *gu, *out, *scores;
    int16_t *xq;
    float *dx, *sx;
} Q4Layer;

static inline int64_t slot_offset(const Q4Layer *L, const int32_t *tbl, int64_t s) {
    return (int64_t)tbl[s / L->block_size] * L->block_stride + (s % L->block_size) * L->slot_stride;
}

static float dot(const float *a, const float *b, int64_t n) {
    __m256 acc = _mm256_setzero_ps();
    int64_t c = 0;
    for (; c + 8 <= n; c += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + c), _mm256_loadu_ps(b + c), acc);
    float s = hsum(acc);
    for (; c < n; c++) s += a[c] * b[c];
    return s;
}

/* out = weight * (x * rsqrt(mean(x^2) + eps)), the same operation order as ops.rms_norm */
static void rms_norm(const float *x, const float *weight, int64_t n, float eps, float *out) {
    float ss = 0.f;
    for (int64_t i = 0; i < n; i++) ss += x[i] * x[i];
    float r = 1.f / sqrtf(ss / (float)n + eps);
    for (int64_t i = 0; i < n; i++) out[i] = weight[i] * (x[i] * r);
}

/* NeoX rotate-half rotary of one head in place: x * cos + rotate_half(x) * sin */
static void rotary(float *x, const float *cos, const float *sin, int64_t D) {
    int64_t half = D / 2;
    for (int64_t j = 0; j < half; j++) {
        float a = x[j], b = x[j + half];
        x[j] = a * cos[j] + (-b) * sin[j];
        x[j + half] = b * cos[j + half] + a * sin[j + half];
    }
}

/* T tokens through the layer; x [T, hidden] (the residual stream) is updated in place. cos/sin [T, head_dim]:
   each token's rotary row. Token t belongs to the sequence whose block table is tables + seq[t] * table_width; it
   writes its K/V at that sequence's slot pos[t] and attends its slots j < kv_len with mask[t * kv_len + j] != 0
   (one sequence's speculative tree), or, with no mask, every slot j <= pos[t]. All writes happen before any
   attention, so a sequence's chunk sees its own earlier tokens. Each token goes through exactly the operations
   of a one-token step (the GEMVs batch tokens but compute each one alone), so a token gets bit-identical
   results decoded alone, in a batch with other sequences, in a prompt chunk or verified in a tree.
   T <= the struct's max_tokens (scratch). */
void q4_layer_forward(const Q4Layer *L, float *x, int64_t T, const float *cos, const float *sin,
                      const int64_t *pos, const int32_t *tables, const int64_t *seq, int64_t table_width,
                      const uint8_t *mask, int64_t kv_len) {
    const int64_t H = L->hidden, D = L->head_dim, nh = L->heads, nkv = L->kv_heads, HS = L->head_stride;
    const int64_t NQ = L->qkv.n, I = L->inter, group = nh / nkv;
    for (int64_t t = 0; t < T; t++) rms_norm(x + t * H, L->ln1, H, L->eps, L->h + t * H);
    q4_linear(L->h, T, H, L->qkv.w, L->qkv.d, L->qkv.m, NQ, L->qkv_out, L->xq, L->dx, L->sx);
    int64_t work = 0;
    for (int64_t t = 0; t < T; t++) {
        float *q = L->qkv_out + t * NQ, *k = q + nh * D, *v = k + nkv * D;
        const int64_t at = slot_offset(L, tables + seq[t] * table_width, pos[t]);
        for (int64_t i = 0; i < nh; i++) rotary(q + i * D, cos + t * D, sin + t * D, D);
        for (int64_t i = 0; i < nkv; i++) {
            rotary(k + i * D, cos + t * D, sin + t * D, D);
            memcpy(L->k_cache + at + i * HS, k + i * D, D * sizeof(float));
            memcpy(L->v_cache + at + i * HS, v + i * D, D * sizeof(float));
        }
        work += mask ? kv_len : pos[t] + 1;
    }
    /* softmax(q K^T * scale) V over the allowed slots in fp32, one (token, head) pair per task; each pair is
       computed by one thread in a fixed order, so threading never changes a result */
    #pragma omp parallel for collapse(2) schedule(dynamic) if (work * nh >= 2048)
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < nh; i++) {
            const uint8_t *mt = mask ? mask + t * kv_len : NULL;
            const int64_t len = mask ? kv_len : pos[t] + 1;
            const int32_t *tbl = tables + seq[t] * table_width;
            const float *qi = L->qkv_out + t * NQ + i * D;
            const int64_t ho = (i / group) * HS;
            float *sc = L->scores + (t * nh + i) * L->max_len, mx = -INFINITY, sum = 0.f;
            for (int64_t j = 0; j < len; j++) {
                if (mt && !mt[j]) continue;
                float s = dot(qi, L->k_cache + slot_offset(L, tbl, j) + ho, D) * L->scale;
                sc[j] = s;
                mx = s > mx ? s : mx;
            }
            for (int64_t j = 0; j < len; j++)
                if (!mt || mt[j]) sum += (sc[j] = expf(sc[j] - mx));
            float *o = L->att + t * nh * D + i * D, inv = 1.f / sum;
            for (int64_t c = 0; c < D; c++) o[c] = 0.f;
            for (int64_t j = 0; j < len; j++) {
                if (mt && !mt[j]) continue;
                const float p = sc[j] * inv, *vj = L->v_cache + slot_offset(L, tbl, j) + ho;
                for (int64_t c = 0; c < D; c++) o[c] += p * vj[c];
            }
        }
    q4_linear(L->att, T, nh * D, L->o.w, L->o.d, L->o.m, H, L->out, L->xq, L->dx, L->sx);
    for (int64_t i = 0; i < T * H; i++) x[i] += L->residual_scale == 1.f ? L->out[i] : L->out[i] * L->residual_scale;
    for (int64_t t = 0; t < T; t++) rms_norm(x + t * H, L->ln2, H, L->eps, L->h + t * H);
    q4_linear(L->h, T, H, L->gate_up.w, L->gate_up.d, L->gate_up.m, 2 * I, L->gu, L->xq, L->dx, L->sx);
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < I; i++) {  /* silu(gate) * up */
            float g = L->gu[t * 2 * I + i];
            L->h[t * I + i] = g / (1.f + expf(-g)) * L->gu[t * 2 * I + I + i];
        }
    q4_linear(L->h, T, I, L->down.w, L->down.d, L->down.m, H, L->out, L->xq, L->dx, L->sx);
    for (int64_t i = 0; i < T * H; i++) x[i] += L->residual_scale == 1.f ? L->out[i] : L->out[i] * L->residual_scale;
}
