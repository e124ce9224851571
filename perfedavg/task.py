"""Config → the model, its loss and its task; shared by the client and server apps (no Flower here)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from perfedavg.models import ANN, MLP, Net


def build_model(model_cfg: Mapping[str, Any], seed: int) -> nn.Module:
    """The configured network with initial weights drawn from ``seed`` (identical on every machine)."""
    shape = list(model_cfg["input_shape"])
    name = model_cfg["name"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name == "ann":
            return ANN()
        if name == "net":
            channels, height, width = shape
            return Net(height, width, in_channels=channels, num_classes=int(model_cfg["num_outputs"]))
        if name == "mlp":
            return MLP(math.prod(shape), int(model_cfg["num_outputs"]), hidden=tuple(model_cfg["hidden"]))
    raise ValueError(f"model={name!r} is not one of: ann, net, mlp")


def compute_device(cfg: Mapping[str, Any]) -> torch.device:
    """Where a client computes for run config ``cfg``: its ``device``, with ``auto`` decided in the calling process
    (CUDA if this process sees a GPU: under Ray only actors that reserve ``client_gpus`` do)."""
    device = str(cfg.get("device") or "cpu")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def is_classification(dataset_cfg: Mapping[str, Any]) -> bool:
    return dataset_cfg["task"] == "classification"


def build_loss(dataset_cfg: Mapping[str, Any]) -> nn.Module:
    """Cross-entropy for classification, mean-squared error for regression (module forms: BackPACK-ready)."""
    return nn.CrossEntropyLoss() if is_classification(dataset_cfg) else nn.MSELoss()
