"""Prompts: how a problem is put to the model, in three templates.

- "base": the R1-Zero template for base models, in TinyZero's words. It ends in `<think>`, so
  the model's completion starts inside its reasoning and must close it: `... </think>` then
  `<answer> ... </answer>`. A base model has never seen a chat format; this is plain text that a
  pretrained model continues.
- "chat": Gemma's chat turn for `-it` models. Gemma has no system role, so the format
  instruction is put at the top of the first user turn (what Gemma's own chat template does with
  a system message). The model writes the whole `<think> ... </think> <answer> ... </answer>`
  (or `<reasoning>` for Tiny-R1's format) itself.
- "few_shot": the base template preceded by worked examples, so a small base model sees the
  format before it must produce it.

No template contains `<bos>`: tokenizers add it (`encode(text, add_bos=True)`), and a second
`<bos>` silently changes what the model sees. Reward functions take the completion only, so the
`<think>` that ends the base prompt is never part of what is scored.
"""

from __future__ import annotations

import statistics

TEMPLATES = ("base", "chat", "few_shot")
REASONING_TAGS = ("think", "reasoning")

R1_PREAMBLE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant "
    "solves it. The assistant first thinks about the reasoning process in the mind and then "
    "provides the user with the answer."
)
ASSISTANT_START = "Assistant: Let me solve this step by step.\n<{tag}>"
FORMAT_SENTENCE = (
    "Show your work in <{tag}> </{tag}> tags. And return the final answer in <answer> </answer> "
    "tags, for example <answer> {example} </answer>."
)
COUNTDOWN_EXAMPLE_ANSWER = "(1 + 2) / 3"
GSM8K_EXAMPLE_ANSWER = "42"

SYSTEM_INSTRUCTION = (
    "You are a careful problem solver. First think about the problem step by step inside "
    "<{tag}> </{tag}> tags, then give only the final answer inside <answer> </answer> tags, "
    "in this format:\n<{tag}>\n...\n</{tag}>\n<answer>\n...\n</answer>"
)
GEMMA_TURN = "<start_of_turn>user\n{text}<end_of_turn>\n<start_of_turn>model\n"

# Worked examples for the few-shot template, written by hand (none is a test problem). The tests
# check that each scores 1.0 with the reward, so the examples teach exactly the format it wants.
COUNTDOWN_SHOTS = (
    ([3, 5, 2], 16, "3 + 5 = 8 and 8 * 2 = 16. Each number is used once.", "(3 + 5) * 2"),
    ([6, 4, 9], 15, "6 + 4 + 9 = 19, too big. 6 * 4 = 24 and 24 - 9 = 15. That works.", "6 * 4 - 9"),
)
GSM8K_SHOTS = (
    (
        "Tom has 3 boxes with 12 pencils in each box. He gives away 10 pencils. "
        "How many pencils does he have left?",
        "3 boxes of 12 pencils is 3 * 12 = 36 pencils. After giving away 10 he has 36 - 10 = 26.",
        "26",
    ),
    (
        "A shirt costs $25 and is on sale for 20% off. How many dollars does the shirt cost on sale?",
        "20% of $25 is 0.2 * 25 = 5 dollars. The sale price is 25 - 5 = 20 dollars.",
        "20",
    ),
)


def _check(template: str, tag: str) -> None:
    if template not in TEMPLATES:
        raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")
    if tag not in REASONING_TAGS:
        raise ValueError(f"reasoning_tag must be one of {REASONING_TAGS}, got {tag!r}")


def countdown_question(nums: list[int], target: int) -> str:
    """TinyZero's task sentence (the numbers as a Python list, as in its prompt)."""
    return (
        f"Using the numbers {list(nums)}, create an equation that equals {target}. You can use basic "
        "arithmetic operations (+, -, *, /) and each number can only be used once."
    )


def _base_turn(question: str, tag: str, example: str) -> str:
    fmt = FORMAT_SENTENCE.format(tag=tag, example=example)
    return f"User: {question} {fmt}\n{ASSISTANT_START.format(tag=tag)}"


def _render(question: str, shots: list[tuple[str, str, str]], example: str, template: str, tag: str) -> str:
    """One prompt from the question text and (question, thinking, answer) worked examples."""
    _check(template, tag)
    if template == "chat":
        return GEMMA_TURN.format(text=f"{SYSTEM_INSTRUCTION.format(tag=tag)}\n\n{question}")
    parts = [R1_PREAMBLE]
    if template == "few_shot":
        for q, thinking, answer in shots:
            parts.append(f"{_base_turn(q, tag, example)} {thinking} </{tag}>\n<answer> {answer} </answer>")
    parts.append(_base_turn(question, tag, example))
    return "\n".join(parts)


def countdown_prompt(nums: list[int], target: int, *, template: str = "base", reasoning_tag: str = "think") -> str:
    """The prompt for one Countdown problem. With the defaults this is TinyZero's prompt verbatim."""
    shots = [(countdown_question(n, t), thinking, answer) for n, t, thinking, answer in COUNTDOWN_SHOTS]
    return _render(countdown_question(nums, target), shots, COUNTDOWN_EXAMPLE_ANSWER, template, reasoning_tag)


def gsm8k_prompt(question: str, *, template: str = "base", reasoning_tag: str = "think") -> str:
    """The prompt for one GSM8K question: the same templates, with a number as the example answer."""
    return _render(question, list(GSM8K_SHOTS), GSM8K_EXAMPLE_ANSWER, template, reasoning_tag)


def make_prompt(task: str, problem: dict, **options) -> str:
    """The prompt for a problem dict of `task` ("countdown" or "gsm8k"); options as above."""
    if task == "countdown":
        return countdown_prompt(problem["nums"], problem["target"], **options)
    if task == "gsm8k":
        return gsm8k_prompt(problem["question"], **options)
    raise ValueError(f"task must be 'countdown' or 'gsm8k', got {task!r}")


def prompt_token_stats(prompts: list[str], tokenizer) -> dict:
    """Token counts of `prompts` (BOS included, as the model sees them): n, min, mean, median,
    p95, max. `tokenizer` is anything with `.encode(text, add_bos=True) -> list[int]`."""
    if not prompts:
        raise ValueError("prompt_token_stats needs at least one prompt")
    lengths = sorted(len(tokenizer.encode(p, add_bos=True)) for p in prompts)
    return {
        "n": len(lengths),
        "min": lengths[0],
        "mean": statistics.fmean(lengths),
        "median": statistics.median(lengths),
        "p95": lengths[min(len(lengths) - 1, round(0.95 * (len(lengths) - 1)))],
        "max": lengths[-1],
    }
