"""The training curves: what the figure holds for a log with every term, non-finite steps, a
resumed run's repeated steps and validation metrics."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from maskformer import plots


def _entry(step: int, total: float) -> dict:
    entry = {"step": step, "loss": total, "step_loss": total, "matcher_nonfinite_costs": 0.0,
             "learning_rate": 1e-4 * min(1.0, step / 10)}
    for term, share in (("loss_ce", 0.1), ("loss_mask", 0.01), ("loss_dice", 0.05)):
        entry[term] = share * total
        for layer in range(2):
            entry[f"{term}_{layer}"] = share * total * (2 + layer)
    return entry


def _write(path, entries) -> None:
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))


@pytest.fixture
def logs(tmp_path):
    """A 150-step run, resumed at step 100 after it had logged up to 120 (steps 101-120 are
    logged twice; the second run's values are 1000 + step), with steps 40 (NaN) and 41 (inf),
    and evaluations at steps 50, 100 (twice: the resumed run evaluated it again) and 150."""
    first = [_entry(s, 10.0 / s) for s in range(1, 121)]
    first[39]["loss"], first[40]["loss"] = math.nan, math.inf
    second = [_entry(s, 1000.0 + s) for s in range(101, 151)]
    _write(tmp_path / "train_log.jsonl", first + second)
    evaluations = [{"step": 50, "panoptic/PQ_All": 10.0, "panoptic/PQ_Things": 5.0,
                    "panoptic/PQ_Stuff": 20.0, "semantic/mIoU": 30.0},
                   {"step": 100, "panoptic/PQ_All": 0.0, "semantic/mIoU": 0.0},
                   {"step": 100, "panoptic/PQ_All": 25.0, "panoptic/PQ_Things": 15.0,
                    "panoptic/PQ_Stuff": 40.0, "semantic/mIoU": 45.0},
                   {"step": 150, "panoptic/PQ_All": 35.0, "panoptic/PQ_Things": math.nan,
                    "panoptic/PQ_Stuff": 50.0, "semantic/mIoU": 55.0}]
    _write(tmp_path / "eval_log.jsonl", evaluations)
    return tmp_path / "train_log.jsonl", tmp_path / "eval_log.jsonl"


def _lines(ax) -> dict:
    return {line.get_label(): line for line in ax.get_lines()}


def _axes(figure) -> dict:
    return {ax.get_title() or ax.get_ylabel(): ax for ax in figure.axes}


def test_read_log_keeps_the_last_entry_of_a_step(logs, tmp_path):
    entries = plots.read_log(logs[0])
    assert [e["step"] for e in entries] == list(range(1, 151))
    assert entries[109]["loss"] == 1110.0  # step 110, from the resumed run
    assert plots.read_log(tmp_path / "missing.jsonl") == []
    assert plots.read_log(None) == []
    assert plots.read_log([{"step": 2, "loss": 1}, {"step": 1, "loss": 3},
                           {"step": 2, "loss": 5}]) == [{"step": 1, "loss": 3},
                                                        {"step": 2, "loss": 5}]


def test_moving_average_skips_non_finite_values():
    values = np.array([1.0, np.nan, 3.0, np.inf, 5.0, 7.0])
    mean = plots.moving_average(values, 3)
    # Centred windows [0, 1], [0..2], [1..3], [2..4], [3..5], [4, 5], finite values only.
    np.testing.assert_allclose(mean, [1.0, 2.0, 3.0, 4.0, 6.0, 6.0])
    assert np.isnan(plots.moving_average(np.array([np.nan, np.nan]), 1)).all()
    np.testing.assert_array_equal(plots.moving_average(values[[0, 2]], 1), [1.0, 3.0])


def test_loss_panel_holds_the_total_every_term_and_the_learning_rate(logs, tmp_path):
    out = tmp_path / "curve.png"
    figure = plots.plot_training(logs[0], out, metrics=logs[1], title="a run")
    assert Image.open(out).size == (1000, 720)
    axes = _axes(figure)
    loss = axes["training loss"]
    assert loss.get_yscale() == "log"
    assert loss.get_xlabel() == "" and axes["validation"].get_xlabel() == "step"
    lines = _lines(loss)
    window = plots.smoothing_window(150)
    assert window == 3
    expected = {"total (per step)", f"total (mean of {window} steps)",
                "total not finite (2 steps)"}
    for name in plots.TERMS.values():
        expected |= {f"{name}, last layer", f"{name}, mean of 2 auxiliary layers"}
    assert set(lines) == expected

    raw = lines["total (per step)"]
    np.testing.assert_array_equal(raw.get_xdata(), np.arange(1, 151))
    y = np.asarray(raw.get_ydata(), float)
    assert np.isnan(y[39]) and np.isnan(y[40])  # the line breaks at the NaN and inf steps
    assert y[109] == 1110.0 and y[0] == 10.0  # a repeated step: the resumed run's value
    np.testing.assert_array_equal(lines["total not finite (2 steps)"].get_xdata(), [40, 41])

    # Terms are smoothed: at step 2 the window is steps 1-3.
    dice = np.asarray(lines["mask (dice), last layer"].get_ydata(), float)
    assert dice[1] == pytest.approx(0.05 * (10 + 5 + 10 / 3) / 3)
    auxiliary = np.asarray(lines["mask (dice), mean of 2 auxiliary layers"].get_ydata(), float)
    assert auxiliary[1] == pytest.approx(2.5 * dice[1])  # the mean of 2x and 3x the last layer

    rate = _lines(axes["learning rate"])["learning rate (right axis)"]
    assert rate.get_ydata()[0] == pytest.approx(1e-5)
    legend = [t.get_text() for t in loss.get_legend().get_texts()]
    assert "learning rate (right axis)" in legend and len(legend) == len(expected) + 1
    assert figure.get_suptitle() == "a run"


def test_metric_panel_shows_each_evaluation_once(logs):
    figure = plots.plot_training(logs[0], metrics=logs[1])
    metric = _axes(figure)["validation"]
    assert metric.get_ylim() == (-2, 102) and list(metric.get_yticks()) == [0, 20, 40, 60, 80, 100]
    lines = _lines(metric)
    assert set(lines) == {"PQ (last 35.0)", "PQ things (last 15.0)", "PQ stuff (last 50.0)",
                          "mIoU (last 55.0)"}
    np.testing.assert_array_equal(lines["PQ (last 35.0)"].get_xdata(), [50, 100, 150])
    np.testing.assert_array_equal(lines["mIoU (last 55.0)"].get_ydata(), [30, 45, 55])
    assert np.isnan(lines["PQ things (last 15.0)"].get_ydata()[-1])


def test_no_metric_panel_without_evaluations(logs, tmp_path):
    for metrics in (None, tmp_path / "missing.jsonl", [{"step": 5, "panoptic/PQ_All": math.nan}]):
        figure = plots.plot_training(logs[0], tmp_path / "curve.png", metrics=metrics)
        assert sorted(_axes(figure)) == ["learning rate", "training loss"]
        assert _axes(figure)["training loss"].get_xlabel() == "step"
    assert Image.open(tmp_path / "curve.png").size == (1000, 480)


def test_a_single_step_and_an_empty_log(tmp_path):
    figure = plots.plot_training([_entry(1, 4.0)], tmp_path / "one.png")
    loss = _axes(figure)["training loss"]
    total = _lines(loss)["total (per step)"]
    assert list(total.get_ydata()) == [4.0] and total.get_marker() == "o"  # a visible point
    assert loss.get_xlim() == (0, 2)
    figure = plots.plot_training([], tmp_path / "empty.png")
    assert "no steps logged" in [t.get_text() for t in figure.axes[0].texts]
    assert (tmp_path / "empty.png").stat().st_size > 0


def test_a_log_without_auxiliary_terms_or_learning_rate(tmp_path):
    entries = [{"step": s, "loss": 5.0 / s, "loss_ce": 1.0 / s, "loss_mask": 0.1 / s,
                "loss_dice": 0.5 / s} for s in range(1, 6)]
    figure = plots.plot_training(entries, tmp_path / "curve.png")
    assert len(figure.axes) == 1
    assert set(_lines(figure.axes[0])) == {"total (per step)", "class (cross-entropy), last layer",
                                           "mask (focal), last layer", "mask (dice), last layer"}
