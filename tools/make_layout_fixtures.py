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

A second folder, tests/fixtures/models/samexporter-single/, holds samexporter's other two choices: the encoder
without `--use-preprocess` ([1, 3, S, S], normalized by the caller) and the decoder with `--return-single-mask`,
whose graph picks one mask per prompt (`SamOnnxModel.select_masks`: the best of the three multimask candidates
for fewer than three points, padding point and box corners included, else the single-mask token). Its answers,
tests/fixtures/parity_single_mask.json, come from the official `SamOnnxModel(return_single_mask=True)` run in
PyTorch on the inputs SamPredictor prepares (transformed coordinates, padding point, box corners), as
segment-anything's ONNX example notebook feeds them, for the single-mask cases.

Two more folders hold the same weights as samexporter ships its large and its small files, whose answers are those
above: tests/fixtures/models/samexporter-external/ through the branch that samexporter takes for ViT-H (weights in
an external `<name>_data.bin` beside the graph), and tests/fixtures/models/samexporter-quantized/ with both graphs
quantized as samexporter's `--quantize-out` does (`quantize_dynamic`, unsigned 8-bit weights; AnyLabeling's
`.quant.onnx` downloads), which answers close to, not exactly as, the float model.

EdgeSAM's layout (tools/edgesam_export.py re-creates its exporter: points only, no mask input, outputs `scores`
then `masks`) goes to tests/fixtures/models/edgesam/ under the file names its exporter gives a checkpoint
`edge_sam_3x.pth`. Its decoder is SAM's, and EdgeSAM's predictor is SamPredictor's, so the answers are those of
SamPredictor with no mask input: the cases of parity_samexporter.json without refinement.

Run after make_fixtures.py and make_amg_fixtures.py:  python tools/make_layout_fixtures.py  (about a minute)
"""

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import torch
from onnxruntime.quantization import QuantType
from onnxruntime.quantization.quantize import quantize_dynamic
from PIL import Image
from segment_anything import SamPredictor, sam_model_registry
from segment_anything.utils.amg import calculate_stability_score
from segment_anything.utils.onnx import SamOnnxModel

import edgesam_export
from make_fixtures import encode_mask, reference_case, to_rgb8
from sam_tiny import build_sam
from train_default import CONFIG

ROOT = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
WEIGHTS = ROOT / "models" / "amg" / "weights.pt"
MODEL_TYPE = "samserve_amg"
FOLDER = ROOT / "models" / "samexporter-hwc"
SINGLE_FOLDER = ROOT / "models" / "samexporter-single"
EXTERNAL_FOLDER = ROOT / "models" / "samexporter-external"
EDGESAM_FOLDER = ROOT / "models" / "edgesam"
QUANTIZED_FOLDER = ROOT / "models" / "samexporter-quantized"
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
    SINGLE_FOLDER.mkdir(parents=True, exist_ok=True)
    export_encoder.run_export(
        MODEL_TYPE, str(WEIGHTS), str(SINGLE_FOLDER / f"{MODEL_TYPE}.encoder.onnx"), use_preprocess=False, opset=OPSET
    )
    export_decoder.run_export(
        MODEL_TYPE, str(WEIGHTS), str(SINGLE_FOLDER / f"{MODEL_TYPE}.decoder.onnx"), opset=OPSET, return_single_mask=True
    )

    # samexporter moves the weights to an external file for "vit_h" only (they pass 2 GB there): the same weights
    # go through that branch under its name.
    EXTERNAL_FOLDER.mkdir(parents=True, exist_ok=True)
    vit_h = sam_model_registry["vit_h"]
    sam_model_registry["vit_h"] = load_weights
    try:
        export_encoder.run_export(
            "vit_h", str(WEIGHTS), str(EXTERNAL_FOLDER / f"{MODEL_TYPE}.encoder.onnx"), use_preprocess=True, opset=OPSET
        )
    finally:
        sam_model_registry["vit_h"] = vit_h
    shutil.copy(FOLDER / f"{MODEL_TYPE}.decoder.onnx", EXTERNAL_FOLDER)

    EDGESAM_FOLDER.mkdir(parents=True, exist_ok=True)
    sam = load_weights(WEIGHTS)
    # EdgeSAM's encoder layout is the plain one of the AMG model's own encoder (input `image`); only its network
    # (RepViT) differs, which the layout does not see.
    shutil.copy(ROOT / "models" / "amg" / "encoder.onnx", EDGESAM_FOLDER / "edge_sam_3x_encoder.onnx")
    edgesam_export.export_decoder(sam, EDGESAM_FOLDER / "edge_sam_3x_decoder.onnx")

    # samexporter's --quantize-out, on the files of the first folder.
    QUANTIZED_FOLDER.mkdir(parents=True, exist_ok=True)
    for network in ("encoder", "decoder"):
        quantize_dynamic(
            model_input=str(FOLDER / f"{MODEL_TYPE}.{network}.onnx"),
            model_output=str(QUANTIZED_FOLDER / f"{MODEL_TYPE}.{network}.quant.onnx"),
            per_channel=False,
            reduce_range=False,
            weight_type=QuantType.QUInt8,
        )


def single_mask_case(predictor, onnx_model, name, prompt):
    """What the official single-mask decoder module answers for `prompt`, fed as the ONNX example notebook does."""
    points = np.array(prompt.get("points", np.zeros((0, 2))), dtype=np.float32).reshape(-1, 2)
    labels = np.array(prompt.get("labels", []), dtype=np.float32)
    if "box" in prompt:
        points = np.concatenate([points, np.array(prompt["box"], dtype=np.float32).reshape(2, 2)])
        labels = np.concatenate([labels, np.array([2, 3], dtype=np.float32)])
    else:
        points = np.concatenate([points, np.zeros((1, 2), dtype=np.float32)])
        labels = np.concatenate([labels, np.array([-1], dtype=np.float32)])
    coords = predictor.transform.apply_coords(points, predictor.original_size).astype(np.float32)
    low_res_size = [4 * side for side in onnx_model.model.prompt_encoder.image_embedding_size]
    with torch.no_grad():
        masks, scores, _ = onnx_model(
            predictor.features,
            torch.from_numpy(coords[None]),
            torch.from_numpy(labels[None]),
            torch.zeros(1, 1, *low_res_size),
            torch.zeros(1),
            torch.tensor(predictor.original_size, dtype=torch.float),
        )
    stability = calculate_stability_score(masks[0], 0.0, 1.0).numpy()
    entry = encode_mask(masks[0, 0].numpy() > 0.0)
    entry.update(score=float(scores[0, 0]), stability_score=float(stability[0]))
    return {"name": name, "prompt": prompt, "multimask": False, "masks": [entry]}


def main():
    torch.set_num_threads(2)
    export()
    sam = load_weights(WEIGHTS)
    predictor = SamPredictor(sam)
    single_mask_model = SamOnnxModel(sam, return_single_mask=True)
    cases, single_mask_cases = [], []
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
        if "refine_from" not in reference["prompt"]:  # every other prompt, as a single-mask request
            single = single_mask_case(predictor, single_mask_model, reference["name"], reference["prompt"])
            single.update(image=current, width=reference["width"], height=reference["height"])
            single_mask_cases.append(single)
    (ROOT / "parity_samexporter.json").write_text(json.dumps({"model": "samexporter-hwc", "cases": cases}, indent=1))
    (ROOT / "parity_single_mask.json").write_text(
        json.dumps({"model": "samexporter-single", "cases": single_mask_cases}, indent=1)
    )
    print(f"wrote {len(cases)} parity cases and {len(single_mask_cases)} single-mask cases")


if __name__ == "__main__":
    main()
