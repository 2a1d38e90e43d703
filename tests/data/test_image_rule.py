"""THE image rule (edgecl.data.images): formats, suffix case, truncated JPEG refused."""

import cv2
import numpy as np
import pytest

from edgecl.data.images import IMAGE_SUFFIXES, ImageError, decode_image_bytes, is_image, read_image
from edgecl.errors import EdgeclError

IMG = np.tile(np.arange(48, dtype=np.uint8)[None, :, None], (32, 1, 3))


def test_suffixes_are_ultralytics_img_formats():
    from ultralytics.data.utils import IMG_FORMATS

    assert set(IMAGE_SUFFIXES) == {f".{f}" for f in IMG_FORMATS}
    assert is_image("a.TIF") and is_image("b.Jpeg") and is_image("c.webp") and is_image("d.tiff")
    assert not is_image("e.txt") and not is_image("f.gif") and not is_image("g")


@pytest.mark.parametrize("name", ["a.tif", "b.TIF", "c.TIFF", "d.webp", "e.PNG", "f.bmp", "g.JPG", "h.jp2"])
def test_formats_and_suffix_case_read(tmp_path, name):
    ok, data = cv2.imencode("." + name.rsplit(".", 1)[1].lower(), IMG)
    assert ok
    path = tmp_path / name
    path.write_bytes(data.tobytes())
    image = read_image(path)
    assert image.shape == (32, 48, 3) and image.dtype == np.uint8


def test_grayscale_and_16bit_become_bgr_uint8(tmp_path):
    ok, data = cv2.imencode(".png", (IMG[..., 0].astype(np.uint16) * 256))
    path = tmp_path / "g16.png"
    path.write_bytes(data.tobytes())
    image = read_image(path)
    # stretched by its own range 0..12032 (to_8bit): 256 -> (256 * 255 + 6016) // 12032 = 5
    assert image.shape == (32, 48, 3) and image.dtype == np.uint8
    assert (image[0, 0, 0], image[0, 1, 0], image[0, 47, 0]) == (0, 5, 255)


def test_truncated_jpeg_refused_not_grey_filled(tmp_path):
    ok, data = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = data.tobytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    assert cv2.imread(str(path)) is not None  # what OpenCV alone would do: decode with grey fill
    with pytest.raises(ImageError, match=r"cut.jpg: truncated JPEG"):
        read_image(path)
    assert issubclass(ImageError, EdgeclError)


def test_jpeg_with_trailing_bytes_after_end_marker_accepted():
    ok, data = cv2.imencode(".jpg", IMG)
    assert decode_image_bytes(data.tobytes() + b"\x00\x00", "pad.jpg").shape == (32, 48, 3)


@pytest.mark.parametrize("content, why", [(b"", "empty file"), (b"junk", "does not decode")])
def test_unreadable_names_path_and_reason(tmp_path, content, why):
    path = tmp_path / "x.png"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=f"{path}: {why}"):
        read_image(path)
    with pytest.raises(ImageError, match="cannot read"):
        read_image(tmp_path / "missing.png")


def test_truncated_jpeg_refused_after_ultralytics_patched_pil(tmp_path):
    import ultralytics.utils.patches  # noqa: F401  (patches PIL.Image.open to install HEIF on demand)

    path = tmp_path / "cut.jpg"
    path.write_bytes(b"\xff\xd8 truncated jpeg")
    with pytest.raises(ImageError, match="truncated JPEG"):
        read_image(path)


@pytest.mark.parametrize("side", [9000, 20000])
def test_an_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path, side):
    import time

    from edgecl.data import images

    path = tmp_path / "big.png"  # a few hundred kB declaring 81 MP or 400 MP of zeros
    cv2.imwrite(str(path), np.zeros((side, side), np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    t0 = time.perf_counter()
    with pytest.raises(images.ImageError, match="over the limit of 64 megapixels") as refused:
        images.read_image(path)  # before: decoded in full (3 GB for 20000 x 20000)
    # one limit is named: before, Pillow's own bound followed ("exceeds limit of 178956970
    # pixels") in a message that said 64 megapixels
    assert "178956970" not in str(refused.value)
    if side == 20000:
        assert str(refused.value).endswith("big.png: 400 megapixels, over the limit of 64 "
                                           "megapixels, not decoded")
    assert time.perf_counter() - t0 < 2.0
    small = tmp_path / "ok.png"
    cv2.imwrite(str(small), np.zeros((40, 7000, 3), np.uint8))  # long but small: decoded
    assert images.read_image(small).shape == (40, 7000, 3)


def test_multi_page_tiff_decodes_only_its_first_page():
    import io
    import tracemalloc

    from PIL import Image

    buf = io.BytesIO()  # a 64x64 thumbnail first, then a 9000x9000 page (81 MB decoded)
    Image.new("RGB", (64, 64), (0, 0, 255)).save(
        buf, "TIFF", save_all=True, append_images=[Image.new("1", (9000, 9000))],
        compression="tiff_deflate")
    tracemalloc.start()
    try:
        image = decode_image_bytes(buf.getvalue(), "thumbfirst.tif")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert image.shape == (64, 64, 3) and tuple(image[0, 0]) == (255, 0, 0)  # BGR of RGB blue
    assert peak < 20_000_000  # before: every page decoded, 81 MB for the second one


@pytest.mark.parametrize("jp2", [False, True])
def test_jpeg_2000_over_the_pixel_limit_is_refused(jp2):
    import io

    from PIL import Image

    buf = io.BytesIO()  # a few hundred bytes declaring 8200 x 8200 = 67.24 MP
    Image.new("L", (8200, 8200)).save(buf, "JPEG2000", no_jp2=not jp2)
    with pytest.raises(ImageError, match=r"big.jp2: 8200x8200 pixels is over the limit of 64 "
                                         r"megapixels \(not decoded\)"):
        decode_image_bytes(buf.getvalue(), "big.jp2")


@pytest.mark.parametrize("name", ["big.avif", "big.png"])
def test_avif_over_the_pixel_limit_is_refused_from_its_ispe_box(name):
    import io
    import struct

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48)).save(buf, "AVIF")
    data = buf.getvalue()
    at = data.index(b"ispe") + 8  # box type, version and flags, then width and height
    data = data[:at] + struct.pack(">II", 9000, 9000) + data[at + 8:]
    with pytest.raises(ImageError, match="9000x9000 pixels is over the limit of 64 megapixels"):
        decode_image_bytes(data, name)


def test_format_opencv_decodes_but_pillow_cannot_size_is_refused():
    ok, data = cv2.imencode(".pfm", np.zeros((4, 5, 3), np.float32))
    assert ok and cv2.imdecode(data, cv2.IMREAD_COLOR) is not None  # OpenCV alone decodes it
    with pytest.raises(ImageError, match=r"x.png: PFM image, whose size cannot be read before "
                                         r"decoding \(not decoded\)"):
        decode_image_bytes(data.tobytes(), "x.png")


def test_heif_pillow_cannot_size_is_not_handed_to_opencv():
    data = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 32
    with pytest.raises(ImageError, match=r"x.png: does not decode as an image \(AVIF/HEIF header "
                                         r"unreadable, no HEIF plugin\?: its size cannot be read\)"):
        decode_image_bytes(data, "x.png")


def test_tiff_pillow_cannot_open_is_sized_from_its_tags():
    ok, data = cv2.imencode(".tiff", np.zeros((96, 160, 3), np.float32))  # Pillow: no such mode
    with pytest.raises(ImageError, match=r"f.tif: 32-bit floating-point pixels"):
        decode_image_bytes(data.tobytes(), "f.tif")


@pytest.mark.parametrize("shape", [(152, 160), (96, 160, 3)])
def test_a_float_tiff_of_temperatures_is_named_as_such_not_corrupt(shape):
    """A radiometric thermal export (one float32 channel, degrees Celsius) was refused as
    'does not decode as an image (corrupt or unsupported format)': it is a valid TIFF."""
    temps = (20 + np.random.default_rng(0).random(shape) * 15).astype(np.float32)
    ok, data = cv2.imencode(".tiff", temps)
    assert ok
    with pytest.raises(ImageError) as caught:
        decode_image_bytes(data.tobytes(), "t.tiff")
    assert str(caught.value) == ("t.tiff: 32-bit floating-point pixels (e.g. temperatures of a "
                                 "radiometric thermal export): not supported; export the frames "
                                 "as 8- or 16-bit images")


def test_a_truncated_tiff_gives_one_reason_and_no_opencv_lines(tmp_path, capfd):
    """Before: libtiff's and OpenCV's own lines (``[ERROR:0@0.05] global grfmt_tiff.cpp:117
    TIFF_Error ...``, 8 of them) reached the terminal before edgecl's one-line reason."""
    import io

    import cv2
    import numpy as np
    import pytest
    from PIL import Image

    from edgecl.data.images import ImageError, read_image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(buf, "TIFF")
    (tmp_path / "cut.tif").write_bytes(buf.getvalue()[:len(buf.getvalue()) // 2])
    level = cv2.utils.logging.getLogLevel()
    with pytest.raises(ImageError, match="cut.tif: does not decode"):
        read_image(tmp_path / "cut.tif")
    out, err = capfd.readouterr()
    assert "TIFF" not in out + err
    assert cv2.utils.logging.getLogLevel() == level  # OpenCV's own level is given back


@pytest.mark.parametrize("dtype, cold, hot, want", [
    (np.int16, -1000, 1000, (0, 255)),  # signed centi-degrees: stretched as 16-bit counts are
    (np.int8, -100, 100, (28, 228)),  # v + 128, as 8-bit pixels are not stretched
])
@pytest.mark.parametrize("channels", [1, 3])
def test_signed_pixels_keep_their_order(dtype, cold, hot, want, channels):
    """Before: a signed TIFF (a radiometric export in signed centi-degrees) was read by
    OpenCV's 8-bit path, which wraps negatives: a -1000 background read 252 and a +1000 object
    3, hot and cold swapped without a word. Now hot is bright and cold dark."""
    shape = (12, 16) if channels == 1 else (12, 16, 3)
    image = np.full(shape, cold, dtype)
    image[2:6, 4:8] = hot
    ok, data = cv2.imencode(".tiff", image)
    assert ok
    bgr = decode_image_bytes(data.tobytes(), "signed.tif")
    assert bgr.dtype == np.uint8 and bgr.shape == (12, 16, 3)
    assert (int(bgr[0, 0, 0]), int(bgr[3, 5, 0])) == want


def test_a_damaged_png_gives_one_reason_and_no_libpng_lines(capfd):
    """Before: a PNG zero-padded after a write cut short (a power cut on a pre-allocated file)
    printed two bare "libpng error: IDAT: CRC error" lines naming no file, then edgecl's
    "does not decode as an image". Now one reason, found before libpng sees the file."""
    image = np.zeros((48, 64), np.uint8)
    image[10:30, 20:40] = 200
    ok, data = cv2.imencode(".png", image)
    data = data.tobytes()
    idat = data.index(b"IDAT") - 4
    padded = data[:idat + 20] + b"\0" * (len(data) - idat - 20)
    with pytest.raises(ImageError) as err:
        decode_image_bytes(padded, "pad.png")
    assert str(err.value) == f"pad.png: damaged PNG: its IDAT chunk at byte {idat} fails its CRC"
    flipped = bytearray(data)
    flipped[idat + 10] ^= 0xFF
    with pytest.raises(ImageError, match="its IDAT chunk at byte .* fails its CRC"):
        decode_image_bytes(bytes(flipped), "flip.png")
    zeros_after = data[:idat] + b"\0" * 40
    with pytest.raises(ImageError, match=f"no chunk at byte {idat} \\(zeros"):
        decode_image_bytes(zeros_after, "zeros.png")
    with pytest.raises(ImageError, match="truncated PNG \\(its IDAT chunk"):
        decode_image_bytes(data[:idat + 20], "cut.png")
    assert capfd.readouterr().err == ""
    assert decode_image_bytes(data, "whole.png")[20, 30].tolist() == [200, 200, 200]
    assert decode_image_bytes(data + b"junk after IEND", "tail.png").shape == (48, 64, 3)
