"""The transformer-encoder pixel decoder, layer by layer, against an independent PyTorch
reference built from torch.nn modules with the same weights.

Hugging Face has no such pixel decoder, so the reference is written here from REFERENCE.md
section 4: input_proj -> post-norm encoder layers (position added to queries and keys) ->
layer_4 -> FPN top-down path with PyTorch nearest upsampling -> mask_features. Its parameter
names are the original's, so our detectron2 mapping sets our layers from its state dict.
"""

import math

import numpy as np
import pytest

from maskformer.config import BackboneConfig, ModelConfig
from maskformer.conversion.detectron2 import weight_map
from maskformer.modeling.maskformer import build_model
from maskformer.modeling.position_encoding import sine_position_encoding
from tests.conversion.torch_utils import randomize_

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional


class TorchEncoderLayer(nn.Module):
    def __init__(self, d, heads, ffn):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=0.0)
        self.linear1, self.linear2 = nn.Linear(d, ffn), nn.Linear(ffn, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, src, pos):  # [L, B, C]
        q = src + pos
        src = self.norm1(src + self.self_attn(q, q, src, need_weights=False)[0])
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


class ConvNorm(nn.Conv2d):
    def __init__(self, cin, cout, k, bias=False, norm=True, relu=False):
        super().__init__(cin, cout, k, padding=k // 2, bias=bias)
        self.norm = nn.GroupNorm(32, cout) if norm else None
        self.relu = relu

    def forward(self, x):
        x = super().forward(x)
        x = self.norm(x) if self.norm is not None else x
        return F.relu(x) if self.relu else x


class TorchTEPixelDecoder(nn.Module):
    def __init__(self, in_channels, d, mask_dim, layers, heads, ffn):
        super().__init__()
        for i, cin in enumerate(in_channels[:3], start=1):
            setattr(self, f"adapter_{i}", ConvNorm(cin, d, 1))
            setattr(self, f"layer_{i}", ConvNorm(d, d, 3, relu=True))
        self.input_proj = nn.Conv2d(in_channels[3], d, 1)
        self.transformer = nn.Module()
        self.transformer.encoder = nn.Module()
        self.transformer.encoder.layers = nn.ModuleList(
            [TorchEncoderLayer(d, heads, ffn) for _ in range(layers)])
        self.layer_4 = ConvNorm(d, d, 3, relu=True)
        self.mask_features = ConvNorm(d, mask_dim, 3, bias=True, norm=False)
        self.d = d

    def position(self, h, w):
        npf = self.d // 2
        y = torch.arange(1, h + 1, dtype=torch.float32)[:, None].expand(h, w)
        x = torch.arange(1, w + 1, dtype=torch.float32)[None, :].expand(h, w)
        y = y / (y[-1:, :] + 1e-6) * 2 * math.pi
        x = x / (x[:, -1:] + 1e-6) * 2 * math.pi
        dim_t = 10000 ** (2 * (torch.arange(npf) // 2) / npf)
        py, px = y[..., None] / dim_t, x[..., None] / dim_t
        py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=3).flatten(2)
        px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=3).flatten(2)
        return torch.cat((py, px), dim=2).permute(2, 0, 1)  # [C, h, w]

    def forward(self, feats):
        t = self.input_proj(feats[3])
        b, c, h, w = t.shape
        src = t.flatten(2).permute(2, 0, 1)
        pos = self.position(h, w).flatten(1).permute(1, 0)[:, None, :]
        per_layer = []
        for layer in self.transformer.encoder.layers:
            src = layer(src, pos)
            per_layer.append(src.permute(1, 0, 2))
        encoded = src.permute(1, 2, 0).reshape(b, c, h, w)
        y = self.layer_4(encoded)
        for i in (3, 2, 1):
            lateral = getattr(self, f"adapter_{i}")(feats[i - 1])
            y = getattr(self, f"layer_{i}")(lateral + F.interpolate(y, size=lateral.shape[-2:],
                                                                    mode="nearest"))
        return per_layer, encoded, self.mask_features(y)


@pytest.mark.parametrize("d,heads,ffn,layers", [(256, 8, 2048, 6), (64, 4, 96, 2)])
def test_matches_torch_reference(d, heads, ffn, layers):
    config = ModelConfig(
        backbone=BackboneConfig(stage_blocks=[1, 1, 1, 1], stem_channels=16, width_per_group=8,
                                res2_out_channels=32),
        num_classes=3, conv_dim=d, mask_dim=d, pixel_decoder_enc_layers=layers,
        pixel_decoder_num_heads=heads, pixel_decoder_dim_feedforward=ffn, hidden_dim=d,
        num_heads=heads, dim_feedforward=ffn, num_queries=4, dec_layers=1)
    model = build_model(config)
    channels = [32, 64, 128, 256]
    reference = TorchTEPixelDecoder(channels, d, d, layers, heads, ffn).eval()
    randomize_(reference, seed=3)
    state = {f"sem_seg_head.pixel_decoder.{k}": v.numpy()
             for k, v in reference.state_dict().items()}
    for target in weight_map(model):
        if target.sources[0].startswith("sem_seg_head.pixel_decoder."):
            target.variable.assign(target.transform(*(state[s] for s in target.sources)))

    rng = np.random.default_rng(0)
    sizes = [(25, 33), (13, 17), (7, 9), (4, 5)]  # odd sizes: non-integer nearest ratios
    feats = [rng.normal(size=(2, h, w, c)).astype(np.float32) for (h, w), c in
             zip(sizes, channels, strict=True)]
    with torch.no_grad():
        ref_layers, ref_encoded, ref_masks = reference(
            [torch.from_numpy(f.transpose(0, 3, 1, 2).copy()) for f in feats])

    decoder = model.pixel_decoder
    x = decoder.input_proj(feats[3])
    pos = np.asarray(sine_position_encoding(4, 5, d // 2)).reshape(1, -1, d)
    src = np.asarray(x).reshape(2, -1, d)
    for i, layer in enumerate(decoder.encoder_layers):
        src = np.asarray(layer(src, pos))
        ref = ref_layers[i].numpy()
        assert np.max(np.abs(src - ref)) <= 1e-4 * np.max(np.abs(ref)), f"encoder layer {i}"

    out = decoder({f"res{i + 2}": f for i, f in enumerate(feats)})
    encoded = np.asarray(out["transformer_encoder_features"]).transpose(0, 3, 1, 2)
    masks = np.asarray(out["mask_features"]).transpose(0, 3, 1, 2)
    assert np.max(np.abs(encoded - ref_encoded.numpy())) <= 1e-4 * np.abs(ref_encoded).max()
    assert np.max(np.abs(masks - ref_masks.numpy())) <= 1e-4 * np.abs(ref_masks).max()
