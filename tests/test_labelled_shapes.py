"""The class-conditional one-disc set (``pdlib.data.labelled_shapes``): the colour-family label, the folder
written to disk and read back by ``image_folder`` with the same images and labels, and the experiments'
handling of a generated data folder (written before training, found from any working directory)."""

import json

import pytest
import torch

from pdlib import experiments
from pdlib.data import shapes
from pdlib.data.images import image_folder
from pdlib.data.labelled_shapes import FOLDERS, colour_classes, write_shapes_folder


def test_colour_classes_is_the_largest_channel_of_the_disc():
    images = torch.full((3, 3, 16, 16), -1.0)
    images[0, :, 4:8, 4:8] = torch.tensor([0.9, 0.1, -0.5])[:, None, None]
    images[1, :, 2:6, 8:12] = torch.tensor([-0.2, 0.3, 0.25])[:, None, None]
    images[2, :, 9:13, 9:13] = torch.tensor([-1.0, -0.9, 0.2])[:, None, None]
    assert colour_classes(images).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="3 channels"):
        colour_classes(torch.zeros(2, 1, 16, 16))


def test_labels_are_balanced_on_the_shapes_distribution():
    labels = colour_classes(shapes(3000, 16, generator=torch.Generator().manual_seed(0)))
    counts = torch.bincount(labels, minlength=3).double() / 3000
    assert ((counts - 1 / 3).abs() < 0.04).all(), counts  # the colour direction is symmetric in RGB


def test_folder_round_trip(tmp_path):
    root = write_shapes_folder(tmp_path / "set", 40, size=16, seed=3)
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == list(FOLDERS)
    assert json.loads((root / "dataset.json").read_text())["n"] == 40
    data = image_folder(root, 16)
    assert len(data) == 40
    originals = shapes(40, 16, generator=torch.Generator().manual_seed(3))
    # image_folder lists files by class folder; the file name is the original index
    for i, (path, label) in enumerate(data.samples):
        index = int(path.rsplit("/", 1)[1].removesuffix(".png"))
        image, y = data[i]
        assert y == label == int(colour_classes(originals[index : index + 1]))
        assert (image - originals[index]).abs().max() <= 1 / 255 + 1e-6  # 8-bit PNG


def test_folder_is_kept_or_refused(tmp_path):
    root = write_shapes_folder(tmp_path / "set", 12, size=16)
    stamp = (root / FOLDERS[0]).stat().st_mtime_ns
    assert write_shapes_folder(root, 12, size=16) == root and (root / FOLDERS[0]).stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="another shapes set"):
        write_shapes_folder(root, 13, size=16)
    (tmp_path / "other").mkdir()
    with pytest.raises(FileExistsError, match="no dataset.json"):
        write_shapes_folder(tmp_path / "other", 12, size=16)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "set"]  # no partial folder left
    marker = root / "dataset.json"
    stale = json.loads(marker.read_text())
    marker.write_text(json.dumps({**stale, "sha256": "0" * 64}))  # as if written by another shapes()
    with pytest.raises(FileExistsError, match="another version"):
        write_shapes_folder(root, 12, size=16)


def test_experiment_prepares_its_data_and_reads_it_from_any_directory(tmp_path, monkeypatch):
    """A run with a relative ``data.root`` finds the folder under the repository root, even when called
    from elsewhere (the book's notebooks run in book/chapters), after ``prepare`` wrote it."""
    calls = []
    exp = experiments.get("sp-shapes")
    cfg = exp.runs("smoke")["cond-mse"]
    root = cfg.data.root
    assert not root.startswith("/")

    def runs(budget):
        one = exp.runs(budget)["cond-mse"]
        one.train.steps = 1
        return {"cond-mse": one}

    def evaluate(methods, out, budget):
        return {"labels": sorted(methods)}

    tiny = experiments.Experiment("tiny-cond", "test", runs, evaluate,
                                  prepare=lambda budget: calls.append(budget) or exp.prepare(budget))
    monkeypatch.setitem(experiments.REGISTRY, "tiny-cond", tiny)
    monkeypatch.chdir(tmp_path)
    out = experiments.run("tiny-cond", budget="smoke", out_dir=tmp_path / "out", progress=False)
    assert calls == ["smoke"]
    assert (experiments.REPO_DIR / root / "dataset.json").is_file()
    record = json.loads((out / "metrics.json").read_text())
    assert record["config"]["cond-mse"]["data"]["root"] == root  # recorded as written, not resolved


def test_centre_shift_measures_how_far_the_disc_moves():
    from pdlib.experiments.selfperceptual import centre_shift

    a = shapes(10, 16, generator=torch.Generator().manual_seed(0))
    assert centre_shift(a, a) == {"mean": 0.0, "median": 0.0, "n": 10}
    moved = centre_shift(torch.roll(a, shifts=1, dims=-1), a)  # the pairs still valid after the shift
    assert moved["mean"] == pytest.approx(1.0) and 0 < moved["n"] <= 10
    assert centre_shift(-torch.ones_like(a), a) == {"mean": None, "median": None, "n": 0}  # no valid pair
