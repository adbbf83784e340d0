"""The one list of rejection causes. Every rejected row carries one of these values."""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

from schemas.tables import DETAIL, REASON, UID


class Reason(StrEnum):
    # extract: file level (one rejected row per failed file; the file name is in the detail)
    UNREADABLE_FILE = "unreadable_file"  # cannot be opened or read (missing, permission, object store error)
    CORRUPT_FILE = "corrupt_file"  # the WARC/gzip stream breaks mid-file; records before it are kept
    NO_CRAWL_RECORDS = "no_crawl_records"  # valid framing but no WAT metadata or WARC response records (e.g. WET)
    # extract: record level (one rejected row per bad record)
    TRUNCATED_RECORD = "truncated_record"  # payload shorter than its Content-Length
    INVALID_JSON = "invalid_json"  # a WAT metadata record whose JSON does not parse
    MALFORMED_RECORD = "malformed_record"  # JSON parses but lacks the envelope a WAT record must have
    UNPARSABLE_HTML = "unparsable_html"  # a WARC response the HTML parser rejects
    # extract: link level (one rejected row per image link)
    EMPTY_ALT = "empty_alt"  # no alt attribute, or only whitespace
    ALT_TOO_LONG = "alt_too_long"
    URL_TOO_LONG = "url_too_long"
    INVALID_URL = "invalid_url"  # cannot be resolved or has no host
    UNSUPPORTED_SCHEME = "unsupported_scheme"  # javascript:, data:, file:, ftp:, ...
    INVALID_ENCODING = "invalid_encoding"  # alt or URL carries bytes that are not valid UTF-8
    DUPLICATE_UID = "duplicate_uid"  # same (alt, url) seen before; detail = where the kept copy came from
    # filter-text
    EMPTY_TEXT = "empty_text"
    NOT_ENGLISH = "not_english"
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    TOO_FEW_WORDS = "too_few_words"
    TOO_MANY_WORDS = "too_many_words"
    NO_NOUN = "no_noun"
    NSFW_TEXT = "nsfw_text"
    FREQUENT_TEXT = "frequent_text"
    # download and image filters
    FAILED_TO_DOWNLOAD = "failed_to_download"
    BLOCKED_ADDRESS = "blocked_address"
    OPTED_OUT = "opted_out"
    NOT_DECODABLE = "not_decodable"
    DECOMPRESSION_BOMB = "decompression_bomb"
    UNSUPPORTED_IMAGE = "unsupported_image"
    TOO_SMALL_BYTES = "too_small_bytes"
    TOO_LARGE_BYTES = "too_large_bytes"
    TOO_SMALL_SIDE = "too_small_side"
    ASPECT_RATIO = "aspect_ratio"
    NSFW_IMAGE = "nsfw_image"
    BLANK_IMAGE = "blank_image"
    BLOCKLISTED_URL = "blocklisted_url"  # the URL's hash is on a safety list; detail = the list and its kind
    BLOCKLISTED_IMAGE = "blocklisted_image"  # the body's hash (or PDQ) is on a safety list; detail = the list and its kind
    # dedup
    DUPLICATE_PHASH = "duplicate_phash"
    NEAR_DUPLICATE = "near_duplicate"
    EVAL_SET_MATCH = "eval_set_match"
    DUPLICATE_PAIR = "duplicate_pair"
    # semdedup
    SEMANTIC_DUPLICATE = "semantic_duplicate"  # CLIP image embedding within 1 - eps of a kept row's; detail = kept uid, similarity
    # balance (MetaCLIP metadata balancing); detail = the row's entries with the fewest matches
    NO_METADATA_MATCH = "no_metadata_match"  # the caption matches no metadata entry
    BALANCED_OUT = "balanced_out"  # matched, but none of its entries sampled it (each keeps t of its count)

    @classmethod
    def values(cls) -> list[str]:
        return [r.value for r in cls]


class Rejection(NamedTuple):
    """The one verdict of every rule that drops a row (text, image, fetch, dedup): why, and the detail
    (the offending value, the error message, the uid kept instead). A rule returns None to keep."""

    reason: Reason
    detail: str | None = None

    def row(self, uid: str) -> dict:
        """The rejected row of ``uid`` (curation.stage.rejected_table adds the stage)."""
        return {UID: uid, REASON: self.reason, DETAIL: self.detail}
