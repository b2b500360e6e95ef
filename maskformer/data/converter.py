"""The conversion loop shared by the dataset converters: worker processes, bad-input reports,
deterministic sharded output and a summary.

A converter supplies a list of picklable tasks (one per image, in a deterministic order) and a
module-level function that turns one task into a `records.Sample` or raises `BadInput`. The
loop runs the function in worker processes (`multiprocessing.Pool.imap`, which keeps the input
order), serialises and writes the samples in the main process, and renames the shards into
place only when the run completes.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maskformer.data.records import DataError, Sample, ShardedWriter, serialize_sample


class BadInput(Exception):
    """One input image cannot be converted.

    Attributes:
      kind: a short stable name of the problem (the key of the summary counts), one of
        "missing image", "corrupt image", "missing mask", "corrupt mask", "missing label",
        "corrupt label", "size mismatch", "segment not in annotation", "segment not in mask",
        "unknown category", "missing annotation", "unknown image" (an annotation whose image
        id is not among the images), "corrupt annotation" (a malformed COCO segmentation).
      path: the file concerned.
      reason: a sentence for the user.
    """

    def __init__(self, kind: str, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.kind = kind
        self.path = str(path)
        self.reason = reason

    def __reduce__(self):
        # Workers send it back pickled; the default would call BadInput(message) and the pool's
        # result thread would die on the missing arguments (and the run would hang).
        return type(self), (self.kind, self.path, self.reason)


def record_image_ids(images: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]],
                                                                 dict[Any, int], dict[str, Any]]:
    """The images of a COCO-style file in record order, with the integer id each record gets.

    Records hold an int64 image id. COCO's own files use integers; the panoptic and instance
    exports of Cityscapes and ADE20K (detectron2's and Mask2Former's scripts) use the file stem,
    a string. When every id is an integer (or a string of one), records keep it and the images
    go in ascending id order; otherwise they go in the ids' string order and are numbered
    1..N, and the third value, ``{"1": "frankfurt_000000_000294", ...}``, records the original
    ids (converters put it in dataset.json as the split's ``image_ids``).

    Returns:
      (images in order, original id -> record id, record id -> original id or {} when kept).
    """
    def as_int(value: Any) -> int | None:
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        return None

    number = {image["id"]: as_int(image["id"]) for image in images}
    if all(n is not None for n in number.values()):
        return sorted(images, key=lambda image: number[image["id"]]), number, {}
    ordered = sorted(images, key=lambda image: str(image["id"]))
    ids = {image["id"]: i for i, image in enumerate(ordered, start=1)}
    return ordered, ids, {str(i): original for original, i in ids.items()}


@dataclass
class ConversionReport:
    """What a conversion did."""

    written: int = 0
    skipped: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    shards: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"wrote {self.written} records to {len(self.shards)} shard(s)"]
        total = sum(self.skipped.values())
        lines.append(f"skipped {total} image(s)" + (":" if total else ""))
        for kind, count in sorted(self.skipped.items()):
            lines.append(f"  {kind}: {count}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {"num_records": self.written, "skipped": dict(self.skipped),
                "shards": [p.name for p in self.shards]}


def _call(fn_and_task):
    fn, task = fn_and_task
    try:
        return fn(task)
    except BadInput as e:
        return e


def run_conversion(tasks: Sequence[Any], fn: Callable[[Any], Sample], prefix: str | Path,
                   num_shards: int = 1, num_workers: int = 1, strict: bool = False,
                   description: str = "converting", progress: bool = True,
                   log: Callable[[str], None] | None = None) -> ConversionReport:
    """Converts `tasks` with `fn` into sharded TFRecords at `prefix`.

    Args:
      tasks: one picklable item per image, in the order that fixes the shard assignment.
      fn: module-level function task -> `Sample`; raises `BadInput` for bad input.
      prefix: output prefix; shards are ``PREFIX-0000i-of-0000n.tfrecord``.
      num_shards, num_workers: output files and worker processes (1 = in this process).
      strict: stop at the first bad input (raising `DataError`) instead of skipping it.
      progress: show a tqdm progress bar.
      log: where problem reports go (default: printed above the progress bar, to stderr).

    Returns:
      A `ConversionReport`. Nothing is renamed into place unless the run completes.
    """
    from tqdm import tqdm

    if num_workers < 1:
        raise DataError(f"--workers must be at least 1, got {num_workers}")
    report = ConversionReport()
    log = log or (lambda line: tqdm.write(line, file=sys.stderr))
    items = [(fn, t) for t in tasks]
    pool = None
    if num_workers > 1 and len(items) > 1:
        # Workers use only numpy and PIL (never TensorFlow), so forking a process that has
        # TensorFlow loaded is safe, and unlike "spawn" it does not re-import the caller's script.
        methods = multiprocessing.get_all_start_methods()
        pool = multiprocessing.get_context("fork" if "fork" in methods else "spawn").Pool(
            num_workers)
        results = pool.imap(_call, items, chunksize=4)
    else:
        results = map(_call, items)
    try:
        with ShardedWriter(prefix, num_shards) as writer:
            for result in tqdm(results, total=len(items), desc=description, unit="img",
                               disable=not progress, file=sys.stderr):
                if isinstance(result, BadInput):
                    message = f"{result.path}: {result.reason}"
                    if strict:
                        raise DataError(message + " (--strict)")
                    report.skipped[result.kind] += 1
                    report.problems.append(message)
                    log(f"skipped {message}")
                    continue
                writer.write(serialize_sample(result))
                report.written += 1
            report.shards = writer.commit()
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return report
