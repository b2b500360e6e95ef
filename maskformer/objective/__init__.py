"""The training objective: in-graph Hungarian matching and the set criterion (keras.ops)."""
