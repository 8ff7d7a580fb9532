"""Moved to `edgesparse.train.metrics`; these names stay until build_api imports from there."""
from edgesparse.train.metrics import accuracy, keras_metrics, predict

measure_model = keras_metrics

__all__ = ["accuracy", "keras_metrics", "measure_model", "predict"]
