"""samserve vs the official segment-anything code, side by side in one run, as ratios.

The same workloads on the same machine and thread count: the fixture model's architecture (tools/sam_tiny.py; the
weights do not change the timings), tests/fixtures/images/large.jpg (2304x1536), a single click. Segment everything
(SamAutomaticMaskGenerator, default parameters, and with crop_n_layers=1) runs on landscape.png (640x427) with the
AMG fixture model's weights (tests/fixtures/models/amg/sam_tiny.pt), whose masks pass the default thresholds.

- official: PIL decode, SamPredictor.set_image (ResizeLongestSide + preprocess + image encoder in PyTorch),
  prompt encoder + mask decoder in PyTorch, SamPredictor.predict with pycocotools RLE of the returned masks.
- samserve: `cargo bench --bench pipeline -- --json` (ONNX Runtime for the networks, Rust for the rest).

Run:  python tools/bench_vs_official.py [--threads 2]
"""

import argparse
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as coco_mask
from segment_anything import SamAutomaticMaskGenerator, SamPredictor

from sam_tiny import SamConfig, build_sam

ROOT = Path(__file__).resolve().parent.parent


def median_ms(repeats, work):
    work()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append((time.perf_counter() - started) * 1e3)
    return sorted(times)[repeats // 2]


def official_stages(threads):
    torch.set_num_threads(threads)
    path = ROOT / "tests" / "fixtures" / "images" / "large.jpg"
    image = np.asarray(Image.open(path).convert("RGB"))
    sam = build_sam(SamConfig(), seed=0)
    predictor = SamPredictor(sam)
    point = np.array([[300.0, 700.0]])
    label = np.array([1])

    def preprocess():
        resized = predictor.transform.apply_image(image)
        sam.preprocess(torch.as_tensor(resized).permute(2, 0, 1)[None].float())

    def decode():
        coords = torch.as_tensor(predictor.transform.apply_coords(point, image.shape[:2]), dtype=torch.float)[None]
        labels = torch.as_tensor(label, dtype=torch.int)[None]
        with torch.no_grad():
            sparse, dense = sam.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
            sam.mask_decoder(predictor.features, sam.prompt_encoder.get_dense_pe(), sparse, dense, True)

    def segment_rle():
        masks, _, _ = predictor.predict(point, label, multimask_output=True)
        for m in masks:
            coco_mask.encode(np.asfortranarray(m.astype(np.uint8)))

    with torch.no_grad():
        stages = {
            "decode_image": median_ms(15, lambda: np.asarray(Image.open(path).convert("RGB"))),
            "preprocess": median_ms(15, preprocess),
            "encode": median_ms(15, lambda: predictor.set_image(image)),
        }
        stages["decode_official"] = median_ms(30, decode)
        stages["segment_multimask_rle"] = median_ms(15, segment_rle)
        amg_sam = build_sam(SamConfig(), seed=0)
        amg_sam.load_state_dict(torch.load(ROOT / "tests" / "fixtures" / "models" / "amg" / "sam_tiny.pt"))
        photo = np.asarray(Image.open(ROOT / "tests" / "fixtures" / "images" / "landscape.png").convert("RGB"))
        stages["everything"] = median_ms(3, lambda: SamAutomaticMaskGenerator(amg_sam).generate(photo))
        crops = SamAutomaticMaskGenerator(amg_sam, crop_n_layers=1)
        stages["everything_crops"] = median_ms(3, lambda: crops.generate(photo))
    return stages


def samserve_stages(threads):
    result = subprocess.run(
        ["cargo", "bench", "--quiet", "--bench", "pipeline", "--", "--json"],
        cwd=ROOT,
        env={**__import__("os").environ, "BENCH_THREADS": str(threads)},
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    ours = samserve_stages(args.threads)
    official = official_stages(args.threads)
    print(f"{'stage':<24}{'official ms':>12}{'samserve ms':>13}{'speed-up':>10}")
    for stage, official_ms in official.items():
        print(f"{stage:<24}{official_ms:12.2f}{ours[stage]:13.2f}{official_ms / ours[stage]:9.1f}x")
    for stage in sorted(set(ours) - set(official)):
        print(f"{stage:<24}{'':>12}{ours[stage]:13.2f}")


if __name__ == "__main__":
    main()
