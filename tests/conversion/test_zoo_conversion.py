"""Every released model converts: for each experiment of `experiments.ZOO`, the full-size model
is built once and

- its parameter count is the published one (MaskFormer paper, tables 1 and 2) where there is
  one;
- a detectron2 checkpoint with that model's names (the released files' old head names) and
  shapes, written by the test, is recognised as that experiment from its tensors alone and
  sets every variable strictly;
- for the 16 Hugging Face copies, the model that `transformers` builds from the copy's
  architecture (on the meta device: names and shapes only) gives, through the Hugging Face
  converter, exactly the names and shapes this model needs, and its config.json resolves to
  this experiment.

The tensors are zeros: values are the parity tests' concern (tests/modeling, tests/conversion).
Full-size models take seconds each to build: slow. One model per backbone (R50, R101, R101c and
the four Swin sizes, windows 7 and 12), spread over the datasets, with and without a Hugging Face
copy; the other experiments differ from these only in the class count and settings that
`tests/conversion/test_infer.py` covers at small size.
"""

import numpy as np
import pytest

from maskformer.conversion import huggingface, infer
from maskformer.conversion.detectron2 import assign_weights, normalize_names, weight_map
from maskformer.experiments import ZOO, get_experiment
from maskformer.modeling.maskformer import build_model
from maskformer.modeling.swin import relative_position_index

pytestmark = pytest.mark.slow

# Millions of parameters in the MaskFormer paper (table 1: ADE20K, table 2: COCO panoptic).
PUBLISHED_MILLIONS = {
    "maskformer_ade20k_semantic_r50": 41, "maskformer_ade20k_semantic_r101": 60,
    "maskformer_ade20k_semantic_swin_tiny": 42, "maskformer_ade20k_semantic_swin_small": 63,
    "maskformer_ade20k_semantic_swin_base": 102, "maskformer_ade20k_semantic_swin_large": 212,
    "maskformer_coco_panoptic_r50": 45, "maskformer_coco_panoptic_r101": 64,
    "maskformer_coco_panoptic_swin_tiny": 42, "maskformer_coco_panoptic_swin_small": 63,
    "maskformer_coco_panoptic_swin_base": 102, "maskformer_coco_panoptic_swin_large": 212,
}

# The Hugging Face copies' backbones, as their config.json files describe them.
HF_SWIN = {"Swin-T": (96, [2, 2, 6, 2], [3, 6, 12, 24], 7),
           "Swin-S": (96, [2, 2, 18, 2], [3, 6, 12, 24], 7),
           "Swin-B": (128, [2, 2, 18, 2], [4, 8, 16, 32], 12),
           "Swin-L": (192, [2, 2, 18, 2], [6, 12, 24, 48], 12)}
HF_RESNET_DEPTHS = {"R50": [3, 4, 6, 3], "R101": [3, 4, 23, 3]}


def _source_shape(target) -> tuple[int, ...]:
    """The original's layout of a variable's source tensor (the converter's transforms undone)."""
    shape = tuple(target.variable.shape)
    name = target.sources[0]
    if name.endswith("in_proj_weight"):
        return (3 * shape[1], shape[0])
    if name.endswith("in_proj_bias") or name.endswith("attn.qkv.bias"):
        return (3 * shape[0],) if name.endswith("in_proj_bias") else shape
    if len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    if len(shape) == 2 and not name.endswith(("query_embed.weight", "bias_table")):
        return shape[::-1]
    return shape


def _old_head_names(state):
    """The released files' names: the pixel decoder's layers directly under sem_seg_head."""
    return {k.replace("sem_seg_head.pixel_decoder.", "sem_seg_head.", 1): v
            for k, v in state.items()}


def _hf_config(name):
    from transformers import MaskFormerConfig, MaskFormerSwinConfig, ResNetConfig

    entry, config = ZOO[name], get_experiment(name)
    stages = ["stage1", "stage2", "stage3", "stage4"]
    if entry.backbone in HF_SWIN:
        embed, depths, heads, window = HF_SWIN[entry.backbone]
        backbone = MaskFormerSwinConfig(embed_dim=embed, depths=depths, num_heads=heads,
                                        window_size=window, out_features=stages)
    else:
        backbone = ResNetConfig(depths=HF_RESNET_DEPTHS[entry.backbone],
                                hidden_sizes=[256, 512, 1024, 2048], embedding_size=64,
                                layer_type="bottleneck", out_features=stages)
    return MaskFormerConfig(backbone_config=backbone, num_labels=config.model.num_classes)


# One per backbone: every layout the converters know, the class counts of four datasets.
CHECKED = ["maskformer_ade20k_semantic_r50", "maskformer_cityscapes_semantic_r101",
           "maskformer_coco_stuff_semantic_r101c", "maskformer_coco_panoptic_swin_tiny",
           "maskformer_ade20k_semantic_swin_small", "maskformer_coco_panoptic_swin_base",
           "maskformer_ade20k_semantic_swin_large"]


def test_checked_models_cover_every_backbone():
    assert sorted({ZOO[name].backbone for name in CHECKED}) == sorted(
        {entry.backbone for entry in ZOO.values()})


@pytest.mark.parametrize("name", CHECKED)
def test_released_model_converts_strictly(name):
    model = build_model(get_experiment(name).model, image_size=(64, 64))
    if name in PUBLISHED_MILLIONS:
        assert round(model.count_params() / 1e6) == PUBLISHED_MILLIONS[name]
    # np.zeros is lazily allocated: a full-size state dict costs memory only as it is read.
    state = {t.sources[0]: np.zeros(_source_shape(t), np.float32) for t in weight_map(model)}
    state["criterion.empty_weight"] = np.ones(model.config.num_classes + 1, np.float32)
    state = normalize_names(_old_head_names(state))
    assert infer.infer_experiment(infer.checkpoint_signature(state)) == name
    assign_weights(model, state, source=ZOO[name].file)

    if ZOO[name].hf_id is None:
        return
    torch = pytest.importorskip("torch")
    from transformers import MaskFormerForInstanceSegmentation

    hf_config = _hf_config(name)
    model_config = huggingface.model_config_from_hf(hf_config.to_dict())
    assert infer.infer_experiment(infer.config_signature(model_config)) == name
    with torch.device("meta"):
        reference = MaskFormerForInstanceSegmentation(hf_config)
    state = {k: np.zeros(tuple(v.shape), np.float32) for k, v in reference.state_dict().items()}
    for key in state:  # the index buffers are checked against the model's own: give the real ones
        if key.endswith("relative_position_index"):
            state[key] = relative_position_index(hf_config.backbone_config.window_size)
    assign_weights(model, huggingface.rename_state_dict(state), source=ZOO[name].hf_id)
