"""Builds the parity fixtures under tests/fixtures/ with the OFFICIAL segment-anything code.

1. A tiny official-architecture SAM (tools/sam_tiny.py), seeded, trained briefly (tools/train.py) so that its masks
   are smooth, exported as two model folders: `tiny` (official decoder) and `tiny-lean` (lean decoder).
2. Test images in several formats and modes (landscape, portrait, tiny, > 2000 px, gray, RGBA, 16-bit, EXIF-rotated).
3. parity.json: for each image and prompt kind, what SamPredictor returns (masks as pycocotools RLE, predicted IoU,
   stability score with offset 1.0, area and bbox from pycocotools).
4. rle.json: masks with the RLE strings pycocotools gives for them.
5. resize/: what PIL's bilinear resize (ResizeLongestSide.apply_image) gives for two of the images.

Run:  python tools/make_fixtures.py   (about 6 minutes on 2 CPU cores)
"""

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from pycocotools import mask as coco_mask
from segment_anything import SamPredictor
from segment_anything.utils.amg import calculate_stability_score

from export_onnx import check_against_torch, export_encoder, export_lean_decoder, export_official_decoder, write_manifest
from sam_tiny import SamConfig, build_sam
from synthetic import make_scene
from train import train

ROOT = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
SEED = 20261129
TRAIN_STEPS = 1200


def write_png_rgb16(path, array):
    """PIL cannot write 48-bit RGB, so write the PNG chunks directly."""
    h, w, _ = array.shape
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    Path(path).write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    )


def to_rgb8(image: Image.Image) -> np.ndarray:
    """How a user expects a file to reach SamPredictor: EXIF orientation applied, alpha dropped, gray replicated."""
    image = ImageOps.exif_transpose(image)
    return np.asarray(image.convert("RGB"))


def make_images(rng, folder):
    """Writes the test images; returns {name: (file name, RGB8 array as the reference sees it, instance masks)}."""
    folder.mkdir(parents=True, exist_ok=True)
    images = {}

    def scene(h, w):
        pixels, masks = make_scene(rng, h, w, max_objects=4, min_area_fraction=0.02)
        while len(masks) < 2:
            pixels, masks = make_scene(rng, h, w, max_objects=4, min_area_fraction=0.02)
        return pixels, masks

    def save(name, file_name, pil_image, masks, **params):
        path = folder / file_name
        pil_image.save(path, **params)
        images[name] = (file_name, to_rgb8(Image.open(path)), masks)

    pixels, masks = scene(427, 640)
    save("landscape", "landscape.png", Image.fromarray(pixels), masks)
    pixels, masks = scene(520, 300)
    save("portrait", "portrait.jpg", Image.fromarray(pixels), masks, quality=92)
    pixels, masks = scene(23, 37)
    save("tiny", "tiny.png", Image.fromarray(pixels), masks)
    small, small_masks = scene(384, 576)
    large = Image.fromarray(small).resize((2304, 1536), Image.BICUBIC)
    large_masks = [np.asarray(Image.fromarray(m).resize((2304, 1536), Image.NEAREST)) for m in small_masks]
    save("large", "large.jpg", large, large_masks, quality=90)
    pixels, masks = scene(300, 400)
    save("gray", "gray.png", Image.fromarray(pixels).convert("L"), masks)
    pixels, masks = scene(240, 320)
    alpha = rng.integers(0, 256, size=(240, 320, 1), dtype=np.uint8)
    save("rgba", "rgba.png", Image.fromarray(np.concatenate([pixels, alpha], axis=2), "RGBA"), masks)

    pixels, masks = scene(200, 256)
    deep = pixels.astype(np.uint16) * 257 + rng.integers(0, 257, size=pixels.shape).astype(np.uint16)
    write_png_rgb16(folder / "rgb16.png", deep)
    # round(v / 257): the nearest 8-bit value, as image decoders convert 16-bit samples.
    images["rgb16"] = ("rgb16.png", ((deep.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8), masks)

    # Displayed upright as 320 wide x 480 tall; stored rotated, with EXIF orientation 6 ("rotate 90 CW to view").
    pixels, masks = scene(480, 320)
    stored = Image.fromarray(pixels).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    save("exif_rotated", "exif_rotated.jpg", stored, masks, quality=92, exif=exif)
    return images


def erosion_depth(mask):
    """How many 3x3 erosions each pixel of `mask` survives (its chessboard distance to the outside)."""
    depth = np.zeros(mask.shape, np.int32)
    current = mask.copy()
    while current.any():
        depth += current
        padded = np.pad(current, 1)
        eroded = current.copy()
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                eroded &= padded[dy : dy + mask.shape[0], dx : dx + mask.shape[1]]
        current = eroded
    return depth


def interior_point(rng, mask, avoid=None):
    """A point well inside `mask` (a random pixel among the 25% farthest from the border), with a fractional offset."""
    depth = erosion_depth(mask)
    if avoid is not None:
        depth = np.where(avoid, 0, depth)
    threshold = np.quantile(depth[depth > 0], 0.75)
    ys, xs = np.nonzero(depth >= threshold)
    k = rng.integers(0, len(xs))
    return [float(xs[k]) + 0.25, float(ys[k]) + 0.5]


def bbox_xyxy(mask):
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max()) + 0.5, float(ys.max()) + 0.25]


def prompt_cases(rng, masks):
    order = sorted(range(len(masks)), key=lambda i: -masks[i].sum())
    a, b = masks[order[0]], masks[order[1]]
    pa = interior_point(rng, a)
    pa2 = interior_point(rng, a, avoid=np.zeros_like(a))
    pb = interior_point(rng, b)
    box = bbox_xyxy(a)
    return [
        ("point_multimask", {"points": [pa], "labels": [1]}, True),
        ("fg_bg", {"points": [pa, pb], "labels": [1, 0]}, False),
        ("box", {"box": box}, False),
        ("box_point", {"points": [pa], "labels": [1], "box": box}, False),
        ("three_points", {"points": [pa, pa2, pb], "labels": [1, 1, 0]}, False),
        ("refine", {"points": [pa, pa2], "labels": [1, 1], "refine_from": {"points": [pa], "labels": [1]}}, False),
    ]


def encode_mask(mask):
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {
        "size": [int(v) for v in rle["size"]],
        "counts": rle["counts"].decode("ascii"),
        "area": int(coco_mask.area(rle)),
        "bbox": [float(v) for v in coco_mask.toBbox(rle)],
    }


def predict(predictor, prompt, multimask, mask_input=None):
    coords = np.array(prompt["points"], dtype=np.float32) if "points" in prompt else None
    labels = np.array(prompt["labels"], dtype=np.float32) if "labels" in prompt else None
    box = np.array(prompt["box"], dtype=np.float32) if "box" in prompt else None
    return predictor.predict(coords, labels, box, mask_input, multimask_output=multimask, return_logits=True)


def reference_case(predictor, name, prompt, multimask):
    mask_input = None
    if "refine_from" in prompt:
        _, scores, low_res = predict(predictor, prompt["refine_from"], True)
        mask_input = low_res[np.argmax(scores)][None]
    logits, scores, _ = predict(predictor, prompt, multimask, mask_input)
    stability = calculate_stability_score(torch.from_numpy(logits), 0.0, 1.0).numpy()
    masks = []
    for k in range(len(scores)):
        entry = encode_mask(logits[k] > 0.0)
        entry.update(score=float(scores[k]), stability_score=float(stability[k]))
        masks.append(entry)
    return {"name": name, "prompt": prompt, "multimask": multimask, "masks": masks}


def rle_vectors(rng):
    shapes = [(1, 1), (3, 4), (7, 5), (16, 9), (40, 31), (200, 300)]
    vectors = []
    for h, w in shapes:
        for kind in ("zeros", "ones", "random", "blobs"):
            if kind == "zeros":
                mask = np.zeros((h, w), bool)
            elif kind == "ones":
                mask = np.ones((h, w), bool)
            elif kind == "random":
                mask = rng.uniform(size=(h, w)) < rng.uniform(0.1, 0.9)
            else:
                yy, xx = np.mgrid[0:h, 0:w]
                mask = ((yy - h * 0.4) ** 2 + (xx - w * 0.6) ** 2) < (0.3 * max(h, w)) ** 2
                mask ^= ((yy - h * 0.5) ** 2 + (xx - w * 0.5) ** 2) < (0.1 * max(h, w)) ** 2
            rows = ["".join("1" if v else "0" for v in row) for row in mask]
            vectors.append({"rows": rows, **encode_mask(mask)})
    return vectors


def main():
    torch.set_num_threads(2)
    rng = np.random.default_rng(SEED)
    sam = build_sam(SamConfig(), seed=SEED)
    train(sam, TRAIN_STEPS, seed=SEED)

    models = ROOT / "models"
    (models / "tiny").mkdir(parents=True, exist_ok=True)
    (models / "tiny-lean").mkdir(parents=True, exist_ok=True)
    export_encoder(sam, models / "tiny" / "encoder.onnx")
    export_official_decoder(sam, models / "tiny" / "decoder.onnx")
    export_lean_decoder(sam, models / "tiny-lean" / "decoder.onnx")
    write_manifest(models / "tiny", "tiny", "encoder.onnx", "decoder.onnx", sam)
    write_manifest(models / "tiny-lean", "tiny-lean", "../tiny/encoder.onnx", "decoder.onnx", sam)
    print("ONNX vs PyTorch, largest difference:", check_against_torch(sam, models / "tiny" / "decoder.onnx",
                                                                    models / "tiny-lean" / "decoder.onnx"))

    images = make_images(rng, ROOT / "images")
    predictor = SamPredictor(sam)
    cases = []
    resize_folder = ROOT / "resize"
    resize_folder.mkdir(parents=True, exist_ok=True)
    for name, (file_name, rgb, masks) in images.items():
        predictor.set_image(rgb)
        if name in ("landscape", "large"):
            resized = predictor.transform.apply_image(rgb)
            Image.fromarray(resized).save(resize_folder / f"{name}.png")
        for case_name, prompt, multimask in prompt_cases(rng, masks):
            case = reference_case(predictor, case_name, prompt, multimask)
            case["image"] = file_name
            case["width"], case["height"] = rgb.shape[1], rgb.shape[0]
            cases.append(case)
    (ROOT / "parity.json").write_text(json.dumps({"model": "tiny", "cases": cases}, indent=1))
    (ROOT / "rle.json").write_text(json.dumps(rle_vectors(rng)))
    print(f"wrote {len(cases)} parity cases")


if __name__ == "__main__":
    main()
