"""SFT examples in two styles (`sft_data`): direct (today's warm start, unchanged) and search
traces, and a seeded mix of the two. Pure Python: no model, no JAX."""

import pytest

from aha_utils import sft_data
from aha_utils.analysis import has_reflection, search_profile
from aha_utils.data.countdown import make_problems
from aha_utils.data.prompts import make_prompt
from aha_utils.rewards import reward_terms

PROBLEMS = make_problems(60, num_numbers=4, seed=21)


def test_direct_is_the_default_and_unchanged():
    q = {"nums": [44, 19, 35], "target": 98, "solution": "44 + 19 + 35"}
    for seed in range(4):
        assert (sft_data.countdown_sft_example(q, seed=seed)
                == sft_data.countdown_sft_example(q, seed=seed, style="direct")
                == sft_data.sft_example("countdown", q, seed=seed))
    # a completion of today's writer, byte for byte
    assert sft_data.countdown_sft_example(q, seed=0)[1].endswith("</think>\n<answer> 44 + 19 + 35 </answer>")
    assert sft_data.countdown_sft_example(q, template="chat")[1].startswith("<think>\n")


@pytest.mark.parametrize("template", ["base", "chat", "few_shot"])
def test_search_style_scores_full_reward_with_true_steps(template):
    for i, q in enumerate(PROBLEMS[:30]):
        prompt, completion = sft_data.countdown_sft_example(q, template=template, seed=i, style="search", max_tokens=300)
        assert prompt == make_prompt("countdown", q, template=template)
        terms = reward_terms("countdown", completion, q)
        assert terms["correct"] == terms["format_strict"] == terms["steps_true"] == 1.0
        assert not has_reflection(completion)


def test_options_and_errors():
    q = PROBLEMS[0]
    tok = lambda s: len(s.split())
    a = sft_data.countdown_sft_example(q, style="search", count_tokens=tok, max_tokens=400, max_failed=1)
    assert search_profile(a[1], q["target"])["failed_checks"] <= 1
    with pytest.raises(ValueError, match="style"):
        sft_data.countdown_sft_example(q, style="tree")
    with pytest.raises(ValueError, match="only to style='search'"):
        sft_data.countdown_sft_example(q, max_failed=2)
    with pytest.raises(ValueError, match="only to the countdown"):
        sft_data.sft_example("gsm8k", {"question": "?", "answer": "1", "solution": "1"}, style="search")


def test_mix_is_seeded_and_exact():
    styles = sft_data.search_styles(50, 0.2, seed=3)
    assert styles.count("search") == 10 and styles == sft_data.search_styles(50, 0.2, seed=3)
    assert styles != sft_data.search_styles(50, 0.2, seed=4)
    assert sft_data.search_styles(5, 0.0) == ["direct"] * 5 and sft_data.search_styles(5, 1.0) == ["search"] * 5
    with pytest.raises(ValueError, match="search_fraction"):
        sft_data.search_styles(5, 1.5)
    mix = sft_data.countdown_sft_examples(PROBLEMS, search_fraction=0.2, seed=3, max_tokens=400)
    assert mix == sft_data.countdown_sft_examples(PROBLEMS, search_fraction=0.2, seed=3, max_tokens=400)
    styles = sft_data.search_styles(len(PROBLEMS), 0.2, seed=3)
    for q, style, (prompt, completion) in zip(PROBLEMS, styles, mix):
        direct = sft_data.countdown_sft_example(q, seed=3)
        assert (completion == direct[1]) == (style == "direct")
        assert reward_terms("countdown", completion, q)["correct"] == 1.0
    assert sft_data.countdown_sft_examples(PROBLEMS[:5], seed=1) == [
        sft_data.countdown_sft_example(q, seed=1) for q in PROBLEMS[:5]]
