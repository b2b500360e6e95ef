"""The optimizer recipe against torch.optim.AdamW with parameter groups."""

import keras
import numpy as np
import pytest

from maskformer.config import TrainConfig
from maskformer.training.optimizer import LearningRateSchedule, build_optimizer
from tests.conftest import backend


class Tiny(keras.Model):
    def __init__(self):
        super().__init__()
        self.backbone = keras.layers.Dense(3, name="backbone")
        self.head = keras.layers.Dense(2, name="head")
        self.norm = keras.layers.LayerNormalization(epsilon=1e-5, name="norm")

    def call(self, x):
        return self.norm(self.head(self.backbone(x)))

@pytest.mark.skipif(backend() != "tensorflow", reason="uses tf.GradientTape for the gradients")
def test_matches_torch_adamw_param_groups():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 5)).astype(np.float32)
    y = rng.normal(size=(4, 2)).astype(np.float32)
    model = Tiny()
    model(x)
    config = TrainConfig(learning_rate=0.05, weight_decay=0.1, backbone_multiplier=0.1,
                         clip_norm=0.0, schedule="constant", steps=10)
    optimizer = build_optimizer(config)
    optimizer.epsilon = 0.0  # Keras and PyTorch place epsilon differently; compare without it

    params = {v.path: torch.tensor(np.asarray(v), requires_grad=True)
              for v in model.trainable_variables}
    groups = [
        {"params": [p for k, p in params.items() if "backbone" in k], "lr": 0.005},
        {"params": [p for k, p in params.items() if "head" in k], "lr": 0.05},
        {"params": [p for k, p in params.items() if "norm" in k], "lr": 0.05, "weight_decay": 0},
    ]
    reference = torch.optim.AdamW(groups, lr=0.05, weight_decay=0.1, eps=0.0)

    def torch_loss():
        v = {k.split("/")[-2] + "/" + k.split("/")[-1]: p for k, p in params.items()}
        h = torch.from_numpy(x) @ v["backbone/kernel"] + v["backbone/bias"]
        h = h @ v["head/kernel"] + v["head/bias"]
        h = torch.nn.functional.layer_norm(h, (2,), v["norm/gamma"], v["norm/beta"], eps=1e-5)
        return ((h - torch.from_numpy(y)) ** 2).mean()

    for _ in range(3):
        reference.zero_grad()
        torch_loss().backward()
        reference.step()

        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = keras.ops.mean((model(x) - y) ** 2)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
    for v in model.trainable_variables:
        np.testing.assert_allclose(np.asarray(v), params[v.path].detach().numpy(), rtol=1e-4,
                                   atol=1e-5, err_msg=v.path)

def test_schedules():
    step = LearningRateSchedule(1.0, 100, "step", [50, 80], 0.1)
    assert [float(step(s)) for s in (0, 49, 50, 80)] == pytest.approx([1, 1, 0.1, 0.01])
    poly = LearningRateSchedule(1.0, 100, "poly", power=0.9)
    assert float(poly(50)) == pytest.approx(0.5**0.9, rel=1e-5)
    warm = LearningRateSchedule(1.0, 100, "constant", warmup_steps=10)
    assert float(warm(0)) == pytest.approx(0.1) and float(warm(20)) == pytest.approx(1.0)

def test_clipping_is_global_norm():
    optimizer = build_optimizer(TrainConfig(clip_norm=0.01))
    assert optimizer.global_clipnorm == 0.01 and optimizer.clipnorm is None


def test_swin_bias_tables_and_norms_get_no_weight_decay():
    """As the original's optimizer: Swin's relative position bias tables and every norm's scale
    and shift are not decayed; kernels are."""
    from maskformer.config import SwinConfig
    from maskformer.modeling.swin import build_swin

    swin = build_swin(SwinConfig(embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
                                 window_size=2))
    swin(np.zeros((1, 32, 32, 3), np.float32))
    optimizer = build_optimizer(TrainConfig(weight_decay=0.05))
    decayed = {v.path for v in swin.trainable_variables if optimizer.decays(v)}
    tables = [v.path for v in swin.trainable_variables if "relative_position_bias_table" in v.path]
    norms = [v.path for v in swin.trainable_variables if v.name in ("gamma", "beta")]
    kernels = [v.path for v in swin.trainable_variables if v.name == "kernel"]
    assert len(tables) == 4 and norms and kernels
    assert not decayed & set(tables + norms)
    assert set(kernels) <= decayed


def test_embeddings_get_no_weight_decay_and_the_pixel_decoders_level_embed_does():
    """The original exempts torch.nn.Embedding modules (WEIGHT_DECAY_EMBED 0): Mask2Former's
    query_feat, query_embed and the decoder's level_embed; the pixel decoder's level_embed is
    an nn.Parameter there and is decayed. MaskFormer's query embedding is exempt too."""
    from maskformer.experiments import get_experiment
    from maskformer.modeling.maskformer import build_model

    optimizer = build_optimizer(TrainConfig(weight_decay=0.05))
    for name, exempt in (
            ("mask2former_smoke", {"predictor/query_feat", "predictor/query_embed",
                                   "predictor/level_embed"}),
            ("maskformer_smoke", {"predictor/query_embed"})):
        model = build_model(get_experiment(name).model)
        model(np.zeros((1, 64, 64, 3), np.float32))
        variables = model.trainable_variables
        # Paths below the model's own (unique) name.
        not_decayed = {v.path.split("/", 1)[1] for v in variables
                       if not optimizer.decays(v) and v.name not in ("gamma", "beta")}
        assert not_decayed == exempt, name
        decayed = {v.path.split("/", 1)[1] for v in variables if optimizer.decays(v)}
        if name == "mask2former_smoke":
            assert "pixel_decoder/transformer/level_embed" in decayed
    assert not build_optimizer(TrainConfig(weight_decay=0.0)).decays(variables[0])
