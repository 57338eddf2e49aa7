"""Frozen networks: LPIPS, a frozen copy of the UNet, an autoencoder's decoder.

One convention for every network a method uses but does not train (as diffusers' latent-diffusion
scripts freeze the VAE and text encoder). ``Frozen(net)``:

- keeps ``net`` in eval mode whatever ``method.train()`` says;
- turns off ``requires_grad`` on its weights, so no gradient is accumulated in them, while gradients
  still flow *through* it to whatever produced its input;
- hides ``net`` from ``parameters()``, ``state_dict()`` and ``load_state_dict()`` of the method that
  holds it, so no optimiser, EMA or checkpoint sees it (a frozen network is rebuilt from its own source:
  a weights file, an earlier run);
- is shared, not copied, by ``copy.deepcopy`` (the EMA copy of a method uses the same frozen network).

Moving the method (``.to(device)``, ``.half()``, channels-last) moves the frozen network with it.
"""

from __future__ import annotations

from torch import nn


class Frozen(nn.Module):
    """Wrap ``net`` as a frozen network (see the module docstring). Call it like ``net``; its other
    attributes (``features``, ``decode``, ...) are reached through the wrapper."""

    def __init__(self, net: nn.Module):
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"Frozen wraps an nn.Module, got {type(net).__name__}")
        net.eval().requires_grad_(False)
        object.__setattr__(self, "net", net)  # not a registered submodule: invisible to the holder

    def forward(self, *args, **kwargs):
        return self.net(*args, **kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["net"], name)

    def train(self, mode: bool = True) -> "Frozen":
        return self  # always in eval mode

    def _apply(self, fn, recurse: bool = True):
        self.net._apply(fn)  # device, dtype and memory-format moves of the holder reach the frozen net
        return self

    def __deepcopy__(self, memo) -> "Frozen":
        return self  # shared, not copied

    def extra_repr(self) -> str:
        return f"frozen {type(self.net).__name__}"


def frozen_networks(module: nn.Module) -> list[Frozen]:
    """The ``Frozen`` networks held anywhere inside ``module``."""
    return [m for m in module.modules() if isinstance(m, Frozen)]


__all__ = ["Frozen", "frozen_networks"]
