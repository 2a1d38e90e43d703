"""THE image rule of edgecl: which files are images, and how one is read (ultralytics' rule).

- :data:`IMAGE_SUFFIXES`: every format ultralytics reads (``ultralytics.data.utils.IMG_FORMATS``),
  matched in any case (``.JPG``, ``.Tif``, ...).
- :func:`read_image` decodes like ``ultralytics.utils.patches.imread``: OpenCV, the first
  colour page of a TIFF, Pillow for AVIF/HEIC/HEIF; grayscale becomes 3-channel BGR, alpha is
  dropped, a JPEG's EXIF orientation is applied. One departure: a 16-bit image (a thermal
  camera's PNG or TIFF) is stretched to 8 bits by its own minimum and maximum
  (:func:`to_8bit`), where ultralytics keeps the high byte: a 14-bit thermal frame of counts
  7000-9000 kept only 27-35 of 255 (all but black); stretched, its coldest pixel is 0 and its
  hottest 255, as a thermal camera's own 8-bit output (AGC) shows it.
- A JPEG that does not end with its end-of-image marker (``FF D9``) is checked as
  ultralytics' ``check_image`` does: if Pillow cannot decode it completely it is truncated and
  refused (OpenCV would decode it with grey fill); if it decodes (only trailing bytes after the
  marker) it is accepted.
- Nothing is decoded before its size is known to be at most :data:`MAX_PIXELS`: Pillow reads
  the width and height from the header (nothing decoded) of PNG, JPEG/MPO, BMP, GIF, TIFF/DNG
  (first page: the only one decoded, also when later pages are larger), BigTIFF, WebP,
  JPEG 2000 (JP2 and J2K codestream), AVIF (and HEIC/HEIF where a Pillow HEIF plugin is
  registered), PNM and Sun raster. A file with one of these signatures whose header Pillow
  cannot read, and the formats OpenCV decodes but Pillow cannot size (PAM, PFM, Radiance HDR,
  OpenEXR, JPEG XL), are refused rather than handed to OpenCV unchecked: OpenCV would allocate
  up to its own bound of a gigapixel (3 GB) for them. A HEIC/HEIF that only the HEIF plugin
  reads is sized by that plugin before Pillow decodes it, and never goes to OpenCV.
"""

from __future__ import annotations

import contextlib
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgecl.errors import EdgeclError

IMAGE_SUFFIXES: tuple[str, ...] = (".avif", ".bmp", ".dng", ".heic", ".heif", ".jp2", ".jpeg",
                                   ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp")
"""Lower-case suffixes of ``ultralytics.data.utils.IMG_FORMATS`` (a test keeps them equal)."""

_PIL_SUFFIXES = (".avif", ".heic", ".heif")
_TIFF_SUFFIXES = (".tif", ".tiff")
_JPEG_SOI = b"\xff\xd8"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*")  # little- and big-endian TIFF
_JPEG_EOI = b"\xff\xd9"


class ImageError(EdgeclError):
    """An image file cannot be read or decoded (message: path and reason).

    Attributes:
        errno: the OS error number when the file could not be read (``None`` when it was
            read and cannot be decoded): a caller tells a damaged file from a process that is
            out of file descriptors or memory for a moment.
    """

    errno: int | None = None


def is_image(path: str | Path) -> bool:
    """Whether a file name has an image suffix ultralytics reads (any case).

    Args:
        path: file path or name.

    Returns:
        True for ``.jpg``, ``.JPEG``, ``.tif``, ``.webp``, ... (see :data:`IMAGE_SUFFIXES`).
    """
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _jpeg_truncated(data: bytes) -> str | None:
    """Why a JPEG byte string is truncated, or ``None`` when it decodes completely."""
    if data.endswith(_JPEG_EOI):
        return None
    import io

    from PIL import JpegImagePlugin

    try:  # the plugin class itself: Image.open may be patched (ultralytics installs HEIF on demand)
        with JpegImagePlugin.JpegImageFile(io.BytesIO(data)) as im:
            im.load()
    except (OSError, SyntaxError, ValueError, IndexError) as exc:
        return f"truncated JPEG (no end-of-image marker; {str(exc).splitlines()[0]})"
    return None


def _png_damage(data: bytes) -> str | None:
    """Why a PNG byte string is damaged, or ``None``: a critical chunk (``IHDR``, ``PLTE``,
    ``IDAT``) that fails its CRC, no chunk where one must start (zeros after a write cut short,
    e.g. a power cut on a pre-allocated file), or image data cut short. Found here, libpng
    would print its own "libpng error: IDAT: CRC error" lines, naming no file, before edgecl's
    one line. Chunks after ``IEND``, and damaged ancillary chunks, are left to the decoder.

    Args:
        data: the file's bytes, starting with the PNG signature.

    Returns:
        One line saying what is wrong and at which byte, or ``None``.
    """
    offset = len(PNG_SIGNATURE)
    while offset + 8 <= len(data):
        length = int.from_bytes(data[offset:offset + 4], "big")
        kind = data[offset + 4:offset + 8]
        if not kind.isalpha() or length > 0x7FFFFFFF:
            return (f"damaged PNG: no chunk at byte {offset} (zeros or garbage: a write cut "
                    "short?)")
        end = offset + 12 + length
        name = kind.decode("ascii")
        if kind == b"IEND":
            return None
        if end > len(data):
            return (f"truncated PNG (its {name} chunk at byte {offset} runs past the end)"
                    if kind in (b"IHDR", b"PLTE", b"IDAT") else None)
        if kind[:1].isupper() and zlib.crc32(data[offset + 4:end - 4]) != int.from_bytes(
                data[end - 4:end], "big"):
            return f"damaged PNG: its {name} chunk at byte {offset} fails its CRC"
        offset = end
    return None


_quiet_lock = threading.Lock()
_quiet_depth = 0
_quiet_saved_level = 0


@contextlib.contextmanager
def quiet_opencv() -> Iterator[None]:
    """Keep OpenCV's own log lines off while the block runs (nested and threads alike).

    A decoder's failure (``[ERROR:0@0.11] global grfmt_tiff.cpp:117 TIFF_Error ...``) or a
    capture's notice otherwise reaches the terminal before edgecl's one-line reason for the
    same file. OpenCV's level (``cv2.utils.logging``) is process-wide: it is restored when the
    last block still running ends.
    """
    import cv2

    global _quiet_depth, _quiet_saved_level
    with _quiet_lock:
        if _quiet_depth == 0:
            _quiet_saved_level = cv2.utils.logging.getLogLevel()
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                cv2.utils.logging.setLogLevel(_quiet_saved_level)


def _decode_tiff(data: np.ndarray) -> np.ndarray | None:
    """The first page of a TIFF if it is colour (BGR, alpha dropped), else ``None``.

    Only the first page is decoded (``cv2.imdecode``): ultralytics uses no other, and a later
    page may be far larger than the first, whose size alone is checked.
    """
    import cv2

    page = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if page is not None and page.ndim == 3:
        return page[..., :3]
    return None


def _undecodable_reason(buf: np.ndarray) -> str:
    """Why OpenCV gave no 8- or 16-bit picture of a file whose header was read: floating-point
    pixels (a radiometric thermal export in degrees, an HDR image) decode unchanged only."""
    import cv2

    with quiet_opencv():
        raw = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if raw is not None:
        return _pixel_type_reason(raw.dtype)
    return "does not decode as an image (corrupt or unsupported format)"


def _pixel_type_reason(dtype: np.dtype) -> str:
    """Why pixels of ``dtype`` (not 8- or 16-bit unsigned) are refused, in words."""
    if dtype.kind == "f":
        return (f"{dtype.itemsize * 8}-bit floating-point pixels (e.g. temperatures of a "
                "radiometric thermal export): not supported; export the frames as 8- or 16-bit "
                "images")
    return f"unsupported pixel type {dtype} (8- or 16-bit images only)"


def _decode_pil(data: bytes, name: str) -> np.ndarray | None:
    """Decode with Pillow (AVIF, HEIC/HEIF), upright; the size is checked before decoding.

    Raises:
        ImageError: over :data:`MAX_PIXELS`.
    """
    import io

    import cv2
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as im:
            _check_pixels(*im.size, name)
            rgb = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    except (OSError, SyntaxError, ValueError, ImportError):  # ImportError: no HEIF plugin here
        return None
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


_SIZED_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG", "PNG"), (b"\xff\xd8", "JPEG"), (b"BM", "BMP"), (b"GIF8", "GIF"),
    *((sig, "TIFF") for sig in TIFF_SIGNATURES), (b"II+\x00", "BigTIFF"), (b"MM\x00+", "BigTIFF"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"), (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"P1", "PNM"), (b"P2", "PNM"), (b"P3", "PNM"), (b"P4", "PNM"), (b"P5", "PNM"), (b"P6", "PNM"),
    (b"\x59\xa6\x6a\x95", "Sun raster"))
"""Leading bytes of the formats whose size Pillow reads from the header, and their names (WebP
and the ISO-BMFF ``ftyp`` box of AVIF/HEIF are recognised apart)."""
_UNSIZED_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"P7", "PAM"), (b"PF", "PFM"), (b"Pf", "PFM"), (b"#?", "Radiance HDR"),
    (b"\x76\x2f\x31\x01", "OpenEXR"), (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"))
"""Leading bytes of the formats OpenCV may decode but Pillow cannot size: refused."""
MAX_PIXELS = 64_000_000
"""Largest image decoded (width x height): a 400 kB PNG can declare 20000 x 20000 pixels, and
decoding it would take 3 GB, enough to get a Jetson's runtime killed; an 8K frame is 33 MP."""


def _check_pixels(width: int, height: int, name: str) -> None:
    """Refuse a declared size above :data:`MAX_PIXELS` (one line, nothing decoded)."""
    if width * height > MAX_PIXELS:
        raise ImageError(f"{name}: {width}x{height} pixels is over the limit of "
                         f"{MAX_PIXELS // 1_000_000} megapixels (not decoded)")


def _format_of(data: bytes, magic: tuple[tuple[bytes, str], ...]) -> str | None:
    """The name of the format in ``magic`` whose leading bytes ``data`` has, or ``None``."""
    return next((fmt for lead, fmt in magic if data.startswith(lead)), None)


def _tiff_first_page_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of a TIFF's first page from its tags (Pillow's directory reader), for a
    TIFF whose pixel layout Pillow cannot open (3-channel float, ...) but OpenCV may decode."""
    import io
    import struct
    import warnings

    from PIL import TiffImagePlugin

    fp = io.BytesIO(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns of corrupt tags
            ifd = TiffImagePlugin.ImageFileDirectory_v2(
                fp.read(16 if data[2:4] in (b"+\x00", b"\x00+") else 8))
            fp.seek(ifd.next)
            ifd.load(fp)
        width, height = int(ifd[256]), int(ifd[257])
    except (KeyError, OSError, ValueError, SyntaxError, TypeError, struct.error):
        return None
    return width, height


def _refuse_oversized(data: bytes, name: str) -> bool:
    """Read the image's declared size from its header (Pillow, nothing decoded) and refuse one
    above :data:`MAX_PIXELS` (module docstring).

    Returns:
        Whether OpenCV may decode the data: True when the size was checked or no decoder knows
        the format (OpenCV then fails on it); False for an ISO-BMFF (AVIF/HEIF) file whose size
        only Pillow's decoding path (with a HEIF plugin) can read, which checks it itself.

    Raises:
        ImageError: over the limit, or a known format whose size cannot be read.
    """
    import io
    import sys
    import warnings

    from PIL import Image, UnidentifiedImageError

    unsized = _format_of(data, _UNSIZED_MAGIC)
    if unsized:
        raise ImageError(f"{name}: {unsized} image, whose size cannot be read before decoding "
                         f"(not decoded)")
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        fmt = "WebP"
    elif data[4:8] == b"ftyp":
        fmt = "AVIF/HEIF"
    else:
        fmt = _format_of(data, _SIZED_MAGIC)
    if fmt is None:
        return True
    # ultralytics patches Image.open to install a HEIF plugin when Pillow cannot identify a
    # file; its saved original opener is used when present (an offline device must not try)
    opener = getattr(sys.modules.get("ultralytics.utils.patches"), "_image_open", Image.open)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning, corrupt EXIF, ...
            with opener(io.BytesIO(data)) as im:
                width, height = im.size
    except Image.DecompressionBombError as exc:  # Pillow's own bound, above ours
        import re

        found = re.search(r"\((\d+) pixels\)", str(exc))  # Pillow's words name its own limit
        size = f"{int(found.group(1)) / 1e6:,.0f} megapixels, " if found else ""
        raise ImageError(f"{name}: {size}over the limit of {MAX_PIXELS // 1_000_000} megapixels, "
                         f"not decoded") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        if fmt == "AVIF/HEIF":
            return False
        size = _tiff_first_page_size(data) if fmt.endswith("TIFF") else None
        if size is None:
            raise ImageError(f"{name}: does not decode as an image (corrupt or truncated {fmt} "
                             f"header: its size cannot be read)") from None
        width, height = size
    _check_pixels(width, height, name)
    return True


def to_8bit(image: np.ndarray) -> np.ndarray:
    """Stretch a 16-bit image to 8 bits by its own minimum and maximum (all channels together).

    ``out = ((v - lo) * 255 + (hi - lo) // 2) // (hi - lo)`` in integers, ``lo`` and ``hi`` the
    image's smallest and largest value: ``lo`` becomes 0, ``hi`` 255 (a thermal frame of counts
    7000, 8000 and 9000 becomes 0, 128 and 255). A flat image (``lo == hi``) has nothing to
    stretch and keeps its high byte (``v >> 8``). Each frame is stretched on its own, as a
    thermal camera's automatic gain does: the same count may map to another grey in the next
    frame, and one stuck hot or cold pixel narrows the rest of the range.

    Args:
        image: a ``uint16`` array of any shape.

    Returns:
        The ``uint8`` array of the same shape.
    """
    lo, hi = int(image.min()), int(image.max())
    if lo == hi:
        return (image >> 8).astype(np.uint8)
    span = hi - lo
    values = np.clip(np.arange(65536, dtype=np.int64) - lo, 0, span)
    lut = ((values * 255 + span // 2) // span).astype(np.uint8)  # 64 kB: no float copy of a frame
    return lut[image]


def deeper_than_8_bits(data: bytes) -> bool:
    """Whether an encoded image stores more than 8 bits per sample (a thermal camera's 16-bit
    PNG or TIFF). ultralytics' loader (``imread``) keeps the high byte of such a sample, while
    edgecl reads it stretched (:func:`to_8bit`): a file given to ultralytics to train on must
    hold the 8-bit pixels edgecl reads, or training sees other pixels than evaluation and the
    device (a thermal frame of counts 7000-9040 trained as greys 27-35).

    Args:
        data: the file's bytes.

    Returns:
        True for 16-bit (or float) samples; False for 8-bit ones and for bytes that do not
        decode (the decoder says why elsewhere).
    """
    if not data or data.startswith(_JPEG_SOI):
        return False
    if data.startswith(PNG_SIGNATURE) and data[12:16] == b"IHDR" and len(data) > 24:
        return data[24] > 8  # the header's bit depth: nothing decoded
    import cv2

    with quiet_opencv():
        try:
            image = cv2.imdecode(np.frombuffer(data, np.uint8),
                                 cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
        except cv2.error:  # bytes OpenCV's decoders refuse: the reader says why elsewhere
            return False
    return image is not None and image.dtype != np.uint8


def file_deeper_than_8_bits(path: str | Path) -> bool:
    """:func:`deeper_than_8_bits` of an image file, reading only its header where that tells
    (JPEG, PNG: the common case), the whole file otherwise.

    Raises:
        OSError: the file cannot be read; :class:`~edgecl.input_files.InputFileError` for a
            pipe, a device or a file larger than an image can be.
    """
    import errno

    from edgecl.input_files import (MAX_IMAGE_BYTES, InputFileError, read_input_bytes,
                                    regular_file_problem)

    special = regular_file_problem(path)
    if special:  # opening a pipe would wait for a writer
        raise InputFileError(errno.EINVAL, special, str(path))
    with open(path, "rb") as fh:
        head = fh.read(32)
    if head.startswith((_JPEG_SOI, PNG_SIGNATURE)):
        return deeper_than_8_bits(head)
    return deeper_than_8_bits(read_input_bytes(path, MAX_IMAGE_BYTES, "an image file"))


def decode_image_bytes(data: bytes, name: str = "image") -> np.ndarray:
    """Decode an encoded image (the bytes of a file) into BGR uint8.

    Args:
        data: the file's bytes.
        name: file name or description; its suffix chooses the TIFF / Pillow paths, and it
            starts the error message.

    Returns:
        uint8 array (H, W, 3), BGR.

    Raises:
        ImageError: empty, truncated JPEG, over :data:`MAX_PIXELS`, size unknown (module
            docstring), or not decodable.
    """
    import cv2

    if not data:
        raise ImageError(f"{name}: empty file")
    if data.startswith(_JPEG_SOI):
        why = _jpeg_truncated(data)
        if why:
            raise ImageError(f"{name}: {why}")
    if data.startswith(PNG_SIGNATURE):
        why = _png_damage(data)
        if why:
            raise ImageError(f"{name}: {why}")
    opencv_may_decode = _refuse_oversized(data, name)
    suffix = Path(name).suffix.lower()
    buf = np.frombuffer(data, np.uint8)
    with quiet_opencv():  # a truncated TIFF or BMP: edgecl's one line, not libtiff's two
        image = _decode_tiff(buf) if opencv_may_decode and suffix in _TIFF_SUFFIXES else None
        if image is None and suffix in _PIL_SUFFIXES:
            image = _decode_pil(data, name)
        if image is None and not opencv_may_decode:
            raise ImageError(f"{name}: does not decode as an image (AVIF/HEIF header unreadable, "
                             f"no HEIF plugin?: its size cannot be read)")
        if image is None:  # EXIF-upright, 3 channels, 16-bit kept for to_8bit
            image = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
            if image is not None and image.dtype not in (np.uint8, np.uint16, np.int8, np.int16):
                image = cv2.imdecode(buf, cv2.IMREAD_COLOR)  # float and 32-bit: OpenCV's 8 bits
    if image is None:
        raise ImageError(f"{name}: {_undecodable_reason(buf)}")
    image = signed_to_unsigned(image)
    if image.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"{name}: {_pixel_type_reason(image.dtype)}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"{name}: image has no pixels")
    return to_bgr8(image)


def signed_to_unsigned(image: np.ndarray) -> np.ndarray:
    """Signed 8- or 16-bit pixels (a radiometric export in signed centi-degrees) as unsigned
    ones of the same width, in the same order: ``v + 128`` for ``int8``, ``v + 32768`` for
    ``int16`` (the coldest -32768 becomes 0). Before, OpenCV's 8-bit reading of such a file
    wrapped negative values around: a -1000 background read 252 and a +1000 object 3, hot and
    cold swapped. Any other dtype is returned as it is.

    Args:
        image: a decoded array of any shape.

    Returns:
        ``uint8`` for ``int8``, ``uint16`` for ``int16`` (stretched later by :func:`to_8bit`),
        else ``image`` itself.
    """
    if image.dtype == np.int8:
        return (image.astype(np.int16) + 128).astype(np.uint8)
    if image.dtype == np.int16:
        return (image.astype(np.int32) + 32768).astype(np.uint16)
    return image


def to_bgr8(image: np.ndarray) -> np.ndarray:
    """A decoded frame as the detector takes it: 3-channel BGR ``uint8``.

    A ``uint16`` frame (a thermal camera's counts, a 16-bit PNG, a 16-bit video) is stretched
    by :func:`to_8bit`; a grey one gets three equal channels; a 4th channel (alpha) is dropped.

    Args:
        image: ``uint8`` or ``uint16`` array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4).

    Returns:
        C-contiguous ``uint8`` array (H, W, 3).
    """
    import cv2

    if image.dtype == np.uint16:
        image = to_8bit(image)
    if image.ndim == 2 or image.shape[2] == 1:
        image = cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    elif image.shape[2] != 3:
        image = image[..., :3]
    return np.ascontiguousarray(image)


JPEG_MAX_SIDE = 65500
"""Longest side a JPEG can have (libjpeg's limit): a wider or taller frame cannot be stored as
JPEG (a legal 70000 x 2 line-scan frame included)."""


def jpeg_side_problem(image: np.ndarray) -> str | None:
    """Why an image cannot be encoded as JPEG because of its size, or ``None``.

    Args:
        image: the image array, (H, W) or (H, W, C).

    Returns:
        One line such as ``70000x2 pixels: a side is over JPEG's limit of 65500 pixels``.
    """
    height, width = image.shape[:2]
    if max(height, width) <= JPEG_MAX_SIDE:
        return None
    return f"{width}x{height} pixels: a side is over JPEG's limit of {JPEG_MAX_SIDE} pixels"


MIN_TRAIN_SIDE_PX = 10
"""Shortest side an image may have to be trained on: ultralytics' ``verify_image_label``
refuses a smaller one ("image size (8, 48) <10 pixels")."""


def small_side_problem(image: np.ndarray) -> str | None:
    """Why an image is too small to learn from, or ``None``.

    Args:
        image: the image array, (H, W) or (H, W, C).

    Returns:
        One line such as ``48x8 pixels: a side is under 10 pixels, which ultralytics does
        not train on``.
    """
    height, width = image.shape[:2]
    if min(height, width) >= MIN_TRAIN_SIDE_PX:
        return None
    return (f"{width}x{height} pixels: a side is under {MIN_TRAIN_SIDE_PX} pixels, which "
            f"ultralytics does not train on")


CONTENT_HASH_CHARS = 32
"""Hex digits kept of an image's sha256 (128 bits: collisions are out of reach)."""


def content_hash(data: bytes) -> str:
    """The content hash of an image file's bytes: how an image imported twice is recognised.

    Args:
        data: the file's bytes, as read.

    Returns:
        The first :data:`CONTENT_HASH_CHARS` hex digits of their sha256.
    """
    import hashlib

    return hashlib.sha256(data).hexdigest()[:CONTENT_HASH_CHARS]


def pixels_hash(image: np.ndarray) -> str:
    """The content hash of decoded pixels (for an image that has no file), same format as
    :func:`content_hash`: the shape and dtype are hashed with the bytes."""
    import hashlib

    arr = np.ascontiguousarray(image)
    digest = hashlib.sha256(f"{arr.shape}|{arr.dtype}|".encode())
    digest.update(arr.tobytes())
    return digest.hexdigest()[:CONTENT_HASH_CHARS]


def read_image_and_hash(path: str | Path) -> tuple[np.ndarray, str]:
    """Read an image like :func:`read_image` and hash its bytes (:func:`content_hash`), from
    one read of the file.

    Raises:
        ImageError: as :func:`read_image`.
    """
    data = _read_bytes(Path(path))
    return decode_image_bytes(data, str(path)), content_hash(data)


def _read_bytes(path: Path) -> bytes:
    from edgecl.input_files import MAX_IMAGE_BYTES, read_input_bytes

    try:
        return read_input_bytes(path, MAX_IMAGE_BYTES, "an image file")
    except OSError as exc:
        error = ImageError(f"{path}: cannot read ({exc.strerror or exc})")
        error.errno = exc.errno
        raise error from None


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file into BGR uint8 with ultralytics' rule (module docstring).

    Args:
        path: the file (any suffix of :data:`IMAGE_SUFFIXES`; others are tried by content).

    Returns:
        uint8 array (H, W, 3), BGR.

    Raises:
        ImageError: one line with the path and the reason: missing or unreadable file, empty
            file, truncated JPEG, undecodable data.
    """
    path = Path(path)
    return decode_image_bytes(_read_bytes(path), str(path))
