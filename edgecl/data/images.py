"""THE image rule of edgecl: which files are images, and how one is read (ultralytics' rule).

- :data:`IMAGE_SUFFIXES`: every format ultralytics reads (``ultralytics.data.utils.IMG_FORMATS``),
  matched in any case (``.JPG``, ``.Tif``, ...).
- :func:`read_image` decodes like ``ultralytics.utils.patches.imread``: OpenCV, the first
  colour page of a TIFF, Pillow for AVIF/HEIC/HEIF; 16-bit images keep their high byte;
  grayscale becomes 3-channel BGR. A JPEG that does not end with its end-of-image marker
  (``FF D9``) is checked as ultralytics' ``check_image`` does: if Pillow cannot decode it
  completely it is truncated and refused (OpenCV would decode it with grey fill); if it
  decodes (only trailing bytes after the marker) it is accepted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecl.errors import EdgeclError

IMAGE_SUFFIXES: tuple[str, ...] = (".avif", ".bmp", ".dng", ".heic", ".heif", ".jp2", ".jpeg",
                                   ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp")
"""Lower-case suffixes of ``ultralytics.data.utils.IMG_FORMATS`` (a test keeps them equal)."""

_PIL_SUFFIXES = (".avif", ".heic", ".heif")
_TIFF_SUFFIXES = (".tif", ".tiff")
_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"


class ImageError(EdgeclError):
    """An image file cannot be read or decoded (message: path and reason)."""


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


def _decode_tiff(data: np.ndarray) -> np.ndarray | None:
    import cv2

    ok, pages = cv2.imdecodemulti(data, cv2.IMREAD_UNCHANGED)
    if ok and pages and pages[0].ndim == 3:
        return pages[0][..., :3]
    return None


def _decode_pil(data: bytes) -> np.ndarray | None:
    import io

    import cv2
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as im:
            rgb = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    except (OSError, SyntaxError, ValueError, ImportError):  # ImportError: no HEIF plugin here
        return None
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


_SIZED_MAGIC = (b"\x89PNG", b"\xff\xd8", b"BM", b"GIF8", b"II*\x00", b"MM\x00*")
"""Leading bytes of the formats whose size is read from the header (PNG, JPEG, BMP, GIF, TIFF;
WebP is checked apart)."""
MAX_PIXELS = 64_000_000
"""Largest image decoded (width x height): a 400 kB PNG can declare 20000 x 20000 pixels, and
decoding it would take 3 GB, enough to get a Jetson's runtime killed; an 8K frame is 33 MP."""


def _refuse_oversized(data: bytes, name: str) -> None:
    """Read the image's declared size from its header (Pillow, nothing decoded) and refuse one
    above :data:`MAX_PIXELS`; a header Pillow cannot read is left to the decoders."""
    import io
    import sys
    import warnings

    from PIL import Image, UnidentifiedImageError

    if not (data.startswith(_SIZED_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")):
        return
    # ultralytics patches Image.open to install a HEIF plugin when Pillow cannot identify a
    # file; its saved original opener is used when present (an offline device must not try)
    opener = getattr(sys.modules.get("ultralytics.utils.patches"), "_image_open", Image.open)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with opener(io.BytesIO(data)) as im:
                width, height = im.size
    except Image.DecompressionBombError as exc:  # Pillow's own bound, above ours
        raise ImageError(f"{name}: over the limit of {MAX_PIXELS // 1_000_000} megapixels, not "
                         f"decoded ({exc})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return
    if width * height > MAX_PIXELS:
        raise ImageError(f"{name}: {width}x{height} pixels is over the limit of "
                         f"{MAX_PIXELS // 1_000_000} megapixels (not decoded)")


def decode_image_bytes(data: bytes, name: str = "image") -> np.ndarray:
    """Decode an encoded image (the bytes of a file) into BGR uint8.

    Args:
        data: the file's bytes.
        name: file name or description; its suffix chooses the TIFF / Pillow paths, and it
            starts the error message.

    Returns:
        uint8 array (H, W, 3), BGR.

    Raises:
        ImageError: empty, truncated JPEG, over :data:`MAX_PIXELS`, or not decodable.
    """
    import cv2

    if not data:
        raise ImageError(f"{name}: empty file")
    if data.startswith(_JPEG_SOI):
        why = _jpeg_truncated(data)
        if why:
            raise ImageError(f"{name}: {why}")
    _refuse_oversized(data, name)
    suffix = Path(name).suffix.lower()
    buf = np.frombuffer(data, np.uint8)
    image = _decode_tiff(buf) if suffix in _TIFF_SUFFIXES else None
    if image is None and suffix in _PIL_SUFFIXES:
        image = _decode_pil(data)
    if image is None:
        image = cv2.imdecode(buf, cv2.IMREAD_COLOR)  # EXIF-upright, 8-bit, 3 channels
    if image is None:
        raise ImageError(f"{name}: does not decode as an image (corrupt or unsupported format)")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.dtype != np.uint8:
        raise ImageError(f"{name}: unsupported pixel type {image.dtype}")
    if image.ndim == 2 or image.shape[2] == 1:
        image = cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    elif image.shape[2] != 3:
        image = np.ascontiguousarray(image[..., :3])
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"{name}: image has no pixels")
    return np.ascontiguousarray(image)


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
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None


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
