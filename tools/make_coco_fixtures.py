"""Builds tests/fixtures/coco/: a tiny COCO dataset and what `samserve eval` must report on it for the fixture model.

- annotations.json: three small scenes; image 1 with compressed RLE, image 2 with uncompressed RLE (counts as a
  list), image 3 with polygons (its objects are painted from the very polygons, rasterized by pycocotools).
- polygons.json: polygons with the RLE that pycocotools makes of them (frPyObjects + merge).
- expected_tiny.json: the eval protocol of src/eval.rs implemented independently here, with onnxruntime running the
  fixture model's official decoder and the official segment-anything pre- and post-processing.

Run after tools/make_fixtures.py:  python tools/make_coco_fixtures.py
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from pycocotools import mask as coco_mask
from segment_anything.utils.transforms import ResizeLongestSide

from make_fixtures import erosion_depth
from synthetic import make_scene

ROOT = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
OUT = ROOT / "coco"
SEED = 424242


def rle_string(mask):
    return coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode("ascii")


def run_lengths(mask):
    flat = mask.astype(np.uint8).flatten(order="F")
    counts, current, run = [], 0, 0
    for value in flat:
        if value != current:
            counts.append(run)
            run, current = 0, value
        run += 1
    counts.append(run)
    return counts


def polygon_mask(rings, height, width):
    rles = coco_mask.frPyObjects(rings, height, width)
    return coco_mask.decode(coco_mask.merge(rles)).astype(bool)


def polygon_scene(rng, height, width):
    """A scene whose objects are polygons: returns (pixels, list of polygon-ring lists)."""
    image = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(0, 256, 3)))
    objects = [
        [[20.5, 15.2, 70.0, 20.0, 60.3, 65.7, 25.0, 55.0]],  # a quadrilateral
        [[100.0, 20.0, 140.0, 30.0, 120.0, 45.0, 145.0, 70.0, 95.0, 60.0]],  # concave
        [[30.0, 80.0, 80.0, 80.0, 80.0, 115.0, 30.0, 115.0], [90.0, 85.0, 120.0, 85.0, 105.0, 112.0]],  # two parts
    ]
    draw = ImageDraw.Draw(image)
    for rings in objects:
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        mask = polygon_mask(rings, height, width)
        layer = Image.new("RGB", (width, height), colour)
        image.paste(layer, (0, 0), Image.fromarray((mask * 255).astype(np.uint8)))
    del draw
    return np.asarray(image), objects


def write_dataset(rng):
    (OUT / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []

    def add(image_id, pixels, segmentations):
        height, width = pixels.shape[:2]
        file_name = f"scene{image_id}.png"
        Image.fromarray(pixels).save(OUT / "images" / file_name)
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for segmentation in segmentations:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                "segmentation": segmentation, "iscrowd": 0})

    pixels, masks = make_scene(rng, 120, 160, max_objects=4, min_area_fraction=0.02, clutter=False)
    add(1, pixels, [{"size": [120, 160], "counts": rle_string(m)} for m in masks])
    pixels, masks = make_scene(rng, 150, 110, max_objects=4, min_area_fraction=0.02, clutter=False)
    add(2, pixels, [{"size": [150, 110], "counts": run_lengths(m)} for m in masks])
    pixels, polygons = polygon_scene(rng, 128, 160)
    add(3, pixels, polygons)
    # A crowd region is not an object to click on: eval leaves it out.
    annotations.append({"id": len(annotations) + 1, "image_id": 3, "category_id": 1, "iscrowd": 1,
                        "segmentation": {"size": [128, 160], "counts": run_lengths(np.ones((128, 160), bool))}})
    coco = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "object"}]}
    (OUT / "annotations.json").write_text(json.dumps(coco))
    return coco


def instance_masks(coco):
    sizes = {image["id"]: (image["height"], image["width"]) for image in coco["images"]}
    by_image = {image["id"]: [] for image in coco["images"]}
    for annotation in coco["annotations"]:
        if annotation["iscrowd"]:
            continue
        height, width = sizes[annotation["image_id"]]
        segmentation = annotation["segmentation"]
        if isinstance(segmentation, list):
            mask = polygon_mask(segmentation, height, width)
        elif isinstance(segmentation["counts"], str):  # compressed, as COCO's annToRLE takes it
            mask = coco_mask.decode({"size": segmentation["size"], "counts": segmentation["counts"].encode()}).astype(bool)
        else:
            mask = coco_mask.decode(coco_mask.frPyObjects(segmentation, height, width)).astype(bool)
        by_image[annotation["image_id"]].append(mask)
    return by_image


class OrtPredictor:
    """SamPredictor's steps with the fixture model's ONNX files (official decoder)."""

    def __init__(self, folder):
        self.encoder = onnxruntime.InferenceSession(str(folder / "encoder.onnx"), providers=["CPUExecutionProvider"])
        self.decoder = onnxruntime.InferenceSession(str(folder / "decoder.onnx"), providers=["CPUExecutionProvider"])
        self.size = self.encoder.get_inputs()[0].shape[-1]
        self.transform = ResizeLongestSide(self.size)
        self.mean = np.array([123.675, 116.28, 103.53], np.float32)
        self.std = np.array([58.395, 57.12, 57.375], np.float32)

    def set_image(self, rgb):
        self.original = rgb.shape[:2]
        resized = self.transform.apply_image(rgb)
        self.resized = resized.shape[:2]
        x = (resized.astype(np.float32) - self.mean) / self.std
        padded = np.zeros((self.size, self.size, 3), np.float32)
        padded[: resized.shape[0], : resized.shape[1]] = x
        self.embedding = self.encoder.run(None, {"image": padded.transpose(2, 0, 1)[None]})[0]

    def predict(self, points, labels, box, mask_input, multimask):
        coords, codes = list(points), list(labels)
        if box is not None:
            coords += [box[:2], box[2:]]
            codes += [2, 3]
        coords = self.transform.apply_coords(np.array(coords, dtype=np.float64), self.original)
        if box is None:
            coords = np.concatenate([coords, [[0.0, 0.0]]])
            codes.append(-1)
        low_res_size = self.decoder.get_inputs()[3].shape[-2:]
        feeds = {
            "image_embeddings": self.embedding,
            "point_coords": coords[None].astype(np.float32),
            "point_labels": np.array([codes], np.float32),
            "mask_input": (mask_input[None, None] if mask_input is not None else np.zeros((1, 1, *low_res_size))).astype(np.float32),
            "has_mask_input": np.array([1.0 if mask_input is not None else 0.0], np.float32),
            "orig_im_size": np.array(self.original, np.float32),
        }
        _, scores, low_res = self.decoder.run(None, feeds)
        tokens = slice(1, None) if multimask else slice(0, 1)
        scores, low_res = scores[0, tokens], low_res[0, tokens]
        masks = F.interpolate(torch.from_numpy(low_res)[None], (self.size, self.size), mode="bilinear", align_corners=False)
        masks = masks[..., : self.resized[0], : self.resized[1]]
        masks = F.interpolate(masks, self.original, mode="bilinear", align_corners=False)[0].numpy() > 0.0
        order = np.argsort(-scores, kind="stable")
        return [(masks[k], low_res[k]) for k in order]


def deepest(region):
    """Chessboard distance to the outside (the border counts as outside); the first maximum in row order."""
    depth = erosion_depth(region)
    if depth.max() == 0:
        return None
    index = int(np.argmax(depth))
    return (index % region.shape[1], index // region.shape[1])


def iou(a, b):
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def evaluate(predictor, coco, masks_by_image):
    sums, count = np.zeros(5), 0
    for image in coco["images"]:
        truths = masks_by_image[image["id"]]
        if not truths:
            continue
        predictor.set_image(np.asarray(Image.open(OUT / "images" / image["file_name"]).convert("RGB")))
        for truth in truths:
            first = deepest(truth)
            one = predictor.predict([first], [1], None, None, True)
            point_top = iou(one[0][0], truth)
            point_best = max(iou(m, truth) for m, _ in one)
            points, labels = [first], [1]
            current, logits = one[0]
            for _ in range(2):
                spot = deepest(current ^ truth)
                if spot is None:
                    break
                points.append(spot)
                labels.append(1 if truth[spot[1], spot[0]] else 0)
                current, logits = predictor.predict(points, labels, None, logits, False)[0]
            ys, xs = np.nonzero(truth)
            box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float64)
            boxed = predictor.predict([], [], box, None, False)[0][0]
            box_point = predictor.predict([first], [1], box, None, False)[0][0]
            sums += [point_top, point_best, iou(current, truth), iou(boxed, truth), iou(box_point, truth)]
            count += 1
    keys = ["point_top", "point_best_of_3", "points_3", "box", "box_point"]
    return {"instances": count, "miou": dict(zip(keys, (sums / count).tolist()))}


def polygon_vectors():
    cases = [
        ([[1.0, 1.0, 8.0, 1.0, 8.0, 6.0, 1.0, 6.0]], 8, 10),
        ([[0.2, 0.3, 9.7, 2.1, 4.4, 7.9]], 9, 11),
        ([[-3.0, -2.0, 12.5, 1.0, 6.0, 14.0]], 10, 10),  # partly outside the image
        ([[2.0, 2.0, 12.0, 3.0, 7.0, 6.0, 12.0, 11.0, 2.0, 10.0, 5.0, 6.5]], 13, 15),  # concave
        ([[1.0, 1.0, 4.0, 1.0, 4.0, 4.0, 1.0, 4.0], [6.0, 6.0, 9.0, 6.5, 7.5, 9.0]], 11, 12),  # two rings
        ([[3.0, 3.0, 3.0, 3.0, 9.0, 4.0, 5.0, 9.0]], 12, 12),  # a repeated corner
    ]
    return [{"rings": rings, "height": h, "width": w, "counts": rle_string(polygon_mask(rings, h, w))}
            for rings, h, w in cases]


def main():
    rng = np.random.default_rng(SEED)
    coco = write_dataset(rng)
    (ROOT / "polygons.json").write_text(json.dumps(polygon_vectors(), indent=1))
    expected = evaluate(OrtPredictor(ROOT / "models" / "tiny"), coco, instance_masks(coco))
    (OUT / "expected_tiny.json").write_text(json.dumps(expected, indent=1))
    print(json.dumps(expected, indent=1))


if __name__ == "__main__":
    main()
