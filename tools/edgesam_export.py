"""EdgeSAM's ONNX decoder export (its scripts/export_onnx_model.py and edge_sam/utils/coreml.py), re-created for
models of segment-anything's classes: EdgeSAM is not on PyPI, and its decoder is SAM's. (Its encoder export is the
plain layout, input `image` [1, 3, S, S] normalized and padded by the caller, output `image_embeddings`: the one
tools/export_onnx.py writes.)

- The decoder: inputs `image_embeddings`, `point_coords` [1, N, 2] (in the encoder's input frame, with whatever
  padding point the caller adds) and `point_labels` [1, N]; no mask input (the dense prompt is the no-mask
  embedding); outputs `scores` [1, 4] then the low-res `masks` [1, 4, 4h, 4w]; opset 11, N dynamic.
"""

import warnings

import torch
from torch import nn

OPSET = 11


class EdgeSamDecoder(nn.Module):
    """SAM's prompt encoder and mask decoder as EdgeSAM exports them: points only, every mask token out."""

    def __init__(self, sam):
        super().__init__()
        self.sam = sam
        self.img_size = sam.image_encoder.img_size

    def embed_points(self, point_coords, point_labels):
        encoder = self.sam.prompt_encoder
        # Pixel centres, in [0, 1] of the encoder's input, through the random Fourier features.
        embedding = encoder.pe_layer._pe_encoding((point_coords + 0.5) / self.img_size)
        labels = point_labels.unsqueeze(-1).expand_as(embedding)
        embedding = embedding * (labels != -1) + encoder.not_a_point_embed.weight * (labels == -1)
        for label, learned in enumerate(encoder.point_embeddings):
            embedding = embedding + learned.weight * (labels == label)
        return embedding

    @torch.no_grad()
    def forward(self, image_embeddings, point_coords, point_labels):
        dense = self.sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        masks, scores = self.sam.mask_decoder.predict_masks(
            image_embeddings=image_embeddings,
            image_pe=self.sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=self.embed_points(point_coords, point_labels),
            dense_prompt_embeddings=dense,
        )
        return scores, masks


def export_decoder(sam, path):
    decoder = EdgeSamDecoder(sam).eval()
    embedding = torch.randn(1, sam.prompt_encoder.embed_dim, *sam.prompt_encoder.image_embedding_size)
    coords = torch.randint(0, sam.image_encoder.img_size, (1, 5, 2), dtype=torch.float)
    labels = torch.randint(0, 4, (1, 5), dtype=torch.float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            decoder, (embedding, coords, labels), str(path),
            input_names=["image_embeddings", "point_coords", "point_labels"], output_names=["scores", "masks"],
            opset_version=OPSET, dynamic_axes={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}},
            dynamo=False,
        )
