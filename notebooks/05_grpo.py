# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec,jupytext,colab,accelerator
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · GRPO: the update, derived, written out, checked and run
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/getting-to-aha/getting-to-aha/blob/main/notebooks/05_grpo.ipynb)
# [![Open in Kaggle](https://kaggle.com/static/images/open-in-kaggle.svg)](https://kaggle.com/kernels/welcome?src=https://github.com/getting-to-aha/getting-to-aha/blob/main/notebooks/05_grpo.ipynb)
#
# **Hardware:** the outputs come from one machine with an **NVIDIA H100 80GB HBM3**, except section 6's. Sections
# 1-3, the exercises, section 6 and the appendix are maths on small arrays and committed files,
# seconds on any CPU. Sections 4-5 load Gemma 3 270M and run real GRPO steps; they ran beside
# five training runs on the same GPU, with 12% of its memory (so micro-batches of 4 rows, and step
# times slower than an idle GPU's). Section 6 only reads committed runs; it was re-run on a
# 2-core CPU once those five runs were committed. On a CPU sections 4-5 take one small step, to
# show the machinery working; on a GPU or TPU (Colab, Kaggle) they run a short real run. No
# account or download beyond PyPI.
#
# Notebook 03 built the sampler: for every prompt it draws $G$ completions and returns the
# log-probability of each token it drew. Notebook 04 built the reward: one number per completion.
# This notebook closes the loop with the update that turns those numbers into a better policy:
#
# ```
# prompts ──sampler──▶ G completions + log π_old ──reward──▶ r_i ──group──▶ A_i ──loss──▶ ∇θ ──AdamW──▶ θ'
# ```
#
# Section 2 builds the objective one idea at a time, each in plain `jax.numpy` on toy arrays and
# checked equal to `aha_utils.grpo`, the code the training loop runs. Section 3 is the warm start
# (a short supervised phase before GRPO). Section 4 takes one step by hand on the real model,
# section 5 runs the loop, section 6 looks at longer committed runs. Variants (GSPO, the KL
# estimators side by side, every loss option checked) are in the appendix.

# %% [markdown]
# ## Setup


# %%
# Use the course's repository if this notebook sits in a clone (or aha_utils was installed from
# one); otherwise (Colab, Kaggle, a notebook opened alone) clone it and run colab_setup.sh, which
# installs the right JAX for this machine and the pinned requirements (a few minutes).
# AHA_REPO_URL and AHA_SETUP_FLAGS (e.g. "--test") override the defaults below.
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

REPO_URL = os.environ.get("AHA_REPO_URL", "https://github.com/getting-to-aha/getting-to-aha")
SETUP_FLAGS = os.environ.get("AHA_SETUP_FLAGS", "").split()


def is_repo(d: Path) -> bool:
    return (d / "aha_utils").is_dir() and (d / "colab_setup.sh").is_file()


def find_repo_root() -> Path | None:
    here = Path.cwd().resolve()
    for d in [here, *here.parents]:  # this folder or one above it
        if is_repo(d):
            return d
    spec = importlib.util.find_spec("aha_utils")  # `pip install -e .` from a clone elsewhere
    if spec and spec.origin and is_repo(Path(spec.origin).resolve().parents[1]):
        return Path(spec.origin).resolve().parents[1]
    return None


ROOT = find_repo_root()
if ROOT is None:  # no clone here: make one (kept, so rerunning this cell does not clone again)
    ROOT = Path("getting-to-aha").resolve()
    if not ROOT.exists():
        subprocess.run(["git", "clone", "--depth", "1", REPO_URL, str(ROOT)], check=True)
    subprocess.run(["bash", "colab_setup.sh", *SETUP_FLAGS], cwd=ROOT, check=True)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # a clone works without `pip install -e .` too
print("repo root:", os.path.relpath(ROOT))  # relative: no machine's path in the outputs

import aha_utils
import jax

print("jax", jax.__version__, "|", jax.devices())

# %%
import dataclasses
import json
import tempfile
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from flax import nnx

from aha_utils import grpo

SEED = 0  # the toy arrays below, and the run of section 4, are pure functions of it
plt.rcParams.update({"font.size": 11})
print("jax", jax.__version__, "| backend:", jax.default_backend(), "|", jax.devices())

# %% [markdown]
# ## 1. Where we are
#
# One GRPO step, as `aha_utils.train.train` runs it:
#
# 1. take $B$ prompts $q$ and sample $G$ completions $o_1, \dots, o_G$ of each at temperature 1
#    (notebook 03); keep the log-prob $\log \pi_\text{old}(o_{i,t})$ of every sampled token;
# 2. score each completion, $r_i = r(q, o_i)$: 1 correct, 0.1 well-formed but wrong, 0 otherwise
#    (notebook 04);
# 3. turn the $G$ rewards of a prompt into advantages $A_i$: how much better than its siblings
#    $o_i$ did;
# 4. take $\mu$ optimizer steps on a loss that raises the log-probability of tokens with
#    $A_i > 0$ and lowers it for $A_i < 0$, without moving too far from the sampling policy.
#
# Steps 3 and 4 are this notebook.

# %% [markdown]
# ## 2. The objective, one idea at a time
#
# ### 2.1 The policy gradient, and a baseline
# We want to maximise the expected reward $J(\theta) = \mathbb{E}_{o \sim \pi_\theta(\cdot \mid q)}\,
# r(q, o)$, where $\log \pi_\theta(o \mid q) = \sum_t \log \pi_\theta(o_t \mid q, o_{<t})$. The
# log-derivative trick turns its gradient into an average over samples:
# $$ \nabla_\theta J = \mathbb{E}\big[\, r(q, o)\, \nabla_\theta \log \pi_\theta(o \mid q) \,\big]. $$
# Since $\mathbb{E}_o[\nabla_\theta \log \pi_\theta(o \mid q)] = \nabla_\theta \sum_o \pi_\theta(o
# \mid q) = \nabla_\theta 1 = 0$, we may subtract any **baseline** $b(q)$ that does not depend on
# $o$: the average stays the same, and with $b(q)$ near the mean reward the noise drops.
#
# A policy over four whole completions shows both: eight samples per estimate, 4,000 estimates.

# %%
logits = jnp.array([0.5, 0.0, -0.5, 1.0])          # the policy: softmax over 4 completions
r_toy = jnp.array([1.0, 0.1, 0.0, 0.1])            # their rewards
p_toy = jax.nn.softmax(logits)
exact = jax.grad(lambda th: jax.nn.softmax(th) @ r_toy)(logits)   # the true gradient of E[r]
score = jax.jacobian(jax.nn.log_softmax)(logits)   # row o: grad of log pi(o)


def estimate(key, baseline, n=8):
    o = jax.random.categorical(key, logits, shape=(n,))          # n sampled completions
    return ((r_toy[o] - baseline)[:, None] * score[o]).mean(axis=0)


keys = jax.random.split(jax.random.key(SEED), 4000)
print(f"{'exact gradient':26} {np.round(np.asarray(exact), 3)}")
for name, b in (("no baseline", 0.0), (f"baseline E[r] = {float(p_toy @ r_toy):.3f}",
                                       float(p_toy @ r_toy))):
    g = jax.vmap(lambda k: estimate(k, b))(keys)
    print(f"{name:26} mean {np.round(np.asarray(g.mean(0)), 3)}, "
          f"std {np.round(np.asarray(g.std(0)), 3)}, total variance {float(g.var(0).sum()):.4f}")

# %% [markdown]
# Both estimators average to the exact gradient (up to sampling noise). With the baseline the
# estimates scatter less in total (the sum of the components' variances), though not on every
# component: a baseline is a variance-reduction device, and the best one depends on the policy.
#
# ### 2.2 The group is the baseline: advantages
# PPO (Schulman et al. 2017) learns $b(q)$ with a value network as large as the policy. GRPO
# (DeepSeekMath, Shao et al. 2024) drops it: it samples $G$ completions of the same prompt and
# uses their mean reward as the baseline, $A_i = r_i - \bar r$. (Including $r_i$ in its own
# baseline only rescales the estimate by $\tfrac{G-1}{G}$.) Every token of $o_i$ gets the same
# $A_i$: the reward says nothing about which token helped.
#
# GRPO also divides by the group's standard deviation, $A_i = (r_i - \bar r) / (\operatorname{std}
# + \varepsilon)$. **Dr.GRPO** (Liu et al. 2025) drops the division (`scale_rewards=False`): a
# group whose rewards barely differ gets a small std and therefore *large* advantages, a bias by
# question difficulty. Under both, a group whose rewards are all equal has $A_i = 0$.

# %%
def my_group_advantages(rewards, G, scale_rewards=True, eps=1e-4):
    r = jnp.asarray(rewards, jnp.float32).reshape(-1, G)      # [prompts, G], samples adjacent
    a = r - r.mean(axis=1, keepdims=True)
    if scale_rewards:  # GRPO; Dr.GRPO stops at the mean
        a = a / (r.std(axis=1, ddof=1, keepdims=True) + eps)  # sample std (ddof=1), as TRL
    return a.reshape(-1)


# %% [markdown]
# Four groups of $G = 4$ under TinyZero's reward. Watch the first two rows: with the std, a
# group separated only by *format* (0.1 against 0) gets the same advantages as one separated by
# a *correct answer* (1 against 0). Without it they differ tenfold.

# %%
groups = {"one correct": [1, 0, 0, 0], "one well-formed": [0.1, 0, 0, 0],
          "three correct": [1, 1, 1, 0.1], "all fail": [0, 0, 0, 0]}
rewards = np.concatenate(list(groups.values())).astype(np.float32)
adv_grpo = my_group_advantages(rewards, 4)
adv_dr = my_group_advantages(rewards, 4, scale_rewards=False)
print(f"{'group':16} {'rewards':22} {'GRPO  (r - mean) / std':32} Dr.GRPO  r - mean")
for k, name in enumerate(groups):
    sl = slice(4 * k, 4 * k + 4)
    fmt = lambda a, p: np.array2string(np.asarray(a[sl]), precision=p)
    print(f"{name:16} {str(groups[name]):22} {fmt(adv_grpo, 2):32} {fmt(adv_dr, 3)}")

for scale in (True, False):
    np.testing.assert_allclose(my_group_advantages(rewards, 4, scale),
                               grpo.group_advantages(rewards, 4, scale_rewards=scale), rtol=1e-6)
print("equal to aha_utils.grpo.group_advantages, with and without the std")

# %% [markdown]
# ### 2.3 Reusing a batch: the importance ratio
# Sampling is the expensive part, so GRPO may take $\mu$ optimizer steps on one batch. After the
# first, $\pi_\theta$ is no longer the policy that sampled the batch, $\pi_\text{old}$, and each
# token is reweighted by the importance ratio
# $$ w_{i,t}(\theta) = \frac{\pi_\theta(o_{i,t} \mid q, o_{i,<t})}{\pi_\text{old}(o_{i,t} \mid q, o_{i,<t})}
#    = \exp\big(\log \pi_\theta(o_{i,t}) - \log \pi_\text{old}(o_{i,t})\big), $$
# computed from log-probs (the sampler already returned $\log \pi_\text{old}$). At $\theta =
# \theta_\text{old}$ the ratio is 1 and the gradient of $w_{i,t} A_i$ is $A_i \nabla_\theta \log
# \pi_\theta(o_{i,t})$: the policy gradient of 2.1, token by token.

# %%
def my_ratio(logp, old_logp):
    return jnp.exp(logp - old_logp)   # per token; from log-probs, never dividing tiny numbers


old_toy = jnp.log(jnp.array([[0.5, 0.01, 0.3]]))   # the sampler's probabilities of 3 tokens
A_toy = jnp.array([2.0])
g = jax.grad(lambda lp: (my_ratio(lp, old_toy) * A_toy[:, None]).sum())(old_toy)
print("ratio at theta = theta_old:", np.asarray(my_ratio(old_toy, old_toy)),
      "| d(w A) / d log pi:", np.asarray(g), "= A")

# the library's `ratio` metric is the token mean of the same w
logp_toy = old_toy + jnp.array([[0.1, -0.3, 0.0]])
_, metrics = grpo.policy_loss(logp_toy, old_toy, None, A_toy, jnp.ones((1, 3)), grpo.GRPOConfig())
np.testing.assert_allclose(my_ratio(logp_toy, old_toy).mean(), metrics["ratio"], rtol=1e-6)
print(f"mean ratio {float(metrics['ratio']):.4f}: equal to aha_utils.grpo's")

# %% [markdown]
# ### 2.4 PPO's clip: how far one batch may move the policy
# PPO's clipped surrogate, the objective per token (to maximise; the loss is its negative):
# $$ \min\!\big( w_{i,t} A_i,\; \operatorname{clip}(w_{i,t},\, 1 - \epsilon_\text{low},\, 1 + \epsilon_\text{high})\, A_i \big). $$
# If $A_i > 0$ and $w > 1 + \epsilon_\text{high}$, or $A_i < 0$ and $w < 1 - \epsilon_\text{low}$,
# the minimum is the clipped term, a constant: **that token's gradient is exactly zero**, since
# it has already moved far enough the way its advantage asks. In the other direction the
# unclipped term is kept (the minimum is a pessimistic bound). PPO and GRPO use $\epsilon = 0.2$;
# DAPO (Yu et al. 2025) raises only the upper one to 0.28 ("clip-higher") so that rare tokens,
# which a ratio of 1.2 barely moves, can grow.

# %%
def my_surrogate(w, A, eps_low=0.2, eps_high=0.2):
    """PPO's clipped objective per token (to maximise)."""
    return jnp.minimum(w * A, jnp.clip(w, 1 - eps_low, 1 + eps_high) * A)


w_grid = jnp.linspace(0.01, 2.0, 400)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
for ax, A in zip(axes, (1.0, -1.0)):
    obj = my_surrogate(w_grid, A, 0.2, 0.28)
    slope = jax.vmap(jax.grad(lambda w: my_surrogate(w, A, 0.2, 0.28)))(w_grid)
    ax.plot(w_grid, w_grid * A, "--", color="0.6", label="unclipped $wA$")
    ax.plot(w_grid, obj, lw=2.5, label="clipped objective")
    ax.fill_between(w_grid, -2.2, 2.2, where=np.asarray(slope == 0), color="C3", alpha=0.12,
                    label="gradient exactly 0")
    for x in (0.8, 1.28):
        ax.axvline(x, color="0.4", lw=0.8, ls=":")
    ax.set(title=f"A = {A:+.0f}", xlabel=r"ratio $w = \pi_\theta / \pi_{old}$", ylim=(-2.1, 2.1))
    ax.grid(alpha=0.3)
axes[0].set_ylabel("objective per token")
axes[0].legend(loc="upper left", fontsize=9)
fig.suptitle(r"PPO's clipped surrogate, $\epsilon_{low} = 0.2$, $\epsilon_{high} = 0.28$ "
             "(dotted: $1 - \\epsilon_{low}$, $1 + \\epsilon_{high}$)")
fig.tight_layout()
plt.show()

# %% [markdown]
# With $A > 0$ the objective rises with the ratio until $1 + \epsilon_\text{high}$ and is flat
# after: pushing that token up further earns nothing. With $A < 0$ it is flat below
# $1 - \epsilon_\text{low}$. The other side is never flat: a token with $A > 0$ whose ratio has
# *fallen* below $1 - \epsilon$ still gets pushed up.
#
# The same on a toy batch of two completions (the second one token shorter, so one padding
# slot), ratios chosen directly ($\log \pi_\text{old} = 0$, $\log \pi_\theta = \log w$),
# $A = (+1, -2)$; `jax.grad` gives each token's gradient of the loss (the negative objective,
# averaged over the five tokens):

# %%
W = np.array([[1.1, 0.7, 1.5], [0.6, 1.3, 1.0]], np.float32)   # [1, 2] is padding
TOY_A = jnp.array([1.0, -2.0])
TOY_MASK = jnp.array([[1, 1, 1], [1, 1, 0]], jnp.float32)


def toy_token_mean_loss(logp):
    per_token = -my_surrogate(my_ratio(logp, 0.0), TOY_A[:, None])
    return (per_token * TOY_MASK).sum() / TOY_MASK.sum()


grad = jax.grad(toy_token_mean_loss)(jnp.log(W))
print("row tok  ratio     A  clipped    d loss / d log pi")
for i in range(2):
    for t in range(3 - i):
        w, a = W[i, t], float(TOY_A[i])
        clipped = (a > 0 and w > 1.2) or (a < 0 and w < 0.8)
        g = float(grad[i, t]) + 0.0   # + 0.0 prints jax's -0.0 as 0.0
        print(f"{i:3} {t:3} {w:6.2f} {a:+5.0f}  {'yes' if clipped else 'no':7}  {g:+.4f}")
assert grad[0, 2] == 0.0 and grad[1, 0] == 0.0   # exactly zero, not merely small
lib = grpo.policy_loss(jnp.log(W), jnp.zeros((2, 3)), None, TOY_A, TOY_MASK,
                       grpo.GRPOConfig(loss_type="dapo"))[0]
np.testing.assert_allclose(toy_token_mean_loss(jnp.log(W)), lib, rtol=1e-6)
print(f"loss {float(lib):+.4f}: equal to aha_utils.grpo.policy_loss (token mean, epsilon 0.2)")

# %% [markdown]
# The two clipped tokens (ratio 1.5 with $A > 0$, 0.6 with $A < 0$) get a gradient of exactly
# zero; the token at 0.7 with $A > 0$ is *not* clipped: below $1 - \epsilon$ with a positive
# advantage, it still gets pushed up.
#
# ### 2.5 Adding up the tokens, and the length bias
# With a mask $m_{i,t}$ (1 on the completion's tokens, its stop token included; 0 on padding),
# per-token losses $\ell_{i,t}$ and $B$ completions, the per-token losses can be summed three
# ways:
#
# | `loss_type` | loss | a token's weight |
# |---|---|---|
# | `grpo` (DeepSeekMath): mean per sequence, then over sequences | $\frac{1}{B} \sum_i \frac{1}{\lvert o_i \rvert} \sum_t \ell_{i,t}$ | $\frac{1}{B\,\lvert o_i \rvert}$: less in longer completions |
# | `dapo` (DAPO): mean over the batch's tokens | $\sum_{i,t} \ell_{i,t} \,/\, \sum_i \lvert o_i \rvert$ | the same for every token of the batch |
# | `dr_grpo` (Dr.GRPO): a constant normaliser | $\sum_{i,t} \ell_{i,t} \,/\, (B \cdot L_\text{max})$ | a constant ($L_\text{max}$: `max_new_tokens`) |
#
# Under `grpo`, a long wrong answer ($A_i < 0$) is pushed down *less per token* than a short one;
# Dr.GRPO names this as a source of ever-longer wrong answers.

# %%
def my_aggregate(per_token, mask, loss_type="grpo", max_len=None):
    lengths = jnp.maximum(mask.sum(axis=1), 1.0)                          # |o_i|
    if loss_type == "grpo":
        return ((per_token * mask).sum(axis=1) / lengths).mean()
    if loss_type in ("bnpo", "dapo"):
        return (per_token * mask).sum() / jnp.maximum(mask.sum(), 1.0)
    if loss_type == "dr_grpo":
        return (per_token * mask).sum() / (mask.shape[0] * (max_len or mask.shape[1]))
    raise ValueError(loss_type)


# Two wrong completions (A = -1) of 2 and 8 tokens, at ratio 1, L_max = 16
mask2 = np.zeros((2, 8), np.float32)
mask2[0, :2], mask2[1, :] = 1, 1
zeros2, A2 = jnp.zeros((2, 8)), jnp.array([-1.0, -1.0])
for lt in ("grpo", "dapo", "dr_grpo"):
    loss = lambda lp: my_aggregate(-my_surrogate(my_ratio(lp, zeros2), A2[:, None]), mask2, lt, 16)
    g2 = jax.grad(loss)(zeros2)
    lib = jax.grad(lambda lp: grpo.policy_loss(lp, zeros2, None, A2, mask2, grpo.GRPOConfig(
        loss_type=lt, max_completion_length=16))[0])(zeros2)
    np.testing.assert_allclose(g2, lib, rtol=1e-6)
    print(f"{lt:8} per-token push: short answer {float(g2[0, 0]):.4f}, long answer "
          f"{float(g2[1, 0]):.4f} (ratio {float(g2[0, 0] / g2[1, 0]):.0f}x); "
          "equal to aha_utils.grpo's")

# %% [markdown]
# Under `grpo` each token of the short wrong answer is pushed down four times harder than each
# token of the long one: being long dilutes the penalty. The other two treat every token alike.
#
# ### 2.6 A KL penalty to a reference, or none
# DeepSeekMath adds $\beta\, \mathrm{KL}(\pi_\theta \,\|\, \pi_\text{ref})$ per token to the loss,
# $\pi_\text{ref}$ being the initial model, estimated on the sampled tokens with $\rho_t =
# \pi_\text{ref}(o_t) / \pi_\theta(o_t)$ as
# $$ k_3 = \rho_t - 1 - \log \rho_t \;\ge\; 0 $$
# (Schulman, *Approximating KL Divergence*, 2020): unbiased, never negative (since $\log x \le
# x - 1$) and exactly 0 when the two policies agree. DeepSeekMath uses $\beta = 0.04$. DAPO drops
# the term ($\beta = 0$): a reasoning policy is *meant* to move away from the initial model. So do
# this course's presets, and $\beta = 0$ means **no reference model at all**: one forward pass per
# update fewer and, when every weight is trained, no frozen copy of the model. (The simpler $k_1
# = -\log \rho_t$ is compared with $k_3$ in the appendix.)

# %%
def my_kl(logp, ref_logp, kl="k3"):
    log_rho = ref_logp - logp                                   # log pi_ref / pi_theta
    return -log_rho if kl == "k1" else jnp.exp(log_rho) - 1 - log_rho


rng = np.random.default_rng(SEED)
lp_a, lp_b = (jnp.asarray(rng.normal(-2.0, 1.0, (4, 5)), jnp.float32) for _ in range(2))
for est in grpo.KL_ESTIMATORS:
    np.testing.assert_allclose(my_kl(lp_a, lp_b, est), grpo.kl_per_token(lp_a, lp_b, est),
                               rtol=1e-5, atol=1e-7)
print(f"k3 on 20 random tokens: min {float(my_kl(lp_a, lp_b).min()):.4f} (never negative); "
      f"with pi_ref = pi: {float(jnp.abs(my_kl(lp_a, lp_a)).max())}; "
      "equal to aha_utils.grpo.kl_per_token")

# %% [markdown]
# ### 2.7 The whole loss
# Put together: the ratio, the clipped surrogate, the KL term when $\beta > 0$, the mask, the
# reduction. Two more options: `truncated` drops completions that hit the length limit without
# stopping (DAPO's overlong filtering: their reward says more about the limit than about the
# answer), and `level` picks how the ratio is formed: per token here, per sequence (GSPO) in the
# appendix, which extends `my_importance_ratio`.

# %%
def my_importance_ratio(logp, old_logp, mask, level="token"):
    if level != "token":
        raise NotImplementedError(f"level={level!r}: see the appendix (GSPO)")
    return my_ratio(logp, old_logp)


def my_policy_loss(logp, old_logp, ref_logp, advantages, mask, *, loss_type="grpo",
                   level="token", epsilon=0.2, epsilon_high=None, beta=0.0, kl="k3",
                   max_len=None, truncated=None):
    mask = jnp.asarray(mask, jnp.float32)                                 # [B, C]
    if truncated is not None:                                             # DAPO's overlong filter
        mask = mask * (1.0 - jnp.asarray(truncated, jnp.float32))[:, None]
    # Padding may hold anything; zero it so exp() of junk cannot make inf * 0 = NaN.
    valid = mask > 0
    logp, old_logp = jnp.where(valid, logp, 0.0), jnp.where(valid, old_logp, 0.0)
    A = jnp.asarray(advantages, jnp.float32)[:, None]                     # [B, 1]: per completion
    w = my_importance_ratio(logp, old_logp, mask, level)                  # [B, C]
    eps_high = epsilon if epsilon_high is None else epsilon_high
    per_token = -my_surrogate(w, A, epsilon, eps_high)
    if beta > 0:
        per_token += beta * my_kl(logp, jnp.where(valid, ref_logp, 0.0), kl)
    return my_aggregate(per_token, mask, loss_type, max_len)


# %% [markdown]
# The check that matters: on a random batch with ratios near 1 (some past the clip), the loss
# **and its gradient** equal `aha_utils.grpo.policy_loss` for each reduction, with and without
# clip-higher, with and without the KL term.

# %%
B, C = 6, 7
mask = (np.arange(C)[None, :] < rng.integers(1, C + 1, B)[:, None]).astype(np.float32)
old = rng.normal(-2.0, 1.0, (B, C)).astype(np.float32)
logp = old + rng.normal(0.0, 0.3, (B, C)).astype(np.float32)   # ratios ~ e^(+-0.3): some clipped
ref = old + rng.normal(0.0, 0.3, (B, C)).astype(np.float32)
adv = my_group_advantages(rng.choice([0.0, 0.1, 1.0], B), 3)


def check(checked=0, levels=("token",), kls=("k3",), truncs=(None,), loss_types=None):
    """Loss and gradient equal to the library's over every combination asked for."""
    for loss_type in loss_types or ("grpo", "dapo", "dr_grpo"):
        for level in levels:
            for eps_high in (None, 0.28):
                for beta, kl in [(0.0, "k3")] + [(0.04, k) for k in kls]:
                    for trunc in truncs:
                        cfg = grpo.GRPOConfig(loss_type=loss_type, importance_sampling_level=level,
                                              epsilon_high=eps_high, beta=beta, kl_estimator=kl,
                                              mask_truncated_completions=trunc is not None)
                        r = ref if beta > 0 else None
                        mine = jax.value_and_grad(lambda lp: my_policy_loss(
                            lp, old, r, adv, mask, loss_type=loss_type, level=level,
                            epsilon_high=eps_high, beta=beta, kl=kl, truncated=trunc))(logp)
                        lib = jax.value_and_grad(lambda lp: grpo.policy_loss(
                            lp, old, r, adv, mask, cfg, truncated=trunc)[0])(logp)
                        for m, l in zip(mine, lib):
                            np.testing.assert_allclose(m, l, rtol=1e-5, atol=1e-7)
                        checked += 1
    return checked


print(f"{check()} configurations: loss and gradient equal to aha_utils.grpo.policy_loss")

# %% [markdown]
# ### 2.8 $\mu$ updates, and the first one
# DeepSeekMath's Algorithm 1: sample a batch with $\pi_\text{old} = \pi_\theta$, compute the
# advantages once, then take $\mu$ optimizer steps, all against the *same* $\log \pi_\text{old}$.
# On the first step $\theta = \theta_\text{old}$, so the ratio is 1 **up to rounding**: the
# sampler computes each log-prob one token at a time from its KV cache, the train step all tokens
# at once, in the preset's compute dtype (bfloat16 on a GPU or TPU), so the two disagree in the
# last digits. On almost every token that is far inside $1 \pm \epsilon$, and the gradient is the
# policy gradient with the group baseline. The ratio and the clip really act from the second
# step on; this course's presets use $\mu = 1$.

# %% [markdown]
# ## 3. The warm start: supervised fine-tuning first
#
# GRPO can only reinforce what the model already does now and then. Gemma 3 270M almost never
# writes a correct Countdown answer (section 4 shows a batch), so every group ties, the
# advantages are 0, and there is nothing to learn beyond the format reward. The warm start is a
# short supervised phase first: for written-out solutions $o$ of training problems $q$ it
# minimises the cross-entropy of the completion's tokens (never the prompt's),
# $$ \mathcal{L}_\text{SFT} = -\frac{1}{\lvert o \rvert} \sum_t \log \pi_\theta(o_t \mid q, o_{<t}), $$
# which is the policy gradient with advantage 1 on a demonstration instead of a sample. GRPO then
# starts from those weights. Here is what one training example looks like, in the two styles the
# course writes:

# %%
from aha_utils.data.countdown import make_problems
from aha_utils.data.search_traces import write_search
from aha_utils.rewards import reward_terms
from aha_utils.sft_data import countdown_sft_example, countdown_sft_examples

candidates = make_problems(20, num_numbers=4, seed=SEED)
problem = next(q for q in candidates if write_search(q, seed=SEED).failed >= 1)  # one dead end+
prompt, direct = countdown_sft_example(problem, style="direct")
_, search = countdown_sft_example(problem, style="search", seed=SEED)
print("PROMPT (its end):", "..." + prompt[-160:], sep="\n")
for style, completion in (("direct", direct), ("search", search)):
    t = reward_terms("countdown", completion, problem)
    print(f"\nCOMPLETION, style={style!r} (correct {t['correct']:.0f}, "
          f"strict format {t['format_strict']:.0f}):\n{completion}")

# %% [markdown]
# The **direct** example walks through the solver's expression. The **search** example
# (`aha_utils.data.search_traces.write_search`) is a real depth-first search in words: it tries a
# pair, computes the true result, says how far it is from the target, backs up and tries another
# move the miss points to, until it hits. Every equation it writes is true and the answer is
# checked. A mix (`countdown_sft_examples`, `search_fraction`) gives a seeded share of each; the
# figure counts the dead ends written in 200 search traces: most show at most two, many none.

# %%
train_problems = make_problems(200, num_numbers=4, seed=SEED)
traces = [write_search(q, seed=SEED) for q in train_problems]
mix = countdown_sft_examples(train_problems[:20], search_fraction=0.15, seed=SEED)
n_search = sum(c != countdown_sft_example(q)[1] for q, (_, c) in zip(train_problems, mix))
print(f"search_fraction=0.15 on 20 problems: {n_search} search traces, {20 - n_search} direct")
dead_ends = np.bincount([t.failed for t in traces])
fig, ax = plt.subplots(figsize=(6, 3))
ax.bar(range(len(dead_ends)), dead_ends)
ax.set(xlabel="failed attempts written in the trace", ylabel="traces",
       title=f"Search traces of {len(traces)} Countdown-4 problems")
ax.grid(alpha=0.3, axis="y")
fig.tight_layout()
plt.show()

# %% [markdown]
# **Why search traces.** RL amplifies behaviours the model already shows; it does not invent them
# (Gandhi et al. 2025, *Cognitive Behaviors that Enable Self-Improving Reasoners*, found priming
# with verification and backtracking to be what lets RL improve on Countdown). A model that never
# checks its arithmetic or tries again gives GRPO no "aha" to reinforce; a few traces that miss,
# measure the miss and try again put that behaviour within reach. None of them uses a reflection
# word ("wait", "let me check", ...), so any such word after RL is RL's own (notebook 06 counts
# them). Most of the mix stays direct, so the model also learns the format and the arithmetic.
#
# **Running it.** The supervised phase is a command; a few hundred steps take minutes on a GPU
# (far too long for this notebook on a CPU). Its `--out` folder holds the weights that GRPO then
# starts from:
#
# ```bash
# python -m aha_utils.sft --task countdown --steps 300 --search-fraction 0.15 --out runs/sft_countdown
# python -m aha_utils.train --task countdown --steps 200 --out runs/grpo_from_sft \
#     --set init_from=runs/sft_countdown
# ```
#
# Section 6 compares committed runs that started from the base model with runs that started from
# such a warm start (`sft` in their names).

# %% [markdown]
# ## Exercises
#
# ### Exercise 1: Dr.GRPO on the toy groups
# Compute the advantages of the four groups of section 2.2 without the std (`scale_rewards=False`)
# and, for each completion, the gradient of the `dr_grpo` loss with respect to its first token's
# log-prob (one token per completion, ratio 1, `max_len=1`). Compare with GRPO (`grpo` loss, std
# on). Check: under GRPO the "one correct" and "one well-formed" groups get the same push (up to
# the $\varepsilon$ under the std); under Dr.GRPO the correct one gets exactly ten times the push.

# %% [markdown]
# #### Solution 1

# %% jupyter={"source_hidden": true}
# Solution
N = len(rewards)
lp1, m1 = jnp.zeros((N, 1)), jnp.ones((N, 1))
pushes = {}
for name, scale, lt in (("GRPO", True, "grpo"), ("Dr.GRPO", False, "dr_grpo")):
    a = my_group_advantages(rewards, 4, scale_rewards=scale)
    pushes[name] = -jax.grad(lambda lp: my_policy_loss(lp, lp1, None, a, m1, loss_type=lt,
                                                       max_len=1))(lp1)[:, 0]
    print(f"{name:8} push on each group's first sample: "
          f"{np.round(np.asarray(pushes[name][::4]), 4)}")
np.testing.assert_allclose(pushes["GRPO"][0], pushes["GRPO"][4], rtol=1e-2)  # up to eps
np.testing.assert_allclose(pushes["Dr.GRPO"][0], 10 * pushes["Dr.GRPO"][4], rtol=1e-5)
print("GRPO: correct = well-formed (up to eps); Dr.GRPO: correct = 10 x well-formed")

# %% [markdown]
# ### Exercise 2: a tied group teaches nothing
# Take one group of $G = 4$ completions of 5 tokens whose rewards are all 0.1, with random
# log-probs (ratios away from 1). Check that the gradient of `my_policy_loss` is exactly zero
# under GRPO and Dr.GRPO, and that adding a KL term ($\beta = 0.04$, some reference log-probs)
# makes it non-zero: then the KL is the only thing that moves the policy.

# %% [markdown]
# #### Solution 2

# %% jupyter={"source_hidden": true}
# Solution
lp_g = jnp.asarray(rng.normal(-2.0, 1.0, (4, 5)), jnp.float32)
old_g = lp_g + jnp.asarray(rng.normal(0.0, 0.3, (4, 5)), jnp.float32)
ref_g = lp_g + jnp.asarray(rng.normal(0.0, 0.3, (4, 5)), jnp.float32)
tied = [0.1, 0.1, 0.1, 0.1]
for scale, lt in ((True, "grpo"), (False, "dr_grpo")):
    a = my_group_advantages(tied, 4, scale_rewards=scale)
    g = jax.grad(lambda lp: my_policy_loss(lp, old_g, None, a, jnp.ones((4, 5)),
                                           loss_type=lt))(lp_g)
    assert float(jnp.abs(g).max()) == 0.0
    g_kl = jax.grad(lambda lp: my_policy_loss(lp, old_g, ref_g, a, jnp.ones((4, 5)),
                                              loss_type=lt, beta=0.04))(lp_g)
    print(f"{lt:8} advantages {np.asarray(a)}, max |grad| {float(jnp.abs(g).max())}, "
          f"with beta = 0.04: {float(jnp.abs(g_kl).max()):.4f}")

# %% [markdown]
# ### Exercise 3: the clip range
# One token with $A = +1$ starts at ratio 1. Take 100 steps of gradient descent on its loss
# $-\min(wA, \operatorname{clip}(w)A)$ with respect to its log-prob (step size 0.05), for
# $\epsilon_\text{high} \in \{0.1, 0.2, 0.28\}$. Where does the ratio stop? Check: just past
# $1 + \epsilon_\text{high}$, within one step (a step multiplies the ratio by at most
# $e^{0.05 w}$).

# %% [markdown]
# #### Solution 3

# %% jupyter={"source_hidden": true}
# Solution
for eps_high in (0.1, 0.2, 0.28):
    lp = jnp.zeros(())
    step_grad = jax.grad(lambda lp: -my_surrogate(jnp.exp(lp), 1.0, 0.2, eps_high))
    for _ in range(100):
        lp = lp - 0.05 * step_grad(lp)
    w_end = float(jnp.exp(lp))
    assert 1 + eps_high < w_end <= (1 + eps_high) * np.exp(0.05 * (1 + eps_high)) + 1e-6
    print(f"eps_high {eps_high}: the ratio stops at {w_end:.4f} (1 + eps_high = {1 + eps_high})")

# %% [markdown]
# ## 4. One step on the real model
#
# Now the same pieces on Gemma 3 270M. The run's settings come from the preset the command line
# uses too (`RunConfig.preset(task, jax.default_backend())`, as `python -m aha_utils.train`
# does): on a CPU, LoRA and one short step; on a GPU, and on a TPU such as Colab's free v5e, the
# full fine-tune of the offline 270M, no account needed. Kaggle adds the larger checkpoints
# (Gemma 3 1B and 4B, downloaded with a Kaggle account, notebook 02): `KAGGLE_PRESET` picks the
# 1B-IT LoRA presets sized for one and eight TPU v5e chips.
#
# ### Hyperparameters
# `AHA_QUICK=1` (set by CI) only shrinks the run; the code path is the same.

# %%
from aha_utils.config import config_for
from aha_utils.memory import device_summary, estimate_memory
from aha_utils.run_config import RunConfig

AHA_QUICK = os.environ.get("AHA_QUICK") == "1"  # CI's quick mode, read once
BACKEND = jax.default_backend()  # cpu: minutes per step, so one step; gpu/tpu: a real run
DEVICE_KIND, N_DEVICES, DEVICE_MEMORY = device_summary()  # e.g. "TPU v5 lite", 1, 16 GB
KAGGLE_PRESET = None  # @param [None, "tpu_v5e_1", "tpu_v5e_8"]
# ^ None: the command line's preset for this backend, cpu (270M, LoRA) or gpu (270M, full
#   fine-tuning, also on a TPU); "tpu_v5e_1" / "tpu_v5e_8": Gemma 3 1B-IT from Kaggle, LoRA
TASK = "countdown"  # generated locally, so no download; GSM8K works the same way
if BACKEND == "cpu":
    TRAIN_STEPS = 1  # minutes per step here: one shows the loop end to end, it cannot show learning
else:
    TRAIN_STEPS = 2 if AHA_QUICK else 30  # GPU/TPU: a short real run (the CLI goes further)
SEED = 0  # the problems, the samples and the LoRA init are pure functions of it
if KAGGLE_PRESET is None:
    PRESET = "cpu" if BACKEND == "cpu" else "gpu"
    RUN = RunConfig.preset(TASK, BACKEND, steps=TRAIN_STEPS, seed=SEED)  # what the CLI runs
else:
    PRESET = KAGGLE_PRESET
    RUN = RunConfig.named(TASK, PRESET, steps=TRAIN_STEPS, seed=SEED)
if AHA_QUICK:
    RUN = RUN.quick()  # 2 prompts x 4 samples, 32 new tokens, 4 eval problems
while (DEVICE_MEMORY and RUN.micro_batch_size and RUN.micro_batch_size > 1 and not
       estimate_memory(config_for(RUN.model), RUN, n_data=N_DEVICES).fits(DEVICE_MEMORY)):
    # e.g. a 16 GB TPU v5e: fewer rows per forward, the same maths (gradients accumulate);
    # the CLI takes the same with --set micro_batch_size=8
    RUN = dataclasses.replace(RUN, micro_batch_size=RUN.micro_batch_size // 2)
G = RUN.num_samples  # the group size: completions per prompt
print(f"AHA_QUICK={AHA_QUICK}, {N_DEVICES} x {DEVICE_KIND} -> preset {PRESET!r}, {RUN.model}: "
      f"steps={RUN.steps}, each {RUN.prompts_per_step} "
      f"prompts x G={G} samples of up to {RUN.max_new_tokens} tokens; "
      f"{'LoRA rank ' + str(RUN.lora_rank) if RUN.lora_rank else 'full fine-tuning'}, "
      f"lr {RUN.learning_rate}, loss {RUN.loss_type!r}, beta {RUN.beta}, mu {RUN.num_iterations}")

# %% [markdown]
# ### The model, prepared as `train()` prepares it
# The preset's parameter dtype, then `init_training`, which adds LoRA adapters when the preset
# asks for them (the CPU preset does) and builds the AdamW optimizer. The problems and the
# sampling seed below are the ones `train()` uses at its first step, so this is that step, by
# hand.

# %%
from aha_utils.data.prompts import make_prompt
from aha_utils.lora import LoRAParam
from aha_utils.sampler import generate
from aha_utils.evaluation import STOP_STRINGS, score_completions, task_reward_fn
from aha_utils.grpo_step import build_batch, grpo_step, step_seed
from aha_utils.problems import Problems
from aha_utils.train import train
from aha_utils.train_step import completion_logprobs, init_training, trainable_filter
from aha_utils.weights import load_model

t0 = time.perf_counter()
model, tokenizer = load_model(RUN.model, dtype=jnp.dtype(RUN.param_dtype))
grpo_cfg, train_cfg = RUN.grpo_config(), RUN.train_config()
optimizer, ref_params = init_training(model, train_cfg, grpo_cfg, seed=RUN.seed)
trainable = sum(x.size for x in jax.tree.leaves(
    nnx.state(model, trainable_filter(train_cfg))))
print(f"{RUN.model} ({RUN.param_dtype}) loaded and prepared in {time.perf_counter() - t0:.1f} s; "
      f"trainable parameters: {trainable:,}; reference model: "
      f"{'none (beta = 0)' if grpo_cfg.beta == 0 else 'yes'}")

# %% [markdown]
# ### LoRA or every weight: the memory
# Full fine-tuning with AdamW keeps, per parameter, a float32 master weight, its float32
# gradient and Adam's two float32 moments: 16 bytes. LoRA (Hu et al. 2021) freezes the base
# weight $W$ and trains a low-rank update, $W + \frac{\alpha}{r} A B$ with $A \in \mathbb{R}^{d_\text{in}
# \times r}$, $B \in \mathbb{R}^{r \times d_\text{out}}$, $B = 0$ at the start (so the adapted model
# starts equal to the base). Only $A$ and $B$ carry gradients and Adam state; the base can stay
# in bfloat16. Here are the counts for the seven projections of every layer (q, k, v, o, gate,
# up, down), with the formula checked against `aha_utils.lora` on a small model. Activations come
# on top of these numbers and grow with the batch; `micro_batch_size` and `remat` bound them.

# %%
from aha_utils.config import ModelConfig, config_for
from aha_utils.lora import apply_lora
from aha_utils.model import Gemma


def lora_params(c, r):
    """r x (fan-in + fan-out) for each adapted projection of each layer."""
    q, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    per_layer = (c.d_model + q) + 2 * (c.d_model + kv) + (q + c.d_model) \
        + 2 * (c.d_model + c.ffn_dim) + (c.ffn_dim + c.d_model)
    return r * c.num_layers * per_layer


small = Gemma(ModelConfig.tiny(), dtype=jnp.float32, rngs=nnx.Rngs(0))
apply_lora(small, rank=8, alpha=16.0, rngs=nnx.Rngs(0))
n_small = sum(x.size for x in jax.tree.leaves(nnx.state(small, LoRAParam)))
assert n_small == lora_params(small.config, 8), (n_small, lora_params(small.config, 8))
if RUN.lora_rank:  # and against the model loaded above
    assert trainable == lora_params(model.config, RUN.lora_rank)

GB = 1e9
print(f"{'model':12} {'params':>8} {'full FT: 16 B/param':>20} {'LoRA r=8 params':>16} "
      f"{'LoRA: bf16 base + 16 B/adapter':>31}")
for name in ("gemma3-270m", "gemma3-1b", "gemma3-4b"):
    c = config_for(name)
    n, n_lora = c.num_params(), lora_params(c, 8)
    print(f"{name:12} {n / 1e9:7.2f}B {16 * n / GB:17.1f} GB {n_lora / 1e6:13.2f} M "
          f"{(2 * n + 16 * n_lora) / GB:28.2f} GB")
for backend in ("cpu", "gpu"):
    p = RunConfig.preset(TASK, backend)
    tuned = f"LoRA rank {p.lora_rank}" if p.lora_rank else "full fine-tuning"
    print(f"{backend} preset: {tuned}, lr {p.learning_rate}, parameters {p.param_dtype}, "
          f"compute {p.compute_dtype}, "
          f"{p.prompts_per_step} prompts x {p.num_samples}, micro-batch {p.micro_batch_size}")

# %% [markdown]
# For the 270M model both fit anywhere, and the GPU/TPU preset fine-tunes every weight. At 4B,
# full fine-tuning needs several 16 GB chips before the first activation, while LoRA's state fits
# on one. The CPU preset uses LoRA, so the notebook shows both paths; its learning rate is ten
# times larger, the usual scale for adapters, which start at $B = 0$.
#
# Those counts leave out what grows with the batch: the activations of a micro-batch, the
# log-prob chunks over the 262k vocabulary, and the sampler's KV cache. `estimate_memory` adds
# every term up from the shapes alone, per device, so a run that cannot fit says so before
# anything is loaded (the hyperparameter cell asks it whether the micro-batch fits). Here: this
# notebook's run on the devices found, then the total of each preset: `cpu` and `gpu` (the
# command line's, the second also on a TPU) and the two Kaggle ones for TPU v5e.

# %%
from aha_utils.memory import describe, estimate_memory
from aha_utils.run_config import DEVICE_PRESETS

print(describe(RUN))
print(f"\nthe hyperparameter cell picked {PRESET!r} for {N_DEVICES} x {DEVICE_KIND}")
for name in DEVICE_PRESETS:
    p, n = RunConfig.named(TASK, name), 8 if name == "tpu_v5e_8" else 1
    est = estimate_memory(config_for(p.model), p, n_data=n)
    print(f"  {name:10} {p.model:13} {'LoRA' if p.lora_rank else 'full FT':7} "
          f"{p.prompts_per_step:3} x {p.num_samples} rows, micro-batch {p.micro_batch_size}: "
          f"{est.total / GB:5.1f} GB per device")

# %% [markdown]
# ### Sample, score, compare within the group

# %%
problems = Problems(RUN).for_step(0)                       # train()'s first problems
prompts = [make_prompt(RUN.task, q, template=RUN.template) for q in problems]
# train() seeds step s with a key folded from (seed, s), so a resumed run draws as a straight one
seed0 = step_seed(jax.random.key(RUN.seed), 0)
t0 = time.perf_counter()
comp = generate(model, tokenizer, prompts, max_new_tokens=RUN.max_new_tokens,
                temperature=RUN.temperature, num_samples=G, seed=seed0,
                stop_strings=STOP_STRINGS, compute_dtype=RUN.compute_dtype)
sample_s = time.perf_counter() - t0
per_completion = [q for q in problems for _ in range(G)]   # samples of one prompt are adjacent
terms = score_completions(task_reward_fn(RUN.task, RUN.reward_scheme), comp.texts, per_completion)
advantages = my_group_advantages(terms["reward"], G, RUN.scale_rewards)
np.testing.assert_allclose(advantages, grpo.group_advantages(terms["reward"], G,
                                                             scale_rewards=RUN.scale_rewards))
print(f"sampled {len(comp.texts)} completions in {sample_s:.1f} s (compilation included)")
for i, text in enumerate(comp.texts[:16]):
    q = per_completion[i]
    tail = text[-70:].replace("\n", "\\n")
    print(f"{str(q['nums']):13} -> {q['target']:3} | r={terms['reward'][i]:.1f} "
          f"A={float(advantages[i]):+.2f} | {comp.lengths[i]:3} tok | ...{tail}")

# %% [markdown]
# The base model rarely writes a well-formed answer (a closed, non-empty `<answer>` tag), let alone
# a correct one. Only groups whose siblings scored differently carry a learning signal; the line
# below counts them.

# %%
n_groups = len(problems)
live = int((np.asarray(terms["reward"]).reshape(n_groups, G).std(axis=1) > 0).sum())
print(f"{live} of {n_groups} groups have non-zero advantages; mean reward "
      f"{terms['reward'].mean():.3f}, format rate {terms['format_soft'].mean():.2f}, "
      f"correct {terms['correct'].mean():.2f}")

# %% [markdown]
# ### The batch, and the log-probs the loss will see
# `build_batch` lays each row out as the left-padded prompt followed by the completion, with
# positions (-1 on padding), the completion mask, the sampler's log-probs as
# $\log \pi_\text{old}$, and the advantages. The train step recomputes $\log \pi_\theta$ of the
# same tokens with one forward pass (`completion_logprobs`: the vocabulary projection in chunks,
# never a `[B, T, 262144]` buffer). Before any update, they must reproduce the sampler's: ratio 1.

# %%
batch = build_batch(comp, advantages)
for k, v in batch.items():
    print(f"{k:16} {str(v.dtype):8} {v.shape}")

logprobs_fn = nnx.jit(completion_logprobs, static_argnames=("completion_start", "chunk"))
start = comp.prompt_tokens.shape[1]
rows = RUN.micro_batch_size or len(comp.texts)   # rows per forward: bounds the logits' memory
t0 = time.perf_counter()
logp_theta = np.concatenate([
    np.asarray(logprobs_fn(model, jnp.asarray(batch["tokens"][i:i + rows]),
                           jnp.asarray(batch["positions"][i:i + rows]),
                           completion_start=start, chunk=train_cfg.logprob_chunk))
    for i in range(0, len(comp.texts), rows)])
valid = batch["completion_mask"] > 0
diff = (logp_theta - batch["old_logprobs"])[valid]
print(f"\nlog-probs of {int(valid.sum())} completion tokens in {time.perf_counter() - t0:.1f} s: "
      f"max |log pi_theta - log pi_old| = {np.abs(diff).max():.1e}, "
      f"ratio in [{np.exp(diff.min()):.5f}, {np.exp(diff.max()):.5f}]")

args = (logp_theta, batch["old_logprobs"], None, batch["advantages"], batch["completion_mask"])
mine = my_policy_loss(*args, loss_type=RUN.loss_type, epsilon=RUN.epsilon,
                      epsilon_high=RUN.epsilon_high, max_len=RUN.max_new_tokens)
lib, _ = grpo.policy_loss(*args, grpo_cfg)
np.testing.assert_allclose(mine, lib, rtol=1e-5, atol=1e-7)
print(f"loss on the real batch: {float(mine):+.6f} (ours) = {float(lib):+.6f} (aha_utils)")

# %% [markdown]
# At ratio 1 the loss *value* is only minus a weighted mean of the advantages (for `grpo`,
# $-\frac{1}{B} \sum_i A_i = 0$, since advantages are centred in each group): it measures no
# progress; what matters is its gradient. The library runs everything above as one call,
# `grpo_step` (the call `train()` makes every step): it samples with the same seed, scores,
# builds the same batch, then takes the $\mu$ jitted updates (`train_step`), each the loss above
# on the model's own log-probs, its gradient through the LoRA adapters (or every weight),
# global-norm clipping and AdamW. Its metrics are the ones `train()` logs.

# %%
t0 = time.perf_counter()
step = grpo_step(model, tokenizer, optimizer, problems, RUN, seed=seed0,
                 reward_fn=task_reward_fn(RUN.task, RUN.reward_scheme), train_cfg=train_cfg,
                 ref_params=ref_params)
update_s = time.perf_counter() - t0
assert step.comp.texts == comp.texts   # the completions we sampled by hand
np.testing.assert_allclose(step.batch["advantages"], advantages, rtol=1e-5, atol=1e-6)
print(f"grpo_step in {update_s:.1f} s (sampling again, compilation included); its "
      f"{grpo_cfg.num_iterations} update(s), averaged: "
      + ", ".join(f"{key} {v:.4g}" for key, v in step.updates.items() if v is not None))

# %% [markdown]
# On this first update the ratio is 1 only up to rounding (section 2.8): the train step's
# bfloat16 forward disagrees slightly with the sampler's, and on the rare token where the
# disagreement reaches past $1 \pm \epsilon$ that token counts as clipped. So a tiny non-zero
# `clip_low` or `clip_high` here (a fraction of $5 \times 10^{-5}$ is one token in 20,000) is
# rounding, not learning; from the second update on a batch it would measure real movement. A
# gradient norm of zero would mean every group tied: nothing to learn from this batch.

# %% [markdown]
# ## 5. The loop
#
# `train(cfg, out_dir)` repeats that step `cfg.steps` times: sample, score, advantages, $\mu$
# updates; a line per step in `metrics.jsonl`; every `eval_every` steps (and at the end) a greedy
# evaluation on held-out problems in `eval.jsonl`, step 0 being the model before training; orbax
# checkpoints, so `--resume` continues an interrupted run; `summary.json` at the end. It loads its
# own copy of the model, so we free ours first. The compiled sampler and train step are reused:
# they depend on shapes, not on which copy of the weights they run on.

# %%
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # no ipywidgets: a text bar
del model, optimizer, ref_params
print("devices:", jax.devices())
out_dir = Path(tempfile.mkdtemp(prefix="aha_grpo_"))
t0 = time.perf_counter()
history = train(RUN, out_dir)
print(f"train() returned {len(history)} metrics rows in {(time.perf_counter() - t0) / 60:.1f} min")
print(f"its step 1: mean reward {history[0]['reward_mean']:.3f}, format rate "
      f"{history[0]['format_rate']:.3f} (section 4, same problems and seed: "
      f"{terms['reward'].mean():.3f}, {terms['format_soft'].mean():.3f})")

# %% [markdown]
# The files, and the keys of one line of `metrics.jsonl`:

# %%
print(sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*")
             if p.is_file() and "checkpoints" not in p.parts))
print(list(history[0]))


# %% [markdown]
# One function draws any run folder `train()` wrote: the training samples' reward and format
# rate, the greedy held-out accuracy and format rate, and the completion length.

# %%
from aha_utils.analysis import read_jsonl  # the run-file reader notebook 06 uses too


def plot_run(run_dir: Path):
    summary = json.loads((run_dir / "summary.json").read_text())
    metrics, evals = read_jsonl(run_dir / "metrics.jsonl"), read_jsonl(run_dir / "eval.jsonl")
    steps = [m["step"] for m in metrics]
    e_steps = [e["step"] for e in evals]
    dot = "o" if len(steps) <= 40 else None   # markers only while the points are countable
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.2))
    axes[0].plot(steps, [m["reward_mean"] for m in metrics], marker=dot)
    axes[0].set(title="train reward (mean)", ylim=(-0.02, 1.02))
    axes[1].plot(steps, [m["format_rate"] for m in metrics], marker=dot, label="samples (T=1)")
    axes[1].plot(e_steps, [e["format_rate"] for e in evals], "s--", label="held-out (greedy)")
    axes[1].set(title="format rate (closed <answer>)", ylim=(-0.02, 1.02))
    axes[1].legend(fontsize=8)
    axes[2].plot(e_steps, [e["accuracy"] for e in evals], "s--", color="C2")
    axes[2].set(title=f"held-out accuracy (greedy, n={evals[-1]['n']})", ylim=(-0.02, 1.02))
    axes[3].plot(steps, [m["completion_len_mean"] for m in metrics], marker=dot, label="mean")
    axes[3].plot(steps, [m["completion_len_max"] for m in metrics], ":", marker=dot, label="max")
    axes[3].set(title="completion length (tokens)",
                ylim=(0, 1.05 * summary["config"]["max_new_tokens"]))
    axes[3].legend(fontsize=8)
    for ax in axes:
        ax.set(xlabel="GRPO step", xlim=(-0.5, max(steps + e_steps) + 0.5))
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.suptitle(f"{run_dir.name}: {summary['model']} on {summary['task']}, "
                 f"{summary['hardware']}, {summary['wall_minutes']} min", fontsize=11)
    fig.tight_layout()
    plt.show()
    return summary, metrics


def eval_line(summary: dict) -> str:
    b, a = summary["eval"]["before"], summary["eval"]["after"]
    ci = f" (95% CI {a['accuracy_ci95']})" if "accuracy_ci95" in a else ""
    return (f"held-out, greedy, n={a['n']}: accuracy {b['accuracy']:.3f} -> {a['accuracy']:.3f}"
            f"{ci}, format rate {b['format_rate']:.3f} -> {a['format_rate']:.3f}")


print(eval_line(plot_run(out_dir)[0]))

# %% [markdown]
# On a CPU these curves are a point or two: the loop works end to end, but learning needs many
# more samples per step and many more steps, which is a GPU's or TPU's job (there `TRAIN_STEPS`
# is 30, with the 16 prompts x 8 samples preset). The run above is that GPU branch on the H100,
# and it shows the zero arm's first lesson and its limit. The format reward is learned within
# about four steps (format rate 0.12 to 0.99 on the training samples) while completions shrink
# from 149 to about 12 tokens: the cheapest way to close an `<answer>` tag is to stop thinking.
# No sample is correct, so after the format every group ties at 0.1 and held-out accuracy stays
# at 0. That is the wall the committed runs of section 6 run into from the base model, and the
# warm start of section 3 is how they get past it.

# %% [markdown]
# ## 6. Longer runs, in one figure
#
# Runs made with `python -m aha_utils.train` on a GPU are committed under `notebooks/runs/<run>/`
# with the files `train()` writes (`plot_run` above draws any one of them). The figure puts all the
# GRPO runs side by side: each one's greedy accuracy on held-out problems before training (grey)
# and after (coloured), with 95% Wilson intervals (`aha_utils.analysis.wilson_interval`, honest
# near 0). A change counts here only where the two intervals do not overlap, a conservative
# test. Names with `sft` started
# from a warm start (section 3); the others from the base model. Notebook 06 analyses these runs
# in depth. (This cell only reads committed files.)

# %%
from aha_utils.analysis import find_runs, load_run, wilson_interval

runs = [load_run(d) for d in find_runs(ROOT / "notebooks" / "runs")]
runs = [r for r in runs if r["summary"] and r["metrics"]]   # GRPO runs (SFT phases log no steps)


def accuracy_ci(e: dict) -> tuple[float, float, float]:
    return e["accuracy"], *wilson_interval(round(e["accuracy"] * e["n"]), e["n"])


def verdict(before, after) -> tuple[str, str]:
    if after[1] > before[2]:
        return "up", "C2"
    if after[2] < before[1]:
        return "down", "C3"
    return "overlap", "C0"


if not runs:
    print("No finished GRPO run is committed under notebooks/runs yet.")
else:
    fig, ax = plt.subplots(figsize=(10, 0.42 * len(runs) + 1.6))
    print(f"{'run':30} {'steps':>5} {'lr':>7} {'tuning':7} {'minutes':>7} "
          f"{'accuracy before -> after':>25} {'tied steps':>10}  change")
    for y, run in enumerate(runs):
        s, c = run["summary"], run["summary"]["config"]
        before, after = accuracy_ci(s["eval"]["before"]), accuracy_ci(s["eval"]["after"])
        word, color = verdict(before, after)
        for (acc, lo, hi), dy, col in ((before, 0.15, "0.55"), (after, -0.15, color)):
            ax.errorbar(acc, y + dy, xerr=[[acc - lo], [hi - acc]], fmt="o", color=col,
                        capsize=3, ms=6)
        ax.annotate("", xy=(after[0], y - 0.15), xytext=(before[0], y + 0.15),
                    arrowprops=dict(arrowstyle="->", color=color, lw=1))
        tied = np.mean([m["grad_norm"] == 0 for m in run["metrics"]])
        print(f"{run['name']:30} {run['metrics'][-1]['step']:5} {c['learning_rate']:7.0e} "
              f"{'LoRA' if c.get('lora_rank') else 'full':7} {s['wall_minutes']:7.1f} "
              f"{before[0]:11.3f} -> {after[0]:.3f} (n={s['eval']['after']['n']}) "
              f"{tied:10.0%}  {word}")
    ax.set_yticks(range(len(runs)), [f"{r['name']} ({r['summary']['task']})" for r in runs])
    ax.invert_yaxis()
    ax.set(xlabel="held-out accuracy (greedy), 95% Wilson interval", xlim=(-0.01, None))
    ax.grid(alpha=0.3, axis="x")
    hardware = sorted({r["summary"]["hardware"] for r in runs})
    ax.set_title(f"{len(runs)} GRPO runs of {runs[0]['summary']['model']} on "
                 f"{', '.join(hardware)}\nbefore (grey) -> after (green: up, red: down, "
                 "blue: intervals overlap)", fontsize=11)
    fig.tight_layout()
    plt.show()

# %% [markdown]
# Read the figure by colour and by name. The runs from the base model sit at or near zero before
# and after: with almost no correct sample, every group ties once the format is learned (the
# "tied steps" column: the share of steps whose gradient was exactly zero). The warm-started runs
# begin well above zero because of the supervised phase, and GRPO's effect on top of it is the
# gap between the grey and the coloured point, which the colour classifies by the intervals.

# %% [markdown]
# ## Key takeaways
# - GRPO is the policy gradient with a baseline, where the baseline is the mean reward of $G$
#   samples of the same prompt: no value network. Dividing by the group's std (GRPO) weights
#   groups by how *uniform* they are; Dr.GRPO keeps only the mean.
# - A group whose samples all score the same has zero advantage and teaches nothing. From the base
#   model, the only early signal is the few completions that close an `<answer>` tag; a warm start
#   (supervised examples, some of them searches that miss and try again) gives RL behaviour to
#   amplify.
# - The PPO clip gives a token exactly zero gradient once its ratio has moved past
#   $1 \pm \epsilon$ in the direction of its advantage; DAPO's clip-higher widens only the upper
#   side so rare tokens can grow.
# - $k_3 = \rho - 1 - \log\rho$ is an unbiased, never-negative KL estimate, 0 for equal policies;
#   $\beta = 0$ drops the reference model and its forward pass entirely.
# - How tokens are summed is a choice with a bias: per-sequence means (`grpo`) dilute the penalty
#   of long wrong answers; token means (`dapo`) and a constant normaliser (`dr_grpo`) do not.
# - On the first of the $\mu$ updates the ratio is 1 up to the rounding between the sampler's and
#   the trainer's forward passes. The loss written out in this notebook equals, value and
#   gradient, the one `train()` optimises.

# %% [markdown]
# ## Appendix: variants
#
# ### A.1 The two KL estimators
# With $\rho_t = \pi_\text{ref}(o_t) / \pi_\theta(o_t)$, Schulman's note gives $k_1 = -\log \rho_t$
# and $k_3 = \rho_t - 1 - \log \rho_t$. Both are unbiased for tokens drawn from $\pi_\theta$
# (since $\mathbb{E}[\rho_t] = 1$). As loss terms they differ: $\nabla k_1 = \nabla \log
# \pi_\theta$, zero on average, while $\nabla k_3 = (1 - \rho_t)\, \nabla \log \pi_\theta$ pulls
# towards $\pi_\text{ref}$. Two distributions over five tokens, 200,000 tokens drawn from $\pi$:

# %%
pi = jnp.array([0.5, 0.2, 0.15, 0.1, 0.05])
pi_ref = jnp.array([0.3, 0.3, 0.2, 0.1, 0.1])
exact = float((pi * jnp.log(pi / pi_ref)).sum())
tok = jax.random.categorical(jax.random.key(SEED), jnp.log(pi), shape=(200_000,))
lp, lp_ref = jnp.log(pi)[tok], jnp.log(pi_ref)[tok]
print(f"exact KL(pi || pi_ref) = {exact:.4f}")
for est in grpo.KL_ESTIMATORS:
    k = my_kl(lp, lp_ref, est)
    print(f"{est}: mean {float(k.mean()):.4f}, std {float(k.std()):.3f}, "
          f"negative on {float((k < 0).mean()):.0%} of tokens, min {float(k.min()):+.3f}")
assert float(my_kl(lp, lp_ref, "k3").min()) >= 0.0

# %% [markdown]
# Both average to the exact KL; $k_1$ is negative on many tokens and noisier, $k_3$ never
# negative.
#
# ### A.2 One ratio per sequence (GSPO)
# The reward belongs to the whole completion, yet $w_{i,t}$ is a per-token weight: noisy, and
# clipped token by token. **GSPO** (Zheng et al. 2025) uses one length-normalised sequence ratio,
# $$ s_i(\theta) = \Big( \frac{\pi_\theta(o_i \mid q)}{\pi_\text{old}(o_i \mid q)} \Big)^{1/\lvert o_i \rvert}
#    = \exp\Big( \frac{1}{\lvert o_i \rvert} \sum_t \log w_{i,t} \Big), $$
# clipped per sequence, so a completion is kept or dropped as a whole (the paper uses much
# narrower clip ranges, $3 \times 10^{-4}$ and $4 \times 10^{-4}$, since $s_i$ is a geometric
# mean). Its token form ("gspo-token") gives token $t$ the value $\operatorname{sg}[s_i]\,
# \pi_\theta(o_{i,t}) / \operatorname{sg}[\pi_\theta(o_{i,t})]$ (sg: stop gradient), whose value
# is $s_i$ and whose gradient is $s_i \nabla \log \pi_\theta(o_{i,t})$; with one advantage per
# completion, as here, the two give the same loss and gradient. Extending `my_importance_ratio`
# is all `my_policy_loss` needs:

# %%
def my_importance_ratio(logp, old_logp, mask, level="token"):
    log_w = logp - old_logp                                               # [B, C]
    if level == "token":
        return jnp.exp(log_w)
    s = jnp.exp((log_w * mask).sum(axis=1) / jnp.maximum(mask.sum(axis=1), 1.0))  # [B] s_i
    if level == "sequence":
        return jnp.broadcast_to(s[:, None], logp.shape)
    sg = jax.lax.stop_gradient      # "gspo-token": value s_i, gradient s_i * grad log pi(o_t)
    return sg(s)[:, None] * jnp.exp(logp - sg(logp))


print("toy batch of 2.4, token ratios:\n", W,
      "\nGSPO's sequence ratios (geometric means over each row's tokens):",
      np.round(np.asarray(my_importance_ratio(jnp.log(W), 0.0, TOY_MASK, "sequence")[:, 0]), 4))

# %% [markdown]
# ### A.3 Every option, checked
# On the random batch of 2.7: every reduction (with `bnpo`, which equals `dapo` here), every
# ratio level, with and without clip-higher, without a KL term and with each estimator, with and
# without DAPO's overlong filtering, loss and gradient equal to the library's.

# %%
truncated = np.array([False, True, False, False, True, False])
n = check(levels=grpo.IS_LEVELS, kls=grpo.KL_ESTIMATORS, truncs=(None, truncated),
          loss_types=grpo.LOSS_TYPES)
print(f"{n} configurations: loss and gradient equal to aha_utils.grpo.policy_loss")
