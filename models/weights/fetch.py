"""``curation models fetch DIR``: the real public checkpoints of the annotate stage, one command away.

Each file comes from its canonical public location (:data:`SOURCES`, the checkpoints of the scorer
table models.registry.SCORERS; a mirror, an internal bucket or an ``s3://`` URI can stand in for any of
them) over plain HTTPS through the project's SSRF-guarded opener
(curation.fetch.ssrf: every hop of every redirect is checked), with no hub client. A download goes to
``DIR/.NAME.part``; a rerun resumes it with an HTTP Range request; the finished file is verified (size,
sha256) and only then renamed to its final name. The expected sha256 is pinned in the table where the publisher
states it; otherwise the first fetch records size and sha256 in ``DIR/FETCHED.json`` and every later
fetch or check verifies against that record. Finally ``DIR/MODELS.toml`` is written (atomically) for
every model whose file is present and verified, so ``curation annotate --models DIR/MODELS.toml`` works
as is. Nothing here runs at annotate time.

OpenAI's CLIP weights are fetched as open_clip state dicts in safetensors (the files open_clip itself
uses, on the Hugging Face hub under ``timm/``): OpenAI's own ``.pt`` files are TorchScript archives, which
the loader refuses (weights-only loading only).
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from curation import storage
from curation.errors import CurationError
from curation.fetch.ssrf import AddressGuard, build_opener
from curation.storage import StorageOptions
from models.registry import REGISTRY

log = logging.getLogger(__name__)

LEDGER = "FETCHED.json"
CHUNK = 1 << 20


@dataclass(frozen=True)
class Source:
    """One checkpoint the stage uses: where it comes from and what MODELS.toml says about it."""

    name: str  # the MODELS.toml section
    filename: str  # its name in DIR
    url: str  # canonical public location (never contacted by the tests)
    columns: tuple[str, ...]
    licence: str
    section: tuple[tuple[str, object], ...] = ()  # MODELS.toml keys besides weights
    sha256: str | None = None  # pinned only where the publisher states it
    size: int | None = None


# every scorer table row with a public checkpoint (models.registry.SCORERS), in table order
SOURCES: dict[str, Source] = {
    e.name: Source(e.name, c.filename, c.url, REGISTRY.columns[e.name], c.licence, c.section, c.sha256, c.size)
    for e in REGISTRY.entries.values()
    if (c := e.checkpoint) is not None
}


class FetchModelsError(CurationError, RuntimeError):
    """One or more files could not be fetched or verified; the message lists every one."""


class FetchError(Exception):
    """One file failed; ``resumable`` says whether a rerun continues the partial download."""

    def __init__(self, message: str, resumable: bool = False) -> None:
        super().__init__(message)
        self.resumable = resumable


@dataclass(frozen=True)
class FetchOptions:
    only: tuple[str, ...] = ()  # section names; empty: all
    urls: tuple[tuple[str, str], ...] = ()  # name -> URL overrides (https://, http://, s3://)
    mirror: str | None = None  # replaces scheme://host of every canonical URL (the path is kept)
    allowed_addresses: tuple[str, ...] = ()  # the SSRF guard's allow-list (e.g. an internal mirror)
    timeout_s: float = 60.0
    storage: StorageOptions | None = None  # for s3:// sources


@dataclass
class Fetched:
    name: str
    path: str
    size: int
    sha256: str
    action: str  # downloaded | resumed | verified | recorded


def source_url(source: Source, opts: FetchOptions) -> str:
    overrides = dict(opts.urls)
    if source.name in overrides:
        return overrides[source.name]
    if opts.mirror:
        parts = urlsplit(source.url)
        return opts.mirror.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")
    return source.url


def selected(only: Iterable[str]) -> list[Source]:
    names = list(only) or list(SOURCES)
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; known: {sorted(SOURCES)}")
    return [SOURCES[n] for n in names]


# --- the ledger of sizes and hashes -----------------------------------------------------------
def read_ledger(folder: Path) -> dict[str, dict]:
    path = folder / LEDGER
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise FetchModelsError(f"{path} is not valid JSON ({e}); delete it to record the hashes again") from e


def write_ledger(folder: Path, ledger: dict[str, dict]) -> None:
    storage.write_bytes_atomic(str(folder / LEDGER), (json.dumps(ledger, indent=2, sort_keys=True) + "\n").encode())


def expected_of(source: Source, ledger: dict[str, dict]) -> tuple[int | None, str | None, str]:
    """(size, sha256, where from): the pinned values, else the ones recorded at the first fetch."""
    if source.sha256:
        return source.size, source.sha256, "pinned"
    entry = ledger.get(source.name) or {}
    if entry.get("filename") not in (None, source.filename):
        return None, None, "none"
    return entry.get("size"), entry.get("sha256"), "recorded" if entry.get("sha256") else "none"


def file_sha256(path: Path) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def verify(source: Source, size: int, sha256: str, ledger: dict[str, dict]) -> None:
    want_size, want_sha, where = expected_of(source, ledger)
    if want_size is not None and size != want_size:
        raise FetchError(f"{source.filename}: {size} bytes, expected {want_size} ({where})")
    if want_sha is not None and sha256 != want_sha:
        raise FetchError(f"{source.filename}: sha256 {sha256}, expected {want_sha} ({where})")


# --- transfers ---------------------------------------------------------------------------------
def _http_stream(url: str, start: int, opts: FetchOptions, opener) -> tuple[object, int, int | None]:
    """(response, offset it starts at, total size if known). ``start`` > 0 asks for a Range."""
    headers = {"User-Agent": "curation-models-fetch"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        response = opener.open(urllib.request.Request(url, headers=headers), timeout=opts.timeout_s)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and start:  # the part file is already whole (or longer than the file)
            raise FetchError(f"HTTP 416 for a range from byte {start}", resumable=False) from None
        raise FetchError(f"HTTP {e.code} {e.reason} from {url}") from None
    except urllib.error.URLError as e:
        raise FetchError(f"cannot fetch {url}: {e.reason}", resumable=True) from None
    except (OSError, http.client.HTTPException) as e:
        raise FetchError(f"cannot fetch {url}: {type(e).__name__}: {e}", resumable=True) from None
    length = response.headers.get("Content-Length")
    length = int(length) if length and length.isascii() and length.isdigit() else None
    if start and response.status == 206:
        content_range = response.headers.get("Content-Range", "")  # bytes START-END/TOTAL
        try:
            first = int(content_range.split()[1].split("-")[0])
            total = content_range.rsplit("/", 1)[1]
        except (IndexError, ValueError):
            response.close()
            raise FetchError(f"unreadable Content-Range {content_range!r} from {url}") from None
        if first != start:
            response.close()
            raise FetchError(f"server resumed at byte {first}, not {start}")
        return response, start, int(total) if total.isdigit() else (start + length if length is not None else None)
    return response, 0, length  # 200: the whole file (the server ignored the Range)


def _s3_stream(url: str, start: int, opts: FetchOptions) -> tuple[object, int, int | None]:
    try:
        fs, path = storage.filesystem(url, opts.storage)
        total = fs.get_file_info(path).size
        if total is None:
            raise FetchError(f"not found: {url}")
        stream = fs.open_input_file(path)
    except FetchError:
        raise
    except OSError as e:
        raise FetchError(f"cannot read {url}: {e}") from None
    if start > total:
        start = 0
    stream.seek(start)
    return stream, start, total


def download(source: Source, url: str, target: Path, opts: FetchOptions, opener) -> str:
    """Fetch ``url`` into ``target`` through ``target``'s .part file; return downloaded | resumed."""
    part = target.with_name(f".{target.name}.part")
    have = part.stat().st_size if part.exists() else 0
    if storage.is_s3(url):
        stream, offset, total = _s3_stream(url, have, opts)
    elif urlsplit(url).scheme in ("http", "https"):
        try:
            stream, offset, total = _http_stream(url, have, opts, opener)
        except FetchError as e:
            if "HTTP 416" not in str(e):
                raise
            part.unlink()  # a stale or overlong part: start again
            have = 0
            stream, offset, total = _http_stream(url, 0, opts, opener)
    else:
        raise FetchError(f"unsupported URL {url!r}: https://, http:// or s3://")
    written = offset
    try:
        with stream, open(part, "r+b" if offset else "wb") as out:
            out.seek(offset)
            out.truncate()
            read = getattr(stream, "read1", stream.read)
            started, reported = time.monotonic(), time.monotonic()
            while chunk := read(CHUNK):
                out.write(chunk)
                written += len(chunk)
                if time.monotonic() - reported > 10:
                    reported = time.monotonic()
                    log.info("%s: %d of %s bytes (%.1f MB/s)", source.name, written, total or "?", (written - offset) / 1e6 / (reported - started))
    except (OSError, http.client.HTTPException) as e:
        raise FetchError(f"{source.filename}: transfer broke after {written} bytes ({type(e).__name__}: {e}); rerun to resume", resumable=True) from None
    if total is not None and written < total:
        raise FetchError(f"{source.filename}: truncated, {written} of {total} bytes; rerun to resume", resumable=True)
    if total is not None and written > total:
        part.unlink()
        raise FetchError(f"{source.filename}: {written} bytes, more than the {total} announced")
    return "resumed" if offset else "downloaded"


def fetch_one(source: Source, folder: Path, opts: FetchOptions, ledger: dict[str, dict], opener) -> Fetched:
    target = folder / source.filename
    url = source_url(source, opts)
    if target.exists():
        size, sha = file_sha256(target)
        want_size, want_sha, where = expected_of(source, ledger)
        if want_sha is None:  # put there by hand before any fetch: record it
            ledger[source.name] = {"filename": source.filename, "url": url, "size": size, "sha256": sha}
            return Fetched(source.name, str(target), size, sha, "recorded")
        try:
            verify(source, size, sha, ledger)
        except FetchError as e:
            raise FetchError(f"{e}: the file in place differs; delete {target} to fetch it again") from None
        return Fetched(source.name, str(target), size, sha, "verified")
    log.info("%s: fetching %s", source.name, url)
    action = download(source, url, target, opts, opener)
    part = target.with_name(f".{target.name}.part")
    size, sha = file_sha256(part)
    try:
        verify(source, size, sha, ledger)
    except FetchError:
        part.unlink()  # a wrong file is not resumed
        raise
    os.replace(part, target)
    ledger[source.name] = {"filename": source.filename, "url": url, "size": size, "sha256": sha}
    return Fetched(source.name, str(target), size, sha, action)


def check_recorded(folder: Path) -> list[str]:
    """Problems of the fetched files in ``folder`` against FETCHED.json (for ``models check``)."""
    ledger = read_ledger(folder)
    problems = []
    for name, entry in sorted(ledger.items()):
        path = folder / entry.get("filename", "")
        if not path.is_file():
            problems.append(f"{name}: {path} recorded in {LEDGER} but missing")
            continue
        size, sha = file_sha256(path)
        if size != entry.get("size") or sha != entry.get("sha256"):
            problems.append(f"{name}: {path} is {size} bytes sha256 {sha}, {LEDGER} says {entry.get('size')} bytes sha256 {entry.get('sha256')}")
    return problems


def fetch_models(folder: str, opts: FetchOptions = FetchOptions(), report: Callable[[Fetched], None] | None = None) -> str:
    """Fetch the selected checkpoints into ``folder`` (a local path) and write ``folder/MODELS.toml``;
    return its path. Every failure is collected; FetchModelsError lists them all after the others ran."""
    sources = selected(opts.only)
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    ledger = read_ledger(root)
    opener = build_opener(AddressGuard.from_config(opts.allowed_addresses))
    failures: list[str] = []
    for source in sources:
        try:
            done = fetch_one(source, root, opts, ledger, opener)
        except FetchError as e:
            failures.append(f"{source.name}: {e}")
            continue
        write_ledger(root, ledger)  # after each file: an interrupted run keeps what it verified
        if report:
            report(done)
    path = write_models_toml(root, ledger)
    if failures:
        raise FetchModelsError("could not fetch:\n  " + "\n  ".join(failures) + f"\n{path} lists the models that are present")
    return path


def write_models_toml(root: Path, ledger: dict[str, dict]) -> str:
    """MODELS.toml for every source whose file is in ``root`` (and recorded), plus the offline defaults."""
    present = [s for s in SOURCES.values() if (root / s.filename).is_file() and s.name in ledger]
    names = {s.name for s in present}
    lines = [
        "# Written by `curation models fetch`: real public checkpoints (see README, 'Models').",
        f"# Sizes and sha256 of every file are in {LEDGER}; `curation models check` verifies them.",
        "",
    ]
    for s in present:
        if s.name == "aesthetic_laion_v2" and "clip_vitl14" not in names:
            lines.append("# [aesthetic_laion_v2] left out: it runs on the ViT-L/14 embedding; fetch clip_vitl14 too")
            lines.append("")
            continue
        lines.append(f"[{s.name}]                # {', '.join(s.columns)}; {s.licence}")
        lines.append(f"# from {ledger[s.name].get('url', s.url)}")
        values = dict(s.section) | {"weights": s.filename}
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
        lines.append("")
    lines += [
        "[nsfw_nudenet]                # nsfw_score_nudenet: the detector nudenet ships",
        "enabled = true",
        "",
    ]
    if "faces" not in names:
        lines += ["[faces]                       # num_faces: OpenCV's shipped Haar cascade", 'detector = "opencv-haar"', ""]
    lines += [
        "[tokens]                      # num_tokens_bert / num_tokens_gpt: vocabularies blingfire ships",
        "enabled = true",
        "",
    ]
    path = root / "MODELS.toml"
    storage.write_bytes_atomic(str(path), "\n".join(lines).encode())
    return str(path)


def with_sha256(source: Source, sha256: str, size: int | None = None) -> Source:
    """A copy of ``source`` with a pinned hash (tests; a site that pins its own mirror's files)."""
    return dataclasses.replace(source, sha256=sha256, size=size)
