"""ghn.hub: the registry, loading from local paths and the hub, saving, sharing, and every failure.

The hub is a real HTTP server on 127.0.0.1 (a thread) answering the endpoints huggingface_hub
2.4 calls: ``HEAD``/``GET /{repo}/resolve/{revision}/{path}`` with the headers
`hf_hub_download` reads (``X-Repo-Commit``, ``ETag``/``X-Linked-Etag``, ``X-Linked-Size``,
``Content-Length``, byte ranges, ``X-Error-Code``) and, for `push_to_hub`, ``POST
/api/repos/create``, ``/api/models/{repo}/preupload/{rev}`` and ``/api/models/{repo}/commit/{rev}``.
Nothing of huggingface_hub is mocked. It reads ``HF_ENDPOINT``, ``HF_HOME`` and
``HF_HUB_OFFLINE`` into `huggingface_hub.constants` when imported, so after changing the
environment the fixtures reload that module and the library re-derives every setting itself;
one subprocess test checks the same variables in a fresh interpreter.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import huggingface_hub.constants
import pytest
import torch
import torchvision
import yaml
from safetensors import safe_open
from safetensors.torch import load_file

import ghn
from ghn import GHN, GHNConfig, hub
from ghn.cifar_models import adaptation
from ghn.cli import main as cli

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = GHNConfig(hid=8, dec_hid=8, max_shape=(16, 16, 3, 3))
METADATA = {
    "dataset": "DeepNets-1M / CIFAR-10",
    "training": {"epochs": 1, "meta_batch": 2, "lr": 1e-3, "seed": 0},
    "compute": {"device": "cpu", "hours": 0.01},
    "accuracy": {"resnet18/top1": 12.5},
    "evaluation": {"resnet18/top1": "all 10,000 CIFAR-10 test images"},
}


# -- a model hub on 127.0.0.1 ---------------------------------------------------------------


@dataclass
class _Repo:
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> commit
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit -> {path: content}


class FakeHub:
    """Serves model repositories the way the hub's file and commit endpoints do.

    Attributes:
        log: ``(method, path)`` of every request received.
        ranges: the ``Range`` headers of resumed downloads.
        interrupt: paths whose download dies half-way (and whose resumption fails).
        corrupt: paths served with one byte flipped (same size, same ETag).
        not_a_hub: answer every file request like a plain web server (no hub headers).
    """

    def __init__(self) -> None:
        self.repos: dict[str, _Repo] = {}
        self.log: list[tuple[str, str]] = []
        self.auth: list[str | None] = []
        self.ranges: list[str] = []
        self.interrupt: set[str] = set()
        self.corrupt: set[str] = set()
        self.not_a_hub = False
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Handler,), {"hub": self}))
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def commit(self, repo_id: str, files: dict[str, bytes], branch: str = "main", tag: str | None = None) -> str:
        """A new commit on `branch` adding `files` to its tree; returns the commit hash."""
        repo = self.repos.setdefault(repo_id, _Repo())
        parent = repo.refs.get(branch, "")
        tree = {**repo.commits.get(parent, {}), **files}
        digest = json.dumps([parent, sorted((k, hashlib.sha256(v).hexdigest()) for k, v in tree.items())])
        sha = hashlib.sha1(digest.encode()).hexdigest()
        repo.commits[sha] = tree
        repo.refs[branch] = sha
        if tag:
            repo.refs[tag] = sha
        return sha

    def files(self, method: str | None = None) -> list[tuple[str, str]]:
        """Logged file requests (``/resolve/``), optionally of one method, as (method, file name)."""
        return [(m, p.rsplit("/", 1)[-1]) for m, p in self.log if "/resolve/" in p and method in (None, m)]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: FakeHub

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _reply(self, status: int, headers: dict[str, str], body: bytes = b"", length: int | None = None) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str | None, headers: dict[str, str] | None = None) -> None:
        headers = {"Content-Type": "application/json", **(headers or {})}
        if code:
            headers["X-Error-Code"] = code
        self._reply(status, headers, json.dumps({"error": code or "server error"}).encode())

    def do_HEAD(self) -> None:
        self._resolve()

    def do_GET(self) -> None:
        self._resolve()

    def _resolve(self) -> None:
        hub_ = self.hub
        hub_.log.append((self.command, self.path))
        if hub_.not_a_hub:
            return self._reply(200, {"Content-Type": "text/html"}, b"<html>sign in to the proxy</html>")
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", urlsplit(self.path).path)
        if m is None:
            return self._error(404, None)
        repo_id, rev, path = m[1], unquote(m[2]), unquote(m[3])
        repo = hub_.repos.get(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound")
        commit = repo.refs.get(rev) or (rev if rev in repo.commits else None)
        if commit is None:
            return self._error(404, "RevisionNotFound")
        if path not in repo.commits[commit]:
            return self._error(404, "EntryNotFound", {"X-Repo-Commit": commit})
        data = repo.commits[commit][path]
        etag = f'"{hashlib.sha256(data).hexdigest()}"'
        if path in hub_.corrupt:
            mid = len(data) // 2
            data = data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1 :]
        headers = {"X-Repo-Commit": commit, "ETag": etag, "X-Linked-Etag": etag, "X-Linked-Size": str(len(data)),
                   "Accept-Ranges": "bytes"}
        start, status = 0, 200
        if self.command == "GET" and (rng := self.headers.get("Range")):
            hub_.ranges.append(rng)
            if path in hub_.interrupt:
                return self._error(500, None)  # the server went away: resuming fails too
            start, status = int(re.fullmatch(r"bytes=(\d+)-", rng)[1]), 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        if self.command == "GET" and path in hub_.interrupt:
            self._reply(status, headers, data[: len(data) // 2], length=len(data))
            self.close_connection = True  # half the promised bytes, then the connection drops
            return
        self._reply(status, headers, data[start:])

    def do_POST(self) -> None:
        hub_ = self.hub
        hub_.log.append((self.command, self.path))
        hub_.auth.append(self.headers.get("Authorization"))
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        path = urlsplit(self.path).path
        if path == "/api/repos/create":
            req = json.loads(body)
            repo_id = f"{req['organization']}/{req['name']}"
            hub_.repos.setdefault(repo_id, _Repo())
            return self._reply(200, {}, json.dumps({"url": f"{hub_.url}/{repo_id}", "name": repo_id}).encode())
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/preupload/([^/]+)", path):
            files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                     for f in json.loads(body)["files"]]
            return self._reply(200, {}, json.dumps({"files": files}).encode())
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/commit/([^/]+)", path):
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            files = {x["value"]["path"]: base64.b64decode(x["value"]["content"]) for x in lines if x["key"] == "file"}
            sha = hub_.commit(m[1], files, branch=unquote(m[2]))
            reply = {"commitUrl": f"{hub_.url}/{m[1]}/commit/{sha}", "commitOid": sha, "pullRequestUrl": None}
            return self._reply(200, {}, json.dumps(reply).encode())
        return self._error(404, None)


def _reload_hf_settings() -> None:
    """huggingface_hub copies its environment variables into `constants` at import time."""
    importlib.reload(huggingface_hub.constants)


def _set_offline(monkeypatch: pytest.MonkeyPatch, offline: bool) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    _reload_hf_settings()


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A fresh hub; HF_ENDPOINT points at it and HF_HOME at a temporary directory."""
    fake = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")  # no agent-registry request besides ours
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    _reload_hf_settings()
    yield fake
    fake.stop()
    monkeypatch.undo()
    _reload_hf_settings()


def _cache(tmp_path: Path, repo_id: str = "org/repo") -> Path:
    return tmp_path / "hf_home" / "hub" / f"models--{repo_id.replace('/', '--')}"


# -- models ---------------------------------------------------------------------------------


def _tiny(seed: int = 0) -> GHN:
    torch.manual_seed(seed)
    return GHN(TINY)


@pytest.fixture(scope="module")
def meta() -> GHN:
    return _tiny()


def _saved_files(meta_model: GHN, directory: Path, metadata: dict | None = None) -> dict[str, bytes]:
    out = hub.save_pretrained(meta_model, directory, metadata)
    return {p.name: p.read_bytes() for p in out.iterdir()}


@pytest.fixture(scope="module")
def saved(meta: GHN, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The two files save_pretrained writes, by name (read-only: copy before damaging)."""
    return _saved_files(meta, tmp_path_factory.mktemp("saved"), METADATA)


def _write(directory: Path, files: dict[str, bytes]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return directory


def _same_state(a: GHN, b: GHN) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _predicted(meta_model: GHN) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)  # the starting values do not matter: every parameter is overwritten
    net = meta_model.predict(torchvision.models.resnet18(num_classes=10))
    return {k: v.detach().clone() for k, v in net.named_parameters()}


@pytest.fixture(scope="module")
def reference(meta: GHN) -> dict[str, torch.Tensor]:
    return _predicted(meta)


def _flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


# -- registry and resolution ----------------------------------------------------------------


def test_shipped_registry_is_consistent():
    """Whatever ghn/pretrained/registry.yaml lists is present, intact and loadable."""
    for entry in hub.list_models():
        assert isinstance(ghn.from_pretrained(entry.name), GHN), entry.name


@pytest.fixture
def empty_registry(tmp_path, monkeypatch) -> None:
    """An empty registry: a broken install that lost the default meta-model's package data."""
    root = tmp_path / "pretrained"
    root.mkdir()
    (root / "registry.yaml").write_text("models: []\n")
    monkeypatch.setattr(hub, "PRETRAINED_DIR", root)


def test_default_model_missing_from_a_broken_install(empty_registry, capsys):
    assert hub.list_models() == []
    with pytest.raises(hub.ModelNotShippedError) as err:
        ghn.from_pretrained(hub.DEFAULT_MODEL)
    assert isinstance(err.value, LookupError)
    msg = str(err.value)
    assert "broken" in msg and "reinstall" in msg.lower() and "org/repo" in msg and "path" in msg
    assert "being trained" not in msg and "not shipped" not in msg
    with pytest.raises(hub.ModelNotShippedError):
        ghn.predict(torchvision.models.resnet18(num_classes=10))  # no meta-model: the default one

    assert cli(["models"]) == 0
    out = capsys.readouterr().out
    assert "none registered" in out and "reinstall" in out and "being trained" not in out
    assert cli(["list-models"]) == 0
    assert "none registered" in capsys.readouterr().out
    assert cli(["predict", "--model", "resnet18", "--out", "unused.safetensors"]) == 2
    assert "reinstall" in capsys.readouterr().err


def test_hubconf_without_registered_models(empty_registry):
    untrained = torch.hub.load(str(REPO_ROOT), "ghn2", source="local", pretrained=False, hid=8, dec_hid=8)
    assert isinstance(untrained, GHN) and untrained.config.hid == 8 and untrained.config.virtual_edges
    with pytest.raises(hub.ModelNotShippedError):
        torch.hub.load(str(REPO_ROOT), "ghn2", source="local")


@pytest.mark.parametrize("name", ["nope", "a/b/c", "./missing-dir", "org/repo/extra:x"])
def test_unknown_names(name, empty_registry):
    with pytest.raises(hub.UnknownModelError) as err:
        ghn.from_pretrained(name)
    assert not isinstance(err.value, hub.ModelNotShippedError)
    assert "org/repo" in str(err.value) and "save_pretrained" in str(err.value)


@pytest.fixture
def registered(saved, tmp_path, monkeypatch) -> hub.RegisteredModel:
    """A registry holding one meta-model, 'tiny-test', in a temporary pretrained directory."""
    root = tmp_path / "pretrained"
    _write(root / "tiny-test", saved)
    entry = {"name": "tiny-test", "description": "tiny test meta-model", "accuracy": {"resnet18/top1": 12.5},
             "sha256": hashlib.sha256(saved["model.safetensors"]).hexdigest(), "size": len(saved["model.safetensors"])}
    (root / "registry.yaml").write_text(yaml.safe_dump({"models": [entry]}))
    monkeypatch.setattr(hub, "PRETRAINED_DIR", root)
    return hub.list_models()[0]


def test_registered_model(registered, meta, capsys, tmp_path, monkeypatch):
    assert registered.name == "tiny-test"
    assert _same_state(ghn.from_pretrained("tiny-test"), meta)
    assert hub.load_info("tiny-test").metadata.accuracy == METADATA["accuracy"]

    assert cli(["models"]) == 0
    out = capsys.readouterr().out
    assert "tiny-test" in out and "resnet18/top1=12.5" in out and "kB" in out

    # torch.hub entry points are generated from the registry
    loaded = torch.hub.load(str(REPO_ROOT), "tiny-test", source="local")
    assert _same_state(loaded, meta)
    untrained = torch.hub.load(str(REPO_ROOT), "tiny-test", source="local", pretrained=False)
    assert untrained.config == meta.config and not _same_state(untrained, meta)

    with pytest.raises(hub.RevisionNotApplicableError, match="revision") as err:
        ghn.from_pretrained("tiny-test", revision="main")
    assert isinstance(err.value, ValueError)  # callers catching ValueError keep working
    # an existing local path wins over a registered name
    monkeypatch.chdir(tmp_path)
    hub.save_pretrained(_tiny(seed=3), tmp_path / "tiny-test")
    assert _same_state(ghn.from_pretrained("tiny-test"), _tiny(seed=3))


def test_registered_model_damaged(registered):
    weights = registered.directory / registered.weights
    _flip_middle_byte(weights)
    with pytest.raises(hub.ChecksumMismatchError, match="reinstall"):
        ghn.from_pretrained("tiny-test")
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(hub.CorruptWeightsError, match="truncated"):
        ghn.from_pretrained("tiny-test")
    weights.unlink()
    with pytest.raises(hub.MissingFileError, match="reinstall"):
        ghn.from_pretrained("tiny-test")


# -- saving and local loading ---------------------------------------------------------------


def test_save_load_predict_round_trip(meta, reference, tmp_path):
    out = hub.save_pretrained(meta, tmp_path / "m", METADATA)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    umask = os.umask(0)
    os.umask(umask)
    for f in out.iterdir():  # readable by others as the umask allows, not owner-only
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask, f
    doc = json.loads((out / "config.json").read_text())
    assert doc["format_version"] == hub.FORMAT_VERSION and doc["config"] == TINY.to_dict()
    assert doc["metadata"] == {**METADATA, "num_classes": 10}
    assert doc["weights"]["sha256"] == hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()

    loaded = ghn.from_pretrained(out)
    assert not loaded.training and _same_state(loaded, meta)
    predicted = _predicted(loaded)
    assert predicted.keys() == reference.keys()
    assert all(torch.equal(predicted[k], reference[k]) for k in reference)  # bit-identical

    assert _same_state(ghn.from_pretrained(str(out / "model.safetensors")), meta)  # a file, config beside it
    info = hub.load_info(out)
    assert info.config == TINY and info.metadata == hub.Metadata(**METADATA, num_classes=10)


def test_other_local_forms(meta, saved, tmp_path):
    # a bare GHNConfig YAML beside the weights (no format_version, no checksum)
    d = _write(tmp_path / "yaml", {"model.safetensors": saved["model.safetensors"]})
    TINY.to_yaml(d / "config.yaml")
    assert _same_state(ghn.from_pretrained(d), meta)
    assert hub.load_info(d).format_version == 0

    # a legacy checkpoint, loaded with torch.load(weights_only=True)
    torch.save(meta.checkpoint(), tmp_path / "ghn.pt")
    assert _same_state(ghn.from_pretrained(tmp_path / "ghn.pt"), meta)
    assert hub.load_info(tmp_path / "ghn.pt").config == TINY

    with pytest.raises(hub.MissingFileError):
        ghn.from_pretrained(_write(tmp_path / "weights-only", {"model.safetensors": saved["model.safetensors"]}))
    with pytest.raises(hub.RevisionNotApplicableError, match="revision") as err:
        ghn.from_pretrained(d, revision="v1")
    assert isinstance(err.value, ValueError) and isinstance(err.value, hub.MetaModelError)
    with pytest.raises(ValueError, match="num_classes"):
        hub.save_pretrained(meta, tmp_path / "x", {"num_classes": 100})
    with pytest.raises(ValueError, match="unknown Metadata key"):
        hub.save_pretrained(meta, tmp_path / "x", {"datset": "typo"})


def test_cli_predict_reports_graph_errors(saved, tmp_path, capsys):
    meta_dir = _write(tmp_path / "meta", saved)
    out = tmp_path / "resnet18.safetensors"
    argv = ["predict", "--model", "resnet18", "--meta-model", str(meta_dir), "--input-shape", "5", "32", "32",
            "--out", str(out)]
    assert cli(argv) == 2  # resnet18's first conv expects 3 channels: build_graph raises GraphError
    err = capsys.readouterr().err
    assert "error: " in err and "input_shape=(5, 32, 32)" in err and "Traceback" not in err
    assert "--cifar to adapt it to 32x32 input" in err
    assert not out.exists()

    argv = ["predict", "--model", "resnet19", "--meta-model", str(meta_dir), "--out", str(out)]
    assert cli(argv) == 2  # refused before the meta-model is loaded
    err = capsys.readouterr().err
    assert "error: 'resnet19' is not a torchvision classification model; did you mean 'resnet18'" in err
    assert "Traceback" not in err and not out.exists()


def test_cli_predict_cifar_adapts_the_model(meta, saved, tmp_path):
    meta_dir = _write(tmp_path / "meta", saved)
    out = tmp_path / "resnet18.safetensors"
    assert cli(["predict", "--model", "resnet18", "--cifar", "--meta-model", str(meta_dir), "--out", str(out)]) == 0
    state = load_file(str(out))
    assert state["conv1.weight"].shape == (64, 3, 3, 3)  # the CIFAR stem, not the 7x7 ImageNet one
    expected = meta.predict(ghn.cifar_model("resnet18"), (3, 32, 32)).state_dict()
    assert state.keys() == expected.keys() and all(torch.equal(state[k], expected[k]) for k in expected)
    with safe_open(str(out), framework="pt") as f:
        assert f.metadata()["adaptation"] == adaptation("resnet18").description


class _Payload:
    """Unpickling this would create `marker`: the proof a loader executed code from a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_legacy_checkpoint_is_never_unpickled(meta, tmp_path):
    marker = tmp_path / "code-was-executed"
    torch.save({**meta.checkpoint(), "extra": _Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(hub.CorruptWeightsError, match="never unpickled"):
        ghn.from_pretrained(tmp_path / "evil.pt")
    assert not marker.exists()
    torch.save({"weights": meta.state_dict()}, tmp_path / "other.pt")
    with pytest.raises(hub.CorruptWeightsError, match="GHN.checkpoint"):
        ghn.from_pretrained(tmp_path / "other.pt")


def test_damaged_local_files(saved, tmp_path):
    d = _write(tmp_path / "flipped", saved)
    _flip_middle_byte(d / "model.safetensors")
    with pytest.raises(hub.ChecksumMismatchError, match="sha256"):
        ghn.from_pretrained(d)

    d = _write(tmp_path / "truncated", saved)
    (d / "model.safetensors").write_bytes(saved["model.safetensors"][:1000])
    with pytest.raises(hub.CorruptWeightsError, match="truncated"):
        ghn.from_pretrained(d)

    # without a recorded size or checksum, safetensors itself refuses the truncated file
    d = _write(tmp_path / "truncated-bare", {"model.safetensors": saved["model.safetensors"][:1000]})
    TINY.to_yaml(d / "config.yaml")
    with pytest.raises(hub.CorruptWeightsError, match="safetensors"):
        ghn.from_pretrained(d)


def test_bad_configs(saved, tmp_path):
    doc = json.loads(saved["config.json"])
    newer = _write(tmp_path / "newer", {**saved, "config.json": json.dumps({**doc, "format_version": 99}).encode()})
    with pytest.raises(hub.UnsupportedFormatError, match="upgrade"):
        ghn.from_pretrained(newer)

    wider = {**doc, "config": {**doc["config"], "hid": 16}}
    mismatch = _write(tmp_path / "mismatch", {**saved, "config.json": json.dumps(wider).encode()})
    with pytest.raises(hub.ConfigMismatchError, match="shape mismatch") as err:
        ghn.from_pretrained(mismatch)
    assert "hid=16" in str(err.value)

    huge = {**doc, "config": {**doc["config"], "hid": 1 << 20}}  # checked on the meta device, never allocated
    with pytest.raises(hub.ConfigMismatchError):
        ghn.from_pretrained(_write(tmp_path / "huge", {**saved, "config.json": json.dumps(huge).encode()}))

    broken = _write(tmp_path / "broken", {**saved, "config.json": b"{not json"})
    with pytest.raises(hub.InvalidConfigError, match="cannot parse"):
        ghn.from_pretrained(broken)
    unknown = {**doc, "config": {**doc["config"], "hidden": 8}}
    with pytest.raises(hub.InvalidConfigError, match="save_pretrained"):
        ghn.from_pretrained(_write(tmp_path / "unknown", {**saved, "config.json": json.dumps(unknown).encode()}))


# -- the hub --------------------------------------------------------------------------------


def test_download_cache_and_pinned_commit(server, saved, meta, tmp_path):
    commit = server.commit("org/repo", saved)
    loaded = ghn.from_pretrained("org/repo")
    assert _same_state(loaded, meta)
    assert server.files("GET") == [("GET", "config.json"), ("GET", "model.safetensors")]
    snapshot = _cache(tmp_path) / "snapshots" / commit
    assert (snapshot / "model.safetensors").read_bytes() == saved["model.safetensors"]

    # second load: the branch is re-validated (HEAD), nothing is downloaded again
    server.log.clear()
    assert _same_state(ghn.from_pretrained("org/repo"), meta)
    assert server.files("GET") == [] and server.files("HEAD")

    # a cached commit hash needs no request at all
    server.log.clear()
    assert _same_state(ghn.from_pretrained("org/repo", revision=commit), meta)
    assert server.log == []

    # cache_dir overrides HF_HOME
    assert _same_state(ghn.from_pretrained("org/repo", cache_dir=tmp_path / "elsewhere"), meta)
    assert list((tmp_path / "elsewhere").glob("models--org--repo/snapshots/*/model.safetensors"))


def test_hub_file_forms(server, saved, meta, tmp_path):
    """'org/repo:path' picks the weights file; its config is read from the same folder."""
    torch.save(meta.checkpoint(), tmp_path / "ghn.pt")
    server.commit("org/repo", {"sub/model.safetensors": saved["model.safetensors"],
                               "sub/config.json": saved["config.json"], "ghn.pt": (tmp_path / "ghn.pt").read_bytes()})
    assert _same_state(ghn.from_pretrained("org/repo:sub/model.safetensors"), meta)
    server.log.clear()
    assert _same_state(ghn.from_pretrained("org/repo:ghn.pt"), meta)  # legacy: config inside, weights_only
    assert server.files("GET") == [("GET", "ghn.pt")]


def test_revision_pinning(server, tmp_path):
    old, new = _tiny(seed=1), _tiny(seed=2)
    first = server.commit("org/repo", _saved_files(old, tmp_path / "old"), tag="v1")
    server.commit("org/repo", _saved_files(new, tmp_path / "new"))
    assert _same_state(ghn.from_pretrained("org/repo"), new)
    assert _same_state(ghn.from_pretrained("org/repo", revision="v1"), old)
    assert _same_state(ghn.from_pretrained("org/repo", revision=first), old)
    with pytest.raises(hub.UnknownModelError, match="no revision"):
        ghn.from_pretrained("org/repo", revision="v9")


def test_offline(server, saved, meta, monkeypatch):
    server.commit("org/repo", saved)
    ghn.from_pretrained("org/repo")
    _set_offline(monkeypatch, True)
    server.log.clear()
    assert _same_state(ghn.from_pretrained("org/repo"), meta)
    assert server.log == []
    with pytest.raises(hub.HubUnavailableError, match="HF_HUB_OFFLINE") as err:
        ghn.from_pretrained("org/not-cached")
    assert server.log == [] and "not in the cache" in str(err.value)


def test_hub_errors(server, saved):
    server.commit("org/repo", saved)
    with pytest.raises(hub.UnknownModelError, match="no repository 'org/missing'"):
        ghn.from_pretrained("org/missing")
    with pytest.raises(hub.MissingFileError, match="no file 'other.safetensors'"):
        ghn.from_pretrained("org/repo:other.safetensors")

    # a newer format fails on the config, before the weights are downloaded
    newer = json.dumps({**json.loads(saved["config.json"]), "format_version": 2}).encode()
    server.commit("org/newer", {**saved, "config.json": newer})
    server.log.clear()
    with pytest.raises(hub.UnsupportedFormatError):
        ghn.from_pretrained("org/newer")
    assert ("GET", "model.safetensors") not in server.files()

    # bytes damaged in transit: the checksum recorded in the config catches them
    server.commit("org/corrupt", saved)
    server.corrupt.add("model.safetensors")
    with pytest.raises(hub.ChecksumMismatchError, match="cache"):
        ghn.from_pretrained("org/corrupt")

    # an endpoint that is no hub (e.g. a proxy's error page) is reported as unreachable
    server.not_a_hub = True
    with pytest.raises(hub.HubUnavailableError, match="HF_ENDPOINT"):
        ghn.from_pretrained("org/uncached")


def test_interrupted_download_leaves_nothing_partial(server, tmp_path):
    # larger than huggingface_hub's 10 MiB download chunk, so that part of it reaches the
    # disk before the connection drops half-way
    big = GHN(GHNConfig(hid=96, dec_hid=96))
    files = _saved_files(big, tmp_path / "big")
    assert len(files["model.safetensors"]) > 2 * huggingface_hub.constants.DOWNLOAD_CHUNK_SIZE
    server.commit("org/repo", files)
    server.interrupt.add("model.safetensors")
    with pytest.raises(hub.HubUnavailableError, match="nothing partial"):
        ghn.from_pretrained("org/repo")
    # the client had written the first chunk and tried to resume after it; the server refused
    assert server.ranges == [f"bytes={huggingface_hub.constants.DOWNLOAD_CHUNK_SIZE}-"]
    cache = _cache(tmp_path)
    etag = hashlib.sha256(files["model.safetensors"]).hexdigest()
    assert not (cache / "blobs" / etag).exists()
    assert not list(cache.glob("snapshots/*/model.safetensors"))
    assert not [p for p in cache.rglob("*") if p.name.endswith(".incomplete")]
    # the config was complete and stays cached; the weights download again once the server is back
    assert list(cache.glob("snapshots/*/config.json"))
    server.interrupt.clear()
    assert _same_state(ghn.from_pretrained("org/repo"), big)


def _closed_port_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a port nobody listens on: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    _reload_hf_settings()


def test_unreachable_hub_uses_the_cache(server, saved, meta, monkeypatch):
    server.commit("org/repo", saved)
    ghn.from_pretrained("org/repo")
    _closed_port_endpoint(monkeypatch)
    assert _same_state(ghn.from_pretrained("org/repo"), meta)


@pytest.mark.slow  # huggingface_hub retries a refused connection with backoff (~25 s) before giving up
def test_unreachable_hub_without_cache(server, monkeypatch):
    _closed_port_endpoint(monkeypatch)
    with pytest.raises(hub.HubUnavailableError, match="could not reach"):
        ghn.from_pretrained("org/repo")


def test_push_to_hub_round_trip(server, meta, reference):
    info = hub.push_to_hub(meta, "org/pushed", METADATA, token="hf_test_token")
    assert ("POST", "/api/repos/create") in server.log
    assert set(server.auth) == {"Bearer hf_test_token"}
    assert sorted(server.repos["org/pushed"].commits[info.oid]) == ["config.json", "model.safetensors"]

    loaded = ghn.from_pretrained("org/pushed", revision=info.oid)
    predicted = _predicted(loaded)
    assert all(torch.equal(predicted[k], reference[k]) for k in reference)  # bit-identical
    assert hub.load_info("org/pushed").metadata.dataset == METADATA["dataset"]
    with pytest.raises(ValueError, match="org/repo"):
        hub.push_to_hub(meta, "no-namespace")


def test_cli_reads_hub_settings_from_the_environment(server, saved, reference, tmp_path):
    """A fresh interpreter (no reload): `ghn predict` downloads through HF_ENDPOINT into HF_HOME."""
    server.commit("org/repo", saved)
    env = {**os.environ, "HF_ENDPOINT": server.url, "HF_HOME": str(tmp_path / "hf_home"),
           "HF_HUB_DISABLE_TELEMETRY": "1", "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO_ROOT)}
    out = tmp_path / "resnet18.safetensors"
    run = subprocess.run(
        [sys.executable, "-m", "ghn", "predict", "--model", "resnet18", "--meta-model", "org/repo", "--out", str(out)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert server.files("GET") == [("GET", "config.json"), ("GET", "model.safetensors")]
    assert list(_cache(tmp_path).glob("snapshots/*/model.safetensors"))
    state = load_file(str(out))
    assert all(torch.equal(state[k], reference[k]) for k in reference)  # bit-identical to in-process
