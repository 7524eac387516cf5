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
# **Hardware:** sections 1-3 are maths on small arrays and run anywhere in seconds. Sections 4-5
# load Gemma 3 270M and run real GRPO steps: minutes per step on a CPU, so there they only show
# the machinery working; on a GPU or TPU (Colab, Kaggle) section 5 runs the real preset and the
# reward moves. The outputs below come from one **NVIDIA H100 80GB HBM3**, which was running two
# training runs at the same time, so its step times are slower than an idle GPU's. Section 6
# shows runs made on a GPU, when the repository holds them. No account or download beyond PyPI.
#
# Notebook 03 built the sampler: for every prompt it draws $G$ completions and returns the
# log-probability of each token it drew. Notebook 04 built the reward: one number per completion.
# This notebook closes the loop with the update that turns those numbers into a better policy:
#
# ```
# prompts ──sampler──▶ G completions + log π_old ──reward──▶ r_i ──group──▶ A_i ──loss──▶ ∇θ ──AdamW──▶ θ'
# ```
#
# The maths comes first (section 2), then the advantage and the loss written out in plain
# `jax.numpy` and checked equal to `aha_utils.grpo`, the version the training loop uses
# (section 3). Section 4 takes one step by hand on the real model; section 5 runs the loop.

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
print("repo root:", ROOT)

import aha_utils
import jax

print("jax", jax.__version__, "|", jax.devices())

# %%
import json
import tempfile
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from flax import nnx

from aha_utils import grpo
from aha_utils.memory import device_preset_name, device_summary
from aha_utils.run_config import RunConfig

print("jax", jax.__version__, "| backend:", jax.default_backend(), "|", jax.devices())

# %% [markdown]
# ## Hyperparameters
# `AHA_QUICK=1` (set by CI) only shrinks the run; the code path is the same.

# %%
AHA_QUICK = os.environ.get("AHA_QUICK") == "1"  # CI's quick mode, read once
BACKEND = jax.default_backend()  # cpu: minutes per step, so one step; gpu/tpu: a real run
DEVICE_KIND, N_DEVICES, DEVICE_MEMORY = device_summary()  # e.g. "TPU v5 lite", 1, 16 GB
PRESET = device_preset_name("countdown", DEVICE_KIND, N_DEVICES, DEVICE_MEMORY)
# ^ cpu (270M, LoRA), gpu (270M, full FT), tpu_v5e_1 / tpu_v5e_8 (1B-IT from Kaggle, LoRA):
#   the largest preset whose estimated memory fits this device; set a name to override
MODEL_NAME = None  # @param [None, "gemma3-270m", "gemma3-1b", "gemma3-1b-it"]
# ^ None: the preset's model; gemma3-1b(-it) needs Kaggle credentials (see notebook 02)
TASK = "countdown"  # generated locally, so no download; GSM8K works the same way
if BACKEND == "cpu":
    TRAIN_STEPS = 1  # minutes per step here: one shows the loop end to end, it cannot show learning
else:
    TRAIN_STEPS = 2 if AHA_QUICK else 30  # GPU/TPU: a short real run (the CLI goes further)
SEED = 0  # the problems, the samples and the LoRA init are pure functions of it
RUN = RunConfig.named(TASK, PRESET, steps=TRAIN_STEPS, seed=SEED,
                      **({"model": MODEL_NAME} if MODEL_NAME else {}))
if AHA_QUICK:
    RUN = RUN.quick()  # 2 prompts x 4 samples, 32 new tokens, 4 eval problems
G = RUN.num_samples  # the group size: completions per prompt
print(f"AHA_QUICK={AHA_QUICK}, {N_DEVICES} x {DEVICE_KIND} -> preset {PRESET!r}, {RUN.model}: "
      f"steps={RUN.steps}, each {RUN.prompts_per_step} "
      f"prompts x G={G} samples of up to {RUN.max_new_tokens} tokens; "
      f"{'LoRA rank ' + str(RUN.lora_rank) if RUN.lora_rank else 'full fine-tuning'}, "
      f"lr {RUN.learning_rate}, loss {RUN.loss_type!r}, beta {RUN.beta}, mu {RUN.num_iterations}")

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
# ## 2. The objective
#
# ### Policy gradient with a baseline
# A completion $o = (o_1, \dots, o_{|o|})$ of prompt $q$ is drawn from the policy $\pi_\theta$,
# and $\log \pi_\theta(o \mid q) = \sum_t \log \pi_\theta(o_t \mid q, o_{<t})$. We maximise the
# expected reward $J(\theta) = \mathbb{E}_{q}\, \mathbb{E}_{o \sim \pi_\theta(\cdot \mid q)}\,
# r(q, o)$. The log-derivative trick gives
# $$ \nabla_\theta J = \mathbb{E}\big[\, r(q, o)\, \nabla_\theta \log \pi_\theta(o \mid q) \,\big]. $$
# Because $\mathbb{E}_{o}[\nabla_\theta \log \pi_\theta(o \mid q)] = \nabla_\theta \sum_o
# \pi_\theta(o \mid q) = \nabla_\theta 1 = 0$, any **baseline** $b(q)$ that does not depend on
# $o$ can be subtracted without bias:
# $$ \nabla_\theta J = \mathbb{E}\big[\, (r(q, o) - b(q))\, \nabla_\theta \log \pi_\theta(o \mid q) \,\big]. $$
# The variance is lowest near $b(q) \approx \mathbb{E}_o[r \mid q]$, the value of the prompt. PPO
# (Schulman et al. 2017) learns it with a value network as large as the policy, trained alongside.
#
# ### The group is the baseline (GRPO)
# GRPO (DeepSeekMath, Shao et al. 2024) drops the value network: it samples $G$ completions of the
# same prompt and uses their mean reward as the baseline,
# $$ A_i = r_i - \bar r, \qquad \bar r = \tfrac{1}{G} \textstyle\sum_{j=1}^{G} r_j . $$
# Including $r_i$ in its own baseline only rescales: $r_i - \bar r = \tfrac{G-1}{G}\,(r_i -
# \bar r_{-i})$, where $\bar r_{-i}$, the mean of the *other* samples, is independent of $o_i$
# (the leave-one-out baseline of Kool et al. 2019). So the estimate is unbiased up to a constant.
# Every token of $o_i$ receives the same $A_i$: the reward says nothing about which token helped.
#
# GRPO also divides by the group's standard deviation:
# $$ A_i = \frac{r_i - \bar r}{\operatorname{std}(r_1, \dots, r_G) + \varepsilon} . $$
# **Dr.GRPO** (Liu et al. 2025, *Understanding R1-Zero-Like Training*) argues against the
# division: a group whose rewards barely differ (a question nearly always or nearly never solved)
# gets a small std and therefore *large* advantages, a bias by question difficulty. It keeps
# $A_i = r_i - \bar r$ (`scale_rewards=False`). A group whose rewards are all equal has $A_i = 0$
# under both: it teaches nothing.
#
# ### Reusing a batch: the ratio and PPO's clip
# Sampling is expensive, so GRPO may take $\mu$ optimizer steps on one batch. After the first,
# $\pi_\theta$ is no longer the policy that sampled the batch, $\pi_\text{old}$. Each token is then
# reweighted by the importance ratio
# $$ w_{i,t}(\theta) = \frac{\pi_\theta(o_{i,t} \mid q, o_{i,<t})}{\pi_\text{old}(o_{i,t} \mid q, o_{i,<t})}, $$
# and at $\theta = \theta_\text{old}$ the gradient of $w_{i,t} A_i$ is exactly $A_i \nabla_\theta
# \log \pi_\theta(o_{i,t})$, the policy gradient. PPO's clipped surrogate keeps one batch from
# moving the policy too far:
# $$ \ell_{i,t} = -\min\!\big( w_{i,t} A_i,\; \operatorname{clip}(w_{i,t},\, 1 - \epsilon_\text{low},\, 1 + \epsilon_\text{high})\, A_i \big). $$
# If $A_i > 0$ and $w > 1 + \epsilon_\text{high}$, or $A_i < 0$ and $w < 1 - \epsilon_\text{low}$,
# the minimum is the clipped term, a constant: **that token's gradient is exactly zero**, since
# it has already moved far enough in the direction its advantage asks. In the other direction the
# unclipped term is kept (the minimum is a pessimistic bound). PPO and GRPO use $\epsilon = 0.2$ on
# both sides. **DAPO** (Yu et al. 2025) raises only the upper one ("clip-higher",
# $\epsilon_\text{high} = 0.28$): with $\epsilon = 0.2$, a token sampled with probability 0.01 can
# grow only to 0.012 per batch while one at 0.9 is unconstrained in practice, so rare tokens,
# the exploration, cannot grow, and they report the policy's entropy collapsing.
#
# ### A KL penalty to a reference, or none
# DeepSeekMath adds $\beta\, \mathrm{KL}(\pi_\theta \,\|\, \pi_\text{ref})$ to the loss per token
# (not to the reward), with $\pi_\text{ref}$ the initial model, estimated from the sampled tokens.
# With $\rho_t = \pi_\text{ref}(o_t) / \pi_\theta(o_t)$ the two estimators of Schulman's note
# *Approximating KL Divergence* (2020) are
# $$ k_1 = -\log \rho_t, \qquad k_3 = \rho_t - 1 - \log \rho_t . $$
# Both are unbiased for tokens drawn from $\pi_\theta$ (since $\mathbb{E}[\rho_t] = 1$), but $k_3
# \ge 0$ always (because $\log x \le x - 1$), is exactly 0 when the policies agree, and has much
# lower variance when they are close. As loss terms they also differ: $\nabla k_1 = \nabla \log
# \pi_\theta$, zero on average, while $\nabla k_3 = (1 - \rho_t)\, \nabla \log \pi_\theta$ pulls
# towards $\pi_\text{ref}$. DeepSeekMath uses $k_3$ with $\beta = 0.04$. DAPO drops the term
# ($\beta = 0$): a long-reasoning policy is *meant* to move far from the initial model. So do this
# course's presets, and $\beta = 0$ means **no reference model at all**, which saves one forward
# pass per update and, when fine-tuning every weight, a frozen copy of the model.
#
# ### Adding up the tokens, and the length bias
# With a mask $m_{i,t}$ (1 on the completion's tokens, its stop token included; 0 on padding) and
# $B$ completions in the batch, three reductions are in use:
#
# | `loss_type` | loss | a token's weight |
# |---|---|---|
# | `grpo` (DeepSeekMath) | $\frac{1}{B} \sum_i \frac{1}{\lvert o_i \rvert} \sum_t \ell_{i,t}$ | $\frac{1}{B\,\lvert o_i \rvert}$: less in longer completions |
# | `bnpo` / `dapo` (DAPO's token mean) | $\sum_{i,t} \ell_{i,t} \,/\, \sum_i \lvert o_i \rvert$ | the same for every token of the batch |
# | `dr_grpo` (Dr.GRPO) | $\sum_{i,t} \ell_{i,t} \,/\, (B \cdot L_\text{max})$ | a constant ($L_\text{max}$: `max_new_tokens`) |
#
# Under `grpo`, a long wrong answer ($A_i < 0$) is pushed down *less per token* than a short one,
# and a short right answer is pushed up more than a long one. Dr.GRPO identifies this as a source
# of ever-longer wrong answers. The token mean removes the per-completion weighting, but a token's
# weight still depends on how many tokens the batch holds; `dr_grpo`'s constant removes lengths
# from the normaliser altogether.
#
# ### One ratio per sequence (GSPO)
# The reward belongs to the whole completion, yet $w_{i,t}$ is a per-token importance weight:
# noisy, and clipped token by token. **GSPO** (Zheng et al. 2025) uses one length-normalised
# sequence ratio,
# $$ s_i(\theta) = \Big( \frac{\pi_\theta(o_i \mid q)}{\pi_\text{old}(o_i \mid q)} \Big)^{1/\lvert o_i \rvert}
#    = \exp\Big( \frac{1}{\lvert o_i \rvert} \sum_t \log w_{i,t} \Big), $$
# clipped per sequence, so a completion is kept or dropped as a whole (the paper uses much
# narrower clip ranges, $3 \times 10^{-4}$ and $4 \times 10^{-4}$, because $s_i$ is a geometric
# mean). Its token form ("gspo-token") gives token $t$ the value
# $\operatorname{sg}[s_i]\, \pi_\theta(o_{i,t}) / \operatorname{sg}[\pi_\theta(o_{i,t})]$ (sg: stop
# gradient), whose value is $s_i$ and whose gradient is $s_i \nabla \log \pi_\theta(o_{i,t})$; with
# one advantage per completion, as here, the two are the same.
#
# ### $\mu$ inner updates
# DeepSeekMath's Algorithm 1: sample a batch with $\pi_\text{old} = \pi_\theta$, compute the
# advantages once, then take $\mu$ steps, all against the *same* $\log \pi_\text{old}$, which the
# sampler already returned. On the first step $\theta = \theta_\text{old}$, so $w = 1$ up to
# floating-point differences between the sampler and the training forward: nothing is clipped and
# the gradient is exactly the policy gradient with the group baseline. The ratio and the clip only
# act from the second step on. The presets here use $\mu = 1$.

# %% [markdown]
# ## 3. Written out, tried, and checked
#
# ### Advantages

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
# ### The loss
# Every variant of section 2 in one function: `level` picks the ratio (PPO's per token, GSPO's
# per sequence, or GSPO-token), `loss_type` the reduction. `truncated` drops completions that hit
# the length limit without stopping (DAPO's overlong filtering,
# `mask_truncated_completions`): their reward says more about the limit than about the answer.

# %%
def my_policy_loss(logp, old_logp, ref_logp, advantages, mask, *, loss_type="grpo",
                   level="token", epsilon=0.2, epsilon_high=None, beta=0.0, kl="k3",
                   max_len=None, truncated=None):
    mask = jnp.asarray(mask, jnp.float32)                                 # [B, C]
    if truncated is not None:
        mask = mask * (1.0 - jnp.asarray(truncated, jnp.float32))[:, None]
    # Padding may hold anything; zero it so exp() of junk cannot make inf * 0 = NaN.
    valid = mask > 0
    logp, old_logp = jnp.where(valid, logp, 0.0), jnp.where(valid, old_logp, 0.0)
    A = jnp.asarray(advantages, jnp.float32)[:, None]                     # [B, 1]: per completion
    lengths = jnp.maximum(mask.sum(axis=1), 1.0)                          # |o_i|

    log_w = logp - old_logp                                               # [B, C]
    if level == "token":
        w = jnp.exp(log_w)
    else:
        s = jnp.exp((log_w * mask).sum(axis=1) / lengths)                # [B] GSPO's s_i
        if level == "sequence":
            w = jnp.broadcast_to(s[:, None], logp.shape)
        else:  # "gspo-token": value s_i, gradient s_i * grad log pi(o_t)
            sg = jax.lax.stop_gradient
            w = sg(s)[:, None] * jnp.exp(logp - sg(logp))
    eps_high = epsilon if epsilon_high is None else epsilon_high
    per_token = -jnp.minimum(w * A, jnp.clip(w, 1 - epsilon, 1 + eps_high) * A)

    if beta > 0:
        log_rho = jnp.where(valid, ref_logp, 0.0) - logp                 # log pi_ref / pi
        per_token += beta * (-log_rho if kl == "k1" else jnp.exp(log_rho) - 1 - log_rho)

    if loss_type == "grpo":
        return ((per_token * mask).sum(axis=1) / lengths).mean()
    if loss_type in ("bnpo", "dapo"):
        return (per_token * mask).sum() / jnp.maximum(mask.sum(), 1.0)
    if loss_type == "dr_grpo":
        return (per_token * mask).sum() / (mask.shape[0] * (max_len or mask.shape[1]))
    raise ValueError(loss_type)


# %% [markdown]
# A toy batch: two completions, the second one token shorter. We choose the ratios directly
# ($\log \pi_\text{old} = 0$, $\log \pi_\theta = \log w$), with $A = (+1, -2)$ and
# $\epsilon = 0.2$, and ask `jax.grad` for the gradient of the token-mean loss with respect to
# each token's log-prob.

# %%
W = np.array([[1.1, 0.7, 1.5], [0.6, 1.3, 1.0]], np.float32)   # [1, 2] is padding
TOY_A = jnp.array([1.0, -2.0])
TOY_MASK = jnp.array([[1, 1, 1], [1, 1, 0]], jnp.float32)


def toy_loss(logp, **kw):
    return my_policy_loss(logp, jnp.zeros_like(logp), None, TOY_A, TOY_MASK, **kw)


grad = jax.grad(lambda lp: toy_loss(lp, loss_type="bnpo"))(jnp.log(W))
print("row tok  ratio     A  clipped    d loss / d log pi")
for i in range(2):
    for t in range(3 - i):
        w, a = W[i, t], float(TOY_A[i])
        clipped = (a > 0 and w > 1.2) or (a < 0 and w < 0.8)
        g = float(grad[i, t]) + 0.0   # + 0.0 prints jax's -0.0 as 0.0
        print(f"{i:3} {t:3} {w:6.2f} {a:+5.0f}  {'yes' if clipped else 'no':7}  {g:+.4f}")
assert grad[0, 2] == 0.0 and grad[1, 0] == 0.0   # exactly zero, not merely small
for lt in grpo.LOSS_TYPES:
    print(f"loss_type={lt!r:10} loss {float(toy_loss(jnp.log(W), loss_type=lt)):+.4f}")

# %% [markdown]
# The two clipped tokens (ratio 1.5 with $A > 0$, 0.6 with $A < 0$) get a gradient of exactly
# zero; the token at 0.7 with $A > 0$ is *not* clipped: being below $1 - \epsilon$ with a positive
# advantage, it still gets pushed up. The four losses differ only by their normaliser.
#
# Now the check that matters: on a random batch with ratios around 1 (some past the clip), the
# loss **and its gradient** equal `aha_utils.grpo.policy_loss` for every reduction, every ratio
# level, with and without clip-higher, without a KL term and with each estimator, and with
# truncated completions masked.

# %%
rng = np.random.default_rng(SEED)
B, C = 6, 7
mask = (np.arange(C)[None, :] < rng.integers(1, C + 1, B)[:, None]).astype(np.float32)
old = rng.normal(-2.0, 1.0, (B, C)).astype(np.float32)
logp = old + rng.normal(0.0, 0.3, (B, C)).astype(np.float32)   # ratios ~ e^(+-0.3): some clipped
ref = old + rng.normal(0.0, 0.3, (B, C)).astype(np.float32)
adv = my_group_advantages(rng.choice([0.0, 0.1, 1.0], B), 3)
truncated = np.array([False, True, False, False, True, False])

checked = 0
for loss_type in grpo.LOSS_TYPES:
    for level in grpo.IS_LEVELS:
        for eps_high in (None, 0.28):
            for beta, kl in ((0.0, "k3"), (0.04, "k1"), (0.04, "k3")):
                for trunc in (None, truncated):
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
print(f"{checked} configurations: loss and gradient equal to aha_utils.grpo.policy_loss")

# %% [markdown]
# ### The length bias, in gradients
# Two wrong completions ($A = -1$), of 2 and 8 tokens, at ratio 1. The gradient each token
# receives is its weight in the table of section 2:

# %%
mask2 = np.zeros((2, 8), np.float32)
mask2[0, :2], mask2[1, :] = 1, 1
zeros2 = jnp.zeros((2, 8))
for lt in ("grpo", "dapo", "dr_grpo"):
    g2 = jax.grad(lambda lp: my_policy_loss(lp, zeros2, None, jnp.array([-1.0, -1.0]), mask2,
                                            loss_type=lt, max_len=16))(zeros2)
    print(f"{lt:8} per-token push: short answer {float(g2[0, 0]):.4f}, long answer "
          f"{float(g2[1, 0]):.4f} (ratio {float(g2[0, 0] / g2[1, 0]):.0f}x)")

# %% [markdown]
# Under `grpo` each token of the short wrong answer is pushed down four times harder than each
# token of the long one: being long dilutes the penalty. The other two treat every token alike.
#
# ### The KL estimators
# Two distributions over five tokens, 200,000 tokens drawn from $\pi$: both estimators average
# to the exact KL, but $k_1$ is negative on many tokens and noisier, while $k_3$ is never negative.

# %%
pi = jnp.array([0.5, 0.2, 0.15, 0.1, 0.05])
pi_ref = jnp.array([0.3, 0.3, 0.2, 0.1, 0.1])
exact = float((pi * jnp.log(pi / pi_ref)).sum())
tok = jax.random.categorical(jax.random.key(SEED), jnp.log(pi), shape=(200_000,))
lp, lp_ref = jnp.log(pi)[tok], jnp.log(pi_ref)[tok]
print(f"exact KL(pi || pi_ref) = {exact:.4f}")
for est in grpo.KL_ESTIMATORS:
    k = grpo.kl_per_token(lp, lp_ref, est)
    print(f"{est}: mean {float(k.mean()):.4f}, std {float(k.std()):.3f}, "
          f"negative on {float((k < 0).mean()):.0%} of tokens, min {float(k.min()):+.3f}")
assert float(grpo.kl_per_token(lp, lp_ref, "k3").min()) >= 0.0
assert float(jnp.abs(grpo.kl_per_token(lp, lp, "k3")).max()) == 0.0   # equal policies: exactly 0
print("k3 >= 0 on every token, and exactly 0 when pi_ref = pi")

# %% [markdown]
# ## 4. One step on the real model
#
# Now the same pieces on Gemma 3 270M, set up exactly as `train()` sets itself up: the preset's
# parameter dtype, then `init_training`, which adds LoRA adapters when the preset asks for them
# (the CPU preset does) and builds the AdamW optimizer. The problems and the sampling seed are the
# ones `train()` uses at its first step, so this is that step, by hand.

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
# anything is loaded. Here: this notebook's run on the devices found, then the total of each
# device preset (`memory.preset_for_device` picks one from the device kind, count and memory).

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
# On the first update the ratio is 1 and nothing is clipped, as derived above. A gradient norm of
# zero means every group tied: nothing to learn from this batch.

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
# about five steps (format rate 0.10 to 0.99 on the training samples) while completions shrink
# from 151 to about 11 tokens: the cheapest way to close an `<answer>` tag is to stop thinking.
# No sample is correct, so after the format every group ties at 0.1 and held-out accuracy stays
# at 0. That is the wall the committed runs below run into on their own, and the warm start
# (a short supervised phase first) is how they get past it.

# %% [markdown]
# ## 6. A full run on a GPU
#
# Runs made with `python -m aha_utils.train` on a GPU and committed under `notebooks/runs/<run>/`
# (each with `summary.json`, `metrics.jsonl` and `eval.jsonl`, exactly what `train()` writes) are
# drawn here with the same function, one figure per run. Two things from this notebook to look
# for: the format rate, driven by the 0.1 reward, moves first; and steps with a gradient norm of
# zero, where every group tied and GRPO had nothing to learn from. The line under each figure
# counts them. Notebook 06 analyses these runs in depth. (This cell only reads the committed
# files; its output was refreshed on a CPU after the last runs were added.)

# %%
runs_dir = ROOT / "notebooks" / "runs"
run_dirs = sorted(d for d in runs_dir.glob("*")   # GRPO runs (SFT phases have no metrics)
                  if (d / "summary.json").exists() and (d / "metrics.jsonl").exists()) \
    if runs_dir.is_dir() else []
if not run_dirs:
    print(f"No finished run is committed under {runs_dir.relative_to(ROOT)} yet.")
for run_dir in run_dirs:
    summary, metrics = plot_run(run_dir)
    c = summary["config"]
    tied = np.mean([m["grad_norm"] == 0 for m in metrics])
    print(f"{run_dir.name}: {metrics[-1]['step']} steps (of {c['steps']} planned) of "
          f"{c['prompts_per_step']} prompts x {c['num_samples']}, "
          f"{c['max_new_tokens']} new tokens, "
          f"{'LoRA' if c.get('lora_rank') else 'full fine-tuning'}, lr {c['learning_rate']}; "
          f"{summary['wall_minutes']} min on {summary['hardware']}\n  {eval_line(summary)}\n"
          f"  steps with zero gradient (every group tied): {tied:.0%}")

# %% [markdown]
# ## Key takeaways
# - GRPO is the policy gradient with a baseline, where the baseline is the mean reward of $G$
#   samples of the same prompt: no value network. Dividing by the group's std (GRPO) weights
#   groups by how *uniform* they are; Dr.GRPO keeps only the mean.
# - A group whose samples all score the same has zero advantage and teaches nothing. Early on,
#   the only signal is the few completions that close an `<answer>` tag.
# - The PPO clip gives a token exactly zero gradient once its ratio has moved past
#   $1 \pm \epsilon$ in the direction of its advantage; DAPO's clip-higher widens only the upper
#   side so rare tokens can grow.
# - $k_3 = \rho - 1 - \log\rho$ is an unbiased, never-negative KL estimate, 0 for equal policies;
#   $\beta = 0$ drops the reference model and its forward pass entirely.
# - How tokens are summed is a choice with a bias: per-sequence means (`grpo`) dilute the penalty
#   of long wrong answers; token means (`dapo`) and a constant normaliser (`dr_grpo`) do not.
# - On the first of the $\mu$ updates the ratio is 1: the training forward must reproduce the
#   sampler's log-probs, and here it does. The loss written out in this notebook equals, value
#   and gradient, the one `train()` optimises.
