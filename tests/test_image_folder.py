"""ga.datasets.image_dataset_from_directory and write_image_folder: decoding, the cache,
errors, the validation split, and that a loaded folder trains.

Every folder is generated here with Pillow (in tmp_path); nothing is downloaded and
nothing is timed.
"""
import os
import sys

import numpy as np
import pytest

PIL = pytest.importorskip("PIL", reason="Pillow is needed to read image folders (pip install pillow)")
from PIL import Image, ImageOps  # noqa: E402

import gpuaccel as ga  # noqa: E402
from gpuaccel import datasets, image_folder  # noqa: E402
from gpuaccel.datasets import ImageDecodeError, image_dataset_from_directory as load  # noqa: E402

HAVE_DEBIAN = all(os.path.isfile(os.path.join(datasets.DEBIAN_DIR, s + ".gz"))
                  for s in datasets.fashion_mnist.files.values())


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No downloads; the fall-back cache goes into tmp_path."""
    monkeypatch.setenv("GPUACCEL_NO_DOWNLOAD", "1")
    monkeypatch.setenv("GPUACCEL_CACHE", str(tmp_path / "user-cache"))
    monkeypatch.delenv("GPUACCEL_DATA", raising=False)


def picture(rng, w, h):
    """An RGB (h, w, 3) uint8 picture: noise plus a few flat rectangles (so resizing matters)."""
    a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    for _ in range(3):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        a[y0:y0 + h // 3, x0:x0 + w // 3] = rng.integers(0, 256, 3, dtype=np.uint8)
    return a


def make_folder(root, seed=0):
    """3 classes, PNG / JPEG / BMP / GIF in RGB, RGBA, L and P, one nested sub-folder,
    a notes.txt (ignored, counted) and a hidden file (ignored, not counted)."""
    rng = np.random.default_rng(seed)
    specs = {
        "apple": [("a_rgb.png", "RGB", 40, 30), ("b_rgba.png", "RGBA", 20, 20), ("c.jpg", "RGB", 64, 48),
                  ("sub/d_l.bmp", "L", 16, 24)],
        "banana": [("e_p.gif", "P", 30, 30), ("f_l.png", "L", 17, 33), ("g.JPEG", "RGB", 50, 50)],
        "cherry": [("h.png", "RGB", 16, 16), ("i_p.png", "P", 25, 19), ("j.bmp", "RGB", 33, 21)],
    }
    for cls, files in specs.items():
        for name, mode, w, h in files:
            path = os.path.join(root, cls, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            im = Image.fromarray(picture(rng, w, h))
            if mode == "RGBA":
                im.putalpha(Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)))
            elif mode == "P":
                im = im.quantize(32)
            else:
                im = im.convert(mode)
            im.save(path)
    with open(os.path.join(root, "apple", "notes.txt"), "w") as f:
        f.write("not an image\n")
    Image.fromarray(picture(rng, 8, 8)).save(os.path.join(root, "banana", ".hidden.png"))
    return root


def add_corrupt(root):
    with open(os.path.join(root, "banana", "bad.png"), "wb") as f:
        f.write(b"this is not a PNG file at all" * 10)
    buf = open(os.path.join(root, "apple", "c.jpg"), "rb").read()
    with open(os.path.join(root, "cherry", "truncated.jpg"), "wb") as f:
        f.write(buf[: len(buf) // 2])


@pytest.fixture
def folder(tmp_path):
    return make_folder(str(tmp_path / "pics"))


def reference(path, size, mode="RGB", crop=False):
    """An independent decode: Pillow open, orientation, convert, resize (h, w) -> (C, H, W)."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        im = im.convert(mode)
        if crop:
            th, tw = size
            s = min(im.width / tw, im.height / th)
            cw, ch = round(tw * s), round(th * s)
            l, t = (im.width - cw) // 2, (im.height - ch) // 2
            im = im.crop((l, t, l + cw, t + ch))
        a = np.asarray(im.resize((size[1], size[0]), Image.Resampling.BILINEAR))
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


class Counter:
    """Wraps image_folder.decode_image, counting calls."""

    def __init__(self, monkeypatch):
        self.calls, self.real = 0, image_folder.decode_image
        monkeypatch.setattr(image_folder, "decode_image", self)

    def __call__(self, *a, **k):
        self.calls += 1
        return self.real(*a, **k)


# ----------------------------------------------------------------------------- decoding
def test_shapes_dtypes_classes(folder):
    r = load(folder, image_size=(16, 12), verbose=0)
    x, y = r
    assert x.shape == (10, 3, 16, 12) and x.dtype == np.uint8
    assert y.dtype == np.int32 and y.tolist() == [0] * 4 + [1] * 3 + [2] * 3
    assert r.class_names == ["apple", "banana", "cherry"]
    assert r.ignored == 1 and r.skipped == []
    assert len(r.files) == 10 and not any(".hidden" in f for f in r.files)
    assert any(f.endswith(os.path.join("sub", "d_l.bmp")) for f in r.files)  # recursive
    g, _ = load(folder, image_size=(8, 8), color_mode="grayscale", verbose=0, cache=False)
    assert g.shape == (10, 1, 8, 8) and g.dtype == np.uint8
    a, _ = load(folder, image_size=(8, 8), color_mode="rgba", verbose=0, cache=False)
    assert a.shape == (10, 4, 8, 8)


@pytest.mark.parametrize("color_mode,pil_mode", [("rgb", "RGB"), ("grayscale", "L")])
def test_values_match_an_independent_pillow_decode(folder, color_mode, pil_mode):
    r = load(folder, image_size=(14, 18), color_mode=color_mode, verbose=0, cache=False)
    for img, path in zip(r.images, r.files):
        ref = reference(path, (14, 18), pil_mode)
        if path.lower().endswith((".jpg", ".jpeg")):
            # JPEGs twice the target size or more are decoded at reduced scale (draft):
            # close to the full decode, not bit-identical
            assert np.abs(img.astype(int) - ref).mean() < 4, path
        else:
            np.testing.assert_array_equal(img, ref, err_msg=path)


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    root = tmp_path / "deep"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        v = np.arange(0, 65536, 256, dtype=np.uint16).reshape(16, 16)
        Image.fromarray(v).save(root / c / "x.png")
    x, _ = load(root, image_size=(16, 16), color_mode="grayscale", verbose=0, cache=False)
    np.testing.assert_array_equal(x[0, 0], (np.arange(0, 65536, 256) >> 8).reshape(16, 16))


def test_exif_orientation_is_applied(tmp_path):
    root = tmp_path / "exif"
    a = picture(np.random.default_rng(3), 20, 10)  # stored 20 wide, 10 high
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 degrees clockwise for display
        Image.fromarray(a).save(root / c / "x.png", exif=exif)
    x, _ = load(root, image_size=(20, 10), verbose=0, cache=False)
    np.testing.assert_array_equal(x[0], np.rot90(a, k=-1).transpose(2, 0, 1))


@pytest.mark.parametrize("tall", [False, True])
def test_crop_to_aspect_ratio_geometry(tmp_path, tall):
    """80x40: green | red | blue | green quarters. The centre square is red | blue."""
    a = np.zeros((40, 80, 3), np.uint8)
    a[:, :20, 1] = a[:, 60:, 1] = 255
    a[:, 20:40, 0] = 255
    a[:, 40:60, 2] = 255
    if tall:
        a = a.transpose(1, 0, 2).copy()
    root = tmp_path / "crop"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        Image.fromarray(a).save(root / c / "x.png")
    x, _ = load(root, image_size=(10, 10), crop_to_aspect_ratio=True, verbose=0, cache=False)
    img = x[0] if not tall else x[0].transpose(0, 2, 1)
    red, blue = np.array([255, 0, 0])[:, None, None], np.array([0, 0, 255])[:, None, None]
    np.testing.assert_array_equal(img[:, :, :4], np.broadcast_to(red, (3, 10, 4)))
    np.testing.assert_array_equal(img[:, :, 6:], np.broadcast_to(blue, (3, 10, 4)))
    assert img[1].max() == 0  # no green: the side quarters were cut off
    np.testing.assert_array_equal(x[0], reference(str(root / "a" / "x.png"), (10, 10), crop=True))
    squashed, _ = load(root, image_size=(10, 10), verbose=0, cache=False)
    assert squashed[0, 1].max() == 255  # without the crop, the green stays


def test_parallel_decode_gives_the_same_bytes(folder):
    one = load(folder, image_size=(9, 11), workers=1, cache=False, verbose=0)
    three = load(folder, image_size=(9, 11), workers=3, cache=False, verbose=0)
    np.testing.assert_array_equal(one.images, three.images)
    assert one.files == three.files


# ------------------------------------------------------------------------------- cache
def test_cache_is_reused_and_invalidated(folder, monkeypatch):
    count = Counter(monkeypatch)
    first = load(folder, image_size=(8, 8), verbose=0)
    assert count.calls == 10 and not first.from_cache
    assert os.path.dirname(first.cache_file) == os.path.join(folder, ".gpuaccel-cache")
    second = load(folder, image_size=(8, 8), verbose=0)
    assert count.calls == 10 and second.from_cache  # nothing decoded
    np.testing.assert_array_equal(first.images, second.images)
    assert second.class_names == ["apple", "banana", "cherry"]  # the cache folder is no class

    def reload(expect_n):
        before = count.calls
        r = load(folder, image_size=(8, 8), verbose=0)
        assert not r.from_cache and count.calls - before == expect_n and len(r.labels) == expect_n
        again = load(folder, image_size=(8, 8), verbose=0)
        assert again.from_cache and count.calls - before == expect_n
        return r

    target = os.path.join(folder, "cherry", "h.png")
    st = os.stat(target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # touched
    reload(10)
    Image.fromarray(picture(np.random.default_rng(9), 12, 12)).save(os.path.join(folder, "cherry", "new.png"))
    reload(11)  # added
    os.remove(os.path.join(folder, "banana", "f_l.png"))
    r = reload(10)  # removed
    assert not any(f.endswith("f_l.png") for f in r.files)
    before = count.calls
    assert not load(folder, image_size=(8, 9), verbose=0).from_cache and count.calls - before == 10
    assert not load(folder, image_size=(8, 8), interpolation="nearest", verbose=0).from_cache
    assert load(folder, image_size=(8, 8), verbose=0).from_cache  # each setting has its own cache file


def test_cache_off_and_chosen_folder(folder, tmp_path):
    load(folder, image_size=(8, 8), cache=False, verbose=0)
    assert not os.path.exists(os.path.join(folder, ".gpuaccel-cache"))
    where = tmp_path / "elsewhere"
    r = load(folder, image_size=(8, 8), cache=where, verbose=0)
    assert os.path.dirname(r.cache_file) == str(where)
    assert load(folder, image_size=(8, 8), cache=where, verbose=0).from_cache


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write into read-only folders")
def test_read_only_folder_caches_under_gpuaccel_cache(folder, tmp_path):
    os.chmod(folder, 0o555)
    try:
        r = load(folder, image_size=(8, 8), verbose=0)
        assert r.cache_file.startswith(str(tmp_path / "user-cache"))
        assert load(folder, image_size=(8, 8), verbose=0).from_cache
    finally:
        os.chmod(folder, 0o755)


def test_unwritable_folder_falls_back_to_the_user_cache(folder, tmp_path, monkeypatch):
    real = image_folder._writable_dir
    monkeypatch.setattr(image_folder, "_writable_dir",
                        lambda d: False if d.endswith(image_folder.CACHE_DIRNAME) else real(d))
    r = load(folder, image_size=(8, 8), verbose=0)
    assert r.cache_file.startswith(str(tmp_path / "user-cache" / "images"))
    assert not os.path.exists(os.path.join(folder, ".gpuaccel-cache"))
    assert load(folder, image_size=(8, 8), verbose=0).from_cache


def test_cache_write_failures_warn_and_still_return_the_images(folder, monkeypatch):
    expect = load(folder, image_size=(8, 8), cache=False, verbose=0).images

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    real = image_folder._new_cache_array
    monkeypatch.setattr(image_folder, "_new_cache_array", full_disk)
    with pytest.warns(UserWarning, match="decoding into memory"):
        r = load(folder, image_size=(8, 8), verbose=0)
    np.testing.assert_array_equal(r.images, expect)
    monkeypatch.setattr(image_folder, "_new_cache_array", real)
    monkeypatch.setattr(image_folder, "_commit_cache", full_disk)
    with pytest.warns(UserWarning, match="not cached"):
        r = load(folder, image_size=(8, 8), verbose=0)
    np.testing.assert_array_equal(r.images, expect)
    assert os.listdir(os.path.join(folder, ".gpuaccel-cache")) == []  # the .part file is gone


def test_interrupted_decode_leaves_no_valid_cache(folder, monkeypatch):
    real, calls = image_folder.decode_image, []

    def dies_on_the_fifth(*a, **k):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(image_folder, "decode_image", dies_on_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        load(folder, image_size=(8, 8), workers=1, verbose=0)
    cache = os.path.join(folder, ".gpuaccel-cache")
    assert [f for f in os.listdir(cache)] == []  # no manifest, no half-written array
    monkeypatch.setattr(image_folder, "decode_image", real)
    r = load(folder, image_size=(8, 8), verbose=0)
    assert not r.from_cache and len(r.labels) == 10


# ------------------------------------------------------------------------------ errors
def test_corrupt_file_raises_naming_it(folder):
    add_corrupt(folder)
    with pytest.raises(ImageDecodeError, match=r"(bad\.png|truncated\.jpg).*cannot decode") as e:
        load(folder, image_size=(8, 8), workers=1, verbose=0)
    assert isinstance(e.value, ValueError) and e.value.reason
    assert not os.listdir(os.path.join(folder, ".gpuaccel-cache"))


def test_on_error_skip_skips_counts_and_caches(folder):
    add_corrupt(folder)
    with pytest.warns(UserWarning, match="skipped 2 file"):
        r = load(folder, image_size=(8, 8), on_error="skip", verbose=0)
    assert len(r.labels) == 10 and len(r.files) == 10
    assert sorted(os.path.basename(p) for p, _ in r.skipped) == ["bad.png", "truncated.jpg"]
    with pytest.warns(UserWarning, match="skipped 2 file"):
        again = load(folder, image_size=(8, 8), on_error="skip", verbose=0)
    assert again.from_cache and again.skipped == r.skipped
    np.testing.assert_array_equal(again.images, r.images)
    with pytest.raises(ImageDecodeError, match="bad.png|truncated.jpg"):
        load(folder, image_size=(8, 8), verbose=0)  # the cache remembers the failures


def test_folder_errors(tmp_path, folder):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(tmp_path / "nope", verbose=0)
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        load(tmp_path / "file.png", verbose=0)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no class sub-folders"):
        load(empty, verbose=0)
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(picture(np.random.default_rng(0), 8, 8)).save(flat / "a.png")
    with pytest.raises(ValueError, match="one sub-folder per class"):
        load(flat, verbose=0)
    (tmp_path / "pics" / "durian").mkdir()
    (tmp_path / "pics" / "durian" / "readme.md").write_text("no images")
    with pytest.raises(ValueError, match=r"without image files.*durian"):
        load(folder, verbose=0)
    with pytest.raises(ValueError, match=r"missing.*\['kiwi'\]"):
        load(folder, class_names=["apple", "kiwi"], verbose=0)
    noimg = tmp_path / "noimg"
    for c in ("a", "b"):
        (noimg / c).mkdir(parents=True)
        (noimg / c / "x.txt").write_text("-")
    with pytest.raises(ValueError, match="no image files"):
        load(noimg, verbose=0)


def test_one_class_needs_class_names(folder, tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    os.rename(os.path.join(folder, "apple"), one / "apple")
    with pytest.raises(ValueError, match="at least two classes"):
        load(one, image_size=(8, 8), verbose=0)
    r = load(one, image_size=(8, 8), class_names=["apple"], verbose=0)
    assert r.class_names == ["apple"] and set(r.labels.tolist()) == {0}


def test_class_names_choose_and_order(folder):
    r = load(folder, image_size=(8, 8), class_names=["cherry", "apple"], verbose=0)
    assert r.class_names == ["cherry", "apple"]
    assert r.labels.tolist() == [0] * 3 + [1] * 4
    assert all("banana" not in f for f in r.files)
    assert os.path.basename(os.path.dirname(r.files[0])) == "cherry"


@pytest.mark.parametrize("kwargs,match", [
    (dict(image_size=(0, 5)), "image_size"),
    (dict(image_size=(5,)), "image_size"),
    (dict(image_size="big"), "image_size"),
    (dict(color_mode="cmyk"), "color_mode"),
    (dict(interpolation="magic"), "interpolation"),
    (dict(on_error="ignore"), "on_error"),
    (dict(subset="train"), "subset must be"),
    (dict(subset="training"), "needs validation_split"),
    (dict(validation_split=0.2), "subset is not"),
    (dict(validation_split=0.2, subset="training"), "needs a seed"),
    (dict(validation_split=1.5, subset="training", seed=1), "strictly between 0 and 1"),
    (dict(validation_split=0.0, subset="training", seed=1), "strictly between 0 and 1"),
    (dict(validation_split=0.01, subset="both", seed=1), "validation subset empty"),
    (dict(workers=0), "workers"),
    (dict(class_names="apple"), "class_names"),
    (dict(class_names=["apple", "apple"]), "duplicates"),
])
def test_bad_arguments(folder, kwargs, match):
    with pytest.raises(ValueError, match=match):
        load(folder, **{"verbose": 0, **kwargs})


def test_pillow_missing_says_how_to_install(folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match="pip install pillow"):
        load(folder, image_size=(8, 8), verbose=0)


# ------------------------------------------------------------------- validation split
def test_validation_split_reproducible_disjoint_complete(folder):
    kw = dict(image_size=(8, 8), validation_split=0.3, seed=7, verbose=0)
    tr, va = load(folder, subset="both", **kw)
    assert len(va.files) == int(0.3 * 10) and len(tr.files) == 10 - len(va.files)
    assert not set(tr.files) & set(va.files)
    every = load(folder, image_size=(8, 8), verbose=0)
    assert sorted(tr.files + va.files) == sorted(every.files)
    # the documented rule: the last int(v*N) of default_rng(seed).permutation(N) over the sorted list
    perm = np.random.default_rng(7).permutation(10)
    assert va.files == [every.files[i] for i in sorted(perm[7:])]
    np.testing.assert_array_equal(va.images, every.images[np.sort(perm[7:])])
    np.testing.assert_array_equal(va.labels, every.labels[np.sort(perm[7:])])
    assert load(folder, subset="training", **kw).files == tr.files
    assert load(folder, subset="validation", **kw).files == va.files
    other = load(folder, subset="validation", **dict(kw, seed=8))
    assert other.files != va.files  # (seeds 7 and 8 happen to differ on 10 files)


def test_split_drops_skipped_files(folder):
    add_corrupt(folder)
    with pytest.warns(UserWarning):
        tr, va = load(folder, image_size=(8, 8), validation_split=0.5, subset="both", seed=0,
                      on_error="skip", verbose=0)
    assert len(tr.files) + len(va.files) == 10
    assert len(tr.skipped) + len(va.skipped) == 2


# --------------------------------------------------------------------------- progress
def test_progress_in_a_pipe_is_one_line(folder, capsys):
    load(folder, image_size=(8, 8), cache=False)
    out = capsys.readouterr().out
    assert "Found 10 files belonging to 3 classes (1 non-image file(s) ignored)." in out
    assert "\r" not in out and out.count("Decoding 10/10") == 1
    load(folder, image_size=(8, 8), cache=False, verbose=0)
    assert capsys.readouterr().out == ""


# ----------------------------------------------------------------------------- writing
@pytest.mark.parametrize("channels", [None, 1, 3])
def test_write_image_folder_round_trip(tmp_path, channels):
    rng = np.random.default_rng(1)
    shape = (13, 12, 10) if channels is None else (13, channels, 12, 10)
    x = rng.integers(0, 256, shape, dtype=np.uint8)
    y = rng.integers(0, 3, 13)
    y[:3] = [0, 1, 2]
    names = datasets.write_image_folder(x, y, tmp_path / "w", class_names=["zeta", "alpha/beta", "mu"])
    assert names == ["zeta", "alpha_beta", "mu"]
    mode = "rgb" if channels == 3 else "grayscale"
    r = load(tmp_path / "w", image_size=(12, 10), color_mode=mode, class_names=names, verbose=0, cache=False)
    order = np.argsort(y, kind="stable")
    expect = x[order] if channels is not None else x[order][:, None]
    np.testing.assert_array_equal(r.images, expect)
    np.testing.assert_array_equal(r.labels, y[order])


def test_write_image_folder_errors(tmp_path):
    x = np.zeros((2, 3, 4, 4), np.uint8)
    with pytest.raises(TypeError, match="uint8"):
        datasets.write_image_folder(x.astype(np.float32), [0, 1], tmp_path / "a")
    with pytest.raises(ValueError, match="shape"):
        datasets.write_image_folder(np.zeros((2, 2, 4, 4), np.uint8), [0, 1], tmp_path / "a")
    with pytest.raises(ValueError, match="labels"):
        datasets.write_image_folder(x, [0, 5], tmp_path / "a", class_names=["a", "b"])
    with pytest.raises(ValueError, match="format"):
        datasets.write_image_folder(x, [0, 1], tmp_path / "a", format="tiff")
    assert datasets.write_image_folder(x, [0, 1], tmp_path / "b") == ["0", "1"]
    with pytest.raises(FileExistsError, match="not empty"):
        datasets.write_image_folder(x, [0, 1], tmp_path / "b")


@pytest.mark.skipif(not HAVE_DEBIAN, reason=f"Fashion-MNIST not in {datasets.DEBIAN_DIR} "
                                            "(apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_to_image_folder(tmp_path):
    fm = datasets.fashion_mnist
    fm.to_image_folder(tmp_path / "fm", split="test", limit=60)
    assert sorted(os.listdir(tmp_path / "fm")) == sorted(fm.folder_names)
    assert "T-shirt_top" in fm.folder_names and "Ankle_boot" in fm.folder_names
    r = load(tmp_path / "fm", image_size=(28, 28), color_mode="grayscale", class_names=fm.folder_names,
             verbose=0, cache=False)
    _, (xt, yt) = fm.load_data()
    order = np.argsort(yt[:60], kind="stable")
    np.testing.assert_array_equal(r.images[:, 0], xt[:60][order])
    np.testing.assert_array_equal(r.labels, yt[:60][order])
    with pytest.raises(ValueError, match="split"):
        fm.to_image_folder(tmp_path / "x", split="val")


def test_digits_to_image_folder(tmp_path):
    try:
        import sklearn  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install scikit-learn"):
            datasets.digits_to_image_folder(tmp_path / "d")
        return
    datasets.digits_to_image_folder(tmp_path / "d")
    x, y = load(tmp_path / "d", image_size=(8, 8), color_mode="grayscale", verbose=0, cache=False)
    assert x.shape == (1797, 1, 8, 8) and sorted(set(y.tolist())) == list(range(10))


# ------------------------------------------------------------------------------ trains
def test_a_loaded_folder_trains(folder):
    from gpuaccel.layers import Conv2D, Dense, GlobalAveragePooling2D

    x, y = load(folder, image_size=(16, 16), verbose=0)
    model = ga.Sequential([Conv2D(4, 3, activation="relu"), GlobalAveragePooling2D(), Dense(3)],
                          input_shape=(3, 16, 16), seed=0)
    model.compile(optimizer=ga.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], device="cpu")
    hist = model.fit((x / 255).astype(np.float32), y, epochs=1, batch_size=4, verbose=0, seed=0)
    assert np.isfinite(hist.history["loss"][0])
    assert model.predict((x / 255).astype(np.float32)).shape == (10, 3)
