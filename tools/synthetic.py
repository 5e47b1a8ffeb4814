"""Synthetic scenes with instance masks, for training and for test fixtures.

Each scene is a textured background with a few objects painted over it in depth order, so that later objects occlude
earlier ones; an instance mask is the visible part of its object. Everything is drawn from one numpy Generator, so a
seed gives the same scene on every machine.
"""

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("ellipse", "rectangle", "polygon", "star", "ring", "bar")


def _colour(rng):
    return rng.integers(0, 256, size=3)


def _fill(rng, h, w):
    """An RGB fill for an object or the background: flat, a linear gradient or a smooth noise texture."""
    kind = rng.integers(0, 3)
    if kind == 0:
        return np.broadcast_to(_colour(rng), (h, w, 3)).astype(np.float32)
    if kind == 1:
        a, b = _colour(rng), _colour(rng)
        angle = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:h, 0:w]
        t = xx * np.cos(angle) + yy * np.sin(angle)
        t = (t - t.min()) / max(t.max() - t.min(), 1)
        return (a * (1 - t[..., None]) + b * t[..., None]).astype(np.float32)
    cells = rng.integers(2, 9)
    coarse = rng.uniform(0, 255, size=(cells, cells, 3)).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), dtype=np.float32)
    base = _colour(rng).astype(np.float32)
    return 0.5 * smooth + 0.5 * base


def _shape_mask(rng, h, w):
    """A binary mask of one random shape somewhere in an h x w canvas."""
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    size = rng.uniform(0.12, 0.45) * min(h, w)
    cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
    kind = SHAPES[rng.integers(0, len(SHAPES))]
    if kind in ("ellipse", "ring"):
        rx, ry = size * rng.uniform(0.5, 1.0), size * rng.uniform(0.5, 1.0)
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
        if kind == "ring":
            k = rng.uniform(0.35, 0.6)
            draw.ellipse([cx - rx * k, cy - ry * k, cx + rx * k, cy + ry * k], fill=0)
    elif kind == "rectangle":
        rw, rh = size * rng.uniform(0.5, 1.0), size * rng.uniform(0.5, 1.0)
        draw.rectangle([cx - rw, cy - rh, cx + rw, cy + rh], fill=255)
    elif kind == "bar":
        angle = rng.uniform(0, np.pi)
        length, width = size * 1.6, max(2.0, size * rng.uniform(0.08, 0.2))
        dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
        draw.line([cx - dx, cy - dy, cx + dx, cy + dy], fill=255, width=int(width))
    else:
        n = rng.integers(5, 11) if kind == "polygon" else 2 * rng.integers(4, 8)
        angles = np.sort(rng.uniform(0, 2 * np.pi, n)) if kind == "polygon" else np.linspace(0, 2 * np.pi, n, False)
        radii = size * (rng.uniform(0.5, 1.0, n) if kind == "polygon" else np.where(np.arange(n) % 2, 0.45, 1.0))
        points = [(cx + r * np.cos(a), cy + r * np.sin(a)) for a, r in zip(angles, radii)]
        draw.polygon(points, fill=255)
    return np.asarray(canvas) > 127


def make_scene(rng, height, width, max_objects=5, min_area_fraction=0.004):
    """Returns (image HxWx3 uint8, list of HxW bool instance masks of the visible parts)."""
    image = _fill(rng, height, width)
    owner = np.full((height, width), -1, dtype=np.int32)
    count = int(rng.integers(1, max_objects + 1))
    for index in range(count):
        mask = _shape_mask(rng, height, width)
        image[mask] = _fill(rng, height, width)[mask]
        owner[mask] = index
    if rng.uniform() < 0.5:
        image = np.asarray(
            Image.fromarray(image.clip(0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2))),
            dtype=np.float32,
        )
    image = image * rng.uniform(0.7, 1.2) + rng.normal(0, rng.uniform(0, 8), image.shape)
    masks = [owner == i for i in range(count)]
    masks = [m for m in masks if m.sum() >= min_area_fraction * height * width]
    return image.clip(0, 255).astype(np.uint8), masks
