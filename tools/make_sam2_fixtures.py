"""Fixtures for SAM 2 in the layout samexporter publishes, with the official SAM2ImagePredictor's answers.

samexporter (PyPI `samexporter`, pinned in requirements.txt) exports SAM 2 with its `export_sam2` module: the
encoder takes [1, 3, S, S] float32, already resized to S x S (no aspect ratio kept, no padding) and normalized by
the caller, and answers `high_res_feats_0`, `high_res_feats_1` and `image_embed`; the decoder takes those, the
prompt (`point_coords` in the S x S frame, `point_labels`, `mask_input`, `has_mask_input`; it adds the padding
point itself) and answers the three multimask candidates' low-res logits `masks` [1, 3, S/4, S/4] (clamped to
+-32) and `iou_predictions` [1, 3]. This is the layout of the Hugging Face uploads AnyLabeling uses
(vietanhdev/segment-anything-2-onnx-models), whose file names the files here take.

The model is a real SAM 2 (`SAM2Base`, Meta's `sam2` package, pinned in requirements.txt), built through Hydra's
`instantiate` from the config of sam2_hiera_t.yaml with every size shrunk: a Hiera trunk of embed_dim 8 and stages
[1, 1, 2, 1] (its one global-attention block in stage 3, as in every SAM 2 config), the FPN neck, prompt encoder
and mask decoder at d_model 32 (the decoder's MLP width 2048 and 8 heads are fixed by SAM2Base), a one-layer
memory attention and memory encoder (not exported), and image_size 512 (every shape follows image_size / 16).
Random, seeded, untrained weights give logits near 0 (|logit| ~ 0.03) and three IoU predictions within ~0.01 of
each other, which would make parity fragile. Two weight edits make the answers decisive without training:
- the last layer of each hypernetwork MLP is multiplied by HYPERNETWORK_GAIN, so the mask logits are steep
  (median |logit| ~ 3, largest ~ 23: inside the decoder's +-32 clamp, so the clamp changes nothing here);
- the IoU head's last layer is stretched around IOU_CENTER, z -> IOU_GAIN * (z - IOU_CENTER) before the sigmoid,
  so the scores spread over ~0.02..0.97.
SEED was picked among seeds 0..31 as one with which, on every fixture prompt, the best candidate leads the
next by more than 0.02, each kept mask covers between 1% and 99% of the image, and the best candidate is not
always the same one (the first in 24 cases, the second in 6); `check_decisive` fails if that is lost. The masks
follow the image more than the prompt and carry a fine speckle (random 2x2 transposed-convolution kernels), so
their boundaries are long: a pre-processing that is slightly off (say, resizing the 8-bit image) shows.

SAM2ImagePredictor assumes a 1024 input: it views the encoder's features with hard-coded sizes (256, 128, 64)
(`_bb_feat_sizes`); `make_predictor` sets them from image_size, which is all a smaller image_size needs.

Answers (tests/fixtures/parity_sam2.json): for the PNG images and prompts of tests/fixtures/parity_samexporter.json,
fed with the pixels make_layout_fixtures.py fed SamPredictor. Every case is predicted with multimask_output=True
(samexporter's decoder has only the three multimask tokens; its own runtime takes the best-scored one); a case
with "multimask": true keeps the three masks, one with "multimask": false keeps the best-scored one. A refinement
(`refine_from`) passes the low-res logits of the best-scored mask of `refine_from` as mask_input. Stability scores
are sam2's calculate_stability_score of the full-size logits, threshold 0, offset 1 (SAM 2's AMG defaults).

`verify` then answers every case again with onnxruntime and the pre- and post-processing written out in numpy and
PIL, as a caller of these files must do them, and fails unless every mask has IoU >= 0.99 with the predictor's and
every score is within 1e-3:
- image: RGB uint8 -> float32 / 255 -> resized to S x S as torchvision's Resize does on a float tensor (bilinear,
  antialiased when shrinking; PIL's BILINEAR on mode "F" is the same filter) -> (x - mean) / std with ImageNet's
  mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225) -> [1, 3, S, S];
- prompt: box corners first (labels 2, 3), then the points; x / w * S and y / h * S in float32; no padding
  point; mask_input zeros [1, 1, S/4, S/4] with has_mask_input [0] unless refining;
- masks: the low-res logits resized to the image's (h, w) by bilinear interpolation, align_corners=False and no
  antialiasing (also when shrinking, for images smaller than S/4), then > 0.

"Segment everything" (tests/fixtures/amg_sam2.json, the schema of amg.json: model, cases [{image, params, masks
[{segmentation (COCO RLE), area, bbox, predicted_iou, point_coords, stability_score, crop_box}]}], no logit_scale or
iou_shift since the weight edits above are fixed): the official SAM2AutomaticMaskGenerator (output_mode "coco_rle")
on the same model, its internal SAM2ImagePredictor given the feature sizes as above, for AMG_CASES; params holds
only what differs from SAM 2's defaults (pred_iou_thresh 0.8, stability_score_thresh 0.95, stability_score_offset
1.0, box_nms_thresh 0.7, points_per_side 32, crop_n_layers 0, min_mask_region_area 0, multimask_output True,
use_m2m False). In SAM 2, min_mask_region_area is no post-pass over the final masks (generate never calls
postprocess_small_regions): it is the predictor's max_hole_area and max_sprinkle_area, which fill the low-res
logits' background components of at most that many low-res pixels (8-connected) with +10 and then set the
foreground components of the unfilled logits of at most that area to -10, before the upsampling; its connected
components come from a CUDA kernel that CPU installs lack (the filling is then skipped with a warning), so
`connected_components` stands in for it here.

Small regions (tests/fixtures/parity_sam2_small_regions.json, the schema of parity_sam2.json with two more keys per
case, "max_hole_area" and "max_sprinkle_area", ints): the same predictor's answers with those two options of
SAM2ImagePredictor set, for the non-refinement cases of SMALL_REGION_CASES' images (one setting per image: both
options, holes only, sprinkles only), `connected_components` again standing in for the CUDA kernel. They act in
SAM2Transforms.postprocess_masks on each of the three candidates' low-res logits [S/4, S/4] (128 x 128 here), before
the upsampling: first every 8-connected component of the background (logit <= 0) of at most max_hole_area low-res
pixels is set to +10, then every 8-connected component of the foreground (logit > 0) of those filled logits of at
most max_sprinkle_area pixels is set to -10 (an option at 0 skips its step). The masks, and the stability scores,
come from the full-size logits upsampled from the filled low-res logits, as the predictor's return_logits masks
give them; the scores are the decoder's, untouched. `verify` runs the same steps in numpy (scipy's labelling, not
`connected_components`), and `report_changes` fails unless every case's masks differ from its parity_sam2.json
answer (not necessarily each of a case's three: a candidate may have no small region).

Run after make_layout_fixtures.py:  python tools/make_sam2_fixtures.py  (about fifteen seconds)
"""

import json
import time
from pathlib import Path
from unittest import mock

import cv2
import numpy as np
import onnxruntime
import torch
from scipy import ndimage
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
from sam2.sam2_image_predictor import SAM2ImagePredictor
from sam2.utils.amg import calculate_stability_score
from samexporter.export_sam2 import SAM2ImageDecoder, SAM2ImageEncoder

from make_amg_fixtures import mask_record
from make_fixtures import encode_mask
from make_layout_fixtures import rgb8

ROOT = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
FOLDER = ROOT / "models" / "sam2-samexporter"
ENCODER = FOLDER / "sam2_hiera_tiny.encoder.onnx"
DECODER = FOLDER / "sam2_hiera_tiny.decoder.onnx"
SEED = 28
IMAGE_SIZE = 512
TRUNK_DIM = 8
MODEL_DIM = 32
MEMORY_DIM = 16
HYPERNETWORK_GAIN = 100.0
IOU_GAIN = 25.0
IOU_CENTER = 0.04
OPSET = 18  # export_sam2.py's default
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)  # SAM2Transforms
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
# (image, the generator's parameters that differ from SAM2AutomaticMaskGenerator's defaults). Every candidate of
# this model spans nearly the whole image (the speckle reaches every corner), so box NMS at 0.7 keeps one mask
# and the stabilities stay under 0.95 (about 0.8 at most without min_mask_region_area): thresholds are lowered and
# NMS relaxed (1.0: only IoU > 1 suppresses, so every candidate that passes the filters is kept, in score order).
# min_mask_region_area removes the speckle in the low-res logits, which gives boxes of their own and lets 0.98 NMS
# both keep and suppress. PNG only, as in make_amg_fixtures.py.
AMG_CASES = [
    ("rgba.png", {"points_per_side": 16, "pred_iou_thresh": 0.5, "stability_score_thresh": 0.6,
                  "box_nms_thresh": 0.98, "min_mask_region_area": 200}),
    ("gray.png", {"points_per_side": 16, "pred_iou_thresh": 0.5, "stability_score_thresh": 0.6,
                  "box_nms_thresh": 1.0, "min_mask_region_area": 200}),
    ("rgba.png", {"points_per_side": 8, "pred_iou_thresh": 0.5, "stability_score_thresh": 0.6,
                  "box_nms_thresh": 1.0}),
]
# (image, max_hole_area, max_sprinkle_area) in low-res pixels (of S/4 x S/4) for parity_sam2_small_regions.json:
# both options (hole and sprinkle areas unequal), holes only, sprinkles only. Each changes every case's masks.
SMALL_REGION_CASES = [("landscape.png", 100, 20), ("rgba.png", 40, 0), ("gray.png", 0, 40)]


def model_config():
    """sam2_hiera_t.yaml with every size shrunk, and the overrides build_sam2 adds (apply_postprocessing)."""
    feat = IMAGE_SIZE // 16
    rope = {"_target_": "sam2.modeling.sam.transformer.RoPEAttention", "rope_theta": 10000.0,
            "feat_sizes": [feat, feat], "embedding_dim": MODEL_DIM, "num_heads": 1, "downsample_rate": 1,
            "dropout": 0.1}

    def sine(channels):
        return {"_target_": "sam2.modeling.position_encoding.PositionEmbeddingSine", "num_pos_feats": channels,
                "normalize": True, "scale": None, "temperature": 10000}

    return {
        "_target_": "sam2.modeling.sam2_base.SAM2Base",
        "image_encoder": {
            "_target_": "sam2.modeling.backbones.image_encoder.ImageEncoder",
            "scalp": 1,
            "trunk": {"_target_": "sam2.modeling.backbones.hieradet.Hiera", "embed_dim": TRUNK_DIM, "num_heads": 1,
                      "stages": [1, 1, 2, 1], "global_att_blocks": [3], "window_pos_embed_bkg_spatial_size": [7, 7]},
            "neck": {"_target_": "sam2.modeling.backbones.image_encoder.FpnNeck", "position_encoding": sine(MODEL_DIM),
                     "d_model": MODEL_DIM, "backbone_channel_list": [8 * TRUNK_DIM, 4 * TRUNK_DIM, 2 * TRUNK_DIM,
                                                                     TRUNK_DIM],
                     "fpn_top_down_levels": [2, 3], "fpn_interp_model": "nearest"},
        },
        "memory_attention": {
            "_target_": "sam2.modeling.memory_attention.MemoryAttention", "d_model": MODEL_DIM,
            "pos_enc_at_input": True, "num_layers": 1,
            "layer": {"_target_": "sam2.modeling.memory_attention.MemoryAttentionLayer", "activation": "relu",
                      "dim_feedforward": 2 * MODEL_DIM, "dropout": 0.1, "pos_enc_at_attn": False,
                      "d_model": MODEL_DIM, "pos_enc_at_cross_attn_keys": True,
                      "pos_enc_at_cross_attn_queries": False, "self_attention": rope,
                      "cross_attention": {**rope, "rope_k_repeat": True, "kv_in_dim": MEMORY_DIM}},
        },
        "memory_encoder": {
            "_target_": "sam2.modeling.memory_encoder.MemoryEncoder", "out_dim": MEMORY_DIM, "in_dim": MODEL_DIM,
            "position_encoding": sine(MEMORY_DIM),
            "mask_downsampler": {"_target_": "sam2.modeling.memory_encoder.MaskDownSampler", "embed_dim": MODEL_DIM,
                                 "kernel_size": 3, "stride": 2, "padding": 1},
            "fuser": {"_target_": "sam2.modeling.memory_encoder.Fuser", "num_layers": 1,
                      "layer": {"_target_": "sam2.modeling.memory_encoder.CXBlock", "dim": MODEL_DIM,
                                "kernel_size": 7, "padding": 3, "layer_scale_init_value": 1e-6, "use_dwconv": True}},
        },
        "num_maskmem": 7,
        "image_size": IMAGE_SIZE,
        "sigmoid_scale_for_mem_enc": 20.0,
        "sigmoid_bias_for_mem_enc": -10.0,
        "use_mask_input_as_output_without_sam": True,
        "directly_add_no_mem_embed": True,
        "use_high_res_features_in_sam": True,
        "multimask_output_in_sam": True,
        "iou_prediction_use_sigmoid": True,
        "use_obj_ptrs_in_encoder": True,
        "add_tpos_enc_to_obj_ptrs": False,
        "only_obj_ptrs_in_the_past_for_eval": True,
        "pred_obj_scores": True,
        "pred_obj_scores_mlp": True,
        "fixed_no_obj_ptr": True,
        "multimask_output_for_tracking": True,
        "use_multimask_token_for_obj_ptr": True,
        "multimask_min_pt_num": 0,
        "multimask_max_pt_num": 1,
        "use_mlp_for_obj_ptr_proj": True,
        "compile_image_encoder": False,
        "sam_mask_decoder_extra_args": {"dynamic_multimask_via_stability": True,
                                        "dynamic_multimask_stability_delta": 0.05,
                                        "dynamic_multimask_stability_thresh": 0.98},
    }


def build_model():
    torch.manual_seed(SEED)
    model = instantiate(OmegaConf.create(model_config()), _recursive_=True).eval()
    decoder = model.sam_mask_decoder
    with torch.no_grad():
        for mlp in decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(HYPERNETWORK_GAIN)
            mlp.layers[-1].bias.mul_(HYPERNETWORK_GAIN)
        iou_out = decoder.iou_prediction_head.layers[-1]
        iou_out.weight.mul_(IOU_GAIN)
        iou_out.bias.sub_(IOU_CENTER).mul_(IOU_GAIN)
    return model


def fit_feature_sizes(predictor, model):
    """SAM2ImagePredictor's feature sizes, hard-coded for image_size 1024, set from the model's."""
    side = model.image_size // model.backbone_stride
    predictor._bb_feat_sizes = [(4 * side, 4 * side), (2 * side, 2 * side), (side, side)]
    return predictor


def make_predictor(model, max_hole_area=0.0, max_sprinkle_area=0.0):
    predictor = SAM2ImagePredictor(model, max_hole_area=max_hole_area, max_sprinkle_area=max_sprinkle_area)
    return fit_feature_sizes(predictor, model)


def export(model):
    """export_sam2.py's __main__, with the model's image_size for its fixed 1024."""
    FOLDER.mkdir(parents=True, exist_ok=True)
    for stale in FOLDER.iterdir():
        stale.unlink()
    torch.manual_seed(SEED)
    input_size = (model.image_size, model.image_size)
    img = torch.randn(1, 3, input_size[0], input_size[1]).cpu()
    sam2_encoder = SAM2ImageEncoder(model).cpu()
    high_res_feats_0, high_res_feats_1, image_embed = sam2_encoder(img)
    torch.onnx.utils.export(
        sam2_encoder,
        img,
        str(ENCODER),
        export_params=True,
        opset_version=OPSET,
        do_constant_folding=True,
        input_names=["image"],
        output_names=["high_res_feats_0", "high_res_feats_1", "image_embed"],
    )

    sam2_decoder = SAM2ImageDecoder(model, multimask_output=True).cpu()
    embed_size = (model.image_size // model.backbone_stride, model.image_size // model.backbone_stride)
    mask_input_size = [4 * x for x in embed_size]
    point_coords = torch.randint(low=0, high=input_size[1], size=(1, 5, 2), dtype=torch.float)
    point_labels = torch.randint(low=0, high=1, size=(1, 5), dtype=torch.float)
    mask_input = torch.randn(1, 1, *mask_input_size, dtype=torch.float)
    has_mask_input = torch.tensor([1], dtype=torch.float)
    inputs = (image_embed, high_res_feats_0, high_res_feats_1, point_coords, point_labels, mask_input, has_mask_input)
    sam2_decoder(*inputs)
    torch.onnx.utils.export(
        sam2_decoder,
        inputs,
        str(DECODER),
        export_params=True,
        opset_version=OPSET,
        do_constant_folding=True,
        input_names=["image_embed", "high_res_feats_0", "high_res_feats_1", "point_coords", "point_labels",
                     "mask_input", "has_mask_input"],
        output_names=["masks", "iou_predictions"],
        dynamic_axes={
            "point_coords": {0: "num_labels", 1: "num_points"},
            "point_labels": {0: "num_labels", 1: "num_points"},
            "mask_input": {0: "num_labels"},
            "has_mask_input": {0: "num_labels"},
        },
    )


def predict(predictor, prompt, mask_input=None):
    coords = np.array(prompt["points"], dtype=np.float32) if "points" in prompt else None
    labels = np.array(prompt["labels"], dtype=np.float32) if "labels" in prompt else None
    box = np.array(prompt["box"], dtype=np.float32) if "box" in prompt else None
    return predictor.predict(coords, labels, box, mask_input, multimask_output=True, return_logits=True)


def reference_case(predictor, reference):
    """The official answer for one case of parity_samexporter.json; also the kept masks' full-size logits and the
    three candidates' scores."""
    prompt = reference["prompt"]
    mask_input = None
    if "refine_from" in prompt:
        _, scores, low_res = predict(predictor, prompt["refine_from"])
        mask_input = low_res[np.argmax(scores)][None]
    logits, scores, _ = predict(predictor, prompt, mask_input)
    return case_of(reference, logits, scores, logits > 0.0)


def case_of(reference, logits, scores, masks):
    """A fixture case from the three candidates' full-size logits, scores and masks: all three for a multimask
    case, else the best-scored one; also the kept logits and the scores."""
    kept = [0, 1, 2] if reference["multimask"] else [int(np.argmax(scores))]
    stability = calculate_stability_score(torch.from_numpy(logits), 0.0, 1.0).numpy()
    entries = []
    for k in kept:
        entry = encode_mask(masks[k])
        entry.update(score=float(scores[k]), stability_score=float(stability[k]))
        entries.append(entry)
    case = {key: reference[key] for key in ("name", "prompt", "multimask")}
    case["masks"] = entries
    case.update({key: reference[key] for key in ("image", "width", "height")})
    return case, logits[kept], scores


# What a caller of the ONNX files does, in numpy and PIL.


def preprocess(rgb, size):
    """[1, 3, S, S] encoder input: SAM2Transforms (ToTensor, Resize((S, S)) antialiased, Normalize)."""
    unit = rgb.astype(np.float32) / np.float32(255.0)
    resized = np.stack(
        [np.asarray(Image.fromarray(unit[:, :, c]).resize((size, size), Image.BILINEAR)) for c in range(3)]
    )
    return ((resized - MEAN[:, None, None]) / STD[:, None, None])[None].astype(np.float32)


def box_first_slots(prompt):
    """A fixture prompt's points as lists of [x, y] and labels: the box corners (labels 2, 3) first."""
    coords, labels = [], []
    if "box" in prompt:
        coords += [prompt["box"][:2], prompt["box"][2:]]
        labels += [2, 3]
    return coords + prompt.get("points", []), labels + prompt.get("labels", [])


def prompt_inputs(prompt, width, height, size):
    """point_coords and point_labels [1, N, 2], [1, N]: box corners first, points scaled to the S x S frame."""
    coords, labels = box_first_slots(prompt)
    coords = np.array(coords, dtype=np.float32).reshape(-1, 2)
    coords = coords / np.array([width, height], dtype=np.float32) * np.float32(size)
    return coords[None], np.array(labels, dtype=np.float32)[None]


def fill_small_regions(low_res, max_hole_area, max_sprinkle_area):
    """SAM2Transforms.postprocess_masks' filling of [C, h, w] low-res logits, before the upsampling: background
    components (logit <= 0, 8-connected) of at most max_hole_area pixels to +10, then foreground components (> 0)
    of the result of at most max_sprinkle_area pixels to -10; an area of 0 skips its step."""

    def small(plane, max_area):
        labels, _ = ndimage.label(plane, structure=np.ones((3, 3), dtype=bool))
        areas = np.bincount(labels.ravel())
        return (labels > 0) & (areas[labels] <= max_area)

    filled = low_res.copy()
    if max_hole_area > 0:
        for plane in filled:
            plane[small(plane <= 0, max_hole_area)] = 10.0
    if max_sprinkle_area > 0:
        for plane in filled:
            plane[small(plane > 0, max_sprinkle_area)] = -10.0
    return filled


def stability_scores(logits):
    """calculate_stability_score of [C, h, w] logits, threshold 0 and offset 1."""
    inner = (logits > 1.0).sum(axis=(1, 2))
    outer = (logits > -1.0).sum(axis=(1, 2))
    return np.where(outer > 0, inner / np.maximum(outer, 1), 1.0)


def resize_bilinear(low_res, height, width):
    """torch's F.interpolate(mode="bilinear", align_corners=False) of [C, h, w] to [C, height, width], float32."""

    def taps(out_size, in_size):
        scale = np.float32(in_size) / np.float32(out_size)
        source = np.maximum((np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5), 0)
        first = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
        second = np.minimum(first + 1, in_size - 1)
        return first, second, (source - first).astype(np.float32)

    y0, y1, fy = taps(height, low_res.shape[1])
    x0, x1, fx = taps(width, low_res.shape[2])
    rows = low_res[:, y0, :] * (1 - fy)[None, :, None] + low_res[:, y1, :] * fy[None, :, None]
    return rows[:, :, x0] * (1 - fx)[None, None, :] + rows[:, :, x1] * fx[None, None, :]


class OnnxPredictor:
    """The exported files run the way the Rust service must run them."""

    def __init__(self):
        self.encoder, self.decoder = cpu_sessions(ENCODER, DECODER)
        self.size = self.encoder.get_inputs()[0].shape[2]

    def set_image(self, rgb):
        self.height, self.width = rgb.shape[:2]
        names = [output.name for output in self.encoder.get_outputs()]
        self.features = dict(zip(names, self.encoder.run(None, {"image": preprocess(rgb, self.size)})))

    def predict(self, prompt, mask_input=None, max_hole_area=0, max_sprinkle_area=0):
        """(logits [3, h, w], scores [3], low-res logits [3, S/4, S/4]); the full-size logits are upsampled from the
        low-res logits with small regions filled (`fill_small_regions`), the low-res logits returned are not."""
        coords, labels = prompt_inputs(prompt, self.width, self.height, self.size)
        side = self.size // 4
        feeds = dict(self.features, point_coords=coords, point_labels=labels)
        if mask_input is None:
            feeds.update(mask_input=np.zeros((1, 1, side, side), np.float32), has_mask_input=np.zeros(1, np.float32))
        else:
            feeds.update(mask_input=mask_input[None].astype(np.float32), has_mask_input=np.ones(1, np.float32))
        low_res, scores = self.decoder.run(["masks", "iou_predictions"], feeds)
        filled = fill_small_regions(low_res[0], max_hole_area, max_sprinkle_area)
        return resize_bilinear(filled, self.height, self.width), scores[0], low_res[0]

    def answer(self, reference):
        prompt = reference["prompt"]
        mask_input = None
        if "refine_from" in prompt:
            _, scores, low_res = self.predict(prompt["refine_from"])
            mask_input = low_res[np.argmax(scores)][None]
        logits, scores, _ = self.predict(prompt, mask_input, reference.get("max_hole_area", 0),
                                         reference.get("max_sprinkle_area", 0))
        kept = [0, 1, 2] if reference["multimask"] else [int(np.argmax(scores))]
        return logits[kept], scores[kept]


def iou(a, b):
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def verify(cases, logits):
    """Every case answered again through onnxruntime; returns the smallest mask IoU, largest score difference and
    largest stability score difference."""
    onnx_predictor = OnnxPredictor()
    worst_iou, worst_score, worst_stability, current = 1.0, 0.0, 0.0, None
    for case, official in zip(cases, logits):
        if case["image"] != current:
            current = case["image"]
            onnx_predictor.set_image(rgb8(ROOT / "images" / current))
        ours, scores = onnx_predictor.answer(case)
        ious = [iou(o > 0, t > 0) for o, t in zip(ours, official)]
        differences = [abs(float(s) - m["score"]) for s, m in zip(scores, case["masks"])]
        stabilities = [abs(float(s) - m["stability_score"]) for s, m in zip(stability_scores(ours), case["masks"])]
        print(f"  {current:14s} {case['name']:16s} IoU {min(ious):.5f}  score diff {max(differences):.1e}"
              f"  stability diff {max(stabilities):.1e}")
        worst_iou, worst_score = min(worst_iou, *ious), max(worst_score, *differences)
        worst_stability = max(worst_stability, *stabilities)
    assert worst_iou >= 0.99 and worst_score <= 1e-3 and worst_stability <= 1e-2, (worst_iou, worst_score,
                                                                                   worst_stability)
    return worst_iou, worst_score, worst_stability


def check_decisive(cases, logits, scores):
    """What the weight edits and the seed are for; a change of either, or of sam2, that loses it fails here."""
    for case, kept_logits, candidates in zip(cases, logits, scores):
        fractions = [m["area"] / (case["width"] * case["height"]) for m in case["masks"]]
        assert all(0.01 < f < 0.99 for f in fractions), (case["image"], case["name"], fractions)
        assert np.abs(kept_logits).max() < 32.0, (case["image"], case["name"])  # the decoder's clamp
        first, second = np.sort(candidates)[::-1][:2]
        assert first - second > 0.02, (case["image"], case["name"], candidates)
    assert len({int(np.argmax(candidates)) for candidates in scores}) > 1, "the same candidate is always best"


def connected_components(mask):
    """sam2.utils.misc.get_connected_components on the CPU. sam2 computes it with a CUDA kernel of its own
    (sam2._C, csrc/connected_components.cu: 8-connectivity; labels > 0 on the foreground, and each foreground pixel's
    component area); without it (any CPU install) SAM2Transforms.postprocess_masks warns and skips the hole and
    sprinkle filling. mask: [N, 1, H, W] bool; returns (labels, areas) int32 [N, 1, H, W], 0 on the background."""
    planes = mask[:, 0].to(torch.uint8).numpy()
    labels, areas = np.zeros(planes.shape, np.int32), np.zeros(planes.shape, np.int32)
    for n, plane in enumerate(planes):
        _, labels[n], stats, _ = cv2.connectedComponentsWithStats(plane, connectivity=8)
        areas[n] = np.where(labels[n] > 0, stats[labels[n], cv2.CC_STAT_AREA], 0)
    return torch.from_numpy(labels)[:, None], torch.from_numpy(areas)[:, None]


def amg_cases(model):
    """SAM2AutomaticMaskGenerator's masks for AMG_CASES, in the schema of amg.json (make_amg_fixtures.py)."""
    cases = []
    with mock.patch("sam2.utils.misc.get_connected_components", connected_components):
        for file_name, params in AMG_CASES:
            generator = SAM2AutomaticMaskGenerator(model, output_mode="coco_rle", **params)
            fit_feature_sizes(generator.predictor, model)
            masks = generator.generate(rgb8(ROOT / "images" / file_name))
            print(f"  {file_name} {params}: {len(masks)} masks", flush=True)
            cases.append({"image": file_name, "params": params, "masks": [mask_record(m) for m in masks]})
    return cases


def small_region_cases(model, references):
    """The predictor's answers with max_hole_area and max_sprinkle_area, for the non-refinement reference cases of
    SMALL_REGION_CASES' images: the cases (with the two options) and the kept logits."""
    cases, logits = [], []
    with mock.patch("sam2.utils.misc.get_connected_components", connected_components):
        for file_name, max_hole_area, max_sprinkle_area in SMALL_REGION_CASES:
            predictor = make_predictor(model, max_hole_area, max_sprinkle_area)
            chosen = [r for r in references if r["image"] == file_name and "refine_from" not in r["prompt"]]
            answered, kept_logits, _ = answer_references(predictor, chosen, reference_case)
            for case in answered:
                case.update(max_hole_area=max_hole_area, max_sprinkle_area=max_sprinkle_area)
            cases += answered
            logits += kept_logits
    return cases, logits


def report_changes(cases, logits, plain_cases, plain_logits):
    """How many pixels of each mask the options change from the plain answer (parity_sam2.json's), and how much its
    stability score; fails if a case's masks are unchanged, or its candidates' scores differ."""
    plain = {(c["image"], c["name"]): (c, l) for c, l in zip(plain_cases, plain_logits)}
    for case, kept_logits in zip(cases, logits):
        plain_case, plain_kept = plain[case["image"], case["name"]]
        changed = [int(((a > 0) != (b > 0)).sum()) for a, b in zip(kept_logits, plain_kept)]
        stability = max(abs(m["stability_score"] - p["stability_score"])
                        for m, p in zip(case["masks"], plain_case["masks"]))
        assert [m["score"] for m in case["masks"]] == [m["score"] for m in plain_case["masks"]], case["name"]
        assert sum(changed) > 0, (case["image"], case["name"], changed)
        share = sum(changed) / (len(changed) * case["width"] * case["height"])
        print(f"  {case['image']:14s} {case['name']:16s} holes {case['max_hole_area']:3d} sprinkles "
              f"{case['max_sprinkle_area']:3d}: {changed} ({share:.1%}), stability up to {stability:.3f} apart")


def cpu_sessions(*paths):
    """One-thread onnxruntime CPU sessions of the ONNX files `paths`, as the verifications run them."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    return [onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]) for path in paths]


def answer_references(predictor, references, answer):
    """`answer(predictor, reference)` for each reference case, the predictor set to each image once: the cases, the
    kept logits and the candidates' scores."""
    cases, logits, scores, current = [], [], [], None
    for reference in references:
        if reference["image"] != current:
            current = reference["image"]
            predictor.set_image(rgb8(ROOT / "images" / current))
        case, kept_logits, candidate_scores = answer(predictor, reference)
        cases.append(case)
        logits.append(kept_logits)
        scores.append(candidate_scores)
    return cases, logits, scores


def main():
    torch.set_num_threads(1)
    start = time.time()
    model = build_model()
    export(model)
    predictor = make_predictor(model)
    references = json.loads((ROOT / "parity_samexporter.json").read_text())["cases"]
    cases, logits, scores = answer_references(predictor, references, reference_case)
    check_decisive(cases, logits, scores)
    (ROOT / "parity_sam2.json").write_text(json.dumps({"model": "sam2-samexporter", "cases": cases}, indent=1))
    print(f"wrote {len(cases)} cases; onnxruntime with numpy pre- and post-processing against the predictor:")
    worst_iou, worst_score, worst_stability = verify(cases, logits)
    sizes = ", ".join(f"{path.name} {path.stat().st_size / 1e6:.2f} MB" for path in (ENCODER, DECODER))
    print(f"smallest IoU {worst_iou:.5f}, largest score difference {worst_score:.1e}, largest stability difference "
          f"{worst_stability:.1e}; {sizes}")
    print("small regions (pixels changed from parity_sam2.json, mask by mask):")
    small, small_logits = small_region_cases(model, references)
    report_changes(small, small_logits, cases, logits)
    path = ROOT / "parity_sam2_small_regions.json"
    path.write_text(json.dumps({"model": "sam2-samexporter", "cases": small}, indent=1))
    print(f"wrote {path.name}, {len(small)} cases, {path.stat().st_size / 1e3:.0f} KB; onnxruntime and numpy:")
    worst_iou, worst_score, worst_stability = verify(small, small_logits)
    print(f"smallest IoU {worst_iou:.5f}, largest score difference {worst_score:.1e}, largest stability difference "
          f"{worst_stability:.1e}")
    print("automatic mask generator:")
    amg = ROOT / "amg_sam2.json"
    amg.write_text(json.dumps({"model": "sam2-samexporter", "cases": amg_cases(model)}))
    print(f"wrote {amg.name}, {amg.stat().st_size / 1e6:.2f} MB; {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
