"""Plot helpers used across the book, so every chapter draws the same way."""

from __future__ import annotations

from typing import Callable

import torch


def _square(ax, lim: float, title: str | None):
    """Square, equal-aspect limits [-lim, lim]^2 and an optional title."""
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    return ax


def scatter2d(ax, x: torch.Tensor, title: str | None = None, lim: float = 3.0, **kw):
    """Scatter a ``[n, 2]`` point cloud on a square, equal-aspect axis."""
    x = x.detach().cpu()
    ax.scatter(x[:, 0], x[:, 1], s=kw.pop("s", 2), alpha=kw.pop("alpha", 0.5), **kw)
    return _square(ax, lim, title)


def trajectories2d(ax, trajectory: torch.Tensor, n: int = 30, lim: float = 3.0, title: str | None = None):
    """Draw the paths of the first ``n`` points of a trajectory ``[steps, B, 2]``: start grey, end red."""
    path = trajectory[:, :n].detach().cpu()
    for i in range(path.shape[1]):
        ax.plot(path[:, i, 0], path[:, i, 1], lw=0.6, color="0.6")
    ax.scatter(path[0, :, 0], path[0, :, 1], s=6, color="0.4", label="start")
    ax.scatter(path[-1, :, 0], path[-1, :, 1], s=8, color="tab:red", label="end")
    return _square(ax, lim, title)


def vector_field2d(ax, field: Callable[[torch.Tensor], torch.Tensor], lim: float = 3.0, n: int = 21,
                   title: str | None = None, **kw):
    """Quiver plot of ``field([m, 2]) -> [m, 2]`` (a score, or a denoising direction) on an n x n grid."""
    u = torch.linspace(-lim, lim, n)
    grid = torch.stack(torch.meshgrid(u, u, indexing="xy"), -1).reshape(-1, 2)
    with torch.no_grad():
        v = field(grid).detach().cpu()
    ax.quiver(grid[:, 0], grid[:, 1], v[:, 0], v[:, 1], angles="xy", **kw)
    return _square(ax, lim, title)


def image_grid(images: torch.Tensor, nrow: int = 8, pad: int = 1) -> torch.Tensor:
    """Tile ``[B, C, H, W]`` images in [-1, 1] into one ``[H', W', C]`` array in [0, 1] for imshow."""
    if images.ndim != 4:
        raise ValueError(f"images must be [B, C, H, W], got shape {tuple(images.shape)}")
    b, c, h, w = images.shape
    ncol = min(nrow, b)
    nrows = -(-b // ncol)
    x = (images.detach().float().cpu().clamp(-1, 1) + 1) / 2
    x = torch.cat([x, x.new_ones(nrows * ncol - b, c, h, w)])  # blank tiles fill the last row
    x = torch.nn.functional.pad(x, (0, pad, 0, pad), value=1.0)
    x = x.reshape(nrows, ncol, c, h + pad, w + pad).permute(2, 0, 3, 1, 4)
    canvas = torch.nn.functional.pad(x.reshape(c, nrows * (h + pad), ncol * (w + pad)), (pad, 0, pad, 0), value=1.0)
    grid = canvas.permute(1, 2, 0)
    return grid[..., 0] if c == 1 else grid


def show_images(ax, images: torch.Tensor, nrow: int = 8, title: str | None = None):
    """Draw an image grid on ``ax`` without ticks."""
    grid = image_grid(images, nrow)
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax


def save_image_grid(images: torch.Tensor, path, nrow: int = 8) -> None:
    """Write an image grid to a PNG file."""
    import matplotlib.pyplot as plt

    grid = image_grid(images, nrow).numpy()
    plt.imsave(path, grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1)


def plot_history(history: list[dict], path=None, ax=None, key: str | None = None):
    """Plot a trainer's logged ``key`` against the step; save to ``path`` when given. Without ``key``:
    ``"loss"``, or for a method with several phases each phase's loss (``"D/loss"``, ``"G/loss"``)."""
    import matplotlib.pyplot as plt

    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(5, 3))
    logged = dict.fromkeys(k for h in history for k in h)
    keys = [key] if key is not None else [k for k in logged if k == "loss" or k.endswith("/loss")]
    for k in keys:
        rows = [h for h in history if k in h]
        ax.plot([h["step"] for h in rows], [h[k] for h in rows], label=k)
    if len(keys) > 1:
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel(keys[0] if len(keys) == 1 else "loss")
    ax.set_yscale("log")
    if path is not None:
        ax.figure.savefig(path, dpi=100, bbox_inches="tight")
        if own:
            plt.close(ax.figure)
    return ax
