"""Parity with Hugging Face transformers' MaskFormer (ResNet-50 + FPN), randomly initialised.

HF matches the original for the backbone, FPN, decoder layers at inference and heads
(REFERENCE.md section 12), so a converted HF model must produce HF's outputs. Every HF
parameter and buffer (batch-norm statistics too) is randomised so that no mapping error hides
behind identity values.
"""

import os

import numpy as np
import pytest

from maskformer.config import ExperimentConfig
from maskformer.conversion.io import convert_checkpoint, max_relative_difference
from maskformer.experiments import get_experiment
from maskformer.modeling.maskformer import build_model, count_parameters
from tests.conversion.torch_utils import randomize_

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)


def hf_model(num_labels=7, num_queries=20, depths=(3, 4, 6, 3), seed=0):
    from transformers import MaskFormerConfig, MaskFormerForInstanceSegmentation, ResNetConfig

    backbone = ResNetConfig(depths=list(depths), hidden_sizes=[256, 512, 1024, 2048],
                            embedding_size=64, layer_type="bottleneck",
                            out_features=["stage1", "stage2", "stage3", "stage4"])
    config = MaskFormerConfig(backbone_config=backbone, num_labels=num_labels,
                              num_queries=num_queries)
    config.decoder_config.num_queries = num_queries  # the field HF's model reads
    torch.manual_seed(seed)
    model = MaskFormerForInstanceSegmentation(config).eval()
    randomize_(model, seed)
    return model


def hf_forward(model, images):
    pixel_values = torch.from_numpy(((images - MEAN) / STD).transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        out = model(pixel_values=pixel_values)
    return out.class_queries_logits.numpy(), out.masks_queries_logits.numpy()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    directory = tmp_path_factory.mktemp("hf")
    reference = hf_model()
    reference.save_pretrained(directory)
    model, _ = convert_checkpoint("hf", directory / "model.safetensors", ExperimentConfig())
    return reference, model


@pytest.mark.parametrize("size", [(383, 511), (256, 320)])
def test_r50_fpn_matches_hugging_face(converted, size):
    reference, model = converted
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, (2, *size, 3)).astype(np.float32)
    ref_logits, ref_masks = hf_forward(reference, images)
    out = model(images, training=False)
    assert out["pred_logits"].shape == ref_logits.shape
    assert out["pred_masks"].shape == ref_masks.shape == (2, 20, (size[0] + 3) // 4,
                                                          (size[1] + 3) // 4)
    assert max_relative_difference(out["pred_logits"], ref_logits) <= 1e-4
    assert max_relative_difference(out["pred_masks"], ref_masks) <= 1e-4


def test_pytorch_bin_checkpoint_matches_safetensors(converted, tmp_path):
    """`pytorch_model.bin` (torch.save zip) is read without torch.load and gives the same model."""
    reference, model = converted
    torch.save(reference.state_dict(), tmp_path / "pytorch_model.bin")
    reference.config.to_json_file(tmp_path / "config.json")
    from_bin, _ = convert_checkpoint("hf", tmp_path / "pytorch_model.bin", ExperimentConfig())
    for a, b in zip(model.weights, from_bin.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)


def test_parameter_count_matches_hugging_face():
    """R50 + FPN, 150 classes: HF's parameter count (BatchNorm affine included, as HF trains it)."""
    reference = hf_model(num_labels=150, num_queries=100)
    hf_count = sum(p.numel() for p in reference.parameters())
    model = build_model(get_experiment("maskformer_ade20k_semantic_r50").model)
    ours = count_parameters(model, include_frozen_affine=True)
    assert ours == hf_count
    assert abs(ours - 41.3e6) < 0.1e6


def test_parameter_count_coco_r50():
    """R50 + transformer-encoder pixel decoder, 133 classes: 45.0M (the original counts
    parameters; its frozen batch norm holds buffers only)."""
    model = build_model(get_experiment("maskformer_coco_panoptic_r50").model)
    assert abs(count_parameters(model) - 45.0e6) <= 0.1e6
