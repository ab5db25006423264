"""The TensorFlow model library: architectures, layers, batching, prediction and explanation.

Imported only by the worker service (``worker``), the offline tools (``worker.training``) and the
benchmarks; the bot and the producers never load it.
"""
