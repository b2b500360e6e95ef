"""The assembled MaskFormer: backbone, pixel decoder, transformer predictor and heads."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from maskformer.config import ModelConfig, from_dict, to_dict
from maskformer.modeling.backbone import ResNet
from maskformer.modeling.layers import MLP, Conv2d
from maskformer.modeling.masked_attention_decoder import MaskedAttentionDecoder
from maskformer.modeling.msdeform_pixel_decoder import MSDeformAttnPixelDecoder
from maskformer.modeling.pixel_decoder import FPNDecoder, TransformerEncoderDecoder, flatten_hw
from maskformer.modeling.position_encoding import sine_position_encoding
from maskformer.modeling.swin import build_swin
from maskformer.modeling.transformer import DecoderLayer, EncoderLayer


class TransformerPredictor(keras.layers.Layer):
    """Learned queries decoded against the memory; class and mask-embedding heads.

    The queries are the *positional* embedding of the decoder; its input starts at zeros. The
    shared final LayerNorm is applied to every layer's output (kept for deep supervision) while
    the next layer receives the un-normalised output.
    """

    def __init__(self, config: ModelConfig, in_channels: int, **kwargs):
        super().__init__(**kwargs)
        c = config
        self.hidden_dim = c.hidden_dim
        self.num_queries = c.num_queries
        self.in_channels = in_channels
        self.input_proj = (Conv2d(c.hidden_dim, 1, use_bias=True, name="input_proj")
                           if in_channels != c.hidden_dim or c.enforce_input_proj else None)
        self.encoder_layers = [
            EncoderLayer(c.hidden_dim, c.num_heads, c.dim_feedforward, c.dropout,
                         name=f"encoder_{i}") for i in range(c.enc_layers)
        ]
        self.decoder_layers = [
            DecoderLayer(c.hidden_dim, c.num_heads, c.dim_feedforward, c.dropout,
                         name=f"decoder_{i}") for i in range(c.dec_layers)
        ]
        self.decoder_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="decoder_norm")
        self.class_embed = keras.layers.Dense(c.num_classes + 1, name="class_embed")
        self.mask_embed = MLP(c.hidden_dim, c.mask_dim, 3, name="mask_embed")

    def build(self, input_shape):
        self.query_embed = self.add_weight(
            name="query_embed", shape=(self.num_queries, self.hidden_dim),
            initializer=keras.initializers.RandomNormal(stddev=1.0))
        self.decoder_norm.build((None, None, self.hidden_dim))

    def call(self, x, training=None):
        """Args: x [B, h, w, in_channels]. Returns normalised decoder states [L, B, Q, hidden]."""
        batch = ops.shape(x)[0]
        height, width = ops.shape(x)[1], ops.shape(x)[2]
        pos = sine_position_encoding(height, width, self.hidden_dim // 2)
        pos = ops.reshape(pos, (1, -1, self.hidden_dim))  # [1, h * w, C]
        memory = flatten_hw(self.input_proj(x) if self.input_proj is not None else x)
        for layer in self.encoder_layers:
            memory = layer(memory, pos, training=training)
        query_pos = ops.broadcast_to(ops.cast(self.query_embed, memory.dtype)[None],
                                     (batch, self.num_queries, self.hidden_dim))
        tgt = ops.zeros_like(query_pos)
        states = []
        for layer in self.decoder_layers:
            tgt = layer(tgt, memory, pos, query_pos, training=training)
            states.append(self.decoder_norm(tgt))
        return states


class MaskFormer(keras.Model):
    """MaskFormer or Mask2Former (`config.architecture`) for semantic, instance and panoptic
    segmentation. As in the original code, both are one meta-architecture: a backbone, a pixel
    decoder and a transformer decoder with class and mask heads.

    Call with images float32 [B, H, W, 3], RGB, 0..255. Normalisation and padding to
    `size_divisibility` (after normalisation, with zeros, bottom/right) happen inside.

    Returns a dict:
        pred_logits: [B, Q, K + 1] class logits, the last index is "no object".
        pred_masks: [B, Q, h, w] mask logits at stride 4 of the (padded) input.
        aux_outputs: with deep supervision, a list of such dicts for the earlier predictions,
            first first: MaskFormer's dec_layers - 1 earlier decoder layers; Mask2Former's
            dec_layers predictions made before each layer (the first from the queries alone).
    """

    def __init__(self, config: ModelConfig | dict, **kwargs):
        super().__init__(**kwargs)
        if isinstance(config, dict):
            config = from_dict(ModelConfig, config)
        config.validate()
        self.config = config
        if config.backbone.type == "swin":
            self.backbone = build_swin(config.backbone.swin, name="backbone")
        else:
            self.backbone = ResNet(config.backbone, name="backbone")
        if config.architecture == "mask2former":
            self._build_mask2former(config)
            return
        if config.pixel_decoder == "fpn":
            self.pixel_decoder = FPNDecoder(config.conv_dim, config.mask_dim, name="pixel_decoder")
        else:
            self.pixel_decoder = TransformerEncoderDecoder(
                config.conv_dim, config.mask_dim, config.pixel_decoder_enc_layers,
                config.pixel_decoder_num_heads, config.pixel_decoder_dim_feedforward,
                config.dropout, name="pixel_decoder")
        source = config.predictor_input()
        predictor_in = (config.conv_dim if source == "transformer_encoder"
                        else self.backbone.out_channels[source])
        self.predictor = TransformerPredictor(config, predictor_in, name="predictor")

    def _build_mask2former(self, config: ModelConfig) -> None:
        # The original keeps its pixel decoder in float32 under mixed precision.
        mixed = keras.config.dtype_policy().name.startswith("mixed")
        strides = (4, 8, 16, 16 if config.backbone.type == "resnet"
                   and config.backbone.res5_dilation == 2 else 32)
        self.pixel_decoder = MSDeformAttnPixelDecoder(
            config.conv_dim, config.mask_dim, config.pixel_decoder_num_heads,
            config.pixel_decoder_dim_feedforward, config.pixel_decoder_enc_layers,
            config.dropout, feature_strides=strides, dtype="float32" if mixed else None,
            name="pixel_decoder")
        self.predictor = MaskedAttentionDecoder(
            config.conv_dim, config.num_classes, config.hidden_dim, config.num_queries,
            config.num_heads, config.dim_feedforward, config.dec_layers, config.mask_dim,
            enforce_input_proj=config.enforce_input_proj, name="predictor")

    def normalize(self, images):
        mean = ops.convert_to_tensor(self.config.pixel_mean, dtype=images.dtype)
        std = ops.convert_to_tensor(self.config.pixel_std, dtype=images.dtype)
        x = (images - mean) / std
        div = self.config.size_divisibility
        if div > 0:
            height, width = ops.shape(x)[1], ops.shape(x)[2]
            pad_h = (div - height % div) % div
            pad_w = (div - width % div) % div
            x = ops.pad(x, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])
        return x

    def call(self, images, training=None):
        x = self.normalize(ops.cast(images, self.compute_dtype))
        # Explicitly: stateless_call (JAX training) does not pass it on to nested layers.
        features = self.backbone(x, training=training)
        decoded = self.pixel_decoder(features, training=training)
        if self.config.architecture == "mask2former":
            mask_features = ops.cast(decoded["mask_features"], self.compute_dtype)
            levels = [ops.cast(x, self.compute_dtype) for x in decoded["multi_scale_features"]]
            outputs = self.predictor(levels, mask_features, training=training)
            if not self.config.deep_supervision:
                del outputs["aux_outputs"]
            return outputs
        source = self.config.predictor_input()
        memory_source = (decoded["transformer_encoder_features"]
                         if source == "transformer_encoder" else features[source])
        states = self.predictor(memory_source, training=training)
        mask_features = decoded["mask_features"]  # [B, h, w, mask_dim]

        def heads(hs):  # hs [B, Q, hidden]
            logits = self.predictor.class_embed(hs)  # [B, Q, K + 1]
            mask_embed = self.predictor.mask_embed(hs)  # [B, Q, mask_dim]
            masks = ops.einsum("bqc,bhwc->bqhw", mask_embed, mask_features)  # [B, Q, h, w]
            return {"pred_logits": logits, "pred_masks": masks}

        outputs = heads(states[-1])
        if self.config.deep_supervision:
            outputs["aux_outputs"] = [heads(hs) for hs in states[:-1]]
        return outputs

    def get_config(self):
        return {"config": to_dict(self.config), "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_model(config: ModelConfig, image_size: tuple[int, int] = (64, 64)) -> MaskFormer:
    """Builds a MaskFormer and creates its variables by running a small zero batch."""
    model = MaskFormer(config)
    model(ops.zeros((1, image_size[0], image_size[1], 3)), training=False)
    return model


def count_parameters(model: keras.Model, include_frozen_affine: bool = False) -> int:
    """Number of parameters as PyTorch counts them.

    By default the trainable weights, as the original counts its model (frozen batch norm
    holds buffers only). With `include_frozen_affine`, the frozen batch-norm scales and shifts
    count too, as in models that train their batch norm (Hugging Face's ResNet).
    """
    count = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    if include_frozen_affine:
        count += sum(int(np.prod(v.shape)) for v in model.non_trainable_weights
                     if v.path.rsplit("/", 1)[-1] in ("gamma", "beta"))
    return count
