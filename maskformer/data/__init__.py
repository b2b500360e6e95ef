"""Datasets: converters to TFRecords, the synthetic shapes dataset and the tf.data pipeline."""
