"""Official OASIS checkpoints in (and out): boschresearch/OASIS ``.pth`` ↔ semsynth.

The official training script saves ``checkpoints/<name>/models/<which>_G.pth``,
``<which>_EMA.pth`` and ``<which>_D.pth`` (``which`` = ``latest``, ``best`` or an
iteration), each a plain ``state_dict`` of ``OASIS_Generator`` / ``OASIS_Discriminator``
(``models/generator.py``, ``models/discriminator.py``, ``models/norms.py``). The networks
are the same as semsynth's (:mod:`semsynth.methods.oasis.generator`,
:mod:`semsynth.methods.oasis.discriminator`); what differs:

* **Key names.** SPADE's ``first_norm`` / ``mlp_shared`` / ``mlp_gamma`` / ``mlp_beta`` are
  ``norm`` / ``shared`` / ``gamma`` / ``beta`` here; the discriminator's ``body_down`` /
  ``body_up`` / ``layer_up_last`` are ``down`` / ``up`` / ``classifier``, and its convs sit
  in ``nn.Sequential`` wrappers there (``conv1.0``, ``conv1.1`` or ``conv1.2``,
  ``conv2.1``). Spectral norm: the official code uses ``torch.nn.utils.spectral_norm``
  (``weight_orig``, ``weight_u``, ``weight_v``), semsynth the parametrisation
  (``parametrizations.weight.original``, ``.0._u``, ``.0._v``). In eval mode both compute
  ``W / (uᵀ W v)`` from the stored vectors, so the effective weights are identical.
* **Label space** (the one-hot channels after the ``z_dim`` noise channels, which come
  first in both codes):

  - ADE20K: the same 151 channels (0 = "other", the don't-care).
  - Cityscapes: official ``semantic_nc`` = 35 (34 labelIds + a don't-care channel that
    labelIds never use); semsynth uses the 34 labelIds. Channel 34 is dropped (its
    one-hot input is always 0, so the images do not change); the discriminator's logit
    for it is dropped too.
  - COCO-Stuff: official channel 0 is the don't-care (file value 255) and channel ``k+1``
    is file value ``k``; semsynth's id ``k`` is file value ``k`` and the don't-care is
    id 182. Channels are permuted accordingly, in G's inputs and D's outputs.

:func:`import_official` writes a semsynth export (:mod:`semsynth.model.export`), which
``semsynth sample`` / ``eval`` and the web editor accept. Checked against the official
code run locally: ``docs/check_official_oasis.py`` and ``docs/results.md``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from semsynth.model.official.common import load_pth, load_strict
from semsynth.types import ConfigError

__all__ = ["OFFICIAL_DATASETS", "channel_map", "generator_from_official", "generator_to_official",
           "discriminator_from_official", "discriminator_to_official", "import_official",
           "official_config"]

#: dataset → (official semantic_nc, output height, output width) of the official loaders.
OFFICIAL_DATASETS = {"ade20k": (151, 256, 256), "cityscapes": (35, 256, 512), "coco_stuff": (183, 256, 256)}

_SPADE_RENAMES = (("first_norm", "norm"), ("mlp_shared", "shared"), ("mlp_gamma", "gamma"), ("mlp_beta", "beta"))
_SN_SUFFIX = {"weight_orig": "parametrizations.weight.original", "weight_u": "parametrizations.weight.0._u",
              "weight_v": "parametrizations.weight.0._v"}


def channel_map(dataset: str) -> list[int]:
    """The official one-hot channel of each semsynth label id of ``dataset``.

    Returns:
        A list of length semsynth ``semantic_nc``: entry ``i`` = official channel of id ``i``
        (ADE20K: ``i``; Cityscapes: ``i`` for ids 0-33, official channel 34 unused;
        COCO-Stuff: ``i + 1`` for ids 0-181, ``0`` for the don't-care id 182).

    Raises:
        ConfigError: a dataset without an official OASIS preset.
    """
    if dataset == "ade20k":
        return list(range(151))
    if dataset == "cityscapes":
        return list(range(34))
    if dataset == "coco_stuff":
        return [i + 1 for i in range(182)] + [0]
    raise ConfigError(f"--dataset {dataset!r}: the official OASIS code has presets for "
                      f"{sorted(OFFICIAL_DATASETS)} only")


def _strip_module(state: dict) -> dict:
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def _sn_key(key: str) -> str:
    stem, _, leaf = key.rpartition(".")
    return f"{stem}.{_SN_SUFFIX[leaf]}" if leaf in _SN_SUFFIX else key


def _sn_key_back(key: str) -> str:
    for off, ours in _SN_SUFFIX.items():
        if key.endswith("." + ours):
            return key[: -len(ours)] + off
    return key


def _is_cond_conv(key: str) -> bool:
    """Weights whose input channels are (noise ⊕ one-hot label map): G's first conv and
    every SPADE shared conv."""
    return key == "fc.weight" or bool(re.search(r"\.(mlp_shared|shared)\.0\.weight$", key))


def _check_cond_width(state: dict, n_off: int, z_dim: int, source: str) -> None:
    w = state.get("fc.weight")
    if w is None or "conv_img.weight" not in state:
        found = ", ".join(list(state)[:4]) + (", ..." if len(state) > 4 else "")
        raise ConfigError(f"{source}: not an OASIS generator state dict (no fc.weight / conv_img.weight; "
                          f"keys: {found})")
    expected = n_off + z_dim
    if w.dim() != 4 or w.shape[1] != expected:
        hint = ("; a model trained with --no_3dnoise: pass --z-dim 0" if w.dim() == 4 and w.shape[1] == n_off
                else "; wrong --dataset or --z-dim?")
        raise ConfigError(
            f"{source}: fc.weight has shape {tuple(w.shape)}, expected (C, {expected}, k, k) = "
            f"{n_off} official label channels + z_dim {z_dim} noise channels{hint}")


def generator_from_official(state: dict, dataset: str, z_dim: int = 64, source: str = "<state dict>") -> dict:
    """Convert an official ``OASIS_Generator`` state dict to semsynth key names and label space.

    Args:
        state: the official state dict (a ``module.`` prefix is stripped).
        dataset: ``ade20k``, ``cityscapes`` or ``coco_stuff``.
        z_dim: noise channels the checkpoint was trained with (official default 64; 0 for
            ``--no_3dnoise``).
        source: file name for errors.

    Returns:
        A state dict for :class:`~semsynth.methods.oasis.generator.OASISGenerator`.

    Raises:
        ConfigError: not an OASIS generator, or a label-channel count that does not match
            the dataset (names ``source``, the key, expected and found shapes).
    """
    n_off = OFFICIAL_DATASETS.get(dataset, (None,))[0]
    cmap = channel_map(dataset)
    state = _strip_module(state)
    _check_cond_width(state, n_off, z_dim, source)
    index = list(range(z_dim)) + [z_dim + c for c in cmap]
    out = {}
    for key, value in state.items():
        if _is_cond_conv(key):
            value = value[:, index]
        new = key
        for a, b in _SPADE_RENAMES:
            new = new.replace(f".{a}.", f".{b}.")
        out[_sn_key(new)] = value.clone()
    for key in list(out):  # SynchronizedBatchNorm2d state dicts may lack the counter
        if key.endswith(".norm.running_mean"):
            out.setdefault(key[: -len("running_mean")] + "num_batches_tracked", torch.tensor(0))
    return out


def generator_to_official(state: dict, dataset: str, z_dim: int = 64) -> dict:
    """Inverse of :func:`generator_from_official`: semsynth generator state → official key
    names and label space (official channels that semsynth does not have are zero).

    Args:
        state: an :class:`~semsynth.methods.oasis.generator.OASISGenerator` state dict;
            its first conv and SPADE shared convs take ``(z_dim + semantic_nc)`` channels.
        dataset: ``ade20k``, ``cityscapes`` or ``coco_stuff``.
        z_dim: noise channels of ``state``.

    Raises:
        ConfigError: a dataset without an official preset (:func:`channel_map`).

    Returns:
        A state dict that ``OASIS_Generator(opt).load_state_dict`` accepts (with
        ``opt.semantic_nc`` of the official preset).
    """
    n_off = OFFICIAL_DATASETS[dataset][0]
    cmap = channel_map(dataset)
    out = {}
    for key, value in state.items():
        if _is_cond_conv(key):
            full = value.new_zeros(value.shape[0], z_dim + n_off, *value.shape[2:])
            full[:, :z_dim] = value[:, :z_dim]
            full[:, [z_dim + c for c in cmap]] = value[:, z_dim:]
            value = full
        new = _sn_key_back(key)
        for a, b in _SPADE_RENAMES:
            new = new.replace(f".{b}.", f".{a}.")
        out[new] = value.clone()
    return out


def _d_key_from_official(key: str) -> str:
    key = key.replace("body_down.", "down.").replace("body_up.", "up.").replace("layer_up_last.", "classifier.")
    key = re.sub(r"\.conv1\.[0-2]\.", ".conv1.", key)
    key = re.sub(r"\.conv2\.[0-1]\.", ".conv2.", key)
    return _sn_key(key)


def discriminator_from_official(state: dict, dataset: str, source: str = "<state dict>") -> dict:
    """Convert an official ``OASIS_Discriminator`` state dict (N+1 outputs in the official
    label space) to semsynth's :class:`~semsynth.methods.oasis.discriminator.OASISDiscriminator`.

    Raises:
        ConfigError: not an OASIS discriminator, or a classifier whose output count is not
            the dataset's official ``semantic_nc + 1`` (names the file and the shapes).
    """
    n_off = OFFICIAL_DATASETS.get(dataset, (None,))[0]
    cmap = channel_map(dataset)
    state = _strip_module(state)
    w = state.get("layer_up_last.weight")
    if w is None:
        raise ConfigError(f"{source}: not an OASIS discriminator state dict (no layer_up_last.weight)")
    if w.shape[0] != n_off + 1:
        raise ConfigError(f"{source}: layer_up_last.weight has shape {tuple(w.shape)}, expected "
                          f"({n_off + 1}, C, 1, 1) for {dataset} (official semantic_nc {n_off} + fake)")
    rows = [0] + [1 + c for c in cmap]
    out = {}
    for key, value in state.items():
        if key.startswith("layer_up_last."):
            value = value[rows]
        out[_d_key_from_official(key)] = value.clone()
    return out


def discriminator_to_official(state: dict, dataset: str) -> dict:
    """Inverse of :func:`discriminator_from_official`: semsynth discriminator state →
    official key names (``nn.Sequential`` positions of ``conv1``/``conv2``) and output
    rows; rows of official classes semsynth lacks (Cityscapes' channel 34) are zero."""
    n_off = OFFICIAL_DATASETS[dataset][0]
    cmap = channel_map(dataset)
    out = {}
    for key, value in state.items():
        new = _sn_key_back(key)
        m = re.match(r"(down|up)\.(\d+)\.(conv1|conv2)\.(.*)$", new)
        if m:
            part, i, conv, rest = m.group(1), int(m.group(2)), m.group(3), m.group(4)
            if conv == "conv2":
                pos = 1
            else:
                pos = 0 if (part == "down" and i == 0) else (1 if part == "down" else 2)
            new = f"{part}.{i}.{conv}.{pos}.{rest}"
        new = re.sub(r"^down\.", "body_down.", new)
        new = re.sub(r"^up\.", "body_up.", new)
        new = new.replace("classifier.", "layer_up_last.")
        if key.startswith("classifier."):
            full = value.new_zeros(n_off + 1, *value.shape[1:])
            full[[0] + [1 + c for c in cmap]] = value
            value = full
        out[new] = value.clone()
    return out


def official_config(state: dict, dataset: str, z_dim: int = 64, d_state: dict | None = None,
                    g_source: str = "<generator>", d_source: str = "<discriminator>"):
    """The semsynth :class:`~semsynth.config.Config` of an official generator (and
    discriminator) state dict: widths, depth, SPADE hidden width and kernel, spectral norm
    inferred from the tensor shapes; data size and paper settings of the official preset.

    Args:
        state: the official generator state dict.
        dataset: ``ade20k``, ``cityscapes`` or ``coco_stuff``.
        z_dim: noise channels.
        d_state: the official discriminator state dict, if any (its widths are inferred too).
        g_source, d_source: file names for errors.

    Raises:
        ConfigError: a dataset without an official preset, or a state dict without the
            official blocks (names ``g_source`` / ``d_source`` and the missing key).
    """
    from semsynth.config import Config, DataConfig
    from semsynth.methods.oasis.discriminator import OASISDiscriminatorConfig
    from semsynth.methods.oasis.generator import OASISGeneratorConfig
    from semsynth.methods.oasis.method import OASISConfig

    _, height, width = OFFICIAL_DATASETS.get(dataset, (None, 0, 0))
    channel_map(dataset)
    state = _strip_module(state)
    blocks = {int(k.split(".")[1]) for k in state if re.match(r"body\.\d+\.", k)}
    if not blocks:
        raise ConfigError(f"{g_source}: not an official OASIS generator (no body.<i>.* SPADE blocks)")
    try:
        nblocks = 1 + max(blocks)
        conv = "weight_orig" if "body.0.conv_1.weight_orig" in state else "weight"
        channels = [state["body.0.norm_0.mlp_gamma.weight"].shape[0]]
        channels += [state[f"body.{i}.conv_1.{conv}"].shape[0] for i in range(nblocks)]
        shared = state["body.0.norm_0.mlp_shared.0.weight"]
    except KeyError as exc:
        raise ConfigError(f"{g_source}: not an official OASIS generator (missing {exc})") from None
    gen = OASISGeneratorConfig(channels=tuple(int(c) for c in channels), z_dim=z_dim, spade_hidden=int(shared.shape[0]),
                          spade_kernel=int(shared.shape[-1]), spectral_norm=conv == "weight_orig")
    disc = OASISDiscriminatorConfig()
    if d_state is not None:
        d_state = _strip_module(d_state)
        down = {int(k.split(".")[1]) for k in d_state if re.match(r"body_down\.\d+\.", k)}
        if not down:
            raise ConfigError(f"{d_source}: not an official OASIS discriminator (no body_down.<i>.* blocks)")
        dconv = "weight_orig" if "body_down.0.conv1.0.weight_orig" in d_state else "weight"
        try:
            disc = OASISDiscriminatorConfig(
                channels=tuple(int(d_state[f"body_down.{i}.conv1.{0 if i == 0 else 1}.{dconv}"].shape[0])
                               for i in range(1 + max(down))),
                last_channels=int(d_state["layer_up_last.weight"].shape[1]), spectral_norm=dconv == "weight_orig")
        except KeyError as exc:
            raise ConfigError(f"{d_source}: not an official OASIS discriminator (missing {exc})") from None
    lm = 5.0 if dataset == "cityscapes" else 10.0
    model = OASISConfig(generator=gen, discriminator=disc, lambda_labelmix=lm, labelmix_mask="batch", init="official")
    load = (286, 286) if dataset in ("ade20k", "coco_stuff") else (None, None)
    data = DataConfig(dataset=dataset, height=height, width=width, load_height=load[0], load_width=load[1],
                      flip=True, cache=False)
    return Config(method="oasis", seed=0, data=data, model=model)


def _resolve_files(path: Path, which: str) -> tuple[Path, Path | None]:
    """(generator file, discriminator file or None) for a file or a ``models/`` folder."""
    if path.is_dir():
        for suffix in ("EMA", "G"):
            g = path / f"{which}_{suffix}.pth"
            if g.is_file():
                break
        else:
            raise FileNotFoundError(f"{path}: no {which}_EMA.pth or {which}_G.pth in this folder "
                                    f"(the official checkpoints/<name>/models/)")
    else:
        g = path
        if not g.is_file():
            raise FileNotFoundError(f"official checkpoint not found: {g}")
    m = re.match(r"(.*)_(EMA|G|D)\.pth$", g.name)
    if m and m.group(2) == "D":
        raise ConfigError(f"{g}: a discriminator file; pass the *_EMA.pth or *_G.pth generator (or the folder)")
    d = g.with_name(f"{m.group(1)}_D.pth") if m else None
    return g, (d if d is not None and d.is_file() else None)


def import_official(path: str | os.PathLike, dataset: str, out_dir: str | os.PathLike, z_dim: int = 64,
                    which: str = "latest") -> Path:
    """Read an official OASIS checkpoint and write a semsynth export folder.

    Args:
        path: a ``*_EMA.pth`` / ``*_G.pth`` file, or the official ``checkpoints/<name>/models``
            folder (then ``<which>_EMA.pth`` is used, else ``<which>_G.pth``). A sibling
            ``*_D.pth`` is converted too and kept as ``discriminator.safetensors``.
        dataset: ``ade20k``, ``cityscapes`` or ``coco_stuff`` (the official presets).
        out_dir: the export folder to write.
        z_dim: noise channels of the checkpoint (official default 64).
        which: checkpoint prefix in a folder (``latest``, ``best`` or an iteration).

    Returns:
        The path of the export's ``export.json``.

    Raises:
        FileNotFoundError: a missing file or folder (named).
        ConfigError: not an OASIS checkpoint, a class-count mismatch, or tensors that do not
            fit the inferred architecture (names the file and expected vs. found shapes).
    """
    from semsynth.data import dataset_info
    from semsynth.methods.oasis.discriminator import OASISDiscriminator
    from semsynth.methods.oasis.generator import OASISGenerator
    from semsynth.model.export import write_export

    channel_map(dataset)
    g_path, d_path = _resolve_files(Path(path), which)
    g_off = load_pth(g_path, "OASIS *_G/_EMA/_D.pth")
    _check_cond_width(_strip_module(g_off), OFFICIAL_DATASETS[dataset][0], z_dim, str(g_path))
    d_off = load_pth(d_path, "OASIS *_G/_EMA/_D.pth") if d_path is not None else None
    if d_off is not None and "layer_up_last.weight" not in _strip_module(d_off):
        raise ConfigError(f"{d_path}: not an OASIS discriminator state dict (no layer_up_last.weight)")
    cfg = official_config(g_off, dataset, z_dim, d_off, str(g_path), str(d_path))
    info = dataset_info(cfg.data)  # fixed label space; ADE20K class names if its folder is found
    g_state = generator_from_official(g_off, dataset, z_dim, str(g_path))
    gen = OASISGenerator(cfg.model.generator, info.semantic_nc, cfg.data.height, cfg.data.width)
    load_strict(gen.state_dict(), g_state, g_path, "OASIS")
    gen.load_state_dict(g_state, strict=True)
    extra_tensors = {}
    if d_off is not None:
        d_state = discriminator_from_official(d_off, dataset, str(d_path))
        load_strict(OASISDiscriminator(cfg.model.discriminator, info.semantic_nc).state_dict(), d_state, d_path, "OASIS")
        extra_tensors["discriminator"] = d_state
    is_ema = g_path.name.endswith("_EMA.pth")
    info_dict = info.to_dict()
    extra = {"imported_from": {"file": str(g_path), "discriminator": str(d_path) if d_path else None,
                               "code": "boschresearch/OASIS", "dataset": dataset, "z_dim": z_dim}}
    return write_export(out_dir, cfg, gen.state_dict(), info_dict, step=0, images_seen=0, ema=is_ema,
                        extra=extra, extra_tensors=extra_tensors)
