"""The warm-start (SFT) arm: examples the reward accepts (Countdown, and GSM8K from the real
train file), a completion-only loss equal to an independent cross-entropy, memorisation on a toy
model, parameters on disk, GRPO from them, for both tasks.

Model-running tests use a toy word-level tokenizer over a 512-token vocabulary with a tiny
Gemma-3-shaped model, so a step costs milliseconds on a CPU; the batch layout is also checked
with the real Gemma tokenizer, whose prompt/completion boundary is what matters on real runs."""

import argparse
import dataclasses
import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from aha_utils import sft, sft_data
from aha_utils import train as train_module
from aha_utils.analysis import has_reflection
from aha_utils.config import ModelConfig
from aha_utils.data.countdown import make_problems
from aha_utils.data.gsm8k import load_gsm8k
from aha_utils.data.prompts import make_prompt
from aha_utils.lora import apply_lora
from aha_utils.model import Gemma, forward
from aha_utils.rewards import extract_answer, reward_terms
from aha_utils.run_config import RunConfig
from aha_utils.sampler import generate
from aha_utils.train import evaluate, parse_overrides, train
from aha_utils.train_step import TrainConfig

F32 = TrainConfig(compute_dtype="float32")
GSM8K_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"
needs_gsm8k = pytest.mark.skipif(
    not (GSM8K_DIR / "train.jsonl").is_file(),
    reason=f"the real GSM8K release files are not at {GSM8K_DIR} (../shared/data/gsm8k)")

# A small GSM8K in the release's JSONL format: (question, answer field). Train row 4 has a
# reflection phrase in its solution, row 5 a completion longer than the CLI test's 64 tokens.
GSM8K_TRAIN = [
    ("Tom has 3 boxes with 12 pencils in each box. He gives away 10 pencils. How many pencils "
     "does he have left?",
     "Tom has 3*12 = <<3*12=36>>36 pencils.\nHe has 36-10 = <<36-10=26>>26 pencils left\n#### 26"),
    ("A shirt costs $25 and is on sale for 20% off. How many dollars does it cost on sale?",
     "The discount is 25*0.2 = <<25*0.2=5>>5 dollars.\nIt costs 25-5 = <<25-5=20>>20.\n#### 20"),
    ("Ann reads 5 pages a day for 7 days. How many pages does she read?",
     "She reads 5*7 = <<5*7=35>>35 pages.\n#### 35"),
    ("A farm has 1,200 hens and sells 200 of them. How many hens are left?",
     "The farm has 1200-200 = <<1200-200=1000>>1000 hens left.\n#### 1,000"),
    ("Sam had 4 apples and then bought 4 apples. How many apples does he have?",
     "Sam bought 4 apples again, so he has 4+4 = <<4+4=8>>8 apples.\n#### 8"),
    ("A baker makes 2 cakes a day. How many cakes does she make in 12 days?",
     "".join(f"On day {d} she has made {2 * d} cakes.\n" for d in range(1, 13)) + "#### 24"),
]
GSM8K_TEST = [
    ("Bob has 6 cars and sells 2 of them. How many cars does he have left?",
     "He has 6-2 = <<6-2=4>>4 cars left.\n#### 4"),
    ("A box holds 4 pens. How many pens are in 3 boxes?",
     "There are 3*4 = <<3*4=12>>12 pens.\n#### 12"),
]


def write_gsm8k(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", GSM8K_TRAIN), ("test", GSM8K_TEST)):
        (folder / f"{split}.jsonl").write_text(
            "".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in rows))
    return folder


class WordTokenizer:
    """A toy tokenizer with a fixed vocabulary: the words (with their leading space) of the
    prompts, SFT phrasings and GSM8K rows above, then single characters, so a prompt is ~170
    tokens, not ~560. Ids 0-3 are pad, eos, bos, end_of_turn; the vocabulary fits a 512-row
    embedding."""
    pad_id, eos_id, bos_id, end_of_turn_id, vocab_size = 0, 1, 2, 3, 512
    PIECE = re.compile(r" ?[A-Za-z_]+|\s|.", re.S)

    def __init__(self):
        q = {"nums": [1, 2], "target": 3}
        texts = [make_prompt(task, p, template=t) for t in ("base", "chat", "few_shot")
                 for task, p in (("countdown", q), ("gsm8k", {"question": ""}))]
        texts += [*sft_data.OPENERS, *sft_data.STEPS, *sft_data.CLOSERS,
                  " </think> <answer> </answer>"]
        texts += [text for row in GSM8K_TRAIN + GSM8K_TEST for text in row]
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
    for phrase in sft_data.OPENERS + sft_data.STEPS + sft_data.CLOSERS:  # every variant
        assert not has_reflection(phrase), phrase
    # a problem without a stored solution is solved; an impossible one is an error
    q = {"nums": [3, 5, 2], "target": 16}
    assert reward_terms("countdown", sft.countdown_sft_example(q)[1], q)["correct"] == 1.0
    with pytest.raises(ValueError, match="no solution"):
        sft.countdown_sft_example({"nums": [1, 1, 1], "target": 97})


def test_gsm8k_example_layout_and_refusals(tmp_path):
    rows = load_gsm8k("train", path=write_gsm8k(tmp_path))
    q = rows[0]
    prompt, completion = sft_data.gsm8k_sft_example(q)
    assert prompt == make_prompt("gsm8k", q) and prompt.endswith("<think>")
    # annotations out, lines joined, a period where a line ended without one
    assert completion == (" Tom has 3*12 = 36 pencils. He has 36-10 = 26 pencils left. </think>"
                          "\n<answer> 26 </answer>")
    assert sft_data.gsm8k_sft_example(q, template="chat")[1] == (
        "<think>\nTom has 3*12 = 36 pencils. He has 36-10 = 26 pencils left.\n</think>\n"
        "<answer>\n26\n</answer>")
    assert sft_data.gsm8k_sft_example(q, template="few_shot", seed=3)[1] == completion
    assert sft_data.sft_example("gsm8k", q) == (prompt, completion)
    assert sft_data.gsm8k_sft_example(rows[3])[1].endswith("<answer> 1000 </answer>")  # canonical
    with pytest.raises(ValueError, match="reflection phrase"):
        sft_data.gsm8k_sft_example(rows[4])
    with pytest.raises(ValueError, match="no worked solution"):
        sft_data.gsm8k_sft_example(dict(q, solution="\n"))
    with pytest.raises(ValueError, match="does not score correct"):   # a tag in the solution
        sft_data.gsm8k_sft_example(dict(q, solution="3*12 = 36 <answer> 36 </answer>"))
    with pytest.raises(ValueError, match="task must be"):
        sft_data.sft_example("math", q)
    kept, skipped = sft_data.gsm8k_sft_rows(rows, TOK, max_completion_tokens=64)
    assert kept == rows[:4] and skipped == {"reflection": 1, "too_long": 1}


@needs_gsm8k
def test_every_real_gsm8k_train_example_scores_full_reward_without_reflection():
    rows = load_gsm8k("train", path=GSM8K_DIR)
    reflective = 0
    for template, part in (("base", rows), ("chat", rows[::8])):   # chat: the same reasoning
        for q in part:
            try:
                completion = sft_data.gsm8k_sft_example(q, template=template)[1]
            except ValueError as err:
                assert "reflection phrase" in str(err) and has_reflection(q["solution"])
                reflective += template == "base"
                continue
            terms = reward_terms("gsm8k", completion, q)
            assert terms["correct"] == terms["format_strict"] == 1.0, (completion, terms)
            assert terms["xml_count"] == 0.5 and extract_answer(completion) == q["answer"]
            assert "<<" not in completion and ">>" not in completion
            assert not has_reflection(completion)
            assert completion.count("\n") == (5 if template == "chat" else 1)   # one paragraph
    assert reflective == 42                              # the module doc's count


@needs_gsm8k
def test_real_gsm8k_training_set_and_lengths():
    from aha_utils.tokenizer import gguf_tokenizer
    budget = RunConfig.preset("gsm8k", "gpu").max_new_tokens
    kept, skipped = sft_data.gsm8k_sft_rows(load_gsm8k("train", path=GSM8K_DIR), gguf_tokenizer(),
                                            max_completion_tokens=budget)
    assert budget == 256 and skipped == {"reflection": 42, "too_long": 29}   # the module doc's
    assert len(kept) == 7473 - 42 - 29


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
    assert summary["config"]["num_numbers"] == 3 and "train_skipped" not in summary["config"]
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


@pytest.fixture(scope="module")
def gsm8k_sft_run(tmp_path_factory):
    """The CLI's run with --task gsm8k on a toy model and the small GSM8K folder above: 20 steps
    over its 4 usable training rows."""
    data = write_gsm8k(tmp_path_factory.mktemp("gsm8k"))
    out = tmp_path_factory.mktemp("sft_gsm8k")
    args = sft.parse_args(["--task", "gsm8k", "--gsm8k-path", str(data), "--steps", "20",
                           "--batch", "4", "--lr", "2e-2", "--out", str(out), "--eval-n", "2",
                           "--max-new-tokens", "64", "--val-n", "0"])
    model = tiny_model(seed=1)
    return out, args, model, sft.run(args, model=model, tokenizer=TOK)


def test_gsm8k_cli(gsm8k_sft_run, tmp_path):
    out, args, model, summary = gsm8k_sft_run
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["task"] == "gsm8k" and summary["steps"] == 20
    config = summary["config"]
    assert (config["train_problems"], config["num_numbers"]) == (4, None)
    assert config["max_new_tokens"] == 64 and config["gsm8k_path"] == args.gsm8k_path
    assert config["train_skipped"] == {"reflection": 1, "too_long": 1}
    rows = [json.loads(x) for x in (out / "sft_metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["loss"] < 0.3 * rows[0]["loss"], (rows[0], rows[-1])   # memorised
    for when in ("before", "after"):                 # the GRPO run's held-out set: test rows
        evals = [json.loads(x) for x in
                 (out / "completions" / f"eval_{when}.jsonl").read_text().splitlines()]
        assert [r["problem"]["question"] for r in evals] == [q for q, _ in GSM8K_TEST]
        assert summary["eval"][when]["n"] == 2
    restored = tiny_model(seed=5)
    sft.load_params(restored, out)
    jax.tree.map(np.testing.assert_array_equal, params_of(restored), params_of(model))
    with pytest.raises(ValueError, match="4 GSM8K train rows are usable"):
        sft.run(argparse.Namespace(**dict(vars(args), out=str(tmp_path), train_problems=5)),
                model=model, tokenizer=TOK)
    for bad in (["--task", "gsm8k", "--num-numbers", "3"], ["--task", "countdown",
                                                              "--gsm8k-path", "x"]):
        with pytest.raises(SystemExit):
            sft.parse_args(bad + ["--steps", "1", "--out", "x"])


class StopAfterEval(Exception):
    pass


@pytest.mark.parametrize("arm", ["sft_run", "gsm8k_sft_run"])
def test_grpo_starts_from_the_sft_weights(arm, request, tmp_path, monkeypatch):
    out, args, sft_model, _ = request.getfixturevalue(arm)
    # `python -m aha_utils.train --task T [--gsm8k-path DIR] --set init_from=OUT`, at toy size
    argv = ["--task", args.task, "--steps", "1", "--out", str(tmp_path)]
    argv += ["--gsm8k-path", args.gsm8k_path] if args.gsm8k_path else []
    for item in (f"init_from={out}", "prompts_per_step=2", "num_samples=2", "max_new_tokens=8",
                 "lora_rank=none", "eval_n=2", "val_n=0"):
        argv += ["--set", item]
    cfg, _ = train_module.parse_args(argv)
    assert cfg.init_from == str(out) and parse_overrides(["init_from=none"]) == {"init_from": None}
    assert (cfg.task, cfg.gsm8k_path) == (args.task, args.gsm8k_path)
    grpo_model = tiny_model(seed=2)                    # another random model: loading replaces it

    def greedy_only(model, tokenizer, prompts, **kw):   # stop the run at its first sampling
        if kw["temperature"] != 0.0:
            raise StopAfterEval
        return generate(model, tokenizer, prompts, **kw)

    from aha_utils import grpo_step
    monkeypatch.setattr(grpo_step, "generate", greedy_only)   # the step's sampling
    with pytest.raises(StopAfterEval):
        train(cfg, tmp_path, model=grpo_model, tokenizer=TOK, progress=False)
    # the model GRPO starts from is the SFT model, and so is its step-0 evaluation
    jax.tree.map(np.testing.assert_array_equal, params_of(grpo_model), params_of(sft_model))
    before = [json.loads(x) for x in
              (tmp_path / "completions" / "eval_00000.jsonl").read_text().splitlines()]
    _, want = evaluate(sft_model, TOK, cfg, [r["problem"] for r in before])
    assert [r["completion"] for r in before] == [r["completion"] for r in want]
