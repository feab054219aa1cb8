"""Scores for generated texts against the expected completions of held-out examples.

Pure functions: no model, no torch, no I/O, so they can be tested in milliseconds and reused by the
CLI, the server and the evaluation table alike.

Two kinds of task hide behind the same "###"-sectioned data and need different scores:

* classification-like data, whose completions come from a small label set ("negative.",
  "positive.", …): what matters is whether the model picked the right label, so we report
  accuracy and macro-F1 (which, unlike accuracy, is not flattered by a model that always answers
  the majority label);
* free text (summaries, answers, rewrites): an exact match is rare and says little, so we report
  overlap scores that give partial credit: ROUGE-L, chrF and BLEU.

`score` decides which kind it is looking at from the references alone (`is_label_set`), so the
choice never depends on what the model happened to generate.
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sacrebleu.metrics import BLEU, CHRF

__all__ = ["is_label_set", "normalise", "per_example", "score"]

# Characters stripped from both ends of a text besides whitespace, brackets and quotes (Unicode
# categories Ps/Pe/Pi/Pf). Sentence punctuation, because the seed data writes its labels as
# sentences ("negative.") while models often answer without the period, or add "!"; markdown
# emphasis and code marks, because chat-tuned models like to answer "**negative**" or "`negative`";
# the CJK full stop and commas, which NFKC leaves alone. Deliberately absent: "-" and "+" (a sign:
# "-3" is not "3"), "%", "#", "$", "/" and other symbols that carry meaning.
_EDGE_PUNCT = frozenset(".,;:!?…'\"`*_¡¿。、｡､")
_BRACKET_AND_QUOTE_CATEGORIES = frozenset({"Ps", "Pe", "Pi", "Pf"})

# A reference longer than this (in words, after normalising) is prose, not a label.
DEFAULT_MAX_LABEL_WORDS = 5


def _strippable(ch: str) -> bool:
    return ch.isspace() or ch in _EDGE_PUNCT or unicodedata.category(ch) in _BRACKET_AND_QUOTE_CATEGORIES


def normalise(text: str) -> str:
    """The form in which two answers are compared for an exact match.

    Case-folded (so "Negative" == "negative", also for "ß"/"SS"), NFKC-normalised (full-width
    "ｎｅｇａｔｉｖｅ" and ligatures compare equal to their plain forms), surrounding whitespace,
    quotes, brackets and sentence punctuation stripped, inner whitespace collapsed to single
    spaces. The trailing period matters most: the seed data's labels are written "negative." and a
    model that answers "negative" is right. Only the ends are touched; "3.5" and "don't" keep
    their inner punctuation, and a leading "." before a digit stays (".5" is not "5").

    Idempotent: `normalise(normalise(t)) == normalise(t)`.
    """
    # NFKC again after casefold: casefolding can produce sequences that NFKC would compose.
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    start, end = 0, len(folded)
    while start < end and _strippable(folded[start]):
        if folded[start] == "." and start + 1 < end and folded[start + 1].isdigit():
            break
        start += 1
    while end > start and _strippable(folded[end - 1]):
        end -= 1
    return " ".join(folded[start:end].split())


def _looks_like_label_set(normalised_refs: Sequence[str], max_labels: int, max_words: int) -> bool:
    if not normalised_refs:
        return False
    if any(not ref or len(ref.split()) > max_words for ref in normalised_refs):
        return False
    distinct = len(set(normalised_refs))
    # Fewer distinct values than half the examples: every label recurs on average more than twice,
    # so a handful of short but all-different answers ("Paris", "1969", …) stays free text.
    return distinct <= max_labels and distinct < len(normalised_refs) / 2


def is_label_set(references: Sequence[str], *, max_labels: int = 20, max_words: int = DEFAULT_MAX_LABEL_WORDS) -> bool:
    """Whether the expected completions come from a small set of labels (classification data).

    True when, after `normalise`, every reference is non-empty and at most `max_words` words,
    there are at most `max_labels` distinct values, and fewer distinct values than half the
    number of references. The last condition keeps short factual answers that rarely repeat out
    of the label path, where accuracy would be the only score and give no partial credit. An empty
    list is not a label set.
    """
    return _looks_like_label_set([normalise(r) for r in references], max_labels, max_words)


def _check_pair(predictions: Sequence[str], references: Sequence[str]) -> None:
    # A bare string is a Sequence[str] too, and would be scored character by character.
    if isinstance(predictions, str) or isinstance(references, str):
        raise TypeError("predictions and references must be sequences of strings, not a single string")
    if len(predictions) != len(references):
        raise ValueError(f"predictions and references differ in length ({len(predictions)} != {len(references)})")


def per_example(predictions: Sequence[str], references: Sequence[str]) -> list[bool]:
    """For each example, whether the prediction equals the reference after `normalise`.

    This is the ✓/✗ column of the evaluation table; its mean is `score(...)["exact_match"]`.
    Raises ValueError when the two sequences differ in length.
    """
    _check_pair(predictions, references)
    return [normalise(p) == normalise(r) for p, r in zip(predictions, references, strict=True)]


def _macro_f1(predictions: Sequence[str], references: Sequence[str]) -> tuple[float, int]:
    """Macro-F1 over the labels that occur in `references` (all inputs already normalised).

    The classes are the reference labels only: a prediction outside that set (a hallucinated
    label, a sentence instead of a label) is a false negative for its reference's class and a
    false positive for no class, so it lowers the score without adding a class whose F1 would
    be 0. Every class occurs among the references, so no F1 denominator is ever 0.
    """
    labels = set(references)
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for pred, ref in zip(predictions, references, strict=True):
        if pred == ref:
            tp[ref] += 1
            continue
        fn[ref] += 1
        if pred in labels:
            fp[pred] += 1
    f1s = [2 * tp[c] / (2 * tp[c] + fp[c] + fn[c]) for c in labels]
    return math.fsum(f1s) / len(f1s), len(labels)


@lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer  # imported on first use: loading it pulls in nltk's stemmer and absl

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def _clamp(value: float, high: float) -> float:
    # sacrebleu can return 100.00000000000004 for identical texts; keep the documented range.
    return min(max(float(value), 0.0), high)


def _free_text_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """ROUGE-L F-measure (mean over examples, 0..1), corpus chrF and corpus BLEU (0..100).

    Computed on the raw texts: the metrics tokenize themselves, and sacrebleu expects detokenized
    text. Known limits: rouge-score's tokenizer keeps only ASCII letters and digits, so text in
    non-Latin scripts scores ROUGE-L 0 (chrF is the score to read there).

    BLEU uses sacrebleu's effective order: n-gram orders of which the outputs hold none at all are
    left out, so completions of a word or three that are all right score 100, not standard BLEU's
    0 (no 4-grams to match). Wherever the outputs hold n-grams of every order — any text long
    enough for BLEU to mean something — the score is standard corpus BLEU's, to the digit.
    """
    scorer = _rouge_scorer()
    rouge_l = math.fsum(
        scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references, strict=True)
    ) / len(references)
    preds, refs = list(predictions), [list(references)]
    return {
        "rouge_l": _clamp(rouge_l, 1.0),
        "chrf": _clamp(CHRF().corpus_score(preds, refs).score, 100.0),
        "bleu": _clamp(BLEU(effective_order=True).corpus_score(preds, refs).score, 100.0),
    }


def score(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Scores of generated texts against the expected completions, one pair per example.

    Always: `count` (number of examples) and `exact_match` (share of examples whose prediction
    equals the reference after `normalise`, 0..1). Then, when `is_label_set(references)`:
    `accuracy` (same as exact_match, named as classification readers expect), `macro_f1` (0..1,
    see `_macro_f1`) and `labels` (number of distinct reference labels). Otherwise (free text):
    `rouge_l` (0..1), `chrf` and `bleu` (0..100, sacrebleu's scale). `count` and `labels` are ints.

    Empty inputs give `{"count": 0}`: no score is better than a made-up 0 or 1. Raises
    ValueError when the two sequences differ in length.
    """
    _check_pair(predictions, references)
    count = len(references)
    if count == 0:
        return {"count": 0}
    norm_preds = [normalise(p) for p in predictions]
    norm_refs = [normalise(r) for r in references]
    exact = sum(p == r for p, r in zip(norm_preds, norm_refs, strict=True)) / count
    result: dict[str, float] = {"count": count, "exact_match": exact}
    if _looks_like_label_set(norm_refs, max_labels=20, max_words=DEFAULT_MAX_LABEL_WORDS):
        macro_f1, n_labels = _macro_f1(norm_preds, norm_refs)
        result.update(accuracy=exact, macro_f1=macro_f1, labels=n_labels)
    else:
        result.update(_free_text_scores(predictions, references))
    return result
