"""Fixtures for SAM 2 in the Hugging Face / transformers.js layout of onnx-community/sam2.1-hiera-tiny-ONNX and its
siblings, with the answers of transformers' own SAM 2 path (`Sam2Processor` + `Sam2Model`).

The hub's onnx/ folder holds two files:
- vision_encoder.onnx: `pixel_values` [B, 3, S, S] -> `image_embeddings.0` [B, C/8, S/4, S/4],
  `image_embeddings.1` [B, C/4, S/8, S/8], `image_embeddings.2` [B, C, S/16, S/16] (C = 256 and S = 1024 on the hub:
  [B, 32, 256, 256], [B, 64, 128, 128], [B, 256, 64, 64]). These are `Sam2Model.get_image_embeddings`: the FPN
  levels with the mask decoder's conv_s0 and conv_s1 already applied to the two high-resolution levels (their
  channel counts C/8 and C/4 say so) and no_memory_embedding already added to the lowest-resolution level;
- prompt_encoder_mask_decoder.onnx: `input_points` [B, P, N, 2] float32, `input_labels` [B, P, N] int64,
  `input_boxes` [B, nb, 4] float32 (all in the S x S frame), `image_embeddings.0/.1/.2` -> `iou_scores` [B, P, 3],
  `pred_masks` [B, P, 3, S/4, S/4] (low-res logits) and `object_score_logits` [B, P, 1]. No mask input.
optimum-onnx 0.1.0 has no SAM 2 config, so the files are made here with torch.onnx.export (the TorchScript exporter,
dynamo=False, opset OPSET) of two wrapper modules around `Sam2Model`, under these names and with dynamic B, P, N
and nb. transformers.js feeds every input a graph declares: points only -> input_boxes [B, 0, 4]; a box only ->
input_points [B, 1, 0, 2] and input_labels [B, 1, 0]. `Sam2Model.forward` branches in Python on which prompts are
None (the padding point is appended only when there is no box), which one traced graph cannot do, so the decoder
wrapper builds the sparse tokens in the one order that gives all three of Sam2Model's cases: the points (no
padding point), then each box's two corners (labels 2 and 3), then one "not a point" token. Sam2Model gives
[points, pad] for points only (its pad point, label -1, embeds to exactly not_a_point_embed), [corner, corner,
not_a_point] for a box only, and [points, corner, corner, not_a_point] for both: the same tokens. `check_wrapper`
asserts the wrapper equals Sam2Model in PyTorch for all three. Like Sam2Model, a box goes with each of the P prompts:
nb must be P (box k with prompt k) or 0; a box only with points [B, 1, 0, 2] is right for one box, but nb > 1 boxes
then go into the one prompt as 2 nb corner tokens (no error): pass points [B, nb, 0, 2] for several boxes.

The model is the SAM 2 of tools/make_sam2_fixtures.py (its seeded, tiny `SAM2Base` at image_size 512 with the
decisive weight edits; `build_model` there), converted into transformers' `Sam2Model` with the key renaming of
transformers' convert_sam2_to_hf.py (not shipped in the wheel, so its table is repeated here) and a Sam2Config of the
same sizes. The load is strict apart from SAM2Base's video-only parts, which Sam2Model declares as ignored. So the
same weights answer in both layouts and these answers can be held against parity_sam2.json (SAM2ImagePredictor).

Answers (tests/fixtures/parity_sam2_transformers.json, the schema of parity_sam2.json): `Sam2Processor` (the fast,
torchvision `Sam2ImageProcessorFast` with size S x S) and `Sam2Model` in PyTorch, `get_image_embeddings` once per
image, then the prompt with multimask_output=True, `post_process_masks(binarize=False)` for full-size logits, for the
PNG images and prompts of parity_samexporter.json without refine_from (the export has no mask input), fed with the
pixels make_layout_fixtures.py fed SamPredictor. A "multimask": true case keeps the three masks, a "multimask": false
case the best-scored one (argmax of iou_scores). Stability scores: sam2's calculate_stability_score of the full-size
logits, threshold 0 and offset 1.

`verify` answers every case again with onnxruntime and the caller's side written out in numpy and PIL, and fails
unless every mask has IoU >= 0.99 with transformers' and every score is within 1e-3:
- image: the RGB uint8 image resized to S x S (aspect ratio not kept, no padding) while still 8-bit: torchvision's
  resize of a uint8 tensor (bilinear, antialias=True), which is PIL's Image.resize(BILINEAR) of the RGB image, then
  x * (1/255), (x - mean) / std with ImageNet's mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225), float32,
  [1, 3, S, S]. `check_layout` measures it against the processor's pixel_values: equal to within 1e-5 (transformers
  fuses the rescale into the normalization: (x - 255 mean) / (255 std)) except where PIL's and torchvision's 8-bit
  kernels round a shrunk value one level apart (0.07% of landscape.png's values; none for enlarged images). Resizing
  in float instead (as SAM2ImagePredictor does) moves 5-20% of the values by a level;
- prompt: x * float32(S / w), y * float32(S / h) in float32 (the processor's factor is computed in float64 and
  applied to a float32 tensor); input_points [1, 1, N, 2], input_labels int64 [1, 1, N] (labels 1 and 0; no padding
  point: the graph adds the not-a-point token); the box as input_boxes [1, 1, 4] (x0, y0, x1, y1) scaled the same
  way (the graph adds the corner labels 2 and 3 and the +0.5 pixel-centre shift, as it does for points); points
  only: input_boxes [1, 0, 4]; a box only: input_points [1, 1, 0, 2] and input_labels [1, 1, 0];
- masks: pred_masks [1, 1, 3, S/4, S/4] resized to (h, w) in one step, bilinear, align_corners=False, no
  antialiasing, then > 0 (post_process_masks: no S x S intermediate, no crop, since nothing is padded).
It also checks prompts batched along P (as many points each, with or without a box each) answer as one at a time.

Run after make_sam2_fixtures.py:  python tools/make_sam2_transformers_fixtures.py  (about fifteen seconds)
"""

import json
import re
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as coco_mask
from transformers import (
    Sam2Config,
    Sam2HieraDetConfig,
    Sam2ImageProcessorFast,
    Sam2MaskDecoderConfig,
    Sam2Model,
    Sam2Processor,
    Sam2PromptEncoderConfig,
    Sam2VisionConfig,
)

from make_layout_fixtures import rgb8
from make_sam2_fixtures import (
    IMAGE_SIZE,
    MODEL_DIM,
    TRUNK_DIM,
    answer_references,
    case_of,
    cpu_sessions,
    iou,
    resize_bilinear,
)
from make_sam2_fixtures import build_model as build_sam2_base
from make_transformers_fixtures import MASK_DECODER_KEYS

ROOT = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
FOLDER = ROOT / "models" / "sam2-transformers"
ENCODER = FOLDER / "vision_encoder.onnx"
DECODER = FOLDER / "prompt_encoder_mask_decoder.onnx"
EMBEDDINGS = ["image_embeddings.0", "image_embeddings.1", "image_embeddings.2"]
OPSET = 17
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)  # Sam2ImageProcessorFast's defaults (ImageNet)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

# convert_sam2_to_hf.py's KEYS_TO_MODIFY_MAPPING, applied in this order to each SAM2Base key.
KEYS_TO_MODIFY = {
    **MASK_DECODER_KEYS,
    "dwconv": "depthwise_conv",
    "pwconv": "pointwise_conv",
    "fuser": "memory_fuser",
    "point_embeddings": "point_embed",
    "pe_layer.positional_encoding_gaussian_matrix": "shared_embedding.positional_embedding",
    "obj_ptr_tpos_proj": "temporal_positional_encoding_projection_layer",
    "no_obj_embed_spatial": "occlusion_spatial_embedding_parameter",
    "sam_prompt_encoder": "prompt_encoder",
    "sam_mask_decoder": "mask_decoder",
    "maskmem_tpos_enc": "memory_temporal_positional_encoding",
    "gamma": "scale",
    "image_encoder.neck": "vision_encoder.neck",
    "image_encoder": "vision_encoder.backbone",
    "neck.0": "neck.conv1",
    "neck.1": "neck.layer_norm1",
    "neck.2": "neck.conv2",
    "neck.3": "neck.layer_norm2",
    "pix_feat_proj": "feature_projection",
    "patch_embed.proj": "patch_embed.projection",
    "no_mem_embed": "no_memory_embedding",
    "no_mem_pos_enc": "no_memory_positional_encoding",
    "obj_ptr": "object_pointer",
    ".norm": ".layer_norm",
    "trunk.": "",
    "out_proj": "o_proj",
}
# (pattern, {layer index: new name}) of convert_sam2_to_hf.py's `replace_keys`.
LAYER_RENAMES = [
    (re.compile(r"vision_encoder\.backbone\.blocks\.(\d+)\.mlp\.layers\.(\d+).*"), 2,
     {0: ("layers.0", "proj_in"), 1: ("layers.1", "proj_out")}),
    (re.compile(r"mask_decoder\.transformer\.layers\.(\d+)\.mlp\.layers\.(\d+).*"), 2,
     {0: ("mlp.layers.0", "mlp.proj_in"), 1: ("mlp.layers.1", "mlp.proj_out")}),
    (re.compile(r"mask_decoder\.pred_obj_score_head\.layers\.(\d+).*"), 1,
     {0: ("layers.0", "proj_in"), 1: ("layers.1", "layers.0"), 2: ("layers.2", "proj_out")}),
    (re.compile(r".*\.output_hypernetworks_mlps\.(\d+)\.layers\.(\d+).*"), 2,
     {0: ("layers.0", "proj_in"), 1: ("layers.1", "layers.0"), 2: ("layers.2", "proj_out")}),
    (re.compile(r"object_pointer_proj\.layers\.(\d+).*"), 1,
     {0: ("layers.0", "proj_in"), 1: ("layers.1", "layers.0"), 2: ("layers.2", "proj_out")}),
]


def replace_keys(state_dict):
    """convert_sam2_to_hf.py's `replace_keys`: a SAM2Base state dict with transformers' names."""
    renamed = {}
    for key, value in state_dict.items():
        for old, new in KEYS_TO_MODIFY.items():
            if old in key:
                key = key.replace(old, new)
        for pattern, group, table in LAYER_RENAMES:
            match = pattern.match(key)
            if match and int(match.group(group)) in table:
                key = key.replace(*table[int(match.group(group))])
        if re.match(r"vision_encoder\.neck\.convs\.(\d+)\.conv", key):
            key = key.replace(".conv.", ".")
        if re.match(r"memory_encoder\.o_proj.*", key):
            key = key.replace(".o_proj.", ".projection.")
        renamed[key] = value
    renamed["shared_image_embedding.positional_embedding"] = renamed[
        "prompt_encoder.shared_embedding.positional_embedding"
    ]
    renamed["prompt_encoder.point_embed.weight"] = torch.cat(
        [renamed.pop(f"prompt_encoder.point_embed.{i}.weight") for i in range(4)], dim=0
    )
    return renamed


def sam2_config():
    """make_sam2_fixtures.model_config()'s sizes as a Sam2Config. SAM2Base fixes the decoder's MLP width (2048),
    heads (8) and IoU head width (256), and the Hiera defaults (window sizes 8, 4, 14, 7; heads and widths doubling
    per stage) hold there too."""
    side = IMAGE_SIZE // 16
    hiera = Sam2HieraDetConfig(
        hidden_size=TRUNK_DIM,
        num_attention_heads=1,
        image_size=[IMAGE_SIZE, IMAGE_SIZE],
        blocks_per_stage=[1, 1, 2, 1],
        embed_dim_per_stage=[TRUNK_DIM * k for k in (1, 2, 4, 8)],
        num_attention_heads_per_stage=[1, 2, 4, 8],
        window_size_per_stage=[8, 4, 14, 7],
        global_attention_blocks=[3],
        window_positional_embedding_background_size=[7, 7],
    )
    vision = Sam2VisionConfig(
        backbone_config=hiera,
        backbone_channel_list=[TRUNK_DIM * k for k in (8, 4, 2, 1)],
        backbone_feature_sizes=[[4 * side] * 2, [2 * side] * 2, [side] * 2],
        fpn_hidden_size=MODEL_DIM,
        fpn_top_down_levels=[2, 3],
    )
    return Sam2Config(
        vision_config=vision,
        prompt_encoder_config=Sam2PromptEncoderConfig(hidden_size=MODEL_DIM, image_size=IMAGE_SIZE, patch_size=16),
        mask_decoder_config=Sam2MaskDecoderConfig(hidden_size=MODEL_DIM, mlp_dim=2048, num_attention_heads=8,
                                                  iou_head_hidden_dim=256),
    )


def build_model():
    """make_sam2_fixtures.py's SAM2Base, converted. Returns (Sam2Model, SAM2Base)."""
    base = build_sam2_base()
    model = Sam2Model(sam2_config()).eval()
    missing, unexpected = model.load_state_dict(replace_keys(base.state_dict()), strict=False)
    unexpected = [k for k in unexpected
                  if not any(re.search(p, k) for p in Sam2Model._keys_to_ignore_on_load_unexpected)]
    assert not missing and not unexpected, (missing, unexpected)
    return model, base


def make_processor():
    side = IMAGE_SIZE
    image_processor = Sam2ImageProcessorFast(size={"height": side, "width": side},
                                             mask_size={"height": side // 4, "width": side // 4})
    return Sam2Processor(image_processor, target_size=side)


class VisionEncoder(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return tuple(self.model.get_image_embeddings(pixel_values))


class PromptEncoderMaskDecoder(torch.nn.Module):
    """Sam2Model's prompt encoder and mask decoder for every prompt kind at once (see the module docstring)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_points, input_labels, input_boxes, embeddings0, embeddings1, embeddings2):
        model = self.model
        encoder = model.prompt_encoder
        batch, prompts = input_points.shape[0], input_points.shape[1]
        side = encoder.input_image_size
        points = encoder._embed_points(input_points, input_labels, pad=False)  # [B, P, N, C]
        corners = (input_boxes + 0.5).reshape(batch, -1, 2, 2)  # [B, nb, 2, 2]
        corners = encoder.shared_embedding(corners, (side, side)) + encoder.point_embed.weight[2:4]
        # nb = P: [B, P, 2, C], box k with prompt k; nb = 0: [B, P, 0, C]. Shape arithmetic would be traced to a constant;
        # a -1 for the token count is not (0 elements / (B P C) = 0 in torch and in ONNX's Reshape).
        corners = corners.reshape(batch, prompts, -1, encoder.hidden_size)
        pad = encoder.not_a_point_embed.weight.reshape(1, 1, 1, -1).expand(batch, prompts, 1, -1)
        sparse = torch.cat([points, corners.to(points.dtype), pad], dim=2)
        dense = encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(
            batch, -1, encoder.image_embedding_size[0], encoder.image_embedding_size[1]
        )
        positional = model.get_image_wide_positional_embeddings().repeat(batch, 1, 1, 1)
        masks, scores, _, object_scores = model.mask_decoder(
            image_embeddings=embeddings2,
            image_positional_embeddings=positional,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
            high_resolution_features=[embeddings0, embeddings1],
        )
        return scores, masks, object_scores


def feeds_for(points, labels, boxes, batch=1):
    """Wrapper inputs with transformers.js's empty stand-ins for an absent points or box prompt (torch)."""
    if points is None:
        points, labels = torch.zeros(batch, 1, 0, 2), torch.zeros(batch, 1, 0, dtype=torch.int64)
    if boxes is None:
        boxes = torch.zeros(batch, 0, 4)
    return points, labels, boxes


def check_wrapper(model, processor):
    """The decoder wrapper answers as Sam2Model.forward for points only, a box only, both, and P = 2."""
    torch.manual_seed(0)
    side = IMAGE_SIZE
    embeddings = model.get_image_embeddings(torch.randn(1, 3, side, side))
    wrapper = PromptEncoderMaskDecoder(model).eval()
    points = torch.tensor([[[[100.0, 200.0], [300.0, 50.0]], [[400.0, 400.0], [20.0, 30.0]]]])
    labels = torch.tensor([[[1, 0], [1, 1]]])
    boxes = torch.tensor([[[50.0, 60.0, 300.0, 350.0], [10.0, 20.0, 500.0, 480.0]]])
    worst = 0.0
    for p, l, b in [(points, labels, None), (None, None, boxes[:, :1]), (points[:, :1], labels[:, :1], boxes[:, :1]),
                    (points, labels, boxes)]:
        with torch.no_grad():
            # A copy: Sam2PromptEncoder._embed_boxes adds its 0.5 to the caller's input_boxes in place.
            official = model(image_embeddings=embeddings, input_points=p, input_labels=l,
                             input_boxes=None if b is None else b.clone(), multimask_output=True)
            ours = wrapper(*feeds_for(p, l, b), *embeddings)
        for a, o in zip(ours, (official.iou_scores, official.pred_masks, official.object_score_logits)):
            assert a.shape == o.shape, (a.shape, o.shape)
            worst = max(worst, float((a - o).abs().max()))
    assert worst < 1e-4, worst
    return worst


def export(model):
    FOLDER.mkdir(parents=True, exist_ok=True)
    for stale in FOLDER.iterdir():
        stale.unlink()
    side = IMAGE_SIZE
    torch.manual_seed(0)
    pixel_values = torch.randn(1, 3, side, side)
    with torch.no_grad():
        embeddings = model.get_image_embeddings(pixel_values)
    torch.onnx.export(
        VisionEncoder(model).eval(), (pixel_values,), str(ENCODER), dynamo=False, opset_version=OPSET,
        do_constant_folding=True, input_names=["pixel_values"], output_names=EMBEDDINGS,
        dynamic_axes={"pixel_values": {0: "batch_size"}, **{n: {0: "batch_size"} for n in EMBEDDINGS}},
    )
    points = torch.tensor([[[[100.0, 200.0], [300.0, 50.0]], [[400.0, 400.0], [20.0, 30.0]]]])
    labels = torch.tensor([[[1, 0], [1, 1]]])
    boxes = torch.tensor([[[50.0, 60.0, 300.0, 350.0], [10.0, 20.0, 500.0, 480.0]]])
    torch.onnx.export(
        PromptEncoderMaskDecoder(model).eval(), (points, labels, boxes, *embeddings), str(DECODER), dynamo=False,
        opset_version=OPSET, do_constant_folding=True,
        input_names=["input_points", "input_labels", "input_boxes", *EMBEDDINGS],
        output_names=["iou_scores", "pred_masks", "object_score_logits"],
        dynamic_axes={
            "input_points": {0: "batch_size", 1: "point_batch_size", 2: "num_points"},
            "input_labels": {0: "batch_size", 1: "point_batch_size", 2: "num_points"},
            "input_boxes": {0: "batch_size", 1: "num_boxes"},
            **{n: {0: "batch_size"} for n in EMBEDDINGS},
            "iou_scores": {0: "batch_size", 1: "point_batch_size"},
            "pred_masks": {0: "batch_size", 1: "point_batch_size"},
            "object_score_logits": {0: "batch_size", 1: "point_batch_size"},
        },
    )


class TorchPredictor:
    """transformers' documented SAM 2 path: Sam2Processor, Sam2Model.get_image_embeddings, Sam2Model,
    post_process_masks."""

    def __init__(self, model, processor):
        self.model, self.processor = model, processor

    def set_image(self, rgb):
        inputs = self.processor(images=rgb, return_tensors="pt")
        self.original_sizes = inputs["original_sizes"]
        self.pixel_values = inputs["pixel_values"]
        with torch.no_grad():
            self.embeddings = self.model.get_image_embeddings(inputs["pixel_values"])

    def predict(self, prompts):
        """Full-size logits [P, 3, h, w] and scores [P, 3] for prompts with as many points each, and each a box
        or none."""
        kwargs = {}
        if "points" in prompts[0]:
            kwargs.update(input_points=[[p["points"] for p in prompts]], input_labels=[[p["labels"] for p in prompts]])
        if "box" in prompts[0]:
            kwargs.update(input_boxes=[[p["box"] for p in prompts]])
        inputs = self.processor(original_sizes=self.original_sizes, return_tensors="pt", **kwargs)
        with torch.no_grad():
            outputs = self.model(
                image_embeddings=self.embeddings,
                input_points=inputs.get("input_points"),
                input_labels=inputs.get("input_labels"),
                input_boxes=inputs.get("input_boxes"),
                multimask_output=True,
            )
        logits = self.processor.post_process_masks(outputs.pred_masks, self.original_sizes, binarize=False)[0]
        return logits, outputs.iou_scores[0]


def answerable(reference):
    """The export has no mask input."""
    return "refine_from" not in reference["prompt"]


def reference_case(predictor, reference):
    logits, scores = predictor.predict([reference["prompt"]])
    logits, scores = logits[0].numpy(), scores[0].numpy()
    return case_of(reference, logits, scores, logits > 0.0)


# What a caller of the ONNX files does, in numpy and PIL.


def preprocess(rgb, side):
    """[1, 3, S, S] pixel_values: the 8-bit image resized to S x S (PIL BILINEAR, antialiased), rescaled,
    normalized."""
    resized = np.asarray(Image.fromarray(rgb).resize((side, side), Image.BILINEAR))
    unit = resized.astype(np.float32) * np.float32(1 / 255)
    return ((unit - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32)


def prompt_inputs(prompts, height, width, side):
    """input_points [1, P, N, 2] float32, input_labels [1, P, N] int64 and input_boxes [1, nb, 4] float32, in the
    S x S frame; absent points: [1, P, 0, 2] and [1, P, 0] (P = nb: transformers.js's [1, 1, 0, 2] for one box);
    absent boxes: [1, 0, 4]."""
    scale = np.array([side / width, side / height], dtype=np.float32)
    if "points" in prompts[0]:
        points = np.stack([np.array(p["points"], np.float32) * scale for p in prompts])[None]
        labels = np.array([p["labels"] for p in prompts], dtype=np.int64)[None]
    else:
        points, labels = np.zeros((1, len(prompts), 0, 2), np.float32), np.zeros((1, len(prompts), 0), np.int64)
    if "box" in prompts[0]:
        boxes = np.stack([(np.array(p["box"], np.float32).reshape(2, 2) * scale).reshape(4) for p in prompts])[None]
    else:
        boxes = np.zeros((1, 0, 4), np.float32)
    return points, labels, boxes


class OnnxPredictor:
    """The exported files run the way the Rust service must run them."""

    def __init__(self):
        self.encoder, self.decoder = cpu_sessions(ENCODER, DECODER)
        self.side = self.encoder.get_inputs()[0].shape[2]

    def set_image(self, rgb):
        self.height, self.width = rgb.shape[:2]
        self.pixel_values = preprocess(rgb, self.side)
        self.features = dict(zip(EMBEDDINGS, self.encoder.run(EMBEDDINGS, {"pixel_values": self.pixel_values})))

    def predict(self, prompts):
        points, labels, boxes = prompt_inputs(prompts, self.height, self.width, self.side)
        scores, low_res, _ = self.decoder.run(
            ["iou_scores", "pred_masks", "object_score_logits"],
            dict(self.features, input_points=points, input_labels=labels, input_boxes=boxes),
        )
        flat = low_res[0].reshape(-1, *low_res.shape[-2:])
        logits = resize_bilinear(flat, self.height, self.width).reshape(*low_res.shape[1:3], self.height, self.width)
        return logits, scores[0]

    def answer(self, reference):
        logits, scores = self.predict([reference["prompt"]])
        kept = [0, 1, 2] if reference["multimask"] else [int(np.argmax(scores[0]))]
        return logits[0][kept], scores[0][kept]


def verify(cases, logits):
    predictor = OnnxPredictor()
    worst_iou, worst_score, current = 1.0, 0.0, None
    for case, official in zip(cases, logits):
        if case["image"] != current:
            current = case["image"]
            predictor.set_image(rgb8(ROOT / "images" / current))
        ours, scores = predictor.answer(case)
        ious = [iou(o > 0, t > 0) for o, t in zip(ours, official)]
        differences = [abs(float(s) - m["score"]) for s, m in zip(scores, case["masks"])]
        print(f"  {current:14s} {case['name']:16s} IoU {min(ious):.5f}  score diff {max(differences):.1e}")
        worst_iou, worst_score = min(worst_iou, *ious), max(worst_score, *differences)
    assert worst_iou >= 0.99 and worst_score <= 1e-3, (worst_iou, worst_score)
    return worst_iou, worst_score


def check_layout(cases, torch_predictor):
    """preprocess against the processor's pixel_values; prompts batched along P against one at a time."""
    onnx_predictor = OnnxPredictor()
    pixels, batched, differing = 0.0, 0.0, 0.0
    for image in dict.fromkeys(case["image"] for case in cases):
        rgb = rgb8(ROOT / "images" / image)
        torch_predictor.set_image(rgb)
        onnx_predictor.set_image(rgb)
        official = torch_predictor.pixel_values.numpy()
        pixels = max(pixels, float(np.abs(onnx_predictor.pixel_values - official).max()))
        differing = max(differing, float((np.abs(onnx_predictor.pixel_values - official) > 1e-5).mean()))
        prompts = [case["prompt"] for case in cases if case["image"] == image]
        half = [0.0, 0.0, rgb.shape[1] / 2, rgb.shape[0] / 2]
        box = next(p["box"] for p in prompts if "box" in p)
        point = prompts[0]["points"][:1]
        groups = [
            [p for p in prompts if "points" in p and "box" not in p and len(p["points"]) == 2],  # fg_bg, 3 points' 2
            [{"points": point, "labels": [1], "box": box}, {"points": point, "labels": [0], "box": half}],
            [{"box": box}, {"box": half}],
        ]
        groups[0].append({"points": prompts[-1]["points"][:2], "labels": prompts[-1]["labels"][:2]})
        for group in groups:
            logits, scores = onnx_predictor.predict(group)
            for k, prompt in enumerate(group):
                one_logits, one_scores = onnx_predictor.predict([prompt])
                batched = max(batched, float(np.abs(scores[k] - one_scores[0]).max()),
                              1 - min(iou(a > 0, b > 0) for a, b in zip(logits[k], one_logits[0])))
    # One 8-bit level at most (1 / 255 / std < 0.0176), and rarely: PIL's and torchvision's uint8 kernels round a
    # few shrunk values differently (0.07% of landscape.png's, none of the images that are only enlarged).
    assert pixels < 0.0176 and differing < 0.002, (pixels, differing)
    assert batched < 1e-4, batched
    print(f"  pixel_values: largest difference from Sam2Processor's {pixels:.1e} (one 8-bit level),"
          f" in at most {differing:.3%} of the values;"
          f" prompts batched along P (2 points each; 1 point + 1 box each; 1 box each): largest change"
          f" {batched:.1e} (score or 1 - IoU)")


def compare_with_sam2(cases):
    """These answers against SAM2ImagePredictor's for the same weights (parity_sam2.json)."""
    official = {(c["image"], c["name"]): c for c in json.loads((ROOT / "parity_sam2.json").read_text())["cases"]}
    worst_iou, worst_score = 1.0, 0.0
    for case in cases:
        theirs = official[(case["image"], case["name"])]
        ious = [float(coco_mask.iou([o], [t], [0])[0, 0]) for o, t in zip(case["masks"], theirs["masks"])]
        differences = [abs(o["score"] - t["score"]) for o, t in zip(case["masks"], theirs["masks"])]
        print(f"  {case['image']:14s} {case['name']:16s} IoU {min(ious):.5f}  score diff {max(differences):.1e}")
        worst_iou, worst_score = min(worst_iou, *ious), max(worst_score, *differences)
    print(f"  against SAM2ImagePredictor (parity_sam2.json): smallest IoU {worst_iou:.5f}, largest score difference"
          f" {worst_score:.1e}")


def main():
    torch.set_num_threads(1)
    start = time.time()
    model, _ = build_model()
    processor = make_processor()
    print(f"wrapper against Sam2Model.forward: largest difference {check_wrapper(model, processor):.1e}")
    export(model)
    exported = time.time()
    predictor = TorchPredictor(model, processor)
    references = json.loads((ROOT / "parity_samexporter.json").read_text())["cases"]
    cases, logits, scores = answer_references(predictor, filter(answerable, references), reference_case)
    (ROOT / "parity_sam2_transformers.json").write_text(
        json.dumps({"model": "sam2-transformers", "cases": cases}, indent=1)
    )
    print(f"wrote {len(cases)} cases; onnxruntime with numpy pre- and post-processing against transformers:")
    worst_iou, worst_score = verify(cases, logits)
    check_layout(cases, predictor)
    compare_with_sam2(cases)
    sizes = ", ".join(f"{p.name} {p.stat().st_size / 1e6:.2f} MB" for p in (ENCODER, DECODER))
    print(f"smallest IoU {worst_iou:.5f}, largest score difference {worst_score:.1e}; {sizes}")
    print(f"export {exported - start:.0f} s, all {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
