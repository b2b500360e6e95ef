"""Runs a few training steps of the smoke experiment and prints the per-step losses as JSON.

    python -m tests.training.distributed_run OUT_JSON MODEL_DIR STRATEGY [LOGICAL_CPUS] OVERRIDES..

Run in a fresh process: logical CPU devices must be configured before TensorFlow starts.
"""

import json
import sys


def main(argv):
    out, model_dir, strategy_name, logical = argv[0], argv[1], argv[2], int(argv[3])
    overrides = argv[4:]
    import tensorflow as tf

    if logical > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(logical)])
    from maskformer.config import apply_overrides
    from maskformer.experiments import get_experiment
    from maskformer.training.distribute import strategy_from_name
    from maskformer.training.trainer import train

    config = apply_overrides(get_experiment("maskformer_smoke"), overrides).validate()
    result = train(config, model_dir, steps_per_epoch=1, verbose=0,
                   strategy=strategy_from_name(strategy_name))
    losses = [step["loss"] for step in result["history"]]
    with open(out, "w") as f:
        json.dump(losses, f)


if __name__ == "__main__":
    main(sys.argv[1:])
