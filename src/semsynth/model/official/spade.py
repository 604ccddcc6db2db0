"""Official SPADE (GauGAN) checkpoints in: NVlabs/SPADE ``latest_net_G.pth`` (and
``latest_net_E.pth`` with ``--use_vae``) → a semsynth export.

The official ``SPADEGenerator`` (``models/networks/generator.py``, ``architecture.py``
``SPADEResnetBlock``, ``normalization.py`` ``SPADE``, ``encoder.py`` ``ConvEncoder``) is the
network of :mod:`semsynth.methods.spade.generator`; what differs:

* **Key names.** ``head_0`` / ``G_middle_0`` / ``G_middle_1`` / ``up_i`` are
  ``blocks.head`` / ``blocks.middle_0`` / ``blocks.middle_1`` / ``blocks.up_i``; inside SPADE,
  ``param_free_norm`` / ``mlp_shared`` / ``mlp_gamma`` / ``mlp_beta`` are ``norm`` / ``shared``
  / ``gamma`` / ``beta``; the encoder (a separate file there) is ``encoder.*`` here
  (``layer<j>.0`` → ``encoder.layers.<j-1>.0``). Spectral norm: see
  :mod:`semsynth.model.official.common`.
* **Label space**: the label-map input channels of ``fc`` (without ``--use_vae``) and of
  every SPADE ``mlp_shared`` conv are permuted / dropped per :data:`~semsynth.model.official.common.LABEL_CHANNELS`;
  the instance-edge channel, when the checkpoint has it, stays the last.
* ``norm_G spectralspadesyncbatch3x3`` (the default): the synchronized BatchNorm is a
  BatchNorm with running statistics in eval mode, as semsynth's.

The architecture is inferred from the tensors: ``ngf`` (``head_0.conv_0`` width / 16), the
SPADE hidden width (128 in the official code), spectral norm on or off, ``use_vae`` (``fc``
is a ``Linear``) and ``z_dim``, ``num_upsampling_layers`` (``most`` when ``up_4`` exists;
with ``--use_vae`` from ``fc``'s size; else the dataset preset's: ``more`` for Cityscapes).
Checked against the official code run locally: ``docs/results.md``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from semsynth.model.official.common import (
    detect_edge,
    encoder_config,
    encoder_from_official,
    fill_num_batches_tracked,
    input_index,
    load_pth,
    preset,
    remap_input_channels,
    resolve_files,
    sn_key,
    strip_module,
    write_import,
)
from semsynth.types import ConfigError

__all__ = ["generator_from_official", "official_config", "import_official"]

CODE = "NVlabs/SPADE"
_BLOCKS = {"head_0": "head", "G_middle_0": "middle_0", "G_middle_1": "middle_1"}
_SPADE_RENAMES = (("param_free_norm", "norm"), ("mlp_shared", "shared"), ("mlp_gamma", "gamma"), ("mlp_beta", "beta"))
_EDGE_KEY = "head_0.norm_0.mlp_shared.0.weight"


def _key(key: str) -> str:
    m = re.match(r"(head_0|G_middle_[01]|up_\d)\.(.*)$", key)
    if m:
        rest = m.group(2)
        for a, b in _SPADE_RENAMES:
            rest = rest.replace(f".{a}.", f".{b}.")
        key = f"blocks.{_BLOCKS.get(m.group(1), m.group(1))}.{rest}"
    return sn_key(key)


def generator_from_official(state: dict, dataset: str, source: str = "<state dict>") -> tuple[dict, bool]:
    """Convert an official ``SPADEGenerator`` state dict to semsynth key names and label space.

    Args:
        state: the official state dict (a ``module.`` prefix is stripped).
        dataset: ``ade20k``, ``cityscapes`` or ``coco_stuff``.
        source: file name for errors.

    Returns:
        ``(state dict for SPADEGenerator without encoder.*, instance edge present)``; the
        generator takes ``len(LABEL_CHANNELS[dataset]) + edge`` input channels.

    Raises:
        ConfigError: not a SPADE generator or a label width that does not fit the dataset
            (names ``source``, the key, expected and found shapes).
    """
    preset(dataset, CODE)
    state = dict(strip_module(state))
    edge = detect_edge(state, _EDGE_KEY, dataset, source, CODE)
    index, n_off = input_index(dataset, edge)
    for key in list(state):
        if key.endswith(".mlp_shared.0.weight") or (key == "fc.weight" and state[key].dim() == 4):
            remap_input_channels(state, key[: -len(".weight")], index, n_off, source)
    out = {_key(k): v.clone() for k, v in state.items()}
    fill_num_batches_tracked(out)
    return out, edge


def official_config(state: dict, dataset: str, e_state: dict | None = None, g_source: str = "<generator>",
                    e_source: str = "<encoder>", edge: bool = False):
    """The semsynth :class:`~semsynth.config.Config` of an official SPADE generator (and
    encoder) state dict: widths, upsampling mode, VAE, spectral norm from the tensors; data
    size of the official preset.

    Raises:
        ConfigError: a dataset without a preset, or a state dict without the official
            blocks (names ``g_source`` and the missing key).
    """
    from semsynth.methods.spade.generator import UPSAMPLING_LAYERS, SPADEGeneratorConfig
    from semsynth.methods.spade.method import SPADEConfig
    from semsynth.model.official.common import data_config
    from semsynth.nn.encoder import EncoderConfig

    p = preset(dataset, CODE)
    state = strip_module(state)
    try:
        sn = "head_0.conv_0.weight_orig" in state
        ngf = int(state[f"head_0.conv_0.{'weight_orig' if sn else 'weight'}"].shape[0]) // 16
        hidden = int(state[_EDGE_KEY].shape[0])
        fc = state["fc.weight"]
    except KeyError as exc:
        raise ConfigError(f"{g_source}: not an official SPADE generator (missing {exc})") from None
    use_vae = fc.dim() == 2
    mode = p.upsampling
    if any(k.startswith("up_4.") for k in state):
        mode = "most"
    elif use_vae:  # fc: Linear(z_dim, 16·ngf·sh·sw): the lowest resolution gives the mode
        for m, k in UPSAMPLING_LAYERS.items():
            if m != "most" and fc.shape[0] == 16 * ngf * (p.height >> k) * (p.width >> k):
                mode = m
    enc = encoder_config(e_state, e_source) if e_state is not None else EncoderConfig()
    gen = SPADEGeneratorConfig(ngf=ngf, num_upsampling_layers=mode, use_vae=use_vae,
                               z_dim=int(fc.shape[1]) if use_vae else 256, spade_hidden=hidden,
                               spectral_norm=sn, encoder=enc)
    from semsynth.config import Config

    return Config(method="spade", seed=0, data=data_config(dataset, edge), model=SPADEConfig(generator=gen))


def import_official(path: str | os.PathLike, dataset: str, out_dir: str | os.PathLike,
                    encoder: str | os.PathLike | None = None, which: str = "latest") -> Path:
    """Read an official SPADE checkpoint and write a semsynth export folder.

    Args:
        path: a ``*_net_G.pth`` file or the official ``checkpoints/<name>`` folder (then
            ``<which>_net_G.pth``).
        dataset: ``ade20k``, ``cityscapes`` or ``coco_stuff`` (the official presets).
        out_dir: the export folder to write.
        encoder: the ``*_net_E.pth`` of a ``--use_vae`` model; by default the sibling
            ``<which>_net_E.pth`` of the generator file, if present.
        which: checkpoint prefix in a folder (``latest`` or an epoch).

    Returns:
        The path of the export's ``export.json`` (``semsynth sample`` / ``eval`` / ``serve``
        accept the folder).

    Raises:
        FileNotFoundError: a missing file or folder (named).
        ConfigError: not a SPADE checkpoint, a label-width mismatch, a VAE generator without
            its encoder, or tensors that do not fit the inferred architecture (names the file,
            the key and expected vs. found shapes).
    """
    from semsynth.data import dataset_info
    from semsynth.model.build import build_generator

    preset(dataset, CODE)
    g_path, e_path = resolve_files(Path(path), which, None if encoder is None else str(encoder))
    g_off = load_pth(g_path, "SPADE latest_net_G.pth")
    e_off = load_pth(e_path, "SPADE latest_net_E.pth") if e_path is not None else None
    g_state, edge = generator_from_official(g_off, dataset, str(g_path))
    e_state = encoder_from_official(e_off, str(e_path)) if e_off is not None else None
    cfg = official_config(g_off, dataset, e_off, str(g_path), str(e_path), edge)
    info = dataset_info(cfg.data)
    gen = build_generator(cfg, info)
    return write_import(cfg, info, gen, g_state, e_state, g_path, e_path, edge, CODE, out_dir,
                        "blocks.head.norm_0.shared.0.weight")

