"""Small models built from the OFFICIAL segment-anything classes.

The same `build_sam` wiring as `segment_anything.build_sam._build_sam`, with the sizes made a parameter so that the
project can train models that run on a laptop CPU. Everything downstream (SamPredictor, SamOnnxModel, the Rust
service) sees an ordinary `Sam` module.
"""

from dataclasses import asdict, dataclass, field
from functools import partial

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

PIXEL_MEAN = [123.675, 116.28, 103.53]
PIXEL_STD = [58.395, 57.12, 57.375]


@dataclass
class SamConfig:
    image_size: int = 256
    patch_size: int = 16
    encoder_embed_dim: int = 64
    encoder_depth: int = 2
    encoder_num_heads: int = 2
    encoder_window_size: int = 8
    encoder_global_attn_indexes: list = field(default_factory=lambda: [1])
    prompt_embed_dim: int = 64
    decoder_depth: int = 2
    decoder_mlp_dim: int = 256
    decoder_num_heads: int = 4
    iou_head_hidden_dim: int = 64

    def to_dict(self):
        return asdict(self)


def encoders(config: SamConfig, image_encoder=ImageEncoderViT, prompt_encoder=PromptEncoder) -> dict:
    """The image encoder and prompt encoder of `config`, from segment-anything's classes or a fork's (SAM-HQ keeps
    them): keyword arguments of `Sam`."""
    embedding_size = config.image_size // config.patch_size
    return dict(
        image_encoder=image_encoder(
            depth=config.encoder_depth,
            embed_dim=config.encoder_embed_dim,
            img_size=config.image_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=config.encoder_num_heads,
            patch_size=config.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=config.encoder_global_attn_indexes,
            window_size=config.encoder_window_size,
            out_chans=config.prompt_embed_dim,
        ),
        prompt_encoder=prompt_encoder(
            embed_dim=config.prompt_embed_dim,
            image_embedding_size=(embedding_size, embedding_size),
            input_image_size=(config.image_size, config.image_size),
            mask_in_chans=16,
        ),
    )


def build_sam(config: SamConfig, seed: int) -> Sam:
    torch.manual_seed(seed)
    sam = Sam(
        **encoders(config),
        mask_decoder=MaskDecoder(
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
        ),
        pixel_mean=PIXEL_MEAN,
        pixel_std=PIXEL_STD,
    )
    sam.eval()
    return sam
