"""Per-FedAvg federated-learning simulator with exact second-order meta-updates."""

__version__ = "0.1.0"
