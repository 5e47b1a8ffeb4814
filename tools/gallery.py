"""Overlays of `samserve segment` masks on the sample photos that scikit-image ships, for the README and the model
card: one click per photo (the green dot), the mask in colour.

python tools/gallery.py [--binary target/release/samserve] [--model models/samserve-s] [--out DIR]
"""

import argparse
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from skimage import data

ROOT = Path(__file__).resolve().parent.parent
# (photo, click x, click y): a click on one object of each.
CLICKS = [("coffee", 290, 150), ("chelsea", 260, 180), ("astronaut", 440, 430), ("rocket", 318, 260)]


def overlay(photo, mask, point):
    tinted = photo.astype(np.float32)
    colour = np.array([30, 144, 255], np.float32)
    tinted[mask] = 0.45 * tinted[mask] + 0.55 * colour
    image = Image.fromarray(tinted.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    x, y = point
    draw.ellipse([x - 6, y - 6, x + 6, y + 6], fill=(40, 220, 70), outline=(255, 255, 255), width=2)
    return image


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default=str(ROOT / "target" / "release" / "samserve"))
    parser.add_argument("--model", default=str(ROOT / "models" / "samserve-s"))
    parser.add_argument("--out", default=str(ROOT / "models" / "samserve-s" / "gallery"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        for name, x, y in CLICKS:
            photo = getattr(data, name)()
            source, mask_file = Path(scratch) / f"{name}.png", Path(scratch) / f"{name}-mask.png"
            Image.fromarray(photo).save(source)
            subprocess.run([args.binary, "--device", "cpu", "segment", "--model", args.model, str(source),
                            "--point", f"{x},{y}", "--multimask", "--out", str(mask_file)], check=True)
            mask = np.asarray(Image.open(mask_file)) == 255
            overlay(photo, mask, (x, y)).save(out / f"{name}.jpg", quality=85)
            print(f"{name}: click ({x}, {y}), mask of {int(mask.sum())} pixels")


if __name__ == "__main__":
    main()
