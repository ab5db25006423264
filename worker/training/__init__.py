"""Offline tools that need TensorFlow: the training recipe, sweeps, in-process prediction and the
analysis report.  Their command-line entry points live in ``worker.training.commands``.
"""
