"""A run from start to end: :func:`perfedavg.run.runner.run` (``run(cfg) -> summary`` on Ray or in-process), the
run directory's lock (:mod:`~perfedavg.run.lock`) and a sweep's progress line (:mod:`~perfedavg.run.sweep_progress`).
"""
