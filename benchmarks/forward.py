"""Forward latency: ours (TensorFlow graph and XLA) against Hugging Face PyTorch, same weights.

The Hugging Face-comparable model: ResNet-50 + FPN pixel decoder, 150 classes, 100 queries,
randomly initialised, converted into ours. Batch 1, CPU, median over repeated runs. The
contenders run interleaved (PyTorch, TF graph, XLA, PyTorch, ...), so that a load that comes and
goes on a shared machine falls on all of them alike and the ratios stay meaningful. "ours
inference" is what `maskformer.inference.Predictor` runs: XLA, returning the last decoder
layer's outputs only, so the earlier layers' heads (deep supervision) are not computed, as
Hugging Face's model does not compute them at inference.

`--profile 512x512` adds per-stage medians at that size, also interleaved: ours as one compiled
function per stage (normalisation + backbone, pixel decoder, transformer predictor, heads),
PyTorch's stages timed by forward hooks inside its whole forward pass.

`--backbone swin-tiny` / `swin-base` puts the published Swin-T (embed 96, depths 2-2-6-2,
window 7) or Swin-B (embed 128, depths 2-2-18-2, window 12) under the same FPN MaskFormer, as
Hugging Face's `facebook/maskformer-swin-*-ade` models are built.

    KERAS_BACKEND=tensorflow python benchmarks/forward.py [--sizes 512x512 800x1216] [--runs 7]
        [--profile 512x512] [--backbone r50|swin-tiny|swin-base]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import torch  # noqa: E402

from maskformer.config import ExperimentConfig  # noqa: E402
from maskformer.conversion.io import convert_checkpoint, max_relative_difference  # noqa: E402
from maskformer.inference import make_predict_fn  # noqa: E402
from tests.conversion.test_huggingface import MEAN, STD, hf_model  # noqa: E402

SWIN = {"swin-tiny": {"embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24],
                      "window_size": 7},
        "swin-base": {"embed_dim": 128, "depths": [2, 2, 18, 2], "num_heads": [4, 8, 16, 32],
                      "window_size": 12}}


def hf_swin_model(name: str, num_labels: int = 150, num_queries: int = 100, seed: int = 0):
    """A randomly initialised Hugging Face MaskFormer with the published Swin backbone."""
    from transformers import (
        MaskFormerConfig,
        MaskFormerForInstanceSegmentation,
        MaskFormerSwinConfig,
    )

    from tests.conversion.torch_utils import randomize_

    backbone = MaskFormerSwinConfig(**SWIN[name], drop_path_rate=0.3,
                                    out_features=["stage1", "stage2", "stage3", "stage4"])
    config = MaskFormerConfig(backbone_config=backbone, num_labels=num_labels,
                              num_queries=num_queries)
    config.decoder_config.num_queries = num_queries
    torch.manual_seed(seed)
    model = MaskFormerForInstanceSegmentation(config).eval()
    randomize_(model, seed)
    return model


def interleaved(contenders: dict, runs: int) -> dict[str, float]:
    """Median seconds of each callable, run in turn (a, b, c, a, b, c, ...) after 2 warm-ups."""
    for fn in contenders.values():  # warm-up (tracing, compilation)
        fn()
        fn()
    times = {name: [] for name in contenders}
    for _ in range(runs):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def stage_functions(model, jit_compile: bool):
    """Ours split at the stage boundaries: one tf.function per stage, each fed the previous
    stage's outputs (computed once), each returning its outputs' sum so that nothing is
    skipped."""
    source = model.config.predictor_input()

    def backbone(x):
        return model.backbone(model.normalize(x))

    def pixel_decoder(features):
        return model.pixel_decoder(features, training=False)["mask_features"]

    def predictor(memory):
        return model.predictor(memory, training=False)

    def heads(states, mask_features):
        outs = []
        for hs in states:
            mask_embed = model.predictor.mask_embed(hs)
            outs.append(tf.reduce_sum(model.predictor.class_embed(hs)))
            outs.append(tf.reduce_sum(tf.einsum("bqc,bhwc->bqhw", mask_embed, mask_features)))
        return tf.add_n(outs)

    fns = {name: tf.function(fn, jit_compile=jit_compile)
           for name, fn in [("backbone", backbone), ("pixel decoder", pixel_decoder),
                            ("predictor", predictor), ("heads", heads)]}

    def bound(x):
        features = fns["backbone"](x)
        mask_features = fns["pixel decoder"](features)
        states = fns["predictor"](features[source])
        return {
            "backbone": lambda: fns["backbone"](x)["res5"].numpy(),
            "pixel decoder": lambda: fns["pixel decoder"](features).numpy(),
            "predictor": lambda: fns["predictor"](features[source])[-1].numpy(),
            "heads": lambda: fns["heads"](states, mask_features).numpy(),
        }

    return bound


class TorchStages:
    """Wall time of Hugging Face's backbone, pixel decoder and transformer module inside one
    forward pass, through forward hooks; the heads are the rest."""

    def __init__(self, reference):
        inner = reference.model
        self.modules = {"backbone": inner.pixel_level_module.encoder,
                        "pixel decoder": inner.pixel_level_module.decoder,
                        "predictor": inner.transformer_module}
        self.times = {name: [] for name in [*self.modules, "heads"]}
        self.start = {}
        self.handles = []
        for name, module in self.modules.items():
            self.handles.append(module.register_forward_pre_hook(
                lambda m, i, name=name: self._begin(name)))
            self.handles.append(module.register_forward_hook(
                lambda m, i, o, name=name: self._end(name)))

    def remove(self):
        for handle in self.handles:
            handle.remove()

    def _begin(self, name):
        self.start[name] = time.perf_counter()

    def _end(self, name):
        self.times[name].append(time.perf_counter() - self.start[name])

    def record_total(self, seconds: float):
        self.times["heads"].append(seconds - sum(self.times[n][-1] for n in self.modules))

    def medians(self, skip: int) -> dict[str, float]:
        return {name: statistics.median(t[skip:]) for name, t in self.times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", nargs="+", default=["512x512", "800x1216"])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--profile", nargs="*", default=[], metavar="SIZE",
                        help="sizes to time stage by stage as well")
    parser.add_argument("--backbone", default="r50", choices=["r50", *SWIN])
    args = parser.parse_args()

    reference = (hf_model(num_labels=150, num_queries=100) if args.backbone == "r50"
                 else hf_swin_model(args.backbone))
    print(f"backbone {args.backbone}")
    with tempfile.TemporaryDirectory() as tmp:
        reference.save_pretrained(tmp)
        model, _ = convert_checkpoint("hf", Path(tmp) / "model.safetensors", ExperimentConfig())

    graph = tf.function(lambda x: model(x, training=False))
    xla = tf.function(lambda x: model(x, training=False), jit_compile=True)
    # What `Predictor` runs: XLA, only the last decoder layer's outputs (no aux_outputs).
    inference = make_predict_fn(model)
    print(f"threads: torch {torch.get_num_threads()}, cores {os.cpu_count()}")
    rows, profiles = [], []
    for size in args.sizes:
        h, w = (int(v) for v in size.split("x"))
        images = np.random.default_rng(0).uniform(0, 255, (1, h, w, 3)).astype(np.float32)
        pixel_values = torch.from_numpy(((images - MEAN) / STD).transpose(0, 3, 1, 2).copy())
        x = tf.constant(images)

        def run_torch(pixel_values=pixel_values):
            with torch.no_grad():
                return reference(pixel_values=pixel_values)

        ref_masks = run_torch().masks_queries_logits.numpy()
        err = max_relative_difference(xla(x)["pred_masks"].numpy(), ref_masks)
        medians = interleaved({"torch": run_torch,
                               "graph": lambda x=x: graph(x)["pred_masks"].numpy(),
                               "xla": lambda x=x: xla(x)["pred_masks"].numpy(),
                               "inference": lambda x=x: inference(x)["pred_masks"].numpy()},
                              args.runs)
        rows.append((size, medians["torch"], medians["graph"], medians["xla"],
                     medians["inference"], err))
        if size in args.profile:
            profiles.append((size, profile(model, reference, x, run_torch, args.runs)))

    print("\n| size | HF PyTorch (s) | ours TF graph (s) | ours XLA (s) | ours inference (s) "
          "| graph / PyTorch | XLA / PyTorch | inference / PyTorch | max rel. diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size, t_torch, t_graph, t_xla, t_inf, err in rows:
        print(f"| {size} | {t_torch:.3f} | {t_graph:.3f} | {t_xla:.3f} | {t_inf:.3f} "
              f"| {t_graph / t_torch:.2f} | {t_xla / t_torch:.2f} | {t_inf / t_torch:.2f} "
              f"| {err:.1e} |")
    for size, stages in profiles:
        print(f"\nstages at {size}, median s (ours: one compiled function per stage)")
        print("| stage | HF PyTorch | ours TF graph | ours XLA | graph / PyTorch | XLA / PyTorch |")
        print("|---|---|---|---|---|---|")
        for name, (t_torch, t_graph, t_xla) in stages.items():
            print(f"| {name} | {t_torch:.3f} | {t_graph:.3f} | {t_xla:.3f} "
                  f"| {t_graph / t_torch:.2f} | {t_xla / t_torch:.2f} |")


def profile(model, reference, x, run_torch, runs: int) -> dict[str, tuple[float, float, float]]:
    """Per stage: (PyTorch, TF graph, XLA) medians, all stages of all three interleaved."""
    graph = stage_functions(model, jit_compile=False)(x)
    xla = stage_functions(model, jit_compile=True)(x)
    hooks = TorchStages(reference)

    def torch_total():
        start = time.perf_counter()
        run_torch()
        hooks.record_total(time.perf_counter() - start)

    contenders = {"torch": torch_total}
    for name in graph:
        contenders[f"graph {name}"] = graph[name]
        contenders[f"xla {name}"] = xla[name]
    medians = interleaved(contenders, runs)
    hooks.remove()
    torch_stages = hooks.medians(skip=2)
    table = {name: (torch_stages[name], medians[f"graph {name}"], medians[f"xla {name}"])
             for name in graph}
    table["total"] = (medians["torch"], sum(t[1] for t in table.values()),
                      sum(t[2] for t in table.values()))
    return table

if __name__ == "__main__":
    main()
