"""Parity with Hugging Face transformers' Mask2Former (`Mask2FormerForUniversalSegmentation`),
randomly initialised, on a ResNet and on a Swin backbone.

Every HF parameter and buffer is overwritten with random values (`randomize_`; the Swin's
relative-position tables with std 0.5), so that no mapping error hides behind HF's
initialisation (zero offsets, identity norms). The converted model must give HF's class and
mask logits, final and auxiliary (the prediction from the learned queries alone and after every
masked-attention layer but the last), at sizes that are multiples neither of 32 nor of the
window: max |ours - HF| <= 1e-4 max |HF|.

Conventions: our model takes RGB 0..255 and normalises inside with `model.pixel_mean/std`
(ImageNet's, as HF's image processor); HF takes the normalised NCHW tensor. Neither pads here
(`size_divisibility` 0; HF pads in its image processor). HF's `masks_queries_logits` are at
stride 4 of the input, as ours.

The tiny configurations cover both input-projection cases of the decoder (ResNet: hidden 48,
projected from the pixel decoder's 64 channels; Swin: hidden 64, none, as the released models),
four masked-attention layers (the round robin over the three levels wraps around) and two
deformable encoder layers.
"""

import os
import re

import numpy as np
import pytest
from keras import ops

from maskformer.config import ExperimentConfig
from maskformer.conversion.huggingface import (
    hf_architecture,
    model_config_from_hf,
    rename_state_dict,
)
from maskformer.conversion.io import convert_checkpoint, max_relative_difference
from maskformer.errors import CheckpointError
from tests.conversion.torch_utils import randomize_

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)
STAGES = ["stage1", "stage2", "stage3", "stage4"]
NUM_LABELS, NUM_QUERIES, DECODER_LAYERS = 5, 9, 5  # HF's decoder_layers: 4 masked-attention layers
SIZES = [(97, 131), (75, 109)]
NAMES = ["cat", "dog", "grass", "sky", "road"]


def hf_backbone_config(kind: str):
    if kind == "swin":
        return transformers.SwinConfig(embed_dim=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4],
                                       window_size=7, out_features=STAGES)
    return transformers.ResNetConfig(depths=[1, 1, 1, 1], hidden_sizes=[32, 64, 128, 256],
                                     embedding_size=16, layer_type="bottleneck",
                                     out_features=STAGES)


def hf_config(kind: str = "resnet", **changes):
    settings = dict(feature_size=64, mask_feature_size=40,
                    hidden_dim=48 if kind == "resnet" else 64,
                    encoder_layers=2, encoder_feedforward_dim=96, decoder_layers=DECODER_LAYERS,
                    dim_feedforward=80, num_attention_heads=4, num_queries=NUM_QUERIES,
                    id2label=dict(enumerate(NAMES)),
                    label2id={n: i for i, n in enumerate(NAMES)})
    settings.update(changes)
    return transformers.Mask2FormerConfig(backbone_config=hf_backbone_config(kind), **settings)


def hf_model(kind: str = "resnet", seed: int = 0, **changes):
    """A Mask2FormerForUniversalSegmentation with every parameter and buffer random."""
    torch.manual_seed(seed)
    model = transformers.Mask2FormerForUniversalSegmentation(hf_config(kind, **changes)).eval()
    randomize_(model, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, tensor in model.named_parameters():
            if name.endswith("relative_position_bias_table"):  # a wrong index must show
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.5)
    return model


def hf_outputs(model, images):
    """[(class logits, mask logits)] of every prediction, first first (the last is the output)."""
    pixel_values = torch.from_numpy(((images - MEAN) / STD).transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        out = model(pixel_values=pixel_values, output_auxiliary_logits=True)
    aux = [(a["class_queries_logits"].numpy(), a["masks_queries_logits"].numpy())
           for a in out.auxiliary_logits]
    return aux + [(out.class_queries_logits.numpy(), out.masks_queries_logits.numpy())]


def our_outputs(model, images):
    out = model(images, training=False)
    return [(ops.convert_to_numpy(o["pred_logits"]), ops.convert_to_numpy(o["pred_masks"]))
            for o in [*out["aux_outputs"], out]]


@pytest.fixture(scope="module", params=["resnet", "swin"])
def converted(request, tmp_path_factory):
    kind = request.param
    folder = tmp_path_factory.mktemp(f"hf_mask2former_{kind}")
    reference = hf_model(kind)
    reference.save_pretrained(folder)
    model, config = convert_checkpoint("hf", folder, ExperimentConfig())
    return kind, reference, model, config, folder


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_every_prediction_matches_hugging_face(converted, size):
    kind, reference, model, _, _ = converted
    images = np.random.default_rng(sum(size)).uniform(0, 255, (2, *size, 3)).astype(np.float32)
    expected = hf_outputs(reference, images)
    got = our_outputs(model, images)
    assert len(got) == len(expected) == DECODER_LAYERS
    mask_shape = (2, NUM_QUERIES, (size[0] + 3) // 4, (size[1] + 3) // 4)
    worst = {}
    for i, ((logits, masks), (ref_logits, ref_masks)) in enumerate(zip(got, expected,
                                                                       strict=True)):
        assert logits.shape == ref_logits.shape == (2, NUM_QUERIES, NUM_LABELS + 1)
        assert masks.shape == ref_masks.shape == mask_shape
        worst[f"logits {i}"] = max_relative_difference(logits, ref_logits)
        worst[f"masks {i}"] = max_relative_difference(masks, ref_masks)
    print(f"{kind} {size}: worst relative difference {max(worst.values()):.3g}")
    assert max(worst.values()) <= 1e-4, worst


def test_config_from_hugging_face(converted):
    kind, reference, _, config, _ = converted
    hf = reference.config
    m = config.model
    assert (m.architecture, m.pixel_decoder, m.backbone.type) == ("mask2former", "msdeform", kind)
    assert m.dec_layers == len(reference.model.transformer_module.decoder.layers) == 4
    assert m.pixel_decoder_enc_layers == len(reference.model.pixel_level_module.decoder.encoder
                                             .layers) == hf.encoder_layers
    assert (m.conv_dim, m.mask_dim, m.hidden_dim, m.num_queries, m.num_classes) == (
        hf.feature_size, hf.mask_feature_size, hf.hidden_dim, NUM_QUERIES, NUM_LABELS)
    assert (m.pixel_decoder_num_heads, m.num_heads) == (hf.num_attention_heads,) * 2
    assert (m.pixel_decoder_dim_feedforward, m.dim_feedforward) == (
        hf.encoder_feedforward_dim, hf.dim_feedforward)
    projected = [not isinstance(p, torch.nn.Sequential)
                 for p in reference.model.transformer_module.input_projections]
    assert projected == [m.hidden_dim != m.conv_dim] * 3
    if kind == "swin":
        swin = m.backbone.swin
        assert (swin.embed_dim, swin.depths, swin.num_heads, swin.window_size) == (16, [2] * 4,
                                                                                   [1, 2, 2, 4], 7)


def test_module_names_of_transformers_5_read_as_the_files(converted):
    """The module's own state dict (transformers >= 5: the Swin under `swin.`, `q_proj`,
    `mlp.fc1`) renames to what the saved file renames to."""
    kind, reference, _, _, folder = converted
    from maskformer.conversion.safe_pickle import load_state_dict

    own = {k: v.numpy() for k, v in reference.state_dict().items()}
    saved = load_state_dict(folder / "model.safetensors")
    if kind == "swin":
        assert any(".swin.encoder." in k for k in own)
        assert not any(".swin.encoder." in k for k in saved)
    assert hf_architecture(own) == hf_architecture(saved) == "mask2former"
    a, b = rename_state_dict(own), rename_state_dict(saved)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_unknown_and_missing_tensors_are_named(converted):
    _, reference, model, _, _ = converted
    from maskformer.conversion.detectron2 import assign_weights

    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    extra = {**state, "model.transformer_module.decoder.layers.0.extra.weight": np.zeros(3)}
    with pytest.raises(CheckpointError, match="1 unexpected Hugging Face Mask2Former tensors: "
                                              r"model\.transformer_module\.decoder\.layers\.0"
                                              r"\.extra\.weight$"):
        rename_state_dict(extra)
    key = "model.transformer_module.decoder.layers.2.self_attn.k_proj.weight"
    with pytest.raises(CheckpointError, match="q, k and v projections must all be present"):
        rename_state_dict({k: v for k, v in state.items() if k != key})
    key = "model.transformer_module.decoder.layers.3.cross_attn_layer_norm.bias"
    renamed = rename_state_dict({k: v for k, v in state.items() if k != key})
    with pytest.raises(CheckpointError, match="1 missing: sem_seg_head.predictor."
                                              "transformer_cross_attention_layers.3.norm.bias$"):
        assign_weights(model, renamed)  # strict: raises before setting anything


def test_the_one_dropped_tensor_moves_no_output(converted):
    """Every HF tensor has its place but BatchNorm's counters and, for Swin, the final LayerNorm
    of the SwinModel inside HF's SwinBackbone: the backbone's outputs are the stage outputs
    through `hidden_states_norms`, never through it, so changing it changes no HF output."""
    kind, reference, _, _, folder = converted
    from maskformer.conversion.safe_pickle import load_state_dict

    state = load_state_dict(folder / "model.safetensors")
    dropped = [k for k in state if re.fullmatch(r".*\.swin\.layernorm\.(weight|bias)", k)]
    counters = [k for k in state if k.endswith("num_batches_tracked")]
    # Separate q, k and v (weight and bias) become one fused tensor each.
    separate = [k for k in state if re.fullmatch(r".*\.(q_proj|self\.query)\.(weight|bias)", k)]
    renamed = rename_state_dict(state)
    assert len(renamed) == len(state) - len(dropped) - len(counters) - 2 * len(separate)
    assert len(dropped) == (2 if kind == "swin" else 0)
    if kind == "resnet":
        return
    images = np.random.default_rng(5).uniform(0, 255, (1, 75, 109, 3)).astype(np.float32)
    before = hf_outputs(reference, images)
    norm = reference.model.pixel_level_module.encoder.swin.layernorm
    saved = [p.detach().clone() for p in norm.parameters()]
    with torch.no_grad():
        for p in norm.parameters():
            p.mul_(-3.0).add_(1.0)
    try:
        after = hf_outputs(reference, images)
    finally:
        with torch.no_grad():
            for p, value in zip(norm.parameters(), saved, strict=True):
                p.copy_(value)
    for (a, b), (c, d) in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


@pytest.mark.parametrize("change,message", [
    ({"pre_norm": True}, "pre_norm True is not supported"),
    ({"activation_function": "gelu"}, "activation_function 'gelu' is not supported"),
    ({"common_stride": 8}, "common_stride 8 is not supported"),
    ({"decoder_layers": 1}, "decoder_layers 1: at least 2"),
])
def test_settings_the_original_lacks_are_refused(change, message):
    config = {**hf_config("resnet").to_dict(), **change}
    with pytest.raises(CheckpointError, match=message):
        model_config_from_hf(config)


def test_backbone_outputs_must_be_all_stages():
    config = hf_config("swin").to_dict()
    config["backbone_config"]["out_features"] = ["stage2", "stage3", "stage4"]
    with pytest.raises(CheckpointError, match="backbone_config.out_features"):
        model_config_from_hf(config)


def test_hf_defaults_are_the_released_models():
    """HF's default Mask2FormerConfig (Swin-T-sized backbone settings aside) is the original's
    COCO model: 9 masked-attention layers (DEC_LAYERS 10), 6 encoder layers, FFN 1024 in the
    encoder and 2048 in the decoder, no input projection."""
    config = model_config_from_hf({"model_type": "mask2former",
                                   "backbone_config": {"model_type": "swin"},
                                   "id2label": {str(i): f"c{i}" for i in range(133)}})
    assert (config.dec_layers, config.pixel_decoder_enc_layers, config.num_queries) == (9, 6, 100)
    assert (config.pixel_decoder_dim_feedforward, config.dim_feedforward) == (1024, 2048)
    assert (config.conv_dim, config.hidden_dim, config.enforce_input_proj) == (256, 256, False)
    assert config.num_classes == 133 and config.dropout == 0.0
    enforced = model_config_from_hf({"model_type": "mask2former", "num_labels": 3,
                                     "enforce_input_projection": True})
    assert enforced.enforce_input_proj and enforced.backbone.type == "swin"
    config.validate()


def test_convert_command_then_init_checkpoint(converted, tmp_path, capsys):
    """`maskformer convert --from hf <folder>` writes the converted model with id2label's names;
    `train.init_checkpoint` takes the same folder for every part."""
    _, _, model, _, folder = converted
    from maskformer.cli import main
    from maskformer.conversion.pretrained import load_init_checkpoint, read_model_arrays
    from maskformer.model_dir import load_config, variable_keys

    def weights():  # Keras' random seed states (Swin's drop path) are not weights
        return {k: np.array(ops.convert_to_numpy(v)) for k, v in variable_keys(model).items()
                if "seed_generator" not in k}

    expected = weights()
    assert main(["convert", "--from", "hf", str(folder), "--out", str(tmp_path / "m")]) == 0
    assert f"{NUM_LABELS} classes from id2label" in capsys.readouterr().out
    assert load_config(tmp_path / "m").model.architecture == "mask2former"
    saved, _ = read_model_arrays(tmp_path / "m")
    for key, value in expected.items():
        np.testing.assert_array_equal(saved[key], value, err_msg=key)

    for variable in model.weights:  # start from other values; the load sets every one back
        if "seed_generator" not in variable.path:
            variable.assign(np.full(variable.shape, 0.5, variable.dtype))
    report = load_init_checkpoint(model, folder, "all")
    assert report.format == "Hugging Face Mask2Former"
    assert report.loaded == len(expected)
    for key, value in weights().items():
        np.testing.assert_array_equal(value, expected[key], err_msg=key)


@pytest.mark.slow
def test_full_size_model_converts_strictly():
    """HF's default Mask2FormerConfig (Swin-S backbone, 9 masked-attention layers, 6 encoder
    layers, 133 classes), built on the meta device (names and shapes only): the converter gives
    exactly the names and shapes the full-size model needs."""
    from maskformer.conversion.detectron2 import assign_weights
    from maskformer.modeling.maskformer import build_model
    from maskformer.modeling.swin import relative_position_index

    config = transformers.Mask2FormerConfig(num_labels=133)
    with torch.device("meta"):
        reference = transformers.Mask2FormerForUniversalSegmentation(config)
    state = {k: np.zeros(tuple(v.shape), np.float32) for k, v in reference.state_dict().items()}
    for key in state:  # the index buffers are checked against the model's own: give the real ones
        if key.endswith("relative_position_index"):
            state[key] = relative_position_index(config.backbone_config.window_size)
    model_config = model_config_from_hf(config.to_dict())
    assert (model_config.dec_layers, model_config.backbone.swin.depths) == (9, [2, 2, 18, 2])
    model = build_model(model_config)
    assign_weights(model, rename_state_dict(state), source="Mask2FormerConfig()")
    ours = sum(int(np.prod(v.shape)) for v in model.weights if "seed_generator" not in v.path)
    # HF's count without the buffers and the unused final LayerNorm of its SwinModel.
    assert ours == sum(v.numel() for k, v in reference.named_parameters()
                       if ".swin.layernorm." not in k)
