"""EfficientSAM's model code and its ONNX wrappers, re-created for the fixtures of tools/make_efficientsam_fixtures.py.

EfficientSAM is not on PyPI; this is its published code, github.com/yformer/EfficientSAM (Apache-2.0, Copyright (c)
Meta Platforms, Inc. and affiliates), condensed into one file with the same classes, parameter names (so the
official checkpoints' state dicts load), arithmetic and branches:
- efficient_sam/efficient_sam_encoder.py: LayerNorm2d, PatchEmbed, Attention, Mlp, Block, get_abs_pos, ImageEncoderViT;
- efficient_sam/mlp.py: MLPBlock;  efficient_sam/two_way_transformer.py: TwoWayTransformer and its blocks;
- efficient_sam/efficient_sam_decoder.py: PromptEncoder, PositionEmbeddingRandom, MaskDecoder;
- efficient_sam/efficient_sam.py: EfficientSam (forward, predict_masks, get_rescaled_pts, preprocess) and
  build_efficient_sam, whose fixed sizes (image 1024, depth 12, neck [256, 256], decoder MLP 2048 and 8 heads,
  upscaling [64, 32], IoU head 256) are keyword arguments here, their defaults the published values;
- onnx_models.py (labelme's, by Kentaro Wada): OnnxEfficientSam, OnnxEfficientSamEncoder, OnnxEfficientSamDecoder,
  which export_to_onnx.py exports (bilinear, not bicubic, upsampling of the masks; no torch.where in
  get_rescaled_pts; a third output, the low-res masks).
Left out: docstrings, the relu and normalize_before_activation options the builder never changes (gelu, False),
checkpoint loading, the unused PatchEmbed img_size argument and dead locals.
"""

import math
from typing import List, Tuple, Type

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

# efficient_sam/mlp.py


class MLPBlock(nn.Module):
    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int, act: Type[nn.Module]):
        super().__init__()
        self.num_layers = num_layers
        h = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Linear(n, k), act()) for n, k in zip([input_dim] + h, [hidden_dim] * num_layers)
        )
        self.fc = nn.Linear(hidden_dim, output_dim)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.fc(x)


# efficient_sam/efficient_sam_encoder.py


class LayerNorm2d(nn.Module):
    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class PatchEmbed(nn.Module):
    def __init__(self, patch_size, in_chans, embed_dim):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=(patch_size, patch_size),
                              stride=(patch_size, patch_size), bias=True)

    def forward(self, x):
        return self.proj(x)


class Attention(nn.Module):
    def __init__(self, dim, num_heads, qkv_bias, qk_scale=None):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU):
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=False, qk_scale=None, act_layer=nn.GELU):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def get_abs_pos(abs_pos: Tensor, has_cls_token: bool, hw: List[int]) -> Tensor:
    """The absolute positional embeddings (1, num_position, C), trained at 224 x 224, resized (bicubic) to the
    image's tokens, without the cls token: (1, H, W, C)."""
    h, w = hw[0], hw[1]
    if has_cls_token:
        abs_pos = abs_pos[:, 1:]
    xy_num = abs_pos.shape[1]
    size = int(math.sqrt(xy_num))
    assert size * size == xy_num
    if size != h or size != w:
        new_abs_pos = F.interpolate(abs_pos.reshape(1, size, size, -1).permute(0, 3, 1, 2), size=(h, w),
                                    mode="bicubic", align_corners=False)
        return new_abs_pos.permute(0, 2, 3, 1)
    return abs_pos.reshape(1, h, w, -1)


class ImageEncoderViT(nn.Module):
    def __init__(self, img_size: int, patch_size: int, in_chans: int, patch_embed_dim: int, normalization_type: str,
                 depth: int, num_heads: int, mlp_ratio: float, neck_dims: List[int], act_layer: Type[nn.Module]):
        super().__init__()
        self.img_size = img_size
        self.image_embedding_size = img_size // (patch_size if patch_size > 0 else 1)
        self.transformer_output_dim = ([patch_embed_dim] + neck_dims)[-1]
        self.pretrain_use_cls_token = True
        pretrain_img_size = 224
        self.patch_embed = PatchEmbed(patch_size, in_chans, patch_embed_dim)
        num_positions = (pretrain_img_size // patch_size) * (pretrain_img_size // patch_size) + 1
        self.pos_embed = nn.Parameter(torch.zeros(1, num_positions, patch_embed_dim))
        self.blocks = nn.ModuleList([Block(patch_embed_dim, num_heads, mlp_ratio, True) for _ in range(depth)])
        self.neck = nn.Sequential(
            nn.Conv2d(patch_embed_dim, neck_dims[0], kernel_size=1, bias=False),
            LayerNorm2d(neck_dims[0]),
            nn.Conv2d(neck_dims[0], neck_dims[0], kernel_size=3, padding=1, bias=False),
            LayerNorm2d(neck_dims[0]),
        )

    def forward(self, x: Tensor) -> Tensor:
        assert x.shape[2] == self.img_size and x.shape[3] == self.img_size, "input image size must match self.img_size"
        x = self.patch_embed(x)
        x = x.permute(0, 2, 3, 1)  # B C H W -> B H W C
        x = x + get_abs_pos(self.pos_embed, self.pretrain_use_cls_token, [x.shape[1], x.shape[2]])
        num_patches = x.shape[1]
        assert x.shape[2] == num_patches
        x = x.reshape(x.shape[0], num_patches * num_patches, x.shape[3])
        for blk in self.blocks:
            x = blk(x)
        x = x.reshape(x.shape[0], num_patches, num_patches, x.shape[2])
        return self.neck(x.permute(0, 3, 1, 2))


# efficient_sam/two_way_transformer.py


class AttentionForTwoWayAttentionBlock(nn.Module):
    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        assert self.internal_dim % num_heads == 0, "num_heads must divide embedding_dim."
        self.c_per_head = self.internal_dim / num_heads
        self.inv_sqrt_c_per_head = 1.0 / math.sqrt(self.c_per_head)
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)
        # Xavier uniform with the published (knowingly wrong) fan_out; out_proj keeps the default initialization.
        bnd = math.sqrt(6 / (self.embedding_dim + 3 * self.internal_dim))
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            nn.init.uniform_(proj.weight, -bnd, bnd)
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.zeros_(proj.bias)

    def _separate_heads(self, x: Tensor, num_heads: int) -> Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, num_heads, c // num_heads).transpose(1, 2)

    def _recombine_heads(self, x: Tensor) -> Tensor:
        b, n_heads, n_tokens, c_per_head = x.shape
        return x.transpose(1, 2).reshape(b, n_tokens, n_heads * c_per_head)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        q = self._separate_heads(self.q_proj(q), self.num_heads)
        k = self._separate_heads(self.k_proj(k), self.num_heads)
        v = self._separate_heads(self.v_proj(v), self.num_heads)
        attn = q @ k.permute(0, 1, 3, 2)
        attn = attn * self.inv_sqrt_c_per_head
        attn = torch.softmax(attn, dim=-1)
        return self.out_proj(self._recombine_heads(attn @ v))


class TwoWayAttentionBlock(nn.Module):
    def __init__(self, embedding_dim: int, num_heads: int, mlp_dim: int, activation: Type[nn.Module],
                 attention_downsample_rate: int = 2, skip_first_layer_pe: bool = False) -> None:
        super().__init__()
        self.self_attn = AttentionForTwoWayAttentionBlock(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = AttentionForTwoWayAttentionBlock(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, embedding_dim, 1, activation)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = AttentionForTwoWayAttentionBlock(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries: Tensor, keys: Tensor, query_pe: Tensor, key_pe: Tensor) -> Tuple[Tensor, Tensor]:
        if not self.skip_first_layer_pe:
            queries = queries + query_pe
        queries = self.norm1(queries + self.self_attn(q=queries, k=queries, v=queries))
        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q=q, k=k, v=keys))
        queries = self.norm3(queries + self.mlp(queries))
        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(q=k, k=q, v=queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    def __init__(self, depth: int, embedding_dim: int, num_heads: int, mlp_dim: int, activation: Type[nn.Module],
                 attention_downsample_rate: int = 2) -> None:
        super().__init__()
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.layers = nn.ModuleList([
            TwoWayAttentionBlock(embedding_dim=embedding_dim, num_heads=num_heads, mlp_dim=mlp_dim,
                                 activation=activation, attention_downsample_rate=attention_downsample_rate,
                                 skip_first_layer_pe=(i == 0))
            for i in range(depth)
        ])
        self.final_attn_token_to_image = AttentionForTwoWayAttentionBlock(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(self, image_embedding: Tensor, image_pe: Tensor, point_embedding: Tensor) -> Tuple[Tensor, Tensor]:
        image_embedding = image_embedding.flatten(2).permute(0, 2, 1)  # B x HW x C
        image_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries, keys = point_embedding, image_embedding
        for layer in self.layers:
            queries, keys = layer(queries=queries, keys=keys, query_pe=point_embedding, key_pe=image_pe)
        q, k = queries + point_embedding, keys + image_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q=q, k=k, v=keys))
        return queries, keys


# efficient_sam/efficient_sam_decoder.py


class PositionEmbeddingRandom(nn.Module):
    def __init__(self, num_pos_feats: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn((2, num_pos_feats)))

    def _pe_encoding(self, coords: Tensor) -> Tensor:
        coords = 2 * coords - 1
        coords = coords @ self.positional_encoding_gaussian_matrix
        coords = 2 * np.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: Tuple[int, int]) -> Tensor:
        h, w = size
        grid = torch.ones([h, w], device=self.positional_encoding_gaussian_matrix.device, dtype=torch.float32)
        y_embed = (grid.cumsum(dim=0) - 0.5) / h
        x_embed = (grid.cumsum(dim=1) - 0.5) / w
        return self._pe_encoding(torch.stack([x_embed, y_embed], dim=-1)).permute(2, 0, 1)  # C x H x W

    def forward_with_coords(self, coords_input: Tensor, image_size: Tuple[int, int]) -> Tensor:
        coords = coords_input.clone()
        coords[:, :, 0] = coords[:, :, 0] / image_size[1]
        coords[:, :, 1] = coords[:, :, 1] / image_size[0]
        return self._pe_encoding(coords.to(torch.float))  # B x N x C


class PromptEncoder(nn.Module):
    def __init__(self, embed_dim: int, image_embedding_size: Tuple[int, int], input_image_size: Tuple[int, int]):
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = input_image_size
        self.image_embedding_size = image_embedding_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.invalid_points = nn.Embedding(1, embed_dim)
        self.point_embeddings = nn.Embedding(1, embed_dim)
        self.bbox_top_left_embeddings = nn.Embedding(1, embed_dim)
        self.bbox_bottom_right_embeddings = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> Tensor:
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, points: Tensor, labels: Tensor) -> Tensor:
        """Label -1: padding, 1: point, 2 and 3: box corners; any other label (0, a background point) adds
        nothing to the positional encoding."""
        points = points + 0.5  # Shift to center of pixel
        point_embedding = self.pe_layer.forward_with_coords(points, self.input_image_size)
        point_embedding = point_embedding + self.invalid_points.weight[:, None, :] * torch.eq(labels, -1)[:, :, None]
        point_embedding = point_embedding + self.point_embeddings.weight[:, None, :] * torch.eq(labels, 1)[:, :, None]
        point_embedding = point_embedding + self.bbox_top_left_embeddings.weight[:, None, :] * torch.eq(
            labels, 2)[:, :, None]
        point_embedding = point_embedding + self.bbox_bottom_right_embeddings.weight[:, None, :] * torch.eq(
            labels, 3)[:, :, None]
        return point_embedding

    def forward(self, coords, labels) -> Tensor:
        return self._embed_points(coords, labels)


class MaskDecoder(nn.Module):
    def __init__(self, *, transformer_dim: int, transformer: nn.Module, num_multimask_outputs: int,
                 activation: Type[nn.Module], iou_head_depth: int, iou_head_hidden_dim: int,
                 upscaling_layer_dims: List[int]) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1 if num_multimask_outputs > 1 else 1
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        output_dim_after_upscaling = transformer_dim
        self.final_output_upscaling_layers = nn.ModuleList([])
        for idx, layer_dims in enumerate(upscaling_layer_dims):
            self.final_output_upscaling_layers.append(nn.Sequential(
                nn.ConvTranspose2d(output_dim_after_upscaling, layer_dims, kernel_size=2, stride=2),
                nn.GroupNorm(1, layer_dims) if idx < len(upscaling_layer_dims) - 1 else nn.Identity(),
                activation(),
            ))
            output_dim_after_upscaling = layer_dims
        self.output_hypernetworks_mlps = nn.ModuleList([
            MLPBlock(input_dim=transformer_dim, hidden_dim=transformer_dim, output_dim=output_dim_after_upscaling,
                     num_layers=2, act=activation)
            for _ in range(self.num_mask_tokens)
        ])
        self.iou_prediction_head = MLPBlock(input_dim=transformer_dim, hidden_dim=iou_head_hidden_dim,
                                            output_dim=self.num_mask_tokens, num_layers=iou_head_depth,
                                            act=activation)

    def forward(self, image_embeddings: Tensor, image_pe: Tensor, sparse_prompt_embeddings: Tensor,
                multimask_output: bool) -> Tuple[Tensor, Tensor]:
        batch_size, max_num_queries, sparse_embed_dim_1, sparse_embed_dim_2 = sparse_prompt_embeddings.shape
        _, image_embed_dim_c, image_embed_dim_h, image_embed_dim_w = image_embeddings.shape
        # Tile the image embedding for all queries.
        image_embeddings_tiled = torch.tile(image_embeddings[:, None, :, :, :], [1, max_num_queries, 1, 1, 1]).view(
            batch_size * max_num_queries, image_embed_dim_c, image_embed_dim_h, image_embed_dim_w)
        sparse_prompt_embeddings = sparse_prompt_embeddings.reshape(
            batch_size * max_num_queries, sparse_embed_dim_1, sparse_embed_dim_2)
        masks, iou_pred = self.predict_masks(image_embeddings=image_embeddings_tiled, image_pe=image_pe,
                                             sparse_prompt_embeddings=sparse_prompt_embeddings)
        if multimask_output and self.num_multimask_outputs > 1:
            return masks[:, 1:, :], iou_pred[:, 1:]
        return masks[:, :1, :], iou_pred[:, :1]

    def predict_masks(self, image_embeddings: Tensor, image_pe: Tensor,
                      sparse_prompt_embeddings: Tensor) -> Tuple[Tensor, Tensor]:
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(sparse_prompt_embeddings.size(0), -1, -1)
        tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)
        pos_src = torch.repeat_interleave(image_pe, tokens.shape[0], dim=0)
        b, c, h, w = image_embeddings.shape
        hs, src = self.transformer(image_embeddings, pos_src, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1: (1 + self.num_mask_tokens), :]
        upscaled_embedding = src.transpose(1, 2).view(b, c, h, w)
        for upscaling_layer in self.final_output_upscaling_layers:
            upscaled_embedding = upscaling_layer(upscaled_embedding)
        hyper_in_list: List[Tensor] = []
        for i, output_hypernetworks_mlp in enumerate(self.output_hypernetworks_mlps):
            hyper_in_list.append(output_hypernetworks_mlp(mask_tokens_out[:, i, :]))
        hyper_in = torch.stack(hyper_in_list, dim=1)
        b, c, h, w = upscaled_embedding.shape
        masks = (hyper_in @ upscaled_embedding.view(b, c, h * w)).view(b, -1, h, w)
        return masks, self.iou_prediction_head(iou_token_out)


# efficient_sam/efficient_sam.py


class EfficientSam(nn.Module):
    mask_threshold: float = 0.0
    image_format: str = "RGB"

    def __init__(self, image_encoder: ImageEncoderViT, prompt_encoder: PromptEncoder,
                 decoder_max_num_input_points: int, mask_decoder: MaskDecoder,
                 pixel_mean: List[float] = [0.485, 0.456, 0.406], pixel_std: List[float] = [0.229, 0.224, 0.225]):
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.decoder_max_num_input_points = decoder_max_num_input_points
        self.mask_decoder = mask_decoder
        self.register_buffer("pixel_mean", torch.Tensor(pixel_mean).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.Tensor(pixel_std).view(1, 3, 1, 1), False)

    def predict_masks(self, image_embeddings: Tensor, batched_points: Tensor, batched_point_labels: Tensor,
                      multimask_output: bool, input_h: int, input_w: int, output_h: int = -1,
                      output_w: int = -1) -> Tuple[Tensor, Tensor]:
        """batched_points [B, Q, N, 2] in the input image's pixels, labels [B, Q, N]: cut or padded (coordinates
        -1, label -1) to decoder_max_num_input_points; masks upsampled (bicubic) to (output_h, output_w) if given,
        else the low-res logits; returns masks [B, Q, 3, h, w] and IoU predictions [B, Q, 3]."""
        output_masks, iou_predictions, _ = predict_masks(
            self, image_embeddings, batched_points, batched_point_labels, multimask_output, input_h, input_w,
            output_h, output_w, "bicubic")
        return output_masks, iou_predictions

    def get_rescaled_pts(self, batched_points: Tensor, input_h: int, input_w: int):
        return torch.stack([
            torch.where(batched_points[..., 0] >= 0, batched_points[..., 0] * self.image_encoder.img_size / input_w,
                        -1.0),
            torch.where(batched_points[..., 1] >= 0, batched_points[..., 1] * self.image_encoder.img_size / input_h,
                        -1.0),
        ], dim=-1)

    def get_image_embeddings(self, batched_images) -> Tensor:
        return self.image_encoder(self.preprocess(batched_images))

    def forward(self, batched_images: Tensor, batched_points: Tensor, batched_point_labels: Tensor,
                scale_to_original_image_size: bool = True) -> Tuple[Tensor, Tensor]:
        """batched_images [B, 3, H, W] RGB in 0..1 (torchvision's ToTensor), any H and W."""
        batch_size, _, input_h, input_w = batched_images.shape
        image_embeddings = self.get_image_embeddings(batched_images)
        return self.predict_masks(
            image_embeddings, batched_points, batched_point_labels, multimask_output=True, input_h=input_h,
            input_w=input_w, output_h=input_h if scale_to_original_image_size else -1,
            output_w=input_w if scale_to_original_image_size else -1)

    def preprocess(self, x: Tensor) -> Tensor:
        """Resized (bilinear, not antialiased, aspect ratio not kept) to img_size x img_size, then normalized."""
        if x.shape[2] != self.image_encoder.img_size or x.shape[3] != self.image_encoder.img_size:
            x = F.interpolate(x, (self.image_encoder.img_size, self.image_encoder.img_size), mode="bilinear")
        return (x - self.pixel_mean) / self.pixel_std


def build_efficient_sam(encoder_patch_embed_dim, encoder_num_heads, *, img_size=1024, encoder_depth=12,
                        encoder_neck_dims=(256, 256), decoder_transformer_mlp_dim=2048, decoder_num_heads=8,
                        decoder_upscaling_layer_dims=(64, 32), iou_head_hidden_dim=256):
    """build_efficient_sam without the checkpoint, its fixed sizes as keyword arguments (published defaults)."""
    encoder_patch_size = 16
    decoder_max_num_input_points = 6
    image_encoder = ImageEncoderViT(
        img_size=img_size, patch_size=encoder_patch_size, in_chans=3, patch_embed_dim=encoder_patch_embed_dim,
        normalization_type="layer_norm", depth=encoder_depth, num_heads=encoder_num_heads, mlp_ratio=4.0,
        neck_dims=list(encoder_neck_dims), act_layer=nn.GELU)
    image_embedding_size = image_encoder.image_embedding_size
    dim = image_encoder.transformer_output_dim
    return EfficientSam(
        image_encoder=image_encoder,
        prompt_encoder=PromptEncoder(embed_dim=dim, image_embedding_size=(image_embedding_size, image_embedding_size),
                                     input_image_size=(img_size, img_size)),
        decoder_max_num_input_points=decoder_max_num_input_points,
        mask_decoder=MaskDecoder(
            transformer_dim=dim,
            transformer=TwoWayTransformer(depth=2, embedding_dim=dim, num_heads=decoder_num_heads,
                                          mlp_dim=decoder_transformer_mlp_dim, activation=nn.GELU),
            num_multimask_outputs=3, activation=nn.GELU, iou_head_depth=3 - 1,
            iou_head_hidden_dim=iou_head_hidden_dim, upscaling_layer_dims=list(decoder_upscaling_layer_dims)),
        pixel_mean=[0.485, 0.456, 0.406],
        pixel_std=[0.229, 0.224, 0.225],
    )


def predict_masks(model, image_embeddings: Tensor, batched_points: Tensor, batched_point_labels: Tensor,
                  multimask_output: bool, input_h: int, input_w: int, output_h: int, output_w: int, mode: str):
    """EfficientSam.predict_masks and its ONNX wrapper's twin in one (upstream has two copies): `model`'s
    get_rescaled_pts, the masks upsampled with `mode`; returns (masks, IoU predictions, low-res masks)."""
    batch_size, max_num_queries, num_pts, _ = batched_points.shape
    num_pts = batched_points.shape[2]
    rescaled_batched_points = model.get_rescaled_pts(batched_points, input_h, input_w)
    max_pts = model.decoder_max_num_input_points
    if num_pts > max_pts:
        rescaled_batched_points = rescaled_batched_points[:, :, :max_pts, :]
        batched_point_labels = batched_point_labels[:, :, :max_pts]
    elif num_pts < max_pts:
        rescaled_batched_points = F.pad(rescaled_batched_points, (0, 0, 0, max_pts - num_pts), value=-1.0)
        batched_point_labels = F.pad(batched_point_labels, (0, max_pts - num_pts), value=-1.0)
    sparse_embeddings = model.prompt_encoder(
        rescaled_batched_points.reshape(batch_size * max_num_queries, max_pts, 2),
        batched_point_labels.reshape(batch_size * max_num_queries, max_pts),
    )
    sparse_embeddings = sparse_embeddings.view(batch_size, max_num_queries, sparse_embeddings.shape[1],
                                               sparse_embeddings.shape[2])
    low_res_masks, iou_predictions = model.mask_decoder(
        image_embeddings, model.prompt_encoder.get_dense_pe(), sparse_prompt_embeddings=sparse_embeddings,
        multimask_output=multimask_output)
    _, num_predictions, low_res_size, _ = low_res_masks.shape
    if output_w > 0 and output_h > 0:
        output_masks = F.interpolate(low_res_masks, (output_h, output_w), mode=mode)
        output_masks = torch.reshape(output_masks,
                                     (batch_size, max_num_queries, num_predictions, output_h, output_w))
    else:
        output_masks = torch.reshape(
            low_res_masks, (batch_size, max_num_queries, num_predictions, low_res_size, low_res_size))
    iou_predictions = torch.reshape(iou_predictions, (batch_size, max_num_queries, num_predictions))
    return output_masks, iou_predictions, low_res_masks


# onnx_models.py (labelme's ONNX wrappers, which export_to_onnx.py exports)


class OnnxEfficientSam(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    @property
    def decoder_max_num_input_points(self):
        return self.model.decoder_max_num_input_points

    @property
    def image_encoder(self):
        return self.model.image_encoder

    @property
    def get_image_embeddings(self):
        return self.model.get_image_embeddings

    @property
    def prompt_encoder(self):
        return self.model.prompt_encoder

    @property
    def mask_decoder(self):
        return self.model.mask_decoder

    def forward(self, batched_images: Tensor, batched_points: Tensor, batched_point_labels: Tensor):
        batch_size, _, input_h, input_w = batched_images.shape
        image_embeddings = self.get_image_embeddings(batched_images)
        return self.predict_masks(image_embeddings, batched_points, batched_point_labels, multimask_output=True,
                                  input_h=input_h, input_w=input_w, output_h=input_h, output_w=input_w)

    def get_rescaled_pts(self, batched_points: Tensor, input_h: int, input_w: int):
        # Unlike EfficientSam.get_rescaled_pts, negative (padding) coordinates are scaled too.
        return torch.stack([
            batched_points[..., 0] * self.image_encoder.img_size / input_w,
            batched_points[..., 1] * self.image_encoder.img_size / input_h,
        ], dim=-1)

    def predict_masks(self, image_embeddings: Tensor, batched_points: Tensor, batched_point_labels: Tensor,
                      multimask_output: bool, input_h: int, input_w: int, output_h: int = -1, output_w: int = -1):
        # NOTE (upstream): "bicubic" is inefficient on onnx
        return predict_masks(self, image_embeddings, batched_points, batched_point_labels, multimask_output,
                             input_h, input_w, output_h, output_w, "bilinear")


class OnnxEfficientSamEncoder(OnnxEfficientSam):
    def forward(self, batched_images: Tensor):
        return self.model.get_image_embeddings(batched_images)


class OnnxEfficientSamDecoder(OnnxEfficientSam):
    def forward(self, image_embeddings, batched_points, batched_point_labels, orig_im_size):
        return self.predict_masks(image_embeddings=image_embeddings, batched_points=batched_points,
                                  batched_point_labels=batched_point_labels, multimask_output=True,
                                  input_h=orig_im_size[0], input_w=orig_im_size[1], output_h=orig_im_size[0],
                                  output_w=orig_im_size[1])
