"""Training with Keras fit: optimizer recipe, strategies, checkpoints."""
