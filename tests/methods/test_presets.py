"""Presets: each method's ``official`` / ``paper`` switch values land where they act (groups, masks, Swin blocks,
Sinkhorn, transfer crops), and explicit values override the preset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evssl.data.views.ecdp import RandomResizedCropNearest, normalize_counts
from evssl.events.batch import EventBatch
from evssl.events.representations import EventImage, VoxelGrid, histogram
from evssl.events.schema import Events
from evssl.optim import param_groups
from tests.methods.test_ecddp import tiny_ecddp
from tests.methods.test_ecdp import tiny_ecdp


def _decayed(module) -> dict[str, bool]:
    names = {id(p): n for n, p in module.named_parameters()}
    out = {}
    for g in param_groups(module, module.learnable_params(), module.optim, exclude=module._ema_targets()):
        for p in g["params"]:
            out[names[id(p)]] = g["weight_decay"] > 0
    return out


def test_ecdp_presets() -> None:
    official, paper = tiny_ecdp(), tiny_ecdp(preset="paper")
    assert (official.mask_form, official.rgb_key_grad, official.sinkhorn_ranks) == ("code", "none", "official")
    assert (paper.mask_form, paper.rgb_key_grad, paper.sinkhorn_ranks) == ("paper", "global", "local")
    assert all(_decayed(official).values())  # official: AdamW over model.parameters(), one weight decay (E4)
    dec = _decayed(paper)
    assert not dec["backbone.special_tokens"] and not dec["backbone.blocks.0.norm1.weight"]
    assert dec["backbone.blocks.0.attn.qkv.weight"]
    assert tiny_ecdp(mask_form="paper").mask_form == "paper"  # an explicit value overrides the preset
    with pytest.raises(ValueError, match="unknown preset"):
        tiny_ecdp(preset="other")


def test_ecddp_presets_reach_the_swin_blocks_masks_and_groups() -> None:
    official, paper = tiny_ecddp(), tiny_ecddp(preset="paper")
    for m, pad in ((official, "official"), (paper, "masked")):
        blocks = [b for b in m.backbone.modules() if hasattr(b, "window_padding")]
        assert blocks and all(b.window_padding == pad for b in blocks)
        assert all(b.window_padding == pad for b in m.teacher["backbone"].modules() if hasattr(b, "window_padding"))
        assert m.backbone_config()["init_args"]["window_padding"] == pad
    assert (official.masking.count, official.masking.exact) == ("official", False)
    assert (paper.masking.count, paper.masking.exact) == ("grid", True)
    dec_o, dec_p = _decayed(official), _decayed(paper)
    relpos = [n for n in dec_o if n.endswith("relative_position_bias_table")]
    assert relpos and all(dec_o[n] for n in relpos) and not any(dec_p[n] for n in relpos)  # C5
    assert dec_o["backbone.mask_token"] and not dec_p["backbone.mask_token"]
    assert dec_o["backbone.patch_embed.bias"] and dec_o["backbone.patch_norm.weight"]  # patch-embed group decays
    one_d = [n for n, p in official.named_parameters() if p.ndim == 1 and not n.startswith(("backbone.patch", "t"))]
    assert one_d and not any(dec_o[n] for n in one_d if n in dec_o)  # other 1-D parameters do not decay
    assert tiny_ecddp(swin={"padding": "masked"}).swin.padding == "masked"  # explicit value over the preset


def _events(n: int = 4000, h: int = 16, w: int = 16, seed: int = 0) -> EventBatch:
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.integers(0, w // 2, n // 2), rng.integers(0, w, n // 2)])
    y = rng.integers(0, h, n)
    t = np.arange(n, dtype=np.int64)
    p = rng.choice([-1, 1], n)
    return EventBatch.from_events([Events.from_arrays(x, y, t, p, h, w)])


def test_transfer_crop_normalises_the_crop_of_raw_counts() -> None:
    """Review E6/T5: the official LP/FT pipeline crops raw counts, then divides by the crop's own max + 1."""
    ev = _events()
    torch.manual_seed(0)
    crop_first = RandomResizedCropNearest(EventImage(), crop_min=0.3, hflip_p=0.0)(ev)
    torch.manual_seed(0)  # the same crop box, drawn by the same generator calls, on the raw counts
    ref_counts = RandomResizedCropNearest(EventImage(), crop_min=0.3, hflip_p=0.0, order="normalize_first")
    ref_counts.representation = type("Raw", (), {"channels": 2, "__call__": lambda self, e: histogram(e)})()
    raw_crop = ref_counts(ev)
    torch.testing.assert_close(crop_first, normalize_counts(raw_crop))
    assert crop_first.amax() == pytest.approx(((raw_crop.amax() / (raw_crop.amax() + 1)) - 0.5) * 2)
    torch.manual_seed(0)
    old = RandomResizedCropNearest(EventImage(), crop_min=0.3, hflip_p=0.0, order="normalize_first")(ev)
    assert not torch.allclose(old, crop_first)  # the pre-v2 order normalises by the full window's max
    with pytest.raises(ValueError, match="needs an EventImage"):
        RandomResizedCropNearest(VoxelGrid(3))


def test_small_presets_keep_the_official_switches_and_supply_their_recipes() -> None:
    """``small``: the official switches everywhere; its recipe fills only the option groups the config leaves out."""
    from evssl.methods.brave import BRAVE_PRESETS, BraVeOptim
    from evssl.methods.ecddp_options import ECDDPLoss, ECDDPOptim
    from evssl.methods.ecdp_options import ECDPOptim
    from tests.methods.test_brave import tiny_brave

    brave, brave_official = tiny_brave(preset="small"), tiny_brave()
    assert BRAVE_PRESETS["small"] == BRAVE_PRESETS["official"]
    assert brave.predictor_rule == brave_official.predictor_rule == "gradient"
    assert (brave.optim.name, brave.optim.lr, brave.optim.warmup_epochs) == ("lars", 10.0, 1.0)
    assert (brave_official.optim.lr, brave_official.optim.warmup_epochs) == (1.0, 10.0)  # the paper's recipe
    assert brave.optim.lr_rules == brave_official.optim.lr_rules  # predictor x10 appended once, as official
    assert tiny_brave(preset="small", optim=BraVeOptim(lr=2.0)).optim.lr == 2.0  # a given group wins

    ecdp, ecdp_official = tiny_ecdp(preset="small"), tiny_ecdp()
    switches = ("mask_form", "rgb_key_grad", "sinkhorn_ranks")
    assert [getattr(ecdp, k) for k in switches] == [getattr(ecdp_official, k) for k in switches]
    assert (ecdp.optim.lr, ecdp.optim.weight_decay, ecdp.optim.warmup_epochs) == (4e-3, 0.05, 3.0)
    assert ecdp.optim.no_decay == ecdp_official.optim.no_decay == ()
    assert tiny_ecdp(preset="small", optim=ECDPOptim()).optim.lr == ECDPOptim().lr

    def ecddp_without_loss_group(**kw):  # tiny groups, the loss group left out (so the preset supplies it)
        from tests.methods.test_ecddp import GROUPS, TINY, tiny_swin

        groups = {name: cls(**TINY.get(name, {})) for name, cls in GROUPS.items() if name != "loss"}
        return ECDDP(tiny_swin(), **groups, **kw)

    from evssl.methods import ECDDP

    ecddp, ecddp_official = ecddp_without_loss_group(preset="small"), ecddp_without_loss_group()
    assert ecddp.swin == ecddp_official.swin and ecddp.masking == ecddp_official.masking
    assert ecddp.optim.lr == 2e-3 and ecddp_official.optim.lr == ECDDPOptim().lr
    assert (ecddp.loss_config.teacher_temp, ecddp.loss_config.warmup_teacher_temp) == (0.04, 0.04)
    assert ecddp_official.loss_config == ECDDPLoss()
    assert tiny_ecddp(preset="small", loss={"teacher_temp": 0.07}).loss_config.teacher_temp == 0.07
    ecddp.optim.lr = 1.0  # a method never mutates the shared recipe table
    ecddp.loss_config.teacher_temp = 1.0
    again = ecddp_without_loss_group(preset="small")
    assert (again.optim.lr, again.loss_config.teacher_temp) == (2e-3, 0.04)
    with pytest.raises(ValueError, match="unknown preset"):
        tiny_ecddp(preset="large")
