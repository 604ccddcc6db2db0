"""Weight initialisation shared by the GAN methods: what the official code *actually* does.

The rule written in the official OASIS code (boschresearch/OASIS, ``models/models.py``,
``init_networks``) and SPADE/CC-FPSE code (NVlabs/SPADE@fecacc9 and xh-liu/CC-FPSE@5619e63,
``models/networks/base_network.py``, ``init_weights`` with ``--init_type xavier
--init_variance 0.02``): every ``Conv*``/``Linear`` weight ``xavier_normal_(gain=0.02)``,
every such bias 0, the affine weight of every ``BatchNorm2d`` N(1, 0.02) (bias 0).

What it does differs for spectral-norm layers, by the order of two calls:

* **OASIS** initialises in the model's constructor, before ``put_on_multi_gpus`` moves it to
  the GPU. The old-style ``torch.nn.utils.spectral_norm`` keeps ``m.weight`` as a plain
  tensor sharing ``weight_orig``'s storage, so the xavier call lands in ``weight_orig``:
  every conv starts at xavier 0.02.
* **SPADE and CC-FPSE** move each network to the GPU first (``create_network``:
  ``net.cuda()``, then ``net.init_weights(...)``). The move gives ``weight_orig`` new (GPU)
  storage; the plain ``m.weight`` still points to the old CPU storage, and the xavier call
  writes there, to be overwritten by the next forward's ``weight_orig / σ``. So their
  spectral-norm convs keep **PyTorch's default init** (kaiming-uniform, ``a = √5``: std
  ``1/√(3·fan_in)``, 25–35× xavier 0.02's for these layers); only their biases are zeroed.
  Layers without spectral norm get xavier 0.02 as written. (On a CPU run, which the
  published results are not, the official SPADE code would give xavier everywhere.)

Consequence: all plain convs (SPADE's shared/γ/β convs, OASIS G's first conv and
``conv_img``, D's 1×1 classifier) start with weights ~50× smaller than PyTorch's default,
so γ, β ≈ 0 (SPADE starts as plain BatchNorm) and the first outputs are ≈ tanh(0) = 0.
Under spectral norm the *forward pass* sees only the direction of a weight (it is divided
by its largest singular value); the scale still matters for training, since Adam moves
each weight by about ``lr`` per step whatever its size, so a small ``weight_orig`` turns
faster. The official code (old-style ``torch.nn.utils.spectral_norm``) starts its
power-iteration vectors at random; semsynth re-estimates them with 15 power steps after
the re-initialisation (as PyTorch's parametrisation does at registration), so the first
forward pass already divides by ≈ the true largest singular value.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from semsynth.types import ConfigError

__all__ = ["INIT_CHOICES", "xavier_init_", "apply_init"]

#: Values of the ``init`` config key of the methods that use this module.
INIT_CHOICES = ("official", "pytorch")


@torch.no_grad()
def xavier_init_(module: nn.Module, gain: float = 0.02, power_iterations: int = 15,
                 spectral_norm_weights: bool = True) -> int:
    """Re-initialise ``module`` and its children in place, as the official code.

    * ``nn.Conv*``/``nn.Linear``: weight ~ ``xavier_normal_(gain)``, bias 0. A weight under
      a spectral-norm parametrisation is initialised in its ``original`` tensor, and the
      power-iteration vectors are then re-estimated with ``power_iterations`` steps (PyTorch
      does 15 when the parametrisation is registered; the official code's old-style
      spectral norm starts from random vectors instead) — unless ``spectral_norm_weights``
      is False: then such a weight keeps the init it has (PyTorch's default) and only its
      bias is zeroed (SPADE/CC-FPSE, see the module docstring).
    * ``nn.BatchNorm*`` with affine parameters: weight ~ N(1, gain), bias 0.

    Draws from torch's global RNG (seed it first for a reproducible network).

    Args:
        module: the network (e.g. an OASIS generator or discriminator).
        gain: the xavier gain / BatchNorm std (official: 0.02).
        power_iterations: spectral-norm power steps after re-initialising (>= 0).
        spectral_norm_weights: re-initialise spectral-norm weights too (OASIS: True;
            SPADE and CC-FPSE: False).

    Returns:
        The number of layers visited (weights re-initialised or, for skipped
        spectral-norm weights, biases zeroed).

    Source: boschresearch/OASIS ``models/models.py`` (``init_networks``); NVlabs/SPADE and
    xh-liu/CC-FPSE ``models/networks/__init__.py`` (``create_network``) and
    ``base_network.py`` (``init_weights``).
    """
    count = 0
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)):
            if parametrize.is_parametrized(m, "weight"):
                if spectral_norm_weights:  # else the official init missed it (moved before init)
                    nn.init.xavier_normal_(m.parametrizations.weight.original, gain=gain)
                    was_training = m.training
                    m.train()
                    for _ in range(power_iterations):  # each access in train mode = one power step
                        _ = m.weight
                    m.train(was_training)
            else:
                nn.init.xavier_normal_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
            count += 1
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
            count += 1
    return count


def apply_init(module: nn.Module, scheme: str, source: str = "model.init",
               spectral_norm_weights: bool = True) -> None:
    """Apply the initialisation ``scheme`` to ``module``.

    Args:
        scheme: ``"official"`` (:func:`xavier_init_` with gain 0.02, what the method's
            official code does) or ``"pytorch"`` (keep PyTorch's default layer
            initialisation).
        source: config key named in the error.
        spectral_norm_weights: passed to :func:`xavier_init_` (the method's
            :attr:`~semsynth.methods.base.Method.official_init_spectral_norm_weights`).

    Raises:
        ConfigError: an unknown scheme (names the key, the value and the choices).
    """
    if scheme == "official":
        xavier_init_(module, 0.02, spectral_norm_weights=spectral_norm_weights)
    elif scheme != "pytorch":
        raise ConfigError(f"{source}: unknown initialisation {scheme!r}; choose one of {list(INIT_CHOICES)}")
