"""Plot helpers used across the book, so every chapter draws the same way."""

from __future__ import annotations

from typing import Callable

import torch


def scatter2d(ax, x: torch.Tensor, title: str | None = None, lim: float = 3.0, **kw):
    """Scatter a ``[n, 2]`` point cloud on a square, equal-aspect axis."""
    x = x.detach().cpu()
    ax.scatter(x[:, 0], x[:, 1], s=kw.pop("s", 2), alpha=kw.pop("alpha", 0.5), **kw)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    return ax


def trajectories2d(ax, trajectory: torch.Tensor, n: int = 30, lim: float = 3.0, title: str | None = None):
    """Draw the paths of the first ``n`` points of a trajectory ``[steps, B, 2]``: start grey, end red."""
    path = trajectory[:, :n].detach().cpu()
    for i in range(path.shape[1]):
        ax.plot(path[:, i, 0], path[:, i, 1], lw=0.6, color="0.6")
    ax.scatter(path[0, :, 0], path[0, :, 1], s=6, color="0.4", label="start")
    ax.scatter(path[-1, :, 0], path[-1, :, 1], s=8, color="tab:red", label="end")
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    return ax


def vector_field2d(ax, field: Callable[[torch.Tensor], torch.Tensor], lim: float = 3.0, n: int = 21,
                   title: str | None = None, **kw):
    """Quiver plot of ``field([m, 2]) -> [m, 2]`` (a score, or a denoising direction) on an n x n grid."""
    u = torch.linspace(-lim, lim, n)
    grid = torch.stack(torch.meshgrid(u, u, indexing="xy"), -1).reshape(-1, 2)
    with torch.no_grad():
        v = field(grid).detach().cpu()
    ax.quiver(grid[:, 0], grid[:, 1], v[:, 0], v[:, 1], angles="xy", **kw)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    return ax
