"""Light command-line entry points (no TensorFlow): ``sentiment-enqueue``, ``sentiment-classify``
and ``sentiment-run``.  Each is thin: it parses arguments and calls the shared library; no module
imports a command module.
"""
