"""The GRPO objective against numbers worked out by hand on toy arrays.

Toy batch used throughout: two completions of three columns, the second with one padding column.
Ratios pi/pi_old are chosen directly (logp = log r, old_logp = 0):
    r = [[1.1, 0.7, 1.5],      A = [+1, -2],  epsilon = 0.2
         [0.6, 1.3, (pad)]]
Row 0 (A > 0): min(rA, clip(r)A) = [1.1, 0.7, 1.2]  -> 1.5 is clipped at 1.2; 0.7 is *not*
               (below 1 - eps with a positive advantage the unclipped term is the minimum).
Row 1 (A < 0): min(rA, clip(r)A) = [-1.6, -2.6]     -> 0.6 is clipped at 0.8; 1.3 is not.
Per-token loss = -that: [[-1.1, -0.7, -1.2], [1.6, 2.6]]; sums -3.0 and 4.2 over 5 valid tokens.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aha_utils import grpo
from aha_utils.grpo import GRPOConfig, group_advantages, kl_per_token, policy_loss

R = np.array([[1.1, 0.7, 1.5], [0.6, 1.3, 1.0]], np.float32)
LOGP = np.log(R)
OLD = np.zeros_like(LOGP)
ADV = np.array([1.0, -2.0], np.float32)
MASK = np.array([[1, 1, 1], [1, 1, 0]], np.float32)


def loss_of(cfg, logp=LOGP, ref=None, **kw):
    return policy_loss(jnp.asarray(logp), OLD, ref, ADV, MASK, cfg, **kw)


# ----- advantages ---------------------------------------------------------------------------
def test_grpo_advantages_by_hand():
    # group 1: mean 0.25, unbiased std sqrt((0.75^2 + 3 * 0.25^2) / 3) = 0.5; group 2 constant.
    rewards = [1.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5]
    want = np.array([0.75, -0.25, -0.25, -0.25, 0, 0, 0, 0]) / np.array([0.5 + 1e-4] * 4 + [1] * 4)
    np.testing.assert_allclose(group_advantages(rewards, 4), want, rtol=1e-6, atol=1e-7)


def test_drgrpo_advantages_are_mean_only():
    rewards = [1.0, 0.0, 0.0, 0.0, 0.1, 0.1, 1.0, 0.1]
    want = [0.75, -0.25, -0.25, -0.25, -0.225, -0.225, 0.675, -0.225]
    np.testing.assert_allclose(group_advantages(rewards, 4, scale_rewards=False), want, atol=1e-6)


def test_advantage_errors():
    with pytest.raises(ValueError, match="at least 2"):
        group_advantages([1.0, 0.0], 1)
    with pytest.raises(ValueError, match="groups of 4"):
        group_advantages([1.0, 0.0, 1.0], 4)
    with pytest.raises(ValueError, match="1-D"):
        group_advantages(np.zeros((2, 4)), 4)


# ----- aggregation --------------------------------------------------------------------------
@pytest.mark.parametrize("loss_type, want", [
    ("grpo", ((-3.0 / 3) + (4.2 / 2)) / 2),   # mean over tokens, then over the 2 rows
    ("bnpo", 1.2 / 5),                         # sum over the 5 valid tokens / 5
    ("dapo", 1.2 / 5),
    ("dr_grpo", 1.2 / (2 * 3)),                # rows x the mask's width
])
def test_loss_types_by_hand(loss_type, want):
    loss, metrics = loss_of(GRPOConfig(loss_type=loss_type))
    assert float(loss) == pytest.approx(want, rel=1e-6)
    assert float(metrics["loss"]) == pytest.approx(want, rel=1e-6)
    assert float(metrics["ratio"]) == pytest.approx((1.1 + 0.7 + 1.5 + 0.6 + 1.3) / 5, rel=1e-6)
    assert float(metrics["clip_high"]) == pytest.approx(1 / 5)   # 1.5 with A > 0
    assert float(metrics["clip_low"]) == pytest.approx(1 / 5)    # 0.6 with A < 0
    assert float(metrics["entropy"]) == pytest.approx(-LOGP[MASK > 0].mean(), rel=1e-6)


def test_dr_grpo_constant_normaliser():
    loss, _ = loss_of(GRPOConfig(loss_type="dr_grpo", max_completion_length=10))
    assert float(loss) == pytest.approx(1.2 / (2 * 10), rel=1e-6)


def test_clip_higher_is_a_separate_upper_epsilon():
    # epsilon_high 0.6: 1.5 is no longer clipped (row 0: 1.1 + 0.7 + 1.5 = 3.3).
    loss, m = loss_of(GRPOConfig(loss_type="bnpo", epsilon_high=0.6))
    assert float(loss) == pytest.approx((-3.3 + 4.2) / 5, rel=1e-6)
    assert float(m["clip_high"]) == 0.0 and float(m["clip_low"]) == pytest.approx(0.2)


# ----- gradients ----------------------------------------------------------------------------
def test_zero_gradient_where_clipped():
    cfg = GRPOConfig(loss_type="bnpo")
    grad = np.asarray(jax.grad(lambda lp: loss_of(cfg, lp)[0])(jnp.asarray(LOGP)))
    # d(-rA/5)/dlogp = -rA/5 where unclipped; 0 where clipped or padded.
    want = np.array([[-1.1 / 5, -0.7 / 5, 0.0], [0.0, 2.6 / 5, 0.0]])
    np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-7)
    assert grad[0, 2] == 0.0 and grad[1, 0] == 0.0


# ----- GSPO ---------------------------------------------------------------------------------
def test_gspo_sequence_ratio_by_hand():
    s0 = (1.1 * 0.7 * 1.5) ** (1 / 3)   # geometric mean of the row's ratios (valid tokens)
    s1 = (0.6 * 1.3) ** (1 / 2)
    assert 0.8 < s0 < 1.2 and 0.8 < s1 < 1.2  # both inside the clip range
    want = (-s0 * 1.0 + s1 * 2.0) / 2
    for level in ("sequence", "gspo-token"):
        loss, m = loss_of(GRPOConfig(importance_sampling_level=level))
        assert float(loss) == pytest.approx(want, rel=1e-5), level
        assert float(m["ratio"]) == pytest.approx((3 * s0 + 2 * s1) / 5, rel=1e-5)


def test_gspo_token_gradient_is_sequence_ratio_times_token_gradient():
    s0 = (1.1 * 0.7 * 1.5) ** (1 / 3)
    s1 = (0.6 * 1.3) ** (1 / 2)
    grads = {}
    for level in ("sequence", "gspo-token"):
        cfg = GRPOConfig(importance_sampling_level=level)
        grads[level] = np.asarray(jax.grad(lambda lp: loss_of(cfg, lp)[0])(jnp.asarray(LOGP)))
    # gspo-token, grpo aggregation: each token gets -A_i * s_i / |o_i| / n_rows.
    want = np.array([[-s0 / 3 / 2] * 3, [2 * s1 / 2 / 2] * 2 + [0.0]])
    np.testing.assert_allclose(grads["gspo-token"], want, rtol=1e-5)
    np.testing.assert_allclose(grads["sequence"], want, rtol=1e-5)


# ----- KL -----------------------------------------------------------------------------------
def test_k3_nonnegative_and_zero_for_equal_policies():
    rng = np.random.default_rng(0)
    logp = jnp.asarray(rng.normal(size=(64, 32)) - 3)
    ref = jnp.asarray(rng.normal(size=(64, 32)) - 3)
    assert float(kl_per_token(logp, ref, "k3").min()) >= 0.0
    assert float(jnp.abs(kl_per_token(logp, logp, "k3")).max()) == 0.0
    assert float(kl_per_token(logp, ref, "k1").min()) < 0.0  # k1 is unbiased but signed


@pytest.mark.parametrize("estimator, per_token", [
    ("k3", 2.0 - math.log(2.0) - 1.0),   # d = log 2: e^d - d - 1
    ("k1", -math.log(2.0)),              # -d
])
def test_kl_term_by_hand(estimator, per_token):
    ref = LOGP + np.log(2.0)              # pi_ref = 2 pi on every token
    cfg = GRPOConfig(loss_type="bnpo", beta=0.1, kl_estimator=estimator)
    loss, m = loss_of(cfg, ref=jnp.asarray(ref, jnp.float32))
    assert float(m["kl"]) == pytest.approx(per_token, rel=1e-5)
    assert float(loss) == pytest.approx(1.2 / 5 + 0.1 * per_token, rel=1e-5)


# ----- masks and errors ---------------------------------------------------------------------
def test_mask_truncated_completions():
    cfg = GRPOConfig(loss_type="grpo", mask_truncated_completions=True)
    loss, _ = loss_of(cfg, truncated=np.array([False, True]))
    assert float(loss) == pytest.approx((-3.0 / 3 + 0.0) / 2, rel=1e-6)  # row 1 still counts as a row
    loss, _ = loss_of(GRPOConfig(loss_type="bnpo", mask_truncated_completions=True),
                      truncated=np.array([False, True]))
    assert float(loss) == pytest.approx(-3.0 / 3, rel=1e-6)
    with pytest.raises(ValueError, match="needs `truncated`"):
        loss_of(cfg)


def test_padding_values_do_not_matter():
    junk = LOGP.copy()
    junk[1, 2] = 123.0  # a padded column: any value, no effect on loss or metrics
    for level in grpo.IS_LEVELS:
        cfg = GRPOConfig(importance_sampling_level=level)
        a, ma = loss_of(cfg)
        b, mb = loss_of(cfg, junk)
        assert float(a) == pytest.approx(float(b), rel=1e-6)
        assert float(ma["ratio"]) == pytest.approx(float(mb["ratio"]), rel=1e-6)


def test_micro_batch_normalisers_make_losses_add_up():
    for loss_type in grpo.LOSS_TYPES:
        cfg = GRPOConfig(loss_type=loss_type)
        full, _ = loss_of(cfg)
        parts = sum(float(policy_loss(LOGP[i:i + 1], OLD[i:i + 1], None, ADV[i:i + 1],
                                      MASK[i:i + 1], cfg, num_sequences=2,
                                      num_tokens=MASK.sum())[0]) for i in range(2))
        assert parts == pytest.approx(float(full), rel=1e-6), loss_type


def test_config_and_input_errors():
    with pytest.raises(ValueError, match="loss_type"):
        GRPOConfig(loss_type="token-sum")
    with pytest.raises(ValueError, match="importance_sampling_level"):
        GRPOConfig(importance_sampling_level="seq")
    with pytest.raises(ValueError, match="epsilon"):
        GRPOConfig(epsilon=1.5)
    with pytest.raises(ValueError, match="beta"):
        GRPOConfig(beta=-0.1)
    with pytest.raises(ValueError, match="needs ref_logp"):
        loss_of(GRPOConfig(beta=0.04))
    with pytest.raises(ValueError, match="pass ref_logp=None"):
        loss_of(GRPOConfig(), ref=jnp.asarray(LOGP))
    with pytest.raises(ValueError, match="advantages"):
        policy_loss(LOGP, OLD, None, ADV[:1], MASK, GRPOConfig())
    with pytest.raises(ValueError, match="mask"):
        policy_loss(LOGP, OLD, None, ADV, MASK[:, :2], GRPOConfig())
