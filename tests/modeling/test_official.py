"""The model against the original PyTorch MaskFormer's own outputs.

The reference files (shared/testdata/official, README there) hold tiny models run through
the original code: every parameter under its original name, inputs, intermediates, outputs.
Weights go through the detectron2 converter, with the new names and with the old names of
released checkpoints.
"""

import json

import numpy as np
import pytest
from keras import ops

from maskformer.config import BackboneConfig, ModelConfig
from maskformer.conversion.detectron2 import assign_weights, normalize_names
from maskformer.modeling.maskformer import MaskFormer
from maskformer.modeling.position_encoding import sine_position_encoding

FILES = ["maskformer_tenc_tiny.npz", "maskformer_fpn_tiny.npz", "maskformer_tenc_c64.npz"]


def config_from_reference(ref: dict) -> ModelConfig:
    """The ModelConfig for a reference file's JSON config (the original's cfg fields)."""
    bb, mf, head = ref["backbone"], ref["mask_former"], ref["sem_seg_head"]
    decoder = {"TransformerEncoderPixelDecoder": "transformer_encoder",
               "BasePixelDecoder": "fpn"}[head["pixel_decoder_name"]]
    return ModelConfig(
        backbone=BackboneConfig(stage_blocks=bb["depths"], stem_channels=bb["stem_out_channels"],
                                width_per_group=bb["width_per_group"],
                                res2_out_channels=bb["res2_out_channels"],
                                norm_eps=bb["frozen_bn_eps"]),
        num_classes=head["num_classes"], pixel_decoder=decoder, conv_dim=head["convs_dim"],
        mask_dim=head["mask_dim"], pixel_decoder_enc_layers=head.get("transformer_enc_layers", 0),
        pixel_decoder_num_heads=mf["nheads"], pixel_decoder_dim_feedforward=mf["dim_feedforward"],
        num_queries=mf["num_object_queries"], hidden_dim=mf["hidden_dim"], num_heads=mf["nheads"],
        dim_feedforward=mf["dim_feedforward"], enc_layers=mf["enc_layers"],
        dec_layers=mf["dec_layers"], dropout=mf["dropout"],
        enforce_input_proj=mf["enforce_input_proj"], deep_supervision=mf["deep_supervision"],
        size_divisibility=mf["size_divisibility"], pixel_mean=ref["pixel_mean"],
        pixel_std=ref["pixel_std"])


def load_reference(official, name):
    z = official(name)
    ref = json.loads(str(z["config"]))
    params = {k[len("param/"):]: z[k] for k in z.files if k.startswith("param/")}
    return z, ref, params


def to_old_names(params):
    return {(k.replace("sem_seg_head.pixel_decoder.", "sem_seg_head.", 1)): v
            for k, v in params.items()}


def build(ref, params, naming):
    model = MaskFormer(config_from_reference(ref))
    model(np.zeros((1, 64, 64, 3), "float32"))
    state = to_old_names(params) if naming == "old" else params
    assign_weights(model, normalize_names(state))
    return model


def close(ours, ref, name, rel=2e-5, atol=1e-4):
    ours = np.asarray(ours)
    assert ours.shape == ref.shape, f"{name}: shape {ours.shape} != {ref.shape}"
    err = np.max(np.abs(ours - ref))
    limit = max(min(atol, rel * np.max(np.abs(ref))), 1e-6)
    assert err <= limit, f"{name}: max |ours - ref| = {err:.3g} > {limit:.3g}"


def nchw(x):
    return np.transpose(np.asarray(x), (0, 3, 1, 2))


@pytest.mark.parametrize("naming", ["new", "old"])
@pytest.mark.parametrize("name", FILES)
def test_outputs_match_original(official, name, naming):
    z, ref, params = load_reference(official, name)
    model = build(ref, params, naming)
    images = z["input/images_raw"]
    out = model(images, training=False)
    close(out["pred_logits"], z["output/pred_logits"], "pred_logits")
    close(out["pred_masks"], z["output/pred_masks"], "pred_masks")
    aux = [k for k in z.files if k.startswith("output/aux_") and k.endswith("pred_logits")]
    assert len(out["aux_outputs"]) == len(aux) == ref["mask_former"]["dec_layers"] - 1
    for i, a in enumerate(out["aux_outputs"]):
        close(a["pred_logits"], z[f"output/aux_{i}/pred_logits"], f"aux_{i}/pred_logits")
        close(a["pred_masks"], z[f"output/aux_{i}/pred_masks"], f"aux_{i}/pred_masks")


@pytest.mark.parametrize("name", FILES)
def test_intermediates_match_original(official, name):
    z, ref, params = load_reference(official, name)
    model = build(ref, params, "new")
    x = model.normalize(ops.convert_to_tensor(z["input/images_raw"]))
    close(nchw(x), z["input/images_norm"], "images_norm", atol=1e-5)
    features = model.backbone(x)
    for level in ("res2", "res3", "res4", "res5"):
        # Backbone features agree to a few 1e-6 (README).
        close(nchw(features[level]), z[f"output/{level}"], level, rel=2e-6, atol=1e-5)
    decoded = model.pixel_decoder(features)
    close(nchw(decoded["mask_features"]), z["output/mask_features"], "mask_features")
    if "output/transformer_encoder_features" in z.files:
        close(nchw(decoded["transformer_encoder_features"]),
              z["output/transformer_encoder_features"], "transformer_encoder_features")
    source = features["res5"] if model.config.pixel_decoder == "fpn" else \
        decoded["transformer_encoder_features"]
    states = model.predictor(source)
    close(np.stack([np.asarray(s) for s in states]), z["output/decoder_hs"], "decoder_hs")
    h, w = source.shape[1], source.shape[2]
    pos = sine_position_encoding(h, w, model.config.hidden_dim // 2)
    close(np.transpose(np.asarray(pos), (2, 0, 1)), z["output/predictor_pos_embed"][0],
          "predictor_pos_embed", atol=1e-5)


@pytest.mark.parametrize("name", FILES)
def test_sem_seg_matches_original(official, name):
    """Eval-mode forward: masks upsampled bilinearly to the input size, class-weighted sum."""
    z, ref, params = load_reference(official, name)
    model = build(ref, params, "new")
    images = z["input/images_raw"]
    out = model(images, training=False)
    height, width = images.shape[1:3]
    masks = ops.transpose(out["pred_masks"], (0, 2, 3, 1))  # [B, h, w, Q]
    masks = ops.image.resize(masks, (height, width), interpolation="bilinear", antialias=False)
    probs = ops.softmax(out["pred_logits"], axis=-1)[..., :-1]  # [B, Q, K]
    sem_seg = ops.einsum("bqk,bhwq->bkhw", probs, ops.sigmoid(masks))
    close(sem_seg, z["output/sem_seg"], "sem_seg")


def test_original_names_need_rename_once(official):
    """New names loaded as old ones would be renamed twice: refused, not silently misloaded."""
    _, ref, params = load_reference(official, FILES[0])
    model = MaskFormer(config_from_reference(ref))
    model(np.zeros((1, 64, 64, 3), "float32"))
    with pytest.raises(Exception, match="missing"):
        assign_weights(model, normalize_names(params, naming="old"))
