"""The comparison: a plain per-fold PyTorch loop of the Feature AAN, the authors' way.

One fold after another, a DataLoader over the fold's training segments (batch 30,
shuffled), Adam, the paper's loss. The model is the released audio+video Feature AAN
(norm-first encoder, their LayerNorm, one-linear ReLU feed-forward): the PyTorch reference
of the parity tests (tests/torch_reference.py) with dropout 0.1.
"""

from __future__ import annotations

import time

import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
import torch_reference  # noqa: E402  pylint: disable=wrong-import-position

DIMS = {"resnet50": 2048, "flownet": 1024, "i3d": 1024, "vggish": 128, "emobase2010": 1582}


def FeatureAAN(d=8, h=2, layers=6, p=0.1):  # pylint: disable=invalid-name
  """The released audio+video Feature AAN with dropout p: the tests' PyTorch reference
  (tests/torch_reference.py, checked against the authors' released models), so that the
  baseline is the model the parity tests trust, not a second copy."""
  return torch_reference.AuthorsFeatureAAN(
      [(f"linear{i + 1}", dim) for i, dim in enumerate(DIMS.values())], d, h, layers,
      "relu", output_tanh=False, dropout=p)


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
        loss = aan_loss(model(*(f[:, None] for f in x))[:, 0], y)
        loss.backward()
        opt.step()
        steps += 1
    model.eval()
    with torch.no_grad():
      keep = mask[h]
      pred = model(*(f[h][keep][:, None] for f in feats))[:, 0]
      mses.append(float(((pred - y_all[h][keep]) ** 2).mean()))
  if device != "cpu":
    torch.cuda.synchronize()
  return time.time() - t0, steps, np.asarray(mses)
