"""Data sources (digits, image folders, saved HF datasets) and their transforms, offline."""

import numpy as np
import pytest
from PIL import Image

from sparsezoo.data.common import cap_indices, stratified_split
from sparsezoo.data.loaders import build_transforms, load_image_data
from sparsezoo.errors import DataError
from sparsezoo.recipe import DataSpec


def make_image_folder(root, classes=("cat", "dog", "eel"), per_class=6, split_dirs=False):
    rng = np.random.default_rng(0)
    for split in (("train", "val") if split_dirs else ("",)):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class if split != "val" else 2):
                Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


def make_saved_dataset(path, label_names=("zero", "one", "two"), n=30, label_as_string=False):
    import datasets

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)) for _ in range(n)]
    labels = [i % len(label_names) for i in range(n)]
    if label_as_string:
        feats = datasets.Features({"picture": datasets.Image(), "target": datasets.Value("string")})
        ds = datasets.Dataset.from_dict({"picture": images, "target": [label_names[i] for i in labels]}, features=feats)
    else:
        feats = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=list(label_names))})
        ds = datasets.Dataset.from_dict({"img": images, "label": labels}, features=feats)
    datasets.DatasetDict({"train": ds.select(range(n - 9)), "test": ds.select(range(n - 9, n))}).save_to_disk(str(path))
    return path


def test_digits_split_is_stratified_and_fixed_by_split_seed():
    a = load_image_data(DataSpec(source="digits"))
    b = load_image_data(DataSpec(source="digits"))
    assert len(a.train) + len(a.val) == 1797 and abs(len(a.val) - 0.2 * 1797) < 10
    assert a.val.indices == b.val.indices
    counts = np.bincount(a.val.targets(), minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38
    img, label = a.train[0]
    assert img.mode == "RGB" and img.size == (8, 8) and 0 <= label < 10
    c = load_image_data(DataSpec(source="digits", split_seed=1))
    assert c.val.indices != a.val.indices


def test_stratified_split_keeps_every_class_on_both_sides():
    tr, va = stratified_split([0] * 5 + [1] * 2 + [2] * 20, 0.2, seed=0)
    assert sorted(tr + va) == list(range(27))
    labels = [0] * 5 + [1] * 2 + [2] * 20
    assert {labels[i] for i in va} == {0, 1, 2} and {labels[i] for i in tr} == {0, 1, 2}


def test_a_fraction_that_holds_out_less_than_one_sample_or_leaves_less_than_one_is_refused():
    labels = [i % 10 for i in range(1797)]
    with pytest.raises(DataError, match=r"0.0001 of 1,797 samples is less than one validation sample .* 0.00056"):
        stratified_split(labels, 1e-4, seed=0)
    with pytest.raises(DataError, match="0.9999 of 1,797 samples leaves less than one training sample"):
        stratified_split(labels, 0.9999, seed=0)
    for bad in (0.0, -0.5, 1.0, 1.5):  # the Python API, without recipe validation
        with pytest.raises(DataError, match="val_fraction"):
            stratified_split(labels, bad, seed=0)
    tr, va = stratified_split(labels, 1 / 1797, seed=0)  # the smallest fraction that holds one out: one per class
    assert len(va) == 10 and len(tr) == 1787
    assert stratified_split([], 0.2, seed=0) == ([], [])  # no data: the caller names the empty source


def test_a_sample_cap_is_a_seeded_subset_and_never_more_than_the_split():
    keep = cap_indices(100, 10, seed=3, split="training", description="d")
    assert keep == np.sort(np.random.default_rng(3).permutation(100)[:10]).tolist()  # the selection runs recorded
    assert cap_indices(100, None, 0, "training", "d") is None and cap_indices(100, 100, 0, "training", "d") is None
    with pytest.raises(DataError, match="data.max_train_samples 101 is more than the 100 training samples of d"):
        cap_indices(100, 101, 0, "training", "d")
    with pytest.raises(DataError, match="data.max_val_samples must be positive, got 0"):
        cap_indices(100, 0, 0, "validation", "d")


def test_caps_larger_than_the_digits_splits_are_refused():
    with pytest.raises(DataError, match=r"max_train_samples 5,000 is more than the 1,438 training samples of digits"):
        load_image_data(DataSpec(source="digits", max_train_samples=5000))
    with pytest.raises(DataError, match=r"max_val_samples 360 is more than the 359 validation samples"):
        load_image_data(DataSpec(source="digits", max_val_samples=360))
    data = load_image_data(DataSpec(source="digits", max_train_samples=1438, max_val_samples=359))
    assert (len(data.train), len(data.val)) == (1438, 359)


def test_caps_larger_than_a_text_split_are_refused(tmp_path):
    from sparsezoo.data.text import load_text_data

    (tmp_path / "t.csv").write_text("text,label\n" + "".join(f"post {i},{i % 2}\n" for i in range(20)))
    spec = DataSpec(source=str(tmp_path / "t.csv"), max_val_samples=5)
    with pytest.raises(DataError, match=r"max_val_samples 5 is more than the 4 validation samples of file"):
        load_text_data(spec)
    data = load_text_data(DataSpec(source=str(tmp_path / "t.csv"), max_train_samples=10))
    assert (len(data.train), len(data.val)) == (10, 4)


def test_a_hub_id_close_to_a_named_set_gets_a_hint():
    with pytest.raises(DataError, match="did you mean the named data set 'digits'"):
        load_image_data(DataSpec(source="digitz"))


def test_image_folder_with_and_without_split_folders(tmp_path):
    flat = load_image_data(DataSpec(source=str(make_image_folder(tmp_path / "flat"))))
    assert flat.label_names == ["cat", "dog", "eel"] and len(flat.train) + len(flat.val) == 18
    split = load_image_data(DataSpec(source=str(make_image_folder(tmp_path / "split", split_dirs=True))))
    assert len(split.train) == 18 and len(split.val) == 6


def test_saved_hf_dataset_detects_columns_and_test_split(tmp_path):
    data = load_image_data(DataSpec(source=str(make_saved_dataset(tmp_path / "ds"))))
    assert data.label_names == ["zero", "one", "two"]
    # the "test" split is the test split, never validation: validation is held out of train
    assert len(data.train) == 18 and len(data.val) == 3 and len(data.test) == 9
    assert data.splits["test"] == {"name": "test", "size": 9}
    assert data.splits["validation"]["held_out"].startswith("20% of train")
    img, label = data.test[0]
    assert img.mode == "RGB" and label == 21 % 3
    # asked for by name, "test" validates, and then there is no test split
    asked = load_image_data(DataSpec(source=str(make_saved_dataset(tmp_path / "ds2")), val_split="test"))
    assert len(asked.val) == 9 and asked.test is None and asked.splits["test"] is None


def test_string_labels_and_explicit_columns(tmp_path):
    path = make_saved_dataset(tmp_path / "ds", label_as_string=True)
    data = load_image_data(DataSpec(source=str(path), image_column="picture", label_column="target"))
    assert data.label_names == ["one", "two", "zero"]  # sorted values


@pytest.mark.parametrize("spec, message", [
    (dict(label_column="lbl"), "label column 'lbl' is not in the dataset (columns: img, label)"),
    (dict(image_column="pixels"), "image column 'pixels' is not in the dataset"),
    (dict(val_split="dev"), "split 'dev' not in"),
])
def test_wrong_columns_and_splits_are_data_errors(tmp_path, spec, message):
    path = make_saved_dataset(tmp_path / "ds")
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_image_data(DataSpec(source=str(path), **spec))


def test_missing_and_empty_folders_and_corrupt_images(tmp_path):
    with pytest.raises(DataError, match="data folder .* not found"):
        load_image_data(DataSpec(source=str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        load_image_data(DataSpec(source=str(tmp_path / "empty")))
    root = make_image_folder(tmp_path / "bad")
    (root / "cat" / "0.png").write_bytes(b"not a png")
    data = load_image_data(DataSpec(source=str(root), val_fraction=0.5))
    with pytest.raises(DataError, match="cannot read image"):
        [data.train[i] for i in range(len(data.train))] + [data.val[i] for i in range(len(data.val))]
    with pytest.raises(DataError, match="not an option of digits"):
        load_image_data(DataSpec(source="digits", label_column="y"))


def test_transforms_follow_the_model_data_config():
    import timm

    model = timm.create_model("test_resnet")
    data = load_image_data(DataSpec(source="digits"))
    train_tf, eval_tf, cfg = build_transforms(model, DataSpec(source="digits", img_size=40), data)
    assert cfg["input_size"] == (3, 40, 40) and cfg["crop_pct"] == 1.0
    x = eval_tf(data.val[0][0])
    assert tuple(x.shape) == (3, 40, 40)
    assert tuple(train_tf(data.train[0][0]).shape) == (3, 40, 40)
    # normalized with the model's mean/std: a white image maps to (1 - mean) / std
    white = eval_tf(Image.new("RGB", (8, 8), (255, 255, 255)))
    assert white[0, 0, 0].item() == pytest.approx((1 - cfg["mean"][0]) / cfg["std"][0], rel=1e-4)
