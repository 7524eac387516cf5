"""The warm-start (SFT) arm: examples the reward accepts, a completion-only loss equal to an
independent cross-entropy, memorisation on a toy model, parameters on disk, GRPO from them.

Model-running tests use a toy word-level tokenizer over a 512-token vocabulary with a tiny
Gemma-3-shaped model, so a step costs milliseconds on a CPU; the batch layout is also checked
with the real Gemma tokenizer, whose prompt/completion boundary is what matters on real runs."""

import dataclasses
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from aha_utils import sft
from aha_utils import train as train_module
from aha_utils.analysis import has_reflection
from aha_utils.config import ModelConfig
from aha_utils.data.countdown import make_problems
from aha_utils.data.prompts import make_prompt
from aha_utils.lora import apply_lora
from aha_utils.model import Gemma, forward
from aha_utils.rewards import extract_answer, reward_terms
from aha_utils.run_config import RunConfig
from aha_utils.sampler import generate
from aha_utils.train import evaluate, parse_overrides, train
from aha_utils.train_step import TrainConfig

F32 = TrainConfig(compute_dtype="float32")


class WordTokenizer:
    """A toy tokenizer with a fixed vocabulary: the words (with their leading space) of the
    prompts and SFT phrasings, then single characters, so a prompt is ~170 tokens, not ~560.
    Ids 0-3 are pad, eos, bos, end_of_turn; the vocabulary fits a 512-row embedding."""
    pad_id, eos_id, bos_id, end_of_turn_id, vocab_size = 0, 1, 2, 3, 512
    PIECE = re.compile(r" ?[A-Za-z_]+|\s|.", re.S)

    def __init__(self):
        q = {"nums": [1, 2], "target": 3}
        texts = [make_prompt("countdown", q, template=t) for t in ("base", "chat", "few_shot")]
        texts += [*sft.OPENERS, *sft.STEPS, *sft.CLOSERS, " </think> <answer> </answer>"]
        words = sorted({w for t in texts for w in self.PIECE.findall(t) if len(w) > 1})
        self.pieces = ["<pad>", "<eos>", "<bos>", "<end_of_turn>"] + [chr(i) for i in range(128)]
        self.pieces += words
        self.ids = {w: i for i, w in enumerate(self.pieces) if i >= 4}
        assert len(self.pieces) <= self.vocab_size, len(self.pieces)

    def encode(self, text, add_bos=True):
        out = [self.bos_id] * add_bos
        for w in self.PIECE.findall(text):
            out += [self.ids[w]] if w in self.ids else [self.ids[c] for c in w]
        return out

    def decode(self, ids):
        return "".join(self.pieces[int(i)] for i in ids if 4 <= i < len(self.pieces))

    def id_to_piece(self, i):
        return self.pieces[i] if i < len(self.pieces) else ""


TOK = WordTokenizer()


def tiny_model(seed=0):
    cfg = ModelConfig.tiny(num_layers=2, vocab_size=512, sliding_window=64)
    model = Gemma(cfg, dtype=jnp.float32, rngs=nnx.Rngs(seed))
    model.embedding[...] = model.embedding[...] * 0.1   # flatter logits, as tests/test_train.py
    return model


def params_of(model):
    return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


@pytest.mark.parametrize("num_numbers", [3, 4])
def test_examples_score_full_reward_without_reflection(num_numbers):
    problems = make_problems(40, num_numbers=num_numbers, seed=7)
    texts = set()
    for template in ("base", "chat", "few_shot"):
        for i, q in enumerate(problems):
            prompt, completion = sft.countdown_sft_example(q, template=template, seed=i)
            terms = reward_terms("countdown", completion, q)
            assert terms["correct"] == terms["format_strict"] == 1.0, (completion, terms)
            assert terms["xml_count"] == 0.5 and completion.endswith("</answer>")  # nothing after
            assert extract_answer(completion) == q["solution"] and not has_reflection(completion)
            assert completion.startswith("<think>") == (template == "chat")
            assert prompt.rstrip().endswith("<think>") != (template == "chat")
            texts.add(completion.split("</think>")[0].split(".")[0])
    assert len(texts) > 4                               # the phrasings vary
    for phrase in sft.OPENERS + sft.STEPS + sft.CLOSERS:  # every variant, not only those drawn
        assert not has_reflection(phrase), phrase
    # a problem without a stored solution is solved; an impossible one is an error
    q = {"nums": [3, 5, 2], "target": 16}
    assert reward_terms("countdown", sft.countdown_sft_example(q)[1], q)["correct"] == 1.0
    with pytest.raises(ValueError, match="no solution"):
        sft.countdown_sft_example({"nums": [1, 1, 1], "target": 97})


def test_batch_layout_with_the_real_tokenizer():
    from aha_utils.tokenizer import gguf_tokenizer
    tok = gguf_tokenizer()
    problems = make_problems(3, num_numbers=3, seed=1) + make_problems(1, num_numbers=4, seed=1)
    examples = [sft.countdown_sft_example(q, template=t, seed=i) for i, (q, t) in
                enumerate(zip(problems, ("base", "chat", "few_shot", "base")))]
    batch = sft.build_sft_batch(tok, examples)
    c = batch["completion_mask"].shape[1]
    assert c % 16 == 0 and batch["tokens"].shape == batch["positions"].shape
    for row, (prompt, completion) in enumerate(examples):
        pos, toks = batch["positions"][row], batch["tokens"][row]
        valid = pos >= 0
        # the row is the joint encoding, positions 0..n-1 without gaps, padding is <pad>
        assert toks[valid].tolist() == tok.encode(prompt + completion, add_bos=True)
        np.testing.assert_array_equal(pos[valid], np.arange(valid.sum()))
        assert (toks[~valid] == 0).all() and valid[-c - 1]   # the prompt ends at the last column
        mask = batch["completion_mask"][row].astype(bool)
        assert tok.decode(toks[-c:][mask]) == completion and mask[:mask.sum()].all()


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    """The CLI's run on a toy model: 20 steps over 4 training problems (memorising them)."""
    out = tmp_path_factory.mktemp("sft")
    args = sft.parse_args(["--task", "countdown", "--steps", "20", "--batch", "4", "--lr", "2e-2",
                           "--train-problems", "4", "--out", str(out), "--eval-n", "2",
                           "--max-new-tokens", "8"])
    model = tiny_model(seed=1)
    return out, args, model, sft.run(args, model=model, tokenizer=TOK)


def test_loss_is_completion_only_and_matches_a_full_forward(sft_run):
    model = sft_run[2]                                 # trained: its per-token losses differ
    problems = make_problems(4, num_numbers=3, seed=3)
    batch = sft.build_sft_batch(TOK, [sft.countdown_sft_example(q, seed=i)
                                      for i, q in enumerate(problems)])
    # the independent reference: log-softmax of the full [B, T, V] forward, in float64 numpy
    logits = np.asarray(forward(model, batch["tokens"], batch["positions"]), np.float64)
    top = logits.max(-1, keepdims=True)
    logp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
    nxt = np.take_along_axis(logp[:, :-1], batch["tokens"][:, 1:, None], -1)[..., 0]  # [B, T-1]
    mask = batch["completion_mask"]
    c = mask.shape[1]
    picked = nxt[:, -c:]                              # predictions of the completion tokens
    want = -(picked * mask).sum() / mask.sum()
    cfg = dataclasses.replace(F32, micro_batch_size=2)   # two micro-batches: still exact
    got = sft.sft_loss(model, batch, cfg)
    assert float(got["loss"]) == pytest.approx(want, rel=1e-5)
    acc = ((picked > np.log(0.5)) * mask).sum() / mask.sum()
    assert float(got["token_accuracy"]) == pytest.approx(acc, abs=1e-6)
    # the prompt's own next-token predictions are not in it (with them the mean would differ)
    valid = (batch["positions"][:, :-1] >= 0) & (batch["positions"][:, 1:] >= 0)
    assert abs(-(nxt * valid).sum() / valid.sum() - want) > 0.1
    # padding (the prompt's left, the completion's right) is neither context nor target
    rng = np.random.default_rng(0)
    noisy = np.where(batch["positions"] < 0, rng.integers(4, 512, batch["tokens"].shape),
                     batch["tokens"])
    assert float(sft.sft_loss(model, dict(batch, tokens=noisy), cfg)["loss"]) == \
        pytest.approx(want, rel=1e-5)
    # only tokens under completion_mask count
    half = mask * (np.arange(c) < 20)
    got_half = sft.sft_loss(model, dict(batch, completion_mask=half), cfg)["loss"]
    assert float(got_half) == pytest.approx(-(picked * half).sum() / half.sum(), rel=1e-5)


def test_save_and_load_params(sft_run, tmp_path):
    trained, fresh = sft_run[2], tiny_model(seed=2)
    path = sft.save_params(trained, tmp_path / "params")
    with pytest.raises(FileExistsError):
        sft.save_params(trained, path)
    sft.load_params(fresh, tmp_path)                      # the --out folder works too
    jax.tree.map(np.testing.assert_array_equal, params_of(fresh), params_of(trained))
    half = Gemma(trained.config, dtype=jnp.bfloat16, rngs=nnx.Rngs(3))
    sft.load_params(half, path)                           # into the model's own dtype
    assert half.embedding[...].dtype == jnp.bfloat16
    np.testing.assert_array_equal(half.embedding[...], trained.embedding[...].astype(jnp.bfloat16))
    other = nnx.eval_shape(lambda: Gemma(dataclasses.replace(trained.config, d_model=32),
                                         dtype=jnp.float32, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="do not fit this model"):
        sft.load_params(other, path)
    apply_lora(fresh, rank=2, alpha=4.0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="before applying LoRA"):
        sft.load_params(fresh, path)
    with pytest.raises(FileNotFoundError, match="aha_utils.sft"):
        sft.load_params(half, tmp_path / "nothing")


def test_sft_memorises_a_handful_of_examples(sft_run):
    out, _, _, summary = sft_run
    rows = [json.loads(x) for x in (out / "sft_metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 21))
    first, last = rows[0], rows[-1]
    assert last["loss"] < 0.3 * first["loss"], (first, last)
    assert last["token_accuracy"] > first["token_accuracy"] + 0.3, (first, last)
    assert rows[0]["learning_rate"] == 0.0 and rows[2]["learning_rate"] == pytest.approx(2e-2)
    assert summary["final"] == {k: last[k] for k in ("loss", "token_accuracy")}


def test_cli_files_and_summary(sft_run):
    out, args, model, summary = sft_run
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["config"]["train_problems"] == 4 and summary["steps"] == 20
    assert {"task", "model", "hardware", "wall_minutes", "sft_minutes"} <= set(summary)
    for when in ("before", "after"):
        e = summary["eval"][when]
        assert e["n"] == 2 and (out / "completions" / f"eval_{when}.jsonl").exists()
        for key in ("accuracy", "format_rate"):
            lo, hi = e[f"{key}_ci95"]
            assert 0 <= lo <= e[key] <= hi <= 1 and hi - lo > 0.3   # n = 2: wide
    restored = tiny_model(seed=5)
    sft.load_params(restored, out)
    jax.tree.map(np.testing.assert_array_equal, params_of(restored), params_of(model))
    with pytest.raises(FileExistsError, match="already holds SFT parameters"):
        sft.run(args, model=model, tokenizer=TOK)
    with pytest.raises(SystemExit):
        sft.parse_args(["--task", "countdown", "--steps", "0", "--out", "x"])


class StopAfterEval(Exception):
    pass


def test_grpo_starts_from_the_sft_weights(sft_run, tmp_path, monkeypatch):
    out, _, sft_model, _ = sft_run
    cfg = RunConfig(steps=1, prompts_per_step=2, num_samples=2, max_new_tokens=8, lora_rank=None,
                    eval_n=2, **parse_overrides([f"init_from={out}"]))     # --set init_from=DIR
    assert cfg.init_from == str(out) and parse_overrides(["init_from=none"]) == {"init_from": None}
    grpo_model = tiny_model(seed=2)                    # another random model: loading replaces it

    def greedy_only(model, tokenizer, prompts, **kw):   # stop the run at its first sampling
        if kw["temperature"] != 0.0:
            raise StopAfterEval
        return generate(model, tokenizer, prompts, **kw)

    monkeypatch.setattr(train_module, "generate", greedy_only)
    with pytest.raises(StopAfterEval):
        train(cfg, tmp_path, model=grpo_model, tokenizer=TOK, progress=False)
    # the model GRPO starts from is the SFT model, and so is its step-0 evaluation
    jax.tree.map(np.testing.assert_array_equal, params_of(grpo_model), params_of(sft_model))
    before = [json.loads(x) for x in
              (tmp_path / "completions" / "eval_00000.jsonl").read_text().splitlines()]
    _, want = evaluate(sft_model, TOK, cfg, [r["problem"] for r in before])
    assert [r["completion"] for r in before] == [r["completion"] for r in want]
