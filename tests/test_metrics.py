"""Tests for tuneloom.evaluate.metrics: normalisation, label-set detection and the scores."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuneloom.evaluate.metrics import is_label_set, normalise, per_example, score

# --- normalise ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Negative.", "negative"),
        ("negative.", "negative"),
        ("  NEGATIVE  ", "negative"),
        ('"negative"', "negative"),
        ("“Negative.”", "negative"),
        ("'positive'!", "positive"),
        ("**negative**", "negative"),
        ("`negative`", "negative"),
        ("(neutral)", "neutral"),
        ("ｎｅｇａｔｉｖｅ。", "negative"),
        ("Straße", "strasse"),
        ("the  quick\n\tbrown   fox.", "the quick brown fox"),
        ("...", ""),
        ("", ""),
    ],
)
def test_normalise_examples(raw: str, expected: str) -> None:
    assert normalise(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("3.5", "3.5"),
        ("don't.", "don't"),
        ("-3", "-3"),
        ("+3", "+3"),
        (".5", ".5"),
        ("'.5'", ".5"),
        ("50%", "50%"),
        ("$5.", "$5"),
        ("C++", "c++"),
        ("#1", "#1"),
    ],
)
def test_normalise_keeps_meaningful_characters(raw: str, expected: str) -> None:
    assert normalise(raw) == expected


def test_normalise_does_not_confuse_signed_numbers() -> None:
    assert normalise("-3") != normalise("3")
    assert normalise(".5") != normalise("5")


@given(st.text())
@settings(max_examples=300, deadline=None)
def test_normalise_is_idempotent(text: str) -> None:
    once = normalise(text)
    assert normalise(once) == once
    assert once == once.strip()
    assert "  " not in once


# --- is_label_set ------------------------------------------------------------------------------


def test_label_set_detected_with_varied_formatting() -> None:
    refs = ["negative.", "Positive.", "negative", "NEGATIVE.", "positive.", "neutral."]
    # 3 distinct labels, 6 examples: 3 < 6 / 2 is false.
    assert not is_label_set(refs)
    assert is_label_set([*refs, "negative."])


def test_label_set_rejects_free_text_and_edge_cases() -> None:
    assert not is_label_set([])
    # Short but all different: free text.
    assert not is_label_set(["Paris", "1969", "blue whale", "Jupiter"])
    # Repeating, but too long to be labels.
    long_ref = "the movie was good but a bit too long"
    assert not is_label_set([long_ref] * 10)
    # An empty reference is not a label.
    assert not is_label_set(["yes", "yes", "yes", ""])


def test_label_set_max_labels() -> None:
    refs = [f"label{i}" for i in range(25)] * 4  # 25 distinct, 100 examples
    assert not is_label_set(refs)
    assert is_label_set(refs, max_labels=25)
    assert not is_label_set(["a b c", "a b c", "a b c"], max_words=2)


# --- score: label sets -------------------------------------------------------------------------


def test_macro_f1_against_hand_computed_example() -> None:
    references = ["positive."] * 4 + ["negative."] * 3 + ["neutral."]
    predictions = [
        "Positive",  # pos -> pos  tp(pos)
        "positive.",  # pos -> pos  tp(pos)
        '"POSITIVE"',  # pos -> pos  tp(pos)
        "maybe",  # pos -> outside the label set: fn(pos), no fp anywhere
        "negative",  # neg -> neg  tp(neg)
        "Negative!",  # neg -> neg  tp(neg)
        "positive",  # neg -> pos  fn(neg), fp(pos)
        "negative",  # neu -> neg  fn(neu), fp(neg)
    ]
    # positive: tp=3 fp=1 fn=1 -> F1 = 6/8 = 3/4
    # negative: tp=2 fp=1 fn=1 -> F1 = 4/6 = 2/3
    # neutral:  tp=0 fp=0 fn=1 -> F1 = 0
    # macro = (3/4 + 2/3 + 0) / 3 = 17/36 ("maybe" adding a class would give 17/48)
    result = score(predictions, references)
    assert result["count"] == 8
    assert result["labels"] == 3
    assert result["exact_match"] == pytest.approx(5 / 8)
    assert result["accuracy"] == pytest.approx(5 / 8)
    assert result["macro_f1"] == pytest.approx(17 / 36)
    assert not {"rouge_l", "chrf", "bleu"} & result.keys()


def test_macro_f1_is_not_fooled_by_majority_answer() -> None:
    references = ["no"] * 9 + ["yes"] * 3
    predictions = ["no"] * 12
    result = score(predictions, references)
    assert result["accuracy"] == pytest.approx(0.75)
    # no: tp=9 fp=3 fn=0 -> 18/21 ; yes: 0  -> macro = 9/21
    assert result["macro_f1"] == pytest.approx(9 / 21)


def test_perfect_and_single_class_label_set() -> None:
    refs = ["yes."] * 3
    result = score(["Yes", "yes", "YES!"], refs)
    assert result == {"count": 3, "exact_match": 1.0, "accuracy": 1.0, "macro_f1": 1.0, "labels": 1}
    assert score(["no", "no", "no"], refs)["macro_f1"] == 0.0


# --- score: free text --------------------------------------------------------------------------

LONG_TEXTS = [
    "The committee approved the new budget after a long debate on Tuesday evening.",
    "Heavy rain is expected across the northern region for the rest of the week.",
    "She translated the letter into French and sent it to her cousin in Lyon.",
]


def test_identical_free_text_scores_maximal() -> None:
    result = score(LONG_TEXTS, list(LONG_TEXTS))
    assert "accuracy" not in result
    assert result["count"] == 3
    assert result["exact_match"] == 1.0
    assert result["rouge_l"] == pytest.approx(1.0)
    assert result["chrf"] == pytest.approx(100.0)
    assert result["bleu"] == pytest.approx(100.0)
    assert result["bleu"] <= 100.0


def test_disjoint_free_text_scores_low() -> None:
    predictions = ["xyz qqq vvv kkk jjj zzz", "wvw kxk qzq jjz xxv kkq", "zz yy xx ww vv qq"]
    references = ["the cat sat on the mat", "a bird sang in the garden", "lemons are sour and bright"]
    result = score(predictions, references)
    assert result["exact_match"] == 0.0
    assert result["rouge_l"] == 0.0
    assert result["bleu"] == 0.0
    assert result["chrf"] < 5.0


def test_partial_overlap_is_between() -> None:
    predictions = [t.replace("new", "old").replace("rain", "snow") for t in LONG_TEXTS]
    result = score(predictions, LONG_TEXTS)
    assert 0.0 < result["rouge_l"] < 1.0
    assert 0.0 < result["chrf"] < 100.0
    assert 0.0 < result["bleu"] < 100.0
    assert result["exact_match"] == pytest.approx(1 / 3)


def test_short_completions_that_are_right_score_full_bleu() -> None:
    """Standard corpus BLEU is 0 for one-to-three-word answers however right (it has no 4-grams to
    match); beside an exact match of 1 that read as a broken metric."""
    references = ["opened a refund", "ships Monday", "reset the password", "two days", "by courier"]
    result = score(list(references), references)
    assert result["exact_match"] == 1.0 and "accuracy" not in result
    assert result["bleu"] == pytest.approx(100.0)
    half_right = score(["opened a refund", "ships Friday", "reset the modem", "two weeks", "by post"], references)
    assert 0.0 < half_right["bleu"] < 100.0


def test_bleu_on_long_texts_is_standard_corpus_bleu() -> None:
    """Where every n-gram order occurs, the effective order changes nothing."""
    from sacrebleu.metrics import BLEU

    predictions = [t.replace("new", "old").replace("rain", "snow") for t in LONG_TEXTS]
    standard = BLEU().corpus_score(predictions, [list(LONG_TEXTS)]).score
    assert score(predictions, LONG_TEXTS)["bleu"] == pytest.approx(standard, abs=1e-9)


def test_rouge_l_uses_stemmer() -> None:
    result = score(["The dogs were running quickly home"], ["the dog was running quick home"])
    plain_overlap = 3 / 6  # "the", "running", "home" without stemming
    assert result["rouge_l"] > plain_overlap


# --- per_example, empty input, errors ----------------------------------------------------------


def test_per_example() -> None:
    assert per_example(["Negative.", "positive", "meh"], ["negative", "Positive.", "neutral."]) == [
        True,
        True,
        False,
    ]
    assert per_example([], []) == []


def test_empty_inputs() -> None:
    assert score([], []) == {"count": 0}


def test_length_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="length"):
        score(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="length"):
        per_example(["a", "b"], [])


def test_bare_string_rejected() -> None:
    with pytest.raises(TypeError):
        score("negative", "negative")


# --- property test -----------------------------------------------------------------------------

LABELS = st.sampled_from(["positive.", "Negative", "neutral", "yes", "no", ""])
ANY_TEXT = st.one_of(st.text(max_size=40), LABELS)


@st.composite
def pairs(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    n = draw(st.integers(min_value=0, max_value=12))
    predictions = draw(st.lists(ANY_TEXT, min_size=n, max_size=n))
    ref_strategy = draw(st.sampled_from([ANY_TEXT, LABELS]))
    references = draw(st.lists(ref_strategy, min_size=n, max_size=n))
    return predictions, references


@given(pairs())
@settings(max_examples=200, deadline=None)
def test_score_total_and_finite(data: tuple[list[str], list[str]]) -> None:
    predictions, references = data
    result = score(predictions, references)
    assert isinstance(result, dict)
    assert result["count"] == len(references)
    for key, value in result.items():
        assert isinstance(value, int | float), key
        assert math.isfinite(value), key
    if not references:
        assert result == {"count": 0}
        return
    assert 0.0 <= result["exact_match"] <= 1.0
    assert result["exact_match"] == pytest.approx(sum(per_example(predictions, references)) / len(references))
    if "macro_f1" in result:
        assert is_label_set(references)
        assert 0.0 <= result["macro_f1"] <= 1.0
        assert result["accuracy"] == result["exact_match"]
        assert 1 <= result["labels"] <= 20
    else:
        assert 0.0 <= result["rouge_l"] <= 1.0
        assert 0.0 <= result["chrf"] <= 100.0
        assert 0.0 <= result["bleu"] <= 100.0
