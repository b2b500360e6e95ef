"""`maskformer demo` end to end at a tiny size: data, training, evaluation, report; and a
second run in the same folder resumes instead of starting over."""

import json

import pytest
from PIL import Image

from maskformer.cli import main


# The default experiment (Mask2Former's demo) and MaskFormer's.
@pytest.mark.parametrize(("experiment", "architecture"), [
    ([], "Mask2Former"), (["--experiment", "maskformer_demo"], "MaskFormer")])
def test_demo_writes_metrics_curves_predictions_and_report(tmp_path, capsys, experiment,
                                                            architecture):
    out = tmp_path / "demo"
    args = ["demo", *experiment, "--out", str(out), "--num-train", "8", "--num-val", "4",
            "--size", "64",
            "--steps", "4", "--set", "loss.matcher=scipy", "train.eval_every=2",
            "data.output_size=[64, 64]", "data.eval_output_size=[64, 64]",
            "data.eval_map_size=[64, 64]", "data.eval_short_edge=64", "eval.batch_size=4"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "PQ" in printed and "mIoU" in printed

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == 4 and metrics["steps"] == 4
    assert 0 <= metrics["panoptic"]["All"]["PQ"] <= 100
    assert set(metrics["panoptic"]["per_class"]) == {"circle", "square", "triangle", "sky",
                                                      "ground"}
    assert Image.open(out / "loss_curve.png").size == (1000, 720)  # with the metric panel
    pictures = sorted((out / "predictions").glob("*.png"))
    assert len(pictures) == 4  # every validation image (at most 8)
    # image | ground truth | prediction, 64 px upscaled 6x (to at least 384), titles above
    width, height = Image.open(pictures[0]).size
    assert width == 3 * 6 * 64 + 2 * 8 and height > 6 * 64
    report = (out / "report.md").read_text()
    assert report.splitlines()[0] == f"# {architecture} demo on the shapes dataset"
    assert "| PQ / SQ / RQ (All) |" in report and "![loss curve](loss_curve.png)" in report
    # The learning curve: the validation PQ at steps 2 and 4, the last one the final model's.
    assert "| 2 |" in report and "| 4 |" in report
    final = [line for line in report.splitlines() if line.startswith("| 4 |")][0]
    assert f"| 4 | {metrics['panoptic']['All']['PQ']:.1f} |" in final
    history = json.loads((out / "history.json").read_text())
    assert [h["step"] for h in history] == [1, 2, 3, 4]

    # Run again: the model is complete, nothing is trained twice, the report is rewritten.
    # (The resume code does not depend on the architecture: once, for the default demo.)
    if experiment:
        return
    assert main(args) == 0
    assert "resumed from" in capsys.readouterr().out
    assert [h["step"] for h in json.loads((out / "history.json").read_text())] == [1, 2, 3, 4]
