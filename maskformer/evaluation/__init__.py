"""Dataset-level metrics: panoptic quality, mIoU, mask AP."""
