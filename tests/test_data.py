"""Data loading: splits, reshaping, labels, and the errors bad data gets."""
import numpy as np
import pytest

from edgesparse.data import load_data
from edgesparse.errors import UserError


def _npz(tmp_path, **arrays):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return path


def test_x_y_split_is_deterministic_and_stratified(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((200, 8, 8, 1)).astype(np.float32)
    y = np.repeat(np.arange(4), 50)
    p = _npz(tmp_path, x=x, y=y)
    a = load_data(p, (8, 8, 1), 4, seed=0)
    b = load_data(p, (8, 8, 1), 4, seed=0)
    assert np.array_equal(a.x_val, b.x_val) and np.array_equal(a.y_train, b.y_train)
    assert len(a.x_val) == 40 and len(a.x_train) == 160
    assert sorted(np.bincount(a.y_val)) == [10, 10, 10, 10]       # stratified
    assert a.labelled and a.real
    assert len(a.x_calib) == 160                                  # calibration = train split only


def test_images_are_reshaped_to_a_flat_model_input(tmp_path):
    x = np.zeros((10, 8, 8, 1), np.float32)
    p = _npz(tmp_path, x_train=x, y_train=np.arange(10) % 3, x_val=x, y_val=np.arange(10) % 3)
    d = load_data(p, (64,), 3)
    assert d.x_train.shape == (10, 64) and d.x_val.shape == (10, 64)


def test_size_one_axes_are_added_but_channels_first_data_is_refused(tmp_path):
    x = np.zeros((6, 8, 8), np.float32)
    p = _npz(tmp_path, x_train=x, y_train=np.arange(6) % 2, x_val=x, y_val=np.arange(6) % 2)
    assert load_data(p, (8, 8, 1), 2).x_train.shape == (6, 8, 8, 1)
    nchw = np.zeros((6, 3, 8, 8), np.float32)
    p = _npz(tmp_path, x_train=nchw, y_train=np.arange(6) % 2, x_val=nchw, y_val=np.arange(6) % 2)
    with pytest.raises(UserError, match="channels-first: transpose"):
        load_data(p, (8, 8, 3), 2)


def test_unlabelled_x_is_calibration_only(tmp_path):
    p = _npz(tmp_path, x=np.zeros((20, 4), np.float32))
    d = load_data(p, (4,), 2)
    assert not d.labelled and d.real and d.y_train is None


def test_no_data_gives_seeded_synthetic_calibration():
    a, b = load_data(None, (8, 8, 1)), load_data(None, (8, 8, 1))
    assert not a.real and not a.labelled and np.array_equal(a.x_calib, b.x_calib)


X10, Y10 = np.zeros((10, 4), np.float32), np.arange(10) % 2


@pytest.mark.parametrize("arrays,message", [
    ({"x": np.zeros((5, 3, 3)), "y": np.zeros(5)}, "do not|takes"),
    ({"x": np.zeros((5, 4)), "y": np.array([0, 1, 2, 3, 9])}, "labels in"),
    ({"x": np.zeros((5, 4)), "y": np.zeros(4)}, "4 labels for 5 samples"),
    ({"x": np.zeros((5, 4)), "y": np.array([0.5, 1, 0, 1, 0])}, "non-integer"),
    ({"images": np.zeros((5, 4))}, "give x_train"),
    # half a validation split: labelled data must not become unlabelled, nor y_val be ignored
    ({"x_train": X10, "y_train": Y10, "x_val": X10}, r"x_val has no y_val \(give both or neither"),
    ({"x_train": X10, "y_train": Y10, "y_val": Y10}, r"y_val has no x_val \(give both or neither\)"),
    ({"x_train": X10, "x_val": X10, "y_val": Y10}, r"x_train has no y_train \(give both or neither"),
    # the key the user gave, not "y"
    ({"x_train": X10, "y_train": np.zeros(10)}, r"d.npz: y_train has a single class \(every label is 0\)"),
    ({"x_train": X10, "y_train": np.zeros(10), "x_val": X10, "y_val": np.zeros(10)},
     "y_train and y_val have a single class"),
    ({"x": X10, "y": np.ones(10)}, "d.npz: y has a single class"),
])
def test_bad_data_names_the_problem(tmp_path, arrays, message):
    p = _npz(tmp_path, **arrays)
    with pytest.raises(UserError, match=message):
        load_data(p, (4,), 3)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_data(tmp_path / "nope.npz", (4,), 3)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    # numpy takes anything that is not a zip for a pickle, and says to allow_pickle: never repeat that
    with pytest.raises(UserError, match=r"bad.npz is not an .npz archive; write one with numpy.savez") as err:
        load_data(bad, (4,), 3)
    assert "pickle" not in str(err.value)
    np.save(tmp_path / "one.npy", np.zeros((5, 4)))
    (tmp_path / "one.npy").rename(bad)                  # a lone .npy is no archive either
    with pytest.raises(UserError, match="not an .npz archive"):
        load_data(bad, (4,), 3)
    _npz(tmp_path, x=np.array([np.zeros(4), "a"], dtype=object), y=np.zeros(2))
    with pytest.raises(UserError, match="array x holds Python objects, which edgesparse never loads") as err:
        load_data(tmp_path / "d.npz", (4,), 3)
    assert "allow_pickle" not in str(err.value)
    csv = tmp_path / "d.csv"
    csv.write_text("1,2")
    with pytest.raises(UserError, match="not an .npz"):
        load_data(csv, (4,), 3)


def test_image_folder(tmp_path):
    from PIL import Image

    for c, name in enumerate(["cat", "dog"]):
        (tmp_path / name).mkdir()
        for i in range(5):
            Image.fromarray(np.full((16, 16, 3), 40 * c + i, np.uint8)).save(tmp_path / name / f"{i}.png")
    d = load_data(tmp_path, (8, 8, 1), 2)
    assert d.labelled and d.x_train.shape[1:] == (8, 8, 1) and len(d.x_train) + len(d.x_val) == 10
    assert 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0


def test_unlabelled_extra_inputs_feed_calibration_only(tmp_path):
    x = np.zeros((10, 4), np.float32)
    extra = np.ones((30, 4), np.float32)
    p = _npz(tmp_path, x_train=x, y_train=np.arange(10) % 2, x_val=x, y_val=np.arange(10) % 2,
             x_unlabelled=extra)
    d = load_data(p, (4,), 2)
    assert len(d.x_calib) == 40 and len(d.x_train) == 10 and d.labelled
    assert d.splits["calibration"] == "train + x_unlabelled"


def test_labels_against_a_model_without_a_class_vector_name_the_output(tmp_path, capsys):
    """A feature-map output's last axis is not the classes: labels checked against its 4 channels
    said 'labels must be 0..3'. Without labels the same model builds (agreement is checked)."""
    from pathlib import Path

    from edgesparse._tf import keras
    from edgesparse.cli import run

    inp = keras.Input((8, 8, 1))
    keras.Model(inp, keras.layers.Conv2D(4, 3, padding="same")(inp)).save(tmp_path / "features.keras")
    digits = np.load(Path(__file__).resolve().parents[1] / "sample_models" / "digits.npz")
    np.savez(tmp_path / "labelled.npz", x=digits["x_train"][:200], y=digits["y_train"][:200])
    np.savez(tmp_path / "x_only.npz", x=digits["x_train"][:200])
    recipe = tmp_path / "r.yaml"
    recipe.write_text("passes:\n  - pass: quantize\n  - pass: export\n  - pass: verify\n")
    args = ["build", str(tmp_path / "features.keras"), "--recipe", str(recipe)]
    assert run(args + ["--data", str(tmp_path / "labelled.npz"), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "not one score per class" in err and "labels must be" not in err
    assert not (tmp_path / "a").exists()
    assert run(args + ["--data", str(tmp_path / "x_only.npz"), "--out", str(tmp_path / "b")]) == 0


def test_a_scalar_where_samples_belong_is_not_called_empty(tmp_path):
    np.savez(tmp_path / "scalar.npz", x_train=np.float32(1.0), y_train=np.int64(0))
    with pytest.raises(UserError, match="x_train is a single value, not an array of samples"):
        load_data(tmp_path / "scalar.npz", (64,), 10)
