"""Keras 3 layers of MaskFormer, written with keras.ops only (TensorFlow and JAX backends)."""
