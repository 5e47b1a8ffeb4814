"""Fixtures for SAM models in a published ONNX layout, made with the exporter their publishers use.

samexporter (PyPI `samexporter`, pinned in requirements.txt) made AnyLabeling's SAM downloads and many Hugging Face
uploads. With `--use-preprocess`, its encoder takes the image already resized so that its longest side is S, as
[h, w, 3] float32 RGB in 0..255, and normalizes, transposes and zero-pads it inside the graph; its decoder is the
official `SamOnnxModel` export. Here samexporter's own `run_export` functions export the AMG fixture model's weights
(tests/fixtures/models/amg/weights.pt, the samserve-s architecture, registered as a model type of its own) to
tests/fixtures/models/samexporter-hwc/, under the file names samexporter's README uses. SamPredictor's answers for
the same weights, PNG images and prompts as tests/fixtures/parity.json go to tests/fixtures/parity_samexporter.json.
PNG only: these weights are made confident (steep logits, see make_amg_fixtures.py), so the level here and there by
which JPEG decoders differ (PIL's libjpeg, the Rust decoder) moves a predicted IoU by up to 2e-3, with either
encoder layout; the JPEG images are covered by parity.json, with the tiny model.

Run after make_fixtures.py and make_amg_fixtures.py:  python tools/make_layout_fixtures.py  (about a minute)
"""

import json
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from segment_anything import SamPredictor, sam_model_registry

from make_fixtures import reference_case, to_rgb8
from sam_tiny import build_sam
from train_default import CONFIG

ROOT = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
WEIGHTS = ROOT / "models" / "amg" / "weights.pt"
MODEL_TYPE = "samserve_amg"
FOLDER = ROOT / "models" / "samexporter-hwc"
OPSET = 18  # samexporter's default


def load_weights(checkpoint):
    sam = build_sam(CONFIG, seed=0)
    sam.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return sam.eval()


def rgb8(path):
    """The pixels SamPredictor gets for a fixture image, as tools/make_fixtures.py gave them."""
    if path.name == "rgb16.png":
        # Rounded to the nearest 8-bit value (PIL would truncate): what make_fixtures.py fed the predictor.
        deep = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[:, :, ::-1].astype(np.uint32)
        return ((deep * 255 + 32767) // 65535).astype(np.uint8)
    return to_rgb8(Image.open(path))


def export():
    # samexporter builds models through segment-anything's registry; it learns this architecture the same way.
    sam_model_registry[MODEL_TYPE] = load_weights
    from samexporter import export_decoder, export_encoder

    FOLDER.mkdir(parents=True, exist_ok=True)
    export_encoder.run_export(
        MODEL_TYPE, str(WEIGHTS), str(FOLDER / f"{MODEL_TYPE}.encoder.onnx"), use_preprocess=True, opset=OPSET
    )
    export_decoder.run_export(
        MODEL_TYPE, str(WEIGHTS), str(FOLDER / f"{MODEL_TYPE}.decoder.onnx"), opset=OPSET, return_single_mask=False
    )


def main():
    torch.set_num_threads(2)
    export()
    predictor = SamPredictor(load_weights(WEIGHTS))
    cases = []
    current = None
    for reference in json.loads((ROOT / "parity.json").read_text())["cases"]:
        if not reference["image"].endswith(".png"):
            continue
        if reference["image"] != current:
            current = reference["image"]
            predictor.set_image(rgb8(ROOT / "images" / current))
        case = reference_case(predictor, reference["name"], reference["prompt"], reference["multimask"])
        case.update(image=current, width=reference["width"], height=reference["height"])
        cases.append(case)
    (ROOT / "parity_samexporter.json").write_text(json.dumps({"model": "samexporter-hwc", "cases": cases}, indent=1))
    print(f"wrote {len(cases)} parity cases")


if __name__ == "__main__":
    main()
