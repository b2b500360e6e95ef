"""What training prints: one short progress line (step, mean loss, learning rate, speed, ETA)
whose speed and ETA leave the first step's compilation out; the loss terms go to the JSON log
(and TensorBoard, tests/training/test_summaries.py), not to the line."""

import io
import json
import re

import pytest

from maskformer.config import apply_overrides
from maskformer.experiments import get_experiment
from maskformer.training.optimizer import LearningRateSchedule
from maskformer.training.progress import TrainingProgress, format_duration
from maskformer.training.trainer import train
from tests.training.conftest import smoke_overrides

# The 12 terms of a model with 4 decoder layers' deep supervision, and the totals.
TERMS = ["loss_ce", "loss_mask", "loss_dice"] + [
    f"loss_{kind}_{i}" for i in range(3) for kind in ("ce", "mask", "dice")]


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Optimizer:
    def __init__(self, iterations):
        self.iterations = iterations


class Model:
    """What the callback reads of the trainer: the optimizer's iterations."""

    def __init__(self, step=0):
        self.optimizer = Optimizer(step)


def _logs(loss):
    return {"loss": loss, "step_loss": loss, **{name: 0.5 for name in TERMS},
            "matcher_nonfinite_costs": 0.0}


def _run(progress, clock, steps, first=60.0, each=0.1, start=0, losses=None):
    """`steps` steps: the first takes `first` s (compilation), every other one `each` s."""
    progress.set_model(Model(start))
    progress.on_train_begin()
    for i in range(steps):
        clock.now += first if i == 0 else each
        progress.on_train_batch_end(i, _logs(losses[i] if losses else 2.0))
    progress.on_train_end()


def _schedule(**kwargs):
    return LearningRateSchedule(1e-4, 1000, **kwargs)


def test_eta_leaves_the_first_step_out():
    clock, out = Clock(), io.StringIO()
    progress = TrainingProgress(1000, _schedule(), stream=out, live=False, interval=1e9,
                                clock=clock)
    _run(progress, clock, steps=101)
    # After the 60 s first step, 100 steps in 10 s: 10 steps/s, 899 steps left in 89.9 s.
    assert progress.steps_per_second(clock.now) == pytest.approx(10.0)
    lines = out.getvalue().splitlines()
    assert "compiled in 60.0 s" in lines[0] and lines[0].startswith("step 1/1000 ")
    assert "ETA --" in lines[0]
    assert lines[-1].startswith("step 101/1000 ")
    assert "10.00 steps/s" in lines[-1] and f"ETA {format_duration(89.9)}" in lines[-1]
    assert format_duration(89.9) == "0:01:30"


def test_the_line_is_short_and_holds_no_terms():
    clock, out = Clock(), io.StringIO()
    progress = TrainingProgress(123456, _schedule(warmup_steps=10), stream=out, live=False,
                                interval=0.0, clock=clock)
    _run(progress, clock, steps=30, losses=[float(i) for i in range(30)], start=100000)
    lines = out.getvalue().splitlines()
    last = lines[-1]
    # The global step counts on from the restored one; the loss is the mean of the last 20.
    assert last == ("step 100030/123456  loss 19.50 (20-step mean)  lr 1.00e-04  "
                    "10.00 steps/s  ETA 0:39:03")
    for line in lines:
        assert len(line) < 100, line
        assert not any(name in line for name in TERMS + ["matcher", "step_loss"]), line
    # During warm-up the rate is that of the step just taken (the schedule at step - 1).
    clock, out = Clock(), io.StringIO()
    progress = TrainingProgress(1000, _schedule(warmup_steps=10), stream=out, live=False,
                                interval=0.0, clock=clock)
    _run(progress, clock, steps=2)
    assert "lr 1.00e-05" in out.getvalue().splitlines()[0]
    assert "lr 2.00e-05" in out.getvalue().splitlines()[1]


def test_a_resumed_run_measures_its_own_steps():
    clock, out = Clock(), io.StringIO()
    progress = TrainingProgress(600, stream=out, live=False, interval=1e9, clock=clock)
    # Resumed at step 500: the first step compiles (30 s), then 2 s a step.
    _run(progress, clock, steps=51, first=30.0, each=2.0, start=500)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("step 501/600 ") and "compiled in 30.0 s" in lines[0]
    assert lines[-1].startswith("step 551/600 ")
    assert "2.0 s/step" in lines[-1] and "ETA 0:01:38" in lines[-1]
    assert "lr" not in lines[-1]  # no schedule given


def test_plain_output_prints_a_bounded_number_of_lines():
    clock, out = Clock(), io.StringIO()  # a StringIO is no terminal: plain lines
    progress = TrainingProgress(5000, _schedule(), stream=out, clock=clock)
    _run(progress, clock, steps=5000)
    lines = out.getvalue().splitlines()
    # 60 s + 500 s: the first step, a line every 30 s, the last step.
    assert 16 <= len(lines) <= 20, lines
    assert "\r" not in out.getvalue()
    assert lines[-1].startswith("step 5000/5000 ") and "ETA 0:00:00" in lines[-1]


def test_the_evaluation_steps_get_a_line():
    clock, out = Clock(), io.StringIO()
    progress = TrainingProgress(100, stream=out, live=False, interval=1e9, show_every=25,
                                clock=clock)
    _run(progress, clock, steps=100)
    steps = [int(re.match(r"step (\d+)/", line)[1]) for line in out.getvalue().splitlines()]
    assert steps == [1, 25, 50, 75, 100]
    # On a terminal those lines are ended (the evaluation prints below), the others redrawn.
    clock, out = Clock(), io.StringIO()
    progress = TrainingProgress(100, stream=out, live=True, show_every=25, clock=clock)
    _run(progress, clock, steps=100)
    kept = [line.rsplit("\r", 1)[-1] for line in out.getvalue().split("\n")[:-1]]
    assert [int(re.match(r"step (\d+)/", line)[1]) for line in kept] == [1, 25, 50, 75, 100]
    assert out.getvalue().endswith("\n") and not out.getvalue().endswith("\n\n")


def test_on_a_terminal_the_line_is_redrawn_in_place():
    clock, out = Clock(), io.StringIO()
    progress = TrainingProgress(1000, _schedule(), stream=out, live=True, clock=clock)
    _run(progress, clock, steps=100, losses=[1000.0] * 30 + [1.0] * 70)
    text = out.getvalue()
    # The first step's line stays; after it, one line redrawn at most every 0.5 s (10 s of
    # steps), ended once at the end of training.
    first, rest = text.split("\n", 1)
    assert first.startswith("\rstep 1/1000 ") and "compiled in" in first
    assert rest.endswith("\n") and rest.count("\n") == 1
    draws = rest.rstrip("\n").split("\r")[1:]
    assert 15 <= len(draws) <= 21
    # A shorter line blanks out what is left of a longer one drawn before.
    widths = [len(d) for d in draws]
    assert widths == sorted(widths)
    assert draws[-1].startswith("step 100/1000  loss 1.000 (20-step mean)")


def test_an_interrupted_line_is_ended():
    clock, out = Clock(), io.StringIO()
    progress = TrainingProgress(1000, stream=out, live=True, clock=clock)
    progress.set_model(Model())
    progress.on_train_begin()
    for i in range(5):
        clock.now += 1.0
        progress.on_train_batch_end(i, _logs(2.0))
    assert not out.getvalue().endswith("\n")
    progress.close()  # what train() does when fit raises (KeyboardInterrupt)
    assert out.getvalue().endswith("\n")
    progress.close()
    assert not out.getvalue().endswith("\n\n")


def test_a_real_run_logs_every_term_and_prints_the_line(tmp_path, shapes_records, capsys):
    config = apply_overrides(get_experiment("maskformer_smoke"), smoke_overrides(
        shapes_records, **{"loss.matcher": "scipy", "train.checkpoint_every": 0}))
    result = train(config, tmp_path, steps=3, verbose=2)
    printed = capsys.readouterr().out
    lines = [line for line in printed.splitlines() if line.startswith("step ")]
    assert lines[0].startswith("step 1/3  loss ") and "compiled in" in lines[0]
    assert re.fullmatch(r"step 3/3  loss \S+ \(3-step mean\)  lr 1\.00e-04  "
                        r"\S+ (steps/s|s/step)  ETA 0:00:00", lines[-1]), lines[-1]
    assert len(lines) <= 3 and all(len(line) < 100 for line in lines)
    assert "loss_ce" not in printed and "Epoch" not in printed
    # Every term and the learning rate of every step are in the JSON log.
    logged = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text()
              .splitlines()]
    assert [entry["step"] for entry in logged] == [1, 2, 3]
    terms = set(result["trainer"].term_trackers)
    assert {"loss_ce", "loss_mask", "loss_dice", "loss_ce_0", "loss_dice_1",
            "matcher_nonfinite_costs"} <= terms
    for entry in logged:
        assert terms | {"step", "loss", "step_loss", "learning_rate"} <= set(entry)
        assert entry["learning_rate"] == pytest.approx(config.train.learning_rate)
