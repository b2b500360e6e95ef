"""Training-step time: ours (Keras fit's train step) against Hugging Face PyTorch.

R50 + FPN, 150 classes, 100 queries, batch 2, 512 x 512, CPU. One step is the forward pass,
Hungarian matching, every loss term with deep supervision, the backward pass and an AdamW
update. Hugging Face runs `MaskFormerForInstanceSegmentation` with its loss
(`use_auxiliary_loss=True`) and torch.optim.AdamW. Median seconds over repeated steps, both in
one process.

    KERAS_BACKEND=tensorflow python benchmarks/train_step.py [--size 512] [--steps 5]

Ours runs two ways: the whole step compiled by XLA with the in-graph matcher (the default,
for TPUs and GPUs), and without XLA, matching on the host with scipy as the original and
Hugging Face do (`loss.matcher=scipy`), the rest in TensorFlow's graph mode.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from maskformer.experiments import get_experiment  # noqa: E402
from maskformer.training.trainer import build_trainer  # noqa: E402
from tests.conversion.test_huggingface import MEAN, STD  # noqa: E402


def batch(size: int, n_targets: int = 10, batch_size: int = 2, num_classes: int = 150, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (batch_size, size, size, 3)).astype(np.float32)
    masks = np.zeros((batch_size, n_targets, size, size), np.float32)
    for b in range(batch_size):
        for n in range(n_targets):
            y, x = rng.integers(0, size - 64, 2)
            masks[b, n, y:y + 64, x:x + 96] = 1
    labels = rng.integers(0, num_classes, (batch_size, n_targets)).astype(np.int32)
    valid = np.ones((batch_size, n_targets), bool)
    return images, {"masks": masks, "labels": labels, "valid": valid}


def hf_step_fn(images, targets):
    from transformers import MaskFormerConfig, MaskFormerForInstanceSegmentation, ResNetConfig

    backbone = ResNetConfig(depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048],
                            layer_type="bottleneck",
                            out_features=["stage1", "stage2", "stage3", "stage4"])
    config = MaskFormerConfig(backbone_config=backbone, num_labels=150, use_auxiliary_loss=True)
    model = MaskFormerForInstanceSegmentation(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    pixel_values = torch.from_numpy(((images - MEAN) / STD).transpose(0, 3, 1, 2).copy())
    mask_labels = [torch.from_numpy(m) for m in targets["masks"]]
    class_labels = [torch.from_numpy(c.astype(np.int64)) for c in targets["labels"]]

    def step():
        optimizer.zero_grad()
        # output_hidden_states=True: HF only keeps the decoder states its auxiliary loss
        # needs when they are asked for.
        loss = model(pixel_values=pixel_values, mask_labels=mask_labels,
                     class_labels=class_labels, output_hidden_states=True).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.01)
        optimizer.step()
        return float(loss)

    return step


def step_times(step, repeats: int) -> list[float]:
    """Seconds of each of `repeats` calls of `step`, after one call for compilation / warm-up."""
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def median_time(step, repeats: int) -> float:
    return statistics.median(step_times(step, repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()

    images, targets = batch(args.size)
    times = {}
    variants = {"XLA, in-graph matcher": {}, "graph, scipy matcher": {"loss.matcher": "scipy"}}
    for name, settings in variants.items():
        config = get_experiment("maskformer_ade20k_semantic_r50")
        config.data.max_instances = targets["labels"].shape[1]
        for key, value in settings.items():
            section, field = key.split(".")
            setattr(getattr(config, section), field, value)
        trainer = build_trainer(config)

        def ours(trainer=trainer):
            return trainer.train_on_batch(images, targets, return_dict=True)["loss"]

        times[name] = median_time(ours, args.steps)
        del trainer
    t_torch = median_time(hf_step_fn(images, targets), args.steps)
    print(f"threads: torch {torch.get_num_threads()}, cores {os.cpu_count()}, "
          f"median of {args.steps} steps")
    print("| model | batch | size | HF PyTorch (s/step) | "
          + " | ".join(f"ours, {n} (s/step)" for n in variants) + " | "
          + " | ".join(f"{n} / PyTorch" for n in variants) + " |")
    print("|" + "---|" * (4 + 2 * len(variants)))
    print(f"| R50 + FPN, 150 classes | 2 | {args.size} | {t_torch:.2f} | "
          + " | ".join(f"{times[n]:.2f}" for n in variants) + " | "
          + " | ".join(f"{times[n] / t_torch:.2f}" for n in variants) + " |")


if __name__ == "__main__":
    main()
