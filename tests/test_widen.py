"""Widening a meta-model (`ghn.widen`): the same predictions, copies that can part."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import ghn
from deepnets import get_split
from ghn import GHN, GHNConfig
from ghn.widen import widen


def _trained_like(**kw) -> GHN:
    """A small GHN with every weight random, layer norm and embeddings included, so that no
    zero or one of a fresh initialisation hides a wrongly grown tensor."""
    torch.manual_seed(0)
    meta = GHN(GHNConfig(hid=8, dec_hid=4, max_shape=(16, 16, 3, 3), **kw))
    with torch.no_grad():
        for p in meta.parameters():
            p.normal_(0, 0.5)
    return meta


@pytest.fixture(scope="module")
def graphs():
    meta = _trained_like()
    return [meta.graph(torchvision.models.resnet18(num_classes=10)), meta.graph(get_split("test")[0].build())]


@pytest.mark.parametrize("variant, r", [("ghn2", 2), ("ghn2", 3), ("ghn1", 2), ("mlp", 2)])
def test_widened_meta_model_predicts_the_same_parameters(graphs, variant, r):
    meta = _trained_like(**{k: v for k, v in GHNConfig.variant(variant).to_dict().items()
                            if k in ("message_passing", "virtual_edges", "layernorm", "weight_norm")})
    big = widen(meta, r * 8, noise=0.0)
    assert big.config.hid == r * 8
    assert sum(p.numel() for p in big.parameters()) > sum(p.numel() for p in meta.parameters())
    with torch.no_grad():
        for small_out, big_out in zip(meta(graphs), big(graphs)):
            assert small_out.keys() == big_out.keys()
            for name, value in small_out.items():
                torch.testing.assert_close(big_out[name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_shipped_meta_model_widened_with_noise_predicts_nearly_the_same():
    meta = ghn.from_pretrained("ghn2-cifar10")
    big = widen(meta, 2 * meta.config.hid, generator=torch.Generator().manual_seed(0))
    g = meta.graph(torchvision.models.resnet18(num_classes=10))
    with torch.no_grad():
        a, b = meta([g])[0], big([g])[0]
    rel = max(float((a[k] - b[k]).norm() / a[k].norm()) for k in a)
    assert 0 < rel < 0.05  # measured 0.018 with the default noise


@pytest.mark.parametrize("noise", [0.0, 1e-2])
def test_noise_lets_the_copies_part_under_adam(noise):
    """Exact copies get the same Adam updates, so they would stay copies; noise makes the
    updates of every pair differ."""
    big = widen(_trained_like(), 16, noise=noise, generator=torch.Generator().manual_seed(0))
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 10))
    g = big.graph(net)
    before = big.gnn.gru.weight_hh.detach().clone()
    opt = torch.optim.Adam(big.parameters(), lr=1e-3)
    for _ in range(3):
        opt.zero_grad()
        sum(p.square().mean() for p in big([g])[0].values()).backward()
        opt.step()
    update = big.gnn.gru.weight_hh.detach() - before  # rows 2j and 2j + 1: the two copies of unit j's gates
    gap = (update[0::2] - update[1::2]).norm(dim=1) / update.norm(dim=1).mean()
    if noise:
        assert (gap > 1e-6).all() and gap.median() > 1e-3
    else:
        assert (gap < 1e-6).all()


@pytest.mark.parametrize("variant", ["ghn2", "mlp"])
@pytest.mark.parametrize("hid", [None, 16])
def test_wider_decoder_predicts_exactly_the_same_parameters(graphs, variant, hid):
    meta = _trained_like(**{k: v for k, v in GHNConfig.variant(variant).to_dict().items()
                            if k in ("message_passing", "virtual_edges", "layernorm", "weight_norm")})
    big = widen(meta, hid, noise=0.0, dec_hid=12, generator=torch.Generator().manual_seed(0))
    assert (big.config.dec_hid, big.config.hid) == (12, hid or 8)
    assert big.weight_decoder.channels.shape == (16, 16, 12)
    with torch.no_grad():
        for small_out, big_out in zip(meta(graphs), big(graphs)):
            for name, value in small_out.items():
                torch.testing.assert_close(big_out[name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_wider_decoder_learns_with_its_new_features(graphs):
    """The new features start at zero but get gradients, and one Adam step moves the
    predictions through them (the new matrices are not zero)."""
    meta = _trained_like()
    big = widen(meta, dec_hid=12, generator=torch.Generator().manual_seed(0))
    loss = sum(p.square().mean() for out in big(graphs) for p in out.values())
    loss.backward()
    last = big.weight_decoder.spatial[2]
    new_rows = last.weight.grad.view(-1, 12, last.weight.shape[1])[:, 4:]  # [kh * kw, new features, in]
    assert new_rows.abs().sum() > 0
    opt = torch.optim.Adam(big.parameters(), lr=1e-2)
    opt.step()
    new = big.weight_decoder.spatial(torch.randn(5, 8)).view(5, -1, 12)[..., 4:]
    assert new.abs().sum() > 0


@pytest.mark.parametrize("hid, noise, dec_hid, message", [
    (12, 1e-2, None, "multiple of the meta-model's hid=8"),
    (8, 1e-2, None, "multiple of the meta-model's hid=8"),
    (4, 1e-2, None, "multiple of the meta-model's hid=8"),
    (16, -1.0, None, "noise must be 0 or more"),
    (None, 1e-2, 4, "dec_hid must be larger than the meta-model's dec_hid=4"),
    (None, 1e-2, None, "give hid, dec_hid or both"),
])
def test_bad_widening_is_a_clear_error(hid, noise, dec_hid, message):
    with pytest.raises(ValueError, match=message):
        widen(_trained_like(), hid, noise=noise, dec_hid=dec_hid)
