"""Official CC-FPSE checkpoints in: xh-liu/CC-FPSE ``latest_net_G.pth`` and
``latest_net_E.pth`` (the published recipe trains with ``--use_vae``) → a semsynth export.

The official ``CondConvGenerator`` (``models/networks/generator.py``, ``architecture.py``
``DepthsepCCBlock``, ``condconv.py`` ``DepthConv``, ``normalization.py``) is the network of
:mod:`semsynth.methods.cc_fpse.generator`; what differs:

* **Key names.** The label pyramid ``labelenc<j>`` / ``labellat<j>`` / ``labeldec<j>``
  (``Sequential(Sequential(spectral-norm conv, BatchNorm), LeakyReLU)``) is
  ``pyramid.enc.<j-1>`` / ``pyramid.lat.<j-1>`` / ``pyramid.dec.<j-1>`` (``Sequential(conv,
  BatchNorm, LeakyReLU)``: ``.0.0.`` → ``.0.``, ``.0.1.`` → ``.1.``); blocks ``head_0`` /
  ``G_middle_0`` / ``G_middle_1`` / ``up_i`` are ``blocks.head_0`` / ``blocks.middle_0`` /
  ``blocks.middle_1`` / ``blocks.up_i``; ``gen_se_weights1/2`` are ``gen_attention1/2``;
  the shortcut SPADE's ``param_free_norm`` / ``mlp_shared`` / ``mlp_gamma`` / ``mlp_beta``
  are ``norm`` / ``shared`` / ``gamma`` / ``beta``; the encoder is ``encoder.*``.
* **Unused BatchNorms dropped.** Each official block holds three affine BatchNorms its
  forward pass never calls: ``conv_0.norm_layer`` and ``conv_2.norm_layer`` (inside
  ``DepthConv``, whose ``forward`` has the call commented out) and ``norm_0``. semsynth's
  block has none of them (26,112 parameters at ``ngf`` 64), so exactly these keys
  (``<block>.conv_0.norm_layer.*``, ``<block>.conv_2.norm_layer.*``, ``<block>.norm_0.*``)
  are accepted and dropped; any other unknown key is an error.
* **Label space**: the label-map input channels of ``fc`` (without ``--use_vae``), of
  ``labelenc1``'s spectral-norm conv (with its ``v`` vector; see
  :mod:`semsynth.model.official.common`) and of each block's four weight-prediction heads
  and shortcut SPADE (whose inputs are ``[label map, pyramid level]``: only the label part
  is remapped) follow :data:`~semsynth.model.official.common.LABEL_CHANNELS`; the
  instance-edge channel, when present, stays the last label channel.
* ``norm_G spectralsync_batch`` (the default) is a BatchNorm without ``--mpdist``, and a
  SyncBatchNorm with it: in eval mode both use the running statistics, as semsynth's.

The architecture is inferred from the tensors: ``ngf`` (``labelenc1`` width), the head
width (128 in the official code), ``num_upsampling_layers`` (``more`` when ``labelenc7``
exists: the official code chooses it for ``--dataset_mode cityscapes``), ``use_vae`` and
``z_dim`` (``fc``). Checked against the official code run locally: ``docs/results.md``.
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

__all__ = ["UNUSED_BN", "generator_from_official", "official_config", "import_official"]

CODE = "xh-liu/CC-FPSE"
_BLOCK = r"(head_0|G_middle_[01]|up_[0-3])"
#: official block keys that the forward pass never uses (dropped on import).
UNUSED_BN = re.compile(_BLOCK + r"\.(conv_0\.norm_layer|conv_2\.norm_layer|norm_0)\."
                       r"(weight|bias|running_mean|running_var|num_batches_tracked)$")
_PYRAMID = {"labelenc": "enc", "labellat": "lat", "labeldec": "dec"}
_RENAMES = (("gen_se_weights1", "gen_attention1"), ("gen_se_weights2", "gen_attention2"),
            ("param_free_norm", "norm"), ("mlp_shared", "shared"), ("mlp_gamma", "gamma"), ("mlp_beta", "beta"))
_EDGE_KEY = "labelenc1.0.0.weight_orig"


def _key(key: str) -> str:
    m = re.match(r"(labelenc|labellat|labeldec)(\d+)\.0\.([01])\.(.*)$", key)
    if m:
        key = f"pyramid.{_PYRAMID[m.group(1)]}.{int(m.group(2)) - 1}.{m.group(3)}.{m.group(4)}"
    m = re.match(_BLOCK + r"\.(.*)$", key)
    if m:
        rest = m.group(2)
        for a, b in _RENAMES:
            rest = re.sub(rf"(^|\.){a}\.", rf"\g<1>{b}.", rest)
        key = f"blocks.{m.group(1).replace('G_middle', 'middle')}.{rest}"
    return sn_key(key)


def generator_from_official(state: dict, dataset: str, source: str = "<state dict>") -> tuple[dict, bool]:
    """Convert an official ``CondConvGenerator`` state dict to semsynth key names and label
    space, dropping the unused BatchNorms (:data:`UNUSED_BN`).

    Args:
        state: the official state dict (a ``module.`` prefix is stripped).
        dataset: ``ade20k``, ``cityscapes`` or ``coco_stuff``.
        source: file name for errors.

    Returns:
        ``(state dict for CCFPSEGenerator without encoder.*, instance edge present)``.

    Raises:
        ConfigError: not a CC-FPSE generator or a label width that does not fit the dataset
            (names ``source``, the key, expected and found shapes).
    """
    preset(dataset, CODE)
    state = {k: v for k, v in strip_module(state).items() if not UNUSED_BN.match(k)}
    edge = detect_edge(state, _EDGE_KEY, dataset, source, CODE)
    index, n_off = input_index(dataset, edge)
    nf = int(state[_EDGE_KEY].shape[0])
    for key in list(state):
        if key == "fc.weight" and state[key].dim() == 4:
            remap_input_channels(state, "fc", index, n_off, source)
        elif key == _EDGE_KEY:
            remap_input_channels(state, "labelenc1.0.0", index, n_off, source)
        elif re.match(_BLOCK + r"\.(gen_weights[12]|gen_se_weights[12]|norm_s\.mlp_shared)\.0\.weight$", key):
            remap_input_channels(state, key[: -len(".weight")], index, n_off, source, extra=nf)
    out = {_key(k): v.clone() for k, v in state.items()}
    fill_num_batches_tracked(out)
    return out, edge


def official_config(state: dict, dataset: str, e_state: dict | None = None, g_source: str = "<generator>",
                    e_source: str = "<encoder>", edge: bool = False):
    """The semsynth :class:`~semsynth.config.Config` of an official CC-FPSE generator (and
    encoder) state dict.

    Raises:
        ConfigError: a dataset without a preset, or a state dict without the official
            layers (names ``g_source`` and the missing key).
    """
    from semsynth.config import Config
    from semsynth.methods.cc_fpse.generator import CCFPSEGeneratorConfig
    from semsynth.methods.cc_fpse.method import CCFPSEConfig
    from semsynth.model.official.common import data_config
    from semsynth.nn.encoder import EncoderConfig

    preset(dataset, CODE)
    state = strip_module(state)
    try:
        ngf = int(state[_EDGE_KEY].shape[0])
        hidden = int(state["head_0.gen_weights1.0.weight"].shape[0])
        fc = state["fc.weight"]
    except KeyError as exc:
        raise ConfigError(f"{g_source}: not an official CC-FPSE generator (missing {exc})") from None
    use_vae = fc.dim() == 2
    mode = "more" if "labelenc7.0.0.weight_orig" in state else "normal"
    enc = encoder_config(e_state, e_source) if e_state is not None else EncoderConfig()
    gen = CCFPSEGeneratorConfig(ngf=ngf, num_upsampling_layers=mode, hidden=hidden, spectral_norm=True,
                                use_vae=use_vae, z_dim=int(fc.shape[1]) if use_vae else 256, encoder=enc)
    return Config(method="cc_fpse", seed=0, data=data_config(dataset, edge), model=CCFPSEConfig(generator=gen))


def import_official(path: str | os.PathLike, dataset: str, out_dir: str | os.PathLike,
                    encoder: str | os.PathLike | None = None, which: str = "latest") -> Path:
    """Read an official CC-FPSE checkpoint and write a semsynth export folder.

    Args:
        path: a ``*_net_G.pth`` file or the official ``checkpoints/<name>`` folder (then
            ``<which>_net_G.pth``).
        dataset: ``ade20k``, ``cityscapes`` or ``coco_stuff``.
        out_dir: the export folder to write.
        encoder: the ``*_net_E.pth`` (needed with ``--use_vae``, the published recipe); by
            default the sibling ``<which>_net_E.pth`` of the generator file, if present.
        which: checkpoint prefix in a folder.

    Returns:
        The path of the export's ``export.json``.

    Raises:
        FileNotFoundError: a missing file or folder (named).
        ConfigError: not a CC-FPSE checkpoint, a label-width mismatch, a VAE generator
            without its encoder, or tensors that do not fit the inferred architecture (names
            the file, the key and expected vs. found shapes).
    """
    from semsynth.data import dataset_info
    from semsynth.model.build import build_generator

    preset(dataset, CODE)
    g_path, e_path = resolve_files(Path(path), which, None if encoder is None else str(encoder))
    g_off = load_pth(g_path, "CC-FPSE latest_net_G.pth")
    e_off = load_pth(e_path, "CC-FPSE latest_net_E.pth") if e_path is not None else None
    g_state, edge = generator_from_official(g_off, dataset, str(g_path))
    e_state = encoder_from_official(e_off, str(e_path)) if e_off is not None else None
    cfg = official_config(g_off, dataset, e_off, str(g_path), str(e_path), edge)
    info = dataset_info(cfg.data)
    gen = build_generator(cfg, info)
    return write_import(cfg, info, gen, g_state, e_state, g_path, e_path, edge, CODE, out_dir,
                        "pyramid.enc.0.0.parametrizations.weight.original")
