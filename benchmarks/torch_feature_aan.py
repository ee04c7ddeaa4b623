"""The comparison: a plain per-fold PyTorch loop of the Feature AAN, the authors' way.

One fold after another, a DataLoader over the fold's training segments (batch 30,
shuffled), Adam, the paper's loss. The model is the released audio+video Feature AAN
(norm-first encoder, their LayerNorm, one-linear ReLU feed-forward), written here from
DESIGN.md; it exists only as the benchmark's baseline.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

DIMS = {"resnet50": 2048, "flownet": 1024, "i3d": 1024, "vggish": 128, "emobase2010": 1582}


class LayerNorm(nn.Module):
  """a * (x - mean) / (std + eps) + b with the unbiased std, as in the released code."""

  def __init__(self, d, eps=1e-6):
    super().__init__()
    self.a, self.b, self.eps = nn.Parameter(torch.ones(d)), nn.Parameter(torch.zeros(d)), eps

  def forward(self, x):
    return self.a * (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + self.eps) + self.b


class Attention(nn.Module):
  def __init__(self, d, h, p):
    super().__init__()
    self.h, self.dk = h, d // h
    self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
    self.drop = nn.Dropout(p)

  def forward(self, x):
    b, n, d = x.shape
    split = lambda t: t.view(b, n, self.h, self.dk).transpose(1, 2)
    q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
    w = self.drop(torch.softmax(q @ k.transpose(-2, -1) / self.dk ** 0.5, -1))
    return self.o((w @ v).transpose(1, 2).reshape(b, n, d))


class Layer(nn.Module):
  def __init__(self, d, h, p):
    super().__init__()
    self.attn, self.ff = Attention(d, h, p), nn.Linear(d, d)
    self.n1, self.n2, self.drop = LayerNorm(d), LayerNorm(d), nn.Dropout(p)

  def forward(self, x):
    x = x + self.drop(self.attn(self.n1(x)))
    return x + self.drop(self.drop(torch.relu(self.ff(self.n2(x)))))


class FeatureAAN(nn.Module):
  def __init__(self, d=8, h=2, layers=6, p=0.1):
    super().__init__()
    self.proj = nn.ModuleList(nn.Linear(dim, d) for dim in DIMS.values())
    self.layers = nn.ModuleList(Layer(d, h, p) for _ in range(layers))
    self.norm, self.drop, self.head = LayerNorm(d), nn.Dropout(p), nn.Linear(d, 1)

  def forward(self, *feats):
    x = torch.stack([lin(f) for lin, f in zip(self.proj, feats)], 1)
    for layer in self.layers:
      x = layer(x)
    return self.head(self.drop(self.norm(x).mean(1)))[:, 0]


def aan_loss(pred, y):
  mse = ((pred - y) ** 2).mean()
  dp, dy = pred - pred.mean(), y - y.mean()
  denom = torch.sqrt((dp ** 2).sum() * (dy ** 2).sum())
  pcc = torch.where(denom > 1e-8, (dp * dy).sum() / denom.clamp_min(1e-8), torch.zeros(()))
  return mse + 1 - pcc


def train_folds(corpus, target="arousal", epochs=20, folds=None, batch_size=30, lr=5e-4,
                seed=0, device="cpu"):
  """Leave-one-movie-out, one fold after another; returns (seconds, steps, held-out MSEs).

  With device="cuda" the fold's data live on the GPU and the DataLoader draws index
  batches there (as a GPU user of the authors' code would run it).
  """
  torch.manual_seed(seed)
  m = corpus.mask.shape[0]
  folds = range(m) if folds is None else folds
  feats = [torch.from_numpy(corpus.features[k]).to(device) for k in DIMS]
  y_all = torch.from_numpy(corpus.targets[target]).to(device)
  mask = torch.from_numpy(corpus.mask).to(device)
  t0, steps, mses = time.time(), 0, []
  for h in folds:
    train = mask.clone()
    train[h] = False
    ds = torch.utils.data.TensorDataset(*(f[train] for f in feats), y_all[train])
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True)
    model = FeatureAAN().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
      for *x, y in loader:
        opt.zero_grad()
        loss = aan_loss(model(*x), y)
        loss.backward()
        opt.step()
        steps += 1
    model.eval()
    with torch.no_grad():
      keep = mask[h]
      pred = model(*(f[h][keep] for f in feats))
      mses.append(float(((pred - y_all[h][keep]) ** 2).mean()))
  if device != "cpu":
    torch.cuda.synchronize()
  return time.time() - t0, steps, np.asarray(mses)
