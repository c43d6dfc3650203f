"""Graph construction: coverage of every torchvision model, determinism, virtual edges, errors."""

from __future__ import annotations

import logging
import pickle
import random
import subprocess
import sys

import networkx as nx
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from ghn.graph import ACTS, OPS, Graph, GraphError, SubgraphCache, build_graph, canonical_shape, virtual_edges
from ghn.graph.shapes import _conv_shape_only, _pool_shape_only
from ghn.pyg import Batch
from tv_models import TORCHVISION_MODELS, make_model


def test_importing_ghn_raises_no_warning():
    # torch_geometric's import-time TorchScript FutureWarning is silenced in ghn/pyg.py:
    # `import ghn` (and the DeepNets loader, which batches graphs) must print nothing.
    proc = subprocess.run([sys.executable, "-W", "error", "-c", "import ghn, deepnets.loader"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


def test_torchvision_has_80_classification_models():
    assert len(TORCHVISION_MODELS) == 80


@pytest.mark.parametrize("name", TORCHVISION_MODELS)
def test_every_parameter_belongs_to_exactly_one_node(name):
    for num_classes in (10, 1000):
        model = make_model(name, num_classes)
        graph = build_graph(model)
        params = dict(model.named_parameters())
        names = graph.param_names
        uncovered = sorted(set(params) - set(names))
        assert not uncovered, f"{name} (num_classes={num_classes}): uncovered parameters {uncovered[:10]}"
        foreign = sorted(set(names) - set(params))
        assert not foreign, f"{name}: nodes claim tensors that are not parameters: {foreign[:10]}"
        dupes = sorted({n for n in names if names.count(n) > 1})
        assert not dupes, f"{name}: parameters owned by several nodes: {dupes[:10]}"
        for pname, shape in zip(names, graph.param_shape.tolist()):
            assert torch.Size(shape).numel() == params[pname].numel(), f"{name}: bad canonical shape of {pname}"
        assert int((graph.op == OPS.index("unknown")).sum()) == 0, f"{name}: unknown ops"
        assert int(graph.head.sum()) >= 1, f"{name}: no classifier head found"


@pytest.mark.parametrize("name", ["resnet18", "vit_b_16", "efficientnet_b0", "convnext_tiny", "mobilenet_v3_small"])
def test_cifar_sized_input(name):
    kwargs = {"image_size": 32} if name.startswith("vit") else {}
    with torch.device("meta"):
        model = torchvision.models.get_model(name, num_classes=10, **kwargs)
    graph = build_graph(model, (3, 32, 32))
    assert sorted(graph.param_names) == sorted(n for n, _ in model.named_parameters())


def test_roles_of_transformer_parameters():
    model = make_model("vit_b_16")
    g = build_graph(model)
    op_of = {n: OPS[int(g.op[v])] for n, v in zip(g.param_names, g.param_node_index.tolist())}
    assert op_of["class_token"] == "cls_token"
    assert op_of["encoder.pos_embedding"] == "pos_emb"
    assert op_of["encoder.layers.encoder_layer_0.self_attention.in_proj_weight"] == "msa"
    assert op_of["encoder.layers.encoder_layer_0.self_attention.out_proj.weight"] == "linear"
    g = build_graph(make_model("swin_t"))
    op_of = {n: OPS[int(g.op[v])] for n, v in zip(g.param_names, g.param_node_index.tolist())}
    assert op_of["features.1.0.attn.relative_position_bias_table"] == "rel_pos_bias"
    g = build_graph(make_model("convnext_tiny"))
    op_of = {n: OPS[int(g.op[v])] for n, v in zip(g.param_names, g.param_node_index.tolist())}
    assert op_of["features.1.0.layer_scale"] == "layer_scale"


def test_inception_aux_head_is_covered_at_its_native_size():
    model = make_model("inception_v3")
    g = build_graph(model, (3, 299, 299))
    aux = [n for n in g.param_names if n.startswith("AuxLogits")]
    assert aux and int(g.head.sum()) == 2  # main classifier and auxiliary classifier


def test_same_model_gives_the_same_graph():
    a, b = build_graph(make_model("densenet121")), build_graph(make_model("densenet121"))
    assert a.param_names == b.param_names and a.node_names == b.node_names
    for key in ("op", "act", "shape", "edge_index", "ve_index", "ve_dist", "level", "param_node_index"):
        assert torch.equal(a[key], b[key]), key


def test_model_mode_is_restored():
    model = torchvision.models.resnet18(num_classes=10).eval()
    build_graph(model, (3, 32, 32))
    assert not any(m.training for m in model.modules())


def test_model_tensors_are_restored_even_when_the_forward_fails():
    model = torchvision.models.resnet18(num_classes=10)
    before = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    values = {k: t.clone() for k, t in before.items()}
    build_graph(model, (3, 32, 32))
    with pytest.raises(GraphError):
        build_graph(model, (5, 32, 32))
    after = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    assert after.keys() == before.keys()
    assert all(after[k] is before[k] and torch.equal(after[k], values[k]) for k in before)


@pytest.mark.parametrize("size", [1, 7, 8, 32])
def test_shape_shortcuts_match_the_kernels(size):
    # The tracer computes conv and pool output shapes in Python; they must equal the kernels'.
    x = torch.empty(2, 4, size, size + 3, device="meta")
    w = torch.empty(6, 2, 3, 5, device="meta")
    for stride, pad, dil in [(1, 0, 1), (2, 1, 1), (2, (1, 2), 2), ((1, 2), 2, (2, 1)), (3, 0, 1)]:
        args = (x, w, None, stride, pad, dil, 2)
        try:
            expected = F.conv2d(*args).shape
        except RuntimeError:
            expected = None
        got = _conv_shape_only("conv2d", args, {})
        assert (got.shape if got is not None else None) == expected, (stride, pad, dil)
    for kernel, stride, pad, dil, ceil in [(3, 2, 1, 1, False), (3, 2, 1, 1, True), (2, None, 0, 1, True),
                                          (3, 3, 1, 2, True), (5, 1, 2, 1, False)]:
        for name, call in (
            ("max_pool2d", lambda: F.max_pool2d(x, kernel, stride, pad, dil, ceil)),
            ("avg_pool2d", lambda: F.avg_pool2d(x, kernel, stride, pad, ceil)),
        ):
            args = (x, kernel, stride, pad, dil, ceil) if name == "max_pool2d" else (x, kernel, stride, pad, ceil)
            try:
                expected = call().shape
            except RuntimeError:
                expected = None
            got = _pool_shape_only(name, args, {})
            assert (got.shape if got is not None else None) == expected, (name, kernel, stride, pad, dil, ceil)
    assert _pool_shape_only("adaptive_avg_pool2d", (x, 2), {}).shape == F.adaptive_avg_pool2d(x, 2).shape


# -- arbitrary user modules


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.head = nn.Linear(8, 8)
        self.out = nn.Linear(8, 8)
        self.out.weight = self.head.weight  # tied
        self.frozen = nn.Parameter(torch.ones(8), requires_grad=False)

    def forward(self, x):
        x = F.relu(self.embed(x))
        x = self.block(x) + x  # functional sum
        x = self.block(x)  # the same module called twice
        x = torch.cat([x, x * self.frozen.view(1, -1, 1, 1)], 1)[:, :8]
        x = x.mean((2, 3))
        return self.out(torch.tanh(self.head(x)))


def test_tied_frozen_and_repeated_modules():
    model = Tied()
    g = build_graph(model, (3, 16, 16))
    expected = [n for n, _ in model.named_parameters()]  # tied weight listed once
    assert sorted(g.param_names) == sorted(expected)
    assert "out.weight" not in g.param_names and "head.weight" in g.param_names
    ops = [OPS[i] for i in g.op.tolist()]
    assert ops.count("conv") == 3  # embed + block conv called twice, owning its weight once
    assert ops.count("bn") == 2
    assert "frozen" in g.param_names  # frozen parameters still belong to a node
    assert ACTS[int(g.act[ops.index("conv")])] == "relu"  # activation folded into its producer
    assert ops.count("sum") == 1 and ops.count("glob_avg") == 1


class Cell(nn.Module):
    """A hand-written DARTS-style cell network: two sum nodes over sampled ops."""

    def __init__(self, c=8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        self.sep = nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False),
                                 nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))
        self.dil = nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, padding=2, dilation=2, groups=c, bias=False),
                                 nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))
        self.pool = nn.MaxPool2d(3, 1, 1)
        self.attn = nn.MultiheadAttention(c, 2, batch_first=True)
        self.fc = nn.Linear(3 * c, 10)

    def forward(self, x):
        s0 = self.stem(x)
        n1 = self.sep(s0) + self.pool(s0)
        n2 = self.dil(n1) + s0
        b, c, h, w = n2.shape
        seq = n2.flatten(2).transpose(1, 2)
        n3 = self.attn(seq, seq, seq)[0].transpose(1, 2).reshape(b, c, h, w)
        out = torch.cat([n1, n2, n3], 1)
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def test_cell_network_graph_structure():
    g = build_graph(Cell(), (3, 32, 32))
    ops = [OPS[i] for i in g.op.tolist()]
    for op in ("dw_conv", "max_pool", "sum", "msa", "concat", "glob_avg", "linear"):
        assert op in ops, op
    assert sorted(g.param_names) == sorted(n for n, _ in Cell().named_parameters())
    nxg = g.to_networkx()
    assert nx.is_directed_acyclic_graph(nxg) and nx.is_weakly_connected(nxg)
    concat = ops.index("concat")
    assert nxg.in_degree(concat) == 3


class RawConvolution(nn.Module):
    """Calls torch.convolution directly: groups is its 9th positional argument."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups
        self.weight = nn.Parameter(torch.randn(4, 4 // groups, 3, 3))

    def forward(self, x):
        return torch.convolution(x, self.weight, None, (1, 1), (1, 1), (1, 1), False, (0, 0), self.groups)


@pytest.mark.parametrize(
    "model, expected",
    [
        (nn.ConvTranspose2d(4, 4, 3, stride=3, output_padding=2), "conv"),  # output_padding is no dilation
        (nn.ConvTranspose2d(4, 4, 3, dilation=2), "dil_conv"),
        (nn.ConvTranspose2d(4, 4, 3, groups=2), "dw_conv"),
        (nn.ConvTranspose1d(4, 4, 3, stride=3, output_padding=2), "conv"),
        (RawConvolution(groups=2), "dw_conv"),
        (RawConvolution(groups=1), "conv"),
    ],
)
def test_conv_op_type_reads_each_signature(model, expected):
    shape = (4, 8) if isinstance(model, nn.ConvTranspose1d) else (4, 8, 8)
    g = build_graph(model, shape)
    assert [OPS[i] for i in g.op.tolist()] == ["input", expected]


class Weird(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(torch.cumsum(x, dim=1))


def test_unknown_op_becomes_a_node_and_is_logged(caplog):
    with caplog.at_level(logging.INFO, logger="ghn.graph"):
        g = build_graph(Weird(), (4,))
    assert [OPS[i] for i in g.op.tolist()] == ["input", "unknown", "linear"]
    assert "cumsum" in caplog.text


def test_unused_parameters_get_isolated_nodes(caplog):
    class Spare(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.spare = nn.Linear(4, 4), nn.Conv2d(2, 2, 3)

        def forward(self, x):
            return self.fc(x)

    model = Spare()
    with caplog.at_level(logging.WARNING, logger="ghn.graph"):
        g = build_graph(model, (4,))
    assert {"spare.weight", "spare.bias"} <= set(g.param_names)
    assert "spare.weight" in caplog.text


# -- errors


def test_not_a_module():
    with pytest.raises(TypeError, match="expects a torch.nn.Module, got function"):
        build_graph(lambda x: x)


def test_model_without_parameters():
    with pytest.raises(GraphError, match="ReLU has no parameters"):
        build_graph(nn.ReLU())


def test_forward_failing_for_input_shape():
    model = torchvision.models.resnet18(num_classes=10)
    with pytest.raises(GraphError, match=r"input_shape=\(5, 32, 32\).*expected input"):
        build_graph(model, (5, 32, 32))


class TokenModel(nn.Module):
    """A small language model: token ids -> embedding -> transformer layer -> logits."""

    def __init__(self, vocab: int = 50, dim: int = 16) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.enc = nn.TransformerEncoderLayer(dim, nhead=2, dim_feedforward=32, batch_first=True)
        self.head = nn.Linear(dim, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.enc(self.emb(ids)))


def test_token_id_input():
    model = TokenModel()
    with pytest.raises(GraphError, match=r"input_dtype=torch.float32.*input_dtype=torch.long for models that take"):
        build_graph(model, (12,))  # float "ids" reach the embedding
    g = build_graph(model, (12,), input_dtype=torch.long)
    assert sorted(g.param_names) == sorted(n for n, _ in model.named_parameters())
    op_of = {n: OPS[int(g.op[v])] for n, v in zip(g.param_names, g.param_node_index.tolist())}
    assert op_of["emb.weight"] == "embedding" and op_of["enc.self_attn.in_proj_weight"] == "msa"
    emb = g.param_node_index[g.param_names.index("emb.weight")]
    assert g.edge_index[0, g.edge_index[1] == emb].tolist() == [0]  # fed by the input node
    assert int((g.op == OPS.index("unknown")).sum()) == 0


def test_output_independent_of_input():
    class Const(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(3))

        def forward(self, x):
            return torch.zeros(2, 3)

    with pytest.raises(GraphError, match="does not depend on its input"):
        build_graph(Const(), (3,))


# -- subgraph cache


def _same_graph(a: Graph, b: Graph) -> bool:
    da, db = a.to_dict(), b.to_dict()
    return da.keys() == db.keys() and all(
        torch.equal(v, db[k]) if torch.is_tensor(v) else v == db[k] for k, v in da.items()
    )


class _TupleBlock(nn.Module):
    """Returns a tuple: cannot be replayed, must be traced as usual."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return F.relu(self.conv(x)), x


class _TwoInputs(nn.Module):
    """Takes two inputs: cannot be replayed, must be traced as usual."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 1)

    def forward(self, x, y):
        return self.conv(x) + y


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3)
        self.blocks = nn.ModuleList(nn.Sequential(nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)) for _ in range(3))
        self.odd = _TupleBlock()
        self.pair = _TwoInputs()
        self.shared = nn.Sequential(nn.Conv2d(8, 8, 1))
        self.again = self.shared  # the same module under two names
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = x + b(x)
        x, _ = self.odd(x)
        x = self.pair(x, x)
        x = self.again(self.shared(x))
        return self.head(x.mean((2, 3)))


def _repr_key(m: nn.Module) -> str | None:
    # torchvision blocks print their configuration: equal repr -> equal graph.
    return repr(m) if m._modules else None


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "vit_b_16"])
def test_subgraph_cache_gives_the_same_graph(name):
    cache = SubgraphCache(key=_repr_key)
    model = make_model(name)
    plain = build_graph(model, (3, 224, 224))
    assert _same_graph(build_graph(model, (3, 224, 224), subgraphs=cache), plain)  # recording
    assert len(cache) > 0
    assert _same_graph(build_graph(model, (3, 224, 224), subgraphs=cache), plain)  # replaying
    assert len(pickle.loads(pickle.dumps(cache))) == 0


def _blocks_key(m: nn.Module) -> str | None:
    return type(m).__name__ if isinstance(m, (nn.Sequential, _TupleBlock, _TwoInputs)) else None


def _containers_key(m: nn.Module) -> str | None:
    return type(m).__name__ if m._modules else None  # also the ModuleList, never called itself


def test_subgraph_cache_traces_blocks_it_cannot_replay():
    model = _Net()
    plain = build_graph(model, (3, 16, 16))
    for key in (_blocks_key, _containers_key):
        cache = SubgraphCache(key=key)
        for _ in range(2):
            assert _same_graph(build_graph(model, (3, 16, 16), subgraphs=cache), plain)
        assert cache._entries[("_TupleBlock", (2, 8, 14, 14), torch.float32, True)] is None
        assert not any("forward" in m.__dict__ for m in model.modules())  # forwards restored
    with pytest.raises(ValueError, match="max_entries"):
        SubgraphCache(key=_blocks_key, max_entries=0)


# -- virtual edges


def _random_dag(n: int, p: float, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [sorted(u for u in range(v) if rng.random() < p) for v in range(n)]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("s_max", [2, 5, 50])
def test_virtual_edges_match_networkx(seed, s_max):
    preds = _random_dag(60, 0.06, seed)
    g = nx.DiGraph()
    g.add_nodes_from(range(len(preds)))
    g.add_edges_from((u, v) for v, ps in enumerate(preds) for u in ps)
    expected = {
        (u, v): d
        for u, lengths in nx.all_pairs_shortest_path_length(g, cutoff=s_max)
        for v, d in lengths.items()
        if d > 1
    }
    index, dist = virtual_edges(preds, s_max)
    got = {(u, v): d for (u, v), d in zip(index.t().tolist(), dist.tolist())}
    assert got == expected


def test_virtual_edges_disabled():
    g = build_graph(torchvision.models.resnet18(num_classes=10), (3, 32, 32), s_max=0)
    assert g.ve_index.shape == (2, 0)


# -- batching, drawing


def test_pyg_batch_offsets_indices():
    a = build_graph(torchvision.models.resnet18(num_classes=10), (3, 32, 32))
    b = build_graph(Cell(), (3, 32, 32))
    batch = Batch.from_data_list([a, b])
    assert batch.num_graphs == 2 and batch.num_nodes == a.num_nodes + b.num_nodes
    assert torch.equal(batch.ve_index[:, a.ve_index.shape[1]:], b.ve_index + a.num_nodes)
    assert torch.equal(batch.param_node_index[len(a.param_names):], b.param_node_index + a.num_nodes)
    assert batch.param_names == [a.param_names, b.param_names]
    assert isinstance(batch.get_example(1), Graph)


def test_draw_png(tmp_path):
    g = build_graph(Cell(), (3, 32, 32))
    path = g.draw(tmp_path / "cell.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_draw_leaves_the_matplotlib_backend_alone(tmp_path):
    import matplotlib

    before = matplotlib.get_backend()
    matplotlib.use("svg")  # stands in for a notebook's backend
    try:
        build_graph(Cell(), (3, 32, 32)).draw(tmp_path / "cell.png")
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)


def test_canonical_shape():
    assert canonical_shape((64, 3, 7, 7), conv=True) == (64, 3, 7, 7)
    assert canonical_shape((64, 3, 5), conv=True) == (64, 3, 1, 5)
    assert canonical_shape((1, 1, 768)) == (768, 1, 1, 1)
    assert canonical_shape((1, 197, 768)) == (197, 768, 1, 1)
    assert canonical_shape((96, 1, 1)) == (96, 1, 1, 1)
