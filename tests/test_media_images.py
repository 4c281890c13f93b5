"""Images for email (newsletter.content.images): told by their content, resized, turned upright, stripped.

Real files made with Pillow in each format, read back with Pillow; no database.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from newsletter.content import images
from newsletter.content.media import alt_text, content_type_of, markdown, shown_filename, url
from newsletter.errors import InvalidInput
from newsletter.store.models import MediaItem

ORIENTATION, MAKE, GPS = 0x0112, 0x010F, 0x8825


def exif(**tags: object) -> bytes:
    data = Image.Exif()
    data[MAKE] = "SecretCam 3000"
    for key, value in tags.items():
        data[{"orientation": ORIENTATION}[key]] = value
    return data.tobytes()


def reopen(prepared: images.PreparedImage) -> Image.Image:
    image = Image.open(io.BytesIO(prepared.data))
    image.load()
    return image


def pixel(image: Image.Image, x: int, y: int) -> tuple[int, ...]:
    value = image.getpixel((x, y))
    assert isinstance(value, tuple)
    return value


def test_a_text_file_named_png_is_refused_naming_the_file(tmp_path: Path):
    fake = tmp_path / "photo.png"
    fake.write_text("<html><script>alert(1)</script></html>")
    with pytest.raises(InvalidInput) as refused:
        images.prepare(fake, shown_name="photo.png")
    assert refused.value.where == "photo.png"
    assert "not an image" in refused.value.message and "PNG, JPEG, GIF or WebP" in refused.value.message


def test_a_jpeg_named_png_is_stored_as_the_jpeg_it_is(tmp_path: Path):
    path = tmp_path / "really-a-jpeg.png"
    Image.new("RGB", (320, 200), (200, 30, 30)).save(path, "JPEG")
    prepared = images.prepare(path, shown_name="really-a-jpeg.png")
    assert (prepared.content_type, prepared.ext) == ("image/jpeg", "jpg")
    assert reopen(prepared).format == "JPEG"


@pytest.mark.parametrize("kind", ["BMP", "TIFF", "ICO"])
def test_other_image_formats_are_refused(tmp_path: Path, kind: str):
    path = tmp_path / f"picture.{kind.lower()}"
    Image.new("RGB", (16, 16), (1, 2, 3)).save(path, kind)
    with pytest.raises(InvalidInput, match="not an image this library takes"):
        images.prepare(path, shown_name=path.name)


def test_a_wide_jpeg_is_scaled_to_email_width_turned_upright_and_loses_its_metadata(tmp_path: Path):
    path = tmp_path / "camera.jpg"
    # Stored sideways, as a phone does: 3000 × 2000 pixels with "rotate 90° clockwise" in its EXIF.
    picture = Image.new("RGB", (3000, 2000), (10, 120, 200))
    picture.paste((250, 250, 0), (0, 0, 300, 300))  # a yellow mark in the stored top-left corner
    picture.save(path, "JPEG", exif=exif(orientation=6), comment=b"home address, 1 Secret Lane")
    prepared = images.prepare(path, shown_name="camera.jpg")
    shown = reopen(prepared)
    # Turned upright (2000 × 3000), then scaled to 1200 wide keeping the aspect ratio.
    assert (prepared.width, prepared.height) == shown.size == (1200, 1800)
    assert prepared.resized and not prepared.animated and shown.format == "JPEG"
    assert pixel(shown, 1150, 50)[0] > 200  # the mark is now at the top right, as the camera saw it
    assert dict(shown.getexif()) == {}  # no orientation left to apply twice, no camera, no GPS
    assert "comment" not in shown.info and b"Secret" not in prepared.data and b"SecretCam" not in prepared.data


def test_an_image_within_email_width_keeps_its_size_and_its_jpeg_quantisation(tmp_path: Path):
    path = tmp_path / "small.jpg"
    Image.new("RGB", (800, 600), (90, 90, 90)).save(path, "JPEG", quality=70, exif=exif())
    prepared = images.prepare(path, shown_name="small.jpg")
    shown = reopen(prepared)
    assert shown.size == (800, 600) and not prepared.resized
    with Image.open(path) as original:
        assert shown.quantization == original.quantization  # type: ignore[attr-defined]  # not encoded again
    assert dict(shown.getexif()) == {}


def test_a_cameras_jpeg_with_a_second_picture_is_stored_as_the_jpeg_of_its_first(tmp_path: Path):
    path = tmp_path / "camera-mpo.jpg"
    main, preview = Image.new("RGB", (1600, 800), (200, 0, 0)), Image.new("RGB", (160, 80), (0, 0, 200))
    main.save(path, "MPO", save_all=True, append_images=[preview])
    assert Image.open(path).format == "MPO"
    prepared = images.prepare(path, shown_name="camera-mpo.jpg")
    shown = reopen(prepared)
    assert prepared.content_type == "image/jpeg" and not prepared.animated
    assert shown.format == "JPEG" and shown.size == (1200, 600) and getattr(shown, "n_frames", 1) == 1


def test_png_with_transparency_keeps_format_and_alpha_when_resized(tmp_path: Path):
    path = tmp_path / "logo.png"
    logo = Image.new("RGBA", (2400, 600), (0, 0, 0, 0))
    logo.paste((255, 0, 0, 255), (0, 0, 1200, 600))
    logo.save(path, "PNG", exif=exif())
    prepared = images.prepare(path, shown_name="logo.png")
    shown = reopen(prepared)
    assert shown.format == "PNG" and shown.size == (1200, 300) and shown.mode == "RGBA"
    assert pixel(shown, 100, 100)[3] == 255 and pixel(shown, 1100, 100)[3] == 0
    assert dict(shown.getexif()) == {}


@pytest.mark.parametrize("kind", ["GIF", "WEBP"])
def test_still_gif_and_webp_are_scaled_and_keep_their_format(tmp_path: Path, kind: str):
    path = tmp_path / f"wide.{kind.lower()}"
    Image.new("RGB", (1800, 300), (0, 128, 0)).save(path, kind)
    prepared = images.prepare(path, shown_name=path.name)
    shown = reopen(prepared)
    assert shown.format == kind and shown.size == (1200, 200)
    assert prepared.content_type == f"image/{kind.lower()}"


@pytest.mark.parametrize("kind", ["GIF", "WEBP", "PNG"])
def test_an_animation_is_kept_byte_for_byte(tmp_path: Path, kind: str):
    path = tmp_path / f"moving.{kind.lower()}"
    frames = [Image.new("RGB", (1600, 40), (i * 100, 0, 0)) for i in range(3)]
    frames[0].save(path, kind, save_all=True, append_images=frames[1:], duration=100, loop=0)
    prepared = images.prepare(path, shown_name=path.name)
    assert prepared.animated and not prepared.resized
    assert prepared.data == path.read_bytes() and (prepared.width, prepared.height) == (1600, 40)
    assert getattr(reopen(prepared), "n_frames", 1) == 3


def test_a_decompression_bomb_is_refused_before_its_pixels_are_decoded(tmp_path: Path):
    path = tmp_path / "bomb.png"
    Image.new("1", (9000, 9000)).save(path, "PNG")  # 81 megapixels in about 10 KB
    assert path.stat().st_size < 100_000
    with pytest.raises(InvalidInput, match="more than the 40,000,000 pixels"):
        images.prepare(path, shown_name="bomb.png")


def test_a_truncated_image_is_refused(tmp_path: Path):
    path = tmp_path / "cut.jpg"
    buffer = io.BytesIO()
    Image.effect_noise((400, 400), 60).convert("RGB").save(buffer, "JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(InvalidInput, match="damaged or incomplete"):
        images.prepare(path, shown_name="cut.jpg")


def test_names_urls_and_markdown():
    item = MediaItem(hash="ab" * 32, ext="png", filename="Summer_party-2026.png")
    assert url(item, "https://news.example.org/") == f"https://news.example.org/media/{'ab' * 32}.png"
    assert alt_text(item) == "Summer party 2026"
    assert markdown(item, "https://x.org") == f"![Summer party 2026](https://x.org/media/{'ab' * 32}.png)"
    assert alt_text(MediaItem(hash="c" * 64, ext="png", filename="[evil]](x).png")) == "evil(x)"
    assert shown_filename("C:\\fakepath\\..\\me.png") == "me.png"
    assert shown_filename("../../etc/passwd\x00\n") == "passwd"
    assert shown_filename("") == "image"
    assert content_type_of(f"{'ab' * 32}.webp") == "image/webp"
    assert content_type_of(f"{'ab' * 32}.svg") is None
    assert content_type_of("../secret_key") is None
