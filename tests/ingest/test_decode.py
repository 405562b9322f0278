import io

import numpy as np
import pytest
from PIL import Image

from lakeio.errors import SourceError
from lakeio.ingest.decode import DecodeOptions, conform_array, decode_image, probe_header


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _gradient(h=40, w=60):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 4 % 256, y * 6 % 256, (x + y) % 256], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "WEBP"])
def test_lossless_formats_decode_to_the_exact_pixels(fmt):
    pixels = _gradient()
    kwargs = {"lossless": True} if fmt == "WEBP" else {}
    out = decode_image(_encode(Image.fromarray(pixels), fmt, **kwargs), "x", DecodeOptions())
    np.testing.assert_array_equal(out, pixels)


def test_exif_orientation_is_honoured():
    pixels = _gradient(40, 60)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display = rotate 90° clockwise
    data = _encode(Image.fromarray(pixels), "PNG", exif=exif)
    out = decode_image(data, "x", DecodeOptions())
    assert out.shape == (60, 40, 3)
    np.testing.assert_array_equal(out, np.rot90(pixels, k=-1))
    head = probe_header(data, "x", DecodeOptions())
    assert (head.width, head.height) == (40, 60)


def test_sixteen_bit_images_are_scaled_not_clipped():
    values = np.array([[0, 256, 32768, 65535]], dtype=np.uint16)
    data = _encode(Image.fromarray(values), "PNG")
    out = decode_image(data, "x", DecodeOptions(channels=1))
    assert out[0, :, 0].tolist() == [0, 1, 128, 255]


def test_alpha_is_composited_onto_the_background_not_dropped():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 0] = 200  # red under a fully transparent pixel must not leak through
    rgba[0, 0, 3] = 255
    out = decode_image(_encode(Image.fromarray(rgba), "PNG"), "x", DecodeOptions())
    assert out[0, 0].tolist() == [200, 0, 0]
    assert out[1, 1].tolist() == [255, 255, 255]


def test_palette_image_with_transparency_and_gif_first_frame():
    frames = [Image.new("P", (8, 8), color=i) for i in (1, 2)]
    for frame in frames:
        frame.putpalette([0, 0, 0, 10, 20, 30, 90, 80, 70] + [0] * 759)
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    out = decode_image(buf.getvalue(), "x.gif", DecodeOptions())
    assert out.shape == (8, 8, 3)
    assert out[0, 0].tolist() == [10, 20, 30]


def test_cmyk_jpeg_becomes_rgb():
    image = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    out = decode_image(_encode(image, "JPEG", quality=95), "x", DecodeOptions())
    assert out.shape == (16, 16, 3)
    r, g, b = out[8, 8].tolist()
    assert r > 200 and g < 60 and b < 60


def test_resize_modes_give_the_target_shape_and_their_own_geometry():
    pixels = np.full((20, 40, 3), 200, dtype=np.uint8)
    data = _encode(Image.fromarray(pixels), "PNG")
    for mode in ("center-crop", "pad", "stretch"):
        out = decode_image(data, "x", DecodeOptions(size=(10, 10), resize=mode))
        assert out.shape == (10, 10, 3)
    padded = decode_image(data, "x", DecodeOptions(size=(10, 10), resize="pad"))
    assert padded[0, 0].tolist() == [0, 0, 0]  # pad bars are black
    assert padded[5, 5].tolist() == [200, 200, 200]
    cropped = decode_image(data, "x", DecodeOptions(size=(10, 10), resize="center-crop"))
    assert (cropped == 200).all()


def test_large_jpeg_uses_reduced_decoding_and_stays_faithful():
    big = np.asarray(
        Image.fromarray(_gradient(40, 60)).resize((1600, 1200), Image.Resampling.BILINEAR)
    )
    data = _encode(Image.fromarray(big), "JPEG", quality=95)
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", (100, 75))
    assert image.size[0] < 1600  # the decoder offers a reduced-size mode for this file
    out = decode_image(data, "x", DecodeOptions(size=(75, 100), resize="stretch"))
    reference = np.asarray(Image.fromarray(big).resize((100, 75), Image.Resampling.BILINEAR))
    assert np.abs(out.astype(int) - reference.astype(int)).mean() < 6


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"this is not an image at all", "not a recognised image"),
        (None, "truncated or corrupt"),
    ],
)
def test_broken_files_are_refused_with_a_reason(data, reason):
    if data is None:
        full = _encode(Image.fromarray(_gradient(200, 300)), "JPEG")
        data = full[: len(full) * 2 // 3]  # header intact, scan data cut short
    with pytest.raises(SourceError, match=reason) as info:
        decode_image(data, "cls/bad.jpg", DecodeOptions())
    assert info.value.path == "cls/bad.jpg"


def test_decompression_bomb_is_refused_before_decoding():
    data = _encode(Image.new("L", (5000, 5000)), "PNG")
    with pytest.raises(SourceError, match="25,000,000 pixels exceeds the limit of 1,000,000"):
        decode_image(data, "bomb.png", DecodeOptions(max_pixels=1_000_000))


def test_absurd_aspect_ratio_is_refused():
    data = _encode(Image.new("RGB", (2000, 10)), "PNG")
    with pytest.raises(SourceError, match=r"aspect ratio 200\.0:1"):
        decode_image(data, "sliver.png", DecodeOptions())


def test_array_images_are_conformed_or_refused():
    gray = np.arange(16, dtype=np.uint8).reshape(4, 4)
    out = conform_array(gray, "a[0]", DecodeOptions(channels=3))
    assert out.shape == (4, 4, 3) and (out[..., 0] == gray).all()
    with pytest.raises(SourceError, match="dtype float32 is not uint8"):
        conform_array(gray.astype(np.float32), "a[1]", DecodeOptions())


def test_plain_jpeg_fast_path_matches_pillow_exactly():
    pixels = _gradient(48, 64)
    data = _encode(Image.fromarray(pixels), "JPEG", quality=90)
    reference = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    np.testing.assert_array_equal(decode_image(data, "x.jpg", DecodeOptions()), reference)
    gray = _encode(Image.fromarray(pixels[..., 0]), "JPEG", quality=90)
    as_rgb = decode_image(gray, "g.jpg", DecodeOptions(channels=3))
    assert as_rgb.shape == (48, 64, 3) and (as_rgb[..., 0] == as_rgb[..., 2]).all()
    as_gray = decode_image(gray, "g.jpg", DecodeOptions(channels=1))
    np.testing.assert_array_equal(as_gray[..., 0], np.asarray(Image.open(io.BytesIO(gray))))


def test_jpeg_with_exif_orientation_takes_the_rotating_path():
    pixels = _gradient(40, 60)
    exif = Image.Exif()
    exif[0x0112] = 8  # display = rotate 90° counter-clockwise
    data = _encode(Image.fromarray(pixels), "JPEG", quality=95, exif=exif)
    out = decode_image(data, "x.jpg", DecodeOptions())
    assert out.shape == (60, 40, 3)
    reference = np.rot90(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), k=1)
    np.testing.assert_array_equal(out, reference)


def test_dark_sixteen_bit_images_keep_their_scale():
    dark = np.array([[0, 200, 256, 300]], dtype=np.uint16)  # all below 8 bits' worth of range
    out = decode_image(_encode(Image.fromarray(dark), "PNG"), "dark.png", DecodeOptions(channels=1))
    assert out[0, :, 0].tolist() == [0, 0, 1, 1]


def test_png_exif_after_a_large_text_chunk_is_still_honoured():
    from PIL import PngImagePlugin

    pixels = _gradient(20, 40)
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "x" * 8000)  # pushes the eXIf chunk beyond the first 4 KB
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _encode(Image.fromarray(pixels), "PNG", pnginfo=info, exif=exif)
    assert data.index(b"eXIf") > 4096
    head = probe_header(data, "x.png", DecodeOptions())
    out = decode_image(data, "x.png", DecodeOptions())
    assert (head.width, head.height) == (20, 40) and out.shape == (40, 20, 3)


def test_a_failure_in_lakeio_own_code_is_an_error_not_a_rejected_image(monkeypatch):
    """Only the decoder's trouble with the bytes rejects a file; a lakeio bug must surface."""
    import importlib
    import io

    from PIL import Image

    from lakeio.errors import SourceError
    from lakeio.ingest.decode import DecodeOptions, decode_image

    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, "PNG")
    with pytest.raises(SourceError, match=r"x\.png"):  # the plugin's own trouble: a reject
        decode_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "x.png", DecodeOptions(), None)

    def bug(image, opts):
        raise IndexError("a bug in lakeio")

    monkeypatch.setattr(importlib.import_module("lakeio.ingest.decode"), "_to_colour", bug)
    with pytest.raises(IndexError, match="a bug in lakeio"):
        decode_image(png.getvalue(), "y.png", DecodeOptions(), None)
