// Dot products of block-quantized weight rows with block-quantized activations.
//
// Weights come in blocks of 32 along a row (ggml's block size), each with an fp16 scale d:
//   q4: value = d * q + m, q in 0..15, m an fp16 minimum per block (ggml's Q4_1; Q4_0 is m = -8d).
//       Nibbles are repacked per 64 values (two blocks): byte i holds value i in its low nibble and
//       value 32 + i in its high one, so one 32-byte load unpacks into 64 values in order.
//   q8: value = d * q, q in -127..127 (ggml's Q8_0).
// Activations are quantized the same way llama.cpp does it for these formats: blocks of 32 int8
// with an fp32 scale, and the block's sum (scale * sum of q) for the q4 minimum and q8's offset.
// The inner product is then integer: AVX512-VNNI's vpdpbusd multiplies unsigned bytes by signed
// bytes, 64 at a time. q4's nibbles are unsigned already; q8's signed weights are offset by 128
// (w + 128 is unsigned) and 128 * sum(x) is taken back out through the same per-block term as q4's
// minimum. Rows must hold a multiple of 64 values (checked in Python).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__) && defined(__AVX512VL__)
#define VISLANG_VNNI 1
#include <immintrin.h>
#endif

namespace vq {

constexpr int BLOCK = 32;
enum Kind { Q4 = 0, Q8 = 1, F32 = 2 };  // F32: plain rows, fp32 activations

inline float half_to_float(uint16_t h) {
#ifdef VISLANG_VNNI
  return _cvtsh_ss(h);
#else
  uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ffu, bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: normalize
      exp = 127 - 15 + 1;
      while (!(man & 0x400u)) {
        man <<= 1;
        --exp;
      }
      bits = sign | (exp << 23) | ((man & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
#endif
}

// One activation row in blocks of 32: q[K] int8, d[K/32] scales, s[K/32] = d * sum(q).
struct QAct {
  int8_t* q;
  float* d;
  float* s;
  const float* x;  // the row itself, for F32 matrices
};

inline void quantize_row(const float* x, int K, QAct a) {
  for (int b = 0; b < K / BLOCK; ++b) {
    const float* xb = x + b * BLOCK;
    float amax = 0.f;
    for (int i = 0; i < BLOCK; ++i) amax = std::fmax(amax, std::fabs(xb[i]));
    const float d = amax / 127.f, inv = d > 0.f ? 1.f / d : 0.f;
    int sum = 0;
    for (int i = 0; i < BLOCK; ++i) {
      const int q = (int)std::nearbyint(xb[i] * inv);
      a.q[b * BLOCK + i] = (int8_t)q;
      sum += q;
    }
    a.d[b] = d;
    a.s[b] = d * (float)sum;
  }
}

// One fp32 row times the fp32 activation. Four accumulators: with one, each FMA waited for the
// last (4 cycles), which held a thread below the memory's pace on SmolLM2's 576-wide rows.
inline float dot_f32(const float* w, const float* x, int K) {
#ifdef VISLANG_VNNI
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  int i = 0;
  for (; i + 64 <= K; i += 64)
    for (int u = 0; u < 4; ++u)
      acc[u] = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 16 * u), _mm512_loadu_ps(x + i + 16 * u), acc[u]);
  for (; i < K; i += 16) acc[0] = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), acc[0]);
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
#else
  float s = 0.f;
  for (int i = 0; i < K; ++i) s += w[i] * x[i];
  return s;
#endif
}

// One row (qs: its bytes, d/m: its block scales/minima) dotted in plain C++: the reference the
// vector code agrees with, and the path of CPUs without AVX512-VNNI. gs: bytes from one group of 64
// values of the row to its next (the group's own size for a plain row; 4x that for rows stored
// four at a time, see QMat in decode.cpp).
inline float dot_portable(Kind kind, const uint8_t* qs, const uint16_t* d, const uint16_t* m, const QAct& a, int K,
                          int64_t gs) {
  const int nb = K / BLOCK;
  float scale[1024];  // d_w * d_x per block (rows up to 32768 values, checked in Python)
  float total = 0.f, offset = 0.f;  // offset: sum over blocks of (minimum or -128 d_w) * s_x
  for (int b = 0; b < nb; ++b) {
    const float dw = half_to_float(d[b]);
    scale[b] = dw * a.d[b];
    offset += (kind == Q4 ? half_to_float(m[b]) : -128.f * dw) * a.s[b];
  }
  for (int b = 0; b < nb; ++b) {
    int sum = 0;
    const int8_t* x = a.q + b * BLOCK;
    if (kind == Q4) {
      const int g = b / 2, half = b % 2;  // block 2g in low nibbles, 2g + 1 in high ones
      const uint8_t* p = qs + gs * g;
      for (int i = 0; i < BLOCK; ++i) sum += (half ? (p[i] >> 4) : (p[i] & 15)) * x[i];
    } else {
      const int8_t* p = (const int8_t*)(qs + gs * (b / 2)) + BLOCK * (b % 2);
      for (int i = 0; i < BLOCK; ++i) sum += (p[i] + 128) * x[i];
    }
    total += scale[b] * (float)sum;
  }
  return total + offset;
}

// R consecutive rows (row r's group g at qs + g * gs + r * rs; its scales at d + r * nb, m + r * nb)
// times A activation rows (a decode step of A sequences), out [A][R]. Each row's 64 values are
// unpacked once for all A, each activation loaded once for all R, and the R x A accumulators are
// independent, which keeps the FMA unit busy. Every (row, activation) sees the same operations in
// the same order whatever R and A are, so a batch gives each sequence the bits it gets alone.
template <int R, int A>
inline void dot_rows_batch(Kind kind, const uint8_t* qs, const uint16_t* d, const uint16_t* m, const QAct* acts,
                           int K, int64_t gs, int64_t rs, float* out) {
#ifdef VISLANG_VNNI
  const int nb = K / BLOCK;
  __m512 acc[R][A];
  for (int r = 0; r < R; ++r) {
    const uint16_t* dr = d + r * nb;
    const uint16_t* mr = m ? m + r * nb : nullptr;
    for (int j = 0; j < A; ++j) {
      acc[r][j] = _mm512_setzero_ps();
      for (int b = 0; b < nb; b += 16) {
        const __mmask16 k = (__mmask16)((nb - b >= 16) ? 0xffff : ((1u << (nb - b)) - 1));
        const __m512 mw = kind == Q4 ? _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, mr + b))
                                     : _mm512_mul_ps(_mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, dr + b)),
                                                     _mm512_set1_ps(-128.f));
        acc[r][j] = _mm512_fmadd_ps(mw, _mm512_maskz_loadu_ps(k, acts[j].s + b), acc[r][j]);
      }
    }
  }
  const __m512i pair = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m256i low = _mm256_set1_epi8(0x0f);
  const __m512i flip = _mm512_set1_epi8((char)0x80);
  for (int g = 0; g < K / 64; ++g) {
    __m512i x[A];
    __m512 dx[A];
    for (int j = 0; j < A; ++j) {
      x[j] = _mm512_loadu_si512((const void*)(acts[j].q + 64 * g));
      dx[j] = _mm512_permutexvar_ps(pair, _mm512_castps128_ps512(_mm_castpd_ps(_mm_load_sd((const double*)(acts[j].d + 2 * g)))));
    }
    for (int r = 0; r < R; ++r) {
      __m512i w;
      if (kind == Q4) {
        const __m256i v = _mm256_loadu_si256((const __m256i*)(qs + r * rs + gs * g));
        const __m256i lo = _mm256_and_si256(v, low);
        const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
        w = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
      } else {
        w = _mm512_xor_si512(_mm512_loadu_si512((const void*)(qs + r * rs + gs * g)), flip);
      }
      int32_t two_halves;
      std::memcpy(&two_halves, d + r * nb + 2 * g, 4);
      const __m512 dw = _mm512_permutexvar_ps(pair, _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi32_si128(two_halves))));
      for (int j = 0; j < A; ++j) {
        const __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, x[j]);
        acc[r][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, dx[j]), acc[r][j]);
      }
    }
  }
  for (int j = 0; j < A; ++j)
    for (int r = 0; r < R; ++r) out[j * R + r] = _mm512_reduce_add_ps(acc[r][j]);
#else
  const int nb = K / BLOCK;
  for (int j = 0; j < A; ++j)
    for (int r = 0; r < R; ++r) out[j * R + r] = dot_portable(kind, qs + r * rs, d + r * nb, m ? m + r * nb : nullptr, acts[j], K, gs);
#endif
}

// R consecutive rows times one activation (F32 rows: one after the other, a single sequential
// stream; the matmul is memory-bound anyway).
template <int R>
inline void dot_rows(Kind kind, const uint8_t* qs, const uint16_t* d, const uint16_t* m, const QAct& a, int K,
                     int64_t gs, int64_t rs, float* out) {
  if (kind == F32) {
    for (int r = 0; r < R; ++r) out[r] = dot_f32((const float*)qs + (int64_t)r * K, a.x, K);
    return;
  }
  dot_rows_batch<R, 1>(kind, qs, d, m, &a, K, gs, rs, out);
}

// One row times one activation.
inline float dot(Kind kind, const uint8_t* qs, const uint16_t* d, const uint16_t* m, const QAct& a, int K,
                 int64_t gs) {
  float out;
  dot_rows<1>(kind, qs, d, m, a, K, gs, 0, &out);
  return out;
}

// Row n of a quantized matrix as floats.
inline void dequantize_row(Kind kind, const uint8_t* qs, const uint16_t* d, const uint16_t* m, int K, int64_t gs,
                           float* out) {
#ifdef VISLANG_VNNI
  for (int b = 0; b < K / BLOCK; ++b) {  // 16 values per step: bytes -> int32 -> float, one FMA
    const __m512 dw = _mm512_set1_ps(half_to_float(d[b]));
    const __m512 mw = _mm512_set1_ps(kind == Q4 ? half_to_float(m[b]) : 0.f);
    for (int h = 0; h < 2; ++h) {
      __m512i q;
      if (kind == Q4) {
        const __m128i v = _mm_loadu_si128((const __m128i*)(qs + gs * (b / 2) + 16 * h));
        const __m128i nib = _mm_and_si128(b % 2 ? _mm_srli_epi16(v, 4) : v, _mm_set1_epi8(0x0f));
        q = _mm512_cvtepu8_epi32(nib);
      } else {
        q = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(qs + gs * (b / 2) + BLOCK * (b % 2) + 16 * h)));
      }
      _mm512_storeu_ps(out + b * BLOCK + 16 * h, _mm512_fmadd_ps(_mm512_cvtepi32_ps(q), dw, mw));
    }
  }
  return;
#endif
  for (int b = 0; b < K / BLOCK; ++b) {
    const float dw = half_to_float(d[b]);
    if (kind == Q4) {
      const float mw = half_to_float(m[b]);
      const uint8_t* p = qs + gs * (b / 2);
      const int shift = 4 * (b % 2);
      for (int i = 0; i < BLOCK; ++i) out[b * BLOCK + i] = dw * (float)((p[i] >> shift) & 15) + mw;
    } else {
      const int8_t* p = (const int8_t*)(qs + gs * (b / 2)) + BLOCK * (b % 2);
      for (int i = 0; i < BLOCK; ++i) out[b * BLOCK + i] = dw * (float)p[i];
    }
  }
}

}  // namespace vq
