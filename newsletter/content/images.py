"""Images for email: checked by what they are (never by their name), resized for email, metadata stripped.

:func:`prepare` takes an uploaded file's path and returns the bytes to store:

* **What it is**: Pillow opens the file and must find a PNG, JPEG, GIF or WebP; the name and the
  Content-Type the client sent are never asked. A text file named ``.png`` is refused; a JPEG named
  ``.png`` is stored as the JPEG it is.
* **Decompression bombs**: the pixel count is read from the header before a pixel is decoded, and
  more than :data:`MAX_PIXELS` is refused (Pillow's own ``Image.MAX_IMAGE_PIXELS`` is set to the same
  figure, and its warning is an error here); an animation's frames count together
  (:data:`MAX_ANIMATION_PIXELS`).
* **Email width**: a still image wider than :data:`EMAIL_WIDTH` (1200 px: twice the 600 px layout,
  sharp on high-density screens) is scaled down to it, keeping its aspect ratio and its format.
* **Orientation and metadata**: a still image's EXIF orientation is applied to its pixels, then it is
  written again by Pillow without EXIF, XMP, IPTC or comments (GPS positions and camera serial numbers
  do not go out to every reader); only the colour profile (ICC) is kept. A JPEG that needs neither
  resizing nor turning keeps its quantisation tables (``quality="keep"``), so it loses nothing visible.
* **Animations** (GIF, WebP, APNG with more than one frame) are stored as uploaded, byte for byte:
  re-encoding an animation frame by frame loses its palette and timing tricks, and an animated image
  is small by nature. They are still opened and their first frame decoded, so a broken file is refused.

Raises InvalidInput (``where`` the file's shown name) for anything that is not one of those images.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from newsletter.errors import InvalidInput

if TYPE_CHECKING:
    from PIL import Image

#: The widest image kept: twice the email layout's 600 px.
EMAIL_WIDTH = 1200
#: The most pixels a still image may have (8,000 × 5,000): a photo from any camera fits.
MAX_PIXELS = 40_000_000
#: The most pixels an animation's frames may have together.
MAX_ANIMATION_PIXELS = 200_000_000

#: Pillow's format name -> (Content-Type, file extension).
FORMATS: dict[str, tuple[str, str]] = {
    "PNG": ("image/png", "png"),
    "JPEG": ("image/jpeg", "jpg"),
    "GIF": ("image/gif", "gif"),
    "WEBP": ("image/webp", "webp"),
}
#: The file extensions served, and their Content-Type.
CONTENT_TYPES: dict[str, str] = {ext: content_type for content_type, ext in FORMATS.values()}
ACCEPTED = "PNG, JPEG, GIF or WebP"


@dataclass(frozen=True)
class PreparedImage:
    """The bytes to store and what they are."""

    data: bytes
    content_type: str
    ext: str
    width: int
    height: int
    resized: bool  # scaled down to EMAIL_WIDTH
    animated: bool  # kept byte for byte


def prepare(path: Path, *, shown_name: str) -> PreparedImage:
    """The image at ``path``, ready to store (see the module's doc). Raises InvalidInput naming ``shown_name``."""
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=list(FORMATS)) as probe:
                probe.verify()  # the file's structure (PNG: chunk checksums), before any pixel is decoded
            with Image.open(path, formats=list(FORMATS)) as image:
                width, height = image.size
                # A camera's JPEG with a second picture in it (MPO: a preview, a depth map) is the JPEG of its first.
                frames = 1 if image.format == "MPO" else int(getattr(image, "n_frames", 1))
                if width * height > MAX_PIXELS or width * height * frames > MAX_ANIMATION_PIXELS:
                    raise InvalidInput(_too_many_pixels(width, height, frames), where=shown_name)
                image.load()  # the first frame, decoded: a truncated or corrupt file fails here
                content_type, ext = FORMATS["JPEG" if image.format == "MPO" else image.format or ""]
                if frames > 1:
                    return PreparedImage(path.read_bytes(), content_type, ext, width, height, False, True)
                return _rewritten(image, content_type, ext)
    except InvalidInput:
        raise
    except UnidentifiedImageError:
        raise InvalidInput(f"not an image this library takes: send a {ACCEPTED} file", where=shown_name) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidInput(
            f"the image has more than the {MAX_PIXELS:,} pixels taken (a decompression bomb?)", where=shown_name
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError, KeyError) as exc:
        raise InvalidInput(f"the image is damaged or incomplete ({exc})", where=shown_name) from None


def _too_many_pixels(width: int, height: int, frames: int) -> str:
    size = f"{width} × {height} px" + (f" × {frames} frames" if frames > 1 else "")
    limit = MAX_PIXELS if frames == 1 else MAX_ANIMATION_PIXELS
    return f"the image is {size}, more than the {limit:,} pixels taken"


#: EXIF's Orientation tag; 1 is upright.
ORIENTATION = 0x0112


def _rewritten(image: Image.Image, content_type: str, ext: str) -> PreparedImage:
    """A still image turned upright, scaled to EMAIL_WIDTH if wider, written again without metadata."""
    from PIL import Image, ImageOps

    kind = "JPEG" if image.format == "MPO" else image.format or ""
    icc = image.info.get("icc_profile")
    transparency = image.info.get("transparency")
    picture = image
    if image.getexif().get(ORIENTATION, 1) not in (0, 1):
        picture = ImageOps.exif_transpose(image)
    resized = picture.width > EMAIL_WIDTH
    if resized:
        if picture.mode not in ("RGB", "RGBA", "L", "LA", "CMYK"):
            picture = picture.convert("RGBA" if transparency is not None or "A" in picture.mode else "RGB")
            transparency = None
        height = max(1, round(picture.height * EMAIL_WIDTH / picture.width))
        picture = picture.resize((EMAIL_WIDTH, height), Image.Resampling.LANCZOS)
    options: dict[str, Any] = {"icc_profile": icc} if icc else {}
    if kind == "JPEG":
        if picture is image and image.format == "JPEG":  # untouched: the same quantisation, nothing lost
            options.update(quality="keep", subsampling="keep")
        elif picture is image:  # an MPO's first picture: Pillow keeps tables of plain JPEGs only
            options.update(quality=92, optimize=True)
        else:
            options.update(quality=88, optimize=True, progressive=True)
            if picture.mode not in ("RGB", "L", "CMYK"):
                picture = picture.convert("RGB")
    elif kind == "PNG":
        options["optimize"] = True
    elif kind == "WEBP":
        options.update(quality=90, method=4)
    if transparency is not None and kind in ("PNG", "GIF") and picture.mode in ("P", "L", "RGB"):
        options["transparency"] = transparency
    picture.info = {}  # no EXIF, XMP, comments or text chunks are written from here
    if picture is image:
        picture.encoderinfo = {}
    out = io.BytesIO()
    picture.save(out, kind, **options)
    return PreparedImage(out.getvalue(), content_type, ext, picture.width, picture.height, resized, False)
