"""Write the HF transformers reference values that tests/test_parity_hf.py checks against.

HF transformers (CPU torch, float32) loads the same GGUF as `aha_utils` — an implementation
that shares no code with ours — and records, for a few prompts (a plain question, a chat turn,
the Countdown prompt, and one longer than the 512-token sliding window so that local and global
layers both matter):
  ids            its token ids for the prompt (with <bos>)
  argmax         full-vocabulary argmax at every position
  top_ids/logits the 8 largest logits at every position
  sub_logits     logits of 128 fixed random vocabulary ids at every position
  last_logits    the whole float32 logit row at the last position
  greedy         its 16-token greedy continuation (`generate(do_sample=False)`)

Run (needs `pip install torch==2.13.0 transformers accelerate`; about 3 minutes on 2 cores):
    python scripts/make_hf_golden.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "golden" / "hf_gemma3_270m.npz"
N_NEW = 16


def long_prompt() -> str:
    """~1100 tokens of varied, deterministic prose with numbers (crosses the 512 window)."""
    rng = np.random.default_rng(7)
    subjects = ["The farmer", "A student", "The train", "My neighbour", "The baker", "Our team"]
    verbs = ["counted", "sold", "carried", "painted", "measured", "collected"]
    things = ["apples", "boxes", "chairs", "stones", "letters", "bottles"]
    lines = []
    for i in range(70):
        s, v, t = rng.choice(subjects), rng.choice(verbs), rng.choice(things)
        lines.append(f"{i + 1}. {s} {v} {int(rng.integers(2, 999))} {t} on day {int(rng.integers(1, 31))}.")
    return "Here is a log of events.\n" + "\n".join(lines) + "\nSummary: in total, the farmer"


PROMPTS = {
    "qa": "Question: What is 12 + 7?\nAnswer:",
    "chat": "<start_of_turn>user\nWhat is the capital of France? Answer in one word.<end_of_turn>\n"
            "<start_of_turn>model\n",
    "countdown": (
        "A conversation between User and Assistant. The user asks a question, and the Assistant "
        "solves it. The assistant first thinks about the reasoning process in the mind and then "
        "provides the user with the answer.\nUser: Using the numbers [3, 7, 25], create an "
        "equation that equals 46. You can use basic arithmetic operations (+, -, *, /) and each "
        "number can only be used once. Show your work in <think> </think> tags. And return the "
        "final answer in <answer> </answer> tags, for example <answer> (1 + 2) / 3 </answer>.\n"
        "Assistant: Let me solve this step by step.\n<think>"
    ),
    "long": long_prompt(),
}


def main() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sys.path.insert(0, str(ROOT))
    from aha_utils.gguf_file import default_gguf_path

    gguf = default_gguf_path()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                 dtype=torch.float32).eval()
    vocab = model.config.vocab_size
    sub_ids = np.sort(np.random.default_rng(0).choice(vocab, 128, replace=False))
    out = {"sub_ids": sub_ids, "names": np.array(list(PROMPTS))}
    with torch.no_grad():
        for name, text in PROMPTS.items():
            ids = tok(text, return_tensors="pt").input_ids
            logits = model(ids).logits[0].float().numpy()            # [T, V]
            gen = model.generate(ids, max_new_tokens=N_NEW, do_sample=False,
                                 attention_mask=torch.ones_like(ids))
            top = np.argsort(-logits, axis=-1)[:, :8]
            out[f"{name}/ids"] = ids[0].numpy().astype(np.int32)
            out[f"{name}/argmax"] = logits.argmax(-1).astype(np.int32)
            out[f"{name}/top_ids"] = top.astype(np.int32)
            out[f"{name}/top_logits"] = np.take_along_axis(logits, top, -1)
            out[f"{name}/sub_logits"] = logits[:, sub_ids]
            out[f"{name}/last_logits"] = logits[-1]
            out[f"{name}/greedy"] = gen[0, ids.shape[1]:].numpy().astype(np.int32)
            print(f"{name}: {ids.shape[1]} tokens, greedy -> {tok.decode(gen[0, ids.shape[1]:])!r}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **out)
    meta = {"transformers": __import__("transformers").__version__, "torch": torch.__version__,
            "gguf": gguf.name, "prompts": PROMPTS, "max_new_tokens": N_NEW}
    OUT.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
