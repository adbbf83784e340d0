"""The hostile-input corpus: writes its crawl files from cases.toml, deterministically.

    python -m tests.data.hostile.build        # (re)writes the committed files next to this script

Files are Common Crawl's framing, written by curation/sample/crawl_files.py's record builders (one gzip member per
record, WARC/1.0 headers, exact Content-Length and digests, a WAT record per WARC record): each case
is one page (``Page``) whose records are then broken the way the case says (its ``kind``). The pages of
cases with ``file = "server"`` link to the loopback image server of the test, whose port is only
known at run time: :func:`write_server_file` writes them then, with the same code.

The images and server behaviours themselves are tests/http_server.py's (``generated_cases``, /status/N,
/slow, /redirect, /retry-after, /reset, ...); cases.toml names them by path.
"""

from __future__ import annotations

import gzip
import json
import logging
import tomllib
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from curation.sample.crawl_files import (
    Page,
    Record,
    _Generator,
    _sha1,
    _warc_records,
    _warcinfo,
    _wat_records,
)

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
CASES = HERE / "cases.toml"
SERVER_FILE = "hostile-server-pages.warc.wat.gz"  # written by the test, not committed
SEED = 9
PLACEHOLDER = "XXBADXX"  # where a bad-bytes or lone-surrogate alt gets its broken bytes
LONG_PATH = "a" * 5000
WAT_KINDS = {"invalid-json", "no-envelope", "links-not-a-list", "bad-bytes-alt", "lone-surrogate-alt"}
MEMBER_KINDS = {"truncated", "corrupt-member"}
WARC_KINDS = {"cl-not-a-number", "cl-missing", "cl-overrun", "latin1-in-utf8", "undeclared-cp1252"}
FILE_KINDS = {"empty-file", "not-a-crawl-file", "wet-file"}
# kinds whose rejection detail names the broken record (its WARC-Record-ID, see record_id)
RECORD_KINDS = {"invalid-json", "no-envelope", "links-not-a-list", "truncated", "cl-not-a-number", "cl-missing"}
# kinds that end as an extract rejection naming their file (no link of theirs comes out)
BROKEN_KINDS = RECORD_KINDS | FILE_KINDS | {"corrupt-member", "cl-overrun"}


def load_cases(path: Path = CASES) -> list[dict]:
    with open(path, "rb") as f:
        return tomllib.load(f)["case"]


def record_id(case_id: str) -> str:
    """The WARC-Record-ID of a case's broken record (a rejection detail names it)."""
    return f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'hostile:' + case_id)}>"


def fill(template: str, host: str = "") -> str:
    """A cases.toml template with {host} (http://127.0.0.1:PORT), {port} and {long} filled in."""
    port = str(urlsplit(host).port) if host else ""
    return template.replace("{host}", host).replace("{port}", port).replace("{long}", LONG_PATH)


@dataclass(frozen=True)
class Link:
    src: str  # as written in the page
    alt: str | None  # as written in the page (None: no alt attribute)
    seen_alt: str  # as the extract stage reads it back
    page_url: str
    base: str | None


def default_alt(case_id: str) -> str:
    return f"A photo of a wooden boat for the {case_id.replace('-', ' ')} hostile test case"


def _seen(alt: str, kind: str) -> str:
    """The alt the extract stage reads from what the case's kind does to the bytes."""
    if kind == "bad-bytes-alt":
        return alt.replace(PLACEHOLDER, "\ufffd\ufffd")  # FF FE, decoded with replacement characters
    if kind == "lone-surrogate-alt":
        return alt.replace(PLACEHOLDER, "\ud800")
    return alt  # latin1-in-utf8 too: the HTML decoder falls back to cp1252 where UTF-8 fails


def case_links(case: dict, host: str = "") -> list[Link]:
    """The image links of a case's page (empty for whole-file cases)."""
    kind = case.get("kind", "link")
    if kind in FILE_KINDS:
        return []
    page = fill(case.get("page", f"http://www.example.com/hostile/{case['id']}.html"), host)
    alt = case.get("alt", default_alt(case["id"])).replace("{bad}", PLACEHOLDER) * case.get("alt_repeat", 1)
    src = fill(case["src"], host)
    if kind == "links":
        return [Link(src.replace("{i}", str(i)), alt.replace("{i}", str(i)), alt.replace("{i}", str(i)), page,
                     case.get("base")) for i in range(case["links"])]
    if kind == "missing-alt":
        return [Link(src, None, "", page, case.get("base"))]
    link = Link(src, alt, _seen(alt, kind), page, case.get("base"))
    return [link, link] if kind == "duplicate-link" else [link]


def case_page(case: dict, host: str = "") -> Page:
    links = case_links(case, host)
    title = f"{case['description'].capitalize()} | Hostile corpus"
    return Page(links[0].page_url, title, "en", "utf-8", links[0].base, [("img", k.src, k.alt) for k in links])


# --- breaking records ------------------------------------------------------------------------------


def _rebuilt(rec: Record, block: bytes | None = None, **headers: str | None) -> Record:
    """``rec`` with another block (Content-Length and digests follow it) and/or headers replaced
    (``Content_Length=None`` drops the header; underscores stand for dashes)."""
    block = rec.block if block is None else block
    payload = block.split(b"\r\n\r\n", 1)[-1] if block.startswith(b"HTTP/") else block
    computed = {"Content-Length": str(len(block)), "WARC-Block-Digest": _sha1(block), "WARC-Payload-Digest": _sha1(payload)}
    given = {k.replace("_", "-"): v for k, v in headers.items()}
    out = []
    for name, value in rec.headers:
        value = given.get(name, computed.get(name, value))
        if value is not None:
            out.append((name, value))
    return Record(out, block)


def _http_body(block: bytes, body: bytes, content_type: str | None = None) -> bytes:
    """An HTTP response ``block`` with another body (its Content-Length header follows) and Content-Type."""
    head, _ = block.split(b"\r\n\r\n", 1)
    lines = []
    for line in head.split(b"\r\n"):
        name = line.split(b":", 1)[0].lower()
        if name == b"content-length":
            line = b"Content-Length: " + str(len(body)).encode()
        elif name == b"content-type" and content_type:
            line = b"Content-Type: " + content_type.encode()
        lines.append(line)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _break_wat(rec: Record, kind: str, case_id: str) -> Record:
    block = rec.block
    if kind == "invalid-json":
        block = block[: len(block) // 2]
    elif kind == "no-envelope":
        block = json.dumps({"Container": json.loads(block)["Container"]}).encode()
    elif kind == "links-not-a-list":
        doc = json.loads(block)
        meta = doc["Envelope"]["Payload-Metadata"]["HTTP-Response-Metadata"]["HTML-Metadata"]
        meta["Links"] = {str(i): link for i, link in enumerate(meta["Links"])}
        block = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    elif kind == "bad-bytes-alt":
        block = block.replace(PLACEHOLDER.encode(), b"\xff\xfe")
    elif kind == "lone-surrogate-alt":
        block = block.replace(PLACEHOLDER.encode(), b"\\ud800")
    return _rebuilt(rec, block, WARC_Record_ID=record_id(case_id))


def _break_warc(rec: Record, kind: str, case_id: str) -> Record:
    rec = _rebuilt(rec, WARC_Record_ID=record_id(case_id))
    if kind == "cl-not-a-number":
        return _rebuilt(rec, Content_Length="12ab")
    if kind == "cl-missing":
        return _rebuilt(rec, Content_Length=None)
    if kind == "cl-overrun":
        return _rebuilt(rec, Content_Length=str(len(rec.block) + 80))
    html = rec.block.split(b"\r\n\r\n", 1)[1].decode("utf-8")
    if kind == "latin1-in-utf8":  # the page and its HTTP header say UTF-8
        return _rebuilt(rec, _http_body(rec.block, html.encode("latin-1")))
    # undeclared-cp1252: no charset in the HTTP header nor in the page
    body = html.replace('<meta charset="utf-8">\n', "").encode("cp1252")
    return _rebuilt(rec, _http_body(rec.block, body, "text/html"))


def _is_response_of(rec: Record, page: Page, wat: bool) -> bool:
    if rec.get("WARC-Target-URI") != page.url:
        return False
    return b'"HTML-Metadata"' in rec.block if wat else rec.get("WARC-Type") == "response"


def _corrupt(member: bytes) -> bytes:
    """Garbage in the middle of a gzip member's deflate data."""
    data = bytearray(member)
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(range(64))
    return bytes(data)


# --- files ----------------------------------------------------------------------------------------


def _wet_file(gen: _Generator, name: str) -> bytes:
    info = _warcinfo(gen, name, [("isPartOf", "CC-MAIN-hostile"), ("publisher", "Common Crawl")], gen.tick(), wat=False)
    records = [info]
    for i in range(3):
        text = f"Plain text of page {i}: a wooden boat in the harbour, no HTML and no image links.\n".encode()
        records.append(Record.build([("WARC-Type", "conversion"), ("WARC-Target-URI", f"http://www.example.com/text/{i}.html"),
                                     ("WARC-Date", "2024-05-18T01:00:00Z"), ("WARC-Record-ID", gen.uuid()),
                                     ("WARC-Refers-To", gen.uuid()), ("Content-Type", "text/plain")], text, (text,)))
    return b"".join(r.member() for r in records)


def crawl_file(name: str, cases: list[dict], host: str = "") -> bytes:
    """The bytes of crawl file ``name`` holding ``cases`` (all of whose ``file`` is that file)."""
    gen = _Generator(SEED, host or "http://192.0.2.1")
    kinds = {c.get("kind", "link") for c in cases}
    if kinds & FILE_KINDS:
        kind = kinds.pop()
        return {"empty-file": lambda: b"", "wet-file": lambda: _wet_file(gen, name),
                "not-a-crawl-file": lambda: gzip.compress(b"uid,url,alt\n1,http://192.0.2.10/a.jpg,a photo\n", mtime=0)}[kind]()
    cases = sorted(cases, key=lambda c: c.get("kind") == "truncated")  # the cut record ends its file
    pages = [case_page(c, host) for c in cases]
    wat = name.endswith(".warc.wat.gz")
    source = name.replace(".warc.wat.gz", ".warc.gz") if wat else name
    records = _warc_records(gen, pages, source)
    if wat:
        records = _wat_records(gen, records, pages, source, name)
    broken: dict[int, str] = {}  # record index -> member-level kind
    for case, page in zip(cases, pages):
        kind = case.get("kind", "link")
        i = next(i for i, r in enumerate(records) if _is_response_of(r, page, wat))
        if kind in WAT_KINDS | MEMBER_KINDS:
            records[i] = _break_wat(records[i], kind, case["id"])
        elif kind in WARC_KINDS:
            records[i] = _break_warc(records[i], kind, case["id"])
        if kind in MEMBER_KINDS:
            broken[i] = kind
    members = [r.member() for r in records]
    for i, kind in broken.items():
        if kind == "corrupt-member":
            members[i] = _corrupt(members[i])
        else:  # truncated: the file ends in the middle of this record
            members = members[:i] + [members[i][: len(members[i]) // 2]]
    return b"".join(members)


def files_of(cases: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for case in cases:
        out.setdefault(case["file"], []).append(case)
    return out


def write_static(out_dir: Path = HERE, cases: list[dict] | None = None) -> list[Path]:
    """Write the committed crawl files (every file of cases.toml but the server pages)."""
    written = []
    for name, group in files_of(cases or load_cases()).items():
        if name != "server":
            path = out_dir / name
            path.write_bytes(crawl_file(name, group))
            written.append(path)
    return written


def write_server_file(out_dir: Path, host: str, cases: list[dict] | None = None) -> Path:
    """Write the WAT of the cases whose links name the loopback server at ``host`` (http://127.0.0.1:PORT)."""
    path = Path(out_dir) / SERVER_FILE
    path.write_bytes(crawl_file(SERVER_FILE, files_of(cases or load_cases())["server"], host))
    return path


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    for path in write_static():
        log.info("wrote %s (%d bytes)", path.relative_to(HERE), path.stat().st_size)
