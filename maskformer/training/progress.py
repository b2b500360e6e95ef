"""What training prints while it runs: one short progress line in place of Keras' bar.

The line holds the global step, the total loss (its mean over the last `window` steps), the
learning rate, the speed and the time left:

    step 1200/5000  loss 12.31 (20-step mean)  lr 1.00e-04  2.41 steps/s  ETA 0:26:17

The loss terms stay out of it; they go to the JSON log and TensorBoard (`History`,
`ScalarSummaries`). The first step of a run compiles the training step, which can take minutes,
so it is reported once on its own ("compiled in 61.2 s") and the speed and the ETA are measured
from the end of that step on: from the step the run started at, which after a resume is the
restored one.
"""

from __future__ import annotations

import collections
import math
import shutil
import sys
import time
from collections.abc import Callable
from typing import TextIO

import keras

from maskformer.training.summaries import StepCallback

# Seconds between two progress lines: redrawn in place on a terminal, a new line otherwise
# (a log file or CI output gets a handful of lines, not one per step).
LIVE_INTERVAL = 0.5
PLAIN_INTERVAL = 30.0


def format_duration(seconds: float) -> str:
    """H:MM:SS ("0:26:17", "27:03:09")."""
    seconds = max(int(round(seconds)), 0)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def format_speed(steps_per_second: float) -> str:
    """The speed as "2.41 steps/s", or as "4.3 s/step" below one step a second."""
    if steps_per_second >= 1.0:
        return f"{steps_per_second:.2f} steps/s"
    return f"{1.0 / steps_per_second:.1f} s/step"


class TrainingProgress(StepCallback):
    """Prints the progress of `fit`: a line redrawn in place on a terminal, or plain lines
    every `interval` seconds when the output is a file or a pipe.

    Args:
        total_steps: the step training ends at (global, as the optimizer counts).
        schedule: the learning-rate schedule (`build_schedule`); the line shows the rate of the
            step just taken. It is read from the schedule, not the optimizer, so that under JAX
            the optimizer's state need not be synced to the variables.
        stream: where to write (default: `sys.stdout` at the time of writing).
        live: redraw one line in place; default: whether `stream` is a terminal.
        interval: seconds between two lines (default `LIVE_INTERVAL` or `PLAIN_INTERVAL`).
        show_every: also show the line at every multiple of this many steps, and end it (the
            periodic evaluation's steps: its result is printed below its step's line); 0: never.
        window: the loss shown is the mean of the last `window` steps' totals.
        clock: the time in seconds (`time.monotonic`; tests pass a fake one).
    """

    def __init__(self, total_steps: int, schedule=None, stream: TextIO | None = None,
                 live: bool | None = None, interval: float | None = None, show_every: int = 0,
                 window: int = 20, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.total_steps = total_steps
        self.schedule = schedule
        self.stream = stream
        self.live = live
        self.interval = interval
        self.show_every = show_every
        self.window = window
        self.clock = clock
        self.losses: collections.deque[float] = collections.deque(maxlen=max(window, 1))
        self.started = self.first_done = self.last_shown = None
        self.first_step = 0  # the global step at the end of this run's first step
        self.shown_step = None  # the step of the last line shown
        self.pending = False  # a live line is on screen without its newline
        self.drawn = 0  # characters of that line

    def _stream(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stdout

    def _is_live(self) -> bool:
        if self.live is None:
            isatty = getattr(self._stream(), "isatty", None)
            self.live = bool(isatty and isatty())
        return self.live

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.started = self.clock()
        self.first_done = self.last_shown = None
        self.losses.clear()

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        loss = (logs or {}).get("loss")
        if loss is not None:
            self.losses.append(float(loss))
        now = self.clock()
        if self.first_done is None:
            self.first_done, self.first_step = now, self.step
            self.show(now, note=f"compiled in {now - self.started:.1f} s", newline=True)
            return
        interval = self.interval
        if interval is None:
            interval = LIVE_INTERVAL if self._is_live() else PLAIN_INTERVAL
        if self.show_every > 0 and self.step % self.show_every == 0:
            # The line stays on screen, and what the evaluation prints goes below it.
            self.show(now, newline=True)
        elif now - self.last_shown >= interval or self.step >= self.total_steps:
            self.show(now)

    def on_train_end(self, logs=None):
        if self.first_done is not None and self.shown_step != self.step:
            self.show(self.clock())
        self.close()

    def close(self) -> None:
        """Ends a line left open on the terminal (also when training is interrupted)."""
        if self.pending:
            self._stream().write("\n")
            self._stream().flush()
            self.pending, self.drawn = False, 0

    def steps_per_second(self, now: float) -> float | None:
        """The speed since the end of this run's first step (None before a second step)."""
        steps, seconds = self.step - self.first_step, now - self.first_done
        return steps / seconds if steps > 0 and seconds > 0 else None

    def learning_rate(self) -> float | None:
        if self.schedule is None:
            return None
        return float(keras.ops.convert_to_numpy(self.schedule(self.step - 1)))

    def line(self, now: float) -> str:
        """The progress line: step, mean loss, learning rate, speed, ETA."""
        parts = [f"step {self.step}/{self.total_steps}"]
        if self.losses:
            mean = math.fsum(self.losses) / len(self.losses)
            # Four significant digits, trailing zeros kept: 2.300, 65.76, 1234.
            parts.append(f"loss {f'{mean:#.4g}'.rstrip('.')} ({len(self.losses)}-step mean)")
        lr = self.learning_rate()
        if lr is not None:
            parts.append(f"lr {lr:.2e}")
        speed = self.steps_per_second(now)
        if speed is None:
            parts.append("ETA --")
        else:
            left = max(self.total_steps - self.step, 0) / speed
            parts += [format_speed(speed), f"ETA {format_duration(left)}"]
        return "  ".join(parts)

    def show(self, now: float, note: str = "", newline: bool = False) -> None:
        text = self.line(now) + (f"  ({note})" if note else "")
        stream = self._stream()
        if self._is_live():
            width = shutil.get_terminal_size().columns - 1
            # \r and spaces rather than a terminal escape: the longer line drawn before is
            # overwritten wherever the text is shorter.
            stream.write("\r" + text[:width].ljust(min(self.drawn, width)))
            self.drawn, self.pending = len(text[:width]), True
            if newline:
                self.close()
        else:
            stream.write(text + "\n")
        stream.flush()
        self.last_shown, self.shown_step = now, self.step
