"""The GHN meta-model: every parameter predicted, gradients, determinism, GNN schedule."""

from __future__ import annotations

import io

import pytest
import torch
import torchvision
from torch import nn

import ghn
from ghn import GHN, GHNConfig
from ghn.decoder import tile, tile_into
from ghn.gatedgnn import Schedule
from ghn.pyg import Batch
from test_graph import Cell, TokenModel
from tv_models import TORCHVISION_MODELS, make_model

SENTINEL = 12345.0
TRANSFORMERS = ("vit", "swin", "maxvit")


def small_ghn(**kw) -> GHN:
    torch.manual_seed(0)
    return GHN(GHNConfig(hid=16, dec_hid=8, **kw))


def _input_size(name: str) -> int:
    if name.startswith(TRANSFORMERS):
        return 224
    return 299 if name.startswith("inception") else 64  # Inception's training-only aux head needs 299


@pytest.fixture(scope="module")
def meta() -> GHN:
    return small_ghn()


@pytest.mark.slow
@pytest.mark.parametrize("name", TORCHVISION_MODELS)
def test_predict_every_torchvision_model(name, meta):
    size = _input_size(name)
    model = make_model(name, num_classes=10, device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(SENTINEL)
    ghn.predict(model, meta, input_shape=(3, size, size))
    for pname, p in model.named_parameters():
        kept = int((p == SENTINEL).sum())
        assert kept == 0, f"{name}: {kept} elements of {pname} keep their previous value"
    model.train()  # batch statistics: predicted networks have no running statistics
    batch = 1 if name.startswith(("vit", "swin")) else 2  # no batch norm: one image is enough
    with torch.no_grad():
        out = model(torch.randn(batch, 3, size, size))
    out = out[0] if isinstance(out, tuple) else out
    assert out.shape == (batch, 10) and torch.isfinite(out).all(), f"{name}: non-finite outputs"
    fresh = make_model(name, num_classes=10, device="meta")
    fresh.load_state_dict(model.state_dict(), assign=True)  # keys and shapes match exactly


def _loss_on(meta: GHN, models: list[nn.Module]) -> torch.Tensor:
    graphs = [meta.graph(m) for m in models]
    params = meta(Batch.from_data_list(graphs))
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    losses = [nn.functional.cross_entropy(ghn.functional_forward(m, p, x), y) for m, p in zip(models, params)]
    return torch.stack(losses).mean()


@pytest.mark.parametrize("variant", ["ghn2", "ghn1", "mlp"])
def test_gradient_reaches_every_meta_model_weight(variant):
    torch.manual_seed(0)
    meta = GHN(GHNConfig.variant(variant, hid=16, dec_hid=8))
    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10
    )
    _loss_on(meta, [torchvision.models.resnet18(num_classes=10), Cell(), vit]).backward()
    for name, p in meta.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{variant}: no gradient for {name}"


def test_variants_differ_in_what_they_use():
    assert not hasattr(GHN(GHNConfig.variant("mlp")), "gnn")
    assert GHN(GHNConfig.variant("ghn1")).gnn.msg_ve is None
    assert isinstance(GHN(GHNConfig.variant("ghn1")).norm, nn.Identity)


def test_same_weights_same_model_give_identical_predictions(meta):
    other = small_ghn()
    other.load_state_dict(meta.state_dict())
    a = meta.predict(torchvision.models.resnet18(num_classes=10))
    b = other.predict(torchvision.models.resnet18(num_classes=10))
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name


def test_training_path_matches_predict(meta):
    model = torchvision.models.resnet18(num_classes=10)
    with torch.no_grad():
        params = meta([meta.graph(model)])[0]
    meta.predict(model)
    for name, p in model.named_parameters():
        assert torch.equal(params[name], p), name


def test_frozen_parameters_keep_their_values(meta):
    model = torchvision.models.resnet18(num_classes=10)
    model.conv1.weight.requires_grad_(False)
    before = model.conv1.weight.clone()
    meta.predict(model)
    assert torch.equal(model.conv1.weight, before)
    assert not torch.equal(model.fc.weight, torch.zeros_like(model.fc.weight))


def test_predict_a_model_of_token_ids(meta):
    model = TokenModel()
    before = {n: p.clone() for n, p in model.named_parameters()}
    ghn.predict(model, meta, input_shape=(12,), input_dtype=torch.long)
    same = [n for n, p in model.named_parameters() if torch.equal(p, before[n])]
    assert not same, f"not predicted: {same}"
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(torch.randint(0, 50, (2, 12)))).all()


def test_inference_mode_and_meta_model_dtype(meta):
    model = torchvision.models.mobilenet_v3_small(num_classes=10)
    with torch.inference_mode():
        meta.predict(model)
    double = small_ghn().double()
    params = double([double.graph(model)])[0]
    assert all(p.dtype == torch.float64 for p in params.values())


# -- the gated GNN: level by level equals node by node


def reference_gnn(gnn, h, g) -> torch.Tensor:
    """Plain node-by-node GHN-2 traversal: forward in topological order, then backward."""
    n = h.shape[0]
    incoming: dict[int, list] = {v: [] for v in range(n)}
    outgoing: dict[int, list] = {v: [] for v in range(n)}
    for u, v in g.edge_index.t().tolist():
        incoming[v].append((u, gnn.msg, 1.0))
        outgoing[u].append((v, gnn.msg, 1.0))
    if gnn.msg_ve is not None:
        for (u, v), s in zip(g.ve_index.t().tolist(), g.ve_dist.tolist()):
            incoming[v].append((u, gnn.msg_ve, 1.0 / s))
            outgoing[u].append((v, gnn.msg_ve, 1.0 / s))
    rows = list(h)
    for neighbours, level in ((incoming, g.level), (outgoing, g.rlevel)):
        for v in sorted(range(n), key=lambda v: (int(level[v]), v)):
            m = torch.zeros_like(rows[v])
            for u, net, w in neighbours[v]:
                m = m + net(rows[u]) * w
            rows[v] = gnn.gru(m[None], rows[v][None])[0]
    return torch.stack(rows)


@pytest.mark.parametrize("virtual", [True, False])
def test_level_by_level_equals_node_by_node(virtual):
    torch.manual_seed(0)
    meta = GHN(GHNConfig(hid=16, dec_hid=8, virtual_edges=virtual))
    models = [torchvision.models.resnet18(num_classes=10), Cell(), torchvision.models.squeezenet1_1(num_classes=10)]
    g = Batch.from_data_list([meta.graph(m) for m in models])
    h = torch.randn(g.num_nodes, 16)
    ve = (g.ve_index, g.ve_dist) if virtual else (None, None)
    fast = meta.gnn(h, Schedule.build(g.level, g.edge_index, *ve), Schedule.build(g.rlevel, g.edge_index, *ve, reverse=True))
    slow = reference_gnn(meta.gnn, h, g)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


# -- decoders, config, checkpoints


@pytest.mark.parametrize("shape", [(3, 5, 7, 7), (130, 70, 13, 2), (64, 1, 3, 3), (1000, 3, 1, 1)])
def test_tile_into_equals_tile(shape):
    block = torch.randn(min(shape[0], 64), min(shape[1], 64), min(shape[2], 11), min(shape[3], 11))
    dst = torch.empty(shape)
    tile_into(dst, block)
    assert torch.equal(dst, tile(block, shape))
    assert torch.equal(dst[: block.shape[0], : block.shape[1], : block.shape[2], : block.shape[3]], block)


def test_unusual_kernels_and_shapes(meta):
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 13, padding=6)  # beyond the 11x11 maximum
            self.dw = nn.Conv2d(8, 8, 5, padding=2, groups=8)
            self.c1 = nn.Conv1d(8, 4, 3, padding=1)
            self.token = nn.Parameter(torch.zeros(1, 1, 4))
            self.fc = nn.Linear(4, 10)

        def forward(self, x):
            x = self.dw(self.stem(x)).mean(3)
            x = self.c1(x).transpose(1, 2)
            x = torch.cat([self.token.expand(x.shape[0], -1, -1), x], 1)
            return self.fc(x[:, 0])

    model = Odd()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(SENTINEL)
    meta.predict(model, (3, 16, 16))
    for name, p in model.named_parameters():
        assert not (p == SENTINEL).any(), name


def test_predict_fills_non_contiguous_parameters(meta):
    def net() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 2))

    last = net().to(memory_format=torch.channels_last_3d)
    assert not last[0].weight.is_contiguous()  # its 4-D view (4, 3 * 3, 3, 3) needs a copy
    with torch.no_grad():
        for p in last.parameters():
            p.fill_(SENTINEL)
    meta.predict(last, (3, 4, 8, 8))
    reference = meta.predict(net(), (3, 4, 8, 8))
    assert not last[0].weight.is_contiguous()  # the layout is kept
    for (name, p), q in zip(last.named_parameters(), reference.parameters()):
        assert torch.equal(p, q), name


def test_config_yaml_and_checkpoint_round_trip(tmp_path, meta):
    cfg = GHNConfig.variant("ghn1", hid=24, max_shape=(32, 32, 5, 5))
    assert GHNConfig.from_yaml(cfg.to_yaml(tmp_path / "c.yaml")) == cfg
    buf = io.BytesIO()
    torch.save(meta.checkpoint(), buf)
    buf.seek(0)
    loaded = GHN.from_checkpoint(torch.load(buf, weights_only=True))
    assert loaded.config == meta.config
    for (k, a), b in zip(meta.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k


def test_config_errors():
    with pytest.raises(ValueError, match="message_passing must be one of"):
        GHNConfig(message_passing="transformer")
    with pytest.raises(ValueError, match="unknown GHNConfig key"):
        GHNConfig.from_dict({"hidden": 3})
    with pytest.raises(ValueError, match="unknown variant"):
        GHNConfig.variant("ghn9")
    with pytest.raises(TypeError, match="expects a mapping of field names to values, got list"):
        GHNConfig.from_dict([("hid", 8)])


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("hid", 0, "hid must be a positive int, got 0"),
        ("dec_hid", -3, "dec_hid must be a positive int, got -3"),
        ("num_classes", 2.5, "num_classes must be a positive int, got 2.5"),
        ("hid", True, "hid must be a positive int, got True"),
        ("s_max", 255, "s_max must be an int from 0 to 254 .*got 255"),
        ("s_max", -1, "s_max must be an int from 0 to 254 .*got -1"),
    ],
)
def test_config_field_errors_name_field_and_value(field, value, message):
    with pytest.raises(ValueError, match=message):
        GHNConfig(**{field: value})


def test_config_s_max_bounds_are_usable():
    for s_max in (0, 254):
        assert GHNConfig(s_max=s_max).s_max == s_max


def test_config_from_yaml_path_or_text(tmp_path):
    cfg = GHNConfig(hid=8, extra={"note": "x" * 300})  # YAML text longer than any file name
    path = tmp_path / "c.yaml"
    text = cfg.to_yaml(path)
    assert len(text) > 255 and GHNConfig.from_yaml(text) == cfg
    assert GHNConfig.from_yaml(path) == cfg and GHNConfig.from_yaml(str(path)) == cfg
    assert GHNConfig.from_yaml("{hid: 8, dec_hid: 4}") == GHNConfig(hid=8, dec_hid=4)
    assert GHNConfig.from_yaml("hid: 8") == GHNConfig(hid=8)


def test_config_from_yaml_missing_file_names_it(tmp_path):
    missing = str(tmp_path / "confg.yaml")
    with pytest.raises(FileNotFoundError, match="no config file .*confg.yaml"):
        GHNConfig.from_yaml(missing)
    with pytest.raises(FileNotFoundError, match="confg.yaml"):
        GHNConfig.from_yaml(tmp_path / "confg.yaml")


# -- batch-norm helpers


def test_batch_stats_and_calibration(meta):
    model = meta.predict(torchvision.models.resnet18(num_classes=10))
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        train_out = model.train()(x)
        ghn.use_batch_stats(model)
        assert torch.allclose(model.eval()(x), train_out, atol=1e-5)
        ghn.calibrate_bn(model, [(torch.randn(16, 3, 32, 32), None) for _ in range(3)], num_batches=3)
    assert not model.training
    assert model.bn1.running_var is not None and not torch.allclose(model.bn1.running_var, torch.ones(64))
    assert int(model.bn1.num_batches_tracked) == 3


def _bn_net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=0.3), nn.BatchNorm2d(4))


def test_calibration_restores_each_momentum():
    model = _bn_net()
    ghn.calibrate_bn(model, [torch.randn(2, 3, 8, 8) for _ in range(2)])
    assert [model[1].momentum, model[2].momentum] == [0.3, 0.1]
    assert int(model[1].num_batches_tracked) == 2


def test_calibration_restores_momentum_when_the_forward_fails():
    model = _bn_net()
    with pytest.raises(RuntimeError):
        ghn.calibrate_bn(model, [torch.randn(2, 5, 8, 8)])  # wrong channel count
    assert [model[1].momentum, model[2].momentum] == [0.3, 0.1]


@pytest.mark.parametrize(
    "num_batches, batches, message",
    [(0, [torch.randn(2, 3, 8, 8)], "num_batches must be a positive int, got 0"), (2, [], "yielded no batch")],
)
def test_calibration_without_batches_leaves_the_model_untouched(num_batches, batches, message):
    model = _bn_net().train()
    with torch.no_grad():
        model(torch.randn(4, 3, 8, 8))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    with pytest.raises(ValueError, match=message):
        ghn.calibrate_bn(model, batches, num_batches=num_batches)
    assert not model.training and model[1].momentum == 0.3
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_predict_errors(meta):
    with pytest.raises(TypeError, match="expects a torch.nn.Module"):
        ghn.predict("resnet18", meta)


def test_public_api_names_are_the_functions():
    import ghn.data  # noqa: F401  importing submodules must not shadow the API
    import ghn.prediction  # noqa: F401

    assert callable(ghn.predict) and ghn.predict.__module__ == "ghn.prediction"
    assert ghn.GHN.__name__ == "GHN" and callable(ghn.from_pretrained)
