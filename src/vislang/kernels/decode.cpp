// One decode step of a Llama-family decoder on block-quantized weights, as a single native call.
//
// A step at batch 1 is ~200 small operations; from Python each costs microseconds of dispatch,
// which at 30 layers is milliseconds, more than the weights take to read. Here the whole step runs
// in one OpenMP parallel region: every matrix's rows are split between the threads, and the small
// pieces (norms, activation quantization) run on one thread between barriers. The KV cache stays
// the caller's tensors ([slots, kv heads, capacity, head dim] per layer): the step writes each
// row's new key and value at that row's position and attends under the caller's mask, so batch
// decoding, padding and continuous batching work as in the Python path.
#include <torch/extension.h>

#include <omp.h>

#include <algorithm>
#include <type_traits>
#include <cmath>
#include <vector>

#include "qdot.h"

namespace {

struct QMat {
  vq::Kind kind = vq::Q4;
  bool interleaved = false;
  int64_t N = 0, K = 0;
  at::Tensor qs, d, m, bias;  // qs uint8 [N, bytes per row]; d, m fp16 [N, K/32]; bias fp32 [N] or undefined

  QMat() = default;
  // interleaved: rows stored four at a time, group by group (row 4i + r's group g at
  // (4i) * row_bytes + g * 4 * group_bytes + r * group_bytes), so reading four rows together is one
  // sequential stream; rows past the last full four are stored plainly after them
  QMat(int64_t kind_, bool interleaved_, at::Tensor qs_, at::Tensor d_, at::Tensor m_, at::Tensor bias_)
      : kind((vq::Kind)kind_), interleaved(interleaved_), qs(qs_.contiguous()), d(d_.contiguous()),
        m(m_.contiguous()) {
    TORCH_CHECK(!(interleaved && kind_ == vq::F32), "F32 rows are stored plainly");
    if (kind == vq::F32) {  // plain fp32 rows: qs is the weight itself
      TORCH_CHECK(qs.scalar_type() == at::kFloat && qs.dim() == 2, "F32 weight must be fp32 [N, K]");
      N = qs.size(0);
      K = qs.size(1);
      TORCH_CHECK(K % 16 == 0, "F32 rows must hold a multiple of 16 values");
    } else {
      N = d.size(0);
      K = d.size(1) * vq::BLOCK;
      TORCH_CHECK(qs.scalar_type() == at::kByte && d.scalar_type() == at::kHalf, "qs uint8, d fp16");
      TORCH_CHECK(K % 64 == 0 && K <= 32768, "rows must hold a multiple of 64 values, at most 32768");
      TORCH_CHECK(qs.size(0) == N && qs.size(1) == (kind == vq::Q4 ? K / 2 : K), "qs shape");
      if (kind == vq::Q4) TORCH_CHECK(m.sizes() == d.sizes() && m.scalar_type() == at::kHalf, "m shape");
    }
    if (bias_.defined() && bias_.numel() > 0) bias = bias_.to(at::kFloat).contiguous();
    // raw pointers once: data_ptr's checks cost more than a row's dot product at these sizes
    q_ptr = (const uint8_t*)qs.data_ptr();
    if (kind == vq::F32) {
      b_ptr = bias.defined() ? bias.data_ptr<float>() : nullptr;
      return;
    }
    d_ptr = (const uint16_t*)d.data_ptr<at::Half>();
    m_ptr = kind == vq::Q4 ? (const uint16_t*)m.data_ptr<at::Half>() : nullptr;
    b_ptr = bias.defined() ? bias.data_ptr<float>() : nullptr;
  }
  const uint8_t* q_ptr = nullptr;
  const uint16_t *d_ptr = nullptr, *m_ptr = nullptr;
  const float* b_ptr = nullptr;
  int64_t row_bytes() const { return kind == vq::Q4 ? K / 2 : kind == vq::Q8 ? K : 4 * K; }
  int64_t group_bytes() const { return kind == vq::Q4 ? 32 : 64; }
  bool in_quads(int64_t n) const { return interleaved && n < N / 4 * 4; }
  int64_t group_stride(int64_t n) const { return in_quads(n) ? 4 * group_bytes() : group_bytes(); }
  const uint16_t* drow(int64_t n) const { return d_ptr ? d_ptr + n * (K / 32) : nullptr; }
  const uint16_t* mrow(int64_t n) const { return m_ptr ? m_ptr + n * (K / 32) : nullptr; }
  const uint8_t* qrow(int64_t n) const {  // where row n's first group starts
    return in_quads(n) ? q_ptr + n / 4 * 4 * row_bytes() + n % 4 * group_bytes() : q_ptr + n * row_bytes();
  }
  float row_dot(int64_t n, const vq::QAct& a) const {
    return vq::dot(kind, qrow(n), drow(n), mrow(n), a, (int)K, group_stride(n)) + (b_ptr ? b_ptr[n] : 0.f);
  }
  // rows n .. n + ROWS - 1 at once
  static constexpr int ROWS = 4;
  void rows_dot(int64_t n, const vq::QAct& a, float* out) const {
    const int64_t rs = in_quads(n) ? group_bytes() : row_bytes();
    vq::dot_rows<ROWS>(kind, qrow(n), drow(n), mrow(n), a, (int)K, group_stride(n), rs, out);
    if (b_ptr)
      for (int r = 0; r < ROWS; ++r) out[r] += b_ptr[n + r];
  }
  // rows n .. n + ROWS - 1 (n a multiple of ROWS) times activations acts[0 .. A): out [A][ROWS]
  void rows_dot_all(int64_t n, const vq::QAct* acts, int64_t A, float* out) const {
    const int64_t rs = in_quads(n) ? group_bytes() : row_bytes();
    int64_t j = 0;
    if (kind != vq::F32) {  // four, three or two sequences at once share each unpacked weight
      auto batch = [&](auto count) {
        constexpr int C = decltype(count)::value;
        vq::dot_rows_batch<ROWS, C>(kind, qrow(n), drow(n), mrow(n), acts + j, (int)K, group_stride(n), rs,
                                    out + j * ROWS);
        j += C;
      };
      while (A - j >= 4) batch(std::integral_constant<int, 4>());
      if (A - j == 3) batch(std::integral_constant<int, 3>());
      if (A - j == 2) batch(std::integral_constant<int, 2>());
    }
    for (; j < A; ++j) vq::dot_rows<ROWS>(kind, qrow(n), drow(n), mrow(n), acts[j], (int)K, group_stride(n), rs, out + j * ROWS);
    if (b_ptr)
      for (int64_t jj = 0; jj < A; ++jj)
        for (int r = 0; r < ROWS; ++r) out[jj * ROWS + r] += b_ptr[n + r];
  }
};

// Activation rows quantized for the matmuls, sized for the widest input.
struct Acts {
  std::vector<int8_t> q;
  std::vector<float> d, s;
  std::vector<vq::QAct> rows;
  int64_t width = 0;
  Acts(int64_t B, int64_t K) : q(B * K), d(B * K / 32), s(B * K / 32), width(K) {
    for (int64_t b = 0; b < B; ++b)
      rows.push_back({q.data() + b * K, d.data() + b * K / 32, s.data() + b * K / 32, nullptr});
  }
  void quantize(const float* x, int64_t B, int64_t K, int64_t ld) {
    for (int64_t b = 0; b < B; ++b) {
      rows[b].x = x + b * ld;  // F32 matrices read the rows as they are
      if (quantized) vq::quantize_row(x + b * ld, (int)K, rows[b]);
    }
  }
  bool quantized = true;  // false when every matrix is F32: no block matrix reads q, d, s
};

// out[b * ld + n] (+)= W[n] . a[b] for every row n; inside a parallel region, rows split by thread.
void matvec(const QMat& W, const Acts& a, int64_t B, float* out, int64_t ld, bool accumulate) {
  const int64_t R = QMat::ROWS, quads = W.N / R;
#pragma omp for schedule(static) nowait
  for (int64_t i = 0; i < quads; ++i) {
    float v[QMat::ROWS * 64];  // [B][ROWS], B <= 64 (checked by the step)
    W.rows_dot_all(i * R, a.rows.data(), B, v);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t r = 0; r < R; ++r)
        out[b * ld + i * R + r] = accumulate ? out[b * ld + i * R + r] + v[b * R + r] : v[b * R + r];
  }
#pragma omp for schedule(static)
  for (int64_t n = quads * R; n < W.N; ++n) {  // the rows left over
    for (int64_t b = 0; b < B; ++b) {
      const float v = W.row_dot(n, a.rows[b]);
      out[b * ld + n] = accumulate ? out[b * ld + n] + v : v;
    }
  }
}

void rms_norm(const float* x, const float* w, int64_t D, float eps, float* out) {
  double ss = 0.0;
  for (int64_t i = 0; i < D; ++i) ss += (double)x[i] * x[i];
  const float r = 1.f / std::sqrt((float)(ss / D) + eps);
  for (int64_t i = 0; i < D; ++i) out[i] = x[i] * r * w[i];
}

// Hugging Face's rotate-half RoPE on one head: channel i turns with channel i + D/2.
void rope(float* v, const float* cos, const float* sin, int64_t D) {
  const int64_t half = D / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float a = v[i], b = v[i + half];
    v[i] = a * cos[i] - b * sin[i];
    v[i + half] = b * cos[i + half] + a * sin[i + half];
  }
}

struct Layer {
  at::Tensor attn_norm, ffn_norm;
  QMat qkv, o, gate_up, down;
};

class DecodeModel {
 public:
  // mats: per layer qkv, o, gate_up, down, then the head (optional), each a
  // (kind, interleaved, qs, d, m, bias).
  DecodeModel(std::vector<at::Tensor> norms, std::vector<std::tuple<int64_t, bool, at::Tensor, at::Tensor, at::Tensor, at::Tensor>> mats,
              int64_t heads, int64_t kv_heads, int64_t head_dim, double eps)
      : H(heads), Hkv(kv_heads), Dh(head_dim), eps((float)eps) {
    const int64_t L = (int64_t)norms.size() / 2;  // attn and ffn norm per layer, then the final norm
    TORCH_CHECK((int64_t)norms.size() == 2 * L + 1, "norms: two per layer and a final one");
    TORCH_CHECK((int64_t)mats.size() == 4 * L || (int64_t)mats.size() == 4 * L + 1, "mats: four per layer (+ head)");
    auto make = [&](size_t i) {
      auto& t = mats[i];
      return QMat(std::get<0>(t), std::get<1>(t), std::get<2>(t), std::get<3>(t), std::get<4>(t), std::get<5>(t));
    };
    for (int64_t l = 0; l < L; ++l) {
      layers.push_back({norms[2 * l].to(at::kFloat).contiguous(), norms[2 * l + 1].to(at::kFloat).contiguous(),
                        make(4 * l), make(4 * l + 1), make(4 * l + 2), make(4 * l + 3)});
    }
    final_norm = norms[2 * L].to(at::kFloat).contiguous();
    if ((int64_t)mats.size() == 4 * L + 1) {
      head = make(4 * L);
      has_head = true;
    }
    D = final_norm.numel();
    I = layers.empty() ? 0 : layers[0].gate_up.N / 2;
    for (auto& ly : layers) {
      TORCH_CHECK(ly.qkv.K == D && ly.qkv.N == (H + 2 * Hkv) * Dh && ly.o.K == H * Dh && ly.o.N == D, "attention shapes");
      TORCH_CHECK(ly.gate_up.K == D && ly.gate_up.N == 2 * I && ly.down.K == I && ly.down.N == D, "mlp shapes");
    }
    if (has_head) TORCH_CHECK(head.K == D, "head shape");
    for (auto& ly : layers)
      for (const QMat* w : {&ly.qkv, &ly.o, &ly.gate_up, &ly.down}) any_blocks |= w->kind != vq::F32;
    any_blocks |= has_head && head.kind != vq::F32;
  }

  // x [B, D] input embeddings; keys/values per layer [slots >= B, Hkv, capacity, Dh]; pos [B] where
  // each row's new key goes; mask [B, Lk] (nonzero = attend; Lk > every pos); cos/sin [B, Dh].
  // Returns logits [B, V] (or the final-normed hidden state [B, D] when logits is false).
  at::Tensor step(at::Tensor x_in, std::vector<at::Tensor> keys, std::vector<at::Tensor> values, at::Tensor pos,
                  at::Tensor mask, at::Tensor cos, at::Tensor sin, bool logits) {
    const int64_t B = x_in.size(0), Lk = mask.size(1), L = (int64_t)layers.size();
    TORCH_CHECK(x_in.dim() == 2 && x_in.size(1) == D && x_in.size(0) <= 64, "x must be [B <= 64, hidden]");
    TORCH_CHECK((int64_t)keys.size() == L && (int64_t)values.size() == L, "one key and value tensor per layer");
    TORCH_CHECK(!logits || has_head, "no head to give logits");
    at::Tensor x = x_in.to(at::kFloat).contiguous().clone();
    pos = pos.to(at::kLong).contiguous();
    mask = mask.to(at::kLong).contiguous();
    cos = cos.to(at::kFloat).contiguous();
    sin = sin.to(at::kFloat).contiguous();
    const int64_t cap = keys[0].size(2), slots = keys[0].size(0);
    TORCH_CHECK(slots >= B && Lk <= cap, "cache smaller than the step");
    for (int64_t l = 0; l < L; ++l) {
      TORCH_CHECK(keys[l].is_contiguous() && values[l].is_contiguous() && keys[l].scalar_type() == at::kFloat &&
                      values[l].scalar_type() == at::kFloat,
                  "fp32 contiguous cache");
    }
    const int64_t* P = pos.data_ptr<int64_t>();
    for (int64_t b = 0; b < B; ++b) TORCH_CHECK(P[b] >= 0 && P[b] < Lk, "position outside the mask");
    const int64_t Wqkv = (H + 2 * Hkv) * Dh, Kmax = std::max({D, H * Dh, I});
    std::vector<float> qkv(B * Wqkv), att(B * H * Dh), hid(B * I), xn(B * D);
    Acts acts(B, Kmax);
    acts.quantized = any_blocks;
    at::Tensor out = at::empty({B, logits ? head.N : D}, x.options());
    float* X = x.data_ptr<float>();
    const int64_t* M = mask.data_ptr<int64_t>();
    const float *C = cos.data_ptr<float>(), *S = sin.data_ptr<float>();
    std::vector<float*> Kc(L), Vc(L);
    for (int64_t l = 0; l < L; ++l) Kc[l] = keys[l].data_ptr<float>(), Vc[l] = values[l].data_ptr<float>();
    const float scale = 1.f / std::sqrt((float)Dh);
    const int64_t group = H / Hkv;
    {
      pybind11::gil_scoped_release no_gil;
#pragma omp parallel
      {
        std::vector<float> scores(Lk), q(Dh);
        for (int64_t l = 0; l < L; ++l) {
          const Layer& ly = layers[l];
#pragma omp single
          {
            for (int64_t b = 0; b < B; ++b) rms_norm(X + b * D, ly.attn_norm.data_ptr<float>(), D, eps, xn.data() + b * D);
            acts.quantize(xn.data(), B, D, D);
          }
          matvec(ly.qkv, acts, B, qkv.data(), Wqkv, false);
#pragma omp for collapse(2) schedule(static)
          for (int64_t b = 0; b < B; ++b) {
            for (int64_t g = 0; g < Hkv; ++g) {  // this row's new key (rotated) and value into the cache
              float* k = qkv.data() + b * Wqkv + (H + g) * Dh;
              const float* v = qkv.data() + b * Wqkv + (H + Hkv + g) * Dh;
              rope(k, C + b * Dh, S + b * Dh, Dh);
              const int64_t at_ = ((b * Hkv + g) * cap + P[b]) * Dh;
              std::copy(k, k + Dh, Kc[l] + at_);
              std::copy(v, v + Dh, Vc[l] + at_);
            }
          }
#pragma omp for collapse(2) schedule(static)
          for (int64_t b = 0; b < B; ++b) {
            for (int64_t h = 0; h < H; ++h) {
              std::copy(qkv.data() + b * Wqkv + h * Dh, qkv.data() + b * Wqkv + (h + 1) * Dh, q.data());
              rope(q.data(), C + b * Dh, S + b * Dh, Dh);
              const float* kb = Kc[l] + (b * Hkv + h / group) * cap * Dh;
              const float* vb = Vc[l] + (b * Hkv + h / group) * cap * Dh;
              const int64_t* mb = M + b * Lk;
              float top = -INFINITY;
              for (int64_t j = 0; j < Lk; ++j) {
                if (!mb[j]) continue;
                float s = 0.f;
#pragma omp simd reduction(+ : s)
                for (int64_t i = 0; i < Dh; ++i) s += q[i] * kb[j * Dh + i];
                scores[j] = s * scale;
                top = std::max(top, scores[j]);
              }
              float total = 0.f;
              for (int64_t j = 0; j < Lk; ++j) {
                scores[j] = mb[j] ? std::exp(scores[j] - top) : 0.f;
                total += scores[j];
              }
              float* o = att.data() + b * H * Dh + h * Dh;
              std::fill(o, o + Dh, 0.f);
              for (int64_t j = 0; j < Lk; ++j) {
                if (!mb[j]) continue;
                const float p = scores[j] / total;
#pragma omp simd
                for (int64_t i = 0; i < Dh; ++i) o[i] += p * vb[j * Dh + i];
              }
            }
          }
#pragma omp single
          acts.quantize(att.data(), B, H * Dh, H * Dh);
          matvec(ly.o, acts, B, X, D, true);
#pragma omp single
          {
            for (int64_t b = 0; b < B; ++b) rms_norm(X + b * D, ly.ffn_norm.data_ptr<float>(), D, eps, xn.data() + b * D);
            acts.quantize(xn.data(), B, D, D);
          }
          if (I % QMat::ROWS == 0) {
#pragma omp for schedule(static)
            for (int64_t r = 0; r < I; r += QMat::ROWS) {  // gate rows r.. and up rows I + r.. together
              float g[QMat::ROWS * 64], u[QMat::ROWS * 64];
              ly.gate_up.rows_dot_all(r, acts.rows.data(), B, g);
              ly.gate_up.rows_dot_all(I + r, acts.rows.data(), B, u);
              for (int64_t b = 0; b < B; ++b)
                for (int64_t k = 0; k < QMat::ROWS; ++k) {
                  const float gk = g[b * QMat::ROWS + k];
                  hid[b * I + r + k] = gk / (1.f + std::exp(-gk)) * u[b * QMat::ROWS + k];
                }
            }
          } else {
#pragma omp for schedule(static)
            for (int64_t r = 0; r < I; ++r) {  // gate row r and up row I + r together: SwiGLU in place
              for (int64_t b = 0; b < B; ++b) {
                const float g = ly.gate_up.row_dot(r, acts.rows[b]), u = ly.gate_up.row_dot(I + r, acts.rows[b]);
                hid[b * I + r] = g / (1.f + std::exp(-g)) * u;
              }
            }
          }
#pragma omp single
          acts.quantize(hid.data(), B, I, I);
          matvec(ly.down, acts, B, X, D, true);
        }
#pragma omp single
        {
          float* dst = logits ? xn.data() : out.data_ptr<float>();
          for (int64_t b = 0; b < B; ++b) rms_norm(X + b * D, final_norm.data_ptr<float>(), D, eps, dst + b * D);
          if (logits) acts.quantize(xn.data(), B, D, D);
        }
        if (logits) matvec(head, acts, B, out.data_ptr<float>(), head.N, false);
      }
    }
    return out;
  }

 private:
  std::vector<Layer> layers;
  at::Tensor final_norm;
  QMat head;
  bool has_head = false, any_blocks = false;
  int64_t H, Hkv, Dh, D = 0, I = 0;
  float eps;
};

// y [B, N] = x [B, K] @ W.T, x quantized per row as the step does it (the layer-by-layer path).
at::Tensor qmatmul(int64_t kind, bool interleaved, at::Tensor qs, at::Tensor d, at::Tensor m, at::Tensor x) {
  QMat W(kind, interleaved, qs, d, m, at::Tensor());
  x = x.to(at::kFloat).contiguous();
  TORCH_CHECK(x.dim() == 2 && x.size(1) == W.K && x.size(0) <= 64, "x must be [rows <= 64, in_features]");
  const int64_t B = x.size(0);
  Acts acts(B, W.K);
  acts.quantized = W.kind != vq::F32;
  acts.quantize(x.data_ptr<float>(), B, W.K, W.K);
  at::Tensor y = at::empty({B, W.N}, x.options());
  float* Y = y.data_ptr<float>();
  pybind11::gil_scoped_release no_gil;
#pragma omp parallel
  matvec(W, acts, B, Y, W.N, false);
  return y;
}

// The matrix as fp32 [N, K] (for prompts: a long prefill runs fp32 matmuls on it).
// qmatmul through the portable loop alone (what CPUs without AVX512-VNNI run): for tests.
at::Tensor qmatmul_portable(int64_t kind, bool interleaved, at::Tensor qs, at::Tensor d, at::Tensor m, at::Tensor x) {
  QMat W(kind, interleaved, qs, d, m, at::Tensor());
  x = x.to(at::kFloat).contiguous();
  TORCH_CHECK(x.dim() == 2 && x.size(1) == W.K && W.kind != vq::F32, "x must be [rows, in_features]");
  const int64_t B = x.size(0);
  Acts acts(B, W.K);
  acts.quantize(x.data_ptr<float>(), B, W.K, W.K);
  at::Tensor y = at::empty({B, W.N}, x.options());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t n = 0; n < W.N; ++n)
      y[b][n] = vq::dot_portable(W.kind, W.qrow(n), W.drow(n), W.mrow(n), acts.rows[b], (int)W.K, W.group_stride(n));
  return y;
}

// y [B, N] = x [B, K] @ W.T with x kept in fp32: each weight row expanded in L1 and dotted in fp32
// (a prompt's few rows, the head's last position above all, exactly as the expanded matmul).
at::Tensor qmatmul_fp32(int64_t kind, bool interleaved, at::Tensor qs, at::Tensor d, at::Tensor m, at::Tensor x) {
  QMat W(kind, interleaved, qs, d, m, at::Tensor());
  x = x.to(at::kFloat).contiguous();
  TORCH_CHECK(x.dim() == 2 && x.size(1) == W.K, "x must be [rows, in_features]");
  const int64_t B = x.size(0);
  at::Tensor y = at::empty({B, W.N}, x.options());
  const float* X = x.data_ptr<float>();
  float* Y = y.data_ptr<float>();
  pybind11::gil_scoped_release no_gil;
#pragma omp parallel
  {
    std::vector<float> row(W.K);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < W.N; ++n) {
      vq::dequantize_row(W.kind, W.qrow(n), W.drow(n), W.mrow(n), (int)W.K, W.group_stride(n), row.data());
      for (int64_t b = 0; b < B; ++b) Y[b * W.N + n] = vq::dot_f32(row.data(), X + b * W.K, (int)W.K);
    }
  }
  return y;
}

// out: where to write (a buffer reused across calls keeps a prompt's matmuls from faulting in
// fresh pages for every layer); None: a new tensor
at::Tensor dequantize(int64_t kind, bool interleaved, at::Tensor qs, at::Tensor d, at::Tensor m,
                      c10::optional<at::Tensor> into) {
  QMat W(kind, interleaved, qs, d, m, at::Tensor());
  at::Tensor w = into.has_value() ? *into : at::empty({W.N, W.K}, at::kFloat);
  TORCH_CHECK(w.scalar_type() == at::kFloat && w.is_contiguous() && w.numel() == W.N * W.K, "output buffer");
  float* out = w.data_ptr<float>();
  pybind11::gil_scoped_release no_gil;
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < W.N; ++n) vq::dequantize_row(W.kind, W.qrow(n), W.drow(n), W.mrow(n), (int)W.K, W.group_stride(n), out + n * W.K);
  return w;
}

bool vnni() {
#ifdef VISLANG_VNNI
  return true;
#else
  return false;
#endif
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("qmatmul", &qmatmul, "x @ W.T for a block-quantized W");
  m.def("dequantize", &dequantize, "a block-quantized matrix as fp32", pybind11::arg("kind"),
        pybind11::arg("interleaved"), pybind11::arg("qs"), pybind11::arg("d"), pybind11::arg("m"),
        pybind11::arg("into") = pybind11::none());
  m.def("qmatmul_portable", &qmatmul_portable, "qmatmul through the portable loop (tests)");
  m.def("qmatmul_fp32", &qmatmul_fp32, "x @ W.T for a block-quantized W, x kept in fp32");
  m.def("vnni", &vnni, "whether the AVX512-VNNI kernels were compiled in");
  pybind11::class_<DecodeModel>(m, "DecodeModel")
      .def(pybind11::init<std::vector<at::Tensor>,
                          std::vector<std::tuple<int64_t, bool, at::Tensor, at::Tensor, at::Tensor, at::Tensor>>, int64_t,
                          int64_t, int64_t, double>())
      .def("step", &DecodeModel::step);
}
