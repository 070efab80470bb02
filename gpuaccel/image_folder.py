"""Your own images: a folder of class sub-folders -> uint8 NCHW arrays (Keras's convention).

``ga.datasets.image_dataset_from_directory(path, image_size=(h, w))`` reads::

    path/
      cats/  a.jpg  b.png  more/c.bmp ...      <- label 0 (class names sorted)
      dogs/  d.gif  ...                        <- label 1

and returns an :class:`ImageFolder`, which unpacks as ``x, y = ...``: ``x`` uint8
(N, C, H, W), ``y`` int32 (N,). Decoding is Pillow's (in worker threads, which
run in parallel because Pillow releases the GIL while it decodes and resizes).
The decoded array is cached in a ``.npy`` file beside a JSON manifest that lists
every file with its size and mtime; the next call with the same settings on an
unchanged folder reads that file as a memory map instead of decoding. See
ARCHITECTURE.md, "Your own images".

``write_image_folder(images, labels, path)`` writes arrays the other way round.
"""
import concurrent.futures
import hashlib
import json
import math
import os
import re
import tempfile
import time
import uuid
import warnings

import numpy as np

from ._extras import hint

__all__ = ["image_dataset_from_directory", "write_image_folder", "ImageFolder", "ImageDecodeError",
           "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
CACHE_FORMAT = "gpuaccel-image-cache-1"
CACHE_DIRNAME = ".gpuaccel-cache"
COLOR_MODES = {"rgb": ("RGB", 3), "grayscale": ("L", 1), "rgba": ("RGBA", 4)}
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "area", "lanczos")
SUBSETS = (None, "training", "validation", "both")
PILLOW_HINT = hint("images", "pillow")


class ImageDecodeError(ValueError):
    """A file that Pillow could not read: ``path`` and Pillow's ``reason``."""

    def __init__(self, path, reason):
        super().__init__(f"{path}: cannot decode image ({reason}); "
                         "pass on_error='skip' to leave such files out")
        self.path, self.reason = path, reason


class ImageFolder:
    """The result of :func:`image_dataset_from_directory`; unpacks as ``(images, labels)``.

    - ``images``: uint8 (N, C, H, W). A read-only memory map of the cache file when the
      whole folder was asked for (subset=None) and cached, else an in-memory array.
    - ``labels``: int32 (N,), indices into ``class_names``.
    - ``class_names``: list of str, label order.
    - ``files``: the N image paths (absolute), row by row.
    - ``skipped``: list of (path, reason) for files left out with on_error='skip'.
    - ``ignored``: how many files in the class folders were not images (by extension).
    - ``cache_file``: the ``.npy`` read or written (None without a cache);
      ``from_cache``: True when nothing was decoded this time.
    """

    __slots__ = ("images", "labels", "class_names", "files", "skipped", "ignored", "cache_file", "from_cache")

    def __init__(self, images, labels, class_names, files, skipped, ignored, cache_file=None, from_cache=False):
        self.images, self.labels, self.class_names, self.files = images, labels, class_names, files
        self.skipped, self.ignored, self.cache_file, self.from_cache = skipped, ignored, cache_file, from_cache

    def __iter__(self):
        return iter((self.images, self.labels))

    def __len__(self):
        return 2

    def __getitem__(self, i):
        return (self.images, self.labels)[i]

    def __repr__(self):
        return (f"ImageFolder(images={self.images.shape} {self.images.dtype}, {len(self.class_names)} classes "
                f"{self.class_names}, skipped={len(self.skipped)}, ignored={self.ignored}, "
                f"from_cache={self.from_cache})")


# ----------------------------------------------------------------------------- Pillow
def _pil():
    """PIL.Image and PIL.ImageOps, or an ImportError saying how to install Pillow."""
    try:
        from PIL import Image, ImageOps
    except ImportError as e:
        raise ImportError(f"reading and writing image files needs Pillow ({e}): {PILLOW_HINT}") from None
    return Image, ImageOps


def _resample(Image, interpolation):
    R = Image.Resampling
    return {"nearest": R.NEAREST, "bilinear": R.BILINEAR, "bicubic": R.BICUBIC,
            "area": R.BOX, "lanczos": R.LANCZOS}[interpolation]


def _crop_box(width, height, th, tw):
    """The centred box of aspect tw:th, as large as fits in width x height."""
    cw = min(width, max(1, round(height * tw / th)))
    ch = min(height, max(1, round(width * th / tw)))
    left, top = (width - cw) // 2, (height - ch) // 2
    return left, top, left + cw, top + ch


def _to_mode(Image, img, mode):
    """``img`` converted to ``mode``; 16/32-bit grey is scaled to 8 bits instead of clipped."""
    if img.mode == mode:
        return img
    if img.mode.startswith("I;16") or img.mode == "I":
        a = np.asarray(img).astype(np.int64)
        if img.mode == "I" and a.size and a.max() <= 255 and a.min() >= 0:
            a8 = a.astype(np.uint8)
        else:
            a8 = (np.clip(a, 0, 65535) >> 8).astype(np.uint8)
        img = Image.fromarray(a8, "L")
        return img if mode == "L" else img.convert(mode)
    if img.mode == "P" and mode != "RGBA":
        img = img.convert("RGBA")  # palette transparency goes through RGBA without a warning
    return img.convert(mode)


def decode_image(path, image_size, color_mode="rgb", interpolation="bilinear", crop_to_aspect_ratio=False):
    """One file -> uint8 (C, H, W): first frame, EXIF orientation applied, converted, resized.

    JPEGs much larger than the target are decoded at 1/2, 1/4 or 1/8 scale by the JPEG
    decoder itself (Pillow's ``draft``), never below the target size, before the resize.
    Pillow's exceptions propagate; the caller turns them into ImageDecodeError.
    """
    Image, ImageOps = _pil()
    th, tw = image_size
    mode = COLOR_MODES[color_mode][0]
    with Image.open(path) as img:
        if img.format == "JPEG" and interpolation != "nearest":
            width, height = img.size
            swap = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # stored transposed
            dh, dw = (tw, th) if swap else (th, tw)
            if crop_to_aspect_ratio:
                l, t, r, b = _crop_box(width, height, dh, dw)
                need = (math.ceil(width * dw / (r - l)), math.ceil(height * dh / (b - t)))
            else:
                need = (dw, dh)
            # decode at 1/2, 1/4 or 1/8 scale only down to twice the target size (Pillow's
            # thumbnail(reducing_gap=2) rule): the DCT scaling alone filters worse than
            # the resize that follows, and with this margin the result stays close.
            need = (2 * need[0], 2 * need[1])
            if width >= 2 * need[0] and height >= 2 * need[1]:
                img.draft(img.mode, need)
        img = ImageOps.exif_transpose(img)
        img = _to_mode(Image, img, mode)
        if crop_to_aspect_ratio:
            box = _crop_box(img.width, img.height, th, tw)
            if box != (0, 0, img.width, img.height):
                img = img.crop(box)  # cut first: resize(box=) would filter in pixels from outside
        if img.size != (tw, th):
            img = img.resize((tw, th), _resample(Image, interpolation))
        a = np.asarray(img)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


# --------------------------------------------------------------------------- scanning
def _is_hidden(name):
    return name.startswith(".")


def _scan(root, class_names, skip_dir):
    """Return (class_names, files per class as sorted relative paths, ignored count)."""
    if not os.path.exists(root):
        raise FileNotFoundError(f"image folder {root!r} does not exist")
    if not os.path.isdir(root):
        raise NotADirectoryError(f"image folder {root!r} is not a directory (expected one sub-folder per class)")
    entries = sorted(e for e in os.listdir(root) if not _is_hidden(e))
    subdirs = [e for e in entries if os.path.isdir(os.path.join(root, e))
               and os.path.realpath(os.path.join(root, e)) != skip_dir]
    root_files = [e for e in entries if os.path.isfile(os.path.join(root, e))]
    if class_names is None:
        if not subdirs:
            images = [e for e in root_files if e.lower().endswith(IMAGE_EXTENSIONS)]
            if images:
                raise ValueError(
                    f"{root!r} holds {len(images)} image file(s) but no sub-folders: the convention is one "
                    f"sub-folder per class ({os.path.join(root, 'cats')}/..., {os.path.join(root, 'dogs')}/...), "
                    "the folder name being the class name")
            raise ValueError(f"{root!r} has no class sub-folders (expected one sub-folder per class, "
                             "each holding that class's images)")
        class_names = subdirs
    else:
        missing = [c for c in class_names if c not in subdirs]
        if missing:
            raise ValueError(f"class_names names folder(s) missing from {root!r}: {missing}; "
                             f"its sub-folders are {subdirs}")
    ignored = len(root_files)  # files beside the class folders are not samples
    per_class = []
    for name in class_names:
        top = os.path.join(root, name)
        found = []
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d)
                                 and os.path.realpath(os.path.join(dirpath, d)) != skip_dir)
            for f in filenames:
                if _is_hidden(f):
                    continue
                if f.lower().endswith(IMAGE_EXTENSIONS):
                    found.append(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/"))
                else:
                    ignored += 1
        per_class.append(sorted(found))
    empty = [c for c, files in zip(class_names, per_class) if not files]
    if empty and len(empty) == len(class_names):
        raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in the class folders of {root!r} "
                         f"({len(class_names)} folders, {ignored} other file(s))")
    if empty:
        raise ValueError(f"class folder(s) without image files in {root!r}: {empty} "
                         "(remove them or pass class_names= without them)")
    return list(class_names), per_class, ignored


# ----------------------------------------------------------------------------- checks
def _check_args(image_size, color_mode, validation_split, subset, seed, class_names, interpolation,
                on_error, workers, verbose, cache):
    if (not isinstance(image_size, (tuple, list)) or len(image_size) != 2
            or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in image_size)):
        raise ValueError(f"image_size must be (height, width), two positive ints, got {image_size!r}")
    if color_mode not in COLOR_MODES:
        raise ValueError(f"color_mode must be one of {list(COLOR_MODES)}, got {color_mode!r}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {list(INTERPOLATIONS)}, got {interpolation!r}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {list(SUBSETS)}, got {subset!r}")
    if validation_split is not None:
        if (isinstance(validation_split, bool) or not isinstance(validation_split, (int, float, np.floating))
                or not 0 < validation_split < 1):
            raise ValueError(f"validation_split must be a float strictly between 0 and 1, got {validation_split!r}")
        if subset is None:
            raise ValueError("validation_split is given but subset is not: pass subset='training', "
                             "'validation' or 'both'")
        if seed is None:
            raise ValueError("validation_split needs a seed (an int), so that the training and validation "
                             "subsets are the same split in every call and never overlap")
    elif subset is not None:
        raise ValueError(f"subset={subset!r} needs validation_split (a float between 0 and 1)")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if class_names is not None:
        if isinstance(class_names, str) or not all(isinstance(c, str) and c for c in class_names):
            raise ValueError(f"class_names must be a list of folder names, got {class_names!r}")
        if len(set(class_names)) != len(class_names):
            raise ValueError(f"class_names has duplicates: {class_names!r}")
        if not class_names:
            raise ValueError("class_names is empty")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, (int, np.integer))
                                or workers < 1):
        raise ValueError(f"workers must be a positive int or None, got {workers!r}")
    if verbose not in (0, 1, False, True):
        raise ValueError(f"verbose must be 0 or 1, got {verbose!r}")
    if not (cache is True or cache is False or isinstance(cache, (str, os.PathLike))):
        raise ValueError(f"cache must be True, False or a folder, got {cache!r}")


# Below this mean file size, decoding stays in one thread: for tiny images (28x28 PNGs,
# ~0.4 KiB) the per-file Python work holds the GIL most of the time, and a second thread
# only adds contention (9.4k images/s with one thread, 5.8k with two; never faster with
# two in three runs); 256x256 JPEGs (~18 KiB) decoded 1.8x faster in two threads on the
# quietest run. benchmarks/decode_images.py.
SMALL_FILE_BYTES = 4096


def _default_workers(stats):
    try:
        from . import get_num_threads

        n = int(get_num_threads())
    except Exception:
        n = 0
    n = max(1, n or os.cpu_count() or 1)
    if stats and sum(size for _, size, _ in stats) < SMALL_FILE_BYTES * len(stats):
        return 1
    return n


# ----------------------------------------------------------------------------- cache
def _user_cache_root():
    env = os.environ.get("GPUACCEL_CACHE")
    if env:
        return os.path.join(env, "images")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "gpuaccel", "images")


def _writable_dir(folder):
    """True when ``folder`` exists (or can be made) and a file can be created in it."""
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".probe-")
        os.close(fd)
        os.unlink(tmp)
        return True
    except OSError:
        return False


def _cache_dir(root, cache):
    """The cache folder to use, or None (caching off or nowhere writable)."""
    if cache is False:
        return None
    if cache is not True:
        chosen = os.path.abspath(os.fspath(cache))
        if not _writable_dir(chosen):
            warnings.warn(f"cache folder {chosen} is not writable; decoding without a cache", stacklevel=3)
            return None
        return chosen
    inside = os.path.join(root, CACHE_DIRNAME)
    if _writable_dir(inside):
        return inside
    tag = hashlib.sha256(os.path.realpath(root).encode()).hexdigest()[:16]
    outside = os.path.join(_user_cache_root(), tag)
    return outside if _writable_dir(outside) else None


def _stat_list(root, rel_files):
    out = []
    for rel in rel_files:
        st = os.stat(os.path.join(root, rel))
        out.append([rel, st.st_size, st.st_mtime_ns])
    return out


def _cache_key(root, settings, class_names):
    blob = json.dumps([os.path.realpath(root), settings, class_names], sort_keys=True).encode()
    h, w = settings["image_size"]
    crop = "-crop" if settings["crop_to_aspect_ratio"] else ""
    return f"images-{settings['color_mode']}-{h}x{w}-{settings['interpolation']}{crop}-" \
           f"{hashlib.sha256(blob).hexdigest()[:10]}"


def _read_cache(cache_dir, key, manifest_expect):
    """The cached (memory-mapped array, skipped dict, npy path), or None when absent or stale."""
    mpath = os.path.join(cache_dir, key + ".json")
    try:
        with open(mpath, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or any(manifest.get(k) != v for k, v in manifest_expect.items()):
        return None
    npy = os.path.join(cache_dir, os.path.basename(str(manifest.get("array", ""))))
    try:
        arr = np.load(npy, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    if arr.dtype != np.uint8 or list(arr.shape) != manifest.get("shape"):
        return None
    return arr, {rel: reason for rel, reason in manifest.get("skipped", [])}, npy


def _new_cache_array(cache_dir, key, shape):
    """A writable memory-mapped .npy under a temporary name, its whole size reserved on disk
    (so a full disk is an OSError now, not a crash while writing through the map)."""
    tmp = os.path.join(cache_dir, f".{key}.{uuid.uuid4().hex[:12]}.npy.part")
    header = {"descr": "|u1", "fortran_order": False, "shape": tuple(shape)}
    try:
        with open(tmp, "wb") as f:
            np.lib.format.write_array_header_1_0(f, header)
            offset = f.tell()
            total = offset + int(np.prod(shape, dtype=np.int64))
            f.flush()
            if hasattr(os, "posix_fallocate") and total > offset:
                os.posix_fallocate(f.fileno(), 0, total)
            else:
                f.truncate(total)
        return np.load(tmp, mmap_mode="r+", allow_pickle=False), tmp
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _commit_cache(cache_dir, key, tmp, arr, manifest):
    """Publish the filled array: .part -> final name, then the manifest (the commit point)."""
    arr.flush()
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    final = os.path.join(cache_dir, f"{key}.{uuid.uuid4().hex[:12]}.npy")
    os.replace(tmp, final)
    mpath = os.path.join(cache_dir, key + ".json")
    old = None
    try:
        with open(mpath, encoding="utf-8") as f:
            old = json.load(f).get("array")
    except (OSError, ValueError, AttributeError):
        pass
    manifest = dict(manifest, array=os.path.basename(final))
    fd, mtmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{key}.", suffix=".json.part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(manifest, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(mtmp, mpath)
    except BaseException:
        if os.path.exists(mtmp):
            os.unlink(mtmp)
        os.unlink(final)
        raise
    if old and os.path.basename(str(old)) != os.path.basename(final):
        try:
            os.unlink(os.path.join(cache_dir, os.path.basename(str(old))))
        except OSError:
            pass
    return final


# ---------------------------------------------------------------------------- progress
class _Progress:
    """``Decoding 812/2000 [===========>..................] - ETA: 3s`` in callbacks.ProgressBar's
    style and with its rules: redrawn in place in a terminal or Jupyter (at most every 0.1 s /
    0.5 s), only the final line in a pipe or log file, nothing at verbose=0."""

    def __init__(self, total, verbose, stream=None):
        from .callbacks import ProgressBar, _fmt_time

        self.bar = ProgressBar(verbose=1, stream=stream) if verbose else None
        self.fmt, self.total, self.t0, self.last = _fmt_time, total, time.perf_counter(), -math.inf
        self.width = 0  # longest line drawn: shorter ones are padded so nothing is left over

    def _text(self, done, final):
        width = 30
        filled = width if final else int(width * done / max(self.total, 1))
        bar = "=" * max(filled - 1, 0) + (("=" if final else ">") if filled else "") + "." * (width - filled)
        elapsed = time.perf_counter() - self.t0
        if final:
            tail = f"{self.fmt(elapsed)} {done / max(elapsed, 1e-9):.0f} images/s"
        else:
            tail = f"ETA: {self.fmt(elapsed / max(done, 1) * (self.total - done))}"
        text = f"Decoding {done}/{self.total} [{bar}] - {tail}"
        self.width = max(self.width, len(text))
        return text.ljust(self.width)

    def update(self, done):
        if self.bar is None or done >= self.total:
            return
        now = time.perf_counter()
        if now - self.last < self.bar.interval or not self.bar._live():
            return
        self.last = now
        self.bar._show(self._text(done, False))

    def close(self, done):
        if self.bar is not None:
            self.bar._show(self._text(done, True), final=True)


# ----------------------------------------------------------------------------- decoding
def _decode_rows(out, paths, rows, settings, on_error):
    """Decode ``paths`` into ``out[rows]``; returns [(row, reason)] for files that failed."""
    failed = []
    for row, p in zip(rows, paths):
        try:
            out[row] = decode_image(p, settings["image_size"], settings["color_mode"], settings["interpolation"],
                                    settings["crop_to_aspect_ratio"])
        except MemoryError:
            raise
        except ImportError:
            raise
        except Exception as e:  # Pillow raises OSError, ValueError, SyntaxError, DecompressionBombError...
            reason = f"{type(e).__name__}: {e}"
            if on_error == "raise":
                raise ImageDecodeError(p, reason) from e
            failed.append((row, reason))
    return failed


def _decode_all(out, paths, settings, on_error, workers, progress):
    """Fill ``out`` (N, C, H, W) from ``paths``; returns {row: reason} of failures."""
    n = len(paths)
    failed = {}
    chunk = max(1, min(256, n // (workers * 8) or 1))
    starts = range(0, n, chunk)
    done = 0
    if workers == 1:
        for s in starts:
            rows = range(s, min(s + chunk, n))
            failed.update(_decode_rows(out, paths[s:s + chunk], rows, settings, on_error))
            done += len(rows)
            progress.update(done)
        return failed
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gpuaccel-decode")
    try:
        futures = {pool.submit(_decode_rows, out, paths[s:s + chunk], range(s, min(s + chunk, n)),
                               settings, on_error): min(chunk, n - s) for s in starts}
        for fut in concurrent.futures.as_completed(futures):
            failed.update(fut.result())  # re-raises the first ImageDecodeError
            done += futures[fut]
            progress.update(done)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return failed


# ------------------------------------------------------------------------------ the API
def image_dataset_from_directory(path, image_size=(256, 256), color_mode="rgb", validation_split=None,
                                 subset=None, seed=None, class_names=None, crop_to_aspect_ratio=False,
                                 interpolation="bilinear", on_error="raise", cache=True, workers=None,
                                 verbose=1):
    """Load a folder of images, one sub-folder per class, as uint8 NCHW arrays.

    Keras's convention and argument names; the result is arrays, not a tf.data pipeline:

    - ``path/<class>/**/<file>``: every sub-folder of ``path`` is a class (names sorted), or
      only those named in ``class_names`` (in that order; each must exist). Files are found
      recursively; ``.jpg .jpeg .png .bmp .gif`` (any case) are images, other files are
      ignored and counted (``result.ignored``), hidden files and folders are skipped.
    - each image: first frame, EXIF orientation applied, converted to ``color_mode``
      ('rgb' 3 channels, 'grayscale' 1, 'rgba' 4), resized to ``image_size`` = (height, width)
      with ``interpolation`` ('bilinear', 'nearest', 'bicubic', 'area', 'lanczos': Pillow's
      filters, which antialias when shrinking); with ``crop_to_aspect_ratio`` the largest
      centred box of the target aspect ratio is cut out first, so nothing is distorted.
    - returns an :class:`ImageFolder`: ``x, y = result`` with ``x`` uint8 (N, C, H, W) and
      ``y`` int32 (N,), rows in file order (class by class); ``result.class_names``,
      ``.files``, ``.skipped``, ``.ignored``. ``model.fit`` takes uint8 images as they are
      (it converts them to float32, without scaling): pass ``x / 255`` for inputs in [0, 1].
    - ``validation_split`` (0 < v < 1) with ``subset='training'`` or ``'validation'`` returns
      that part; ``subset='both'`` returns ``(training, validation)``, two ImageFolders, so
      ``(x, y), (xv, yv) = ...`` works. The split needs ``seed``: the sorted file list is
      permuted by ``numpy.random.default_rng(seed)`` and its last ``int(v * N)`` files are the
      validation subset, so the same seed on the same folder gives the same split in every
      process. Files skipped by ``on_error='skip'`` are then dropped from their subset.
    - at least two classes are needed for a classifier; one class is accepted only when
      named in ``class_names`` (e.g. to run ``predict`` on it).
    - ``on_error='raise'``: a file Pillow cannot read raises :class:`ImageDecodeError`
      (a ValueError) naming it and Pillow's reason; ``'skip'``: it is left out, warned about
      and listed in ``result.skipped``.
    - ``cache``: True keeps the decoded array in ``path/.gpuaccel-cache/`` (or, when ``path``
      is read-only, under ``$GPUACCEL_CACHE`` or ``~/.cache/gpuaccel/images/``), a folder to
      choose, False for none. Reused while every file's size and mtime and every setting are
      unchanged; written to a temporary name and renamed, so an interrupted decode never
      leaves a cache that looks valid. The folder is decoded straight into the cache file,
      so it never has to fit in memory.
    - ``workers``: decoding threads. Default: ``ga.get_num_threads()``, or 1 when the files
      average under 4 KiB (tiny images decode faster in one thread: the per-file Python
      work holds the GIL). The bytes are the same for any count. ``verbose=0``: quiet.
    """
    _check_args(image_size, color_mode, validation_split, subset, seed, class_names, interpolation,
                on_error, workers, verbose, cache)
    _pil()
    root = os.path.abspath(os.fspath(path))
    image_size = (int(image_size[0]), int(image_size[1]))
    explicit = class_names is not None
    chosen = os.path.realpath(os.fspath(cache)) if not isinstance(cache, bool) else None
    names, per_class, ignored = _scan(root, list(class_names) if explicit else None, chosen)
    if len(names) < 2 and not explicit:
        raise ValueError(f"{root!r} has only one class folder ({names[0]!r}): a classifier needs at least two "
                         f"classes (pass class_names=[{names[0]!r}] to load a single class anyway)")
    rel = [f for files in per_class for f in files]
    labels_all = np.concatenate([np.full(len(f), k, np.int32) for k, f in enumerate(per_class)])
    abs_files = [os.path.join(root, *r.split("/")) for r in rel]
    n = len(rel)
    settings = {"image_size": list(image_size), "color_mode": color_mode, "interpolation": interpolation,
                "crop_to_aspect_ratio": bool(crop_to_aspect_ratio)}
    channels = COLOR_MODES[color_mode][1]
    shape = (n, channels, image_size[0], image_size[1])
    if verbose:
        extra = f" ({ignored} non-image file(s) ignored)" if ignored else ""
        print(f"Found {n} files belonging to {len(names)} classes{extra}.", flush=True)

    if subset is not None:
        n_val = int(validation_split * n)
        if n_val == 0 or n_val == n:
            raise ValueError(f"validation_split={validation_split} of {n} files leaves the "
                             f"{'validation' if n_val == 0 else 'training'} subset empty")

    cache_dir = _cache_dir(root, cache)
    stats = _stat_list(root, rel)
    workers = int(workers) if workers is not None else _default_workers(stats)
    images, failed, npy, from_cache = None, None, None, False
    if cache_dir is not None:
        key = _cache_key(root, settings, names)
        expect = {"format": CACHE_FORMAT, "settings": settings, "class_names": names,
                  "files": stats, "shape": list(shape)}
        hit = _read_cache(cache_dir, key, expect)
        if hit is not None:
            images, skipped_rel, npy = hit
            failed = {i: skipped_rel[r] for i, r in enumerate(rel) if r in skipped_rel}
            from_cache = True
            if failed and on_error == "raise":
                i = min(failed)
                raise ImageDecodeError(abs_files[i], failed[i])
    if images is None:
        tmp = None
        if cache_dir is not None:
            try:
                images, tmp = _new_cache_array(cache_dir, key, shape)
            except OSError as e:
                warnings.warn(f"cannot write the image cache in {cache_dir} ({e}); decoding into memory", stacklevel=2)
        if images is None:
            images = np.empty(shape, np.uint8)
        progress = _Progress(n, verbose)
        try:
            failed = _decode_all(images, abs_files, settings, on_error, workers, progress)
            progress.close(n)
            if failed:
                images[sorted(failed)] = 0
            if tmp is not None:
                manifest = dict(expect, skipped=[[rel[i], r] for i, r in sorted(failed.items())])
                try:
                    npy = _commit_cache(cache_dir, key, tmp, images, manifest)
                    tmp = None
                except OSError as e:
                    warnings.warn(f"cannot write the image cache in {cache_dir} ({e}); result not cached",
                                  stacklevel=2)
                    images = np.array(images)  # off the (soon deleted) temporary file
                else:
                    images = np.load(npy, mmap_mode="r", allow_pickle=False)  # read-only from now on
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
    if failed:
        listing = "; ".join(f"{abs_files[i]} ({r})" for i, r in sorted(failed.items())[:5])
        more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
        warnings.warn(f"skipped {len(failed)} file(s) that could not be decoded: {listing}{more}", stacklevel=2)

    def part(rows):
        rows = np.asarray(rows, dtype=np.int64)
        keep = rows[[r not in failed for r in rows.tolist()]] if failed else rows
        whole = len(keep) == n
        return ImageFolder(images if whole else np.ascontiguousarray(images[keep]), labels_all[keep],
                           list(names), [abs_files[i] for i in keep.tolist()],
                           [(abs_files[i], failed[i]) for i in rows.tolist() if i in failed], ignored,
                           npy, from_cache)

    if subset is None:
        result = part(np.arange(n))
        if len(result.labels) == 0:
            raise ValueError(f"no image in {root!r} could be decoded ({len(failed)} skipped)")
        return result
    perm = np.random.default_rng(seed).permutation(n)
    train, val = np.sort(perm[:n - n_val]), np.sort(perm[n - n_val:])
    if verbose:
        use = {"training": f"{len(train)} files for training", "validation": f"{len(val)} files for validation",
               "both": f"{len(train)} files for training and {len(val)} for validation"}[subset]
        print(f"Using {use}.", flush=True)
    if subset == "training":
        return part(train)
    if subset == "validation":
        return part(val)
    return part(train), part(val)


# ------------------------------------------------------------------------------ writing
def safe_folder_name(name):
    """A class name as a portable folder name: 'T-shirt/top' -> 'T-shirt_top'."""
    out = re.sub(r"[^A-Za-z0-9._+-]+", "_", str(name)).strip("._ ")
    if not out:
        raise ValueError(f"class name {name!r} gives an empty folder name")
    return out


_FORMATS = {"png": ("PNG", ".png"), "bmp": ("BMP", ".bmp"), "jpeg": ("JPEG", ".jpg"), "jpg": ("JPEG", ".jpg"),
            "gif": ("GIF", ".gif")}


def write_image_folder(images, labels, path, class_names=None, format="png", exist_ok=False):
    """Write uint8 images as ``path/<class name>/<index>.<ext>``, one sub-folder per class.

    ``images``: uint8 (N, C, H, W) with C = 1 or 3, or (N, H, W); ``labels``: ints (N,) in
    [0, len(class_names)). ``class_names`` default to '0', '1', ... zero-padded so they sort
    in label order; names are made safe for folder names (``safe_folder_name``). Files are
    named by their row (``00042.png``) and each is written to a hidden temporary name then
    renamed. ``format``: 'png' (lossless, the default), 'bmp', 'jpeg' (lossy) or 'gif'.
    A non-empty ``path`` is refused unless ``exist_ok=True`` (then same-named files are
    replaced and others left). Every class folder is created, even an empty one.
    Returns the list of class folder names, in label order: pass it as ``class_names=``
    to ``image_dataset_from_directory`` to get the same labels back.
    """
    Image, _ = _pil()
    x = np.asarray(images)
    y = np.asarray(labels)
    if x.dtype != np.uint8:
        raise TypeError(f"images must be uint8, got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"images must have shape (N, 1 or 3, H, W) or (N, H, W), got {np.asarray(images).shape}")
    if y.dtype.kind not in "iu" or y.shape != (x.shape[0],):
        raise ValueError(f"labels must be integers of shape ({x.shape[0]},), got {y.dtype} {y.shape}")
    if format not in _FORMATS:
        raise ValueError(f"format must be one of {list(_FORMATS)}, got {format!r}")
    if class_names is None:
        k = int(y.max()) + 1 if y.size else 0
        class_names = [str(i).zfill(len(str(max(k - 1, 0)))) for i in range(k)]
    folders = [safe_folder_name(c) for c in class_names]
    if len(set(folders)) != len(folders):
        raise ValueError(f"class names give duplicate folder names: {folders}")
    if y.size and (y.min() < 0 or y.max() >= len(folders)):
        raise ValueError(f"labels must be in [0, {len(folders)}), got {y.min()}..{y.max()}")
    root = os.fspath(path)
    if os.path.isdir(root) and os.listdir(root) and not exist_ok:
        raise FileExistsError(f"{root!r} is not empty (pass exist_ok=True to write into it)")
    pil_format, ext = _FORMATS[format]
    for f in folders:
        os.makedirs(os.path.join(root, f), exist_ok=True)
    width = len(str(max(len(x) - 1, 0)))
    for i in range(len(x)):
        a = x[i, 0] if x.shape[1] == 1 else x[i].transpose(1, 2, 0)
        folder = os.path.join(root, folders[int(y[i])])
        target = os.path.join(folder, f"{i:0{width}d}{ext}")
        tmp = os.path.join(folder, f".{i:0{width}d}.{uuid.uuid4().hex[:8]}{ext}.part")
        try:
            Image.fromarray(np.ascontiguousarray(a)).save(tmp, format=pil_format)
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    return folders
