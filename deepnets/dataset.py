"""Exported splits: one JSON line per architecture, with its metadata.

File layout (UTF-8, one JSON object per line)::

    {"format": "deepnets-jsonl", "version": 1, "generator_version": 1, "split": "test",
     "start": 0, "count": 500, "sampler": {...}}
    {"index": 0, "arch": {...NetConfig...}, "params": 1234, "flops_32": ..., ...}
    ...

The header's ``count`` makes truncation at a line boundary detectable; a line cut in the
middle fails to parse. Either way ``read_records`` raises ``DatasetFormatError`` naming the
file and line.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from deepnets.generator import GENERATOR_VERSION, Split
from deepnets.cost import num_flops
from deepnets.net import NetConfig, Network

log = logging.getLogger(__name__)

FORMAT = "deepnets-jsonl"
FORMAT_VERSION = 1


class DatasetFormatError(ValueError):
    """An exported split is corrupt or truncated; the message names the file and line."""


@dataclass(frozen=True)
class ArchRecord:
    """One architecture of a split with its metadata.

    Attributes:
        index: position in the split.
        config: the architecture.
        params: parameters of the CIFAR-10 network (32x32 input, 10 classes).
        flops_32: FLOPs of one 32x32 image through the CIFAR-10 network.
        flops_224: FLOPs of one 224x224 image through the ImageNet network
            (``imagenet_input=True``, 1000 classes).
        depth: longest input-to-output path of the computational graph, in edges.
        num_nodes: nodes of the computational graph (``ghn.graph.build_graph``).
        op_counts: how many times each cell op is instantiated in the network.

    FLOPs count 2 per multiply-add of convolutions, matrix products and attention, as
    ``torch.utils.flop_counter`` does; pooling, norms and activations are not counted.
    """

    index: int
    config: NetConfig
    params: int
    flops_32: int
    flops_224: int
    depth: int
    num_nodes: int
    op_counts: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "arch": self.config.to_dict(),
            "params": self.params,
            "flops_32": self.flops_32,
            "flops_224": self.flops_224,
            "depth": self.depth,
            "num_nodes": self.num_nodes,
            "op_counts": self.op_counts,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArchRecord:
        return cls(
            index=int(d["index"]),
            config=NetConfig.from_dict(d["arch"]),
            params=int(d["params"]),
            flops_32=int(d["flops_32"]),
            flops_224=int(d["flops_224"]),
            depth=int(d["depth"]),
            num_nodes=int(d["num_nodes"]),
            op_counts={str(k): int(v) for k, v in d["op_counts"].items()},
        )


def op_counts(net: Network) -> dict[str, int]:
    """How many times each cell op is instantiated in ``net``."""
    return dict(Counter(name for cell in net.cells for name in cell.op_names))


def describe(index: int, config: NetConfig) -> ArchRecord:
    """The metadata of one architecture (about 0.1 s, mostly graph construction)."""
    # Imported here: only metadata and the loader need the graph module.
    from ghn.graph import build_graph

    net = config.build(num_classes=10)
    graph = build_graph(net, input_shape=(3, 32, 32))
    return ArchRecord(
        index=index,
        config=config,
        params=sum(p.numel() for p in net.parameters()),
        flops_32=num_flops(config),
        flops_224=num_flops(config, num_classes=1000, imagenet_input=True),
        depth=int(graph.level.max()),
        num_nodes=int(graph.num_nodes),
        op_counts=op_counts(net),
    )


def _describe_index(job: tuple[Split, int]) -> ArchRecord:
    split, index = job
    return describe(index, split[index])


def _init_worker() -> None:
    # Parallelism comes from processes; intra-op threads would only fight over cores.
    torch.set_num_threads(1)


def describe_split(
    split: Split, n: int | None = None, start: int = 0, workers: int = 1, progress: bool = True
) -> Iterator[ArchRecord]:
    """Records of architectures ``start .. start + n - 1`` of ``split``, in order.

    Args:
        n: how many (default: to the end of the split).
        workers: processes computing metadata (each uses one thread).
        progress: show a tqdm progress bar on stderr.
    """
    stop = len(split) if n is None else min(len(split), start + n)
    if not 0 <= start <= stop:
        raise ValueError(f"start {start} outside split {split.name!r} of {len(split)}")
    jobs = ((split, i) for i in range(start, stop))
    bar = tqdm(total=stop - start, desc=f"{split.name}", unit="arch", disable=not progress)
    with bar:
        if workers <= 1:
            for record in map(_describe_index, jobs):
                bar.update()
                yield record
            return
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(workers, initializer=_init_worker) as pool:
            for record in pool.imap(_describe_index, jobs, chunksize=4):
                bar.update()
                yield record


def write_records(
    path: str | Path, split: Split, records: Iterator[ArchRecord] | Sequence[ArchRecord], start: int, count: int
) -> Path:
    """Write a header and ``count`` records; the file is complete only if all were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "generator_version": GENERATOR_VERSION,
        "split": split.name,
        "seed": split.seed,
        "start": start,
        "count": count,
        "sampler": asdict(split.sampler),
    }
    written = 0
    # Write to a temporary name and rename, so an interrupted export never leaves a
    # file that looks complete.
    tmp = path.with_name(path.name + ".part")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(json.dumps(header, separators=(",", ":")) + "\n")
        for record in records:
            f.write(json.dumps(record.to_dict(), separators=(",", ":")) + "\n")
            written += 1
    if written != count:
        raise ValueError(f"expected {count} records, got {written}; partial output left in {tmp}")
    tmp.replace(path)
    return path


def export_split(
    split: Split, path: str | Path, n: int | None = None, start: int = 0, workers: int = 1, progress: bool = True
) -> Path:
    """Export architectures ``start .. start + n - 1`` of ``split`` with metadata to JSON lines."""
    stop = len(split) if n is None else min(len(split), start + n)
    records = describe_split(split, stop - start, start, workers, progress)
    return write_records(path, split, records, start, stop - start)


@dataclass(frozen=True)
class ExportedSplit:
    """The content of an exported file: its header and records."""

    header: dict[str, Any]
    records: list[ArchRecord]

    @property
    def configs(self) -> list[NetConfig]:
        return [r.config for r in self.records]


def read_records(path: str | Path) -> ExportedSplit:
    """Read a file written by ``export_split``.

    Raises:
        DatasetFormatError: bad header, a line that is not valid JSON or not a record,
            or fewer/more records than the header announces (a truncated file).
    """
    path = Path(path)
    records: list[ArchRecord] = []
    header: dict[str, Any] | None = None
    with path.open("r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            if not line.endswith("\n"):
                raise DatasetFormatError(f"{where}: line cut short (no newline at end of file): the file is truncated")
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetFormatError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from e
            if header is None:
                header = _check_header(obj, where)
                continue
            try:
                record = ArchRecord.from_dict(obj)
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                raise DatasetFormatError(f"{where}: not a valid architecture record ({type(e).__name__}: {e})") from e
            expected = header["start"] + len(records)
            if record.index != expected:
                raise DatasetFormatError(f"{where}: record of index {record.index}, expected {expected}")
            records.append(record)
    if header is None:
        raise DatasetFormatError(f"{path}:1: empty file, expected a {FORMAT} header")
    if len(records) != header["count"]:
        raise DatasetFormatError(
            f"{path}:{len(records) + 1}: the file ends at this line with {len(records)} records, "
            f"but its header (line 1) announces {header['count']}; it is truncated or was appended to"
        )
    return ExportedSplit(header, records)


def _check_header(obj: Any, where: str) -> dict[str, Any]:
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise DatasetFormatError(f"{where}: not a {FORMAT} header")
    if obj.get("version") != FORMAT_VERSION:
        raise DatasetFormatError(f"{where}: format version {obj.get('version')}, this reader knows {FORMAT_VERSION}")
    if not isinstance(obj.get("count"), int) or not isinstance(obj.get("start"), int):
        raise DatasetFormatError(f"{where}: header has no record count or start index")
    if obj.get("generator_version") != GENERATOR_VERSION:
        log.warning(
            "%s: written by generator version %s, this is %s: regenerated splits would differ",
            where, obj.get("generator_version"), GENERATOR_VERSION,
        )
    return obj
