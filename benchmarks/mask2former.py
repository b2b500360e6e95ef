"""Mask2Former R50 against Hugging Face PyTorch (`Mask2FormerForUniversalSegmentation`), CPU.

The published COCO panoptic R50 architecture (133 classes, 100 queries, 6 deformable encoder
layers, 9 masked-attention layers), randomly initialised in Hugging Face and converted into ours,
so both hold the same weights.

- Forward, batch 1, at each `--sizes`: ours as `predict` runs it (XLA, the last prediction's
  outputs only) and as a plain TensorFlow graph, against PyTorch under `torch.no_grad()`. The
  contenders run interleaved (PyTorch, graph, XLA, PyTorch, ...), median of `--runs` after two
  warm-ups; "max rel. diff" is max |ours - HF| / max |HF| of the mask logits.
- Training step, batch 2 at `--train-size` with 10 target masks per image: forward, matching,
  the point-sampled losses of all 10 predictions (12544 points), backward, clipping and AdamW.
  Ours is `train_on_batch`, the whole step one XLA program (in-graph matcher) and, without XLA,
  matching on the host with scipy (`loss.matcher=scipy`); Hugging Face its own loss with
  torch.optim.AdamW. Each contender runs `--steps` steps after a warm-up step in a process of
  its own (they do not fit in 24 GiB together at 512 px), the three in turn for `--rounds`
  rounds; the median of all of a contender's steps.

    KERAS_BACKEND=tensorflow python benchmarks/mask2former.py [--sizes 512x512 800x1216]
        [--runs 5] [--train-size 512] [--steps 3] [--rounds 2] [--skip-forward] [--skip-train]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import torch  # noqa: E402

from benchmarks.forward import interleaved  # noqa: E402
from benchmarks.train_step import batch, step_times  # noqa: E402
from maskformer.config import ExperimentConfig  # noqa: E402
from maskformer.conversion.io import convert_checkpoint, max_relative_difference  # noqa: E402
from maskformer.experiments import mask2former_loss  # noqa: E402
from maskformer.inference import make_predict_fn  # noqa: E402
from maskformer.training.trainer import build_trainer  # noqa: E402
from tests.conversion.test_huggingface import MEAN, STD  # noqa: E402
from tests.conversion.torch_utils import randomize_  # noqa: E402

NUM_LABELS = 133


def hf_model(seed: int = 0):
    """A randomly initialised HF Mask2Former with the published R50 architecture."""
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, ResNetConfig

    backbone = ResNetConfig(depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048],
                            layer_type="bottleneck",
                            out_features=["stage1", "stage2", "stage3", "stage4"])
    config = Mask2FormerConfig(backbone_config=backbone, num_labels=NUM_LABELS,
                               id2label={i: f"class {i}" for i in range(NUM_LABELS)},
                               label2id={f"class {i}": i for i in range(NUM_LABELS)})
    torch.manual_seed(seed)
    model = Mask2FormerForUniversalSegmentation(config).eval()
    randomize_(model, seed)
    return model


def pixel_values(images):
    return torch.from_numpy(((images - MEAN) / STD).transpose(0, 3, 1, 2).copy())


def forward_table(reference, model, sizes, runs: int) -> list[str]:
    xla = make_predict_fn(model)
    graph = tf.function(lambda x: model(x, training=False)["pred_masks"])
    rows = []
    for size in sizes:
        images = np.random.default_rng(0).uniform(0, 255, (1, *size, 3)).astype(np.float32)
        x, pv = tf.constant(images), pixel_values(images)

        def hf(pv=pv):
            with torch.no_grad():
                return reference(pixel_values=pv).masks_queries_logits.numpy()

        diff = max_relative_difference(xla(x)["pred_masks"].numpy(), hf())
        times = interleaved({"torch": hf, "graph": lambda x=x: graph(x).numpy(),
                             "xla": lambda x=x: xla(x)["pred_masks"].numpy()}, runs)
        rows.append(f"| {size[0]}x{size[1]} | {times['torch']:.3f} | {times['graph']:.3f} | "
                    f"{times['xla']:.3f} | **{times['graph'] / times['torch']:.2f}** | "
                    f"**{times['xla'] / times['torch']:.2f}** | {diff:.1e} |")
        print(rows[-1], flush=True)
    return rows


def hf_step_fn(reference, images, targets):
    model = reference.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    pv = pixel_values(images)
    mask_labels = [torch.from_numpy(m) for m in targets["masks"]]
    class_labels = [torch.from_numpy(c.astype(np.int64)) for c in targets["labels"]]

    def step():
        optimizer.zero_grad()
        loss = model(pixel_values=pv, mask_labels=mask_labels, class_labels=class_labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.01)
        optimizer.step()
        return loss.item()

    return step


TRAIN_CONTENDERS = {"xla": "ours, XLA, in-graph matcher", "scipy": "ours, graph, scipy matcher",
                    "torch": "HF PyTorch"}


def train_times(contender: str, size: int, steps: int) -> list[float]:
    """Seconds of each of `steps` training steps of one contender (after a warm-up step), in
    this process."""
    images, targets = batch(size, num_classes=NUM_LABELS)
    reference = hf_model()
    if contender == "torch":
        step = hf_step_fn(reference, images, targets)
    else:
        with tempfile.TemporaryDirectory() as folder:
            reference.save_pretrained(folder)
            _, config = convert_checkpoint("hf", folder, ExperimentConfig())
        del reference
        config.loss = mask2former_loss()
        config.loss.matcher = "hungarian" if contender == "xla" else "scipy"
        config.data.max_instances = targets["labels"].shape[1]
        trainer = build_trainer(config.validate())

        def step():
            return trainer.train_on_batch(images, targets, return_dict=True)["loss"]

    return step_times(step, steps)


def train_table(size: int, steps: int, rounds: int) -> list[str]:
    """Each contender in a process of its own (at 512 px a PyTorch step and ours do not fit in
    memory together on a 24 GiB machine), the contenders in turn for `rounds` rounds; the
    median of every timed step of a contender."""
    times: dict[str, list[float]] = {c: [] for c in TRAIN_CONTENDERS}
    for _ in range(rounds):
        for contender in TRAIN_CONTENDERS:
            out = subprocess.run(
                [sys.executable, __file__, "--train-contender", contender,
                 "--train-size", str(size), "--steps", str(steps)],
                check=True, capture_output=True, text=True).stdout
            times[contender] += json.loads(out.strip().splitlines()[-1])
            print(f"{TRAIN_CONTENDERS[contender]}: "
                  f"{', '.join(f'{t:.2f}' for t in times[contender])} s/step", flush=True)
    median = {c: statistics.median(t) for c, t in times.items()}
    ours = ("xla", "scipy")
    return [
        "| HF PyTorch (s/step) | " + " | ".join(f"{TRAIN_CONTENDERS[n]} (s/step)" for n in ours)
        + " | " + " | ".join(f"{n} / PyTorch" for n in ours) + " |",
        "|" + "---|" * (1 + 2 * len(ours)),
        f"| {median['torch']:.2f} | " + " | ".join(f"{median[n]:.2f}" for n in ours) + " | "
        + " | ".join(f"**{median[n] / median['torch']:.2f}**" for n in ours) + " |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", nargs="+", default=["512x512", "800x1216"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--train-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-forward", action="store_true")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--train-contender", choices=list(TRAIN_CONTENDERS),
                        help="time one training contender in this process and print the "
                             "seconds of each step (JSON)")
    args = parser.parse_args()
    if args.train_contender:
        print(json.dumps(train_times(args.train_contender, args.train_size, args.steps)))
        return

    print(f"threads: torch {torch.get_num_threads()}, cores {os.cpu_count()}")
    if not args.skip_forward:
        reference = hf_model()
        with tempfile.TemporaryDirectory() as folder:
            reference.save_pretrained(folder)
            model, _ = convert_checkpoint("hf", folder, ExperimentConfig())
        print("| size | HF PyTorch (s) | ours TF graph (s) | ours XLA (s) | graph / PyTorch | "
              "XLA / PyTorch | max rel. diff |")
        print("|---|---|---|---|---|---|---|")
        sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
        forward_table(reference, model, sizes, args.runs)
        del model, reference
    if not args.skip_train:
        print("\n".join(train_table(args.train_size, args.steps, args.rounds)))


if __name__ == "__main__":
    main()
