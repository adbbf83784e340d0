"""num_tokens_bert (BERT base uncased WordPiece) and num_tokens_gpt (GPT-2 byte-level BPE) with HF `tokenizers`.

No installed package ships BERT's vocab.txt or GPT-2's vocab.json/merges.txt as such (transformers
downloads them; open_clip ships CLIP's BPE, which is not GPT-2's). blingfire ships both vocabularies as
id -> token tables (``bert_base_tok.i2w``: 30,522 WordPiece entries; ``gpt2.i2w``: 50,257 byte strings in id
order). They are turned back into the original files' content here:
- BERT: an entry that starts with a space is a word start, any other entry is a ``##`` continuation;
  blingfire stores the special tokens lower-cased, so [UNK] [CLS] [SEP] [MASK] get their case back.
- GPT-2: ids are BPE ranks (tiktoken's gpt2 encoding is built the same way), so the merge that makes
  token r is found by running BPE on its bytes with the ranks below r, as tiktoken-to-HF converters do.
Counts are of the text's tokens only, without [CLS]/[SEP] (what ``len(BertTokenizer.tokenize(text))`` and
``len(GPT2TokenizerFast(text).input_ids)`` give). Your own vocab files can be configured instead.
"""

from __future__ import annotations

import functools
import os
import struct
from dataclasses import dataclass

import numpy as np

from curation.storage import StorageOptions
from models import weights
from models.base import ImageTextBatch, ModelError, ViewSpec, file_field

BERT_SIZE = 30_522
GPT2_SIZE = 50_257
BERT_SPECIALS = {100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]", 0: "[PAD]"}
GPT2_EOT = "<|endoftext|>"
_I2W_COUNT_AT = 24 * 4  # int32 index 24 of blingfire's i2w header holds the entry count; offsets follow


@dataclass(frozen=True)
class TokensSpec:
    """[tokens] of MODELS.toml; unset vocab files: the vocabularies blingfire ships."""

    enabled: bool = True
    bert_vocab: str | None = file_field(None)  # a BERT vocab.txt
    gpt2_vocab: str | None = file_field(None)  # GPT-2 vocab.json, with gpt2_merges
    gpt2_merges: str | None = file_field(None)  # GPT-2 merges.txt


def blingfire_file(name: str) -> str:
    try:
        import blingfire
    except ImportError as e:
        raise ModelError("the default token vocabularies come from the blingfire package: pip install blingfire") from e
    return os.path.join(os.path.dirname(blingfire.__file__), name)


def read_i2w(path: str, expected: int) -> list[bytes]:
    """Entries of a blingfire id -> word table: a count, count+1 int32 offsets, then the bytes."""
    with open(path, "rb") as f:
        data = f.read()
    (count,) = struct.unpack_from("<i", data, _I2W_COUNT_AT)
    if count != expected:
        raise ModelError(f"{path}: {count} entries, expected {expected} (unknown blingfire table layout)")
    offsets = struct.unpack_from(f"<{count + 1}i", data, _I2W_COUNT_AT + 4)
    base = _I2W_COUNT_AT + 4 * (count + 2)
    if base + offsets[-1] > len(data) or any(b < a for a, b in zip(offsets, offsets[1:])):
        raise ModelError(f"{path}: offsets do not fit the file (unknown blingfire table layout)")
    return [data[base + a : base + b] for a, b in zip(offsets, offsets[1:])]


@functools.lru_cache(maxsize=1)
def bert_uncased_vocab() -> tuple[str, ...]:
    entries = read_i2w(blingfire_file("bert_base_tok.i2w"), BERT_SIZE)
    vocab = []
    for i, raw in enumerate(entries):
        text = raw.decode("utf-8")
        token = text[1:] if text.startswith(" ") else "##" + text
        vocab.append(BERT_SPECIALS.get(i, token))
    if len(set(vocab)) != len(vocab):
        raise ModelError("bert_base_tok.i2w gives duplicate tokens: unknown blingfire table layout")
    return tuple(vocab)


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _bpe_parts(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    parts = [bytes([b]) for b in token]
    while len(parts) > 1:
        best, best_rank = -1, max_rank
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < best_rank:
                best, best_rank = i, rank
        if best < 0:
            break
        parts[best : best + 2] = [parts[best] + parts[best + 1]]
    return parts


@functools.lru_cache(maxsize=1)
def gpt2_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    entries = read_i2w(blingfire_file("gpt2.i2w"), GPT2_SIZE)
    # ids 0..255 are the single bytes in bytes_to_unicode's order; blingfire stores byte 0 as a space
    byte_order = [bytes([b]) for b in bytes_to_unicode()]
    wrong = [i for i, (e, b) in enumerate(zip(entries, byte_order)) if e != b and b != b"\x00"]
    if wrong or entries[-1].decode() != GPT2_EOT:
        raise ModelError("gpt2.i2w does not look like GPT-2's table (unknown blingfire layout)")
    entries[:256] = byte_order
    ranks = {tok: i for i, tok in enumerate(entries[:-1])}
    b2u = bytes_to_unicode()
    show = lambda b: "".join(b2u[x] for x in b)  # noqa: E731
    merges = []
    for rank, tok in enumerate(entries[256:-1], start=256):
        parts = _bpe_parts(ranks, tok, rank)
        if len(parts) != 2:
            raise ModelError(f"gpt2.i2w: token {rank} is not one merge of lower ranks")
        merges.append((show(parts[0]), show(parts[1])))
    vocab = {show(tok): i for i, tok in enumerate(entries[:-1])}
    vocab[GPT2_EOT] = GPT2_SIZE - 1
    return vocab, merges


def bert_tokenizer(spec: TokensSpec, options: StorageOptions | None = None):
    from tokenizers import BertWordPieceTokenizer

    if spec.bert_vocab:
        vocab = weights.local_path("tokens.bert_vocab", spec.bert_vocab, options)
    else:
        vocab = {tok: i for i, tok in enumerate(bert_uncased_vocab())}
    # BertTokenizer's defaults for bert-base-uncased: lower-case, strip accents, split CJK, clean text
    return BertWordPieceTokenizer(vocab, lowercase=True, strip_accents=None, handle_chinese_chars=True, clean_text=True)


def gpt2_tokenizer(spec: TokensSpec, options: StorageOptions | None = None):
    from tokenizers import ByteLevelBPETokenizer

    if spec.gpt2_vocab or spec.gpt2_merges:
        if not (spec.gpt2_vocab and spec.gpt2_merges):
            raise ModelError("[tokens]: give both gpt2_vocab and gpt2_merges, or neither")
        vocab = weights.local_path("tokens.gpt2_vocab", spec.gpt2_vocab, options)
        merges = weights.local_path("tokens.gpt2_merges", spec.gpt2_merges, options)
        tok = ByteLevelBPETokenizer(vocab, merges, add_prefix_space=False)
    else:
        vocab, merges = gpt2_vocab_and_merges()
        tok = ByteLevelBPETokenizer(vocab, merges, add_prefix_space=False)
    tok.add_special_tokens([GPT2_EOT])
    return tok


def count_tokens(tokenizer, texts: list[str]) -> np.ndarray:
    encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
    return np.array([len(e.ids) for e in encodings], np.int32)


class TokenCounter:
    columns = ("num_tokens_bert", "num_tokens_gpt")
    views: tuple[ViewSpec, ...] = ()
    provides: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()

    def __init__(self, name: str, spec: TokensSpec, options: StorageOptions | None = None):
        self.name = name
        self.spec = spec
        self.options = options
        self.bert = None
        self.gpt2 = None

    def describe(self) -> str:
        bert = self.spec.bert_vocab or "BERT base uncased vocab shipped by blingfire"
        gpt = self.spec.gpt2_vocab or "GPT-2 vocab shipped by blingfire"
        return f"tokenizers WordPiece ({bert}) and byte-level BPE ({gpt})"

    def load(self, device: str) -> None:
        self.bert = bert_tokenizer(self.spec, self.options)
        self.gpt2 = gpt2_tokenizer(self.spec, self.options)

    def score(self, batch: ImageTextBatch) -> dict[str, np.ndarray]:
        return {"num_tokens_bert": count_tokens(self.bert, batch.texts), "num_tokens_gpt": count_tokens(self.gpt2, batch.texts)}


def export_vocab_files(out_dir: str) -> dict[str, str]:
    """Write the derived vocabularies as the files transformers reads (vocab.txt; vocab.json + merges.txt)."""
    import json
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.txt").write_text("\n".join(bert_uncased_vocab()) + "\n", encoding="utf-8")
    vocab, merges = gpt2_vocab_and_merges()
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    return {"bert_vocab": str(out / "vocab.txt"), "gpt2_vocab": str(out / "vocab.json"), "gpt2_merges": str(out / "merges.txt")}
