"""MLP2D: the small network of the toy 2D chapters."""

from __future__ import annotations

import torch
from torch import nn

from .. import _validate
from .embedding import timestep_embedding


class MLP2D(nn.Module):
    """A residual MLP f(x, t[, y]) for points in R^``dim`` (book chapters "Score matching" and "DDPM").

    The timestep gets a sinusoidal embedding and an MLP; with ``num_classes`` a label embedding is
    added, with one extra "null" label (index ``num_classes``, see ``null_class``) for classifier-free
    guidance. Timesteps may be integer indices or reals (noise-level indices for score models).
    """

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, time_dim: int = 64,
                 num_classes: int | None = None, out_dim: int | None = None):
        super().__init__()
        _validate.positive_int("hidden", hidden)
        _validate.positive_int("depth", depth)
        self.dim, self.time_dim, self.num_classes = dim, time_dim, num_classes
        self.inp = nn.Linear(dim, hidden)
        self.time = nn.Sequential(nn.Linear(time_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.label = nn.Embedding(num_classes + 1, hidden) if num_classes else None
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
            for _ in range(depth)
        )
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, out_dim or dim))

    @property
    def data_shape(self) -> tuple:
        """Shape of one input example."""
        return (self.dim,)

    @property
    def null_class(self) -> int | None:
        """The label index meaning "no label" (classifier-free guidance), or None if unconditional."""
        return self.num_classes

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        _validate.tensor("x", x, ndim=2)
        if x.shape[1] != self.dim:
            raise ValueError(f"x must have shape [B, {self.dim}], got {tuple(x.shape)}")
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        cond = self.time(timestep_embedding(t, self.time_dim))
        if y is not None:
            if self.label is None:
                raise ValueError("this MLP2D has no labels (num_classes=None) but y was given")
            if int(y.min()) < 0 or int(y.max()) > self.num_classes:
                raise ValueError(f"labels must lie in [0, {self.num_classes}] ({self.num_classes} = no label)")
            cond = cond + self.label(y)
        elif self.label is not None:
            cond = cond + self.label(torch.full_like(t, self.num_classes, dtype=torch.long))
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h + cond)
        return self.out(h)
