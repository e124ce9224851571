"""How many clients a round samples: one rule for the config checks, the round loop and the in-process pool's size.
Pure Python (no torch), so that the config layer can use it without importing torch."""

from __future__ import annotations


def clients_per_round(num_clients: int, fraction: float) -> int:
    """How many clients a round samples: ``max(1, round(fraction · num_clients))``, at most ``num_clients``."""
    return min(num_clients, max(1, round(fraction * num_clients)))
