"""atheris fuzz target for pixguard's image decoder.

Random bytes and mutations of the seed corpus (fuzz/corpus: one small file per
supported format, animations, EXIF, truncations) go through ``load_image``; only a
pixguard ``ImageError`` may escape. Anything else is a crash that libFuzzer saves.

    python fuzz/fuzz_decode.py NEW_CORPUS_DIR fuzz/corpus -max_total_time=600

(the first folder receives new interesting inputs; keep fuzz/corpus read-only).
"""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports():
    from PIL import Image  # noqa: F401  (instrumented: Pillow's Python parsers)

    from pixguard._exceptions import ImageError
    from pixguard.images import DecodeLimits, load_image

# Small limits keep each input cheap, so the fuzzer explores instead of decoding.
LIMITS = DecodeLimits(
    max_bytes=1 << 20, max_pixels=4_000_000, max_frames=4, max_animation_pixels=8_000_000
)
MODEL_SIZE = (64, 64)


def test_one_input(data: bytes) -> None:
    with contextlib.suppress(ImageError):
        load_image(data, limits=LIMITS, min_size=MODEL_SIZE)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
