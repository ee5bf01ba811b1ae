import gzip
import pickle
import struct
import sys

import numpy as np
import pytest
import torch
from PIL import Image

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
    (lambda: D.load_dataset("imagenet"), "dataset must be one of ['cifar10', 'fashion-mnist', 'mnist', 'mnist-subset']"
                                         " or 'folder:PATH'"),
    (lambda: D.load_dataset("folder:"), "dataset must be one of"),
    (lambda: D.load_mnist_subset("validation"), "split must be one of"),
    (lambda: D.load_dataset("mnist", "validation"), "split must be one of ('train', 'heldout', 'all')"),
    (lambda: D.load_dataset("mnist", "all"), "split 'all' is for 'mnist-subset'"),
    (lambda: D.load_dataset(limit=0), "limit must be a positive int"),
    (lambda: D.load_dataset(image_size=0), "image_size must be a positive int"),
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


# ------------------------------------------------------------------------------- folder:PATH (your own pictures)
def write_pictures(folder, sizes, mode="RGB", seed=0):
    """PNG files of random pixels, one per (width, height), into `folder`."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i, (w, h) in enumerate(sizes):
        shape = (h, w, 3) if mode == "RGB" else (h, w)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(folder / f"{i:02d}.png")


def test_folder_with_class_subfolders_is_labelled_by_sorted_names(tmp_path):
    write_pictures(tmp_path / "zebra", [(12, 10)] * 3)
    write_pictures(tmp_path / "apple", [(12, 10)] * 5, seed=1)
    ds = D.load_dataset(f"folder:{tmp_path}", image_size=16)
    assert ds.image_shape == (3, 16, 16) and len(ds) == 8
    assert ds.num_classes == 2 and ds.class_names == ("apple", "zebra")
    assert ds.labels.tolist() == [0] * 5 + [1] * 3
    assert ds.images.min() >= -1 and ds.images.max() <= 1 and ds.name == f"folder:{tmp_path}"


def test_flat_grey_folder_has_no_classes_and_keeps_a_common_square_size(tmp_path):
    write_pictures(tmp_path, [(20, 20)] * 4, mode="L")
    ds = D.load_dataset(f"folder:{tmp_path}")
    assert ds.image_shape == (1, 20, 20) and ds.num_classes is None and ds.class_names is None
    assert ds.labels.tolist() == [0, 0, 0, 0]
    first = np.asarray(Image.open(tmp_path / "00.png"), dtype=np.float32) / 127.5 - 1  # no resizing: exact pixels
    assert torch.allclose(ds.images[0, 0], torch.from_numpy(first), atol=1e-6)


def test_mixed_sizes_and_colours_are_centre_cropped_resized_and_made_rgb(tmp_path):
    write_pictures(tmp_path / "a", [(40, 20), (9, 30)])
    write_pictures(tmp_path / "b", [(25, 25)], mode="L")
    ds = D.load_dataset(f"folder:{tmp_path}")
    assert ds.image_shape == (3, D.DEFAULT_FOLDER_SIZE, D.DEFAULT_FOLDER_SIZE)
    grey = ds.images[2]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2]), "a grey picture becomes equal R, G, B"


def test_sixteen_bit_pictures_keep_their_range(tmp_path):
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    Image.fromarray(ramp).save(tmp_path / "ramp.png")  # a 16-bit grey PNG
    ds = D.load_dataset(f"folder:{tmp_path}")
    expected = torch.from_numpy(ramp.astype(np.float32) / 65535 * 2 - 1)
    assert torch.allclose(ds.images[0, 0], expected, atol=1e-6)


@pytest.mark.parametrize("make, words", [
    (lambda p: None, "dataset folder not found"),
    (lambda p: p.mkdir(), "holds no pictures"),
    (lambda p: (write_pictures(p / "cls", [(8, 8)]), write_pictures(p, [(8, 8)])), "both pictures"),
    (lambda p: (write_pictures(p / "a", [(8, 8)]), (p / "b").mkdir()), "holds no pictures"),
    (lambda p: (p.mkdir(), (p / "x.png").write_bytes(b"not a png")), "cannot read"),
])
def test_bad_folders_are_named(tmp_path, make, words):
    folder = tmp_path / "pics"
    make(folder)
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        D.load_dataset(f"folder:{folder}")
    assert words in str(info.value)


def test_folder_has_no_heldout_split(tmp_path):
    write_pictures(tmp_path, [(8, 8)])
    with pytest.raises(ValueError, match="no held-out split"):
        D.load_dataset(f"folder:{tmp_path}", "heldout")


def test_named_datasets_resize_on_request():
    ds = D.load_dataset("mnist-subset", "heldout", limit=4, image_size=32)
    assert ds.image_shape == (1, 32, 32) and ds.images.min() >= -1 and ds.images.max() <= 1


def test_the_registry_is_the_only_list_of_names():
    for name, source in D.DATASETS.items():
        assert D.check_dataset_name(name) == name and source.num_classes == 10 and source.description


# ---------------------------------------------------------------- the offline HTML slider (ddpm_edu.plotting)


def _frames(n=3, shape=(6, 9)):
    return [np.full(shape, k / max(n - 1, 1)) for k in range(n)]


def test_slider_html_embeds_one_png_per_frame_and_keeps_the_dom_contract():
    import base64
    import html as html_lib
    import json
    import re

    from ddpm_edu.plotting import PNG_SIGNATURE, html_slider, slider_html

    frames = _frames(4) + [np.zeros((6, 9, 3))]  # grey and RGB frames
    labels = [f"t = {t}" for t in (0, 10, 100, 500, 1000)]
    page = slider_html(frames, labels, value=2, scale=2)
    assert page.startswith('<div class="ddpm-slider"')
    for needle in ('<input type="range" class="ddpm-slider-range"', 'class="ddpm-slider-image"',
                   '<span class="ddpm-slider-label">t = 100</span>', 'max="4"', 'value="2"', "oninput="):
        assert needle in page, needle
    uris = json.loads(html_lib.unescape(re.search(r'data-frames="([^"]*)"', page).group(1)))
    assert len(uris) == len(frames)
    assert json.loads(html_lib.unescape(re.search(r'data-labels="([^"]*)"', page).group(1))) == labels
    pngs = [base64.b64decode(u.split(",", 1)[1]) for u in uris]
    assert all(p.startswith(PNG_SIGNATURE) for p in pngs)
    assert len(set(pngs)) == len(frames)  # every frame is its own picture
    assert f'src="{uris[2]}"' in page  # the image shows the selected frame first
    assert slider_html(frames, labels, value=2, scale=2) == page  # deterministic: no random ids
    assert html_slider(frames, labels).data == slider_html(frames, labels)
    assert slider_html([pngs[0]], ["only"]).count("data:image/png;base64,") == 2  # PNG bytes are taken as they are


@pytest.mark.parametrize("kwargs, message", [
    (dict(frames=[], labels=[]), "frames"),
    (dict(frames=b"\x89PNG", labels=["a"]), "frames"),
    (dict(frames=_frames(2), labels=["a"]), "labels"),
    (dict(frames=_frames(2), labels="ab"), "labels"),
    (dict(frames=_frames(2), labels=["a", "b"], value=2), "value"),
    (dict(frames=_frames(2), labels=["a", "b"], value=-1), "value"),
    (dict(frames=_frames(2), labels=["a", "b"], scale=0), "scale"),
    (dict(frames=[np.zeros((2, 3, 4))], labels=["a"]), "frame"),
    (dict(frames=[np.full((2, 3), 1.5)], labels=["a"]), "frame"),
    (dict(frames=[np.full((2, 3), np.nan)], labels=["a"]), "frame"),
    (dict(frames=[b"GIF89a"], labels=["a"]), "PNG"),
])
def test_slider_html_rejects_bad_input(kwargs, message):
    from ddpm_edu.plotting import slider_html

    with pytest.raises(ValueError, match=message):
        slider_html(**kwargs)
