"""Writing evaluation results: JSON files and text tables."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _clean(value: Any) -> Any:
    """NaN/inf -> None and NumPy scalars -> Python numbers, so the JSON is standard."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_results_json(path: str | Path, results: Mapping[str, Any]) -> None:
    """Writes `results` (e.g. {"panoptic": ..., "semantic": ..., "instance": ...}) as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(results), indent=2, sort_keys=False) + "\n")


def format_table(evaluators: Mapping[str, Any], per_class: bool = False) -> str:
    """One text block with each evaluator's table under its name."""
    blocks = []
    for name, evaluator in evaluators.items():
        blocks.append(f"== {name} ==\n{evaluator.format_table(per_class=per_class)}")
    return "\n\n".join(blocks)
