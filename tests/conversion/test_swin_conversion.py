"""Swin checkpoints: Hugging Face `MaskFormerSwinBackbone` / `MaskFormerForInstanceSegmentation`
and the original's names, converted by name and checked against HF's outputs.

Every HF parameter is randomised (LayerNorm scales around 1, the relative-position bias tables
with std 0.5 so that a wrong index or a transposed one shows), at sizes that are multiples
neither of 32 nor of the window, for windows 7 and 12. HF's MaskFormerSwin reproduces the
original's padding, shift (also on a single window) and merge order; its
`relative_position_index` buffers are checked against ours on the way in.
"""

import os
import pickle
import warnings

import numpy as np
import pytest

from maskformer.config import ExperimentConfig
from maskformer.conversion.detectron2 import assign_backbone_weights, assign_weights
from maskformer.conversion.huggingface import model_config_from_hf, rename_state_dict
from maskformer.conversion.io import convert_checkpoint, max_relative_difference
from maskformer.conversion.safe_pickle import CheckpointError
from maskformer.modeling.maskformer import build_model
from maskformer.modeling.swin import build_swin
from tests.conversion.test_huggingface import hf_forward
from tests.conversion.torch_utils import randomize_
from tests.modeling.test_swin import STAGES, run

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Where MaskFormerForInstanceSegmentation keeps its backbone.
ENCODER = "model.pixel_level_module.encoder."


def hf_swin_config(embed_dim=16, window_size=7, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4)):
    from transformers import MaskFormerSwinConfig

    return MaskFormerSwinConfig(embed_dim=embed_dim, depths=list(depths),
                                num_heads=list(num_heads), window_size=window_size,
                                out_features=["stage1", "stage2", "stage3", "stage4"])


def randomize_swin_(module, seed):
    randomize_(module, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, tensor in module.named_parameters():
            if name.endswith("relative_position_bias_table"):
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.5)


def maskformer_config(backbone_config: dict) -> dict:
    """A minimal HF MaskFormer config.json around a backbone config."""
    return {"model_type": "maskformer", "backbone_config": backbone_config, "num_labels": 3}


@pytest.fixture(scope="module", params=[(7, 1), (12, 2)], ids=["window7", "window12"])
def hf_backbone(request):
    from transformers import MaskFormerSwinBackbone

    window_size, seed = request.param
    model = MaskFormerSwinBackbone(hf_swin_config(window_size=window_size)).eval()
    randomize_swin_(model, seed)
    state = {ENCODER + k: v.numpy() for k, v in model.state_dict().items()}
    config = model_config_from_hf(maskformer_config(model.config.to_dict()))
    return model, state, config


def converted_backbone(state, config):
    backbone = build_swin(config.backbone.swin)
    backbone.build((None, None, None, 3))
    return assign_backbone_weights(backbone, rename_state_dict(state), source="hf")


@pytest.mark.parametrize("size", [(75, 101), (97, 61)])
def test_backbone_matches_hugging_face(hf_backbone, size):
    model, state, config = hf_backbone
    assert config.backbone.swin.window_size == model.config.window_size
    backbone = converted_backbone(state, config)
    x = np.random.default_rng(3).normal(size=(2, *size, 3)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).feature_maps
    out = run(backbone, x)
    for name, feature in zip(STAGES, ref, strict=True):
        feature = feature.numpy().transpose(0, 2, 3, 1)
        assert out[name].shape == feature.shape, name
        diff = max_relative_difference(out[name], feature)
        assert diff <= 1e-4, f"{name}: {diff:.3g}"


def test_wrong_index_buffer_is_named(hf_backbone):
    _, state, config = hf_backbone
    key = "backbone.layers.1.blocks.1.attn.relative_position_index"
    hf_key = ENCODER + "model.encoder.layers.1.blocks.1.attention.self.relative_position_index"
    renamed = rename_state_dict(state)
    np.testing.assert_array_equal(renamed[key], state[hf_key])

    transposed = dict(state)
    transposed[hf_key] = state[hf_key].T.copy()
    with pytest.raises(CheckpointError, match=rf"1 wrong: {key} \(differs"):
        converted_backbone(transposed, config)

    window = config.backbone.swin.window_size
    other = dict(state)
    other[hf_key] = np.zeros(((window - 1) ** 2,) * 2, np.int64)
    with pytest.raises(CheckpointError, match=rf"1 mis-shaped: {key}: checkpoint"):
        converted_backbone(other, config)

    # The buffers follow from the window size: a state without them loads all the same.
    without = {k: v for k, v in state.items() if not k.endswith("relative_position_index")}
    assert len(without) < len(state)
    converted_backbone(without, config)


def test_unknown_and_unused_tensors(hf_backbone):
    _, state, config = hf_backbone
    assert ENCODER + "model.layernorm.weight" in state  # HF's, unused by the backbone output
    assert not any("layernorm" in k for k in rename_state_dict(state))
    extra = dict(state)
    extra[ENCODER + "model.encoder.layers.0.blocks.0.attention.self.extra.weight"] = np.zeros(3)
    with pytest.raises(CheckpointError, match="1 unexpected Hugging Face tensors: .*self.extra"):
        rename_state_dict(extra)
    missing = {k: v for k, v in state.items() if ".blocks.0.attention.self.key." not in k}
    with pytest.raises(CheckpointError, match=r"q, k and v projections must all be present"):
        rename_state_dict(missing)


# --- the whole model -------------------------------------------------------------------------


def hf_maskformer(embed_dim, d_model, seed=0):
    from transformers import DetrConfig, MaskFormerConfig, MaskFormerForInstanceSegmentation

    decoder = DetrConfig(d_model=d_model, decoder_layers=2, decoder_attention_heads=4,
                         decoder_ffn_dim=64, encoder_layers=1, num_queries=10)
    config = MaskFormerConfig(backbone_config=hf_swin_config(embed_dim=embed_dim),
                              decoder_config=decoder, num_labels=7, fpn_feature_size=32,
                              mask_feature_size=32)
    torch.manual_seed(seed)
    model = MaskFormerForInstanceSegmentation(config).eval()
    randomize_swin_(model, seed)
    return model


# res5 of embed_dim 16 has 128 channels, projected to d_model 32; embed_dim 8 gives 64 = d_model,
# where HF has no input projection.
@pytest.fixture(scope="module", params=[(16, 32), (8, 64)], ids=["projected", "unprojected"])
def converted_model(request, tmp_path_factory):
    embed_dim, d_model = request.param
    directory = tmp_path_factory.mktemp("hf_swin")
    reference = hf_maskformer(embed_dim, d_model)
    reference.save_pretrained(directory)
    model, config = convert_checkpoint("hf", directory / "model.safetensors", ExperimentConfig())
    return reference, model, config


def test_config_from_hugging_face(converted_model):
    reference, _, config = converted_model
    hf = reference.config.backbone_config
    swin = config.model.backbone.swin
    assert config.model.backbone.type == "swin"
    assert (swin.embed_dim, swin.depths, swin.num_heads, swin.window_size, swin.patch_size) == (
        hf.embed_dim, list(hf.depths), list(hf.num_heads), hf.window_size, hf.patch_size)
    assert swin.drop_path_rate == pytest.approx(hf.drop_path_rate)
    assert config.model.pixel_decoder == "fpn" and config.model.predictor_input() == "res5"
    projected = reference.model.transformer_module.input_projection is not None
    assert config.model.enforce_input_proj == projected
    assert config.model.dec_layers == 2 and config.model.num_queries == 10


def test_maskformer_matches_hugging_face(converted_model):
    reference, model, _ = converted_model
    images = np.random.default_rng(1).uniform(0, 255, (2, 75, 101, 3)).astype(np.float32)
    ref_logits, ref_masks = hf_forward(reference, images)
    out = run(model, images)
    assert out["pred_logits"].shape == ref_logits.shape == (2, 10, 8)
    assert out["pred_masks"].shape == ref_masks.shape == (2, 10, 19, 26)
    assert max_relative_difference(out["pred_logits"], ref_logits) <= 1e-4
    assert max_relative_difference(out["pred_masks"], ref_masks) <= 1e-4


def test_original_names_checkpoint(converted_model, tmp_path):
    """The same weights under the original's names, as a detectron2 `.pkl` (index buffers
    included), load strictly and compute the same; a wrong index buffer is refused by name."""
    reference, model, config = converted_model
    state = rename_state_dict({k: v.numpy() for k, v in reference.state_dict().items()})
    assert "backbone.layers.0.blocks.1.attn.relative_position_index" in state
    path = tmp_path / "model_final.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": state}, f)
    experiment = ExperimentConfig(model=config.model)
    from_pkl, _ = convert_checkpoint("detectron2", path, experiment)
    for a, b in zip(model.weights, from_pkl.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)

    key = "backbone.layers.2.blocks.0.attn.relative_position_index"
    state[key] = state[key] + 1
    with pytest.raises(CheckpointError, match=rf"1 wrong: {key}"):
        assign_weights(build_model(config.model, image_size=(32, 32)), state)


def test_model_directory_round_trip(converted_model, tmp_path):
    """A converted Swin model written as a model directory (config.yaml with the Swin
    settings, weights by name) loads back into the same network."""
    from maskformer.config import ConfigWarning
    from maskformer.model_dir import load_model, save_model, variable_keys

    _, model, config = converted_model
    save_model(model, config, tmp_path / "model")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)  # the tiny model's 10 queries
        loaded = load_model(tmp_path / "model")
    assert loaded.config.backbone == config.model.backbone
    saved, restored = variable_keys(model), variable_keys(loaded)
    assert list(saved) == list(restored)
    assert "backbone/stage3/block1/attn/relative_position_bias_table" in saved
    for key, variable in saved.items():
        np.testing.assert_array_equal(np.asarray(restored[key]), np.asarray(variable),
                                      err_msg=key)


@pytest.mark.parametrize("change,message", [
    ({"use_absolute_embeddings": True}, "use_absolute_embeddings"),
    ({"layer_norm_eps": 1e-6}, "layer_norm_eps"),
    ({"out_features": ["stage2", "stage3", "stage4"]}, "out_features"),
    ({"hidden_act": "relu"}, "hidden_act"),
])
def test_unsupported_swin_configs_are_refused(change, message):
    backbone = {**hf_swin_config().to_dict(), **change}
    with pytest.raises(CheckpointError, match=f"backbone_config.{message}"):
        model_config_from_hf(maskformer_config(backbone))


def test_older_swin_model_type_is_read():
    """Older configs name the backbone "swin" (HF reads it as MaskFormerSwin)."""
    backbone = {"model_type": "swin", "embed_dim": 128, "depths": [2, 2, 18, 2],
                "num_heads": [4, 8, 16, 32], "window_size": 12, "drop_path_rate": 0.3}
    config = model_config_from_hf(maskformer_config(backbone))
    swin = config.backbone.swin
    assert (config.backbone.type, swin.embed_dim, swin.depths, swin.window_size) == (
        "swin", 128, [2, 2, 18, 2], 12)
    assert swin.drop_path_rate == 0.3 and config.enforce_input_proj
    config.validate()
