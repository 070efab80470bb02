"""gpuaccel.datasets: the real Fashion-MNIST, the strict IDX parser, the search order.

No test touches the network: GPUACCEL_NO_DOWNLOAD=1 is set for every test here.
"""
import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from gpuaccel import datasets
from gpuaccel.datasets import fashion_mnist, load_idx

STEMS = list(fashion_mnist.files.values())
HAVE_DEBIAN = all(os.path.isfile(os.path.join(datasets.DEBIAN_DIR, s + ".gz")) for s in STEMS)
needs_debian = pytest.mark.skipif(
    not HAVE_DEBIAN, reason=f"Fashion-MNIST not in {datasets.DEBIAN_DIR} (apt-get install dataset-fashion-mnist)")


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No downloads, an empty cache folder, no $GPUACCEL_DATA."""
    monkeypatch.setenv("GPUACCEL_NO_DOWNLOAD", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("GPUACCEL_DATA", raising=False)


def idx_bytes(array, magic_type=0x08):
    """Encode ``array`` (uint8) as an IDX file."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, magic_type, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    return header + array.tobytes()


def write_set(folder, n_train=6, n_test=4, gz=True, seed=0):
    """Write a small valid Fashion-MNIST-like set into ``folder``; return the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    os.makedirs(folder, exist_ok=True)
    for stem, a in arrays.items():
        blob = idx_bytes(a)
        name = stem + (".gz" if gz else "")
        with open(os.path.join(folder, name), "wb") as f:
            f.write(gzip.compress(blob) if gz else blob)
    return arrays


def replace(folder, stem, blob, gz=True):
    """Overwrite one file of a set with ``blob`` (gzipped if ``gz``)."""
    with open(os.path.join(folder, stem + ".gz"), "wb") as f:
        f.write(gzip.compress(blob) if gz else blob)


# --------------------------------------------------------------------- real data
@needs_debian
def test_real_data_shapes_dtypes_labels():
    (x, y), (xt, yt) = fashion_mnist.load_data()
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (60000,) and y.dtype == np.uint8
    assert xt.shape == (10000, 28, 28) and xt.dtype == np.uint8
    assert yt.shape == (10000,) and yt.dtype == np.uint8
    assert np.array_equal(np.bincount(y), np.full(10, 6000))
    assert np.array_equal(np.bincount(yt), np.full(10, 1000))
    assert x.max() == 255 and x.flags.writeable


@needs_debian
def test_debian_files_are_the_canonical_content():
    """Debian recompressed the archives; the IDX content must equal Zalando's original."""
    for stem in STEMS:
        with open(os.path.join(datasets.DEBIAN_DIR, stem + ".gz"), "rb") as f:
            blob = f.read()
        assert hashlib.sha256(gzip.decompress(blob)).hexdigest() == fashion_mnist.RAW_SHA256[stem]
        assert fashion_mnist._accept(stem, blob)


def test_classes():
    assert len(datasets.classes) == 10 and datasets.classes[9] == "Ankle boot"


# ----------------------------------------------------------------- small valid sets
@pytest.mark.parametrize("gz", [True, False])
def test_small_set_from_path(tmp_path, gz):
    arrays = write_set(tmp_path / "d", gz=gz)
    (x, y), (xt, yt) = fashion_mnist.load_data(path=tmp_path / "d")
    assert np.array_equal(x, arrays["train-images-idx3-ubyte"])
    assert np.array_equal(y, arrays["train-labels-idx1-ubyte"])
    assert np.array_equal(xt, arrays["t10k-images-idx3-ubyte"])
    assert np.array_equal(yt, arrays["t10k-labels-idx1-ubyte"])


def test_path_beats_env(tmp_path, monkeypatch):
    write_set(tmp_path / "a", n_train=3, seed=1)
    write_set(tmp_path / "b", n_train=5, seed=2)
    monkeypatch.setenv("GPUACCEL_DATA", str(tmp_path / "b"))
    (x, _), _ = fashion_mnist.load_data(path=tmp_path / "a")
    assert len(x) == 3
    (x, _), _ = fashion_mnist.load_data()
    assert len(x) == 5


def test_env_beats_debian_and_subfolder(tmp_path, monkeypatch):
    write_set(tmp_path / "root" / "fashion-mnist", n_train=7)
    monkeypatch.setenv("GPUACCEL_DATA", str(tmp_path / "root"))
    (x, _), _ = fashion_mnist.load_data()
    assert len(x) == 7


def test_cache_is_searched(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "DEBIAN_DIR", str(tmp_path / "nodebian"))
    write_set(tmp_path / "cache" / "gpuaccel" / "fashion-mnist", n_train=2)
    (x, _), _ = fashion_mnist.load_data()
    assert len(x) == 2


def test_not_found_lists_every_place(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "DEBIAN_DIR", str(tmp_path / "nodebian"))
    monkeypatch.setenv("GPUACCEL_DATA", str(tmp_path / "envdata"))
    os.makedirs(tmp_path / "envdata")
    write_set(tmp_path / "envdata")
    os.remove(tmp_path / "envdata" / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(FileNotFoundError) as e:
        fashion_mnist.load_data()
    msg = str(e.value)
    for place in (str(tmp_path / "envdata"), str(tmp_path / "nodebian"), fashion_mnist.cache_dir()):
        assert place in msg
    assert "t10k-labels-idx1-ubyte" in msg
    assert "GPUACCEL_NO_DOWNLOAD" in msg
    assert "apt-get install dataset-fashion-mnist" in msg


def test_missing_explicit_path_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fashion_mnist.load_data(path=tmp_path / "nowhere")


# ------------------------------------------------------------------ corrupted files
def test_truncated_images(tmp_path):
    arrays = write_set(tmp_path)
    replace(tmp_path, "train-images-idx3-ubyte", idx_bytes(arrays["train-images-idx3-ubyte"])[:-100])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz: truncated"):
        fashion_mnist.load_data(path=tmp_path)


def test_trailing_bytes(tmp_path):
    arrays = write_set(tmp_path)
    replace(tmp_path, "t10k-labels-idx1-ubyte", idx_bytes(arrays["t10k-labels-idx1-ubyte"]) + b"\0")
    with pytest.raises(ValueError, match="trailing bytes"):
        fashion_mnist.load_data(path=tmp_path)


def test_truncated_header(tmp_path):
    write_set(tmp_path)
    replace(tmp_path, "train-labels-idx1-ubyte", b"\0\0\x08")
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte\.gz: truncated"):
        fashion_mnist.load_data(path=tmp_path)


def test_bad_magic(tmp_path):
    arrays = write_set(tmp_path)
    blob = bytearray(idx_bytes(arrays["train-labels-idx1-ubyte"]))
    blob[0] = 0x42
    replace(tmp_path, "train-labels-idx1-ubyte", bytes(blob))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte\.gz: bad IDX magic"):
        fashion_mnist.load_data(path=tmp_path)


def test_images_and_labels_swapped(tmp_path):
    """A label file where images belong has a valid IDX header but the wrong magic."""
    arrays = write_set(tmp_path)
    replace(tmp_path, "train-images-idx3-ubyte", idx_bytes(arrays["train-labels-idx1-ubyte"]))
    with pytest.raises(ValueError, match="expected 0x00000803"):
        fashion_mnist.load_data(path=tmp_path)


def test_bad_gzip(tmp_path):
    write_set(tmp_path)
    with open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(b"\x1f\x8b\x08\x00garbage that is not deflate data")
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz: corrupted or truncated gzip"):
        fashion_mnist.load_data(path=tmp_path)


def test_truncated_gzip(tmp_path):
    write_set(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="gzip"):
        fashion_mnist.load_data(path=tmp_path)


def test_count_mismatch(tmp_path):
    write_set(tmp_path, n_train=6)
    replace(tmp_path, "train-labels-idx1-ubyte", idx_bytes(np.zeros(5)))
    with pytest.raises(ValueError, match="5 labels but .* has 6 images"):
        fashion_mnist.load_data(path=tmp_path)


def test_wrong_dims(tmp_path):
    write_set(tmp_path)
    replace(tmp_path, "t10k-images-idx3-ubyte", idx_bytes(np.zeros((4, 28, 27))))
    with pytest.raises(ValueError, match=r"expected images of shape \(N, 28, 28\)"):
        fashion_mnist.load_data(path=tmp_path)


def test_label_out_of_range(tmp_path):
    write_set(tmp_path, n_test=4)
    replace(tmp_path, "t10k-labels-idx1-ubyte", idx_bytes([1, 2, 10, 3]))
    with pytest.raises(ValueError, match="label value 10 out of range"):
        fashion_mnist.load_data(path=tmp_path)


# ------------------------------------------------------------------------ load_idx
def test_load_idx_other_types(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    blob = bytes([0, 0, 0x0D, 2]) + np.array(a.shape, ">u4").tobytes() + a.astype(">f4").tobytes()
    (tmp_path / "f.idx").write_bytes(blob)
    out = load_idx(tmp_path / "f.idx")
    assert out.dtype == np.float32 and out.dtype.isnative and np.array_equal(out, a)


def test_load_idx_unknown_type(tmp_path):
    (tmp_path / "f.idx").write_bytes(bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 5]))
    with pytest.raises(ValueError, match="bad IDX magic"):
        load_idx(tmp_path / "f.idx")


# ------------------------------------------------------------------------- download
def test_download_verifies_and_writes_atomically(tmp_path, monkeypatch):
    """Stand in for the network: a correct archive is kept, a wrong one is refused."""
    good = {s: gzip.compress(b"payload " + s.encode()) for s in STEMS}
    monkeypatch.setattr(fashion_mnist, "GZ_SHA256", {s: hashlib.sha256(b).hexdigest() for s, b in good.items()})

    class Response:
        def __init__(self, blob):
            self.blob = blob

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            return self.blob

    served = dict(good)
    monkeypatch.setattr(datasets.urllib.request, "urlopen",
                        lambda url, timeout: Response(served[url.rsplit("/", 1)[1][:-3]]))
    found = fashion_mnist.download(str(tmp_path / "dl"))
    assert sorted(os.listdir(tmp_path / "dl")) == sorted(s + ".gz" for s in STEMS)
    assert all(Path(found[s]).read_bytes() == good[s] for s in STEMS)

    served = {s: b"tampered" for s in STEMS}
    with pytest.raises(RuntimeError, match="SHA-256 mismatch"):
        fashion_mnist.download(str(tmp_path / "dl2"))
    assert os.listdir(tmp_path / "dl2") == []
