"""ResShift (VPD-SR Eq. 1-5): the schedule, input handling and sampler as the official code has them, and
the Swin-UNet / VQ-f4 networks whose state-dict keys and shapes follow the official configuration.

The expected values here are written out from ResShift's released configuration
(configs/realsr_swinunet_realesrgan256.yaml) and formulas, independently of the modules under test."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from srdistill.core.errors import UserError
from srdistill.training.nets.resshift_unet import ResShiftUNet, SwinUNetConfig, shifted_window_mask
from srdistill.training.nets.vqgan import VQAutoencoder, VQConfig
from srdistill.training.recipes.resshift import (ResShiftDenoiser, ResShiftDiffusion, ResShiftSchedule, build_resshift,
                                         forward_marginal, sinsr_coefficients)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# ResShift's released real-SR x4 setting (the diffusion section of its YAML).
KAPPA, MIN_NOISE_LEVEL, ETAS_END, STEPS, POWER = 2.0, 0.04, 0.99, 15, 0.3


def official_sqrt_etas(steps: int = STEPS) -> np.ndarray:
    """get_named_eta_schedule('exponential') written out: a geometric ramp with a power-warped exponent."""
    start = min(MIN_NOISE_LEVEL / KAPPA, MIN_NOISE_LEVEL, math.sqrt(0.001))
    growth = math.exp(math.log(ETAS_END / start) / (steps - 1))
    exponent = np.linspace(0, 1, steps) ** POWER * (steps - 1)
    return growth ** exponent * start


# -- schedule, marginal, sampler ------------------------------------------------------------------


def test_schedule_constants_are_resshifts_released_ones():
    sch = ResShiftSchedule()
    assert (sch.steps, sch.kappa, sch.power) == (15, 2.0, 0.3)
    want = official_sqrt_etas()
    assert want[0] == pytest.approx(0.02) and want[-1] == pytest.approx(0.99)
    assert np.allclose(sch.sqrt_etas().numpy(), want, rtol=1e-12)
    assert np.allclose(sch.etas().numpy(), want ** 2, rtol=1e-12)
    # not the eta_1 = 0.001, eta_T = 0.999 of an earlier reading
    assert sch.etas()[0].item() == pytest.approx(4e-4) and sch.etas()[-1].item() == pytest.approx(0.9801)


def test_forward_marginal_statistics():
    gen = torch.Generator().manual_seed(9)
    n = 200_000
    x0, y = torch.zeros(n, 1, 1, 1), torch.ones(n, 1, 1, 1)
    xt = forward_marginal(x0, y, torch.full((n,), 0.25), 2.0, torch.randn(n, 1, 1, 1, generator=gen))
    # Eq. 1: mean x0 + eta (y - x0) = 0.25, variance kappa^2 eta = 1.0
    assert xt.mean().item() == pytest.approx(0.25, abs=0.01)
    assert xt.var().item() == pytest.approx(1.0, rel=0.02)


def test_sinsr_step_keeps_the_marginal_path_and_oracle_sampling_is_exact():
    sch = ResShiftSchedule(steps=5)
    etas = torch.from_numpy(official_sqrt_etas(5) ** 2)
    gen = torch.Generator().manual_seed(10)
    x0, y, eps = (torch.randn(2, 3, 4, 4, generator=gen) for _ in range(3))
    for t in range(1, 5):
        k, m, j = sinsr_coefficients(float(etas[t - 1]), float(etas[t]))
        assert k + m + j == pytest.approx(1.0)
        x_t = forward_marginal(x0, y, etas[t].repeat(2).float(), sch.kappa, eps)
        x_prev = k * x0 + m * x_t + j * y  # Eq. 4 with the true x0
        assert torch.allclose(x_prev, forward_marginal(x0, y, etas[t - 1].repeat(2).float(), sch.kappa, eps), atol=1e-5)

    class Oracle(torch.nn.Module):
        def forward(self, x, t, lq):
            return x0

    diffusion = ResShiftDiffusion(ResShiftDenoiser(Oracle(), sch))
    assert torch.allclose(diffusion.sample(y, y, eps), x0)
    assert torch.allclose(diffusion.prior(y, eps), y + 2.0 * 0.99 * eps)


def test_denoiser_normalises_the_state_and_passes_the_step_index_and_lq():
    torch.manual_seed(0)
    net = ResShiftUNet(SwinUNetConfig.tiny()).eval()
    den = ResShiftDenoiser(net, ResShiftSchedule())
    x, lq = torch.randn(2, 3, 8, 8) * 3, torch.rand(2, 3, 8, 8) * 2 - 1
    t = torch.tensor([14, 3])
    etas = torch.from_numpy(official_sqrt_etas() ** 2).float()
    std = torch.sqrt(KAPPA ** 2 * etas[t] + 1).view(-1, 1, 1, 1)
    with torch.no_grad():
        got = den(x, lq, t)
        assert torch.allclose(got, net(x / std, t, lq), atol=1e-5)
        assert not torch.allclose(got, net(x, t, lq), atol=1e-3)  # the normalisation matters
        assert not torch.allclose(got, net(x / std, t.flip(0), lq), atol=1e-3)  # so does the step


# -- Swin-UNet and VQ-f4: official keys and shapes -----------------------------------------------


def official_window_mask(h: int, w: int, ws: int, shift: int) -> torch.Tensor:
    """The official SwinTransformerBlock.calculate_mask procedure, step by step (region map indexed
    [:, h, w, :] on a [1, 1, H, W] tensor, windows read back through a permute(0, 2, 3, 1))."""
    img = torch.zeros(1, 1, h, w)
    cuts = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    cnt = 0
    for hs in cuts:
        for vs in cuts:
            img[:, hs, vs, :] = cnt
            cnt += 1
    win = img.view(1, 1, h // ws, ws, w // ws, ws).permute(0, 2, 4, 3, 5, 1).reshape(-1, ws, ws, 1)
    mw = win.permute(0, 2, 3, 1).reshape(-1, ws * ws)
    mask = mw.unsqueeze(1) - mw.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


@pytest.mark.parametrize("size", [(64, 64, 8, 4), (32, 32, 8, 4), (16, 48, 8, 4), (8, 8, 2, 1)])
def test_shifted_window_mask_is_the_official_one(size):
    assert torch.equal(shifted_window_mask(*size), official_window_mask(*size))


def _linear(keys, name, cout, cin):
    keys[f"{name}.weight"], keys[f"{name}.bias"] = (cout, cin), (cout,)


def _conv(keys, name, cout, cin, k):
    keys[f"{name}.weight"], keys[f"{name}.bias"] = (cout, cin, k, k), (cout,)


def _norm(keys, name, c):
    keys[f"{name}.weight"], keys[f"{name}.bias"] = (c,), (c,)


def official_unet_keys(cfg: dict) -> dict[str, tuple]:
    """The state-dict keys and shapes of UNetModelSwin(**cfg) (cond_lq with lq_size == image_size),
    enumerated from the official constructor's layout rules."""
    mc, emb, dim = cfg["model_channels"], 4 * cfg["model_channels"], cfg["swin_embed_dim"]
    heads, ws = dim // cfg["num_head_channels"], cfg["window_size"]
    keys: dict[str, tuple] = {}
    _linear(keys, "time_embed.0", emb, mc)
    _linear(keys, "time_embed.2", emb, emb)

    def res(p, cin, cout):
        _norm(keys, f"{p}.in_layers.0", cin)
        _conv(keys, f"{p}.in_layers.2", cout, cin, 3)
        _linear(keys, f"{p}.emb_layers.1", 2 * cout, emb)
        _norm(keys, f"{p}.out_layers.0", cout)
        _conv(keys, f"{p}.out_layers.3", cout, cout, 3)
        if cin != cout:
            _conv(keys, f"{p}.skip_connection", cout, cin, 1)

    def swin(p, ch, res_):
        _conv(keys, f"{p}.patch_embed.proj", dim, ch, 1)
        _conv(keys, f"{p}.patch_unembed.proj", ch, dim, 1)
        w = min(ws, res_)
        for i in range(cfg["swin_depth"]):
            b = f"{p}.blocks.{i}"
            _norm(keys, f"{b}.norm1", dim)
            _norm(keys, f"{b}.norm2", dim)
            keys[f"{b}.attn.relative_position_bias_table"] = ((2 * w - 1) ** 2, heads)
            keys[f"{b}.attn.relative_position_index"] = (w * w, w * w)
            _linear(keys, f"{b}.attn.qkv", 3 * dim, dim)
            _linear(keys, f"{b}.attn.proj", dim, dim)
            _conv(keys, f"{b}.mlp.fc1", int(dim * cfg["mlp_ratio"]), dim, 1)
            _conv(keys, f"{b}.mlp.fc2", dim, int(dim * cfg["mlp_ratio"]), 1)
            if i % 2 == 1 and res_ > ws:
                keys[f"{b}.attn_mask"] = ((res_ // ws) ** 2, ws * ws, ws * ws)

    mult, nrb, attn = cfg["channel_mult"], cfg["num_res_blocks"], cfg["attention_resolutions"]
    ch = mc * mult[0]
    _conv(keys, "input_blocks.0.0", ch, cfg["in_channels"], 3)
    idx, skips, ds = 1, [ch], cfg["image_size"]
    for level, m in enumerate(mult):
        for j in range(nrb[level]):
            res(f"input_blocks.{idx}.0", ch, m * mc)
            ch = m * mc
            if ds in attn and j == 0:
                swin(f"input_blocks.{idx}.1", ch, ds)
            skips.append(ch)
            idx += 1
        if level != len(mult) - 1:
            _conv(keys, f"input_blocks.{idx}.0.op", ch, ch, 3)
            skips.append(ch)
            idx, ds = idx + 1, ds // 2
    res("middle_block.0", ch, ch)
    swin("middle_block.1", ch, ds)
    res("middle_block.2", ch, ch)
    idx = 0
    for level in reversed(range(len(mult))):
        for i in range(nrb[level] + 1):
            res(f"output_blocks.{idx}.0", ch + skips.pop(), mc * mult[level])
            ch = mc * mult[level]
            n = 1
            if ds in attn and i == 0:
                swin(f"output_blocks.{idx}.1", ch, ds)
                n = 2
            if level and i == nrb[level]:
                _conv(keys, f"output_blocks.{idx}.{n}.conv", ch, ch, 3)
                ds *= 2
            idx += 1
    _norm(keys, "out.0", ch)
    _conv(keys, "out.2", cfg["out_channels"], mc * mult[0], 3)
    return keys


# model.params of configs/realsr_swinunet_realesrgan256.yaml (in_channels 3 + the 3 lq channels, as
# SinSR's copy of it writes in_channels: 6).
OFFICIAL_UNET = {"image_size": 64, "in_channels": 6, "model_channels": 160, "out_channels": 3,
                 "attention_resolutions": [64, 32, 16, 8], "channel_mult": [1, 2, 2, 4], "num_res_blocks": [2, 2, 2, 2],
                 "num_head_channels": 32, "swin_depth": 2, "swin_embed_dim": 192, "window_size": 8, "mlp_ratio": 4}


def official_vq_keys(ch=128, ch_mult=(1, 2, 4), nrb=2, z=3, embed=3, n_embed=8192) -> dict[str, tuple]:
    """The state-dict keys and shapes of LDM's VQModelTorch with the autoencoder section of the YAML."""
    keys: dict[str, tuple] = {}

    def block(p, cin, cout):
        _norm(keys, f"{p}.norm1", cin)
        _conv(keys, f"{p}.conv1", cout, cin, 3)
        _norm(keys, f"{p}.norm2", cout)
        _conv(keys, f"{p}.conv2", cout, cout, 3)
        if cin != cout:
            _conv(keys, f"{p}.nin_shortcut", cout, cin, 1)

    def mid(p, c):
        block(f"{p}.mid.block_1", c, c)
        _norm(keys, f"{p}.mid.attn_1.norm", c)
        for name in ("q", "k", "v", "proj_out"):
            _conv(keys, f"{p}.mid.attn_1.{name}", c, c, 1)
        block(f"{p}.mid.block_2", c, c)

    _conv(keys, "encoder.conv_in", ch, 3, 3)
    cin = ch
    for i, m in enumerate(ch_mult):
        for j in range(nrb):
            block(f"encoder.down.{i}.block.{j}", cin, ch * m)
            cin = ch * m
        if i != len(ch_mult) - 1:
            _conv(keys, f"encoder.down.{i}.downsample.conv", cin, cin, 3)
    mid("encoder", cin)
    _norm(keys, "encoder.norm_out", cin)
    _conv(keys, "encoder.conv_out", z, cin, 3)
    cin = ch * ch_mult[-1]
    _conv(keys, "decoder.conv_in", cin, z, 3)
    mid("decoder", cin)
    for i in reversed(range(len(ch_mult))):
        for j in range(nrb + 1):
            block(f"decoder.up.{i}.block.{j}", cin, ch * ch_mult[i])
            cin = ch * ch_mult[i]
        if i != 0:
            _conv(keys, f"decoder.up.{i}.upsample.conv", cin, cin, 3)
    _norm(keys, "decoder.norm_out", cin)
    _conv(keys, "decoder.conv_out", 3, cin, 3)
    keys["quantize.embedding.weight"] = (n_embed, embed)
    _conv(keys, "quant_conv", embed, z, 1)
    _conv(keys, "post_quant_conv", z, embed, 1)
    return keys


def _shapes(module: torch.nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_swin_unet_has_the_official_keys_shapes_and_the_papers_parameter_count():
    with torch.device("meta"):
        net = ResShiftUNet(SwinUNetConfig.official())
    assert _shapes(net) == official_unet_keys(OFFICIAL_UNET)
    n_params = sum(p.numel() for p in net.parameters())
    assert round(n_params / 1e6, 2) == 118.59  # VPD-SR Table I / SinSR: ResShift's 118.59 M


def test_vq_f4_has_the_official_keys_and_shapes():
    with torch.device("meta"):
        vq = VQAutoencoder(VQConfig.official())
    assert _shapes(vq) == official_vq_keys()


def test_tiny_configs_follow_the_same_layout_rules():
    tiny = SwinUNetConfig.tiny()
    cfg = {"image_size": tiny.image_size, "in_channels": 6, "model_channels": tiny.model_channels, "out_channels": 3,
           "attention_resolutions": tiny.attention_resolutions, "channel_mult": tiny.channel_mult,
           "num_res_blocks": tiny.num_res_blocks, "num_head_channels": tiny.num_head_channels,
           "swin_depth": tiny.swin_depth, "swin_embed_dim": tiny.swin_embed_dim, "window_size": tiny.window_size,
           "mlp_ratio": tiny.mlp_ratio}
    assert _shapes(ResShiftUNet(tiny)) == official_unet_keys(cfg)
    t = VQConfig.tiny()
    assert _shapes(VQAutoencoder(t)) == official_vq_keys(t.ch, t.ch_mult, t.num_res_blocks, t.z_channels, t.embed_dim,
                                                          t.n_embed)


def test_vq_f4_maps_images_to_a_quarter_size_latent_and_snaps_to_the_codebook():
    torch.manual_seed(1)
    vq = VQAutoencoder(VQConfig.tiny()).eval()
    z = vq.encode(torch.rand(1, 3, 32, 48) * 2 - 1)
    assert z.shape == (1, 3, 8, 12)
    snapped = vq.quantize(z)
    book = vq.quantize.embedding.weight
    flat_z, flat_q = z.permute(0, 2, 3, 1).reshape(-1, 3), snapped.permute(0, 2, 3, 1).reshape(-1, 3)
    nearest = book[torch.cdist(flat_z.double(), book.double()).argmin(dim=1)]
    assert torch.allclose(flat_q, nearest, atol=1e-6)
    z = z.detach().requires_grad_(True)
    vq.decode(z).sum().backward()  # straight-through: the decoder's gradient reaches the latent
    assert z.grad is not None and z.grad.abs().sum() > 0


# -- loading the released files -------------------------------------------------------------------


def test_missing_released_file_is_one_sentence_naming_it_and_where(tmp_path):
    with pytest.raises(UserError) as err:
        build_resshift(str(tmp_path))
    msg = str(err.value)
    assert str(tmp_path / "resshift" / "resshift_realsrx4_s15_v1.pth") in msg
    assert "ResShift" in msg and "\n" not in msg and msg.count(". ") == 0


def _random_state(keys: dict[str, tuple], gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Random float16 tensors (half the file size; loading converts) with the official keys; the derived
    Swin buffers get their official values."""
    state = {}
    for k, shape in keys.items():
        if k.endswith("relative_position_index"):
            w = math.isqrt(shape[0])
            r = torch.arange(w)
            coords = torch.stack([r.repeat_interleave(w), r.repeat(w)])  # (row, col) of each window token
            rel = coords[:, :, None] - coords[:, None, :] + (w - 1)
            state[k] = rel[0] * (2 * w - 1) + rel[1]
        elif k.endswith("attn_mask"):
            side = math.isqrt(shape[0]) * math.isqrt(shape[1])
            state[k] = official_window_mask(side, side, math.isqrt(shape[1]), math.isqrt(shape[1]) // 2)
        else:
            state[k] = torch.randn(shape, generator=gen, dtype=torch.float32).half()
    return state


@pytest.mark.slow
def test_released_checkpoints_load_by_key(tmp_path):
    """Files laid out as the official releases (the network saved from a DDP wrapper, the autoencoder plain)
    load into the teacher with every tensor in place."""
    gen = torch.Generator().manual_seed(3)
    folder = tmp_path / "resshift"
    folder.mkdir()
    unet_state = _random_state(official_unet_keys(OFFICIAL_UNET), gen)
    ddp_saved = {"state_dict": {f"module.{k}": v for k, v in unet_state.items()}}
    torch.save(ddp_saved, folder / "resshift_realsrx4_s15_v1.pth")
    del ddp_saved
    del unet_state
    vq_state = _random_state(official_vq_keys(), gen)
    torch.save(vq_state, folder / "autoencoder_vq_f4.pth")
    del vq_state
    teacher = build_resshift(str(tmp_path))
    unet_file = torch.load(folder / "resshift_realsrx4_s15_v1.pth", weights_only=True)["state_dict"]
    for k, v in teacher.diffusion.denoiser.net.state_dict().items():
        assert torch.equal(v, unet_file[f"module.{k}"].to(v.dtype)), k
    del unet_file
    vq_file = torch.load(folder / "autoencoder_vq_f4.pth", weights_only=True)
    for k, v in teacher.codec.vq.state_dict().items():
        assert torch.equal(v, vq_file[k].to(v.dtype)), k
    assert not any(p.requires_grad for p in teacher.parameters())


@pytest.mark.slow
def test_a_file_of_another_configuration_is_refused_with_the_first_bad_key(tmp_path):
    folder = tmp_path / "resshift"
    folder.mkdir()
    keys = official_unet_keys(OFFICIAL_UNET)
    keys["input_blocks.0.0.weight"] = (160, 3, 3, 3)  # a ResShift variant without the lq channels
    state = {k: torch.zeros(s, dtype=torch.float16) for k, s in keys.items() if "attn_mask" not in k}
    torch.save(state, folder / "resshift_realsrx4_s15_v1.pth")
    with pytest.raises(UserError, match=r"1 mis-shaped tensors \(first: input_blocks.0.0.weight\)"):
        build_resshift(str(tmp_path))


def test_tiny_teacher_maps_lr_to_a_4x_image_and_its_noise_matters():
    torch.manual_seed(2)
    teacher = build_resshift("tiny", ResShiftSchedule(steps=3))
    gen = torch.Generator().manual_seed(4)
    lr, n1, n2 = torch.rand(1, 3, 8, 12, generator=gen), torch.randn(1, 3, 8, 12, generator=gen), \
        torch.randn(1, 3, 8, 12, generator=gen)
    with torch.no_grad():
        a, b = teacher(lr, n1), teacher(lr, n2)
    assert a.shape == (1, 3, 32, 48) and float(a.min()) >= 0 and float(a.max()) <= 1
    assert not torch.equal(a, b) and torch.equal(a, teacher(lr, n1))
