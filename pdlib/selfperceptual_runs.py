"""Config builder of the self-perceptual objective: ``method.name: self-perceptual`` (Lin & Yang 2024,
Algorithm 1), registered with ``pdlib.pipeline``.

The run continues an MSE-trained run: ``init_from`` names its weights (a run folder, a file or
``experiment:NAME/RUN``). The online network starts from them and a second copy of them becomes the
frozen perceptual network f* (``pdlib.train.Frozen``: not trained, not in checkpoints, rebuilt from
``init_from`` whenever the run is resumed or loaded), unless ``method.kwargs.perceptual_from`` names other
weights for f* (the paper's Table 6: a self-perceptual model as f*). The other ``method.kwargs`` go to
:class:`pdlib.methods.SelfPerceptual` (``layer``, ``t_prime``, ``distance``, ``formulation``, ...).

Resuming rebuilds f* from its source as it is then: do not train the source run further while a
self-perceptual run that reads it is unfinished (the run's config cannot see the change).

The command-line recipe is two chained presets: ``python -m pdlib train --config cifar10-sp-mse`` then
``--config cifar10-sp`` (its ``init_from`` is the first run's folder).
"""

from __future__ import annotations

import copy
import inspect

from .config import RunConfig
from .methods.selfperceptual import SelfPerceptual
from .pipeline import build_net, build_process, read_weights, register_method, resolve_weights


def network_weights(init: dict) -> dict:
    """The diffusion network's weights (keys ``net.*``) inside the weights of a ``ddpm`` or
    ``self-perceptual`` run."""
    own = {k.removeprefix("net."): v for k, v in init.items() if k.startswith("net.")}
    if not own:
        some = ", ".join(sorted(init)[:3])
        raise ValueError(f"init_from holds no diffusion network (no 'net.*' weights; found {some}, ...): "
                         "self-perceptual continues a ddpm (MSE) run")
    return own


@register_method("self-perceptual")
def build_self_perceptual(cfg: RunConfig, init: dict | None) -> SelfPerceptual:
    if cfg.model.type != "unet":
        raise ValueError(f"method.name='self-perceptual' needs model.type 'unet' (its features are the metric), "
                         f"got {cfg.model.type!r}")
    if init is None:
        raise ValueError("method.name='self-perceptual' needs init_from: the weights of an MSE-trained ddpm run "
                         "(a run folder, a file or experiment:NAME/RUN); they become both the starting point "
                         "and the frozen perceptual network")
    options = [name for name, p in inspect.signature(SelfPerceptual).parameters.items()
               if (p.kind is p.KEYWORD_ONLY and name != "data_shape") or name in ("layer", "t_prime", "distance")]
    options.append("perceptual_from")
    unknown = sorted(set(cfg.method.kwargs) - set(options))
    if unknown:
        raise ValueError(f"method.kwargs {unknown} are not options of self-perceptual; expected some of {options} "
                         "(the MSE run's options, such as min_snr_gamma, do not carry over)")
    kwargs = dict(cfg.method.kwargs)
    source = kwargs.pop("perceptual_from", None)
    net = build_net(cfg)
    net.load_state_dict(network_weights(init))
    frozen = copy.deepcopy(net)
    if source is not None:
        frozen.load_state_dict(network_weights(read_weights(resolve_weights(source))))
    return SelfPerceptual(net, frozen, build_process(cfg), parameterization=cfg.diffusion.parameterization, **kwargs)


__all__ = ["build_self_perceptual", "network_weights"]
