"""Conversion of PyTorch checkpoints (detectron2 and Hugging Face) into the Keras model."""
