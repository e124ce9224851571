"""Personalized-FL methods beside Per-FedAvg, one module each (pure torch; no Flower).

:mod:`~perfedavg.algorithms.pfedme` (Dinh, Tran, Nguyen, NeurIPS 2020) and :mod:`~perfedavg.algorithms.ditto` (Li,
Hu, Beirami, Smith, ICML 2021): their local updates and personalization as functions of flat parameter vectors, each
tested against a closed form. FedAvg and Per-FedAvg are in :mod:`perfedavg.algorithm`; wiring these two into the
federation (``algorithm=pfedme|ditto``, Ditto's per-client state across rounds) is issue 23's next step.
"""
