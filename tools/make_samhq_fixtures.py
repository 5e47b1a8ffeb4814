"""Fixtures for SAM-HQ in the ONNX layout of X-AnyLabeling's SAM-HQ downloads, with SAM-HQ's own predictor's answers.

X-AnyLabeling publishes SAM-HQ as `sam_hq_vit_{b,l,h}_encoder.onnx` (and `_encoder_quant.onnx`) with
`sam_hq_vit_{b,l,h}_decoder.onnx`, made by the export scripts of its fork of SysCV's sam-hq (scripts/run.sh there):

* the encoder, exported with `--use-preprocess` (opset 16, TorchScript exporter): input `input_image`, [h, w, 3]
  float32 RGB in 0..255, already resized by the caller so that its longest side is S (dynamic axes `image_height`,
  `image_width`); the graph transposes it to [1, 3, h, w], normalizes with SAM's mean and std and zero-pads it to
  [1, 3, S, S]. Its wrapper returns the ViT's own `(neck output, [output of every global-attention block])`, which the
  exporter flattens into 1 + G outputs while the script names only two: output 0 is `image_embeddings`
  [1, C, S/16, S/16], output 1 is `interm_embeddings` (the FIRST global block's output alone, [1, S/16, S/16, D],
  channels last), and outputs 2..G keep the names the exporter gave their values. X-AnyLabeling's runtime (and the
  fork's scripts/main.py) takes `outputs[0]` and `np.stack(outputs[1:])`.
* the decoder, sam-hq's scripts/export_onnx_model.py with neither `--hq-token-only` nor `--multimask-output`:
  sam-hq's `SamOnnxModel(hq_token_only=False, multimask_output=False)`. Inputs: SamOnnxModel's, with
  `interm_embeddings` second: `image_embeddings` [1, C, E, E], `interm_embeddings` [G, 1, E, E, D] (static; the
  decoder reads only its first slice, the first global block), `point_coords` [1, N, 2], `point_labels` [1, N],
  `mask_input` [1, 1, 4E, 4E], `has_mask_input` [1], `orig_im_size` [2], all float32. Outputs `masks`
  [1, 1, H, W], `iou_predictions` [1, 1], `low_res_masks` [1, 1, 4E, 4E]: ONE mask, the logits of SAM's single-mask
  token (token 0) plus those of the HQ token, scored with token 0's predicted IoU.

So the stacked intermediate embeddings, not the encoder output named `interm_embeddings`, are what the decoder
input of that name takes: a runtime that passes encoder outputs by name alone gives the decoder [1, E, E, D] where
it declares [G, 1, E, E, D].

Here the AMG fixture model's weights (tests/fixtures/models/amg/weights.pt, the samserve-s architecture: S = 256,
C = D = 128, E = 16, global attention in blocks 1 and 3, so G = 2) fill the SAM parts of a SAM-HQ model built
from segment-anything-hq's own classes (`MaskDecoderHQ` with `vit_dim` = D); its HQ parts (HQ token, its MLP,
`compress_vit_feat`, `embedding_encoder`, `embedding_maskfeature`) are seeded and set so that the HQ mask follows
the object (see seed_hq_parts) while the first global block's features move the answer clearly: SAM's token alone,
or the intermediate embeddings stacked in the wrong order, answer differently (the script prints by how much). Both
graphs go to tests/fixtures/models/sam-hq/ under the vit_b file names (the architecture is samserve-s, not ViT-B).

SAM-HQ's `SamPredictor` with `multimask_output=False, hq_token_only=False` (what the exported decoder computes)
answers the PNG prompts of tests/fixtures/parity_samexporter.json in tests/fixtures/parity_samhq.json: one mask a
case (the decoder has no three-mask output; the multimask case of that file is asked here as a single-mask
`point` case), and a refinement whose first pass is the same single-mask request, its `low_res_masks` fed back as
`mask_input`.

Run after make_amg_fixtures.py and make_layout_fixtures.py:  python tools/make_samhq_fixtures.py  (under a minute)
"""

import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from segment_anything.utils.amg import calculate_stability_score
from segment_anything.utils.transforms import ResizeLongestSide
from segment_anything_hq import SamPredictor
from segment_anything_hq.modeling import ImageEncoderViT, MaskDecoderHQ, PromptEncoder, Sam, TwoWayTransformer
from segment_anything_hq.utils.onnx import SamOnnxModel
from torch.nn import functional as F

from make_fixtures import encode_mask
from make_layout_fixtures import rgb8
from make_sam2_fixtures import cpu_sessions
from sam_tiny import PIXEL_MEAN, PIXEL_STD, encoders
from train_default import CONFIG

ROOT = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
WEIGHTS = ROOT / "models" / "amg" / "weights.pt"
FOLDER = ROOT / "models" / "sam-hq"
ENCODER = FOLDER / "sam_hq_vit_b_encoder.onnx"
DECODER = FOLDER / "sam_hq_vit_b_decoder.onnx"
OPSET = 16  # the default of both of the fork's export scripts, which run.sh keeps
HQ_SEED = 20261201
# The first global block's share of the HQ token's mask logits, relative to the rest (median absolute values over the
# low-resolution masks of the probe prompts): enough to move the answer, not enough to swamp it.
HQ_STRENGTH = 0.15
MASKFEATURE_GAIN = 0.3
HQ_PARTS = ("hf_token", "hf_mlp", "compress_vit_feat", "embedding_encoder", "embedding_maskfeature")


def build_hq_sam(config):
    """The samserve-s architecture as SAM-HQ: sam-hq's `_build_sam` wiring with the sizes of `config`."""
    return Sam(
        **encoders(config, ImageEncoderViT, PromptEncoder),
        mask_decoder=MaskDecoderHQ(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=config.decoder_depth,
                embedding_dim=config.prompt_embed_dim,
                mlp_dim=config.decoder_mlp_dim,
                num_heads=config.decoder_num_heads,
            ),
            transformer_dim=config.prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
            vit_dim=config.encoder_embed_dim,
        ),
        pixel_mean=PIXEL_MEAN,
        pixel_std=PIXEL_STD,
    )


def load_hq_sam():
    torch.manual_seed(HQ_SEED)
    sam = build_hq_sam(CONFIG)
    missing, unexpected = sam.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True), strict=False)
    assert not unexpected, unexpected
    assert all(key.split(".")[1] in HQ_PARTS for key in missing), missing
    seed_hq_parts(sam.mask_decoder)
    return sam.eval()


def seed_hq_parts(decoder):
    """HQ parts whose mask follows the object, moved by the first global block's features, without seeded noise.

    The HQ token and its MLP start as copies of SAM's single-mask token and MLP, so that its hypernetwork weights are
    token 0's. `embedding_maskfeature` passes SAM's upscaled mask features through normalized per pixel (its first
    convolution makes [x, -x], its LayerNorm divides by their root mean square, GELU(a) - GELU(-a) = a undoes the
    split), so that the HQ mask has the sign of token 0's. `embedding_encoder` adds nothing (its last transposed
    convolution is zeroed), and `compress_vit_feat`'s seeded transposed convolutions are averaged over their 2x2
    taps (upsampling without a checkerboard), then scaled (calibrate_hq) to move the mask clearly.
    """
    with torch.no_grad():
        decoder.hf_token.weight.copy_(decoder.mask_tokens.weight[0:1])
        decoder.hf_mlp.load_state_dict(decoder.output_hypernetworks_mlps[0].state_dict())
        first, norm, _, last = decoder.embedding_maskfeature
        channels = last.out_channels
        first.weight.zero_()
        first.bias.zero_()
        last.weight.zero_()
        last.bias.zero_()
        for c in range(channels):
            first.weight[c, c, 1, 1] = 1.0
            first.weight[channels + c, c, 1, 1] = -1.0
            last.weight[c, c, 1, 1] = 1.0
            last.weight[c, channels + c, 1, 1] = -1.0
        norm.weight.fill_(MASKFEATURE_GAIN)
        norm.bias.zero_()
        decoder.embedding_encoder[3].weight.zero_()
        decoder.embedding_encoder[3].bias.zero_()
        for index in (0, 3):
            conv = decoder.compress_vit_feat[index]
            conv.weight.copy_(conv.weight.mean(dim=(2, 3), keepdim=True).expand_as(conv.weight) * 2.0)


class EncoderWithPreprocess(torch.nn.Module):
    """The fork's `OnnxEncoderModel` with `use_preprocess`: [h, w, 3] RGB 0..255 in, the ViT's two results out."""

    def __init__(self, sam):
        super().__init__()
        self.image_encoder = sam.image_encoder
        self.register_buffer("mean", torch.tensor(PIXEL_MEAN).view(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(PIXEL_STD).view(-1, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, input_image):
        x = input_image.permute(2, 0, 1).contiguous()[None, :, :, :]
        x = (x - self.mean) / self.std
        h, w = x.shape[-2:]
        x = F.pad(x, (0, self.image_encoder.img_size - w, 0, self.image_encoder.img_size - h))
        return self.image_encoder(x)  # (image_embeddings, [one per global-attention block])


def calibrate_hq(sam, predictor, probes):
    """Scales `compress_vit_feat`'s output so that its share of the answer's mask logits is HQ_STRENGTH times the
    rest's (median absolute values over the low-resolution masks of the probe prompts)."""
    last = sam.mask_decoder.compress_vit_feat[3]

    def logits():
        out = []
        for prompt in probes:
            points, labels, box = prompt_arrays(prompt)
            with torch.no_grad():
                _, _, low = predictor.predict(points, labels, box, None, multimask_output=False, return_logits=True)
            out.append(np.asarray(low).ravel())
        return np.concatenate(out)

    with_vit = logits()
    saved = (last.weight.clone(), last.bias.clone())
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    without_vit = logits()
    factor = HQ_STRENGTH * np.median(np.abs(without_vit)) / np.median(np.abs(with_vit - without_vit))
    with torch.no_grad():
        last.weight.copy_(saved[0] * float(factor))
        last.bias.copy_(saved[1] * float(factor))
    return factor


def prompt_arrays(prompt):
    points = np.array(prompt["points"], dtype=np.float32) if "points" in prompt else None
    labels = np.array(prompt["labels"], dtype=np.float32) if "labels" in prompt else None
    box = np.array(prompt["box"], dtype=np.float32) if "box" in prompt else None
    return points, labels, box


def export(sam):
    FOLDER.mkdir(parents=True, exist_ok=True)
    size = sam.image_encoder.img_size
    encoder = EncoderWithPreprocess(sam).eval()
    embed = sam.prompt_encoder.image_embedding_size
    globals_count = sum(1 for block in sam.image_encoder.blocks if block.window_size == 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            encoder,
            (torch.randn(size, size, 3) * 60 + 120,),
            str(ENCODER),
            export_params=True,
            opset_version=OPSET,
            do_constant_folding=True,
            input_names=["input_image"],
            output_names=["image_embeddings", "interm_embeddings"],  # as the fork names them: two of 1 + G
            dynamic_axes={"input_image": {0: "image_height", 1: "image_width"}},
            dynamo=False,
        )
        decoder = SamOnnxModel(sam, hq_token_only=False, multimask_output=False)
        dummy = {
            "image_embeddings": torch.randn(1, sam.prompt_encoder.embed_dim, *embed),
            "interm_embeddings": torch.randn(globals_count, 1, *embed, sam.image_encoder.patch_embed.proj.out_channels),
            "point_coords": torch.randint(0, size, (1, 5, 2)).float(),
            "point_labels": torch.randint(0, 4, (1, 5)).float(),
            "mask_input": torch.randn(1, 1, *[4 * x for x in embed]),
            "has_mask_input": torch.tensor([1.0]),
            "orig_im_size": torch.tensor([1500.0, 2250.0]),
        }
        torch.onnx.export(
            decoder,
            tuple(dummy.values()),
            str(DECODER),
            export_params=True,
            opset_version=OPSET,
            do_constant_folding=True,
            input_names=list(dummy),
            output_names=["masks", "iou_predictions", "low_res_masks"],
            dynamic_axes={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}},
            dynamo=False,
        )


def reference_case(predictor, name, prompt):
    mask_input = None
    if "refine_from" in prompt:
        points, labels, box = prompt_arrays(prompt["refine_from"])
        _, _, low_res = predictor.predict(points, labels, box, None, multimask_output=False, return_logits=True)
        mask_input = low_res
    points, labels, box = prompt_arrays(prompt)
    logits, scores, _ = predictor.predict(points, labels, box, mask_input, multimask_output=False, return_logits=True)
    stability = calculate_stability_score(torch.from_numpy(logits), 0.0, 1.0).numpy()
    entry = encode_mask(logits[0] > 0.0)
    entry.update(score=float(scores[0]), stability_score=float(stability[0]))
    return {"name": name, "prompt": prompt, "multimask": False, "masks": [entry]}, logits[0] > 0.0


class OnnxPair:
    """Runs the two graphs as X-AnyLabeling's runtime does (outputs[0], np.stack(outputs[1:]))."""

    def __init__(self):
        self.encoder, self.decoder = cpu_sessions(ENCODER, DECODER)

    def set_image(self, rgb, size):
        self.transform = ResizeLongestSide(size)
        self.original_size = rgb.shape[:2]
        resized = self.transform.apply_image(rgb).astype(np.float32)
        outputs = self.encoder.run(None, {"input_image": resized})
        self.image_embeddings, self.interm_embeddings = outputs[0], np.stack(outputs[1:])

    def predict(self, prompt, mask_input=None):
        points, labels, box = prompt_arrays(prompt)
        points = np.zeros((0, 2), np.float32) if points is None else points
        labels = np.zeros((0,), np.float32) if labels is None else labels
        if box is not None:
            points = np.concatenate([points, box.reshape(2, 2)])
            labels = np.concatenate([labels, np.array([2, 3], np.float32)])
        else:
            points = np.concatenate([points, np.zeros((1, 2), np.float32)])
            labels = np.concatenate([labels, np.array([-1], np.float32)])
        coords = self.transform.apply_coords(points, self.original_size).astype(np.float32)
        low = self.decoder.get_inputs()[4].shape[2:]
        feed = {
            "image_embeddings": self.image_embeddings,
            "interm_embeddings": self.interm_embeddings,
            "point_coords": coords[None],
            "point_labels": labels[None].astype(np.float32),
            "mask_input": np.zeros((1, 1, *low), np.float32) if mask_input is None else mask_input,
            "has_mask_input": np.array([0.0 if mask_input is None else 1.0], np.float32),
            "orig_im_size": np.array(self.original_size, np.float32),
        }
        return self.decoder.run(None, feed)


def iou(a, b):
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


def main():
    torch.set_num_threads(1)
    started = time.time()
    sam = load_hq_sam()
    predictor = SamPredictor(sam)
    references = [r for r in json.loads((ROOT / "parity_samexporter.json").read_text())["cases"]
                  if r["image"].endswith(".png")]

    # Calibrate the HQ token on the first image's prompts, then export.
    predictor.set_image(rgb8(ROOT / "images" / references[0]["image"]))
    probes = [r["prompt"] for r in references if r["image"] == references[0]["image"] and "refine_from" not in r["prompt"]]
    factor = calibrate_hq(sam, predictor, probes)
    print(f"compress_vit_feat output scaled by {factor:.4f}")
    export(sam)

    pair = OnnxPair()
    cases, worst_iou, worst_score = [], 1.0, 0.0
    sam_only_ious, swapped_ious = [], []
    current = None
    for reference in references:
        name = "point" if reference["name"] == "point_multimask" else reference["name"]
        prompt = reference["prompt"]
        if reference["image"] != current:
            current = reference["image"]
            rgb = rgb8(ROOT / "images" / current)
            predictor.set_image(rgb)
            pair.set_image(rgb, sam.image_encoder.img_size)
        with torch.no_grad():
            case, torch_mask = reference_case(predictor, name, prompt)
        case.update(image=current, width=reference["width"], height=reference["height"])
        cases.append(case)

        mask_input = None
        if "refine_from" in prompt:
            mask_input = pair.predict(prompt["refine_from"])[2]
        masks, scores, _ = pair.predict(prompt, mask_input)
        assert masks.shape[:2] == (1, 1) and scores.shape == (1, 1), (masks.shape, scores.shape)
        case_iou = iou(masks[0, 0] > 0.0, torch_mask)
        worst_iou = min(worst_iou, case_iou)
        worst_score = max(worst_score, abs(float(scores[0, 0]) - case["masks"][0]["score"]))

        # How decisive the HQ parts are: SAM's token alone, and the interm embeddings in the wrong order.
        if "refine_from" not in prompt:
            points, labels, box = prompt_arrays(prompt)
            with torch.no_grad():
                features = predictor.interm_features
                sam_masks, _, _ = predictor.predict(points, labels, box, None, multimask_output=False,
                                                    return_logits=True, hq_token_only=False)
                hq_masks, _, _ = predictor.predict(points, labels, box, None, multimask_output=False,
                                                   return_logits=True, hq_token_only=True)
                sam_only_ious.append(iou((sam_masks[0] - hq_masks[0]) > 0.0, torch_mask))
                predictor.interm_features = features[::-1]
                swapped, _, _ = predictor.predict(points, labels, box, None, multimask_output=False,
                                                  return_logits=True)
                predictor.interm_features = features
                swapped_ious.append(iou(swapped[0] > 0.0, torch_mask))

    (ROOT / "parity_samhq.json").write_text(json.dumps({"model": "sam-hq", "cases": cases}, indent=1))
    encoder_outputs = [(o.name, o.shape) for o in pair.encoder.get_outputs()]
    decoder_inputs = [(i.name, i.shape) for i in pair.decoder.get_inputs()]
    print(f"encoder outputs: {encoder_outputs}")
    print(f"decoder inputs: {decoder_inputs}")
    print(f"wrote {len(cases)} cases; ONNX vs SamPredictor: worst IoU {worst_iou:.5f}, worst score diff {worst_score:.2e}")
    print(f"IoU with SAM's token alone: min {min(sam_only_ious):.3f} median {np.median(sam_only_ious):.3f}; "
          f"with the interm embeddings swapped: min {min(swapped_ious):.3f} median {np.median(swapped_ious):.3f}")
    print(f"done in {time.time() - started:.1f} s")
    assert worst_iou >= 0.99 and worst_score <= 1e-3


if __name__ == "__main__":
    main()
