"""``semsynth import-official --method spade|cc_fpse``: NVlabs/SPADE and xh-liu/CC-FPSE key
names, label spaces and instance edges in, the same images out.

No official code is needed: ``_spade_to_official`` / ``_ccfpse_to_official`` below write
state dicts with the official key names and shapes (``models/networks/{generator,
architecture,normalization,encoder,condconv}.py`` of both repositories) from semsynth's own
networks, written independently of the importer; a few shapes are checked by hand against
the official code. The comparison against the official code itself is in docs/results.md.
"""

import dataclasses
import re

import pytest
import torch
import torch.nn.functional as F

from semsynth.cli import main
from semsynth.methods.cc_fpse.generator import CCFPSEGenerator, CCFPSEGeneratorConfig
from semsynth.methods.spade.generator import SPADEGenerator, SPADEGeneratorConfig
from semsynth.model.official import cc_fpse as off_cc
from semsynth.model.official import spade as off_spade
from semsynth.model.official.common import LABEL_CHANNELS, PRESETS, input_index
from semsynth.nn.encoder import EncoderConfig
from semsynth.sample.sampler import Sampler
from semsynth.types import ConfigError

ENC = EncoderConfig(ndf=2, input_size=256)
SPADE_BLOCKS = {"head": "head_0", "middle_0": "G_middle_0", "middle_1": "G_middle_1"}


def _sn_back(key):
    for ours, off in ((".parametrizations.weight.original", ".weight_orig"),
                      (".parametrizations.weight.0._u", ".weight_u"), (".parametrizations.weight.0._v", ".weight_v")):
        if key.endswith(ours):
            return key[: -len(ours)] + off
    return key


def _widen(value, index, n_off, extra=0):
    """semsynth input channels → official: official channel index[i] = ours i; others 0."""
    full = value.new_zeros(value.shape[0], n_off + extra, *value.shape[2:])
    full[:, index] = value[:, : len(index)]
    full[:, n_off:] = value[:, len(index):]
    return full


def _split_encoder(state):
    g, e = {}, {}
    for k, v in state.items():
        if k.startswith("encoder."):
            k = re.sub(r"^layers\.(\d+)\.", lambda m: f"layer{int(m.group(1)) + 1}.", k[len("encoder."):])
            e[_sn_back(k)] = v.clone()
        else:
            g[k] = v
    return g, e


def _spade_to_official(state, dataset, edge):
    """A semsynth SPADEGenerator state → official (latest_net_G, latest_net_E or {})."""
    index, n_off = input_index(dataset, edge)
    g, e = _split_encoder(state)
    out = {}
    for key, value in g.items():
        if key.endswith(".shared.0.weight") or (key == "fc.weight" and value.dim() == 4):
            value = _widen(value, index, n_off)
        m = re.match(r"blocks\.(\w+?)\.(conv_[01s]|norm_[01s])\.(.*)$", key)
        if m:
            rest = m.group(3)
            rest = {"norm": "param_free_norm", "shared": "mlp_shared", "gamma": "mlp_gamma",
                    "beta": "mlp_beta"}.get(rest.split(".")[0], rest.split(".")[0]) + rest[len(rest.split(".")[0]):]
            key = f"{SPADE_BLOCKS.get(m.group(1), m.group(1))}.{m.group(2)}.{rest}"
        out[_sn_back(key)] = value.clone()
    return out, e


def _ccfpse_to_official(state, dataset, edge, nf):
    """A semsynth CCFPSEGenerator state → official (G with the three unused BatchNorms per
    block, E or {})."""
    index, n_off = input_index(dataset, edge)
    g, e = _split_encoder(state)
    out = {}
    for key, value in g.items():
        if key == "fc.weight" and value.dim() == 4:
            value = _widen(value, index, n_off)
        elif key == "pyramid.enc.0.0.parametrizations.weight.original":
            value = _widen(value, index, n_off)
        elif key == "pyramid.enc.0.0.parametrizations.weight.0._v":
            v = value.new_zeros(n_off, 9)
            v[index] = value.view(-1, 9)
            value = v.reshape(-1)
        elif re.search(r"\.(gen_\w+|norm_s\.shared)\.0\.weight$", key):
            value = _widen(value, index, n_off, extra=nf)
        m = re.match(r"pyramid\.(enc|lat|dec)\.(\d+)\.(.*)$", key)
        if m:
            name = {"enc": "labelenc", "lat": "labellat", "dec": "labeldec"}[m.group(1)]
            key = f"{name}{int(m.group(2)) + 1}.0.{m.group(3)}"
        m = re.match(r"blocks\.(\w+?)\.(.*)$", key)
        if m:
            rest = m.group(2).replace("gen_attention", "gen_se_weights").replace("norm_s.norm.", "norm_s.param_free_norm.")
            rest = rest.replace("norm_s.shared.", "norm_s.mlp_shared.").replace("norm_s.gamma.", "norm_s.mlp_gamma.")
            rest = rest.replace("norm_s.beta.", "norm_s.mlp_beta.")
            key = f"{m.group(1).replace('middle', 'G_middle')}.{rest}"
        out[_sn_back(key)] = value.clone()
    for block in {k.split(".")[0] for k in out if k.endswith(".norm_1.weight")}:
        fin, fmid = out[f"{block}.norm_1.weight"].numel(), out[f"{block}.norm_2.weight"].numel()
        for bn, c in (("conv_0.norm_layer", fin), ("norm_0", fmid), ("conv_2.norm_layer", fmid)):
            out.update({f"{block}.{bn}.weight": torch.randn(c), f"{block}.{bn}.bias": torch.randn(c),
                        f"{block}.{bn}.running_mean": torch.randn(c), f"{block}.{bn}.running_var": torch.rand(c),
                        f"{block}.{bn}.num_batches_tracked": torch.tensor(3)})
    return out, e


def _onehot(dataset, n_in, edge, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    n_ids = len(LABEL_CHANNELS[dataset])
    ids = torch.randint(0, n_ids, (2, h // 16, w // 16), generator=g).repeat_interleave(16, 1).repeat_interleave(16, 2)
    x = F.one_hot(ids, n_ids).permute(0, 3, 1, 2).float()
    if edge:
        x = torch.cat([x, (torch.rand(2, 1, h, w, generator=g) > 0.8).float()], 1)
    assert x.shape[1] == n_in
    return x


def _warm(gen, x):
    """Random BatchNorm statistics (as after training), then eval mode."""
    g = torch.Generator().manual_seed(x.shape[1])
    for m in gen.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.num_batches_tracked.fill_(5)
    return gen.eval()


def _spade(dataset, edge=False, use_vae=False, size=None, seed=0):
    torch.manual_seed(seed)
    p = PRESETS[dataset]
    h, w = size or (p.height, p.width)
    n_in = len(LABEL_CHANNELS[dataset]) + edge
    cfg = SPADEGeneratorConfig(ngf=2, num_upsampling_layers=p.upsampling, use_vae=use_vae, spade_hidden=4,
                               encoder=ENC)
    gen = SPADEGenerator(cfg, n_in, h, w)
    return _warm(gen, _onehot(dataset, n_in, edge, h, w, seed + 1)), cfg


def _ccfpse(dataset, edge=False, use_vae=False, size=None, seed=0):
    torch.manual_seed(seed)
    p = PRESETS[dataset]
    h, w = size or (p.height, p.width)
    n_in = len(LABEL_CHANNELS[dataset]) + edge
    cfg = CCFPSEGeneratorConfig(ngf=2, num_upsampling_layers=p.upsampling, hidden=4, use_vae=use_vae, encoder=ENC)
    gen = CCFPSEGenerator(cfg, n_in, h, w)
    return _warm(gen, _onehot(dataset, n_in, edge, h, w, seed + 1)), cfg


def test_official_key_names_and_shapes_by_hand():
    """Shapes from the official code at ADE20K (151 label channels, no edge), ngf 2, hidden 4."""
    g, _ = _spade("ade20k", use_vae=True)
    off, e = _spade_to_official(g.state_dict(), "ade20k", False)
    assert off["fc.weight"].shape == (16 * 2 * 8 * 8, 256)  # Linear(z_dim, 16·ngf·sh·sw)
    assert off["head_0.conv_0.weight_orig"].shape == (32, 32, 3, 3)
    assert off["head_0.conv_0.weight_u"].shape == (32,) and off["head_0.conv_0.weight_v"].shape == (32 * 9,)
    assert off["head_0.norm_0.mlp_shared.0.weight"].shape == (4, 151, 3, 3)
    assert off["head_0.norm_0.param_free_norm.running_var"].shape == (32,)
    assert off["up_0.conv_s.weight_orig"].shape == (16, 32, 1, 1) and "up_0.conv_s.bias" not in off
    assert off["G_middle_1.norm_1.mlp_gamma.weight"].shape == (32, 4, 3, 3)
    assert e["layer1.0.weight_orig"].shape == (2, 3, 3, 3) and "layer1.0.bias" not in e
    assert e["layer6.0.weight_orig"].shape == (16, 16, 3, 3) and e["fc_mu.weight"].shape == (256, 16 * 16)
    c, _ = _ccfpse("ade20k")
    off = _ccfpse_to_official(c.state_dict(), "ade20k", False, 2)[0]
    assert off["fc.weight"].shape == (32, 151, 3, 3)
    assert off["labelenc1.0.0.weight_orig"].shape == (2, 151, 3, 3) and off["labelenc1.0.0.weight_v"].shape == (151 * 9,)
    assert off["labelenc6.0.1.running_mean"].shape == (2,) and "labelenc7.0.0.weight_orig" not in off
    assert off["labellat5.0.0.weight_orig"].shape == (2, 2, 1, 1) and off["labeldec5.0.1.weight"].shape == (2,)
    assert off["head_0.gen_weights1.0.weight"].shape == (4, 151 + 2, 3, 3)
    assert off["up_0.gen_weights2.2.weight"].shape == (16 * 9, 4, 3, 3)  # official fout·9 = min(fin, fout)·9
    assert off["up_0.gen_se_weights1.2.weight"].shape == (16, 4, 3, 3)
    assert off["up_0.norm_s.mlp_shared.0.weight"].shape == (4, 153, 3, 3)
    assert off["up_0.conv_1.weight"].shape == (16, 32, 1, 1) and off["up_0.conv_0.norm_layer.weight"].shape == (32,)


def test_label_channel_maps_as_data():
    assert LABEL_CHANNELS["ade20k"][0] == 150 and LABEL_CHANNELS["ade20k"][1] == 0  # official: file value - 1
    assert input_index("cityscapes", True) == (list(range(34)) + [35], 36)  # channel 34 dropped, edge last
    assert input_index("cityscapes", False) == (list(range(34)), 35)
    assert input_index("coco_stuff", True) == (list(range(183)) + [183], 184)
    assert input_index("ade20k", False) == ([150] + list(range(150)), 151)


@pytest.mark.parametrize("use_vae", [False, True])
def test_spade_ade20k_import_round_trip_same_images(tmp_path, use_vae):
    g, cfg = _spade("ade20k", use_vae=use_vae)
    off_g, off_e = _spade_to_official(g.state_dict(), "ade20k", False)
    ck = tmp_path / "checkpoints" / "ade"
    ck.mkdir(parents=True)
    torch.save(off_g, ck / "latest_net_G.pth")
    if use_vae:
        torch.save(off_e, ck / "latest_net_E.pth")  # found as the sibling of the G file
    out = tmp_path / "export"
    assert main(["import-official", str(ck), "--method", "spade", "--dataset", "ade20k", "--out", str(out)]) == 0
    s = Sampler.from_checkpoint(out)
    if not use_vae:  # the encoder settings are not used then
        cfg = dataclasses.replace(cfg, encoder=EncoderConfig())
    assert s.config.method == "spade" and s.config.model.generator == cfg and s.info.semantic_nc == 151
    lab = torch.randint(0, 151, (1, 16, 16)).repeat_interleave(16, 1).repeat_interleave(16, 2)
    z = torch.randn(1, 256) if use_vae else None
    with torch.no_grad():
        expected = g(F.one_hot(lab, 151).permute(0, 3, 1, 2).float(), z)
    assert torch.equal(s.generate(lab, z=z), expected)
    if use_vae:
        img = torch.rand(2, 3, 64, 64) * 2 - 1  # resized to 256 inside
        with torch.no_grad():
            mu, logvar = s.generator.encoder(img)
            mu0, logvar0 = g.encoder(img)
        assert torch.equal(mu, mu0) and torch.equal(logvar, logvar0)


def test_ccfpse_ade20k_vae_import_round_trip_drops_unused_batchnorms(tmp_path):
    g, cfg = _ccfpse("ade20k", use_vae=True)
    off_g, off_e = _ccfpse_to_official(g.state_dict(), "ade20k", False, 2)
    unused = [k for k in off_g if re.search(r"\.(conv_0\.norm_layer|conv_2\.norm_layer|norm_0)\.", k)]
    assert len(unused) == 7 * 3 * 5
    # 2·fin + 4·min(fin, fout) parameters per block: 26,112 at ngf 64, here ngf 2
    assert sum(off_g[k].numel() for k in unused if k.endswith(("weight", "bias"))) == 26112 // 32
    torch.save(off_g, tmp_path / "latest_net_G.pth")
    torch.save(off_e, tmp_path / "enc.pth")
    out = tmp_path / "export"
    assert main(["import-official", str(tmp_path / "latest_net_G.pth"), "--method", "cc_fpse", "--dataset", "ade20k",
                 "--encoder", str(tmp_path / "enc.pth"), "--out", str(out)]) == 0
    s = Sampler.from_checkpoint(out)
    assert s.config.method == "cc_fpse" and s.config.model.generator == cfg
    lab = torch.randint(0, 151, (1, 16, 16)).repeat_interleave(16, 1).repeat_interleave(16, 2)
    z = torch.randn(1, 256)
    with torch.no_grad():
        expected = g(F.one_hot(lab, 151).permute(0, 3, 1, 2).float(), z)
    assert torch.equal(s.generate(lab, z=z), expected)
    # an unknown extra key (not one of the three unused BatchNorms) is refused, by name
    off_g["up_0.norm_3.weight"] = torch.zeros(4)
    torch.save(off_g, tmp_path / "latest_net_G.pth")
    with pytest.raises(ConfigError, match=r"latest_net_G\.pth.*unexpected.*up_0\.norm_3\.weight"):
        off_cc.import_official(tmp_path / "latest_net_G.pth", "ade20k", tmp_path / "x", encoder=tmp_path / "enc.pth")


@pytest.mark.parametrize("method", ["spade", "cc_fpse"])
@pytest.mark.parametrize("dataset,edge", [("cityscapes", True), ("cityscapes", False), ("coco_stuff", True),
                                          ("ade20k", False)])
def test_converted_generators_match_with_edges_and_dropped_channels(method, dataset, edge):
    """Converter level (any input width, small sizes): the official channel 34 of Cityscapes
    has non-zero weights (as in a trained file), yet the images stay equal; CC-FPSE's
    spectral-norm labelenc1 keeps its official σ."""
    size = (32, 64) if dataset == "cityscapes" else (32, 32)
    make, to_off, mod = ((_spade, _spade_to_official, off_spade) if method == "spade"
                         else (_ccfpse, lambda s, d, e: _ccfpse_to_official(s, d, e, 2), off_cc))
    g, cfg = make(dataset, edge=edge, size=size)
    off = to_off(g.state_dict(), dataset, edge)[0]
    for key in [k for k in off if k in ("fc.weight", "labelenc1.0.0.weight_orig") or k.endswith("shared.0.weight")
                or re.search(r"\.gen_\w+\.0\.weight$", k)]:
        if dataset == "cityscapes":  # a trained official file: channel 34's weights are not zero
            off[key][:, 34] = torch.randn_like(off[key][:, 34])
    if dataset == "cityscapes" and method == "cc_fpse":
        off["labelenc1.0.0.weight_v"].view(-1, 9)[34] = torch.randn(9)
        w, u, v = off["labelenc1.0.0.weight_orig"], off["labelenc1.0.0.weight_u"], off["labelenc1.0.0.weight_v"]
        sigma_off = torch.dot(u, w.reshape(2, -1) @ v)  # what the official eval forward divides by
    state, found_edge = mod.generator_from_official(off, dataset, "latest_net_G.pth")
    assert found_edge == edge
    g2 = type(g)(cfg, g.semantic_nc, *size)
    g2.load_state_dict(state)
    g2.eval()
    if dataset == "cityscapes" and method == "cc_fpse":
        def sigma(conv):
            p = conv.parametrizations.weight
            return torch.dot(p[0]._u, p.original.reshape(2, -1) @ p[0]._v)

        assert torch.allclose(sigma(g2.pyramid.enc[0][0]), sigma_off, rtol=1e-6, atol=0)
        # the official image (channel 34's input is 0) is W_kept x / sigma_off: give g that sigma
        g.pyramid.enc[0][0].parametrizations.weight[0]._v.mul_(sigma_off / sigma(g.pyramid.enc[0][0]))
    x = _onehot(dataset, g.semantic_nc, edge, *size, seed=5)
    with torch.no_grad():
        a, b = g(x), g2(x)
    assert (a - b).abs().max().item() <= 1e-6


def test_edge_checkpoint_needs_semsynth_edge_support_or_imports(tmp_path):
    """A Cityscapes SPADE file with the instance-edge channel (36 = 35 + edge): imported when
    semsynth builds Cityscapes generators with the edge channel, else a clear refusal."""
    g, _ = _spade("cityscapes", edge=True)
    off, _ = _spade_to_official(g.state_dict(), "cityscapes", True)
    assert off["head_0.norm_0.mlp_shared.0.weight"].shape == (4, 36, 3, 3)
    torch.save(off, tmp_path / "latest_net_G.pth")
    out = tmp_path / "export"
    try:
        off_spade.import_official(tmp_path / "latest_net_G.pth", "cityscapes", out)
    except ConfigError as exc:
        assert "latest_net_G.pth" in str(exc) and "instance-edge" in str(exc) and "34 input channels" in str(exc)
        assert not out.exists()
        return
    s = Sampler.from_checkpoint(out)
    x = _onehot("cityscapes", 35, True, 256, 512, seed=3)  # [34 labelIds, edge]
    with torch.no_grad():
        assert torch.equal(s.generator(x), g(x))


def test_errors_name_the_file_key_and_shapes(tmp_path, capsys):
    g, _ = _spade("ade20k", use_vae=True)
    off_g, off_e = _spade_to_official(g.state_dict(), "ade20k", False)
    torch.save(off_g, tmp_path / "latest_net_G.pth")
    out = tmp_path / "export"
    # a VAE generator without its encoder
    assert main(["import-official", str(tmp_path / "latest_net_G.pth"), "--method", "spade", "--dataset", "ade20k",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "latest_net_G.pth" in err and "--use_vae" in err and "--encoder" in err
    # wrong dataset: 151 channels are not Cityscapes' 35 (+ edge)
    torch.save(off_e, tmp_path / "latest_net_E.pth")
    assert main(["import-official", str(tmp_path), "--method", "spade", "--dataset", "cityscapes",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "latest_net_G.pth" in err and "head_0.norm_0.mlp_shared.0.weight" in err and "(4, 151, 3, 3)" in err
    assert "35" in err and "36" in err
    # a wrong shape inside the encoder file: named with expected vs found
    bad_e = dict(off_e)
    bad_e["fc_mu.weight"] = torch.zeros(256, 7)
    torch.save(bad_e, tmp_path / "latest_net_E.pth")
    assert main(["import-official", str(tmp_path), "--method", "spade", "--dataset", "ade20k", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "latest_net_E.pth" in err and "encoder.fc_mu.weight: expected (256, 256), found (256, 7)" in err
    torch.save(off_e, tmp_path / "latest_net_E.pth")
    # a missing key in G
    del off_g["up_1.conv_1.weight_orig"]
    torch.save(off_g, tmp_path / "latest_net_G.pth")
    assert main(["import-official", str(tmp_path), "--method", "spade", "--dataset", "ade20k", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "latest_net_G.pth" in err and "missing" in err and "blocks.up_1.conv_1.parametrizations.weight.original" in err
    # a wrong shape in G
    off_g["up_1.conv_1.weight_orig"] = torch.zeros(8, 5, 3, 3)
    torch.save(off_g, tmp_path / "latest_net_G.pth")
    assert main(["import-official", str(tmp_path), "--method", "spade", "--dataset", "ade20k", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "latest_net_G.pth" in err and "expected (8, 8, 3, 3), found (8, 5, 3, 3)" in err
    # the encoder file passed as G; a missing file; an OASIS-only option
    assert main(["import-official", str(tmp_path / "latest_net_E.pth"), "--method", "cc_fpse", "--dataset", "ade20k",
                 "--out", str(out)]) == 2
    assert "encoder file" in capsys.readouterr().err
    assert main(["import-official", str(tmp_path / "nope_net_G.pth"), "--method", "spade", "--dataset", "ade20k",
                 "--out", str(out)]) == 2
    assert "nope_net_G.pth" in capsys.readouterr().err
    assert main(["import-official", str(tmp_path), "--method", "spade", "--dataset", "ade20k", "--z-dim", "0",
                 "--out", str(out)]) == 2
    assert "--z-dim" in capsys.readouterr().err
    # an OASIS file given to the SPADE importer
    torch.save({"fc.weight": torch.zeros(16, 215, 3, 3)}, tmp_path / "oasis_net_G.pth")
    assert main(["import-official", str(tmp_path / "oasis_net_G.pth"), "--method", "spade", "--dataset", "ade20k",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "oasis_net_G.pth" in err and "not an official NVlabs/SPADE generator" in err
    assert not out.exists()


def test_encoder_without_vae_generator_is_refused(tmp_path):
    g, _ = _spade("ade20k")
    _, e = _spade_to_official(_spade("ade20k", use_vae=True)[0].state_dict(), "ade20k", False)
    torch.save(_spade_to_official(g.state_dict(), "ade20k", False)[0], tmp_path / "latest_net_G.pth")
    torch.save(e, tmp_path / "latest_net_E.pth")
    with pytest.raises(ConfigError, match=r"latest_net_E\.pth.*without --use_vae"):
        off_spade.import_official(tmp_path, "ade20k", tmp_path / "export")
