"""Synthetic scenes with instance masks, for training, evaluation and test fixtures.

A scene is a textured, possibly cluttered background with objects painted over it in depth order: later objects
occlude earlier ones, some are nested inside another. An instance mask is the visible part of its object (COCO
style). Shapes: convex (ellipses, rectangles, convex polygons), concave (stars, random polygons), thin (bars,
curves) and with holes (rings, frames). Fills: flat, gradients, stripes, checkers, dots, smooth noise. Then lighting
(a smooth illumination field), blur and sensor noise. Everything is drawn from one numpy Generator, so a seed gives
the same scene on every machine.

`python tools/synthetic.py OUT_DIR --count N --seed S` writes a COCO dataset: OUT_DIR/images/*.png and
OUT_DIR/annotations.json with RLE segmentations.
"""

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("ellipse", "rectangle", "convex", "concave", "star", "ring", "frame", "bar", "curve")


def _colour(rng):
    return rng.integers(0, 256, size=3).astype(np.float32)


def _fill(rng, h, w):
    """An RGB fill of h x w: flat, gradient, stripes, checkers, dots or smooth noise."""
    kind = rng.integers(0, 6)
    a, b = _colour(rng), _colour(rng)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 0:
        return np.broadcast_to(a, (h, w, 3)).copy()
    if kind == 1:
        angle = rng.uniform(0, np.pi)
        t = xx * np.cos(angle) + yy * np.sin(angle)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
        return a * (1 - t[..., None]) + b * t[..., None]
    if kind == 2:
        angle, period = rng.uniform(0, np.pi), rng.uniform(4, 24)
        t = (np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period) > 0).astype(np.float32)
        return a * (1 - t[..., None]) + b * t[..., None]
    if kind == 3:
        cell = rng.uniform(4, 20)
        t = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2).astype(np.float32)
        return a * (1 - t[..., None]) + b * t[..., None]
    if kind == 4:
        spacing = rng.uniform(6, 18)
        radius = spacing * rng.uniform(0.15, 0.4)
        t = ((np.mod(xx, spacing) - spacing / 2) ** 2 + (np.mod(yy, spacing) - spacing / 2) ** 2 < radius**2)
        return a * (1 - t[..., None]) + b * t[..., None]
    cells = int(rng.integers(2, 10))
    coarse = rng.uniform(0, 255, size=(cells, cells, 3)).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), dtype=np.float32)
    return 0.5 * smooth + 0.5 * a


def _polygon(rng, cx, cy, size, n, jagged):
    angles = np.sort(rng.uniform(0, 2 * np.pi, n)) if jagged else np.linspace(0, 2 * np.pi, n, endpoint=False)
    radii = size * (rng.uniform(0.35, 1.0, n) if jagged else np.ones(n))
    return [(cx + r * np.cos(t), cy + r * np.sin(t)) for t, r in zip(angles, radii)]


def _shape_mask(rng, h, w, size, centre=None):
    """A binary mask of one random shape of about `size` pixels radius in an h x w canvas."""
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    cx, cy = centre if centre is not None else (rng.uniform(0.05, 0.95) * w, rng.uniform(0.05, 0.95) * h)
    kind = SHAPES[rng.integers(0, len(SHAPES))]
    rx, ry = size * rng.uniform(0.5, 1.0), size * rng.uniform(0.5, 1.0)
    if kind in ("ellipse", "ring"):
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
        if kind == "ring":
            k = rng.uniform(0.35, 0.65)
            draw.ellipse([cx - rx * k, cy - ry * k, cx + rx * k, cy + ry * k], fill=0)
    elif kind in ("rectangle", "frame"):
        angle = rng.uniform(0, np.pi)
        corners = [(-rx, -ry), (rx, -ry), (rx, ry), (-rx, ry)]
        rotate = lambda px, py, k=1.0: (cx + k * (px * np.cos(angle) - py * np.sin(angle)),
                                        cy + k * (px * np.sin(angle) + py * np.cos(angle)))
        draw.polygon([rotate(px, py) for px, py in corners], fill=255)
        if kind == "frame":
            k = rng.uniform(0.4, 0.7)
            draw.polygon([rotate(px, py, k) for px, py in corners], fill=0)
    elif kind == "bar":
        angle = rng.uniform(0, np.pi)
        dx, dy = np.cos(angle) * size * 1.6, np.sin(angle) * size * 1.6
        draw.line([cx - dx, cy - dy, cx + dx, cy + dy], fill=255, width=max(2, int(size * rng.uniform(0.1, 0.25))))
    elif kind == "curve":
        t = np.linspace(0, 1, 24)
        phase, bend = rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 1.0)
        points = [(cx + size * 1.5 * (s - 0.5) * 2, cy + size * bend * np.sin(2 * np.pi * s + phase)) for s in t]
        draw.line(points, fill=255, width=max(2, int(size * rng.uniform(0.12, 0.3))), joint="curve")
    elif kind == "star":
        n = 2 * int(rng.integers(4, 8))
        points = _polygon(rng, cx, cy, size, n, jagged=False)
        inner = rng.uniform(0.35, 0.6)
        points = [(cx + (px - cx) * (inner if i % 2 else 1), cy + (py - cy) * (inner if i % 2 else 1))
                  for i, (px, py) in enumerate(points)]
        draw.polygon(points, fill=255)
    else:
        n = int(rng.integers(5, 12))
        points = _polygon(rng, cx, cy, size, n, jagged=kind == "concave")
        draw.polygon(points, fill=255)
    return np.asarray(canvas) > 127


def _lighting(rng, h, w):
    """A smooth illumination field: a linear ramp times a soft vignette."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (xx * np.cos(angle) + yy * np.sin(angle)) / max(h, w)
    field = 1.0 + rng.uniform(-0.35, 0.35) * (ramp - ramp.mean())
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    vignette = 1.0 - rng.uniform(0, 0.3) * (((xx - cx) ** 2 + (yy - cy) ** 2) / float(h * h + w * w))
    return (field * vignette * rng.uniform(0.75, 1.2))[..., None]


def make_scene(rng, height, width, max_objects=6, min_area_fraction=0.002, clutter=True):
    """Returns (image HxWx3 uint8, list of HxW bool instance masks of the visible parts)."""
    image = _fill(rng, height, width)
    owner = np.full((height, width), -1, dtype=np.int32)
    shapes = []
    short = min(height, width)
    if clutter and rng.uniform() < 0.5:  # small distractors first, so objects may cover them
        for _ in range(int(rng.integers(3, 12))):
            shapes.append(_shape_mask(rng, height, width, short * rng.uniform(0.03, 0.08)))
    for _ in range(int(rng.integers(1, max_objects + 1))):
        mask = _shape_mask(rng, height, width, short * rng.uniform(0.08, 0.4))
        shapes.append(mask)
        if rng.uniform() < 0.3 and mask.any():  # a nested object inside this one
            ys, xs = np.nonzero(mask)
            k = rng.integers(0, len(xs))
            inner = _shape_mask(rng, height, width, short * rng.uniform(0.03, 0.1), centre=(xs[k], ys[k]))
            shapes.append(inner & mask)
    for index, mask in enumerate(shapes):
        image[mask] = _fill(rng, height, width)[mask]
        owner[mask] = index
    image = image * _lighting(rng, height, width)
    if rng.uniform() < 0.5:
        radius = rng.uniform(0.3, 1.5)
        image = np.asarray(
            Image.fromarray(image.clip(0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(radius)),
            dtype=np.float32,
        )
    image = image + rng.normal(0, rng.uniform(0, 10), image.shape)
    masks = [owner == i for i in range(len(shapes))]
    masks = [m for m in masks if m.sum() >= max(min_area_fraction * height * width, 16)]
    return image.clip(0, 255).astype(np.uint8), masks


def random_size(rng, longest_range=(256, 640)):
    """A random image size: the longest side in `longest_range`, aspect ratio between 1:2 and 2:1."""
    longest = int(rng.integers(*longest_range))
    shortest = int(longest * rng.uniform(0.5, 1.0))
    return (longest, shortest) if rng.uniform() < 0.5 else (shortest, longest)


def write_coco(folder, count, seed, longest_range=(256, 640), min_area_fraction=0.002):
    """Writes `count` scenes as a COCO dataset (PNG images, RLE annotations) under `folder`; instances smaller
    than `min_area_fraction` of their image are not annotated."""
    from pycocotools import mask as coco_mask

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for image_id in range(1, count + 1):
        height, width = random_size(rng, longest_range)
        pixels, masks = make_scene(rng, height, width, min_area_fraction=min_area_fraction)
        while not masks:
            pixels, masks = make_scene(rng, height, width, min_area_fraction=min_area_fraction)
        file_name = f"{image_id:05d}.png"
        Image.fromarray(pixels).save(folder / "images" / file_name)
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for mask in masks:
            rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": 1,
                "segmentation": {"size": [height, width], "counts": rle["counts"].decode("ascii")},
                "area": int(mask.sum()),
                "bbox": [float(v) for v in coco_mask.toBbox(rle)],
                "iscrowd": 0,
            })
    coco = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "object"}]}
    (folder / "annotations.json").write_text(json.dumps(coco))
    return coco


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1_000_000)
    parser.add_argument("--min-area", type=float, default=0.002, help="smallest instance, as a fraction of the image")
    args = parser.parse_args()
    coco = write_coco(args.out, args.count, args.seed, min_area_fraction=args.min_area)
    print(f"wrote {len(coco['images'])} images, {len(coco['annotations'])} instances to {args.out}")
