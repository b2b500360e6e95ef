"""Dataset-level metrics: panoptic quality, semantic mIoU, COCO mask AP."""

from maskformer.evaluation.instance import InstanceAP
from maskformer.evaluation.panoptic_quality import PanopticQuality
from maskformer.evaluation.report import format_table, write_results_json
from maskformer.evaluation.semantic import SemanticSegmentationMetrics

__all__ = [
    "InstanceAP",
    "PanopticQuality",
    "SemanticSegmentationMetrics",
    "format_table",
    "write_results_json",
]
