"""evssl.optim: LARS against hand-computed updates and a clean-room optax chain, the weight-decay policy, LR rules,
the warm-up cosine and its resume behaviour."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from evssl.nn.backbones.swin import SwinTransformer
from evssl.nn.backbones.vit import VisionTransformer, param_groups_lrd
from evssl.optim import (
    LARS,
    LrRule,
    OptimConfig,
    WarmupCosineScheduler,
    build_optimizer,
    decays,
    param_groups,
    parameter_kinds,
    warmup_cosine,
)


# ------------------------------------------------------------------------------------------------ LARS by hand
def test_lars_step_hand_computed():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))  # ||w|| = 5
    opt = LARS([w], lr=0.1, momentum=0.9, weight_decay=0.5, trust_coefficient=0.01, nesterov=False)
    w.grad = torch.tensor([0.5, -1.0])
    opt.step()
    g = torch.tensor([0.5 + 1.5, -1.0 + 2.0])  # g + wd * w = [2, 1]
    ratio = 0.01 * 5 / math.sqrt(5.0)
    u1 = g * ratio  # momentum buffer after the first step
    w1 = torch.tensor([3.0, 4.0]) - 0.1 * u1
    torch.testing.assert_close(w.detach(), w1)
    w.grad = torch.tensor([0.0, 1.0])
    opt.step()
    g2 = torch.tensor([0.0, 1.0]) + 0.5 * w1
    u2 = g2 * 0.01 * w1.norm() / g2.norm()
    torch.testing.assert_close(w.detach(), w1 - 0.1 * (0.9 * u1 + u2))


def test_lars_nesterov_hand_computed():
    w = nn.Parameter(torch.tensor([0.0, 2.0]))
    opt = LARS([w], lr=1.0, momentum=0.5, weight_decay=0.0, trust_coefficient=0.1, nesterov=True)
    w.grad = torch.tensor([4.0, 0.0])
    opt.step()
    u = torch.tensor([4.0, 0.0]) * 0.1 * 2.0 / 4.0  # [0.2, 0]
    torch.testing.assert_close(w.detach(), torch.tensor([0.0, 2.0]) - (u + 0.5 * u))


def test_zero_norm_parameter_uses_ratio_one():
    w = nn.Parameter(torch.zeros(3))
    opt = LARS([w], lr=0.1, momentum=0.0, weight_decay=0.1)
    w.grad = torch.tensor([1.0, 2.0, 3.0])
    opt.step()
    torch.testing.assert_close(w.detach(), -0.1 * torch.tensor([1.0, 2.0, 3.0]))


def test_unadapted_group_without_decay_is_plain_momentum_sgd():
    torch.manual_seed(0)
    a = nn.Parameter(torch.randn(5))
    b = nn.Parameter(a.detach().clone())
    lars = LARS([{"params": [a], "lars_adapt": False, "weight_decay": 0.0}], lr=0.05, momentum=0.9, nesterov=True)
    sgd = torch.optim.SGD([b], lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.0)
    for _ in range(3):
        g = torch.randn(5)
        a.grad, b.grad = g.clone(), g.clone()
        lars.step()
        sgd.step()
    torch.testing.assert_close(a, b)


# ------------------------------------------------------------------------- parity with optax (clean-room chain)
class _Toy(nn.Module):
    """Names as in a BraVe model: a backbone layer, a norm, and a predictor layer."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(3, 4)
        self.norm = nn.LayerNorm(4)
        self.predictor = nn.Sequential(nn.Linear(4, 3))


def _optax_lars_chain(params, grads_seq, *, lr, wd, mu, eta, regex, scale, masks):
    """Clean-room restatement of BraVe's optimiser (``training/optimizers.py``) on a dict of tensors.

    ``_scale_by_module_name`` (grad x scale where the regex matches) -> optax ``lars``: ``add_decayed_weights(wd,
    mask)`` -> ``masked(scale_by_trust_ratio(eta), mask)`` -> ``scale_by_learning_rate(lr)`` (u <- -lr u) ->
    ``trace(mu, nesterov=True)`` (t <- u + mu t; u <- u + mu t). In optax a mask value True means *apply*. The
    mask function ``exclude_bias_and_normalizers`` returns True for biases and norms: ``masks="released"`` passes it
    as is, ``"intent"`` its negation.
    """
    is_bias_or_norm = {n: n.endswith("bias") or "norm" in n for n in params}
    apply = {n: (not v) if masks == "intent" else v for n, v in is_bias_or_norm.items()}
    p = {n: v.clone() for n, v in params.items()}
    trace = {n: torch.zeros_like(v) for n, v in params.items()}
    for grads in grads_seq:
        for n in p:
            u = grads[n] * (scale if re.search(regex, n) else 1.0)
            if apply[n]:
                u = u + wd * p[n]
                pn, un = torch.linalg.vector_norm(p[n]), torch.linalg.vector_norm(u)
                ratio = eta * pn / un if (pn > 0 and un > 0) else torch.tensor(1.0)
                u = u * ratio
            u = -lr * u
            trace[n] = u + mu * trace[n]
            p[n] = p[n] + (u + mu * trace[n])
    return p


@pytest.mark.parametrize("masks", ["intent", "released"])
def test_lars_with_gradient_rule_equals_optax_chain(masks: str) -> None:
    torch.manual_seed(0)
    model = _Toy()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    g = torch.Generator().manual_seed(1)
    grads_seq = [{n: torch.randn(p.shape, generator=g) for n, p in start.items()} for _ in range(3)]
    cfg = OptimConfig(
        name="lars",
        lr=0.5,
        weight_decay=1e-2,
        momentum=0.9,
        lr_rules=(LrRule(".*predictor.*", 10.0, "gradient"),),
        lars_masks=masks,
    )
    opt = build_optimizer(param_groups(model, [{"name": "all", "params": model.parameters()}], cfg), cfg, cfg.lr)
    for grads in grads_seq:
        for n, p in model.named_parameters():
            p.grad = grads[n].clone()
        opt.step()
    ref = _optax_lars_chain(
        start, grads_seq, lr=0.5, wd=1e-2, mu=0.9, eta=1e-3, regex=".*predictor.*", scale=10.0, masks=masks
    )
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), ref[n], rtol=1e-5, atol=1e-7, msg=n)


def test_gradient_rule_is_cancelled_by_the_trust_ratio_but_a_step_rule_is_not() -> None:
    """BraVe B1: with LARS and no weight decay, x10 on the gradient leaves a weight matrix's step unchanged."""

    def first_step(rule: LrRule | None) -> torch.Tensor:
        torch.manual_seed(0)
        model = _Toy()
        w0 = model.predictor[0].weight.detach().clone()
        cfg = OptimConfig(name="lars", lr=1.0, weight_decay=0.0, lr_rules=(rule,) if rule else ())
        opt = build_optimizer(param_groups(model, [{"name": "all", "params": model.parameters()}], cfg), cfg, 1.0)
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        opt.step()
        return (model.predictor[0].weight.detach() - w0).norm()

    plain = first_step(None)
    torch.testing.assert_close(first_step(LrRule("predictor", 10.0, "gradient")), plain)
    torch.testing.assert_close(first_step(LrRule("predictor", 10.0, "step")), 10 * plain)


def test_gradient_rule_under_sgd_scales_the_gradient_before_the_update() -> None:
    model = nn.Linear(2, 1, bias=False)
    model.weight.data.fill_(1.0)
    cfg = OptimConfig(name="sgd", lr=0.1, momentum=0.0, weight_decay=0.5, lr_rules=(LrRule("weight", 3.0, "gradient"),))
    opt = build_optimizer(param_groups(model, [{"name": "w", "params": model.parameters()}], cfg), cfg, cfg.lr)
    model.weight.grad = torch.full((1, 2), 2.0)
    opt.step(lambda: torch.tensor(0.0))  # a closure: the scaling happens after it (Lightning's call pattern)
    # w - lr (3 g + wd w) = 1 - 0.1 (6 + 0.5)
    torch.testing.assert_close(model.weight.detach(), torch.full((1, 2), 1 - 0.1 * 6.5))


# ------------------------------------------------------------------------------------- weight-decay policy
def test_parameter_kinds_and_policies_on_vit_and_swin() -> None:
    vit = VisionTransformer(img_size=16, patch_size=8, in_chans=2, embed_dim=16, depth=1, num_heads=2,
                            pos_embed="learn", mask_token=True)  # fmt: skip
    swin = SwinTransformer(in_chans=2, patch_size=2, embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1),
                           window_size=4, mask_token=True)  # fmt: skip
    names = {
        **{f"vit.{n}": p for n, p in vit.named_parameters()},
        **{f"swin.{n}": p for n, p in swin.named_parameters()},
    }
    kinds = {n: parameter_kinds(n, p) for n, p in names.items()}
    assert kinds["vit.cls_token"] == {"token"} and kinds["vit.pos_embed"] == {"pos"}
    assert kinds["vit.mask_token"] == {"token", "mask_token"}
    assert kinds["vit.blocks.0.norm1.weight"] == {"norm"} and kinds["vit.blocks.0.attn.qkv.bias"] == {"bias"}
    assert kinds["vit.blocks.0.attn.qkv.weight"] == set()
    relpos = [n for n in names if n.endswith("relative_position_bias_table")]
    assert relpos and all(kinds[n] == {"relpos"} for n in relpos)
    default = OptimConfig().no_decay
    for n, p in names.items():  # default: only >= 2-D weights without a special kind decay
        assert decays(n, p, default) == (not kinds[n])
        assert decays(n, p, ())  # ECDP official: everything decays
        assert decays(n, p, ("bias", "norm")) == (p.ndim >= 2)  # ECDDP official: every >= 2-D parameter


def test_param_groups_split_rules_and_released_masks() -> None:
    model = _Toy()
    cfg = OptimConfig(name="lars", lr=0.2, weight_decay=0.1, lr_rules=(LrRule("predictor", 2.0, "step"),))
    groups = {g["name"]: g for g in param_groups(model, [{"name": "all", "params": model.parameters()}], cfg)}
    assert set(groups) == {"all", "all_no_wd", "all_x2", "all_no_wd_x2"}
    assert groups["all"]["weight_decay"] == 0.1 and groups["all"]["lars_adapt"]
    assert groups["all_no_wd"]["weight_decay"] == 0.0 and not groups["all_no_wd"]["lars_adapt"]
    assert groups["all_x2"]["lr"] == pytest.approx(0.4) and groups["all"]["lr"] == pytest.approx(0.2)
    released = OptimConfig(name="lars", lr=0.2, weight_decay=0.1, lars_masks="released")
    groups = {g["name"]: g for g in param_groups(model, [{"name": "all", "params": model.parameters()}], released)}
    assert groups["all"]["weight_decay"] == 0.0 and not groups["all"]["lars_adapt"]  # matrices: plain SGD
    assert groups["all_no_wd"]["weight_decay"] == 0.1 and groups["all_no_wd"]["lars_adapt"]
    with pytest.raises(ValueError, match="only applies to LARS"):
        param_groups(model, [{"name": "all", "params": model.parameters()}], OptimConfig(lars_masks="released"))
    with pytest.raises(ValueError, match="unknown kinds"):
        OptimConfig(no_decay=("bias", "weights"))


def test_layer_decay_groups_take_the_policy_decision() -> None:
    vit = VisionTransformer(img_size=16, patch_size=8, in_chans=2, embed_dim=16, depth=2, num_heads=2,
                            pos_embed="learn")  # fmt: skip
    for policy, tokens_decay in ((OptimConfig(), False), (OptimConfig(no_decay=()), True)):
        specs = param_groups_lrd(vit, 0.05, 0.75, policy=policy)
        groups = param_groups(vit, specs, policy)
        decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
        assert (id(vit.cls_token) in decayed) == tokens_decay
        assert id(vit.blocks[0].attn.qkv.weight) in decayed
        (cls_group,) = [g for g in groups if any(q is vit.cls_token for q in g["params"])]
        assert cls_group["lr"] / policy.lr == pytest.approx(0.75**3)  # layer 0 of depth 2


# ------------------------------------------------------------------------------------------------- schedule
def test_warmup_cosine():
    assert warmup_cosine(0, 100, 10) == 0.0
    assert warmup_cosine(5, 100, 10) == pytest.approx(0.5)
    assert warmup_cosine(10, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10, final_ratio=0.1) == pytest.approx(0.55)
    assert warmup_cosine(100, 100, 10, base=2.0, final_ratio=0.1) == pytest.approx(0.2)
    assert warmup_cosine(1000, 100, 10) == pytest.approx(0.0)
    assert warmup_cosine(0, 10, 0) == pytest.approx(1.0)


def test_scheduler_state_keeps_the_new_run_length() -> None:
    """Issue 13 item 6: a checkpoint of a 10-step run resumed as a 20-step run follows the 20-step cosine."""
    p = nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([{"params": [p], "lr": 1.0}], lr=1.0)
    short = WarmupCosineScheduler(opt, total_steps=10)
    for _ in range(10):
        opt.step()
        short.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0)
    opt2 = torch.optim.SGD([{"params": [p], "lr": 1.0}], lr=1.0)
    longer = WarmupCosineScheduler(opt2, total_steps=20)
    longer.load_state_dict(short.state_dict())
    assert longer.total_steps == 20 and longer.last_epoch == 10
    assert opt2.param_groups[0]["lr"] == pytest.approx(warmup_cosine(10, 20, 0)) == pytest.approx(0.5)
