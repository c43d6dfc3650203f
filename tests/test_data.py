"""Tests for ghn.data: sources, the decoded cache, and the batch loader.

Tests marked slow decode the real archive at ../shared/data/cifar10-jpg.tar.gz once per
module (a few seconds) into a temporary cache; the others use tiny fixtures.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import ghn.data
from ghn.data import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR10Loader,
    CIFAR10NotFoundError,
    CIFAR10Tensors,
    cifar10_loader,
    load_cifar10,
)

REPO = Path(__file__).resolve().parents[1]
ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz"
TINY_PER_CLASS = 2  # images per class and split in the tiny ImageFolder fixture


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def _private_cache_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point the default cache at a temporary folder, so tests never touch ~/.cache."""
    home = tmp_path_factory.mktemp("xdg-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(home))
        yield home / "ghn"


@pytest.fixture(scope="module")
def cifar(_private_cache_home: Path) -> dict[str, CIFAR10Tensors]:
    """The real archive, decoded once for the module."""
    return {split: load_cifar10(split, ARCHIVE) for split in ("train", "test")}


@pytest.fixture(scope="module")
def tiny_folder_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder of real images: files 0000.jpg and 0001.jpg of every class/split.

    train/airplane/0001 is stored as a lossless PNG of the decoded JPEG, to cover
    non-JPEG files.
    """
    root = tmp_path_factory.mktemp("tiny-template")
    wanted = {
        f"{split}/{cls}/{i:04d}.jpg"
        for split in ("train", "test")
        for cls in CIFAR10_CLASSES
        for i in range(TINY_PER_CLASS)
    }
    with tarfile.open(ARCHIVE, "r|gz") as tar:
        for member in tar:
            if member.name in wanted:
                path = root / member.name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(tar.extractfile(member).read())
                wanted.discard(member.name)
                if not wanted:
                    break
    assert not wanted, f"archive lacks {sorted(wanted)[:3]}"
    jpg = root / "train/airplane/0001.jpg"
    with Image.open(jpg) as image:
        image.save(jpg.with_suffix(".png"))
    jpg.unlink()
    return root


@pytest.fixture
def tiny_folder(tiny_folder_template: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the tiny ImageFolder."""
    return Path(shutil.copytree(tiny_folder_template, tmp_path / "tiny"))


@pytest.fixture
def isolated_search(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make every default search place empty; returns the cache dir to pass."""
    monkeypatch.delenv("GHN_CIFAR10", raising=False)
    monkeypatch.setattr(ghn.data, "_REPO_ROOT", tmp_path / "repo")
    workdir = tmp_path / "work" / "project"
    workdir.mkdir(parents=True)
    monkeypatch.chdir(workdir)
    return tmp_path / "cache"


def write_torchvision_root(root: Path, per_batch: int = 3, seed: int = 0) -> dict[str, CIFAR10Tensors]:
    """Write tiny batches in the format of torchvision's cifar-10-batches-py folder.

    Returns the images and labels written, per split.
    """
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)

    def dump(name: str, obj: dict[str, object]) -> None:
        # Protocol 3 names classes in plain text; renaming the module gives the
        # numpy.core spelling that the official, NumPy-1-era files carry.
        data = pickle.dumps(obj, protocol=3)
        (folder / name).write_bytes(data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"))

    dump("batches.meta", {"label_names": list(CIFAR10_CLASSES), "num_cases_per_batch": per_batch})
    written = {}
    for split, names in ghn.data._TORCHVISION_BATCHES.items():
        pixels = rng.integers(0, 256, size=(len(names) * per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=len(pixels)).tolist()
        for i, name in enumerate(names):
            rows = slice(i * per_batch, (i + 1) * per_batch)
            dump(name, {"batch_label": name, "labels": labels[rows], "data": pixels[rows],
                        "filenames": [f"{j}.png" for j in range(per_batch)]})
        written[split] = CIFAR10Tensors(
            torch.from_numpy(pixels.reshape(-1, 3, 32, 32)), torch.tensor(labels), list(CIFAR10_CLASSES)
        )
    return written


def synthetic(n_per_class: int = 10, n_classes: int = 10, seed: int = 0) -> CIFAR10Tensors:
    """Random images grouped by class, like the real files."""
    g = torch.Generator().manual_seed(seed)
    n = n_per_class * n_classes
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.arange(n_classes).repeat_interleave(n_per_class)
    return CIFAR10Tensors(images, labels, [f"c{i}" for i in range(n_classes)])


def assert_same(a: list[tuple[torch.Tensor, torch.Tensor]], b: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


# --------------------------------------------------------------------------- real data


@pytest.mark.slow
def test_real_archive_counts_balance_and_pixels(cifar: dict[str, CIFAR10Tensors]) -> None:
    for split, n in (("train", 50_000), ("test", 10_000)):
        data = cifar[split]
        assert data.classes == list(CIFAR10_CLASSES)
        assert data.images.shape == (n, 3, 32, 32) and data.images.dtype == torch.uint8
        assert data.labels.shape == (n,) and data.labels.dtype == torch.int64
        assert torch.bincount(data.labels).tolist() == [n // 10] * 10
    # Channel statistics pin down layout and RGB order (the JPEG copy is a bit smoother);
    # every 5th image is plenty for that.
    pixels = cifar["train"].images[::5].float().div(255).transpose(0, 1).reshape(3, -1)
    assert torch.allclose(pixels.mean(1), torch.tensor(CIFAR10_MEAN), atol=2e-3)
    assert torch.allclose(pixels.std(1), torch.tensor(CIFAR10_STD), atol=5e-3)


@pytest.mark.slow
def test_real_archive_cache_is_used_and_kept_out_of_shared_folder(
    cifar: dict[str, CIFAR10Tensors], _private_cache_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The shared data folder is read-only, so the cache went to the cache home.
    assert list(_private_cache_home.glob("cifar10-jpg-*.cifar-cache.pt"))
    assert not list(ARCHIVE.parent.glob("*.cifar-cache.pt"))

    def no_archive(*args: object, **kwargs: object) -> None:
        raise AssertionError("the archive was opened although a cache exists")

    monkeypatch.setattr(tarfile, "open", no_archive)
    again = load_cifar10("train", ARCHIVE)
    assert torch.equal(again.labels, cifar["train"].labels)
    assert torch.equal(again.images[::997], cifar["train"].images[::997])


@pytest.mark.slow
def test_default_search_finds_shared_archive(
    cifar: dict[str, CIFAR10Tensors], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GHN_CIFAR10", raising=False)
    monkeypatch.chdir("/")  # only the repository-relative place can match
    assert len(load_cifar10("test")) == 10_000
    monkeypatch.setenv("GHN_CIFAR10", str(ARCHIVE))
    monkeypatch.setattr(ghn.data, "_REPO_ROOT", Path("/nonexistent"))
    assert len(load_cifar10("test")) == 10_000


@pytest.mark.slow
def test_folder_and_archive_decode_to_the_same_tensors(
    cifar: dict[str, CIFAR10Tensors], tiny_folder: Path
) -> None:
    tiny = {split: load_cifar10(split, tiny_folder, strict=False) for split in ("train", "test")}
    for split, per_class in (("train", 5000), ("test", 1000)):
        assert tiny[split].classes == list(CIFAR10_CLASSES)
        for label in range(10):
            for i in range(TINY_PER_CLASS):
                j = label * TINY_PER_CLASS + i  # both sources sort by (class, file name)
                k = label * per_class + i
                assert tiny[split].labels[j] == cifar[split].labels[k] == label
                assert torch.equal(tiny[split].images[j], cifar[split].images[k])


@pytest.mark.slow
def test_real_subset_is_stratified(cifar: dict[str, CIFAR10Tensors]) -> None:
    loader = CIFAR10Loader(cifar["test"], batch_size=100, subset=100, seed=3)
    labels = torch.cat([y for _, y in loader])
    assert torch.bincount(labels, minlength=10).tolist() == [10] * 10
    small = CIFAR10Loader(cifar["test"], subset=37, seed=3)
    assert set(cifar["test"].labels[small.indices].tolist()) == set(range(10))


@pytest.mark.slow
def test_cifar10_loader_defaults_on_real_data(cifar: dict[str, CIFAR10Tensors]) -> None:
    train = cifar10_loader("train", ARCHIVE, batch_size=128)
    assert (train.shuffle, train.augment, train.drop_last) == (True, True, True)
    assert len(train) == 50_000 // 128
    test = cifar10_loader("test", ARCHIVE, batch_size=128)
    assert (test.shuffle, test.augment, test.drop_last) == (False, False, False)
    assert len(test) == 79
    images, labels = next(iter(train))
    assert images.shape == (128, 3, 32, 32) and images.dtype == torch.float32
    assert labels.shape == (128,) and labels.dtype == torch.int64
    assert len(set(labels.tolist())) > 5  # shuffled across classes


# --------------------------------------------------------------------------- sources


def test_image_folder_source(tiny_folder: Path, tiny_folder_template: Path) -> None:
    train = load_cifar10("train", tiny_folder, strict=False)
    assert train.classes == list(CIFAR10_CLASSES)
    assert train.images.shape == (20, 3, 32, 32)
    assert train.labels.tolist() == [c for c in range(10) for _ in range(TINY_PER_CLASS)]
    assert len(load_cifar10("test", tiny_folder, strict=False)) == 20
    # The PNG decodes to the pixels of the JPEG it was made from.
    with Image.open(tiny_folder_template / "train/airplane/0001.png") as png:
        expected = torch.from_numpy(np.array(png)).permute(2, 0, 1)
    assert torch.equal(train.images[1], expected)
    assert (tiny_folder / "cifar10.cifar-cache.pt").is_file()


def test_tar_archive_source_with_top_folder(tiny_folder: Path, tmp_path: Path) -> None:
    archive = tmp_path / "mine.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tiny_folder / "train", arcname="cifar/train")
        tar.add(tiny_folder / "test", arcname="cifar/test")
    from_archive = load_cifar10("test", archive, strict=False)
    from_folder = load_cifar10("test", tiny_folder, strict=False)
    assert torch.equal(from_archive.images, from_folder.images)
    assert torch.equal(from_archive.labels, from_folder.labels)
    assert (tmp_path / "mine.cifar-cache.pt").is_file()


def test_torchvision_root_source(tmp_path: Path) -> None:
    written = write_torchvision_root(tmp_path / "tv", per_batch=3)
    for split, n in (("train", 15), ("test", 3)):
        for root in (tmp_path / "tv", tmp_path / "tv" / "cifar-10-batches-py"):
            data = load_cifar10(split, root, strict=False)
            assert data.classes == list(CIFAR10_CLASSES)
            assert len(data) == n
            assert torch.equal(data.images, written[split].images)
            assert torch.equal(data.labels, written[split].labels)


def test_torchvision_batches_cannot_run_code(tmp_path: Path) -> None:
    write_torchvision_root(tmp_path / "tv")
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return os.mkdir, (str(marker),)

    (tmp_path / "tv/cifar-10-batches-py/batches.meta").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_cifar10("train", tmp_path / "tv", strict=False)
    assert not marker.exists()


def test_folder_images_are_converted_to_rgb_and_checked(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    root = tmp_path / "modes"
    for split in ("train", "test"):
        (root / split / "a").mkdir(parents=True)
    Image.fromarray(rgb[..., 0]).save(root / "train/a/grey.png")  # mode L
    Image.fromarray(rgb).convert("P").save(root / "train/a/palette.png")  # mode P
    Image.fromarray(rgb).save(root / "test/a/rgb.png")
    (root / "test/a/notes.txt").write_text("not an image, ignored")
    train = load_cifar10("train", root, strict=False)
    assert train.images.shape == (2, 3, 32, 32)
    grey = train.images[0]
    assert torch.equal(grey[0], torch.from_numpy(rgb[..., 0])) and torch.equal(grey[0], grey[2])
    assert torch.equal(load_cifar10("test", root, strict=False).images[0], torch.from_numpy(rgb).permute(2, 0, 1))

    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(root / "test/a/big.png")
    with pytest.raises(ValueError, match="big.png: expected a 32x32 image"):
        load_cifar10("test", root, strict=False)
    (root / "test/a/big.png").write_bytes(b"broken")
    with pytest.raises(ValueError, match="big.png: cannot decode"):
        load_cifar10("test", root, strict=False)


def test_truncated_archive_is_reported(tiny_folder: Path, tmp_path: Path) -> None:
    archive = tmp_path / "cut.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tiny_folder / "train", arcname="train")
        tar.add(tiny_folder / "test", arcname="test")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(ValueError, match="cut.tar.gz: unreadable tar archive"):
        load_cifar10("train", archive, strict=False)


def test_strict_rejects_incomplete_data(tiny_folder: Path) -> None:
    with pytest.raises(ValueError, match="strict=False"):
        load_cifar10("train", tiny_folder)


def test_download_goes_to_cache_home(isolated_search: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_cifar10(root: str, train: bool, download: bool) -> None:
        calls.append((Path(root), download))
        write_torchvision_root(Path(root))

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fake_cifar10)
    with pytest.raises(CIFAR10NotFoundError):
        load_cifar10(cache_dir=isolated_search)
    assert len(load_cifar10("test", cache_dir=isolated_search, download=True, strict=False)) == 3
    assert calls == [(isolated_search / "cifar10", True)]
    # Found by the default search from now on, without downloading again.
    assert len(load_cifar10("test", cache_dir=isolated_search, download=True, strict=False)) == 3
    assert len(calls) == 1


def test_cifar10_loader_forwards_strict_download_and_cache_dir(
    isolated_search: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def fake_cifar10(root: str, train: bool, download: bool) -> None:
        calls.append((Path(root), download))
        write_torchvision_root(Path(root))

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fake_cifar10)
    with pytest.raises(CIFAR10NotFoundError):  # download is off by default
        cifar10_loader("test", cache_dir=isolated_search, strict=False)
    loader = cifar10_loader("test", batch_size=2, cache_dir=isolated_search, download=True, strict=False)
    assert loader.num_samples == 3 and calls == [(isolated_search / "cifar10", True)]
    with pytest.raises(ValueError, match="strict=False"):  # strict by default: 3 images are no CIFAR-10
        cifar10_loader("test", cache_dir=isolated_search)


# --------------------------------------------------------------------------- missing data


def test_missing_data_lists_every_place(
    isolated_search: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("GHN_CIFAR10", str(tmp_path / "nowhere.tar.gz"))
    with caplog.at_level(logging.WARNING, logger="ghn.data"), pytest.raises(CIFAR10NotFoundError) as info:
        load_cifar10(cache_dir=isolated_search)
    assert isinstance(info.value, FileNotFoundError)
    message = str(info.value)
    places = [
        tmp_path / "nowhere.tar.gz",
        tmp_path / "shared/data/cifar10-jpg.tar.gz",  # next to the (patched) repository
        tmp_path / "work/shared/data/cifar10-jpg.tar.gz",  # next to the working directory
        isolated_search / "cifar10",
    ]
    assert len(info.value.searched) == len(places)
    for place in places:
        assert str(place) in message
    for advice in ("GHN_CIFAR10", "root=", "download=True"):
        assert advice in message
    assert "Ignoring GHN_CIFAR10" in caplog.text

    monkeypatch.delenv("GHN_CIFAR10")
    with pytest.raises(CIFAR10NotFoundError, match=r"\$GHN_CIFAR10: not set"):
        load_cifar10(cache_dir=isolated_search)


def test_missing_explicit_root_names_only_it(isolated_search: Path, tmp_path: Path) -> None:
    with pytest.raises(CIFAR10NotFoundError) as info:
        load_cifar10(root=tmp_path / "absent", cache_dir=isolated_search)
    assert [place for place, _ in info.value.searched] == [f"{tmp_path / 'absent'} (root=)"]
    assert "does not exist" in str(info.value)


def test_unrecognised_folder_says_why(tmp_path: Path) -> None:
    (tmp_path / "stuff" / "train").mkdir(parents=True)
    with pytest.raises(CIFAR10NotFoundError, match="neither train/ and test/"):
        load_cifar10(root=tmp_path / "stuff")


# --------------------------------------------------------------------------- cache


def test_cache_hit_does_not_decode(tiny_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_cifar10("train", tiny_folder, strict=False)

    def no_decode(*args: object) -> None:
        raise AssertionError("decoded although a cache exists")

    monkeypatch.setattr(ghn.data, "_decode", no_decode)
    assert torch.equal(load_cifar10("train", tiny_folder, strict=False).images, first.images)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_cache_is_rebuilt_with_warning(
    tiny_folder: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    first = load_cifar10("train", tiny_folder, strict=False)
    cache = tiny_folder / "cifar10.cifar-cache.pt"
    data = cache.read_bytes()
    cache.write_bytes(b"not a cache" if damage == "garbage" else data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="ghn.data"):
        again = load_cifar10("train", tiny_folder, strict=False)
    assert "corrupt CIFAR-10 cache" in caplog.text
    assert torch.equal(again.images, first.images)
    assert cache.stat().st_size == len(data)  # rewritten


def test_changed_source_rebuilds_cache(tiny_folder: Path) -> None:
    assert len(load_cifar10("test", tiny_folder, strict=False)) == 20
    shutil.copy(tiny_folder / "test/cat/0000.jpg", tiny_folder / "test/cat/0002.jpg")
    assert len(load_cifar10("test", tiny_folder, strict=False)) == 21


def test_read_only_source_caches_in_cache_dir(tiny_folder: Path, tmp_path: Path) -> None:
    tiny_folder.chmod(0o555)  # read-only by mode, which counts even for root
    try:
        load_cifar10("train", tiny_folder, strict=False, cache_dir=tmp_path / "cache")
    finally:
        tiny_folder.chmod(0o755)
    assert not (tiny_folder / "cifar10.cifar-cache.pt").exists()
    assert len(list((tmp_path / "cache").glob("tiny-*.cifar-cache.pt"))) == 1


# --------------------------------------------------------------------------- loader


def test_batches_are_normalised_images_in_order() -> None:
    data = synthetic()
    loader = CIFAR10Loader(data, batch_size=32)
    got = list(loader)
    assert [len(y) for _, y in got] == [32, 32, 32, 4]
    images = torch.cat([x for x, _ in got])
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    assert torch.allclose(images, (data.images / 255 - mean) / std, atol=1e-5)
    assert torch.equal(torch.cat([y for _, y in got]), data.labels)
    assert len(CIFAR10Loader(data, batch_size=32, drop_last=True)) == 3


def test_channels_last_changes_strides_not_values() -> None:
    options = dict(batch_size=16, shuffle=True, augment=True, seed=3)
    plain, last = list(CIFAR10Loader(synthetic(), **options)), list(CIFAR10Loader(synthetic(), **options, channels_last=True))
    assert_same(plain, last)
    assert all(x.is_contiguous() for x, _ in plain)
    assert all(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() for x, _ in last)


def test_augmentation_is_a_padded_crop_maybe_flipped() -> None:
    data = synthetic(n_per_class=4)
    loader = CIFAR10Loader(data, batch_size=40, augment=True, seed=5)
    images = next(iter(loader))[0]
    mean = torch.tensor(CIFAR10_MEAN).view(3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(3, 1, 1)
    raw = torch.round((images * std + mean) * 255).to(torch.uint8)  # undo normalisation
    moved = 0
    for out, source in zip(raw, data.images):
        padded = torch.nn.functional.pad(source, (4, 4, 4, 4))
        crops = {
            (dy, dx, flip)
            for dy in range(9)
            for dx in range(9)
            for flip in (False, True)
            if torch.equal(out, (padded.flip(2) if flip else padded)[:, dy : dy + 32, dx : dx + 32])
        }
        assert crops, "output is not a crop of the padded image"
        moved += (4, 4, False) not in crops
    assert moved > 30  # nearly every image was actually moved or flipped


def test_augmentation_and_order_are_deterministic_per_seed_and_epoch() -> None:
    data = synthetic()

    def epoch(seed: int, e: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        loader = CIFAR10Loader(data, batch_size=16, shuffle=True, augment=True, seed=seed)
        loader.set_epoch(e)
        return list(loader)

    assert_same(epoch(0, 0), epoch(0, 0))
    assert_same(epoch(7, 3), epoch(7, 3))
    assert not torch.equal(epoch(0, 0)[0][0], epoch(0, 1)[0][0])
    assert not torch.equal(epoch(0, 0)[0][0], epoch(1, 0)[0][0])
    # Finishing an epoch moves to the next one.
    loader = CIFAR10Loader(data, batch_size=16, shuffle=True, augment=True)
    first, second = list(loader), list(loader)
    assert loader.epoch == 2
    assert_same(first, epoch(0, 0))
    assert_same(second, epoch(0, 1))


def test_loader_leaves_global_rng_alone() -> None:
    state = torch.get_rng_state()
    list(CIFAR10Loader(synthetic(), batch_size=16, shuffle=True, augment=True, subset=50))
    assert torch.equal(torch.get_rng_state(), state)


def test_resume_gives_the_same_remaining_batches() -> None:
    data = synthetic()
    options = dict(batch_size=16, shuffle=True, augment=True, seed=11)
    reference = CIFAR10Loader(data, **options)
    uninterrupted = list(reference) + list(reference)  # epochs 0 and 1

    run = CIFAR10Loader(data, **options)
    seen = []
    for batch in run:
        seen.append(batch)
        if len(seen) == 3:
            state = run.state_dict()  # as a checkpoint taken during the 3rd step would
            break
    assert state["epoch"] == 0 and state["batch"] == 3

    resumed = CIFAR10Loader(data, **options)
    resumed.load_state_dict(state)
    rest = list(resumed) + list(resumed)
    assert_same(seen + rest, uninterrupted)

    # A checkpoint taken during the last batch of an epoch points at the next epoch.
    end = CIFAR10Loader(data, **options)
    for _ in end:
        state = end.state_dict()
    assert (state["epoch"], state["batch"]) == (1, 0)


def test_resume_refuses_a_different_loader() -> None:
    data = synthetic()
    state = CIFAR10Loader(data, batch_size=16, shuffle=True, seed=1).state_dict()
    with pytest.raises(ValueError, match="seed"):
        CIFAR10Loader(data, batch_size=16, shuffle=True, seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="batch_size"):
        CIFAR10Loader(data, batch_size=8, shuffle=True, seed=1).load_state_dict(state)


def test_subset_is_seeded_stratified_and_never_the_first_n() -> None:
    data = synthetic(n_per_class=100)
    loader = CIFAR10Loader(data, subset=100, seed=0)
    assert loader.num_samples == 100
    assert torch.bincount(data.labels[loader.indices]).tolist() == [10] * 10
    assert len(set(loader.indices.tolist())) == 100
    assert torch.equal(loader.indices, CIFAR10Loader(data, subset=100, seed=0).indices)
    assert not torch.equal(loader.indices, CIFAR10Loader(data, subset=100, seed=1).indices)
    # Fewer images than classes: still one per class drawn, spread at random.
    assert len(set(data.labels[CIFAR10Loader(data, subset=7).indices].tolist())) == 7
    # An unshuffled pass over a subset is mixed, not grouped by class.
    first_batch = next(iter(CIFAR10Loader(data, batch_size=20, subset=100)))[1]
    assert len(set(first_batch.tolist())) > 5
    with pytest.raises(ValueError, match="subset"):
        CIFAR10Loader(data, subset=1001)


def test_subset_of_imbalanced_data_is_proportional() -> None:
    labels = torch.tensor([0] * 80 + [1] * 20)
    data = CIFAR10Tensors(torch.zeros(100, 3, 32, 32, dtype=torch.uint8), labels, ["a", "b"])
    indices = CIFAR10Loader(data, subset=10).indices
    assert torch.bincount(labels[indices]).tolist() == [8, 2]
