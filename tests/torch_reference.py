"""The authors' Feature AttendAffectNet forward pass, in PyTorch, for parity tests.

Written from the class sources that the released legacy pickles carry (read with
`aan_jax.convert.torch_pickle`, never executed): Annotated-Transformer style encoder with
norm-first sublayers, their LayerNorm (unbiased std, eps on the std), a single-linear
feed-forward in one of two forms, mean pooling over modality tokens, optional tanh.
Parameters are loaded by their original state-dict names, so a mistake in our converter's
name mapping cannot be mirrored here. With `dropout` > 0 (in train mode) it is also the
PyTorch training loop's model in benchmarks/torch_feature_aan.py: one reference, tested.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm(nn.Module):
  def __init__(self, features, eps=1e-6):
    super().__init__()
    self.a_2 = nn.Parameter(torch.ones(features))
    self.b_2 = nn.Parameter(torch.zeros(features))
    self.eps = eps

  def forward(self, x):
    mean = x.mean(-1, keepdim=True)
    std = x.std(-1, keepdim=True)
    return self.a_2 * (x - mean) / (std + self.eps) + self.b_2


def attention(query, key, value, dropout=None):
  d_k = query.size(-1)
  scores = torch.matmul(query, key.transpose(-2, -1)) / math.sqrt(d_k)
  p_attn = F.softmax(scores, dim=-1)
  if dropout is not None:
    p_attn = dropout(p_attn)
  return torch.matmul(p_attn, value)


class MultiHeadedAttention(nn.Module):
  def __init__(self, h, d_model, dropout=0.0):
    super().__init__()
    self.d_k, self.h = d_model // h, h
    self.linears = nn.ModuleList([nn.Linear(d_model, d_model) for _ in range(4)])
    self.dropout = nn.Dropout(dropout)

  def forward(self, query, key, value):
    nb = query.size(0)
    query, key, value = [l(x).view(nb, -1, self.h, self.d_k).transpose(1, 2)
                         for l, x in zip(self.linears, (query, key, value))]
    x = attention(query, key, value, self.dropout)
    x = x.transpose(1, 2).contiguous().view(nb, -1, self.h * self.d_k)
    return self.linears[-1](x)


class PositionwiseFeedForward(nn.Module):
  def __init__(self, d_model, kind, dropout=0.0):
    super().__init__()
    self.w = nn.Linear(d_model, d_model)
    self.kind = kind
    self.dropout = nn.Dropout(dropout)

  def forward(self, x):
    if self.kind == "relu":
      return self.dropout(F.relu(self.w(x)))
    return self.w(self.dropout(x + torch.tanh(x)))


class SublayerConnection(nn.Module):
  def __init__(self, size, dropout=0.0):
    super().__init__()
    self.norm = LayerNorm(size)
    self.dropout = nn.Dropout(dropout)

  def forward(self, x, sublayer):
    return x + self.dropout(sublayer(self.norm(x)))


class EncoderLayer(nn.Module):
  def __init__(self, size, h, kind, dropout=0.0):
    super().__init__()
    self.self_attn = MultiHeadedAttention(h, size, dropout)
    self.feed_forward = PositionwiseFeedForward(size, kind, dropout)
    self.sublayer = nn.ModuleList([SublayerConnection(size, dropout) for _ in range(2)])

  def forward(self, x):
    x = self.sublayer[0](x, lambda x: self.self_attn(x, x, x))
    return self.sublayer[1](x, self.feed_forward)


class Encoder(nn.Module):
  def __init__(self, size, h, n, kind, dropout=0.0):
    super().__init__()
    self.layers = nn.ModuleList([EncoderLayer(size, h, kind, dropout) for _ in range(n)])
    self.norm = LayerNorm(size)

  def forward(self, x):
    for layer in self.layers:
      x = layer(x)
    return self.norm(x)


class AuthorsFeatureAAN(nn.Module):
  """Encoder_FullyConnected of the released files (eval mode: dropout is identity)."""

  def __init__(self, proj_names_dims, d_model, h, n, kind, output_tanh, dropout=0.0):
    super().__init__()
    self.proj_names = [name for name, _ in proj_names_dims]
    for name, dim in proj_names_dims:
      setattr(self, name, nn.Linear(dim, d_model))
    self.encoder = Encoder(d_model, h, n, kind, dropout)
    self.dropout = nn.Dropout(dropout)
    self.linear = nn.Linear(d_model, 1)
    self.output_tanh = output_tanh

  def forward(self, *srcs):
    # Each src is (batch, 1, dim): their data loader yields one token per modality.
    src = torch.cat([getattr(self, n)(s) for n, s in zip(self.proj_names, srcs)], dim=1)
    temp = self.encoder(src).permute(0, 2, 1)
    pooled = F.avg_pool1d(temp, temp.shape[-1]).squeeze(-1)
    if self.output_tanh:
      pooled = torch.tanh(pooled)
    return self.linear(self.dropout(pooled))
