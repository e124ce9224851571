"""The analysis tools: tuning, reproducing a comparison over seeds, the heterogeneity study, reports and plots.

Each is a console script the wheel installs (``perfedavg-tune``, ``perfedavg-reproduce``, ``perfedavg-heterogeneity``,
``perfedavg-report``, ``perfedavg-heterogeneity-report``, ``perfedavg-plot``). They sit above every other layer: they
compose configs and read declarations in-process, launch federations as ``python -m perfedavg`` processes
(:mod:`perfedavg.analysis.launch`) and read what the runs wrote (``metrics.json``, event files, ``.hydra/``).
"""
