"""Write the seed corpus (fuzz/corpus): small images in every supported format,
animations, EXIF orientation, transparency and truncated files. Rerun to refresh."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from PIL import Image

CORPUS = Path(__file__).parent / "corpus"


def _gradient(mode: str, size: tuple[int, int]) -> Image.Image:
    image = Image.linear_gradient("L").resize(size)
    return image.convert(mode)


def _save(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def seeds() -> dict[str, bytes]:
    rgb = _gradient("RGB", (24, 16))
    frames = [_gradient("P", (20, 20)).rotate(30 * i) for i in range(3)]
    exif = Image.Exif()
    exif[0x0112] = 6
    out = {
        "rgb.jpg": _save(rgb, "JPEG", quality=80),
        "exif-rotated.jpg": _save(rgb, "JPEG", exif=exif.tobytes()),
        "progressive.jpg": _save(rgb, "JPEG", progressive=True),
        "rgba.png": _save(_gradient("RGBA", (16, 16)), "PNG"),
        "grey16.png": _save(_gradient("I;16", (16, 16)), "PNG"),
        "palette.png": _save(_gradient("P", (16, 16)), "PNG", transparency=0),
        "anim.gif": _save(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "anim.png": _save(frames[0].convert("RGB"), "PNG", save_all=True, append_images=frames[1:]),
        "anim.webp": _save(
            frames[0].convert("RGB"), "WEBP", save_all=True, append_images=frames[1:]
        ),
        "lossless.webp": _save(rgb, "WEBP", lossless=True),
        "rgb.bmp": _save(rgb, "BMP"),
        "pages.tiff": _save(rgb, "TIFF", save_all=True, append_images=[rgb.rotate(90)]),
        "cmyk.tiff": _save(rgb.convert("CMYK"), "TIFF", compression="tiff_lzw"),
    }
    with contextlib.suppress(KeyError, OSError):  # this Pillow may have no AVIF encoder
        out["rgb.avif"] = _save(rgb, "AVIF")
    out["truncated.jpg"] = out["rgb.jpg"][: len(out["rgb.jpg"]) // 2]
    out["truncated.png"] = out["rgba.png"][:60]
    out["svg.svg"] = b'<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>'
    return out


def main() -> None:
    CORPUS.mkdir(exist_ok=True)
    for name, data in seeds().items():
        (CORPUS / name).write_bytes(data)
    print(f"wrote {len(seeds())} seeds to {CORPUS}")


if __name__ == "__main__":
    main()
