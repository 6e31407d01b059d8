"""Tests of raynas.evaluators.data: loaders, deterministic disjoint splits, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raynas.evaluators.data import (
    DatasetSplits,
    batches,
    load_arrays,
    load_dataset,
    load_digits,
    load_image_folder,
    stratified_split,
)


@pytest.fixture(scope="module")
def digits() -> DatasetSplits:
    return load_digits(seed=0)


def _rows(x: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in x.reshape(len(x), -1)}


def test_digits_shapes_and_types(digits: DatasetSplits) -> None:
    assert digits.name == "digits"
    assert digits.num_classes == 10
    assert digits.in_channels == 1
    assert digits.input_shape == (1, 8, 8)
    assert sum(digits.sizes().values()) == 1797
    assert digits.sizes()["val"] == pytest.approx(0.2 * 1797, abs=10)
    assert digits.sizes()["test"] == pytest.approx(0.2 * 1797, abs=10)
    for x, y in ((digits.x_train, digits.y_train), (digits.x_val, digits.y_val),
                 (digits.x_test, digits.y_test)):
        assert x.dtype == np.float32 and x.ndim == 4 and x.shape[1:] == (1, 8, 8)
        assert y.dtype == np.int64 and len(x) == len(y)
        assert set(np.unique(y)) == set(range(10))  # stratified: every class in every split
    assert abs(float(digits.x_train.mean())) < 1e-3
    assert float(digits.x_train.std()) == pytest.approx(1.0, abs=1e-3)


def test_digits_splits_deterministic_per_seed(digits: DatasetSplits) -> None:
    again = load_digits(seed=0)
    np.testing.assert_array_equal(again.x_train, digits.x_train)
    np.testing.assert_array_equal(again.y_test, digits.y_test)
    other = load_digits(seed=1)
    assert not np.array_equal(other.y_train, digits.y_train)


def test_digits_raw_splits_are_disjoint() -> None:
    raw = load_digits(seed=3, normalize=False)
    assert 0.0 <= raw.x_train.min() and raw.x_train.max() <= 1.0
    from sklearn.datasets import load_digits as sk_load_digits

    # Duplicated images in the source may land in two splits; count distinct rows instead.
    total = len(_rows(sk_load_digits().images.astype(np.float32) / 16.0))
    train, val, test = _rows(raw.x_train), _rows(raw.x_val), _rows(raw.x_test)
    assert len(train | val | test) == total
    assert len(train) + len(val) + len(test) - len(train | val | test) < 10


def test_stratified_split_disjoint_and_covering() -> None:
    y = np.repeat(np.arange(4), [10, 20, 3, 1])
    train, val, test = stratified_split(y, (0.2, 0.3), seed=5)
    joined = np.concatenate([train, val, test])
    assert sorted(joined.tolist()) == list(range(len(y)))
    assert set(y[train]) == {0, 1, 2, 3}  # every class keeps a training example
    assert np.bincount(y[val], minlength=4).tolist()[:2] == [2, 4]
    assert np.bincount(y[test], minlength=4).tolist()[:2] == [3, 6]
    again = stratified_split(y, (0.2, 0.3), seed=5)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))


@pytest.mark.parametrize("val, test", [(-0.1, 0.2), (0.2, 1.0), (0.5, 0.5)])
def test_bad_fractions(val: float, test: float) -> None:
    with pytest.raises(ValueError, match="fraction"):
        load_digits(val_fraction=val, test_fraction=test)


def test_load_arrays_npz_nhwc_uint8(tmp_path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(40, 6, 6, 3), dtype=np.uint8)
    y = np.repeat(np.arange(4), 10)
    np.savez(tmp_path / "tiny.npz", x=x, y=y)
    data = load_arrays(tmp_path / "tiny.npz", seed=1, val_fraction=0.25, test_fraction=0.25)
    assert data.name == "tiny"
    assert data.input_shape == (3, 6, 6)
    assert data.num_classes == 4
    assert data.sizes() == {"train": 20, "val": 10, "test": 10}
    raw = load_arrays(tmp_path / "tiny.npz", seed=1, val_fraction=0.25, test_fraction=0.25,
                      normalize=False)
    assert raw.x_train.max() <= 1.0  # uint8 scaled to [0, 1]
    expected = _rows(x.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    assert _rows(raw.x_train) | _rows(raw.x_val) | _rows(raw.x_test) == expected


def test_load_arrays_train_test_keys(tmp_path) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.normal(size=(30, 2, 5, 5)).astype(np.float32),
        "y_train": np.repeat(np.arange(3), 10),
        "x_test": rng.normal(size=(9, 2, 5, 5)).astype(np.float32),
        "y_test": np.repeat(np.arange(3), 3),
    }
    np.savez(tmp_path / "tt.npz", **arrays)
    data = load_arrays(tmp_path / "tt.npz", val_fraction=0.2, normalize=False)
    assert data.input_shape == (2, 5, 5)
    assert data.sizes() == {"train": 24, "val": 6, "test": 9}
    np.testing.assert_array_equal(data.x_test, arrays["x_test"])
    assert _rows(data.x_train).isdisjoint(_rows(data.x_val))


def test_load_arrays_in_memory_and_layouts() -> None:
    x = np.zeros((12, 7, 7), dtype=np.float32)  # N, H, W: one channel
    y = np.arange(12) % 3
    assert load_arrays((x, y)).input_shape == (1, 7, 7)
    x4 = np.zeros((12, 3, 5, 3), dtype=np.float32)  # ambiguous: read as NCHW by default
    assert load_arrays({"x": x4, "y": y}).input_shape == (3, 5, 3)
    assert load_arrays({"x": x4, "y": y}, layout="nhwc").input_shape == (3, 3, 5)
    with pytest.raises(ValueError, match="'x' and 'y'"):
        load_arrays({"images": x, "labels": y})
    with pytest.raises(ValueError, match="examples"):
        load_arrays((x, y[:5]))


def _write_folder(root, sizes=((5, 5), (5, 5))) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, size in zip(("dog", "cat"), sizes):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.png")
    (root / "bird").mkdir()
    for i in range(6):
        np.save(root / "bird" / f"{i}.npy", rng.random((3, 5, 5)).astype(np.float32))


def test_load_image_folder(tmp_path) -> None:
    pytest.importorskip("PIL", reason="reading .png needs Pillow")
    _write_folder(tmp_path / "pets")
    data = load_image_folder(tmp_path / "pets", seed=0, val_fraction=1 / 3, test_fraction=1 / 3)
    assert data.name == "pets"
    assert data.num_classes == 3
    assert data.input_shape == (3, 5, 5)
    assert data.sizes() == {"train": 6, "val": 6, "test": 6}
    # Class index by sorted folder name: bird (npy) 0, cat 1, dog 2.
    assert set(data.y_train.tolist()) == {0, 1, 2}
    resized = load_image_folder(tmp_path / "pets", image_size=4)
    assert resized.input_shape == (3, 4, 4)


def test_load_image_folder_mixed_sizes_need_image_size(tmp_path) -> None:
    pytest.importorskip("PIL", reason="reading .png needs Pillow")
    _write_folder(tmp_path / "mixed", sizes=((5, 5), (6, 4)))
    with pytest.raises(ValueError, match="image_size"):
        load_image_folder(tmp_path / "mixed")
    assert load_image_folder(tmp_path / "mixed", image_size=5).input_shape == (3, 5, 5)


def test_load_image_folder_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        load_image_folder(tmp_path / "nope")
    with pytest.raises(ValueError, match="no class sub-folders"):
        load_image_folder(tmp_path)


def test_load_dataset_dispatch(tmp_path) -> None:
    assert load_dataset("digits", seed=2).name == "digits"
    assert load_dataset({"name": "digits", "val_fraction": 0.1}).sizes()["val"] < 200
    x = np.random.default_rng(0).random((20, 4, 4)).astype(np.float32)
    np.savez(tmp_path / "a.npz", x=x, y=np.arange(20) % 2)
    assert load_dataset(f"npz:{tmp_path / 'a.npz'}").input_shape == (1, 4, 4)
    assert load_dataset(str(tmp_path / "a.npz")).name == "a"
    mine = load_dataset({"name": "mine", "path": tmp_path / "a.npz"}, test_fraction=0.5)
    assert mine.name == "mine" and mine.sizes()["test"] == 10
    folder = tmp_path / "f"
    for cls in ("a", "b"):
        (folder / cls).mkdir(parents=True)
        for i in range(3):
            np.save(folder / cls / f"{i}.npy", np.ones((4, 4)) * i)
    assert load_dataset(str(folder), val_fraction=0.0, test_fraction=0.0).num_classes == 2


def test_load_dataset_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown dataset 'cifar100'.*digits"):
        load_dataset("cifar100")
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}")
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset({"name": "mine", "path": tmp_path / "missing"})
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        load_dataset({"name": "imagenet"})


def test_batches_cover_and_shuffle_deterministically() -> None:
    x = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    y = np.arange(10)
    plain = list(batches(x, y, 4))
    assert [len(b[1]) for b in plain] == [4, 4, 2]
    assert all(isinstance(t, torch.Tensor) for b in plain for t in b)
    assert torch.cat([b[1] for b in plain]).tolist() == list(range(10))
    first = torch.cat([b[1] for b in batches(x, y, 3, shuffle=True, rng=7)])
    second = torch.cat([b[1] for b in batches(x, y, 3, shuffle=True, rng=7)])
    assert first.tolist() == second.tolist() and sorted(first.tolist()) == list(range(10))
    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a = [b[1].tolist() for b in batches(x, y, 3, shuffle=True, rng=gen_a)]
    assert a == [b[1].tolist() for b in batches(x, y, 3, shuffle=True, rng=gen_b)]
    assert [len(b[1]) for b in batches(x, y, 4, drop_last=True)] == [4, 4]
    with pytest.raises(ValueError, match="batch_size"):
        list(batches(x, y, 0))
