"""The optimizer recipe of REFERENCE.md section 10.

AdamW with per-variable learning-rate multipliers (backbone x 0.1), no weight decay on norm
layers and on the query (and Mask2Former's level) embeddings, clipping of the global gradient norm, and the step / poly
schedules with optional linear warm-up.
"""

from __future__ import annotations

import keras
from keras import ops

from maskformer.config import TrainConfig
from maskformer.training.distribute import ClipAfterAllReduce

# Variables that get no weight decay, as the original's optimizer exempts them: every norm
# layer's scale and shift (WEIGHT_DECAY_NORM 0), the torch.nn.Embedding modules
# (WEIGHT_DECAY_EMBED 0: MaskFormer's query embedding; Mask2Former's query features, query
# positions and its decoder's level embedding) and Swin's relative position bias tables (by
# name). An entry is a variable name, or "parent/name" for the end of a variable's path:
# Mask2Former's pixel decoder has a level embedding too, a plain nn.Parameter there, which is
# decayed.
NO_DECAY_NAMES = ("gamma", "beta", "query_embed", "query_feat", "predictor/level_embed",
                  "relative_position_bias_table")


@keras.saving.register_keras_serializable("maskformer")
class LearningRateSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Step (x factor at each boundary), poly ((1 - t / T) ^ power) or constant, after warm-up."""

    def __init__(self, base: float, total_steps: int, kind: str = "step",
                 boundaries: list[int] | None = None, factor: float = 0.1, power: float = 0.9,
                 warmup_steps: int = 0):
        if kind not in ("step", "poly", "constant"):
            raise ValueError(f"train.schedule: {kind!r} is not 'step', 'poly' or 'constant'")
        self.base, self.total_steps, self.kind = base, total_steps, kind
        self.boundaries, self.factor = list(boundaries or []), factor
        self.power, self.warmup_steps = power, warmup_steps

    def __call__(self, step):
        step = ops.cast(step, "float32")
        lr = ops.convert_to_tensor(self.base, "float32")
        if self.kind == "step":
            for boundary in self.boundaries:
                lr = ops.where(step >= boundary, lr * self.factor, lr)
        elif self.kind == "poly":
            progress = ops.minimum(step / max(self.total_steps, 1), 1.0)
            lr = lr * ops.power(1.0 - progress, self.power)
        if self.warmup_steps > 0:
            warm = ops.minimum((step + 1.0) / self.warmup_steps, 1.0)
            lr = lr * warm
        return lr

    def get_config(self):
        return {"base": self.base, "total_steps": self.total_steps, "kind": self.kind,
                "boundaries": self.boundaries, "factor": self.factor, "power": self.power,
                "warmup_steps": self.warmup_steps}


@keras.saving.register_keras_serializable("maskformer")
class GroupedAdamW(ClipAfterAllReduce, keras.optimizers.Adam):
    """AdamW with PyTorch-style parameter groups.

    The learning rate is scaled per variable by the first matching path prefix (e.g. the
    backbone's x 0.1), and the scaled rate drives both the Adam step and the decoupled weight
    decay, as in torch.optim.AdamW: w <- w * (1 - lr_group * weight_decay), then the Adam step.
    Variables named in `no_decay_names` (a name, or the end of a path) are not decayed. Under tf.distribute the global norm
    is clipped after the cross-replica sum (`ClipAfterAllReduce`).

    `slot_owners` maps each per-variable slot (moments) to the model variable it belongs to and
    its slot name, so that checkpoints key the slots by the model variable's name.
    """

    def __init__(self, lr_multipliers: dict[str, float] | None = None,
                 decoupled_weight_decay: float = 0.0,
                 no_decay_names: tuple[str, ...] = NO_DECAY_NAMES, **kwargs):
        super().__init__(**kwargs)
        self.lr_multipliers = dict(lr_multipliers or {})
        self.decoupled_weight_decay = decoupled_weight_decay
        self.no_decay_names = tuple(no_decay_names)
        # id(slot variable) -> (id(model variable), slot name); ints only, so no tracking.
        self.slot_owners: dict[int, tuple[int, str]] = {}

    def add_variable_from_reference(self, reference_variable, name=None, initializer="zeros"):
        variable = super().add_variable_from_reference(reference_variable, name=name,
                                                       initializer=initializer)
        self.slot_owners[id(variable)] = (id(reference_variable), name or "var")
        return variable

    def multiplier(self, variable) -> float:
        """The learning-rate multiplier of a model variable, from its path."""
        parts = variable.path.split("/")
        for prefix, multiplier in self.lr_multipliers.items():
            if prefix in parts:
                return multiplier
        return 1.0

    def decays(self, variable) -> bool:
        if self.decoupled_weight_decay <= 0:
            return False
        return not any(variable.name == name or variable.path.endswith("/" + name)
                       for name in self.no_decay_names)

    def build(self, variables):
        super().build(variables)
        # update_step may receive the backend's variable (no path): key the groups here.
        self._groups = {self._var_key(v): (self.multiplier(v), self.decays(v)) for v in variables}

    def update_step(self, gradient, variable, learning_rate):
        multiplier, decays = self._groups[self._var_key(variable)]
        lr = ops.cast(learning_rate, variable.dtype) * multiplier
        if decays:
            variable.assign(variable * (1.0 - lr * self.decoupled_weight_decay))
        super().update_step(gradient, variable, lr)

    def get_config(self):
        return {**super().get_config(), "lr_multipliers": self.lr_multipliers,
                "decoupled_weight_decay": self.decoupled_weight_decay,
                "no_decay_names": list(self.no_decay_names)}


class StepCountingLossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """Keras' dynamic loss scaling, where a step skipped for overflowing gradients still counts
    in the inner optimizer's `iterations`.

    `iterations` is the training step everywhere (logs, checkpoints, the position in the data
    stream, the schedule, as detectron2's scheduler steps at every iteration), so it must count
    every batch. The cost: Adam's bias correction also sees the skipped steps.
    """

    def _stateful_handle_non_finite_grads(self):
        super()._stateful_handle_non_finite_grads()
        self.inner_optimizer.iterations.assign_add(1)

    def _stateless_handle_non_finite_grads(self, optimizer_variables, trainable_variables):
        trainable, new = super()._stateless_handle_non_finite_grads(optimizer_variables,
                                                                    trainable_variables)
        index = next(i for i, v in enumerate(self.variables)
                     if v is self.inner_optimizer.iterations)
        new = list(new)
        new[index] = new[index] + 1
        return trainable, new


def build_schedule(config: TrainConfig) -> LearningRateSchedule:
    """The learning rate as a function of the step (0 for the first update)."""
    return LearningRateSchedule(config.learning_rate, config.steps, config.schedule,
                                config.step_boundaries, config.step_factor, config.poly_power,
                                config.warmup_steps)


def build_optimizer(config: TrainConfig) -> GroupedAdamW:
    """AdamW per the recipe: backbone lr x `backbone_multiplier`, global-norm clipping."""
    return GroupedAdamW(
        lr_multipliers={"backbone": config.backbone_multiplier},
        decoupled_weight_decay=config.weight_decay,
        learning_rate=build_schedule(config),
        global_clipnorm=config.clip_norm if config.clip_norm > 0 else None,
        beta_1=0.9, beta_2=0.999, epsilon=1e-8,  # torch.optim.AdamW's defaults
    )
