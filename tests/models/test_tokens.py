"""Token counts: the BERT/GPT-2 vocabularies recovered from blingfire's tables are the real ones."""

from __future__ import annotations

import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from models.tokens import (
    GPT2_EOT,
    TokensSpec,
    bert_tokenizer,
    bert_uncased_vocab,
    count_tokens,
    export_vocab_files,
    gpt2_tokenizer,
    gpt2_vocab_and_merges,
)
from tests.conftest import shared


@pytest.fixture(scope="module")
def captions() -> list[str]:
    table = pq.read_table(shared("captions", "laion_test_10000.parquet"), columns=["TEXT"])
    return [t for t in table.column("TEXT").to_pylist() if t][:3000]


@pytest.fixture(scope="module")
def tokenizers_pair():
    return bert_tokenizer(TokensSpec()), gpt2_tokenizer(TokensSpec())


def test_bert_vocab_has_the_known_ids_of_bert_base_uncased():
    vocab = bert_uncased_vocab()
    assert len(vocab) == 30522
    assert vocab[0] == "[PAD]" and vocab[100:104] == ("[UNK]", "[CLS]", "[SEP]", "[MASK]")
    assert vocab[1996] == "the" and vocab[7592] == "hello" and vocab[2088] == "world"
    assert vocab.index("##s") == 2015


def test_gpt2_vocab_and_merges_give_the_known_gpt2_ids(tokenizers_pair):
    vocab, merges = gpt2_vocab_and_merges()
    assert len(vocab) == 50257 and len(merges) == 50000 and vocab[GPT2_EOT] == 50256
    assert merges[0] == ("Ġ", "t")
    _, gpt2 = tokenizers_pair
    assert gpt2.encode("Hello world").ids == [15496, 995]
    assert gpt2.encode("a\x00b").ids == [64, 188, 65]  # byte 0, stored as a space by blingfire, is restored


def test_counts_exclude_special_tokens(tokenizers_pair):
    bert, gpt2 = tokenizers_pair
    texts = ["Hello world, a photograph of unaffable dogs!", "", "naïve café"]
    assert count_tokens(bert, texts).tolist() == [11, 0, 2]  # accents stripped: naive, cafe
    assert count_tokens(gpt2, texts).tolist() == [10, 0, 3]


def _normalised(texts: list[str]) -> list[str]:
    return [" ".join(t.split()) for t in texts]  # blingfire collapses runs of whitespace, GPT-2 does not


def test_ids_agree_with_blingfires_own_tokenizers_on_real_captions(captions, tokenizers_pair):
    """An independent implementation with the same vocabularies: near-total agreement means the
    recovered vocab and merges are right (the rest are blingfire's own normalisation choices)."""
    import blingfire

    folder = os.path.dirname(blingfire.__file__)
    bert, gpt2 = tokenizers_pair
    hb = blingfire.load_model(os.path.join(folder, "bert_base_tok.bin"))
    hg = blingfire.load_model(os.path.join(folder, "gpt2.bin"))
    blingfire.change_settings_dummy_prefix(hg, False)
    texts = _normalised(captions)
    same_bert = np.mean([list(blingfire.text_to_ids(hb, t, 4096, 100, True)) == bert.encode(t, add_special_tokens=False).ids for t in texts])
    same_gpt2 = np.mean([list(blingfire.text_to_ids(hg, t, 4096, 0, True)) == gpt2.encode(t).ids for t in texts])
    assert same_bert > 0.995 and same_gpt2 > 0.99, (same_bert, same_gpt2)


def test_counts_equal_transformers_tokenizers_when_installed(captions, tokenizers_pair, tmp_path):
    transformers = pytest.importorskip("transformers")  # not a dependency: verified by hand, see README
    files = export_vocab_files(str(tmp_path))
    bert_ref = transformers.BertTokenizer(files["bert_vocab"])
    gpt2_ref = transformers.GPT2TokenizerFast(files["gpt2_vocab"], files["gpt2_merges"])
    bert, gpt2 = tokenizers_pair
    assert count_tokens(bert, captions).tolist() == [len(bert_ref.tokenize(t)) for t in captions]
    assert count_tokens(gpt2, captions).tolist() == [len(gpt2_ref(t)["input_ids"]) for t in captions]


def test_configured_vocab_files_give_the_same_counts(captions, tokenizers_pair, tmp_path):
    files = export_vocab_files(str(tmp_path))
    spec = TokensSpec(**files)
    bert, gpt2 = tokenizers_pair
    assert count_tokens(bert_tokenizer(spec), captions[:500]).tolist() == count_tokens(bert, captions[:500]).tolist()
    assert count_tokens(gpt2_tokenizer(spec), captions[:500]).tolist() == count_tokens(gpt2, captions[:500]).tolist()
