"""Image data: the one-disc set and its analytic validity check, digits, CIFAR-10, CelebA, folders.

References are independent of pdlib: discs and failures are rasterised here with numpy, connectivity
and holes are counted with ``scipy.ndimage.label``, the digits resampling is the closed-form
bilinear matrix, and the CIFAR-10 / CelebA / folder tests write small files in the original formats.
"""

import pickle

import numpy as np
import pytest
import torch
from scipy import ndimage

from pdlib.data.shapes import _euler_number, _flood_fill, shapes, shapes_validity
from pdlib.errors import DatasetUnavailableError

SIZES = (16, 32)


# ------------------------------------------------------------------ shapes: the generator
def test_shapes_shape_range_and_two_colours():
    x = shapes(200, 16, torch.Generator().manual_seed(0))
    assert x.shape == (200, 3, 16, 16) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    ring = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], -1)
    assert torch.all(ring == -1), "the 1-pixel margin must be background"
    background = (x == -1).all(1)
    colour = x.amax((2, 3))  # the disc colour: every foreground pixel holds it
    assert torch.all((x == colour[..., None, None]).all(1) | background)
    assert torch.all(colour.amax(1) >= 0.2 - 1e-6), "brightest channel at least 1.2 from the background"


@pytest.mark.parametrize("size", SIZES)
def test_shapes_radius_range(size):
    x = shapes(400, size, torch.Generator().manual_seed(1))
    area = (x != -1).any(1).sum((1, 2)).numpy()
    radius = np.sqrt(area / np.pi)
    # digital discs: sqrt(area/pi) is within about half a pixel of the drawn radius
    assert radius.min() >= size / 5 - 0.6 and radius.max() <= size / 3 + 0.6
    assert radius.max() - radius.min() > size / 10, "radii must actually vary"


def test_shapes_deterministic_with_generator():
    a = shapes(10, 16, torch.Generator().manual_seed(3))
    torch.manual_seed(123)
    b = shapes(10, 16, torch.Generator().manual_seed(3))
    c = shapes(10, 16, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_shapes_bad_arguments():
    with pytest.raises(ValueError):
        shapes(4, 8)
    with pytest.raises(ValueError):
        shapes(0, 16)
    with pytest.raises(TypeError):
        shapes(4, 16.0)


# ------------------------------------------------------------------ shapes: the validity check
@pytest.mark.parametrize("size", SIZES)
def test_validity_accepts_every_generated_image(size):
    x = shapes(600, size, torch.Generator().manual_seed(size))
    assert shapes_validity(x).all()


@pytest.mark.parametrize("size", SIZES)
def test_validity_accepts_slightly_off_images(size):
    """A model's samples: colours a little off and noisy, or edges blurred by one pixel."""
    g = torch.Generator().manual_seed(5)
    x = shapes(300, size, g)
    off = 0.98 * x + 0.01 + 0.05 * torch.randn(x.shape, generator=g)  # background at -0.97
    assert shapes_validity(off).all()
    kernel = torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
    blurred = torch.nn.functional.conv2d(padded, kernel.expand(3, 1, 3, 3), groups=3)
    assert shapes_validity(blurred).float().mean() >= 0.97


def _grid(size):
    c = np.arange(size) + 0.5
    return np.meshgrid(c, c, indexing="ij")  # y, x


def _disc(size, cy, cx, r):
    y, x = _grid(size)
    return (y - cy) ** 2 + (x - cx) ** 2 <= r**2


def _image(mask, colour=(0.8, -0.2, 0.3)):
    mask = torch.as_tensor(np.asarray(mask))
    return torch.where(mask[None], torch.tensor(colour)[:, None, None], torch.tensor(-1.0))


def _failures(size):
    """name -> image that is not exactly one solid disc on the background."""
    s, y, x = size, *_grid(size)
    r = s / 4
    disc = _disc(s, s / 2, s / 2, r)
    noise = 0.2 * torch.randn(3, s, s, generator=torch.Generator().manual_seed(0))
    gradient = _image(disc).clone()
    gradient[0] = torch.where(torch.as_tensor(disc), torch.as_tensor((x - s / 2) / r).float(), gradient[0])
    square = np.zeros((s, s), bool)
    side = s // 2 + 2  # 10 px at 16 (IoU with its fitted disc 0.83), 18 px at 32
    square[(s - side) // 2:(s + side) // 2, (s - side) // 2:(s + side) // 2] = True
    holed = disc.copy()
    holed[s // 2, s // 2] = False
    stray = np.arange(s * s).reshape(s, s) == 2 * s + s - 3  # a pixel near the top-right corner
    return {
        "two discs": _image(_disc(s, s * 0.25, s * 0.25, s / 6) | _disc(s, s * 0.72, s * 0.7, s / 6)),
        "two overlapping discs": _image(_disc(s, s * 0.4, s * 0.4, s / 5) | _disc(s, s * 0.62, s * 0.62, s / 5)),
        "disc and a stray pixel": _image(disc | stray),
        "disc with a hole, and a stray pixel": _image(holed | stray),  # Euler number 2 - 1 = 1
        "square": _image(square),
        "ellipse of aspect 2": _image(((x - s / 2) / (s * 0.3)) ** 2 + ((y - s / 2) / (s * 0.15)) ** 2 <= 1),
        "ring": _image(disc & ~_disc(s, s / 2, s / 2, r / 2)),
        "disc with a one-pixel hole": _image(holed),
        "noise std 0.2": (_image(disc) + noise).clamp(-1, 1),
        "colour gradient": gradient,
        "empty image": torch.full((3, s, s), -1.0),
        "half disc cut by the border": _image(_disc(s, s / 2, 0.0, r * 1.4)),
        "disc slightly cut by the border": _image(_disc(s, s / 2, r - 1, r)),
        "grey background": torch.where(_image(disc) == -1, torch.tensor(-0.6), _image(disc)),
        "two colours": torch.where(torch.as_tensor(x < s / 2), _image(disc), _image(disc, (-0.5, 0.9, 0.9))),
    }


@pytest.mark.parametrize("size", SIZES)
def test_validity_rejects_each_failure(size):
    assert shapes_validity(_image(_disc(size, size / 2, size / 2, size / 4))[None]).item(), "control disc"
    failures = _failures(size)
    verdict = shapes_validity(torch.stack(list(failures.values())))
    accepted = [name for name, ok in zip(failures, verdict.tolist()) if ok]
    assert not accepted


def test_validity_rejects_noise_for_many_seeds():
    g = torch.Generator().manual_seed(9)
    x = shapes(200, 16, g)
    assert not shapes_validity(x + 0.2 * torch.randn(x.shape, generator=g)).any()


def test_validity_bad_input():
    with pytest.raises(ValueError):
        shapes_validity(torch.zeros(3, 16, 16))
    with pytest.raises(TypeError):
        shapes_validity(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))


def _random_blobs(n, size, seed):
    rng = np.random.default_rng(seed)
    smooth = ndimage.uniform_filter(rng.random((n, size, size)), size=(1, 3, 3))
    return smooth > rng.uniform(0.45, 0.6, (n, 1, 1))


def test_flood_fill_and_euler_number_match_scipy():
    masks = _random_blobs(60, 14, 0)
    eight, four = np.ones((3, 3)), ndimage.generate_binary_structure(2, 1)
    m = torch.from_numpy(masks)
    seed = torch.zeros_like(m)
    first = m.flatten(1).to(torch.uint8).argmax(1)
    seed.view(len(m), -1)[torch.arange(len(m)), first] = True
    filled = _flood_fill(seed, m).numpy()
    euler = _euler_number(m).numpy()
    for k, mask in enumerate(masks):
        labels, components = ndimage.label(mask, eight)
        if mask.any():
            assert np.array_equal(filled[k], labels == labels.flat[first[k].item()])
        _, background_parts = ndimage.label(~np.pad(mask, 1), four)
        assert euler[k] == components - (background_parts - 1)


# ------------------------------------------------------------------ digits
def test_digits_match_sklearn():
    from sklearn.datasets import load_digits

    from pdlib.data.images import digits

    bunch = load_digits()
    x8, y = digits(size=8)
    assert x8.shape == (1797, 1, 8, 8) and y.dtype == torch.long
    assert torch.equal(y, torch.from_numpy(bunch.target))
    assert torch.allclose(x8[:, 0].double(), torch.from_numpy(bunch.images / 8 - 1))
    assert x8.min() == -1 and x8.max() == 1

    x16, _ = digits()  # bilinear, half-pixel centres: each output row mixes the two nearest inputs
    w = np.zeros((16, 8))
    for o in range(16):
        src = (o + 0.5) / 2 - 0.5
        lo = int(np.floor(src))
        frac = src - lo
        w[o, min(max(lo, 0), 7)] += 1 - frac
        w[o, min(max(lo + 1, 0), 7)] += frac
    reference = w @ (bunch.images / 8 - 1) @ w.T
    assert x16.shape == (1797, 1, 16, 16)
    assert np.allclose(x16[:, 0].numpy(), reference, atol=1e-6)
    assert x16.min() >= -1 and x16.max() <= 1


# ------------------------------------------------------------------ CIFAR-10
def _write_cifar10(root, n_train=4, n_test=3, seed=0):
    """The archive's layout: pickled dicts, ``data`` uint8 [N, 3072] (R, G, B planes), ``labels``.

    The real files are Python 2 pickles whose byte-string keys torchvision decodes (latin1) to the
    str keys written here.
    """
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for name, n in [(f"data_batch_{i}", n_train) for i in range(1, 6)] + [("test_batch", n_test)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        data[0, :2] = (0, 255)
        labels = rng.integers(0, 10, n).tolist()
        batches[name] = (data, labels)
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": data, "labels": labels,
                         "filenames": [f"{name}_{i}.png" for i in range(n)]}, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                     "horse", "ship", "truck"], "num_vis": 3072, "num_cases_per_batch": n_train},
                    f, protocol=2)
    return batches


def test_cifar10_reads_original_format(tmp_path, no_md5):
    from pdlib.data.images import cifar10
    from pdlib.train import Trainer

    batches = _write_cifar10(tmp_path)
    train, test = cifar10(tmp_path), cifar10(tmp_path, train=False)
    assert len(train) == 20 and len(test) == 3
    for ds, names in ((train, [f"data_batch_{i}" for i in range(1, 6)]), (test, ["test_batch"])):
        data = np.concatenate([batches[n][0] for n in names])
        labels = sum((batches[n][1] for n in names), [])
        expected = torch.from_numpy(data.reshape(-1, 3, 32, 32).astype(np.float64) / 127.5 - 1).float()
        images = torch.stack([ds[i][0] for i in range(len(ds))])
        assert images.shape == (len(ds), 3, 32, 32) and images.dtype == torch.float32
        assert torch.allclose(images, expected, atol=1e-6)
        assert [ds[i][1] for i in range(len(ds))] == labels
    assert train[0][0][0, 0, 0] == -1 and train[0][0][0, 0, 1] == 1  # bytes 0 and 255, exactly

    class Recorder(torch.nn.Module):  # the Trainer reads the data set through a DataLoader
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))
            self.seen = []

        def loss(self, x0, generator=None, **cond):
            self.seen.append((x0.shape, sorted(cond)))
            return {"loss": (self.w - x0.mean()) ** 2}

    rec = Recorder()
    Trainer(rec, train, steps=3, batch_size=8, progress=False, ema_decay=None).fit()
    assert rec.seen == [((8, 3, 32, 32), [])] * 3  # labels are dropped unless dataset_labels=True
    rec.seen.clear()
    Trainer(rec, train, steps=1, batch_size=8, progress=False, ema_decay=None, dataset_labels=True).fit()
    assert rec.seen == [((8, 3, 32, 32), ["y"])]


def test_cifar10_flip(tmp_path, no_md5):
    from pdlib.data.images import cifar10

    _write_cifar10(tmp_path)
    plain, flipped = cifar10(tmp_path), cifar10(tmp_path, flip=True)
    torch.manual_seed(0)
    outcomes = []
    for i in range(len(plain)):
        a, b = plain[i][0], flipped[i][0]
        assert torch.equal(b, a) or torch.equal(b, a.flip(-1))
        outcomes.append(torch.equal(b, a.flip(-1)))
    assert any(outcomes) and not all(outcomes)


def test_cifar10_missing_raises_with_steps_without_download(tmp_path, no_network):
    from pdlib.data.images import cifar10

    with pytest.raises(DatasetUnavailableError) as info:
        cifar10(tmp_path / "nowhere")
    assert no_network == []
    message = str(info.value)
    for step in ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
                 "download=True", "tar -xzf", "cifar-10-batches-py"):
        assert step in message


def test_cifar10_partial_or_corrupt(tmp_path):
    from pdlib.data.images import cifar10

    _write_cifar10(tmp_path)
    with pytest.raises(DatasetUnavailableError, match="fails its md5 check"):  # torchvision's check, kept
        cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DatasetUnavailableError, match="missing test_batch"):
        cifar10(tmp_path)


# ------------------------------------------------------------------ CelebA
def _write_celeba(root, n=3):
    """A tiny CelebA in torchvision's layout: 178x218 photos, white 140x140 centre on black."""
    from PIL import Image

    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    photo = np.zeros((218, 178, 3), np.uint8)
    photo[39:179, 19:159] = 255  # the central 140x140 square
    names = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    for name in names:  # PNG content (lossless); PIL reads the format from the content, not the name
        Image.fromarray(photo).save(folder / "img_align_celeba" / name, format="PNG")
    attrs = [f"a{k}" for k in range(40)]
    (folder / "list_eval_partition.txt").write_text("".join(f"{m} 0\n" for m in names))
    (folder / "identity_CelebA.txt").write_text("".join(f"{m} 1\n" for m in names))
    (folder / "list_bbox_celeba.txt").write_text(
        f"{n}\nimage_id x_1 y_1 width height\n" + "".join(f"{m} 1 2 3 4\n" for m in names))
    (folder / "list_landmarks_align_celeba.txt").write_text(
        f"{n}\nlefteye_x lefteye_y\n" + "".join(f"{m}" + " 1" * 10 + "\n" for m in names))
    (folder / "list_attr_celeba.txt").write_text(
        f"{n}\n{' '.join(attrs)}\n" + "".join(f"{m}" + " 1 -1" * 20 + "\n" for m in names))


def test_celeba_preprocessing(tmp_path, no_md5):
    from pdlib.data.images import celeba

    _write_celeba(tmp_path)
    ds = celeba(tmp_path)
    image, attr = ds[0]
    assert len(ds) == 3 and image.shape == (3, 64, 64)
    assert torch.all(image == 1), "centre crop 140 keeps exactly the white square"
    assert attr.tolist() == [1, 0] * 20
    ddim = celeba(tmp_path, size=32, crop="ddim")[0][0]  # rows 57..185 reach the black below row 179
    assert ddim.shape == (3, 32, 32) and ddim[:, -1].max() < 1 and torch.all(ddim[:, :8] == 1)


def test_celeba_missing_raises_with_steps_without_download(tmp_path, no_network):
    from pdlib.data.images import celeba

    with pytest.raises(DatasetUnavailableError) as info:
        celeba(tmp_path)
    assert no_network == []
    for step in ("00d2c5bc6d35e252742224ab0c1e8fcb", "img_align_celeba", "download=True", "gdown", "quota"):
        assert step in str(info.value)
    with pytest.raises(ValueError):
        celeba(tmp_path, split="training")


# ------------------------------------------------------------------ any folder of images
def test_image_folder_flat_and_classes(tmp_path):
    from PIL import Image

    from pdlib.data.images import image_folder

    flat = tmp_path / "flat"
    flat.mkdir()
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, 8:32] = 255  # centre crop of the 32x16 resize keeps only white
    Image.fromarray(wide).save(flat / "a.png")
    Image.fromarray(np.full((30, 30), 51, np.uint8), mode="L").save(flat / "b.png")  # grey -> RGB
    Image.fromarray(np.zeros((12, 9, 3), np.uint8)).save(flat / "c.jpg")
    (flat / "notes.txt").write_text("not an image")
    ds = image_folder(flat, 16)
    assert len(ds) == 3
    images = torch.stack([ds[i][0] for i in range(3)])
    assert images.shape == (3, 3, 16, 16) and {ds[i][1] for i in range(3)} == {0}
    assert torch.all(images[0] == 1)
    assert torch.allclose(images[1], torch.tensor(51 / 127.5 - 1))
    assert torch.all(images[2] == -1)

    classes = tmp_path / "classes"
    for label, name in enumerate(["cats", "dogs"]):
        (classes / name).mkdir(parents=True)
        Image.fromarray(np.full((8, 8, 3), 255 * label, np.uint8)).save(classes / name / "x.png")
    ds = image_folder(classes, 4)
    assert [ds[i][1] for i in range(2)] == [0, 1]
    assert torch.all(ds[0][0] == -1) and torch.all(ds[1][0] == 1)


def test_image_folder_missing_or_empty(tmp_path):
    from pdlib.data.images import image_folder

    with pytest.raises(DatasetUnavailableError):
        image_folder(tmp_path / "nowhere", 16)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DatasetUnavailableError):
        image_folder(tmp_path / "empty", 16)
