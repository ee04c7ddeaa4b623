"""VAANet's forward pass after the backbone in PyTorch, written from ../shared/VAANET.md.

For parity tests only. Attribute names give the authors' state-dict keys (conv0.0.weight,
sa_net.conv.0.weight, a_resnet.5.0.downsample.1.running_var, ...). Tensors follow the
authors' layouts: per-snippet rows ordered n = s * B + b, channels first. The visual
input is what the backbone gives: [B, S, C, P] per snippet map (squeezed t, flattened h*w).
"""

import torch
import torch.nn.functional as F
import torchvision
from torch import nn


def _attention_unit(in_channels, length, fc_bias):
  unit = nn.Module()
  unit.conv = nn.Sequential(nn.Conv1d(in_channels, 1, 1, bias=False), nn.BatchNorm1d(1),
                            nn.Tanh())
  unit.fc = nn.Linear(length, length, bias=fc_bias)
  return unit


class TorchVAANet(nn.Module):
  def __init__(self, num_classes=8, seq_len=12, positions=16, backbone_dim=2048, hidden=512,
               audio_segments=16, audio_frames=256, audio_widths=(64, 128, 256, 512),
               audio_dim=256):
    super().__init__()
    self.seq_len, self.positions, self.hidden = seq_len, positions, hidden
    self.audio_segments, self.audio_frames = audio_segments, audio_frames
    self.conv0 = nn.Sequential(nn.Conv1d(backbone_dim, hidden, 1), nn.BatchNorm1d(hidden),
                               nn.ReLU())
    self.sa_net = _attention_unit(hidden, positions, False)
    self.cwa_net = _attention_unit(positions, hidden, False)
    self.ta_net = _attention_unit(hidden, seq_len, True)
    self.fc = nn.Linear(hidden, num_classes)  # VisualStream's: in the state dict, unused
    body = torchvision.models.resnet18(weights=None)
    if tuple(audio_widths) != (64, 128, 256, 512):  # tiny widths for fast tests
      body = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [2, 2, 2, 2])
      body.inplanes = audio_widths[0]
      body.conv1 = nn.Conv2d(3, audio_widths[0], 7, 2, 3, bias=False)
      body.bn1 = nn.BatchNorm2d(audio_widths[0])
      for i, w in enumerate(audio_widths):
        setattr(body, f"layer{i + 1}", body._make_layer(torchvision.models.resnet.BasicBlock, w, 2,
                                                        stride=1 if i == 0 else 2))
    self.a_resnet = nn.Sequential(
        nn.Conv2d(1, audio_widths[0], (7, 1), (2, 1), (3, 0), bias=False),
        body.bn1, body.relu, body.maxpool, body.layer1, body.layer2, body.layer3, body.layer4)
    self.a_fc = nn.Sequential(nn.Linear(audio_widths[-1], audio_dim), nn.BatchNorm1d(audio_dim),
                              nn.Tanh())
    self.aa_net = _attention_unit(audio_dim, audio_segments, True)
    self.av_fc = nn.Linear(hidden + audio_dim, num_classes)

  def forward(self, visual, audio):
    # visual: [B, S, C, P] backbone maps; audio: [B, T, n_mfcc].
    b, s = visual.shape[:2]
    x = visual.transpose(0, 1).reshape(s * b, visual.shape[2], visual.shape[3])  # n = s*B + b
    f = self.conv0(x)                                                # [N, H, P]
    a_s = self.sa_net.conv(f).squeeze(1)                             # [N, P]
    a_s = F.softmax(self.sa_net.fc(a_s), dim=-1) * self.positions
    alpha = a_s.view(s, b, -1)
    fs = f * a_s.unsqueeze(1)                                        # [N, H, P]
    a_c = self.cwa_net.conv(fs.transpose(1, 2)).squeeze(1)           # [N, H]
    a_c = F.softmax(self.cwa_net.fc(a_c), dim=-1) * self.hidden
    beta = a_c.view(s, b, -1)
    v = (fs * a_c.unsqueeze(2)).mean(dim=2)                          # [N, H]
    v = v.view(s, b, -1).permute(1, 2, 0)                            # [B, H, S]
    g = self.ta_net.conv(v).squeeze(1)                               # [B, S]
    gamma = F.relu(self.ta_net.fc(g))
    f_v = (v * gamma.unsqueeze(1)).mean(dim=2)                       # [B, H]

    segs = audio.view(b, self.audio_segments, self.audio_frames, audio.shape[-1])
    segs = segs.transpose(0, 1).reshape(self.audio_segments * b, 1, self.audio_frames, -1)
    a = self.a_resnet(segs)
    a = F.avg_pool2d(a, a.shape[-2:]).flatten(1)                     # the 8 x 2 map's mean
    e = self.a_fc(a).view(self.audio_segments, b, -1).permute(1, 2, 0)  # [B, A, J]
    aa = F.relu(self.aa_net.fc(self.aa_net.conv(e).squeeze(1)))      # [B, J]
    f_a = (e * aa.unsqueeze(1)).mean(dim=2)
    logits = self.av_fc(torch.cat([f_v, f_a], dim=1))
    return logits, alpha, beta, gamma, aa


def pcce(logits, labels, positive=(1, 4, 6, 7), lam=0.5):
  """The authors' PCCE as VAANET.md states it: per-sample CE x (1 + lam on polarity flips)."""
  pos = torch.zeros(logits.shape[1], dtype=torch.bool)
  pos[list(positive)] = True
  pred = logits.argmax(1)
  w = 1.0 + lam * (pos[pred] != pos[labels]).float()
  return (F.cross_entropy(logits, labels, reduction="none") * w).mean()
