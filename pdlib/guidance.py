"""Classifier-free guidance (Ho & Salimans 2022) as a wrapper that turns a conditional network into
a guided one, so any sampler can use it. Book chapter "Guidance"."""

from __future__ import annotations

import torch
from torch import nn

from .diffusion import GaussianDiffusion


def guided_output(cond: torch.Tensor, uncond: torch.Tensor, w: float) -> torch.Tensor:
    """out = out_uncond + w (out_cond - out_uncond). w = 1 is the conditional model, w = 0 the
    unconditional one; Ho & Salimans write the same with (1 + w') for w = 1 + w'."""
    return uncond + w * (cond - uncond)


def rescale_guidance(guided: torch.Tensor, cond: torch.Tensor, phi: float) -> torch.Tensor:
    """CFG rescale (Lin et al. 2024, eqs. 15-16): match the per-sample std of the guided prediction to
    the conditional one, then blend with weight ``phi`` (0.7 in the papers)."""
    dims = tuple(range(1, guided.ndim))
    rescaled = guided * cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True)
    return phi * rescaled + (1 - phi) * guided


def classifier_free_guidance(net, y: torch.Tensor, w: float, parameterization: str = "eps", *,
                             process: GaussianDiffusion | None = None, rescale: float = 0.0):
    """A model ``f(x, t)`` that evaluates ``net`` with labels ``y`` and with ``net.null_class`` in one
    batch and returns the guided prediction. ``rescale > 0`` applies CFG rescale to the x0/v
    prediction (it needs ``process`` when the network predicts eps)."""
    null = getattr(net, "null_class", None)
    if null is None:
        raise ValueError("classifier-free guidance needs a network with a null_class")
    if rescale and parameterization == "eps" and process is None:
        raise ValueError("rescale with an eps network needs the process to convert to x0")

    def guided(x, t):
        both = net(torch.cat([x, x]), torch.cat([t, t]),
                   y=torch.cat([y.to(x.device), torch.full_like(y, null).to(x.device)]))
        cond, uncond = both.chunk(2)
        out = guided_output(cond, uncond, w)
        if not rescale:
            return out
        if parameterization != "eps":
            return rescale_guidance(out, cond, rescale)
        x0_c, x0_g = process.predict_x0_from_eps(x, t, cond), process.predict_x0_from_eps(x, t, out)
        return process.predict_eps_from_x0(x, t, rescale_guidance(x0_g, x0_c, rescale))

    return guided


class LabelledSampling(nn.Module):
    """A class-conditional method whose ``sample(n, ...)`` draws its own labels: ``label`` for every sample,
    or (``label=None``) labels uniform over the network's classes; with a
    ``guidance_scale`` w the samples are guided (``classifier_free_guidance``, with ``guidance_rescale``).
    It lets code that asks for ``n`` samples in batches (``pdlib.pipeline.sample_in_batches``, the command
    line's ``sample`` and ``eval``) draw labelled and guided samples, e.g. to set guidance beside the
    self-perceptual objective (Lin & Yang 2024, Table 1)."""

    def __init__(self, method: nn.Module, *, label: int | None = None, guidance_scale: float | None = None,
                 guidance_rescale: float = 0.0):
        super().__init__()
        classes = getattr(getattr(method, "net", None), "null_class", None)
        if classes is None:
            raise ValueError("labels and guidance need a class-conditional model (a network with num_classes)")
        if label is not None and not 0 <= label < classes:
            raise ValueError(f"label must lie in [0, {classes - 1}], got {label}")
        if not 0.0 <= guidance_rescale <= 1.0:
            raise ValueError(f"guidance_rescale must lie in [0, 1], got {guidance_rescale}")
        self.method, self.num_classes, self.label = method, classes, label
        self.guidance_scale, self.guidance_rescale = guidance_scale, guidance_rescale
        self._label_generator = None

    def labels(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` labels: the fixed ``label``, or uniform over the classes, drawn on the CPU from their own
        generator (seeded once from ``generator``'s seed), so the sampling noise does not depend on how the
        labels were chosen."""
        device = next(self.method.parameters()).device
        if self.label is not None:
            return torch.full((n,), self.label, dtype=torch.long, device=device)
        if self._label_generator is None:
            seed = generator.initial_seed() if generator is not None else torch.seed()
            self._label_generator = torch.Generator().manual_seed(seed + 1)
        return torch.randint(0, self.num_classes, (n,), generator=self._label_generator).to(device)

    def sample(self, n: int, *, generator: torch.Generator | None = None, **kw) -> torch.Tensor:
        y = self.labels(n, generator)
        return self.method.sample(n, y=y, guidance_scale=self.guidance_scale,
                                  guidance_rescale=self.guidance_rescale, generator=generator, **kw)

    def describe(self) -> dict:
        """The labels and guidance, for a results record."""
        return {"labels": "uniform" if self.label is None else self.label, "guidance_scale": self.guidance_scale,
                "guidance_rescale": self.guidance_rescale}
