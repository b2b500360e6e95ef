"""`maskformer demo`: the whole path on the built-in shapes dataset, on a laptop CPU.

Generates the synthetic dataset, converts it to TFRecords, trains a small MaskFormer (or
Mask2Former: `--experiment mask2former_demo`), evaluates it (PQ, mIoU) and writes a folder with
the metrics, a loss curve, prediction overlays and a short report that also shows both
architectures' measured runs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from maskformer.config import apply_overrides, load_yaml
from maskformer.experiments import get_experiment


def _read_log(path: Path) -> list[dict[str, float]]:
    """A JSON-lines log by step; a step logged again (by a resumed run) keeps its last entry."""
    if not path.exists():
        return []
    entries = {}
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        entries[entry["step"]] = entry
    return [entries[step] for step in sorted(entries)]


def run_demo(out_dir: str | Path = "maskformer-demo", num_train: int = 512, num_val: int = 64,
             image_size: int = 96, steps: int | None = None, overrides: list[str] = (),
             seed: int = 0, verbose: int = 1, experiment: str = "mask2former_demo",
             config_file: str | Path | None = None) -> dict[str, Any]:
    """Runs the demo end to end and returns its metrics (also written to OUT/metrics.json).

    The experiment (default `mask2former_demo`; `maskformer_demo` is MaskFormer's) gets the generated data's paths, then
    `config_file` (YAML) and `overrides` (KEY=VALUE) are applied.
    """
    from maskformer.data import coco_panoptic, shapes
    from maskformer.evaluation.evaluator import print_results, write_results
    from maskformer.inference import evaluate
    from maskformer.plots import plot_training
    from maskformer.training.trainer import train
    from maskformer.visualize import save_overlays

    out = Path(out_dir)
    data_dir = out / "data"
    # The configuration first: a bad override fails before any data is generated.
    config = get_experiment(experiment)
    config.data.train_files = str(data_dir / "records" / "train-*.tfrecord")
    config.data.val_files = str(data_dir / "records" / "val-*.tfrecord")
    config.data.dataset_info = str(data_dir / "records" / "dataset.json")
    config.train.seed = seed
    if steps is not None:
        config.train.steps = steps
    if config_file:
        load_yaml(config, config_file)
    apply_overrides(config, list(overrides))
    config.validate()

    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    timings: dict[str, float] = {}

    print(f"[1/4] generating the shapes dataset in {data_dir}")
    paths = shapes.generate(data_dir, num_train, num_val, image_size, seed)
    for split, p in paths.items():
        report = coco_panoptic.convert(p.images, p.annotations, p.masks,
                                       data_dir / "records" / split, strict=True)
        print(f"      {split}: {report.summary()}")
    timings["data_s"] = time.perf_counter() - start

    print(f"[2/4] training {config.name} for {config.train.steps} steps "
          f"(batch {config.train.global_batch_size}, {image_size}x{image_size} images)")
    t0 = time.perf_counter()
    result = train(config, out / "model", verbose=verbose,
                   steps_per_epoch=max(config.train.steps // 10, 1))
    timings["train_s"] = time.perf_counter() - t0
    # From the log rather than this run's steps: a demo interrupted and run again resumes, and
    # its curve still starts at step 1.
    history = _read_log(out / "model" / "train_log.jsonl")
    plot_training(history, out / "loss_curve.png", metrics=out / "model" / "eval_log.jsonl")
    (out / "history.json").write_text(json.dumps(history))
    curve = _read_log(out / "model" / "eval_log.jsonl")

    print("[3/4] evaluating on the validation split")
    t0 = time.perf_counter()
    network = result["trainer"].network
    results = evaluate(network, config)
    timings["evaluate_s"] = time.perf_counter() - t0
    print_results(results)

    print("[4/4] writing predictions and the report")
    overlays = save_overlays(network, config, out / "predictions", count=8)
    timings["total_s"] = time.perf_counter() - start
    results["timings"] = timings
    results["steps"] = result["step"]
    write_results(results, out / "metrics.json")
    _write_report(out, config, results, curve, overlays)
    pq = results["panoptic"]["All"]["PQ"] if "panoptic" in results else float("nan")
    print(f"done in {timings['total_s'] / 60:.1f} min: PQ {pq:.1f} on {results['num_images']} "
          f"validation images; see {out / 'report.md'}")
    return results


# Both demo experiments on the default data (seed 0, 512 training and 64 validation images of
# 96 px), each run once on the 2-core development CPU: docs/benchmarks.md ("The demo: MaskFormer
# against Mask2Former") has the commands, the machines' load and the threshold sweep.
REFERENCE_RUNS = (
    # experiment, steps, PQ All / Things / Stuff at its eval.object_mask_threshold, minutes
    ("mask2former_demo", 4000, 0.3, (53.2, 24.1, 96.8), "7.3-12.4"),
    ("maskformer_demo", 5000, 0.8, (47.1, 14.7, 95.8), "6.6-13.3"),
)


def _architecture_name(config) -> str:
    return "Mask2Former" if config.model.architecture == "mask2former" else "MaskFormer"


def _reference_lines(config) -> list[str]:
    lines = [
        "Both architectures on the default data (measured runs, docs/benchmarks.md):",
        "",
        "| experiment | steps | threshold | PQ All / Things / Stuff | minutes |",
        "|---|---|---|---|---|",
    ]
    for name, steps, threshold, (pq, things, stuff), minutes in REFERENCE_RUNS:
        mark = " (this experiment)" if name == config.name else ""
        lines.append(f"| `{name}`{mark} | {steps} | {threshold} | {pq} / {things} / {stuff} | "
                     f"{minutes} |")
    return [*lines, ""]


def _write_report(out: Path, config, results, curve, overlays) -> None:
    pq = results.get("panoptic", {})
    sem = results.get("semantic", {})
    t = results["timings"]
    lines = [
        f"# {_architecture_name(config)} demo on the shapes dataset",
        "",
        f"Experiment `{config.name}`: {config.model.pixel_decoder} pixel decoder, "
        f"{config.model.num_queries} queries, {config.train.steps} steps of batch "
        f"{config.train.global_batch_size}; panoptic threshold "
        f"{config.eval.object_mask_threshold}.",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for group in ("All", "Things", "Stuff"):
        if group in pq:
            r = pq[group]
            lines.append(f"| PQ / SQ / RQ ({group}) | {r['PQ']:.1f} / {r['SQ']:.1f} / "
                         f"{r['RQ']:.1f} |")
    if sem:
        lines.append(f"| mIoU | {sem.get('mIoU', float('nan')):.1f} |")
    lines += [
        f"| validation images | {results['num_images']} |",
        f"| time: data / train / evaluate / total (s) | {t['data_s']:.0f} / {t['train_s']:.0f}"
        f" / {t['evaluate_s']:.0f} / {t['total_s']:.0f} |",
        "",
        "![loss curve](loss_curve.png)",
        "",
        *_reference_lines(config),
    ]
    if curve:
        lines += [
            f"Validation during training (every {config.train.eval_every} steps):",
            "",
            "| step | PQ | PQ things | PQ stuff | mIoU |",
            "|---|---|---|---|---|",
        ]
        lines += [f"| {e['step']} | {e.get('panoptic/PQ_All', float('nan')):.1f} | "
                  f"{e.get('panoptic/PQ_Things', float('nan')):.1f} | "
                  f"{e.get('panoptic/PQ_Stuff', float('nan')):.1f} | "
                  f"{e.get('semantic/mIoU', float('nan')):.1f} |" for e in curve]
        lines.append("")
    lines += [
        "Predictions on validation images (left: image, middle: ground truth, right: "
        "prediction):",
        "",
    ]
    lines += [f"![{p.name}](predictions/{p.name})" for p in overlays]
    lines += ["", "Files: `metrics.json` (all metrics, per class), `history.json` (per-step "
              "losses), `model/` (config, checkpoints, final weights).", ""]
    (out / "report.md").write_text("\n".join(lines))
