"""What the official SPADE and CC-FPSE checkpoints share: label spaces, the instance-edge
channel, old-style spectral norm, the VAE encoder, file handling.

xh-liu/CC-FPSE is built on the NVlabs/SPADE code base: the same ``data/`` loaders (one-hot
layout), the same ``ConvEncoder`` and the same ``util.save_network`` files
(``checkpoints/<name>/<which>_net_G.pth``, ``<which>_net_E.pth`` with ``--use_vae``,
``<which>_net_D.pth``; each a plain ``state_dict``, no ``module.`` prefix, though one is
stripped if present).

**Label space** (``models/pix2pix_model.py``, ``preprocess_input``): the one-hot map has
``label_nc (+1 with contain_dontcare_label)`` channels; with instance maps (not
``--no_instance``) the instance-edge map is concatenated **after** them, as the last
channel. Per dataset (:data:`LABEL_CHANNELS` gives the official channel of each semsynth
id; edit it there):

* ADE20K (``label_nc`` 150 + don't-care = 151, no instance maps): the official loader
  subtracts 1 (``data/ade20k_dataset.py``), so file value ``k ≥ 1`` is channel ``k − 1``
  and "other" (0) is channel 150; semsynth's id is the file value. A permutation.
* Cityscapes (``label_nc`` 35, edge on by default: 36 channels): labelIds 0-33 are the same
  channels; official channel 34 is never set by labelIds and is dropped (as the OASIS
  importer does); the edge channel (official 35) becomes semsynth's last input channel.
* COCO-Stuff (182 + don't-care = 183, edge on by default: 184): file value ``k`` is channel
  ``k``, 255 → channel 182 = semsynth's don't-care id 182. The identity; the edge (183) last.

The edge channel needs a semsynth generator built with one more input channel
(``data.instance_edges``); a checkpoint with the edge channel is refused with a clear
message by a semsynth whose config has no such setting.

**Spectral norm.** The official code uses ``torch.nn.utils.spectral_norm`` (``weight_orig``,
``weight_u``, ``weight_v``), semsynth the parametrisation (``parametrizations.weight.original``,
``.0._u``, ``.0._v``). In eval mode neither does a power iteration: both use ``W / (uᵀ W v)``
with the stored vectors, so the mapped weights give identical images. Where input channels
are permuted or dropped in a spectral-norm conv (CC-FPSE's first label-pyramid conv), ``v``
is permuted the same way, and when a channel is dropped ``v`` is rescaled so that ``uᵀ W v``
keeps the official value (the dropped channel's one-hot input is always 0, so the official
images are then reproduced exactly; a later training-mode power step renormalises ``v``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from semsynth.types import ConfigError

__all__ = ["Preset", "PRESETS", "LABEL_CHANNELS", "input_index", "detect_edge", "remap_input_channels",
           "sn_key", "strip_module", "encoder_from_official", "encoder_config", "load_pth", "resolve_files",
           "load_strict"]


@dataclass(frozen=True)
class Preset:
    """An official dataset preset (``data/<dataset>_dataset.py`` defaults).

    Attributes:
        label_channels: one-hot channels before the edge (``label_nc`` + don't-care).
        edge: the dataset has instance maps, and the instance-edge channel is on by default
            (a checkpoint may have it or not: ``--no_instance``).
        height, width: output size (``crop_size``, ``crop_size / aspect_ratio``).
        upsampling: ``num_upsampling_layers`` default.
        load: training ``load_size`` (``resize_and_crop``) or ``None`` (``fixed``).
    """

    label_channels: int
    edge: bool
    height: int
    width: int
    upsampling: str
    load: int | None


PRESETS = {
    "ade20k": Preset(151, False, 256, 256, "normal", 286),
    "cityscapes": Preset(35, True, 256, 512, "more", None),
    "coco_stuff": Preset(183, True, 256, 256, "normal", 286),
}

#: dataset → official one-hot channel of each semsynth label id (list index = semsynth id).
LABEL_CHANNELS = {
    "ade20k": [150] + list(range(150)),  # "other" (0) is official channel 150; id k is k - 1
    "cityscapes": list(range(34)),  # labelIds 0-33; official channel 34 (never set) dropped
    "coco_stuff": list(range(183)),  # 0-181 and the don't-care 182 (file value 255)
}

_SN_SUFFIX = {"weight_orig": "parametrizations.weight.original", "weight_u": "parametrizations.weight.0._u",
              "weight_v": "parametrizations.weight.0._v"}


def preset(dataset: str, code: str) -> Preset:
    """The official preset of ``dataset``; ``code`` names the repository in the error."""
    if dataset not in PRESETS:
        raise ConfigError(f"--dataset {dataset!r}: the official {code} code has presets for {sorted(PRESETS)} only")
    return PRESETS[dataset]


def input_index(dataset: str, edge: bool) -> tuple[list[int], int]:
    """``(index, n_official)``: semsynth input channel ``i`` is official channel ``index[i]``.

    semsynth's input is ``[one-hot ids..., edge]`` (the edge last, only with ``edge``); the
    official input has ``n_official`` = label channels (+ 1 edge) channels.
    """
    p = PRESETS[dataset]
    index = list(LABEL_CHANNELS[dataset])
    if edge:
        index.append(p.label_channels)
    return index, p.label_channels + int(edge)


def detect_edge(state: dict, key: str, dataset: str, source: str, code: str) -> bool:
    """Whether the official generator takes the instance-edge channel, from the input width
    of the conv ``key`` (a 4-D weight whose input channels are the label map).

    Raises:
        ConfigError: a missing key, or a width that is neither the preset's label channels
            nor one more (names ``source``, the key, the expected and found shapes).
    """
    p = PRESETS[dataset]
    w = state.get(key)
    if w is None:
        found = ", ".join(list(state)[:4]) + (", ..." if len(state) > 4 else "")
        raise ConfigError(f"{source}: not an official {code} generator state dict (no {key}; keys: {found})")
    widths = (p.label_channels, p.label_channels + 1) if p.edge else (p.label_channels,)
    if w.dim() != 4 or w.shape[1] not in widths:
        raise ConfigError(
            f"{source}: {key} has shape {tuple(w.shape)}, expected (C, {p.label_channels}, k, k) for {dataset} "
            f"(official label_nc + don't-care)" + (f" or (C, {p.label_channels + 1}, k, k) with the instance-edge "
                                                   f"channel" if p.edge else "") + "; wrong --dataset?")
    return w.shape[1] == p.label_channels + 1


def strip_module(state: dict) -> dict:
    """Drop a DataParallel ``module.`` prefix."""
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def sn_key(key: str) -> str:
    """Old-style spectral-norm names → parametrisation names (other keys unchanged)."""
    stem, _, leaf = key.rpartition(".")
    return f"{stem}.{_SN_SUFFIX[leaf]}" if leaf in _SN_SUFFIX else key


def remap_input_channels(state: dict, stem: str, index: list[int], n_off: int, source: str,
                         extra: int = 0) -> None:
    """Select/permute the label input channels of the conv ``stem`` in ``state`` (in place).

    The conv's input is ``n_off`` official label(+edge) channels followed by ``extra`` other
    channels (CC-FPSE: the pyramid features), which keep their order. A spectral-norm conv
    (``stem.weight_orig``) has ``v`` permuted alike and, when channels are dropped, rescaled
    so that ``uᵀ W v`` (eval-mode σ) is unchanged.

    Raises:
        ConfigError: the weight's input width is not ``n_off + extra`` (names the file,
            the key, expected and found shapes).
    """
    sn = f"{stem}.weight_orig" in state
    wkey = f"{stem}.weight_orig" if sn else f"{stem}.weight"
    w = state[wkey]
    if w.dim() != 4 or w.shape[1] != n_off + extra:
        raise ConfigError(f"{source}: {wkey} has shape {tuple(w.shape)}, expected "
                          f"({w.shape[0]}, {n_off + extra}, k, k) ({n_off} label channels"
                          + (f" + {extra} pyramid channels" if extra else "") + ")")
    cols = list(index) + list(range(n_off, n_off + extra))
    new_w = w[:, cols].clone()
    if sn:
        u, v = state[f"{stem}.weight_u"], state[f"{stem}.weight_v"]
        k = w[0, 0].numel()
        if v.numel() != w.shape[1] * k or u.numel() != w.shape[0]:
            raise ConfigError(f"{source}: {stem}.weight_v has shape {tuple(v.shape)} and weight_u "
                              f"{tuple(u.shape)}, expected ({w.shape[1] * k},) and ({w.shape[0]},) for "
                              f"{wkey} {tuple(w.shape)}")
        new_v = v.view(w.shape[1], k)[cols].reshape(-1).clone()
        if len(set(cols)) < w.shape[1]:  # channels dropped: keep the official sigma
            sigma = torch.dot(u, torch.mv(w.reshape(w.shape[0], -1), v))
            kept = torch.dot(u, torch.mv(new_w.reshape(w.shape[0], -1), new_v))
            if kept == 0:
                raise ConfigError(f"{source}: {wkey}: the kept channels give a zero spectral-norm estimate")
            new_v = new_v * (sigma / kept)
        state[f"{stem}.weight_v"] = new_v
    state[wkey] = new_w


def encoder_from_official(state: dict, source: str) -> dict:
    """An official ``ConvEncoder`` state dict (``layer<j>.0.weight_orig``, ``fc_mu``,
    ``fc_var``; ``norm_E spectralinstance``) → semsynth's ``encoder.*`` keys
    (:class:`semsynth.nn.encoder.ConvEncoder`).

    Raises:
        ConfigError: not an official encoder, or a ``norm_E`` other than ``spectralinstance``
            (names ``source`` and the key).
    """
    state = strip_module(state)
    if "fc_mu.weight" not in state or "layer1.0.weight_orig" not in state:
        found = ", ".join(list(state)[:4]) + (", ..." if len(state) > 4 else "")
        raise ConfigError(f"{source}: not an official ConvEncoder state dict with norm_E spectralinstance "
                          f"(no fc_mu.weight / layer1.0.weight_orig; keys: {found})")
    out = {}
    for key, value in state.items():
        m = re.match(r"layer(\d+)\.(.*)$", key)
        if m:
            if not m.group(2).startswith("0."):
                raise ConfigError(f"{source}: {key}: only norm_E spectralinstance (a parameter-free "
                                  f"InstanceNorm) is supported")
            new = f"encoder.layers.{int(m.group(1)) - 1}.{m.group(2)}"
        elif re.match(r"fc_(mu|var)\.", key):
            new = f"encoder.{key}"
        else:
            raise ConfigError(f"{source}: unexpected key {key} for an official ConvEncoder")
        out[sn_key(new)] = value.clone()
    return out


def encoder_config(state: dict, source: str):
    """The :class:`semsynth.nn.encoder.EncoderConfig` of an official encoder state dict
    (``ndf`` = ``ngf`` of the official run; ``input_size`` 4·2^layers, 256 for the official 6)."""
    from semsynth.nn.encoder import EncoderConfig

    state = strip_module(state)
    layers = sorted({int(m.group(1)) for k in state if (m := re.match(r"layer(\d+)\.", k))})
    if not layers or "layer1.0.weight_orig" not in state:
        raise ConfigError(f"{source}: not an official ConvEncoder state dict (no layer1.0.weight_orig)")
    return EncoderConfig(ndf=int(state["layer1.0.weight_orig"].shape[0]), input_size=4 * 2 ** len(layers),
                         norm="spectralinstance")


def fill_num_batches_tracked(out: dict) -> None:
    """Add ``num_batches_tracked`` to BatchNorms that lack it (older / synchronized BN files)."""
    for key in list(out):
        if key.endswith(".running_mean"):
            out.setdefault(key[: -len("running_mean")] + "num_batches_tracked", torch.tensor(0))


def load_pth(path: Path, what: str) -> dict:
    """A state dict of tensors from ``path`` (weights-only unpickling).

    Raises:
        FileNotFoundError: no file; ConfigError: unreadable or not a state dict (named).
    """
    if not path.is_file():
        raise FileNotFoundError(f"official checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"{path}: cannot read as a PyTorch state dict ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path}: not a state dict of tensors (an official {what} file)")
    return state


def resolve_files(path: Path, which: str, encoder: str | None) -> tuple[Path, Path | None]:
    """(generator file, encoder file or None) for a ``*_net_G.pth`` file or a
    ``checkpoints/<name>`` folder; without ``encoder``, a sibling ``<which>_net_E.pth`` is
    used when present."""
    if path.is_dir():
        g = path / f"{which}_net_G.pth"
        if not g.is_file():
            raise FileNotFoundError(f"{path}: no {which}_net_G.pth in this folder (the official checkpoints/<name>/)")
    else:
        g = path
        if not g.is_file():
            raise FileNotFoundError(f"official checkpoint not found: {g}")
    m = re.match(r"(.*)_net_([GDE])\.pth$", g.name)
    if m and m.group(2) != "G":
        raise ConfigError(f"{g}: a{'n encoder' if m.group(2) == 'E' else ' discriminator'} file; pass the "
                          f"*_net_G.pth generator (or the folder)" + (" and the encoder with --encoder"
                                                                      if m.group(2) == "E" else ""))
    if encoder is not None:
        e = Path(encoder)
        if not e.is_file():
            raise FileNotFoundError(f"--encoder: official checkpoint not found: {e}")
        return g, e
    sibling = g.with_name(f"{m.group(1)}_net_E.pth") if m else None
    return g, (sibling if sibling is not None and sibling.is_file() else None)


def load_strict(own: dict, state: dict, source: Path | str, what: str) -> None:
    """Check ``state`` against the semsynth state dict ``own`` (same keys and shapes).

    Raises:
        ConfigError: names ``source``, up to three missing / unexpected keys and shape
            mismatches as ``key: expected (...), found (...)``.
    """
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    bad = [f"{k}: expected {tuple(own[k].shape)}, found {tuple(state[k].shape)}"
           for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}" + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""))
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}" + (f" (+{len(unexpected) - 3} more)"
                                                           if len(unexpected) > 3 else ""))
        if bad:
            parts.append("shape mismatch " + "; ".join(bad[:3]))
        raise ConfigError(f"{source}: does not fit the {what} architecture (semsynth key names): " + ", ".join(parts))


def write_import(cfg, info, gen, g_state: dict, e_state: dict | None, g_path: Path, e_path: Path | None,
                 edge: bool, code: str, out_dir, width_key: str) -> Path:
    """Load the converted tensors into ``gen`` (checking each file's part separately) and
    write the semsynth export; returns the path of ``export.json``. ``width_key``: a semsynth
    weight whose input channels are the label input (ids, + edge).

    Raises:
        ConfigError: the instance-edge channel without semsynth support, a VAE generator
            without its encoder file or an encoder without a VAE generator, or tensors that do
            not fit (each error names its file).
    """
    from semsynth.model.export import write_export

    own = gen.state_dict()
    own_g = {k: v for k, v in own.items() if not k.startswith("encoder.")}
    own_e = {k: v for k, v in own.items() if k.startswith("encoder.")}
    n_in = int(own[width_key].shape[1])
    if edge and n_in != len(LABEL_CHANNELS[cfg.data.dataset]) + 1:
        raise ConfigError(
            f"{g_path}: the checkpoint takes the instance-edge channel (official input "
            f"{PRESETS[cfg.data.dataset].label_channels} label channels + edge), but this semsynth builds the "
            f"{cfg.data.dataset} generator with {n_in} input channels (no data.instance_edges support here); "
            f"import a model trained with --no_instance, or update semsynth")
    if own_e and e_state is None:
        raise ConfigError(f"{g_path}: a generator trained with --use_vae (fc is Linear); pass its encoder, "
                          f"e.g. --encoder {g_path.with_name(g_path.name.replace('_net_G', '_net_E'))}")
    if e_state is not None and not own_e:
        raise ConfigError(f"{e_path}: an encoder file, but {g_path} was trained without --use_vae "
                          f"(fc is a Conv2d on the label map)")
    load_strict(own_g, g_state, g_path, code + " generator")
    if e_state is not None:
        load_strict(own_e, e_state, e_path, code + " encoder")
    gen.load_state_dict({**g_state, **(e_state or {})}, strict=True)
    extra = {"imported_from": {"file": str(g_path), "encoder": str(e_path) if e_path else None, "code": code,
                               "dataset": cfg.data.dataset, "instance_edge": edge}}
    return write_export(out_dir, cfg, gen.state_dict(), info.to_dict(), step=0, images_seen=0, ema=False,
                        extra=extra)


def data_config(dataset: str, edge: bool):
    """The semsynth :class:`~semsynth.config.DataConfig` of an official preset; with
    ``edge``, ``instance_edges`` on where this semsynth has that setting."""
    import dataclasses

    from semsynth.config import DataConfig

    p = PRESETS[dataset]
    kw = dict(dataset=dataset, height=p.height, width=p.width, load_height=p.load, load_width=p.load,
              flip=True, cache=False)
    if edge and "instance_edges" in {f.name for f in dataclasses.fields(DataConfig)}:
        kw["instance_edges"] = True
    return DataConfig(**kw)
