"""Everything that needs TensorFlow: architectures, training, the predictor and the RQ worker."""
