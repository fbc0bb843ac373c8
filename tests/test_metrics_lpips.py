"""LPIPS (NNX) against the lpips package's computation written in PyTorch, random weights.

The torch side builds `features` exactly as torchvision's alexnet / vgg16 do (same module
indices, so the same state-dict keys) and the lpips v0.1 forward: scaling layer, ReLU taps,
channel unit-normalisation, squared difference, 1x1 linear heads `lin<l>.model.1`,
spatial mean, sum over layers."""

import numpy as np
import pytest
import torch

from controlnext_jax.errors import UserError
from controlnext_jax.metrics.lpips import LPIPSMetric, load_lpips

nn = torch.nn

ALEX_TAPS = (1, 4, 7, 9, 11)  # ReLU indices in torchvision alexnet.features
VGG_TAPS = (3, 8, 15, 22, 29)


def _alexnet_features():
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2), nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(),
        nn.MaxPool2d(3, 2), nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(), nn.Conv2d(384, 256, 3, padding=1),
        nn.ReLU(), nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2))


def _vgg16_features():
    layers, c = [], 3
    for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
            c = v
    return nn.Sequential(*layers)


def _torch_lpips(features, taps, lins, x0, x1):
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    outs = []
    for x in (x0, x1):
        h, feats = (x - shift) / scale, []
        for i, layer in enumerate(features):
            h = layer(h)
            if i in taps:
                feats.append(h)
        outs.append(feats)
    total = 0
    for (f0, f1), lin in zip(zip(*outs), lins):
        n0 = f0 / (torch.sqrt(torch.sum(f0 ** 2, dim=1, keepdim=True)) + 1e-10)
        n1 = f1 / (torch.sqrt(torch.sum(f1 ** 2, dim=1, keepdim=True)) + 1e-10)
        total = total + lin((n0 - n1) ** 2).mean(dim=(2, 3), keepdim=True)
    return total.view(-1)


@pytest.mark.parametrize("net, build, taps, size", [("alex", _alexnet_features, ALEX_TAPS, 64),
                                                    ("vgg", _vgg16_features, VGG_TAPS, 32)])
def test_lpips_matches_torch(tmp_path, net, build, taps, size):
    torch.manual_seed(0)
    holder = nn.Module()
    holder.features = build()
    chans = [holder.features[i - 1].out_channels for i in taps]
    lins = nn.ModuleDict({f"lin{i}": nn.Sequential(nn.Dropout(), nn.Conv2d(c, 1, 1, bias=False))
                          for i, c in enumerate(chans)})
    with torch.no_grad():
        for seq in lins.values():
            seq[1].weight.uniform_(0.0, 0.1)  # the learnt heads are non-negative
    torch.save(holder.state_dict(), tmp_path / "backbone.pth")
    torch.save({f"{k}.model.1.weight": v[1].weight for k, v in lins.items()}, tmp_path / "lin.pth")

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, size, size + 8, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-50, 50, a.shape), 0, 255).astype(np.uint8)
    metric = LPIPSMetric(load_lpips(net, tmp_path / "backbone.pth", tmp_path / "lin.pth"), batch_size=2)
    ours = metric(a, b)

    to_t = lambda v: torch.from_numpy(v).permute(0, 3, 1, 2).float() / 127.5 - 1  # noqa: E731
    with torch.no_grad():
        ref = _torch_lpips(holder.features.eval(), taps, [lins[f"lin{i}"].eval() for i in range(5)],
                           to_t(a), to_t(b)).numpy()
    assert ours.shape == (3,) and ref.min() > 0
    np.testing.assert_allclose(ours, ref, rtol=1e-4)
    np.testing.assert_allclose(metric(a, a), 0.0, atol=1e-7)


def test_lpips_weight_errors(tmp_path):
    torch.save({"features.0.bias": torch.zeros(64)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="lacks features.0.weight"):
        load_lpips("alex", tmp_path / "bad.pth", tmp_path / "bad.pth")
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3), "features.0.bias": torch.zeros(64)},
               tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"features.0.weight has shape \(64, 3, 3, 3\), expected \(64, 3, 11, 11\)"):
        load_lpips("alex", tmp_path / "bad.pth", tmp_path / "bad.pth")
    with pytest.raises(UserError, match="lpips_backbone: file .*missing.pth does not exist"):
        load_lpips("alex", tmp_path / "missing.pth", tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="lpips_net"):
        load_lpips("squeeze", tmp_path / "bad.pth", tmp_path / "bad.pth")
