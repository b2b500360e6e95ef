"""The assembled Mask2Former (`model.architecture: mask2former`): configuration checks, the
weight map, images of any size in one TensorFlow graph, training steps, mixed precision.

Its parts are tested against the original's recorded outputs in test_msdeform_pixel_decoder.py
and test_masked_attention_decoder.py; the whole model against Hugging Face in
tests/conversion; its gradients with MaskFormer's in tests/training/test_train_step.py.
"""

from collections import Counter

import keras
import numpy as np
import pytest

from maskformer.config import ConfigError, apply_overrides
from maskformer.conversion.detectron2 import weight_map
from maskformer.experiments import get_experiment
from maskformer.modeling.maskformer import build_model
from maskformer.training.trainer import build_trainer
from tests.conftest import backend
from tests.training.test_train_step import synthetic_batch


def smoke_model(**overrides):
    config = get_experiment("mask2former_smoke")
    config = apply_overrides(config, [f"model.{k}={v}" for k, v in overrides.items()])
    return build_model(config.validate().model)


@pytest.mark.parametrize("overrides, message", [
    ({"architecture": "mask2former", "pixel_decoder": "fpn"}, "'msdeform' pixel decoder"),
    ({"architecture": "maskformer", "pixel_decoder": "msdeform"}, "'msdeform' pixel decoder"),
    ({"enc_layers": 2}, "no encoder"),
    ({"transformer_in_feature": "res5"}, "no encoder"),
    ({"pixel_decoder_num_heads": 5}, "does not divide conv_dim"),
])
def test_inconsistent_settings_are_named(overrides, message):
    config = get_experiment("mask2former_smoke")
    with pytest.raises(ConfigError, match=message):
        apply_overrides(config, [f"model.{k}={v}" for k, v in overrides.items()]).validate()


def test_outputs_and_auxiliary_predictions():
    model = smoke_model()
    images = np.random.default_rng(0).uniform(0, 255, (2, 75, 109, 3)).astype("float32")
    outputs = model(images, training=False)
    # dec_layers 4: the queries' own prediction plus one after each layer, the last is the output
    assert len(outputs["aux_outputs"]) == 4
    assert tuple(outputs["pred_logits"].shape) == (2, 10, 8)
    assert tuple(outputs["pred_masks"].shape) == (2, 10, 19, 28)
    assert "aux_outputs" not in smoke_model(deep_supervision="false")(images, training=False)


def test_weight_map_names_every_variable_once():
    model = smoke_model()
    targets = weight_map(model)
    paths = [t.variable.path for t in targets]
    assert len(paths) == len(set(paths))
    assert set(paths) == {v.path for v in model.weights}
    uses = Counter(name for t in targets for name in t.sources)
    # a fused q|k|v projection sets the three separate ones, each from its rows
    assert all(n == (3 if name.rsplit(".", 1)[-1].startswith("in_proj_") else 1)
               for name, n in uses.items()), uses
    names = set(uses)
    assert "sem_seg_head.predictor.query_feat.weight" in names
    assert "sem_seg_head.pixel_decoder.transformer.level_embed" in names


@pytest.mark.skipif(backend() != "tensorflow", reason="TensorFlow graphs of unknown size")
def test_one_graph_for_every_image_size_equals_the_static_model():
    """Inference and export trace the model once for images of any size: the deformable
    sampling, the FPN resize and the attention masks then take their sizes at run time."""
    import tensorflow as tf

    from maskformer.inference import make_predict_fn

    model = smoke_model()
    forward = make_predict_fn(model)
    rng = np.random.default_rng(1)
    for size in ((97, 131), (64, 48)):
        images = rng.uniform(0, 255, (2, *size, 3)).astype("float32")
        static = model(images, training=False)
        dynamic = forward(tf.constant(images))
        for key in ("pred_logits", "pred_masks"):
            ref, ours = np.asarray(static[key]), np.asarray(dynamic[key])
            assert ours.shape == ref.shape
            assert np.max(np.abs(ours - ref)) <= 2e-5 * np.max(np.abs(ref)), (size, key)


def test_compiled_train_steps_lower_the_loss_on_one_batch():
    config = apply_overrides(get_experiment("mask2former_smoke"), ["train.learning_rate=1e-3"])
    trainer = build_trainer(config.validate())
    images, targets = synthetic_batch()
    losses = [float(trainer.train_on_batch(images, targets, return_dict=True)["step_loss"])
              for _ in range(8)]
    assert all(np.isfinite(losses))
    assert min(losses[-3:]) < losses[0], losses


def test_pixel_decoder_stays_float32_under_mixed_precision():
    # The host matcher: on TensorFlow a graph step, which builds in seconds where the XLA one
    # takes a minute (test_compiled_train_steps_lower_the_loss_on_one_batch compiles that).
    config = apply_overrides(get_experiment("mask2former_smoke"),
                             ["train.mixed_precision=bfloat16", "loss.matcher=scipy"])
    trainer = build_trainer(config.validate())
    network = trainer.network
    assert network.compute_dtype == "bfloat16"
    assert network.pixel_decoder.compute_dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"
    images, targets = synthetic_batch()
    loss = trainer.train_on_batch(images, targets, return_dict=True)["step_loss"]
    assert np.isfinite(loss)
