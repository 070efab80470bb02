"""Datasets, Keras style: ``(x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()``.

Your own images: ``x, y = image_dataset_from_directory(path, image_size=(h, w))`` (one
sub-folder per class; see gpuaccel/image_folder.py), and the other way round
``write_image_folder(x, y, path)``, ``fashion_mnist.to_image_folder(path)``,
``digits_to_image_folder(path)`` (scikit-learn's digits, when it is installed).

Fashion-MNIST is looked for, in this order:

1. the ``path`` argument of ``load_data`` (a folder; if given, it must hold the files),
2. ``$GPUACCEL_DATA`` (the folder itself or its ``fashion-mnist/`` sub-folder),
3. the Debian package folder ``/usr/share/datasets/fashion-mnist/``
   (``apt-get install dataset-fashion-mnist``),
4. the user cache ``$XDG_CACHE_HOME/gpuaccel/fashion-mnist`` (default ``~/.cache/...``),
5. a download from the canonical URLs into that cache, checked by SHA-256
   (set ``GPUACCEL_NO_DOWNLOAD=1`` to forbid it).

A folder may hold each file gzipped (``name.gz``) or plain (``name``). The IDX parser is
strict: a truncated or corrupted file raises ``ValueError`` naming the file and the fault.

About the checksums: ``GZ_SHA256`` are the SHA-256 of the ``.gz`` files as Zalando
publishes them (the same values as tensorflow_datasets and torchvision use).
Debian's package recompresses the files without the original gzip header name, so its
``.gz`` files hash differently; their *contents* are byte-identical to the originals,
which ``RAW_SHA256`` (SHA-256 of the uncompressed IDX files) pins down. A download is
accepted when either the archive or its uncompressed content matches.
"""
import gzip
import hashlib
import os
import tempfile
import urllib.request
import zlib

import numpy as np

from .image_folder import (ImageDecodeError, ImageFolder, image_dataset_from_directory,  # noqa: F401
                           safe_folder_name, write_image_folder)

__all__ = ["fashion_mnist", "load_idx", "classes", "DEBIAN_DIR", "image_dataset_from_directory",
           "write_image_folder", "ImageFolder", "ImageDecodeError", "digits_to_image_folder"]

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
INSTALL_HINT = "apt-get install dataset-fashion-mnist"

# IDX type codes -> big-endian NumPy dtypes.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path):
    """Return the bytes of ``path``, gunzipped when the file starts with the gzip magic."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{path}: corrupted or truncated gzip data ({e or type(e).__name__})") from None


def load_idx(path, magic=None):
    """Read one IDX file (optionally gzipped) into a NumPy array.

    The header (two zero bytes, a type code, the number of dimensions, then one
    big-endian uint32 per dimension) and the exact file length are checked; ``magic``
    (e.g. ``0x803`` for uint8 images) additionally pins the type code and rank.
    Raises ``ValueError`` naming ``path`` on any inconsistency.
    """
    path = os.fspath(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path}: truncated IDX file ({len(data)} bytes, no complete header)")
    found = int.from_bytes(data[:4], "big")
    if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES or data[3] == 0:
        raise ValueError(f"{path}: bad IDX magic number 0x{found:08x} (not an IDX file)")
    if magic is not None and found != magic:
        raise ValueError(f"{path}: bad IDX magic number 0x{found:08x}, expected 0x{magic:08x}")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes, {ndim} dimensions need {header})")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise ValueError(f"{path}: {what}: header says shape {dims} ({expected} bytes), file has {len(data)} bytes")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))  # native byte order, writable copy


class _FashionMNIST:
    """Fashion-MNIST (Zalando): 60,000 train and 10,000 test 28x28 grey images, 10 classes."""

    name = "fashion-mnist"
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    files = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
             "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}
    urls = ["https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"]
    GZ_SHA256 = {
        "train-images-idx3-ubyte": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    }
    RAW_SHA256 = {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    }

    # ---------------------------------------------------------------- search
    def cache_dir(self):
        """The user cache folder: ``$XDG_CACHE_HOME/gpuaccel/fashion-mnist`` or ``~/.cache/...``."""
        root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return os.path.join(root, "gpuaccel", self.name)

    def _find(self, folder):
        """Map each file stem to its path in ``folder`` (``.gz`` preferred); return (found, missing)."""
        found, missing = {}, []
        for stem in self.files.values():
            for candidate in (stem + ".gz", stem):
                full = os.path.join(folder, candidate)
                if os.path.isfile(full):
                    found[stem] = full
                    break
            else:
                missing.append(stem + "[.gz]")
        return found, missing

    def _candidates(self):
        """The folders to search after the path argument, as (label, folder or None, why not)."""
        out = []
        env = os.environ.get("GPUACCEL_DATA")
        if env:
            out.append(("$GPUACCEL_DATA", os.path.join(env, self.name), None))
            out.append(("$GPUACCEL_DATA", env, None))
        else:
            out.append(("$GPUACCEL_DATA", None, "not set"))
        out.append((f"Debian package ({INSTALL_HINT})", DEBIAN_DIR, None))
        out.append(("user cache", self.cache_dir(), None))
        return out

    @staticmethod
    def _why_not(folder, missing):
        if not os.path.isdir(folder):
            return "no such folder"
        return "missing " + ", ".join(missing)

    def locate(self, path=None):
        """Return ``{stem: file path}`` for a folder holding all four files.

        Downloads into the cache as a last resort. Raises ``FileNotFoundError`` listing
        every place looked at when no source has the data.
        """
        if path is not None:
            folder = os.fspath(path)
            found, missing = self._find(folder)
            if not missing:
                return found
            raise FileNotFoundError(
                f"Fashion-MNIST: load_data(path={folder!r}) was given but that folder "
                f"{'does not exist' if not os.path.isdir(folder) else 'lacks ' + ', '.join(missing)}. "
                f"It must hold {self._file_list()}. "
                f"Leave path=None to search $GPUACCEL_DATA, {DEBIAN_DIR} and the cache "
                f"(install with: {INSTALL_HINT}).")
        looked = []
        for label, folder, reason in self._candidates():
            if folder is None:
                looked.append(f"{label}: {reason}")
                continue
            found, missing = self._find(folder)
            if not missing:
                return found
            looked.append(f"{label} {folder}: {self._why_not(folder, missing)}")
        cache = self.cache_dir()
        if os.environ.get("GPUACCEL_NO_DOWNLOAD", "").strip() not in ("", "0"):
            looked.append("download: disabled by GPUACCEL_NO_DOWNLOAD")
        else:
            try:
                return self.download(cache)
            except (OSError, RuntimeError) as e:
                looked.append(f"download into {cache}: failed ({e})")
        raise FileNotFoundError(
            "Fashion-MNIST not found. Looked in:\n  - " + "\n  - ".join(looked) +
            f"\nInstall it with:  {INSTALL_HINT}\n"
            f"or put {self._file_list()} in a folder and pass load_data(path=FOLDER) "
            "or set GPUACCEL_DATA=FOLDER.")

    def _file_list(self):
        return ", ".join(s + ".gz" for s in self.files.values())

    # -------------------------------------------------------------- download
    def _accept(self, stem, blob):
        """True when ``blob`` is the canonical archive, or a recompression of the same content."""
        if hashlib.sha256(blob).hexdigest() == self.GZ_SHA256[stem]:
            return True
        try:
            return hashlib.sha256(gzip.decompress(blob)).hexdigest() == self.RAW_SHA256[stem]
        except (OSError, EOFError, zlib.error):
            return False

    def download(self, folder):
        """Fetch the missing files into ``folder``, verify SHA-256, write atomically; return paths."""
        os.makedirs(folder, exist_ok=True)
        found, _ = self._find(folder)
        for stem in self.files.values():
            if stem in found:
                continue
            errors = []
            for base in self.urls:
                url = base + stem + ".gz"
                try:
                    with urllib.request.urlopen(url, timeout=60) as response:
                        blob = response.read()
                except OSError as e:
                    errors.append(f"{url}: {e}")
                    continue
                if not self._accept(stem, blob):
                    errors.append(f"{url}: SHA-256 mismatch (got {hashlib.sha256(blob).hexdigest()})")
                    continue
                target = os.path.join(folder, stem + ".gz")
                fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{stem}.", suffix=".part")
                try:
                    with os.fdopen(fd, "wb") as f:
                        f.write(blob)
                    os.replace(tmp, target)
                except BaseException:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
                    raise
                found[stem] = target
                break
            else:
                raise RuntimeError("; ".join(errors))
        return found

    # ------------------------------------------------------------------ load
    def _load_pair(self, images_path, labels_path):
        x = load_idx(images_path, magic=0x00000803)
        if x.shape[1:] != (28, 28) or x.shape[0] == 0:
            raise ValueError(f"{images_path}: expected images of shape (N, 28, 28) with N >= 1, got {x.shape}")
        y = load_idx(labels_path, magic=0x00000801)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"{labels_path}: {y.shape[0]} labels but {images_path} has {x.shape[0]} images")
        if y.size and int(y.max()) >= len(self.classes):
            raise ValueError(f"{labels_path}: label value {int(y.max())} out of range 0..{len(self.classes) - 1}")
        return x, y

    def load_data(self, path=None):
        """Return ``(x_train, y_train), (x_test, y_test)``: uint8 (N, 28, 28) images, uint8 (N,) labels.

        ``path``: a folder holding the four IDX files (gzipped or not); see the module
        docstring for where the data is looked for otherwise.
        """
        found = self.locate(path)
        f = {key: found[stem] for key, stem in self.files.items()}
        train = self._load_pair(f["x_train"], f["y_train"])
        test = self._load_pair(f["x_test"], f["y_test"])
        return train, test

    @property
    def folder_names(self):
        """The class names as folder names ('T-shirt/top' -> 'T-shirt_top'), in label order."""
        return [safe_folder_name(c) for c in self.classes]

    def to_image_folder(self, path, split="train", limit=None, format="png", exist_ok=False, data_path=None):
        """Write Fashion-MNIST as image files: ``path/<class>/<index>.png``, 28x28 grey.

        ``split``: 'train' or 'test'; ``limit``: only the first ``limit`` images (None: all);
        ``data_path``: as ``load_data(path=...)`` (where the IDX files are). The class folders
        are ``folder_names`` ('T-shirt_top', 'Trouser', ...), which do not sort in label order:
        load with ``image_dataset_from_directory(path, (28, 28), 'grayscale',
        class_names=fashion_mnist.folder_names)`` to get the original labels back.
        Returns ``path``.
        """
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
            raise ValueError(f"limit must be a positive int or None, got {limit!r}")
        train, test = self.load_data(data_path)
        x, y = train if split == "train" else test
        if limit is not None:
            x, y = x[:limit], y[:limit]
        write_image_folder(x, y, path, class_names=self.classes, format=format, exist_ok=exist_ok)
        return os.fspath(path)

    def __repr__(self):
        return "<gpuaccel.datasets.fashion_mnist: load_data(path=None), classes, to_image_folder(path)>"


def digits_to_image_folder(path, format="png", exist_ok=False):
    """Write scikit-learn's bundled digits (1,797 8x8 grey images, classes '0'..'9') as an
    image folder, scaled from 0..16 to 0..255. Needs scikit-learn, which gpuaccel does not
    depend on: ImportError when it is missing. Nothing is downloaded. Returns ``path``."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError(f"digits_to_image_folder needs scikit-learn ({e}): pip install scikit-learn") from None
    d = load_digits()
    x = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    write_image_folder(x, d.target.astype(np.int64), path, class_names=[str(i) for i in range(10)],
                       format=format, exist_ok=exist_ok)
    return os.fspath(path)


fashion_mnist = _FashionMNIST()
classes = fashion_mnist.classes
