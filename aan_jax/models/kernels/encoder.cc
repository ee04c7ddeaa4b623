// The Feature AAN's encoder (norm-first self-attention layers and a final LayerNorm) as
// two fused XLA:CPU custom calls: forward, and backward (which recomputes the forward).
//
// Written by hand for performance. With d_model=8, 2 heads and 5 tokens every tensor of
// the encoder is tiny, so XLA's CPU backend runs its forward and backward as ~1,000
// small kernels per training step, each paying per-op overhead and poor vectorization
// on minor axes of 4, 5 and 8 (see the README's Speed section). Here the SIMD lanes run
// across samples: kLanes samples of one run go through all layers together, each
// scalar of the per-sample math being one vector op (GCC/Clang vector extensions, so
// any CPU the compiler targets works; -march=native picks the widest registers).
//
// The math is aan_jax.layers.Encoder's (checked against it in tests/test_kernels.py):
//   per layer  x1 = x + drop(Attn(LN1(x))),  x2 = x1 + drop(FFN(LN2(x1)))
//   FFN relu:           drop(relu(W h + b))          tanh_residual:  W drop(h + tanh h) + b
//   LN(x) = g * (x - mean) / (std + eps) + b, std unbiased (the authors' LayerNorm)
//   then a final LN.
// Dropout keeps an element when hash(seed, index) < keep * 2^32 (one lowbias32 round over
// the golden-ratio-scrambled index xor a mixed seed); an element's mask is a pure function
// of (seed, sample, layer, site, element), so forward and backward agree and a sample's
// masks do not depend on the batch around it. The XLA encoder draws these same masks
// (aan_jax.layers.encoder_dropout_masks, which documents the counters; tested equal), so
// a seed trains alike on either path.
//
// Operand layout (leading "run" axes, e.g. from vmap, are flattened into R):
//   x       f32 (R, B, T, D)        tokens
//   params  f32 (R, L * P + 2 D)    per layer its leaves in ravel_pytree order (see
//                                   LayerOffsets), then the final norm's bias and scale
//   seed    u32 (R)                 dropout seed per run
//   rates   f32 (R, 2)              per run: residual and feed-forward dropout rate, and
//                                   the attention weights' (operands, so that a sweep
//                                   trains runs with different rates in one program)
// Attributes: num_layers, num_heads, ffn (0 relu, 1 tanh_residual), eps.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kLanes = 8;  // 8 was faster than 16 here (B = 33 wastes fewer lanes)
typedef float V __attribute__((vector_size(kLanes * 4)));
typedef int32_t VI __attribute__((vector_size(kLanes * 4)));
typedef uint32_t VU __attribute__((vector_size(kLanes * 4)));

inline V Splat(float a) { return V{} + a; }

// lowbias32 (C. Wellons), as in aan_jax/prng.py; U is uint32_t or a lane vector of them.
template <class U>
inline U Mix(U x) {
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  return x ^ (x >> 16);
}

// A run's dropout key from its seed.
inline uint32_t RunKey(uint32_t seed) { return Mix(seed + 0x632BE5ABu); }

inline V Max(V a, V b) { return a > b ? a : b; }

// e^x for x <= 0 (softmax after subtracting the max) and moderate x: 2^n * p(r),
// r = x - n ln2 in [-ln2/2, ln2/2], degree-6 Taylor polynomial (relative error < 2e-7).
inline V Exp(V x) {
  x = Max(x, Splat(-87.f));
  x = x < 88.f ? x : Splat(88.f);
  const V n = __builtin_convertvector(
      __builtin_convertvector(x * 1.44269504088896341f + (x < 0 ? Splat(-0.5f) : Splat(0.5f)), VI), V);
  const V r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
  V p = Splat(1.f / 720);
  p = p * r + 1.f / 120;
  p = p * r + 1.f / 24;
  p = p * r + 1.f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  const VI bits = (__builtin_convertvector(n, VI) + 127) << 23;
  V scale;
  std::memcpy(&scale, &bits, sizeof(V));
  return p * scale;
}

inline V Tanh(V x) {  // 1 - 2 / (e^{2x} + 1), odd
  const V a = x < 0 ? -x : x;
  const V t = 1.f - 2.f / (Exp(a * 2.f) + 1.f);
  return x < 0 ? -t : t;
}

inline V Sqrt(V x) {
  V r = x;
  for (int i = 0; i < kLanes; ++i) r[i] = std::sqrt(x[i]);
  return r;
}

struct Dims {
  int64_t R, B, T, D, L, H;
  int64_t P, NP;  // parameters per layer, per run
  int ffn;
  float rate, attn_rate, eps;  // the rates: those of the run being computed
};

// Offsets into one layer's parameters: aan_jax.layers.EncoderLayer's leaves in
// jax.flatten_util.ravel_pytree's (sorted-key) order, so that the engine's flat parameter
// vector holds each layer as one contiguous slice (see aan_jax.kernels.pack_encoder_params).
// Attention kernels (d, heads, d_head) and (heads, d_head, d) read as (D, D) matrices.
struct LayerOffsets {
  int64_t bk, wk, bo, wo, bq, wq, bv, wv, bf, wf, b1, g1, b2, g2, size;
  explicit LayerOffsets(int64_t D) {
    int64_t at = 0;
    auto next = [&](int64_t n) { const int64_t r = at; at += n; return r; };
    bk = next(D); wk = next(D * D); bo = next(D); wo = next(D * D); bq = next(D);
    wq = next(D * D); bv = next(D); wv = next(D * D); bf = next(D); wf = next(D * D);
    b1 = next(D); g1 = next(D); b2 = next(D); g2 = next(D);
    size = at;
  }
};

// Dropout multipliers (0 or 1/keep) for n consecutive elements per lane; lane l's
// element i has counter base[l] + i.
inline void Masks(V* m, int64_t n, float rate, uint32_t key, VU base) {
  if (rate <= 0.f) {
    for (int64_t i = 0; i < n; ++i) m[i] = Splat(1.f);
    return;
  }
  const float keep = 1.f - rate;
  const V on = Splat(keep > 0.f ? 1.f / keep : 0.f), off = Splat(0.f);
  const double t = static_cast<double>(keep) * 4294967296.0;
  const uint32_t thresh = t >= 4294967295.0 ? 0xFFFFFFFFu : static_cast<uint32_t>(t);
  for (int64_t i = 0; i < n; ++i) {
    const VU h = Mix((base + static_cast<uint32_t>(i)) * 0x9E3779B9u ^ key);
    m[i] = h < thresh ? on : off;
  }
}

// Per-group saved values of one layer (forward), for the backward.
struct LayerCache {
  V *x, *n1, *inv1, *h1, *qkv, *p, *ma, *o, *mr1, *x1, *n2, *inv2, *h2, *u, *mf, *mr2;
};

struct Workspace {
  std::vector<V> buf;
  std::vector<LayerCache> layers;
  V *nf, *invf, *y, *t0, *t1, *t2, *t3, *dqkv;
  int64_t sites;  // dropout elements per layer and sample
  explicit Workspace(const Dims& d) {
    const int64_t T = d.T, D = d.D, H = d.H;
    // Lists every array and its size, then carves them out of one buffer.
    std::vector<std::pair<V**, int64_t>> parts;
    auto take = [&](V*& p, int64_t n) { parts.emplace_back(&p, n); };
    layers.resize(d.L);
    for (auto& c : layers) {
      take(c.x, T * D); take(c.n1, T * D); take(c.inv1, T); take(c.h1, T * D);
      take(c.qkv, T * 3 * D); take(c.p, H * T * T); take(c.ma, H * T * T);
      take(c.o, T * D); take(c.mr1, T * D); take(c.x1, T * D); take(c.n2, T * D);
      take(c.inv2, T); take(c.h2, T * D); take(c.u, T * D); take(c.mf, T * D);
      take(c.mr2, T * D);
    }
    take(nf, T * D); take(invf, T); take(y, T * D);
    take(t0, T * D); take(t1, T * D); take(t2, T * D); take(t3, T);
    take(dqkv, 3 * T * D);
    int64_t total = 0;
    for (const auto& part : parts) total += part.second;
    buf.resize(total);
    V* q = buf.data();
    for (const auto& part : parts) { *part.first = q; q += part.second; }
    sites = H * T * T + 3 * T * D;
  }
};

// y = g * (x - mean) / (std + eps) + b over the last axis; saves n and 1 / (std + eps).
inline void LayerNormFwd(const V* __restrict__ x, const float* __restrict__ g,
                         const float* __restrict__ b, V* __restrict__ n, V* __restrict__ inv,
                         V* __restrict__ y, int64_t T, int64_t D, float eps) {
  const float rd = 1.f / D, rd1 = 1.f / std::max<int64_t>(D - 1, 1);
  for (int64_t t = 0; t < T; ++t) {
    const V* xt = x + t * D;
    V mean = Splat(0.f);
    for (int64_t j = 0; j < D; ++j) mean += xt[j];
    mean *= rd;
    V ss = Splat(0.f);
    for (int64_t j = 0; j < D; ++j) ss += (xt[j] - mean) * (xt[j] - mean);
    const V iv = 1.f / (Sqrt(ss * rd1) + eps);
    inv[t] = iv;
    for (int64_t j = 0; j < D; ++j) {
      const V nj = (xt[j] - mean) * iv;
      n[t * D + j] = nj;
      y[t * D + j] = nj * g[j] + b[j];
    }
  }
}

// Adds the input gradient to dx; accumulates dg, db (per lane). dy: output gradient.
inline void LayerNormBwd(const V* __restrict__ dy, const V* __restrict__ n,
                         const V* __restrict__ inv, const float* __restrict__ g,
                         V* __restrict__ dx, V* __restrict__ dg, V* __restrict__ db, int64_t T,
                         int64_t D, float eps) {
  const float rd = 1.f / D, rd1 = 1.f / std::max<int64_t>(D - 1, 1);
  for (int64_t t = 0; t < T; ++t) {
    const V* nt = n + t * D;
    const V* dyt = dy + t * D;
    const V iv = inv[t];
    // n = c iv, iv = 1 / (s + eps), s = sqrt(sum c^2 / (D-1)), c = x - mean:
    // d iv = sum dn c = (sum dn n) / iv, ds = -d iv * iv^2, dc += ds c / ((D-1) s).
    V dn_n = Splat(0.f);
    for (int64_t j = 0; j < D; ++j) {
      dg[j] += dyt[j] * nt[j];
      db[j] += dyt[j];
      dn_n += dyt[j] * g[j] * nt[j];
    }
    const V s = 1.f / iv - eps;
    const V coef = s > 0.f ? (-dn_n * iv) * rd1 / s : Splat(0.f);
    V mean = Splat(0.f);
    V dc[256];
    for (int64_t j = 0; j < D; ++j) {
      dc[j] = dyt[j] * g[j] * iv + coef * (nt[j] / iv);
      mean += dc[j];
    }
    mean *= rd;
    for (int64_t j = 0; j < D; ++j) dx[t * D + j] += dc[j] - mean;
  }
}

// out (T, N) = in (T, K) @ W (K, N) + b; W and b are shared by the lanes. (Each output
// is one accumulator over k, so it stays in a register; an outer loop over k would load
// and store the whole output row for every k.)
// ldo: the row stride of out.
inline void Dense(const V* __restrict__ in, const float* __restrict__ W,
                  const float* __restrict__ b, V* __restrict__ out, int64_t T, int64_t K,
                  int64_t N, int64_t ldo) {
  for (int64_t t = 0; t < T; ++t) {
    const V* x = in + t * K;
    for (int64_t j = 0; j < N; ++j) {
      V acc = Splat(b[j]);
      for (int64_t k = 0; k < K; ++k) acc += x[k] * W[k * N + j];
      out[t * ldo + j] = acc;
    }
  }
}

// Backward of Dense: din += dout @ W^T (if din), dW += in^T dout, db += sum dout (per lane).
// ldo: the row stride of dout.
inline void DenseBwd(const V* __restrict__ in, const float* __restrict__ W,
                     const V* __restrict__ dout, V* __restrict__ din, V* __restrict__ dW,
                     V* __restrict__ db, int64_t T, int64_t K, int64_t N, int64_t ldo) {
  for (int64_t t = 0; t < T; ++t) {
    const V* gr = dout + t * ldo;
    for (int64_t j = 0; j < N; ++j) db[j] += gr[j];
    for (int64_t k = 0; k < K; ++k) {
      const V a = in[t * K + k];
      const float* w = W + k * N;
      V* dw = dW + k * N;
      V acc = Splat(0.f);
      for (int64_t j = 0; j < N; ++j) {
        dw[j] += a * gr[j];
        acc += gr[j] * w[j];
      }
      if (din) din[t * K + k] += acc;
    }
  }
}

// Sizes: the template arguments when non-zero (the Feature AAN's 5 tokens, width 8 and
// 2 heads are compiled as constants, so that the compiler unrolls the tiny loops), else
// the runtime ones.
#define AAN_SIZES                                      \
  const int64_t T = kT ? kT : d.T, D = kD ? kD : d.D; \
  const int64_t H = kH ? kH : d.H, dk = D / H;

// kLanes samples through all layers and the final norm; fills ws, writes ws.y (T, D).
// base: per lane, the sample's first dropout counter.
template <int64_t kT, int64_t kD, int64_t kH>
void ForwardGroup(const Dims& d, const V* x, const float* prm, uint32_t key, VU base,
                  Workspace& ws) {
  AAN_SIZES
  const LayerOffsets off(D);
  const float qscale = 1.f / std::sqrt(static_cast<float>(dk));
  V* a = ws.t0;
  const V* cur = x;
  for (int64_t l = 0; l < d.L; ++l) {
    LayerCache& c = ws.layers[l];
    const float* p = prm + l * d.P;
    VU ctr = base + static_cast<uint32_t>(l * ws.sites);
    std::memcpy(c.x, cur, sizeof(V) * T * D);
    LayerNormFwd(c.x, p + off.g1, p + off.b1, c.n1, c.inv1, c.h1, T, D, d.eps);
    Dense(c.h1, p + off.wq, p + off.bq, c.qkv, T, D, D, 3 * D);
    Dense(c.h1, p + off.wk, p + off.bk, c.qkv + D, T, D, D, 3 * D);
    Dense(c.h1, p + off.wv, p + off.bv, c.qkv + 2 * D, T, D, D, 3 * D);
    Masks(c.ma, H * T * T, d.attn_rate, key, ctr);
    ctr += static_cast<uint32_t>(H * T * T);
    for (int64_t i = 0; i < T * D; ++i) c.o[i] = Splat(0.f);
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t i = 0; i < T; ++i) {
        const V* q = c.qkv + i * 3 * D + h * dk;
        V* pr = c.p + (h * T + i) * T;
        V mx = Splat(-INFINITY);
        for (int64_t j = 0; j < T; ++j) {
          const V* k = c.qkv + j * 3 * D + D + h * dk;
          V s = Splat(0.f);
          for (int64_t e = 0; e < dk; ++e) s += q[e] * k[e];
          pr[j] = s * qscale;
          mx = Max(mx, pr[j]);
        }
        V sum = Splat(0.f);
        for (int64_t j = 0; j < T; ++j) { pr[j] = Exp(pr[j] - mx); sum += pr[j]; }
        const V is = 1.f / sum;
        for (int64_t j = 0; j < T; ++j) pr[j] *= is;
        const V* m = c.ma + (h * T + i) * T;
        V* o = c.o + i * D + h * dk;
        for (int64_t j = 0; j < T; ++j) {
          const V w = pr[j] * m[j];
          const V* v = c.qkv + j * 3 * D + 2 * D + h * dk;
          for (int64_t e = 0; e < dk; ++e) o[e] += w * v[e];
        }
      }
    }
    Dense(c.o, p + off.wo, p + off.bo, a, T, D, D, D);
    Masks(c.mr1, T * D, d.rate, key, ctr);
    ctr += static_cast<uint32_t>(T * D);
    for (int64_t i = 0; i < T * D; ++i) c.x1[i] = c.x[i] + a[i] * c.mr1[i];
    LayerNormFwd(c.x1, p + off.g2, p + off.b2, c.n2, c.inv2, c.h2, T, D, d.eps);
    Masks(c.mf, T * D, d.rate, key, ctr);
    ctr += static_cast<uint32_t>(T * D);
    Masks(c.mr2, T * D, d.rate, key, ctr);
    V* out = (l + 1 < d.L) ? ws.layers[l + 1].x : ws.t1;  // next layer's input
    if (d.ffn == 0) {
      Dense(c.h2, p + off.wf, p + off.bf, c.u, T, D, D, D);
      for (int64_t i = 0; i < T * D; ++i)
        out[i] = c.x1[i] + Max(c.u[i], Splat(0.f)) * c.mf[i] * c.mr2[i];
    } else {
      for (int64_t i = 0; i < T * D; ++i) c.u[i] = (c.h2[i] + Tanh(c.h2[i])) * c.mf[i];
      Dense(c.u, p + off.wf, p + off.bf, a, T, D, D, D);
      for (int64_t i = 0; i < T * D; ++i) out[i] = c.x1[i] + a[i] * c.mr2[i];
    }
    cur = out;
  }
  const float* fin = prm + d.L * d.P;
  LayerNormFwd(cur, fin + D, fin, ws.nf, ws.invf, ws.y, T, D, d.eps);  // [bias, scale]
}

// Backward of one group: dx (T, D) and accumulates per-lane parameter gradients dprm.
// Expects ws from ForwardGroup.
template <int64_t kT, int64_t kD, int64_t kH>
void BackwardGroup(const Dims& d, const float* prm, Workspace& ws, const V* dy, V* dx,
                   V* dprm) {
  AAN_SIZES
  const LayerOffsets off(D);
  const float qscale = 1.f / std::sqrt(static_cast<float>(dk));
  V* g = dx;  // running gradient w.r.t. the current layer's output, then input
  V* g1 = ws.t0;
  V* t1 = ws.t1;
  V* t2 = ws.t2;
  V* dp = ws.t3;
  V* dqkv = ws.dqkv;
  const float* fin = prm + d.L * d.P;
  V* dfin = dprm + d.L * d.P;
  for (int64_t i = 0; i < T * D; ++i) g[i] = Splat(0.f);
  LayerNormBwd(dy, ws.nf, ws.invf, fin + D, g, dfin + D, dfin, T, D, d.eps);
  for (int64_t l = d.L - 1; l >= 0; --l) {
    const LayerCache& c = ws.layers[l];
    const float* p = prm + l * d.P;
    V* dpl = dprm + l * d.P;
    // Feed-forward branch, x2 = x1 + FFN(LN2(x1)); g = d x2.
    std::memcpy(g1, g, sizeof(V) * T * D);  // d x1 from the residual
    for (int64_t i = 0; i < T * D; ++i) t1[i] = Splat(0.f);  // d h2
    if (d.ffn == 0) {
      for (int64_t i = 0; i < T * D; ++i)
        t2[i] = c.u[i] > 0.f ? g[i] * c.mr2[i] * c.mf[i] : Splat(0.f);
      DenseBwd(c.h2, p + off.wf, t2, t1, dpl + off.wf, dpl + off.bf, T, D, D, D);
    } else {
      for (int64_t i = 0; i < T * D; ++i) t2[i] = g[i] * c.mr2[i];
      DenseBwd(c.u, p + off.wf, t2, t1, dpl + off.wf, dpl + off.bf, T, D, D, D);
      for (int64_t i = 0; i < T * D; ++i) {
        const V th = Tanh(c.h2[i]);
        t1[i] = t1[i] * c.mf[i] * (2.f - th * th);
      }
    }
    LayerNormBwd(t1, c.n2, c.inv2, p + off.g2, g1, dpl + off.g2, dpl + off.b2, T, D, d.eps);
    // Attention branch, x1 = x + drop(Wo o + bo); g1 = d x1.
    std::memcpy(g, g1, sizeof(V) * T * D);  // d x from the residual
    for (int64_t i = 0; i < T * D; ++i) { t2[i] = g1[i] * c.mr1[i]; t1[i] = Splat(0.f); }
    DenseBwd(c.o, p + off.wo, t2, t1, dpl + off.wo, dpl + off.bo, T, D, D, D);  // t1 = d o
    for (int64_t i = 0; i < 3 * T * D; ++i) dqkv[i] = Splat(0.f);
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t i = 0; i < T; ++i) {
        const V* pr = c.p + (h * T + i) * T;
        const V* m = c.ma + (h * T + i) * T;
        const V* go = t1 + i * D + h * dk;
        V dot = Splat(0.f);
        for (int64_t j = 0; j < T; ++j) {
          const V* v = c.qkv + j * 3 * D + 2 * D + h * dk;
          V* dv = dqkv + j * 3 * D + 2 * D + h * dk;
          V s = Splat(0.f);
          const V w = pr[j] * m[j];
          for (int64_t e = 0; e < dk; ++e) { s += go[e] * v[e]; dv[e] += w * go[e]; }
          dp[j] = s * m[j];  // d P (before dropout)
          dot += dp[j] * pr[j];
        }
        const V* q = c.qkv + i * 3 * D + h * dk;
        V* dq = dqkv + i * 3 * D + h * dk;
        for (int64_t j = 0; j < T; ++j) {
          const V ds = pr[j] * (dp[j] - dot) * qscale;
          const V* k = c.qkv + j * 3 * D + D + h * dk;
          V* dkp = dqkv + j * 3 * D + D + h * dk;
          for (int64_t e = 0; e < dk; ++e) { dq[e] += ds * k[e]; dkp[e] += ds * q[e]; }
        }
      }
    }
    for (int64_t i = 0; i < T * D; ++i) t1[i] = Splat(0.f);  // d h1
    DenseBwd(c.h1, p + off.wq, dqkv, t1, dpl + off.wq, dpl + off.bq, T, D, D, 3 * D);
    DenseBwd(c.h1, p + off.wk, dqkv + D, t1, dpl + off.wk, dpl + off.bk, T, D, D, 3 * D);
    DenseBwd(c.h1, p + off.wv, dqkv + 2 * D, t1, dpl + off.wv, dpl + off.bv, T, D, D, 3 * D);
    LayerNormBwd(t1, c.n1, c.inv1, p + off.g1, g, dpl + off.g1, dpl + off.b1, T, D, d.eps);
  }
}

ffi::Error ReadDims(ffi::Buffer<ffi::F32>& x, ffi::Buffer<ffi::F32>& params,
                    ffi::Buffer<ffi::U32>& seed, ffi::Buffer<ffi::F32>& rates,
                    int64_t num_layers, int64_t num_heads, int64_t ffn, float eps, Dims& d) {
  auto xd = x.dimensions();
  if (xd.size() < 3) return ffi::Error::InvalidArgument("x must be (..., B, T, D)");
  d.D = xd[xd.size() - 1]; d.T = xd[xd.size() - 2]; d.B = xd[xd.size() - 3];
  d.R = 1;
  for (size_t i = 0; i + 3 < xd.size(); ++i) d.R *= xd[i];
  d.L = num_layers; d.H = num_heads; d.ffn = static_cast<int>(ffn);
  d.rate = 0.f; d.attn_rate = 0.f; d.eps = eps;
  if (d.H <= 0 || d.D % d.H) return ffi::Error::InvalidArgument("D must divide into heads");
  if (d.D > 256 || d.L < 1)
    return ffi::Error::InvalidArgument("the encoder kernel supports 1 <= d_model <= 256");
  d.P = LayerOffsets(d.D).size;
  d.NP = d.L * d.P + 2 * d.D;
  if (static_cast<int64_t>(params.element_count()) != d.R * d.NP)
    return ffi::Error::InvalidArgument("params has the wrong size for these dims");
  if (static_cast<int64_t>(seed.element_count()) != d.R)
    return ffi::Error::InvalidArgument("seed must have one element per run");
  if (static_cast<int64_t>(rates.element_count()) != 2 * d.R)
    return ffi::Error::InvalidArgument("rates must have two elements per run");
  return ffi::Error::Success();
}

// Run r's dims: d with that run's dropout rates.
inline Dims RunDims(const Dims& d, const float* rates, int64_t r) {
  Dims dr = d;
  dr.rate = rates[2 * r];
  dr.attn_rate = rates[2 * r + 1];
  return dr;
}

// Samples b0 .. b0 + kLanes - 1 of one run, lane-major (x[t * D + j][lane]); lanes past B
// are zero.
inline void LoadGroup(const float* x, int64_t b0, int64_t B, int64_t per, V* out) {
  for (int64_t i = 0; i < per; ++i) out[i] = Splat(0.f);
  for (int lane = 0; lane < kLanes && b0 + lane < B; ++lane) {
    const float* xs = x + (b0 + lane) * per;
    for (int64_t i = 0; i < per; ++i) out[i][lane] = xs[i];
  }
}

inline void StoreGroup(const V* in, int64_t b0, int64_t B, int64_t per, float* x) {
  for (int lane = 0; lane < kLanes && b0 + lane < B; ++lane) {
    float* xs = x + (b0 + lane) * per;
    for (int64_t i = 0; i < per; ++i) xs[i] = in[i][lane];
  }
}

inline VU GroupBase(const Dims& d, int64_t b0, int64_t sites) {
  VU base;
  for (int lane = 0; lane < kLanes; ++lane)
    base[lane] = static_cast<uint32_t>((b0 + lane) * d.L * sites);
  return base;
}

template <int64_t kT, int64_t kD, int64_t kH>
void ForwardAll(const Dims& d, const float* x, const float* params, const uint32_t* seed,
                const float* rates, float* y) {
  Workspace ws(d);
  const int64_t per = d.T * d.D, np = d.NP;
  std::vector<V> xg(per);
  for (int64_t r = 0; r < d.R; ++r) {
    const uint32_t key = RunKey(seed[r]);
    const Dims dr = RunDims(d, rates, r);
    for (int64_t b0 = 0; b0 < d.B; b0 += kLanes) {
      LoadGroup(x + r * d.B * per, b0, d.B, per, xg.data());
      ForwardGroup<kT, kD, kH>(dr, xg.data(), params + r * np, key, GroupBase(d, b0, ws.sites), ws);
      StoreGroup(ws.y, b0, d.B, per, y + r * d.B * per);
    }
  }
}

template <int64_t kT, int64_t kD, int64_t kH>
void BackwardAll(const Dims& d, const float* x, const float* params, const uint32_t* seed,
                 const float* rates, const float* dy, float* dx, float* dparams) {
  Workspace ws(d);
  const int64_t per = d.T * d.D, np = d.NP;
  std::vector<V> xg(per), dyg(per), dxg(per), acc(np);
  for (int64_t r = 0; r < d.R; ++r) {
    const uint32_t key = RunKey(seed[r]);
    const Dims dr = RunDims(d, rates, r);
    const float* prm = params + r * np;
    for (auto& v : acc) v = Splat(0.f);
    for (int64_t b0 = 0; b0 < d.B; b0 += kLanes) {
      LoadGroup(x + r * d.B * per, b0, d.B, per, xg.data());
      LoadGroup(dy + r * d.B * per, b0, d.B, per, dyg.data());
      ForwardGroup<kT, kD, kH>(dr, xg.data(), prm, key, GroupBase(d, b0, ws.sites), ws);
      BackwardGroup<kT, kD, kH>(dr, prm, ws, dyg.data(), dxg.data(), acc.data());
      StoreGroup(dxg.data(), b0, d.B, per, dx + r * d.B * per);
    }
    for (int64_t i = 0; i < np; ++i) {
      float s = 0.f;
      for (int lane = 0; lane < kLanes; ++lane) s += acc[i][lane];
      dparams[r * np + i] = s;
    }
  }
}

// Calls f(kT, kD, kH) with the sizes as std::integral_constant: the Feature AAN's
// compiled as constants, any other through the runtime path (0, 0, 0).
template <class F>
void WithSizes(const Dims& d, F&& f) {
  using std::integral_constant;
  if (d.T == 5 && d.D == 8 && d.H == 2)
    f(integral_constant<int64_t, 5>{}, integral_constant<int64_t, 8>{},
      integral_constant<int64_t, 2>{});
  else
    f(integral_constant<int64_t, 0>{}, integral_constant<int64_t, 0>{},
      integral_constant<int64_t, 0>{});
}

ffi::Error EncoderFwdImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> params,
                          ffi::Buffer<ffi::U32> seed, ffi::Buffer<ffi::F32> rates,
                          ffi::ResultBuffer<ffi::F32> y, int64_t num_layers,
                          int64_t num_heads, int64_t ffn, float eps) {
  Dims d;
  ffi::Error err = ReadDims(x, params, seed, rates, num_layers, num_heads, ffn, eps, d);
  if (err.failure()) return err;
  WithSizes(d, [&](auto t, auto e, auto h) {
    ForwardAll<decltype(t)::value, decltype(e)::value, decltype(h)::value>(
        d, x.typed_data(), params.typed_data(), seed.typed_data(), rates.typed_data(),
        y->typed_data());
  });
  return ffi::Error::Success();
}

ffi::Error EncoderBwdImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> params,
                          ffi::Buffer<ffi::U32> seed, ffi::Buffer<ffi::F32> rates,
                          ffi::Buffer<ffi::F32> dy, ffi::ResultBuffer<ffi::F32> dx,
                          ffi::ResultBuffer<ffi::F32> dparams, int64_t num_layers,
                          int64_t num_heads, int64_t ffn, float eps) {
  Dims d;
  ffi::Error err = ReadDims(x, params, seed, rates, num_layers, num_heads, ffn, eps, d);
  if (err.failure()) return err;
  WithSizes(d, [&](auto t, auto e, auto h) {
    BackwardAll<decltype(t)::value, decltype(e)::value, decltype(h)::value>(
        d, x.typed_data(), params.typed_data(), seed.typed_data(), rates.typed_data(),
        dy.typed_data(), dx->typed_data(), dparams->typed_data());
  });
  return ffi::Error::Success();
}

}  // namespace

// For tests: the dropout multipliers of n * lanes consecutive counters from `base` (the
// kernel's own mask code, lane by lane), written to out; returns the lane count.
extern "C" int AanDropoutProbe(int64_t n, float rate, uint32_t seed, uint32_t base, float* out) {
  std::vector<V> m(n);
  VU b;
  for (int lane = 0; lane < kLanes; ++lane) b[lane] = base + static_cast<uint32_t>(lane * n);
  Masks(m.data(), n, rate, RunKey(seed), b);
  for (int lane = 0; lane < kLanes; ++lane)
    for (int64_t i = 0; i < n; ++i) out[lane * n + i] = m[i][lane];
  return kLanes;
}

#define AAN_BIND_ATTRS                 \
  .Attr<int64_t>("num_layers")         \
      .Attr<int64_t>("num_heads")      \
      .Attr<int64_t>("ffn")            \
      .Attr<float>("eps")

XLA_FFI_DEFINE_HANDLER_SYMBOL(AanEncoderFwd, EncoderFwdImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::U32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>() AAN_BIND_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(AanEncoderBwd, EncoderBwdImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::U32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>() AAN_BIND_ATTRS);
