"""Export a `Sam` model to a samserve model folder (docs/models.md, "Model folders").

- encoder.onnx: `sam.image_encoder`, input `image` [1, 3, S, S] (normalized, zero-padded), output `image_embeddings`.
- decoder.onnx: the official contract, exactly as segment-anything's `scripts/export_onnx_model.py` writes it
  (`SamOnnxModel`, return_single_mask=False, opset 17, dynamic num_points, outputs masks/iou_predictions/low_res_masks).
- the lean decoder: the same graph without `orig_im_size` and the in-graph upsampling (outputs iou_predictions and
  low_res_masks only) and with a dynamic prompt-batch axis, so that many prompts are decoded in one run.
"""

import warnings
from pathlib import Path

import numpy as np
import torch
from segment_anything.utils.onnx import SamOnnxModel

OPSET = 17


class LeanSamOnnxModel(SamOnnxModel):
    """SamOnnxModel without mask_postprocessing: the caller upsamples the low-res logits it needs."""

    def forward(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input):
        sparse_embedding = self._embed_points(point_coords, point_labels)
        dense_embedding = self._embed_masks(mask_input, has_mask_input)
        masks, scores = self.model.mask_decoder.predict_masks(
            image_embeddings=image_embeddings,
            image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse_embedding,
            dense_prompt_embeddings=dense_embedding,
        )
        return scores, masks


def _decoder_dummy_inputs(sam, batch, with_orig_size):
    embed_dim = sam.prompt_encoder.embed_dim
    embed_size = sam.prompt_encoder.image_embedding_size
    mask_input_size = [4 * x for x in embed_size]
    inputs = {
        "image_embeddings": torch.randn(1, embed_dim, *embed_size, dtype=torch.float),
        "point_coords": torch.randint(low=0, high=sam.image_encoder.img_size, size=(batch, 5, 2), dtype=torch.float),
        "point_labels": torch.randint(low=0, high=4, size=(batch, 5), dtype=torch.float),
        "mask_input": torch.randn(batch, 1, *mask_input_size, dtype=torch.float),
        "has_mask_input": torch.tensor([1], dtype=torch.float),
    }
    if with_orig_size:
        inputs["orig_im_size"] = torch.tensor([1500, 2250], dtype=torch.float)
    return inputs


def _export(module, inputs, output_names, dynamic_axes, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            tuple(inputs.values()),
            str(path),
            export_params=True,
            verbose=False,
            opset_version=OPSET,
            do_constant_folding=True,
            input_names=list(inputs.keys()),
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            dynamo=False,
        )


def export_encoder(sam, path):
    size = sam.image_encoder.img_size
    _export(sam.image_encoder, {"image": torch.randn(1, 3, size, size)}, ["image_embeddings"], None, path)


def export_official_decoder(sam, path):
    dynamic_axes = {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}}
    _export(
        SamOnnxModel(model=sam, return_single_mask=False),
        _decoder_dummy_inputs(sam, 1, with_orig_size=True),
        ["masks", "iou_predictions", "low_res_masks"],
        dynamic_axes,
        path,
    )


def export_lean_decoder(sam, path):
    dynamic_axes = {
        "point_coords": {0: "num_prompts", 1: "num_points"},
        "point_labels": {0: "num_prompts", 1: "num_points"},
        "mask_input": {0: "num_prompts"},
        "iou_predictions": {0: "num_prompts"},
        "low_res_masks": {0: "num_prompts"},
    }
    _export(
        LeanSamOnnxModel(model=sam, return_single_mask=False),
        _decoder_dummy_inputs(sam, 2, with_orig_size=False),
        ["iou_predictions", "low_res_masks"],
        dynamic_axes,
        path,
    )


def write_manifest(folder, name, encoder, decoder, sam):
    mean = ", ".join(f"{v:g}" for v in sam.pixel_mean.flatten().tolist())
    std = ", ".join(f"{v:g}" for v in sam.pixel_std.flatten().tolist())
    (Path(folder) / "model.toml").write_text(
        f'name = "{name}"\nfamily = "sam"\nencoder = "{encoder}"\ndecoder = "{decoder}"\n'
        f"image_size = {sam.image_encoder.img_size}\npixel_mean = [{mean}]\npixel_std = [{std}]\n"
    )


def check_against_torch(sam, official_path, lean_path):
    """Runs both decoders in onnxruntime against SamOnnxModel in PyTorch; returns the largest logit difference."""
    import onnxruntime

    inputs = _decoder_dummy_inputs(sam, 1, with_orig_size=True)
    inputs["point_labels"] = torch.tensor([[1, 0, 1, 2, 3]], dtype=torch.float)
    with torch.no_grad():
        _, scores, low_res = SamOnnxModel(model=sam, return_single_mask=False)(*inputs.values())
    official = onnxruntime.InferenceSession(str(official_path), providers=["CPUExecutionProvider"])
    feeds = {k: v.numpy() for k, v in inputs.items()}
    _, ort_scores, ort_low_res = official.run(None, feeds)
    worst = max(np.abs(ort_low_res - low_res.numpy()).max(), np.abs(ort_scores - scores.numpy()).max())
    lean = onnxruntime.InferenceSession(str(lean_path), providers=["CPUExecutionProvider"])
    batch = {k: v for k, v in feeds.items() if k != "orig_im_size"}
    for key in ("point_coords", "point_labels", "mask_input"):
        batch[key] = np.concatenate([batch[key]] * 3)
    lean_scores, lean_low_res = lean.run(None, batch)
    worst = max(worst, np.abs(lean_low_res - low_res.numpy()).max(), np.abs(lean_scores - scores.numpy()).max())
    return float(worst)
