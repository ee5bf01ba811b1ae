import gzip
import pickle
import struct
import sys

import numpy as np
import pytest
import torch

from ddpm_edu import data as D


def write_idx(path, array, compress=False):
    header = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(payload)


def make_idx_fixture(root, folder="MNIST", compress=False, n=6):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = np.arange(n, dtype=np.uint8) % 10
    suffix = ".gz" if compress else ""
    for split, (img_name, lab_name) in D._IDX_FILES.items():
        write_idx(raw / (img_name + suffix), images, compress)
        write_idx(raw / (lab_name + suffix), labels, compress)
    return images, labels


def test_mnist_subset_split_is_fixed_and_balanced():
    train_x, train_y = D.load_mnist_subset("train")
    held_x, held_y = D.load_mnist_subset("heldout")
    all_x, all_y = D.load_mnist_subset("all")
    assert train_x.shape == (4000, 28, 28) and held_x.shape == (1000, 28, 28) and all_x.shape == (5000, 28, 28)
    assert (np.bincount(train_y) == 400).all() and (np.bincount(held_y) == 100).all()
    # disjoint and together the whole subset
    train_set = {x.tobytes() for x in train_x}
    assert not any(x.tobytes() in train_set for x in held_x)
    assert np.array_equal(np.sort(np.concatenate([train_y, held_y])), np.sort(all_y))


def test_load_dataset_scales_to_model_range():
    ds = D.load_dataset("mnist-subset", "heldout", limit=50)
    assert len(ds) == 50 and ds.image_shape == (1, 28, 28)
    assert len(set(ds.labels.tolist())) >= 8  # a random subset, not the first 50 (all zeros)
    assert torch.equal(D.load_dataset("mnist-subset", "heldout", limit=50).labels, ds.labels)  # fixed
    assert ds.images.dtype == torch.float32
    assert ds.images.min().item() == -1.0 and ds.images.max().item() == 1.0
    x, y = ds[3]
    assert x.shape == (1, 28, 28) and 0 <= int(y) < 10


def test_range_conversions_round_trip():
    u8 = np.array([[[0, 128, 255]]], dtype=np.uint8)
    x = D.to_model_range(u8)
    assert x.shape == (1, 1, 1, 3)
    assert torch.allclose(x.flatten(), torch.tensor([-1.0, 128 / 127.5 - 1, 1.0]), atol=1e-6)
    assert torch.allclose(D.to_image_range(x).flatten() * 255, torch.tensor([0.0, 128.0, 255.0]), atol=1e-4)
    rgb = D.to_model_range(np.zeros((2, 4, 5, 3), dtype=np.uint8))
    assert rgb.shape == (2, 3, 4, 5)
    with pytest.raises(ValueError, match="images must have shape"):
        D.to_model_range(np.zeros((4, 4), dtype=np.uint8))


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_idx_readers_on_a_local_fixture(tmp_path, compress, name, folder):
    images, labels = make_idx_fixture(tmp_path, folder, compress)
    ds = D.load_dataset(name, "train", root=tmp_path)
    assert len(ds) == 6 and ds.image_shape == (1, 28, 28)
    assert torch.equal(ds.labels, torch.as_tensor(labels, dtype=torch.int64))
    assert torch.allclose(ds.images[:, 0], torch.as_tensor(images / 127.5 - 1, dtype=torch.float32), atol=1e-6)
    assert len(D.load_dataset(name, "heldout", root=tmp_path)) == 6  # 'heldout' reads the test files


def test_cifar10_reader_on_a_local_fixture(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, size=(3, 3072), dtype=np.uint8), b"labels": [1, 2, 3]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    ds = D.load_dataset("cifar10", "train", root=tmp_path)
    assert len(ds) == 15 and ds.image_shape == (3, 32, 32)
    assert D.load_dataset("cifar10", "test", root=tmp_path).labels.tolist() == [1, 2, 3]


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_cifar10_reader_refuses_arbitrary_objects(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": _Evil(), b"labels": [0]}, f)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        D.read_torchvision_files("cifar10", tmp_path, "test")


def test_truncated_idx_is_reported(tmp_path):
    images, _ = make_idx_fixture(tmp_path)
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated"):
        D.load_dataset("mnist", "train", root=tmp_path)


def test_missing_files_never_download_by_default(tmp_path, monkeypatch):
    called = []
    monkeypatch.setattr(D, "_download", lambda *a, **k: called.append(a))
    with pytest.raises(FileNotFoundError, match="download=True"):
        D.load_dataset("fashion-mnist", "train", root=tmp_path)
    assert called == []


def test_download_flag_fetches_then_reads(tmp_path, monkeypatch):
    def fake_download(name, root, train):
        make_idx_fixture(root, "MNIST")

    monkeypatch.setattr(D, "_download", fake_download)
    assert len(D.load_dataset("mnist", "train", root=tmp_path, download=True)) == 6


def test_download_without_torchvision_says_so(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    with pytest.raises(ImportError, match="needs torchvision"):
        D.load_dataset("mnist", "train", root=tmp_path, download=True)


@pytest.mark.parametrize("call, words", [
    (lambda: D.load_dataset("imagenet"), "name must be one of"),
    (lambda: D.load_mnist_subset("validation"), "split must be one of"),
    (lambda: D.load_dataset("mnist", "validation"), "split must be 'train' or 'test'"),
    (lambda: D.load_dataset(limit=0), "limit must be a positive int"),
    (lambda: D.make_toy_2d("circles"), "name must be one of"),
    (lambda: D.make_toy_2d("moons", n=0), "n must be a positive int"),
])
def test_bad_arguments(call, words):
    with pytest.raises(ValueError) as info:
        call()
    assert words in str(info.value)


@pytest.mark.parametrize("name", D.TOY_2D)
def test_toy_2d_is_seeded_and_scaled(name):
    a, b = D.make_toy_2d(name, 3000, seed=7), D.make_toy_2d(name, 3000, seed=7)
    assert torch.equal(a, b) and a.shape == (3000, 2) and a.dtype == torch.float32
    assert 0.5 < a.std().item() < 2.0 and a.mean(0).abs().max().item() < 0.6
