"""The flat parameter vector every curvature function works in: which parameters, in which order, and the
conversions between a model's parameters and one ``[P]`` vector (see the conventions in :mod:`perfedavg.curvature`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

Batch = tuple[Tensor, Tensor]
#: A state dict: a model's weights by parameter name, as the server aggregates them.
Weights = dict[str, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class ParamBlock:
    """One parameter's place in the flat vector: ``flat[offset : offset + numel]`` reshaped to ``shape``."""

    name: str
    shape: tuple[int, ...]
    offset: int
    numel: int

    @property
    def slice(self) -> slice:
        return slice(self.offset, self.offset + self.numel)


@dataclass(frozen=True)
class ParameterLayout:
    """How a model's trainable parameters map to one flat vector of length :attr:`size` (= P)."""

    blocks: tuple[ParamBlock, ...]

    @classmethod
    def of(cls, model: nn.Module) -> ParameterLayout:
        blocks, offset = [], 0
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            blocks.append(ParamBlock(name, tuple(p.shape), offset, p.numel()))
            offset += p.numel()
        return cls(tuple(blocks))

    @property
    def size(self) -> int:
        return self.blocks[-1].offset + self.blocks[-1].numel if self.blocks else 0

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.blocks)

    def block(self, name: str) -> ParamBlock:
        for b in self.blocks:
            if b.name == name:
                return b
        raise KeyError(f"no trainable parameter named {name!r}; the layout has {list(self.names)}")

    def flatten(self, tensors: Sequence[Tensor]) -> Tensor:
        """Concatenate per-parameter tensors (layout order and shapes) into one flat ``[P]`` vector."""
        if len(tensors) != len(self.blocks):
            raise ValueError(f"expected {len(self.blocks)} tensors, got {len(tensors)}")
        return torch.cat([t.reshape(-1) for t in tensors])

    def unflatten(self, vector: Tensor) -> list[Tensor]:
        """Split a flat ``[P]`` vector into views shaped like each parameter (layout order)."""
        if vector.dim() != 1 or vector.numel() != self.size:
            raise ValueError(f"expected a flat vector of length P={self.size}, got shape {tuple(vector.shape)}")
        return [vector[b.slice].view(b.shape) for b in self.blocks]

    def as_dict(self, vector: Tensor) -> dict[str, Tensor]:
        """``{parameter name: view of vector}``, the form ``functional_call`` takes."""
        return dict(zip(self.names, self.unflatten(vector)))

    def describe(self) -> str:
        """A small table: name, shape, flat slice."""
        rows = [f"{b.name:<30} {str(list(b.shape)):<20} [{b.offset}:{b.offset + b.numel}]" for b in self.blocks]
        return "\n".join([*rows, f"P = {self.size}"])


def parameter_layout(model: nn.Module) -> ParameterLayout:
    """The flat layout of ``model``'s trainable parameters (see module docstring)."""
    return ParameterLayout.of(model)


def trainable_parameters(model: nn.Module) -> list[Tensor]:
    """The trainable parameters of ``model`` in layout order (the live tensors, not copies)."""
    return [p for p in model.parameters() if p.requires_grad]


def flat_parameters(model: nn.Module) -> Tensor:
    """A detached copy of the trainable parameters as one flat ``[P]`` vector."""
    params = trainable_parameters(model)
    if not params:
        raise ValueError("the model has no trainable parameters")
    return torch.cat([p.detach().reshape(-1) for p in params]).clone()


def set_flat_parameters(model: nn.Module, vector: Tensor) -> None:
    """Copy a flat ``[P]`` vector into the model's trainable parameters, in place (outside autograd)."""
    layout = parameter_layout(model)
    with torch.no_grad():
        for p, v in zip(trainable_parameters(model), layout.unflatten(vector)):
            p.copy_(v)


def check_vector(v: Tensor, layout: ParameterLayout, what: str = "v") -> None:
    """Raise ``ValueError`` unless ``v`` is a flat vector of the layout's length P."""
    if v.dim() != 1 or v.numel() != layout.size:
        raise ValueError(f"{what} must be a flat vector of length P={layout.size}, got shape {tuple(v.shape)}")
