"""Prompt templates: TinyZero's words exactly, Gemma's turn format, worked examples that score 1.0."""

import pytest

from aha_utils.data.prompts import (
    COUNTDOWN_SHOTS,
    GSM8K_SHOTS,
    countdown_prompt,
    gsm8k_prompt,
    make_prompt,
    prompt_token_stats,
)
from aha_utils.rewards import countdown_reward, gsm8k_reward

TINYZERO_COUNTDOWN = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer.\nUser: Using the numbers [44, 19, 35], create an equation that equals 98. You can use "
    "basic arithmetic operations (+, -, *, /) and each number can only be used once. Show your work in "
    "<think> </think> tags. And return the final answer in <answer> </answer> tags, for example "
    "<answer> (1 + 2) / 3 </answer>.\nAssistant: Let me solve this step by step.\n<think>"
)


def test_base_countdown_prompt_is_tinyzero_verbatim():
    assert countdown_prompt([44, 19, 35], 98) == TINYZERO_COUNTDOWN


@pytest.mark.parametrize("template", ["base", "chat", "few_shot"])
@pytest.mark.parametrize("tag", ["think", "reasoning"])
def test_no_template_contains_bos_and_each_names_its_tags(template, tag):
    for prompt in (countdown_prompt([1, 2, 3], 6, template=template, reasoning_tag=tag),
                   gsm8k_prompt("How many?", template=template, reasoning_tag=tag)):
        assert "<bos>" not in prompt
        assert f"<{tag}>" in prompt and f"</{tag}>" in prompt and "<answer>" in prompt
        if template == "chat":
            assert prompt.startswith("<start_of_turn>user\n") and prompt.endswith("<end_of_turn>\n<start_of_turn>model\n")
            assert prompt.count("<start_of_turn>") == 2  # no system turn: Gemma has none
        else:
            assert prompt.endswith(f"Assistant: Let me solve this step by step.\n<{tag}>")


def test_chat_prompt_puts_the_instruction_before_the_question():
    prompt = gsm8k_prompt("How many apples?", template="chat", reasoning_tag="reasoning")
    assert prompt.index("<reasoning>") < prompt.index("How many apples?")
    assert "<think>" not in prompt


def test_few_shot_prompt_ends_with_the_base_question():
    base, few = countdown_prompt([7, 8, 9], 10), countdown_prompt([7, 8, 9], 10, template="few_shot")
    question = base[base.index("User:"):]
    assert few.endswith(question) and few.count("User:") == len(COUNTDOWN_SHOTS) + 1
    assert few.startswith(base[: base.index("\nUser:")])


def test_worked_examples_score_one_with_the_reward():
    for nums, target, thinking, answer in COUNTDOWN_SHOTS:
        assert countdown_reward(f"{thinking} </think>\n<answer> {answer} </answer>", nums, target) == 1.0
    for question, thinking, answer in GSM8K_SHOTS:
        assert gsm8k_reward(f"{thinking} </think>\n<answer> {answer} </answer>", answer) == 1.0


def test_make_prompt_dispatches_and_bad_options_raise():
    assert make_prompt("countdown", {"nums": [44, 19, 35], "target": 98}) == TINYZERO_COUNTDOWN
    assert make_prompt("gsm8k", {"question": "Q?"}, template="chat") == gsm8k_prompt("Q?", template="chat")
    with pytest.raises(ValueError, match="task"):
        make_prompt("math", {})
    with pytest.raises(ValueError, match="template"):
        countdown_prompt([1, 2], 3, template="instruct")
    with pytest.raises(ValueError, match="reasoning_tag"):
        gsm8k_prompt("Q?", reasoning_tag="thought")


class WordTokenizer:
    """A stand-in with the real tokenizer's interface: one id per word, plus BOS."""

    def __init__(self):
        self.calls = []

    def encode(self, text, add_bos=True):
        self.calls.append(add_bos)
        return [2] * add_bos + [1] * len(text.split())


def test_prompt_token_stats_with_a_fake_tokenizer():
    tok = WordTokenizer()
    stats = prompt_token_stats(["a", "a b", "a b c", "a b c d"], tok)
    assert stats == {"n": 4, "min": 2, "mean": 3.5, "median": 3.5, "p95": 5, "max": 5}
    assert tok.calls == [True] * 4  # counted as the model sees them, BOS included
    with pytest.raises(ValueError):
        prompt_token_stats([], tok)
