"""Command-line entry points of the offline tools: ``sentiment-train``, ``sentiment-predict`` and
``sentiment-analyze``.  Thin: they parse arguments and call ``worker.training``.
"""
