"""The HTTP API and its web page: a third producer on the workers' queues (no TensorFlow)."""
