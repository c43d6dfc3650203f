"""Tests of the DeepNets-1M generator, networks, exported splits and meta-batch loader.

The full "first 200 architectures of every split" check is marked slow (about 25 s per
split on one core); the fast suite runs the same checks on the first few of each split.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deepnets import (
    DARTS, OP_NAMES, PDARTS, PREDEFINED_NAMES, SPLIT_NAMES, VIT, DatasetFormatError, Genotype,
    NetConfig, Network, build_predefined, count_flops, describe, export_split, get_split,
    make_op, num_flops, num_params, read_records,
)
from deepnets.__main__ import main as cli
from deepnets.builder import NetBuilder
from deepnets.loader import MetaBatchDataset, MetaBatchLoader
from ghn.graph import SubgraphCache, build_graph
from ghn.pyg import Batch, Data

REPO = Path(__file__).resolve().parents[1]
MAX_PARAMS = 10_000_000


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # These tests run many small forward passes; on a busy 2-core machine intra-op
    # threads spin-wait for each other and cost far more than they bring.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def check_architecture(config: NetConfig, real_224: bool = False) -> None:
    """Builds, stays under the limit, runs at 32x32 and 224x224, graphs cover all params.

    The 224x224 forward (ImageNet version, ``imagenet_input=True``) runs on meta tensors,
    through the graph tracer, unless ``real_224``: a real one costs 1-12 GFLOPs.
    """
    net = config.build(num_classes=10)
    params = sum(p.numel() for p in net.parameters())
    assert params <= MAX_PARAMS
    assert params == num_params(config)
    with torch.no_grad():
        out = net(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    names = sorted(n for n, _ in net.named_parameters())
    assert sorted(build_graph(net, input_shape=(3, 32, 32)).param_names) == names

    imagenet = config.build(num_classes=1000, imagenet_input=True)
    graph = build_graph(imagenet, input_shape=(3, 224, 224))  # a meta-tensor forward
    assert sorted(graph.param_names) == sorted(n for n, _ in imagenet.named_parameters())
    if real_224:
        with torch.no_grad():
            out = imagenet.eval()(torch.randn(1, 3, 224, 224))
        assert out.shape == (1, 1000) and torch.isfinite(out).all()


def _check_index(job: tuple[str, int]) -> None:
    split, i = job
    torch.set_num_threads(1)  # the pool's processes are the parallelism
    check_architecture(get_split(split)[i], real_224=i < 2)


@pytest.mark.parametrize("split", SPLIT_NAMES)
def test_first_architectures_of_each_split(split: str) -> None:
    s = get_split(split)
    for i in range(3):
        check_architecture(s[i])


def test_narrow_architectures_run_for_real_at_224() -> None:
    s = get_split("train", narrow=True)
    for i in range(3):
        check_architecture(s[i], real_224=True)


@pytest.mark.slow
@pytest.mark.parametrize("split", SPLIT_NAMES)
def test_first_200_architectures_of_each_split(split: str) -> None:
    # The out-of-distribution splits hold 100 architectures (as in the paper): all of them.
    # Two processes: about 20-40 s per split on two free cores.
    n = min(200, len(get_split(split)))
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(_check_index, [(split, i) for i in range(n)], chunksize=10)


def test_split_definitions() -> None:
    seeds = [get_split(n).seed for n in SPLIT_NAMES]
    assert len(set(seeds)) == len(seeds)
    assert [len(get_split(n)) for n in ("train", "val", "test")] == [1_000_000, 500, 500]
    firsts = {get_split(n)[0].genotype for n in SPLIT_NAMES}
    assert len(firsts) == len(SPLIT_NAMES)

    n = 30
    assert all(c.C == 64 for c in (get_split("wide")[i] for i in range(n)))
    assert all(10 <= c.n_cells <= 36 for c in (get_split("deep")[i] for i in range(n)))
    dense = [get_split("dense")[i].genotype for i in range(n)]
    assert all(min(g.normal_steps, g.reduce_steps) >= 5 for g in dense)
    assert not any(get_split("bnfree")[i].norm for i in range(n))
    test = [get_split("test")[i] for i in range(100)]
    assert all(4 <= c.n_cells <= 18 and c.C == 32 for c in test)
    assert all(c.norm or c.n_cells <= 8 for c in test)  # no deep normalisation-free nets
    assert {c.norm for c in test} == {True, False}


def test_narrow_sampler_is_cheap_and_test_split_stays_published() -> None:
    narrow = get_split("train", narrow=True)
    configs = [narrow[i] for i in range(30)]
    assert all(c.C in (8, 12, 16) and 4 <= c.n_cells <= 8 for c in configs)
    assert max(num_params(c) for c in configs) < 1_000_000
    assert narrow.seed == get_split("train").seed
    with pytest.raises(ValueError, match="narrow"):
        get_split("test", narrow=True)


def test_random_access_needs_no_earlier_architectures() -> None:
    train = get_split("train")
    last = train[999_999]  # generated directly, in well under a second
    assert train[999_999] == last
    assert train[10] == get_split("train")[10]
    with pytest.raises(IndexError):
        train[1_000_000]


# Fingerprints of a few architectures. If the sampler changes on purpose, bump
# deepnets.generator.GENERATOR_VERSION and update these; otherwise this catches a change
# that would silently give everyone different splits.
FINGERPRINTS = {
    ("train", 0): "9991d0a278c2c7e2",
    ("test", 0): "a6ebe9b3cc33c7bb",
    ("bnfree", 99): "3cc98ebe81179662",
}


def _fingerprint(config: NetConfig) -> str:
    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def test_same_index_same_architecture_in_another_process() -> None:
    picks = [(n, i) for n in SPLIT_NAMES for i in (0, 7, 99)] + [("train", 999_999)]
    code = (
        "import json, sys\n"
        "from deepnets import get_split\n"
        "picks = json.loads(sys.argv[1])\n"
        "print(json.dumps([get_split(n)[i].to_dict() for n, i in picks]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(picks)],
        capture_output=True, text=True, check=True, cwd=REPO,
    ).stdout
    theirs = [NetConfig.from_dict(d) for d in json.loads(out)]
    ours = [get_split(n)[i] for n, i in picks]
    assert theirs == ours
    for (name, i), expected in FINGERPRINTS.items():
        assert _fingerprint(get_split(name)[i]) == expected, (name, i)


def test_genotype_json_round_trip_and_str() -> None:
    sampled = [get_split("dense")[i].genotype for i in range(10)]
    for g in (DARTS, PDARTS, VIT, *sampled):
        s = g.to_json()
        assert Genotype.from_json(s) == g
        assert " " not in s  # compact
    text = str(DARTS)
    assert "n2 = sep_conv_3x3(n0) + sep_conv_3x3(n1)" in text
    assert "concat [2, 3, 4, 5]" in text
    config = get_split("test")[3]
    assert NetConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


_SKIP2 = [["skip_connect", 0], ["skip_connect", 1]]


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"n": [["warp_drive", 0], ["skip_connect", 1]], "nc": [2], "r": _SKIP2, "rc": [2]}, "unknown op"),
        ({"n": [["skip_connect", 2], ["skip_connect", 1]], "nc": [2], "r": _SKIP2, "rc": [2]}, "cannot take input"),
        ({"n": [["skip_connect", 0]], "nc": [2], "r": _SKIP2, "rc": [2]}, "even number"),
        ({"n": _SKIP2, "nc": [3], "r": _SKIP2, "rc": [2]}, "concat"),
        ({"n": _SKIP2}, "not a genotype"),
    ],
)
def test_invalid_genotypes_are_rejected(bad: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Genotype.from_dict(bad)


@pytest.mark.parametrize("op", OP_NAMES)
@pytest.mark.parametrize("stride", [1, 2])
def test_every_op_keeps_channels_and_halves_with_ceil(op: str, stride: int) -> None:
    m = make_op(op, 16, stride, norm=True)
    y = m(torch.randn(2, 16, 9, 9))
    side = 9 if stride == 1 else 5
    assert y.shape == (2, 16, side, side)
    free = make_op(op, 16, stride, norm=False)
    assert not any(isinstance(x, (torch.nn.BatchNorm2d, torch.nn.LayerNorm)) for x in free.modules())


def test_cells_drop_none_edges_and_dead_nodes() -> None:
    g = Genotype(
        normal=(("none", 0), ("none", 1),          # n2 is dead
                ("conv_3x3", 2), ("sep_conv_3x3", 1),  # n3 = conv(n2, dropped) + sep(n1)
                ("cse", 1), ("none", 0)),          # n4 feeds nothing in concat
        normal_concat=(3,),
        reduce=(("max_pool_3x3", 0), ("avg_pool_3x3", 1)),
        reduce_concat=(2,),
    )
    net = Network(g, C=8, n_cells=4)
    cell = net.cells[0]
    assert cell.op_names == ("sep_conv_3x3",)  # dead n2 and unused n4 are not built
    assert cell.pre0 is None  # input 0 is unused
    graph = build_graph(net, input_shape=(3, 32, 32))
    assert sorted(graph.param_names) == sorted(n for n, _ in net.named_parameters())

    dead = Genotype(((("none", 0), ("none", 1))), (2,), (("skip_connect", 0), ("skip_connect", 1)), (2,))
    with pytest.raises(ValueError, match="computes nothing"):
        Network(dead, C=8, n_cells=4)


def test_block_counts_equal_whole_network_counts() -> None:
    test = get_split("test")
    configs = [test[i] for i in range(12)]
    assert any("msa" in c.genotype.to_json() for c in configs)
    assert any("cse" in c.genotype.to_json() for c in configs)
    for c in configs[:6]:
        with torch.device("meta"):
            cifar, imagenet = c.build(10), c.build(1000, imagenet_input=True)
        assert num_params(c, 1000, True) == sum(p.numel() for p in imagenet.parameters())
        assert num_flops(c) == count_flops(cifar, (3, 32, 32)) > 0
        assert num_flops(c, 1000, True) == count_flops(imagenet, (3, 224, 224))


def test_predefined_architectures() -> None:
    darts = build_predefined("darts")
    # The published DARTS (V2) CIFAR-10 network has 3.3M parameters.
    assert 3.2e6 < sum(p.numel() for p in darts.parameters()) < 3.4e6
    for name in PREDEFINED_NAMES:
        net = build_predefined(name, num_classes=10)
        with torch.no_grad():
            assert net.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 10)
        imagenet = build_predefined(name, num_classes=1000, imagenet_input=True)
        graph = build_graph(imagenet, input_shape=(3, 224, 224))
        assert len(graph.param_names) == len(list(imagenet.parameters()))
    with pytest.raises(ValueError, match="unknown architecture"):
        build_predefined("alexnet9000")


# ---------------------------------------------------------------- exported files


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("deepnets") / "test5.jsonl"
    return export_split(get_split("test"), path, n=5, start=2, progress=False)


def test_export_round_trip_with_metadata(exported: Path) -> None:
    data = read_records(exported)
    assert data.header["split"] == "test" and data.header["count"] == 5
    assert [r.index for r in data.records] == [2, 3, 4, 5, 6]
    split = get_split("test")
    for r in data.records:
        assert r.config == split[r.index]
        assert r == describe(r.index, r.config)
        assert r.params == num_params(r.config)
        assert 0 < r.flops_32 < r.flops_224
        assert 0 < r.depth < r.num_nodes
        assert sum(r.op_counts.values()) > 0 and "none" not in r.op_counts


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def test_corrupt_line_is_named(exported: Path, tmp_path: Path) -> None:
    lines = _lines(exported)
    bad = tmp_path / "corrupt.jsonl"
    bad.write_text("".join(lines[:3] + ['{"index": 4, "arch": {"genot\n'] + lines[4:]), encoding="utf-8")
    with pytest.raises(DatasetFormatError, match=r"corrupt\.jsonl:4: not valid JSON"):
        read_records(bad)

    record = json.loads(lines[2])
    record["arch"]["genotype"]["n"][0][0] = "warp_drive"
    bad.write_text("".join(lines[:2] + [json.dumps(record) + "\n"] + lines[3:]), encoding="utf-8")
    with pytest.raises(DatasetFormatError, match=r"corrupt\.jsonl:3: not a valid architecture record.*warp_drive"):
        read_records(bad)

    bad.write_text("".join(lines[:2] + [lines[3], lines[2]] + lines[4:]), encoding="utf-8")  # swapped
    with pytest.raises(DatasetFormatError, match=r"corrupt\.jsonl:3: record of index 4, expected 3"):
        read_records(bad)


def test_truncated_file_is_named(exported: Path, tmp_path: Path) -> None:
    text = exported.read_text(encoding="utf-8")
    cut = tmp_path / "cut.jsonl"
    cut.write_text(text[: len(text) - 40], encoding="utf-8")  # in the middle of line 6
    with pytest.raises(DatasetFormatError, match=r"cut\.jsonl:6: .*truncated"):
        read_records(cut)
    cut.write_text("".join(_lines(exported)[:4]), encoding="utf-8")  # at a line boundary
    with pytest.raises(DatasetFormatError, match=r"cut\.jsonl:4: .*announces 5.*truncated"):
        read_records(cut)
    cut.write_text("", encoding="utf-8")
    with pytest.raises(DatasetFormatError, match="empty file"):
        read_records(cut)


def test_cli_generate_and_stats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "val.jsonl"
    cli(["generate", "--split", "val", "--n", "3", "--workers", "1", "--out", str(out)])
    assert "val" in capsys.readouterr().err  # the progress bar
    assert [r.index for r in read_records(out).records] == [0, 1, 2]
    cli(["stats", "--from", str(out), "--out-dir", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "params (M)" in printed and "op shares" in printed
    png = tmp_path / "deepnets_val_stats.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- loader


def _indices(loader) -> list[list[int]]:
    return [graphs.arch_index.tolist() for _, graphs in loader]


class _OrderOnly(MetaBatchDataset):
    """Skips building, so that order and resumption tests run in a second."""

    def modules(self, configs):
        return []

    def graphs(self, modules, indices):
        graphs = Batch.from_data_list([Data(num_nodes=1) for _ in indices])
        graphs.arch_index = torch.tensor(indices)
        return graphs


def test_loader_yields_built_modules_with_matching_graphs() -> None:
    split = get_split("val", narrow=True)
    ds = MetaBatchDataset(split, meta_batch_size=4, seed=1, num_archs=10)
    loader = MetaBatchLoader(ds, num_workers=2)
    batches = list(loader)
    assert len(batches) == len(ds) == 2  # the incomplete last meta-batch is dropped
    seen = [i for _, g in batches for i in g.arch_index.tolist()]
    assert len(set(seen)) == 8 and set(seen) <= set(range(10))
    for modules, graphs in batches:
        assert len(modules) == graphs.num_graphs == 4
        for k, (m, i) in enumerate(zip(modules, graphs.arch_index.tolist())):
            assert isinstance(m, Network) and m.config == split[i]
            assert graphs.get_example(k).param_names == [n for n, _ in m.named_parameters()]
            assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert loader.state_dict()["epoch"] == 1 and loader.state_dict()["position"] == 0


def test_loader_order_depends_only_on_seed_and_epoch() -> None:
    source = get_split("train")
    ds = _OrderOnly(source, meta_batch_size=4, seed=1, num_archs=40)
    in_process = _indices(MetaBatchLoader(ds, num_workers=0))
    assert sorted(sum(in_process, [])) == list(range(40))
    loader = MetaBatchLoader(ds, num_workers=2)
    assert _indices(loader) == in_process  # same sequence with workers
    epoch1 = _indices(loader)
    assert epoch1 != in_process and sorted(sum(epoch1, [])) == list(range(40))
    assert _indices(MetaBatchLoader(_OrderOnly(source, 4, seed=2, num_archs=40), num_workers=0)) != in_process
    assert len(_OrderOnly(source, 8).order(0)) == 1_000_000  # the whole train split


def test_loader_resumes_from_its_state() -> None:
    ds = _OrderOnly(get_split("train"), meta_batch_size=4, seed=3, num_archs=40)
    full = _indices(ds)
    loader = MetaBatchLoader(ds, num_workers=2)
    head = []
    for _, graphs in loader:
        head.append(graphs.arch_index.tolist())
        if len(head) == 3:
            break
    state = loader.state_dict()
    assert state == {"epoch": 0, "position": 3, "source": "train", "seed": 3, "meta_batch_size": 4,
                     "num_archs": 40, "shuffle": 1}
    resumed = MetaBatchLoader(_OrderOnly(get_split("train"), 4, seed=3, num_archs=40), num_workers=2)
    resumed.load_state_dict(state)
    assert head + _indices(resumed) == full
    assert _indices(resumed) != full  # the next epoch is shuffled differently


@pytest.mark.parametrize("other", [
    dict(source=get_split("train", narrow=True)), dict(seed=4), dict(meta_batch_size=2), dict(num_archs=80),
])
def test_loader_refuses_the_state_of_other_meta_batches(other: dict) -> None:
    """A saved position only means something for the same order: resuming another one is refused."""
    settings = dict(source=get_split("train"), meta_batch_size=4, seed=3, num_archs=40)
    state = MetaBatchLoader(_OrderOnly(**settings), num_workers=0).state_dict()
    key = next(iter(other))
    with pytest.raises(ValueError, match=f"saved {key}="):
        MetaBatchLoader(_OrderOnly(**(settings | other)), num_workers=0).load_state_dict(state)
    with pytest.raises(ValueError, match="position 11 outside the 10 meta-batches"):
        MetaBatchLoader(_OrderOnly(**settings), num_workers=0).load_state_dict(state | {"position": 11})


def test_workers_and_main_process_build_the_same_networks() -> None:
    ds = MetaBatchDataset(get_split("train", narrow=True), meta_batch_size=2, seed=0, num_archs=4)
    in_process = list(MetaBatchLoader(ds, num_workers=0))
    with_workers = list(MetaBatchLoader(ds, num_workers=2))
    for (a, ga), (b, gb) in zip(in_process, with_workers):
        assert torch.equal(ga.arch_index, gb.arch_index) and torch.equal(ga.edge_index, gb.edge_index)
        for x, y in zip(a, b):  # parameters are left uninitialised: compare buffers and shapes
            assert [(n, p.shape) for n, p in x.named_parameters()] == [(n, p.shape) for n, p in y.named_parameters()]
            bx, by = dict(x.named_buffers()), dict(y.named_buffers())
            assert bx.keys() == by.keys() and all(torch.equal(bx[k], by[k]) for k in bx)


# ---------------------------------------------------------------- builder


def _configs() -> list[tuple[NetConfig, bool]]:
    """Architectures covering every op, both norms, both stems, both heads and input sizes."""
    configs = [(get_split(s)[i], False) for s in ("train", "bnfree", "wide") for i in range(6)]
    configs += [(get_split("train", narrow=True)[i], True) for i in range(3)]
    configs += [(NetConfig(VIT, C=16, n_cells=3, stem_type="darts", fc_layers=2, global_pool=False), False)]
    ops = {op for cfg, _ in configs for op, _ in cfg.genotype.normal + cfg.genotype.reduce}
    assert ops >= set(OP_NAMES) - {"none"}, set(OP_NAMES) - ops
    return configs


@pytest.mark.parametrize("init", [True, False])
def test_builder_builds_what_netconfig_builds(init: bool) -> None:
    builder = NetBuilder(init=init)
    x = torch.randn(2, 3, 32, 32)
    for cfg, imagenet in _configs():
        ref, net = cfg.build(10, imagenet), builder.build(cfg, 10, imagenet)
        assert [(n, type(m)) for n, m in ref.named_modules()] == [(n, type(m)) for n, m in net.named_modules()]
        assert [(n, p.shape, p.requires_grad) for n, p in ref.named_parameters()] == [
            (n, p.shape, p.requires_grad) for n, p in net.named_parameters()
        ]
        assert all(type(p) is torch.nn.Parameter for p in net.parameters())
        ref_buffers = dict(ref.named_buffers())
        assert all(torch.equal(b, ref_buffers[n]) for n, b in net.named_buffers())  # fresh BN statistics
        net.load_state_dict(ref.state_dict())
        assert torch.equal(net(x), ref(x))  # the same function (training mode: batch statistics)


def test_replayed_block_graphs_equal_traced_graphs() -> None:
    builder = NetBuilder(init=False)
    cache = SubgraphCache(key=builder.block_key)
    for _ in range(2):  # recording, then replaying
        for cfg, imagenet in _configs():
            for shape in [(3, 32, 32)] + [(3, 224, 224)] * imagenet:
                plain = build_graph(cfg.build(10, imagenet), input_shape=shape).to_dict()
                cached = build_graph(builder.build(cfg, 10, imagenet), input_shape=shape, subgraphs=cache).to_dict()
                assert plain.keys() == cached.keys()
                for k, v in plain.items():
                    assert torch.equal(v, cached[k]) if torch.is_tensor(v) else v == cached[k], (cfg, k)
    assert 0 < len(cache) and all(entry is not None for entry in cache._entries.values())


def test_builder_copies_are_independent_and_seeded() -> None:
    cfg = get_split("train")[0]
    builder = NetBuilder()
    a, b = builder.build(cfg), builder.build(cfg)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))  # one block, one init
    assert not {t.data_ptr() for t in a.state_dict().values()} & {t.data_ptr() for t in b.state_dict().values()}
    for ma, mb in zip(a.modules(), b.modules()):
        assert ma is not mb
        shared = [k for k, v in vars(ma).items() if isinstance(v, (dict, list, set)) and v is vars(mb)[k]]
        assert not shared, f"{type(ma).__name__} shares {shared} between copies"
    with torch.no_grad():
        next(a.parameters()).add_(1.0)
    a.register_forward_hook(lambda *args: None)
    assert not torch.equal(next(a.parameters()), next(b.parameters())) and not b._forward_hooks
    # Another builder (another process) starts from the same values; another seed does not.
    assert all(torch.equal(p, q) for p, q in zip(b.parameters(), NetBuilder().build(cfg).parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(b.parameters(), NetBuilder(seed=1).build(cfg).parameters()))


def test_builder_cache_is_bounded_and_not_pickled() -> None:
    builder = NetBuilder(max_blocks=3)
    builder.build(get_split("train")[0])
    assert len(builder) == 3
    assert len(pickle.loads(pickle.dumps(builder))) == 0
    with pytest.raises(ValueError, match="max_blocks"):
        NetBuilder(max_blocks=0)
