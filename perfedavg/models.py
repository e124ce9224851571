"""The networks the project trains: the two seed models, the Per-FedAvg paper's MLP and the FedAvg paper's CNN.

Parameter counts (P), which decide what the curvature modes cost:

* ``ANN``: 3·4 + 4 + 4·5 + 5 = 41.
* ``Net(h, w)``: 32·C·9 + 32 + 32·h·w·K + K; with the seed's C = 1, K = 5 that is 325 + 160·h·w
  (Net(12, 12): 23,365; Net(28, 28): 125,765).
* ``MLP(d, K)``: d·80 + 80 + 80·60 + 60 + 60·K + K (784 → 10: 68,270).
* ``CNN(C, h, w, K)``: 32·C·25 + 32 + 64·32·25 + 64 + 64·⌊h/4⌋·⌊w/4⌋·512 + 512 + 512·K + K (MNIST: 1,663,370;
  CIFAR-10: 2,156,490).
"""

from __future__ import annotations

import torch
from torch import nn


class ANN(nn.Module):
    """The first seed's regression network: Linear(3, 4) → Linear(4, 5), no activation.

    The seed defines a ``Sigmoid`` but never calls it in ``forward``; it is kept (it has no parameters) so the
    module tree matches the seed, and it is not applied. Input ``[N, 3]`` (or ``[3]``), output ``[N, 5]``.
    Used with mean-squared error.
    """

    def __init__(self) -> None:
        super().__init__()
        self.sigmoid = nn.Sigmoid()
        self.fc1 = nn.Linear(3, 4)
        self.fc2 = nn.Linear(4, 5)

    def forward(self, data: torch.Tensor) -> torch.Tensor:
        x = self.fc1(data)
        x = self.fc2(x)
        return x


class Net(nn.Module):
    """The second seed's classifier: Conv2d(C, 32, 3, 1, 1) → flatten → Linear(32·h·w, K).

    No activation, as in the seed. Input ``[N, C, h, w]``, output logits ``[N, K]``. The seed has C = 1 and
    K = 5; both are constructor arguments with those defaults. Used with cross-entropy.
    """

    def __init__(self, h: int, w: int, in_channels: int = 1, num_classes: int = 5) -> None:
        super().__init__()
        if min(h, w, in_channels, num_classes) < 1:
            raise ValueError(f"Net needs positive sizes, got h={h}, w={w}, C={in_channels}, K={num_classes}")
        self.c1 = nn.Conv2d(in_channels, 32, 3, 1, 1)
        self.f2 = nn.Linear(32 * h * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c1(x)
        x = x.view(x.size(0), -1)
        x = self.f2(x)
        return x


class MLP(nn.Module):
    """The Per-FedAvg paper's network: input → 80 → 60 → classes, ELU after each hidden layer.

    Any input ``[N, ...]`` is flattened to ``[N, in_features]``; output logits ``[N, num_classes]``.
    Built as an ``nn.Sequential`` so layer-wise curvature (BackPACK) applies directly.
    """

    def __init__(self, in_features: int, num_classes: int = 10, hidden: tuple[int, ...] = (80, 60)) -> None:
        super().__init__()
        if in_features < 1 or num_classes < 1 or any(h < 1 for h in hidden):
            raise ValueError(f"MLP needs positive sizes, got {in_features} → {hidden} → {num_classes}")
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ELU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class CNN(nn.Module):
    """The FedAvg paper's CNN (McMahan et al., 2017): two 5×5 convolutions (32 and 64 channels, padding 2), each
    followed by ReLU and 2×2 max pooling, a fully connected layer of 512 units with ReLU, and a linear layer to the
    classes (the softmax is in the cross-entropy loss).

    Input ``[N, C, h, w]`` with h, w ≥ 4, output logits ``[N, K]``; ``channels`` and ``hidden`` resize it (the tests
    use a tiny one). An ``nn.Sequential`` of layers BackPACK differentiates exactly, so ``hessian=diag`` takes the
    one-pass path.
    """

    def __init__(
        self,
        in_channels: int,
        h: int,
        w: int,
        num_classes: int = 10,
        channels: tuple[int, int] = (32, 64),
        hidden: int = 512,
    ) -> None:
        super().__init__()
        if min(in_channels, num_classes, hidden, *channels) < 1 or len(channels) != 2 or min(h, w) < 4:
            raise ValueError(
                f"CNN needs positive sizes, two conv widths and inputs of at least 4×4, got C={in_channels}, "
                f"{h}×{w}, channels={tuple(channels)}, hidden={hidden}, K={num_classes}"
            )
        first, second = channels
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, first, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(first, second, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(second * (h // 4) * (w // 4), hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class CharLSTM(nn.Module):
    """LEAF's character model for Shakespeare (Caldas et al., 2018): an embedding of each character (8 dimensions),
    two LSTM layers of 256 units, and a linear layer from the last step's output to the vocabulary: the logits of
    the next character.

    Input ``[N, T]`` character ids (int64, ``0 ≤ id < vocab_size``), output ``[N, vocab_size]``. ``embedding``,
    ``hidden`` and ``layers`` resize it (the tests use a tiny one). Every parameter is trainable and the loss is
    twice differentiable through ``nn.LSTM`` on the CPU, so every curvature mode applies; ``hessian=diag`` takes the
    exact fallback (BackPACK does not extend LSTMs). Cost of a Hessian-vector product: several gradients (the double
    backward unrolls the recurrence again).
    """

    def __init__(self, vocab_size: int, embedding: int = 8, hidden: int = 256, layers: int = 2) -> None:
        super().__init__()
        if min(vocab_size, embedding, hidden, layers) < 1:
            raise ValueError(
                f"CharLSTM needs positive sizes, got vocab_size={vocab_size}, embedding={embedding}, "
                f"hidden={hidden}, layers={layers}"
            )
        self.embed = nn.Embedding(vocab_size, embedding)
        self.lstm = nn.LSTM(embedding, hidden, num_layers=layers, batch_first=True)
        self.out = nn.Linear(hidden, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output, _ = self.lstm(self.embed(x))
        return self.out(output[:, -1, :])
