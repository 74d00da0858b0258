"""Scoring InfiniteBench predictions with two scorers, ``official`` and ``lenient``.

``official`` reproduces InfiniteBench's ``src/compute_scores.py`` (OpenBMB/InfiniteBench, last
changed in commit 88b3daa, June 2024), quirks included, so that our numbers can be compared with
the published table. It differs from that script in a few places only, each documented where it
happens:

* ``kv_retrieval`` unwraps a list label (today's data stores every answer as a list; the script
  then compares a list with words and scores 0 for everything);
* a string label where the script expects a list of labels (QA, En.Sum, En.Dia, En.MC) counts as
  a one-label list instead of being iterated character by character;
* inputs on which the script crashes (a decimal answer to an integer ``math_find`` question, an
  ill-typed label) score 0 or raise a one-line error;
* En.Sum calls ``rouge-score`` directly, with the settings 🤗 ``evaluate``'s "rouge" metric
  (which the script loads) passes to it.

Math.Calc keeps the script's one model-dependent rule: pass ``model="gpt4"`` to drop the first
number of the reply, as InfiniteBench did for GPT-4's published score.

``lenient`` is the variant LLM×MapReduce published its InfiniteBench numbers with
(thunlp/LLMxMapReduce, ``LLMxMapReduce_V1/eval/infinitebench/process_answer.py`` then
``compute_scores.py``): for En.MC, Code.Debug, En.QA, Zh.QA, En.Dia and En.Sum the answer is the
text after the last ``"Answer:"`` (or ``"答案："``), then passkey and number_string accept the
label as any digit run, En.MC and Code.Debug take the last standalone option letter, and En.Dia
accepts the name as a case-insensitive substring. Where that code does not change a task, the
lenient scorer is the official one (see ``_LENIENT``).

Scores per example are floats in [0, 1]; ``score_predictions`` returns their mean ×100, the unit
of the published tables (GPT-4's passkey "100%" is ``100.0``).
"""

from __future__ import annotations

import functools
import json
import re
import string
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ...errors import MissingExtraError, UsageError

GroundTruth = str | int | float | Sequence[Any]
ScoreFn = Callable[[str, Any], float]

TASKS: tuple[str, ...] = (
    "passkey",
    "number_string",
    "kv_retrieval",
    "longbook_sum_eng",
    "longbook_qa_eng",
    "longbook_choice_eng",
    "longbook_qa_chn",
    "longdialogue_qa_eng",
    "code_debug",
    "code_run",
    "math_find",
    "math_calc",
)
SCORERS: tuple[str, ...] = ("official", "lenient")

# InfiniteBench's Math.Calc rule depends on the model: its GPT-4 prompt made GPT-4 repeat the
# first operand before the running results, so the script drops GPT-4's first number.
GPT4_MODEL_NAME = "gpt4"


# --------------------------------------------------------------------------------------------
# Small text helpers shared by both scorers.
# --------------------------------------------------------------------------------------------

# The characters compute_scores.py turns into spaces before splitting into words (KV, En.Dia,
# En.MC use this set; Code.Run and Code.Debug have their own).
_WORD_SEPARATORS = ("\n", ":", '"', "'", ".", ",", "?", "!", "{", "}")
_CODE_RUN_SEPARATORS = ("\n", ".", "`", "'", '"', ":")
# "Option"/"option" are removed so that "Option B" reads as "B".
_CODE_DEBUG_SEPARATORS = ("\n", "`", "'", '"', "-", "*", "Option", "option")
_CHOICE_SEPARATORS = ("\n", '"', "'", ".", ",", "?", "!", "{", "}")

# normalize_zh_answer's list (it has "》" but not "《", and ends with an ASCII ".").
_ZH_PUNCTUATION = (
    "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》"
    "「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏."
)
_EN_PUNCTUATION = frozenset(string.punctuation)
_ALL_PUNCTUATION = frozenset(string.punctuation + _ZH_PUNCTUATION)

# ASCII digits only, as in the script's re.split("[^0-9]", ...); "\d" would also match e.g. "٣".
_DIGIT_RUN = re.compile(r"[0-9]+")
# math_find's "first int or float"; this one does use \d, as the script does.
_FIRST_NUMBER = re.compile(r"\d+\.\d+|\d+")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _blank_out(text: str, separators: Iterable[str]) -> str:
    """Replaces each separator by a space, in order (order matters for "Option" vs "-")."""
    for sep in separators:
        text = text.replace(sep, " ")
    return text


def _squeeze_spaces(text: str) -> str:
    """The script's ``while "  " in pred: pred = pred.replace("  ", " ")``: runs of spaces -> one."""
    return re.sub(r" {2,}", " ", text)


def _digit_runs(text: str) -> list[str]:
    return _DIGIT_RUN.findall(text)


def _unwrap(label: Any) -> Any:
    """``answer[0]`` for a list label (today's data wraps every answer in a list)."""
    if isinstance(label, (list, tuple)):
        if not label:
            raise UsageError("empty ground_truth list")
        return label[0]
    return label


def _label_list(label: Any) -> list[Any]:
    """A list of acceptable labels; a lone string is one label, not a sequence of characters."""
    if isinstance(label, str):
        return [label]
    if isinstance(label, (list, tuple)):
        return list(label)
    raise UsageError(f"expected a string or a list of strings as ground_truth, got {label!r}")


# --------------------------------------------------------------------------------------------
# official: InfiniteBench src/compute_scores.py
# --------------------------------------------------------------------------------------------


def _first_digit_run(pred: str, label: Any) -> float:
    """Retrieve.PassKey / Retrieve.Number: the first run of digits must equal the label.

    compute_scores.py ``get_score_one_passkey`` / ``first_int_match``: "The key is 123, not 456"
    is right for 123 and wrong for 456; "1,234" reads as 1. The label is compared as it is (a
    string in the data), so an int label never matches, as in the script.
    """
    runs = _digit_runs(pred)
    return float(_unwrap(label) == (runs[0] if runs else ""))


def _kv_whole_token(pred: str, label: Any) -> float:
    """Retrieve.KV: the value must appear as a whole word once punctuation becomes spaces.

    compute_scores.py ``get_score_one_kv_retrieval``, plus the list unwrap the script lacks:
    with today's list labels it would test ``list in words`` and score every answer 0. Hyphens
    are kept, so the UUID has to be intact; a truncated or extended UUID does not match.
    """
    words = _blank_out(pred, _WORD_SEPARATORS).split()
    return float(_unwrap(label) in words)


def _code_run_last_word(pred: str, label: Any) -> float:
    """Code.Run: the last word, read with ``int()``, must equal the integer label.

    compute_scores.py ``get_score_one_code_run``: "The answer is 12." is right for 12, but
    "12 is the answer" is wrong (the last word is "answer"); "-3" reads as -3.
    """
    words = _blank_out(pred.strip(), _CODE_RUN_SEPARATORS).split()
    if not words:
        return 0.0
    try:
        value = int(words[-1])
    except ValueError:
        return 0.0
    return float(_unwrap(label) == value)


def _code_debug_prefix(pred: str, label: Any) -> float:
    """Code.Debug (label ``[function_name, letter]``): prefix rules of compute_scores.py.

    ``get_score_one_code_debug``: right if the reply starts with "B." or "B:"; otherwise, after
    removing quotes, dashes, stars and the word "Option", the text after the *first* of the
    prefixes "answer is:", "is:", "answer:", "correct option is:" (tried in that order; one
    character after the prefix is skipped, assumed to be a space) must start with the letter or
    the function name. Without any prefix the answer is wrong, even a bare "B". The
    "correct option is:" prefix never fires: "option" has been blanked out by then, and "is:"
    comes first anyway.
    """
    fn_name, letter = _code_debug_label(label)
    pred = pred.strip()
    if pred[:2] in (f"{letter}.", f"{letter}:"):
        return 1.0
    pred = _squeeze_spaces(_blank_out(pred, _CODE_DEBUG_SEPARATORS))
    prefixes = ("answer is:", "is:", "answer:", "correct option is:")
    return _after_prefix_starts_with(pred, prefixes, (letter, fn_name)) or 0.0


def _code_debug_label(label: Any) -> tuple[str, str]:
    if not isinstance(label, (list, tuple)) or len(label) < 2:
        raise UsageError(f"code_debug ground_truth must be [function_name, letter], got {label!r}")
    return str(label[0]), str(label[1])


def _math_find_first_number(pred: str, label: Any) -> float:
    """Math.Find: the first number in the reply must equal the label (int or float).

    compute_scores.py ``get_score_one_math_find``: signs are ignored ("-5" reads as 5). For an
    integer label a first number like "3.5" makes the script crash (``int("3.5")``); here it is
    simply wrong.
    """
    label = _unwrap(label)
    if isinstance(label, bool) or not isinstance(label, (int, float)):
        raise UsageError(f"math_find ground_truth must be a number, got {label!r}")
    match = _FIRST_NUMBER.search(pred)
    if match is None:
        return 0.0
    text = match.group(0)
    if isinstance(label, int):
        return float("." not in text and int(text) == label)
    return float(float(text) == label)


def _math_calc_prefix(pred: str, label: Any, drop_first: bool = False) -> float:
    """Math.Calc: the fraction of the expected running values matched before the first mistake.

    compute_scores.py ``get_score_one_math_calc``: every run of digits is a number (so "-5"
    reads as 5, while negative labels exist: only a sign-free reply can match them),
    compared position by position with the label list and stopped at the first difference.
    ``drop_first`` is the script's GPT-4 rule (see ``GPT4_MODEL_NAME``). A label wrapped in a
    list (today's data) is unwrapped.
    """
    if not isinstance(label, (list, tuple)) or not label:
        raise UsageError(f"math_calc ground_truth must be a list of numbers, got {label!r}")
    if isinstance(label[0], (list, tuple)):
        label = label[0]
    numbers = [int(run) for run in _digit_runs(pred)]
    if drop_first:
        numbers = numbers[1:]
    matched = 0
    for expected, got in zip(label, numbers, strict=False):
        if expected != got:
            break
        matched += 1
    return matched / len(label)


def _dialogue_uppercase_token(pred: str, label: Any) -> float:
    """En.Dia: the first label must be one of the reply's words, uppercased.

    compute_scores.py ``get_score_one_longdialogue_qa_eng``: only ``label[0]`` counts (for
    ``["ACE", "ACE ROTHSTEIN"]`` that is "ACE"), and a multi-word label can never match since
    words are single tokens. The label itself is not uppercased (it is in the data).
    """
    words = [word.upper() for word in _blank_out(pred.strip(), _WORD_SEPARATORS).split()]
    return float(_label_list(label)[0] in words)


_CHOICE_PREFIXES = ("answer is:", "answer:", "answer is", "option is")


def _choice_prefix(pred: str, label: Any, prefixes: Sequence[str] = _CHOICE_PREFIXES) -> float:
    """En.MC (label ``[option_text, letter]``): the rules of compute_scores.py, in order.

    ``get_score_one_longbook_choice_eng``:
    1. a reply starting with A-D is judged by that first character alone ("Answer: C" starts
       with "A" and so is read as option A);
    2. a reply equal to the option text or the letter is right;
    3. after the *first* of "answer is:", "answer:", "answer is", "option is" found (in that
       order; one character after it skipped), the text must start with the letter or the text;
    4. otherwise the first word that is a substring of "ABCD" ("A", "BC", ...) decides.
    """
    labels = _label_list(label)
    pred = pred.strip()
    if not pred:
        return 0.0
    if pred[0] in "ABCD":
        return float(pred[0] in labels)
    if pred in labels:
        return 1.0
    pred = _squeeze_spaces(_blank_out(pred, _CHOICE_SEPARATORS))
    verdict = _after_prefix_starts_with(pred, prefixes, labels)
    if verdict is not None:
        return verdict
    return _first_abcd_word(pred, labels)


def _after_prefix_starts_with(pred: str, prefixes: Sequence[str], labels: Sequence[Any]) -> float | None:
    """The text after the first prefix found (prefixes tried in order; one character after it
    skipped) must start with one of the labels; a reply that ends with the prefix is wrong. None
    when no prefix occurs. Step 3 of the En.MC rules, and Code.Debug's prefix rule."""
    for prefix in prefixes:
        idx = pred.find(prefix)
        if idx == -1:
            continue
        after = pred[idx + len(prefix) + 1 :]
        if not after:
            return 0.0
        return float(any(after.startswith(str(s)) for s in labels))
    return None


def _first_abcd_word(pred: str, labels: Sequence[Any]) -> float:
    """Step 4 of the En.MC rules. ``word in "ABCD"`` is a substring test, as in the script."""
    for word in pred.split():
        if word in "ABCD":
            return float(word in labels)
    return 0.0


def _normalize_en(text: str) -> str:
    """SQuAD normalisation: lowercase, drop punctuation, then articles, squeeze whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _EN_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _normalize_zh(text: str) -> str:
    """Chinese normalisation: lowercase, drop ASCII and CJK punctuation, remove all whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _ALL_PUNCTUATION)
    return "".join(text.split())


def _f1(pred_tokens: Sequence[str], label_tokens: Sequence[str]) -> float:
    common = Counter(pred_tokens) & Counter(label_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(label_tokens)
    return 2 * precision * recall / (precision + recall)


def _qa_token_f1(pred: str, label: Any) -> float:
    """En.QA: best word-level F1 over the labels, after SQuAD normalisation (``qa_f1_score``)."""
    pred_tokens = _normalize_en(pred).split()
    return max((_f1(pred_tokens, _normalize_en(str(gt)).split()) for gt in _label_list(label)), default=0.0)


def _qa_char_f1(pred: str, label: Any) -> float:
    """Zh.QA: best character-level F1 over the labels (``qa_f1_score_zh``: one character, one token)."""
    pred_chars = list(_normalize_zh(pred))
    return max((_f1(pred_chars, list(_normalize_zh(str(gt)))) for gt in _label_list(label)), default=0.0)


@functools.lru_cache(maxsize=1)
def _rouge_lsum_scorer() -> Any:
    # Imported on first use, from the bench extra: rouge_score pulls in nltk, absl and numpy, which
    # no other task needs.
    try:
        from rouge_score import rouge_scorer
    except ImportError as exc:
        raise MissingExtraError("rouge-score", "bench", "scoring longbook_sum_eng") from exc
    # What 🤗 evaluate's "rouge" metric builds by default: no stemmer, the default tokenizer
    # (lowercase, [a-z0-9]+ tokens), and for rougeLsum sentences split on "\n" only.
    return rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=False)


def _summary_rouge_lsum(pred: str, label: Any) -> float:
    """En.Sum: rougeLsum F-measure, best over the reference summaries.

    compute_scores.py calls ``evaluate.load("rouge").compute(predictions=[pred],
    references=[label])``; with a list label that is evaluate's multi-reference mode, which
    keeps the reference with the highest F-measure. A reply without newlines is one sentence.
    """
    scorer = _rouge_lsum_scorer()
    return max(scorer.score(str(gt), pred)["rougeLsum"].fmeasure for gt in _label_list(label))


_OFFICIAL: dict[str, ScoreFn] = {
    "passkey": _first_digit_run,
    "number_string": _first_digit_run,
    "kv_retrieval": _kv_whole_token,
    "longbook_sum_eng": _summary_rouge_lsum,
    "longbook_qa_eng": _qa_token_f1,
    "longbook_choice_eng": _choice_prefix,
    "longbook_qa_chn": _qa_char_f1,
    "longdialogue_qa_eng": _dialogue_uppercase_token,
    "code_debug": _code_debug_prefix,
    "code_run": _code_run_last_word,
    "math_find": _math_find_first_number,
    "math_calc": _math_calc_prefix,
}


# --------------------------------------------------------------------------------------------
# lenient: LLM×MapReduce's LLMxMapReduce_V1/eval/infinitebench/{process_answer,compute_scores}.py
# --------------------------------------------------------------------------------------------

# Tasks whose reply process_answer.py cuts at the last "Answer:"; the others keep their reply.
_CHOICE_TASKS = frozenset({"longbook_choice_eng", "code_debug"})
_FREE_TEXT_TASKS = frozenset({"longbook_qa_eng", "longbook_qa_chn", "longdialogue_qa_eng", "longbook_sum_eng"})


def _after_last_answer(pred: str, task: str) -> str:
    """The reply as LLM×MapReduce's ``process_answer.py`` (``task_special_process``) leaves it.

    The markers "Answer:" then "答案：" are tried in turn and the *last* occurrence of the first
    one present is used. One character after it is skipped (assumed a space). En.MC and
    Code.Debug get ``"answer: " + rest`` (so that the prefix rules fire); the free-text tasks get
    the rest, cut before a trailing "置信度分数：" or "Confidence Score:". A reply that ends with
    the marker, and every other task, is left as it is.
    """
    for marker in ("Answer:", "答案："):
        idx = pred.rfind(marker)
        if idx == -1:
            continue
        if len(pred) < idx + len(marker) + 1:
            return pred
        rest = pred[idx + len(marker) + 1 :]
        if task in _CHOICE_TASKS:
            return "answer: " + rest
        if task in _FREE_TEXT_TASKS:
            for confidence in ("置信度分数：", "Confidence Score:"):
                cut = rest.rfind(confidence)
                if cut != -1:
                    rest = rest[:cut]
            return rest
        # Other tasks: the script moves on to the next marker and finally keeps the reply.
    return pred


def _any_digit_run(pred: str, label: Any) -> float:
    """Retrieve.PassKey / Retrieve.Number, lenient: the label may be any run of digits.

    LLM×MapReduce compute_scores.py ``my_find_key``: "not 456 but 123" is right for 123.
    """
    return float(_unwrap(label) in _digit_runs(pred))


def _last_standalone_letter(pred: str, letters: str) -> str | None:
    """The letter the lenient scorer reads: ``\\b[X-Y]\\b(?!.*\\b[X-Y]\\b)``, as in the script.

    ``.`` stops at newlines, so this is the last standalone letter *of the first line that has
    one*: in "A or B?\\nSurely C" it is "B", not "C".
    """
    pattern = rf"\b[{letters}]\b(?!.*\b[{letters}]\b)"
    match = re.search(pattern, pred)
    return match.group(0) if match else None


def _choice_lenient(pred: str, label: Any) -> float:
    """En.MC, lenient: the last standalone A-D letter, else the official rules with "Answer:".

    LLM×MapReduce compute_scores.py ``get_score_one_longbook_choice_eng``: a matching letter
    wins at once; a non-matching one falls through to the official steps, where "Answer:" is
    tried before the official prefixes.
    """
    if _last_standalone_letter(pred.strip(), "A-D") in _label_list(label):
        return 1.0
    return _choice_prefix(pred, label, ("Answer:", *_CHOICE_PREFIXES))


def _code_debug_lenient(pred: str, label: Any) -> float:
    """Code.Debug, lenient: the last standalone A-J letter, else prefix rules.

    LLM×MapReduce compute_scores.py ``get_score_one_code_debug``: after the letter test, a reply
    that starts with the letter or the function name (after cleaning) is right, then the text
    after the first of "answer is:", "Answer:", "is:", "answer:" decides. Unlike the official
    rules there is no "correct option is:" prefix.
    """
    fn_name, letter = _code_debug_label(label)
    pred = pred.strip()
    if _last_standalone_letter(pred, "A-J") == letter:
        return 1.0
    pred = _squeeze_spaces(_blank_out(pred, _CODE_DEBUG_SEPARATORS))
    if pred.startswith(letter) or pred.startswith(fn_name):
        return 1.0
    return _after_prefix_starts_with(pred, ("answer is:", "Answer:", "is:", "answer:"), (letter, fn_name)) or 0.0


def _dialogue_substring(pred: str, label: Any) -> float:
    """En.Dia, lenient: any label, uppercased, inside the uppercased reply (a substring test).

    LLM×MapReduce compute_scores.py ``get_score_one_longdialogue_qa_eng``: "Ace Rothstein" and
    "RACE" both contain "ACE".
    """
    reply = pred.strip().upper()
    return float(any(str(name).upper() in reply for name in _label_list(label)))


# The LLM×MapReduce code changes passkey, number_string, En.MC, Code.Debug and En.Dia. For
# kv_retrieval it only adds the list unwrap our official scorer already has; for En.Sum, En.QA,
# Zh.QA, Code.Run, Math.Find and Math.Calc its functions are the official ones. Those tasks fall
# back to official (after the "Answer:" cut for the free-text ones).
_LENIENT: dict[str, ScoreFn] = {
    **_OFFICIAL,
    "passkey": _any_digit_run,
    "number_string": _any_digit_run,
    "longbook_choice_eng": _choice_lenient,
    "code_debug": _code_debug_lenient,
    "longdialogue_qa_eng": _dialogue_substring,
}

_REGISTRY: dict[str, dict[str, ScoreFn]] = {"official": _OFFICIAL, "lenient": _LENIENT}

# What a task's scorers load from an extra (both scorers of these tasks use it).
_SCORER_PACKAGES: dict[str, Callable[[], object]] = {"longbook_sum_eng": _rouge_lsum_scorer}


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def check_task(task: str) -> str:
    """Returns ``task`` if it is an InfiniteBench task, else raises a UsageError naming them all."""
    if task not in TASKS:
        raise UsageError(f"unknown InfiniteBench task {task!r}; valid tasks: {', '.join(TASKS)}")
    return task


def check_scorer_packages(task: str) -> None:
    """Raises ``MissingExtraError`` if scoring ``task`` needs a package that is not installed: a
    run checks before it makes predictions it could not score."""
    load = _SCORER_PACKAGES.get(task)
    if load is not None:
        load()


def check_scorer(scorer: str) -> str:
    """Returns ``scorer`` if it exists, else raises a UsageError naming the scorers."""
    if scorer not in _REGISTRY:
        raise UsageError(f"unknown scorer {scorer!r}; valid scorers: {', '.join(SCORERS)}")
    return scorer


def score_example(
    task: str,
    prediction: str,
    ground_truth: GroundTruth,
    scorer: str = "official",
    *,
    model: str | None = None,
) -> float:
    """The score of one prediction, in [0, 1].

    ``ground_truth`` is the ``ground_truth`` field of the official predictions format (a list
    for most tasks, ``[text, letter]`` for multiple choice, a number for Code.Run and
    Math.Find). ``model`` matters only to the official Math.Calc rule, which drops the first
    number of ``"gpt4"``'s replies as InfiniteBench does.
    """
    check_task(task)
    check_scorer(scorer)
    if not isinstance(prediction, str):
        raise UsageError(f"prediction must be a string, got {type(prediction).__name__}")
    if scorer == "lenient":
        prediction = _after_last_answer(prediction, task)
    if task == "math_calc":
        # The only model-dependent rule in either script; LLM×MapReduce never passes "gpt4".
        return _math_calc_prefix(prediction, ground_truth, drop_first=model == GPT4_MODEL_NAME)
    return float(_REGISTRY[scorer][task](prediction, ground_truth))


def score_predictions(
    task: str,
    rows: Iterable[Mapping[str, Any]],
    scorer: str = "official",
    *,
    model: str | None = None,
) -> float:
    """The mean score of ``rows`` (dicts with ``prediction`` and ``ground_truth``), ×100.

    ×100 is the unit of InfiniteBench's published table (``89.0`` for GPT-4's 89.00% on KV).
    """
    check_task(task)
    check_scorer(scorer)
    scores = [score_example(task, row["prediction"], row["ground_truth"], scorer, model=model) for row in rows]
    if not scores:
        raise UsageError(f"no predictions to score for {task}")
    return 100.0 * sum(scores) / len(scores)


def load_predictions(path: str | Path) -> list[dict[str, Any]]:
    """Reads a predictions file in the official JSONL format, one ``{"id", "prediction",
    "ground_truth"}`` object per line.

    Like InfiniteBench's ``compute_scores.py`` it skips blank lines and also accepts ``pred``
    for ``prediction`` and ``label`` for ``ground_truth``; other keys (the released Kimi-Chat
    En.Dia file has ``truncated``) are ignored. ``id`` may be missing (it is then None). A null
    prediction (an example a run could not answer) is scored as an empty reply.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")  # not splitlines: U+2028 may be in a prediction
    except OSError as exc:
        raise UsageError(f"cannot read predictions file {path}: {exc.strerror or exc}") from exc
    rows = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        rows.append(_prediction_row(line, f"{path}:{lineno}"))
    return rows


def _prediction_row(line: str, where: str) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where}: not valid JSON ({exc.msg})") from exc
    if not isinstance(obj, dict):
        raise UsageError(f"{where}: expected a JSON object")
    prediction = _first_key(obj, ("prediction", "pred"), where)
    ground_truth = _first_key(obj, ("ground_truth", "label"), where)
    if prediction is None:
        prediction = ""
    if not isinstance(prediction, str):
        raise UsageError(f"{where}: prediction must be a string, got {type(prediction).__name__}")
    return {"id": obj.get("id"), "prediction": prediction, "ground_truth": ground_truth}


def _first_key(obj: Mapping[str, Any], keys: Sequence[str], where: str) -> Any:
    for key in keys:
        if key in obj:
            return obj[key]
    raise UsageError(f"{where}: missing {' or '.join(repr(k) for k in keys)}")


def score_file(task: str, path: str | Path, scorer: str = "official", *, model: str | None = None) -> dict[str, Any]:
    """Scores a predictions file: ``{"task", "scorer", "n", "score"}`` with ``score`` ×100."""
    check_task(task)
    check_scorer(scorer)
    rows = load_predictions(path)
    score = score_predictions(task, rows, scorer, model=model)
    return {"task": task, "scorer": scorer, "n": len(rows), "score": score}
