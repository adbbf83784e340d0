"""``curation models fetch`` against a loopback server serving stand-in files under the canonical URL
paths (the canonical hosts are never contacted: every test passes --mirror or --url)."""

from __future__ import annotations

import hashlib
import io
import threading
from urllib.parse import urlsplit

import pytest
import torch

from curation.sample.images import ImageHandler, ImageServer
from models.weights import fetch
from models.weights.fetch import LEDGER, SOURCES, FetchModelsError, FetchOptions, fetch_models, with_sha256

LOOPBACK = ("127.0.0.1",)


def _aesthetic_standin() -> bytes:
    """A real-shape aesthetic v2 head (768-d), saved as improved-aesthetic-predictor saves it."""
    from models.heads import aesthetic_mlp

    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.save(aesthetic_mlp(768).state_dict(), buf)
    return buf.getvalue()


def _standins() -> dict[str, bytes]:
    rng = torch.Generator().manual_seed(1)
    other = {name: torch.randint(0, 256, (40_000 + 1000 * i,), generator=rng, dtype=torch.uint8).numpy().tobytes() for i, name in enumerate(SOURCES)}
    return other | {"aesthetic_laion_v2": _aesthetic_standin(), "faces": _yunet_standin()}


def _yunet_standin() -> bytes:
    """A graph with YuNet's layers and interface (random weights)."""
    from models.weights.random_yunet import yunet_graph

    return yunet_graph().SerializeToString()


class RangeHandler(ImageHandler):
    """Serves the stand-ins with HTTP Range support, and per-path misbehaviours chosen by the test."""

    def do_GET(self) -> None:  # noqa: N802
        server = self.server
        path = self.path.split("?", 1)[0]
        server.record(self.path)
        with server.lock:
            server.ranges.append((path, self.headers.get("Range")))
            mode = server.modes.get(path, "ok")
        body = server.files.get(path)
        if body is None or mode == "404":
            return self._send(404, b"not found")
        if mode.startswith("redirect:"):
            self.send_response(302)
            self.send_header("Location", mode[len("redirect:") :])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        start = 0
        wanted = self.headers.get("Range")
        if wanted and wanted.startswith("bytes=") and wanted.endswith("-"):
            start = int(wanted[len("bytes=") : -1])
        if start >= len(body) and start:
            return self._send(416, b"")
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        if mode == "truncate":  # the connection ends half-way through the announced body
            self.wfile.write(body[start : start + (len(body) - start) // 2])
            self.close_connection = True
            return None
        self.wfile.write(body[start:])
        return None

    def _send(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def mirror():
    files = {urlsplit(s.url).path: data for s, data in zip(SOURCES.values(), _standins().values(), strict=True)}
    server = ImageServer({}, handler=RangeHandler)
    server._server.files, server._server.modes, server._server.ranges = files, {}, []
    server._server.lock = threading.Lock()
    with server:
        yield server


def _path(name: str) -> str:
    return urlsplit(SOURCES[name].url).path


def _opts(mirror, **kw) -> FetchOptions:
    return FetchOptions(mirror=mirror.url(""), allowed_addresses=LOOPBACK, timeout_s=10, **kw)


def test_canonical_sources_are_public_https_files_named_in_code():
    for source in SOURCES.values():
        parts = urlsplit(source.url)
        assert parts.scheme == "https" and parts.hostname in ("huggingface.co", "github.com"), source.url
    assert SOURCES["aesthetic_laion_v2"].filename == "sac+logos+ava1-l14-linearMSE.pth"
    assert SOURCES["watermark"].filename == "watermark_model_v1.pt"
    assert SOURCES["clip_vitb32"].filename.endswith(".safetensors") and SOURCES["clip_vitl14"].filename.endswith(".safetensors")


def test_fetch_verifies_records_and_writes_a_models_toml_the_production_loader_uses(mirror, tmp_path):
    from models.config import load_models_config
    from models.faces import YuNetFaceCounter
    from models.heads import AestheticScorer
    from models.registry import L14_EMBEDDING, check_weights

    reported = []
    path = fetch_models(str(tmp_path), _opts(mirror), reported.append)
    assert [f.action for f in reported] == ["downloaded"] * len(SOURCES)
    files = mirror._server.files
    for source in SOURCES.values():
        data = (tmp_path / source.filename).read_bytes()
        assert data == files[_path(source.name)]
    cfg = load_models_config(path)
    check_weights(cfg)
    assert cfg.clip_vitb32.arch == "ViT-B-32" and cfg.clip_vitb32.quick_gelu and cfg.clip_vitl14.arch == "ViT-L-14"
    assert cfg.watermark.arch == "efficientnet_b3a" and cfg.nsfw_nudenet.enabled
    AestheticScorer("aesthetic_laion_v2", cfg.aesthetic_laion_v2, L14_EMBEDDING).load("cpu")  # the real .pth format
    assert cfg.faces.detector == "yunet" and cfg.faces.weights.endswith("face_detection_yunet_2023mar.onnx")
    YuNetFaceCounter("faces", cfg.faces).load("cpu")
    ledger = fetch.read_ledger(tmp_path)
    assert ledger["watermark"]["sha256"] == hashlib.sha256(files[_path("watermark")]).hexdigest()
    assert not list(tmp_path.glob(".*.part"))

    before = len(mirror.requests)
    again = []
    fetch_models(str(tmp_path), _opts(mirror), again.append)
    assert [f.action for f in again] == ["verified"] * len(SOURCES) and len(mirror.requests) == before  # nothing fetched twice


def test_a_truncated_transfer_is_an_error_and_the_rerun_resumes_it_with_a_range_request(mirror, tmp_path):
    server = mirror._server
    server.modes[_path("watermark")] = "truncate"
    with pytest.raises(FetchModelsError, match=r"watermark: .*truncated, \d+ of \d+ bytes; rerun to resume"):
        fetch_models(str(tmp_path), _opts(mirror, only=("watermark", "aesthetic_laion_v2")))
    part = tmp_path / ".watermark_model_v1.pt.part"
    assert part.exists() and not (tmp_path / "watermark_model_v1.pt").exists()
    assert "[watermark]" not in (tmp_path / "MODELS.toml").read_text()  # only verified files are configured
    have = part.stat().st_size
    server.modes.clear()
    reported = []
    fetch_models(str(tmp_path), _opts(mirror, only=("watermark",)), reported.append)
    assert reported[0].action == "resumed"
    assert (_path("watermark"), f"bytes={have}-") in server.ranges
    assert (tmp_path / "watermark_model_v1.pt").read_bytes() == server.files[_path("watermark")]


def test_a_wrong_hash_is_refused_and_nothing_is_kept(mirror, tmp_path, monkeypatch):
    monkeypatch.setitem(SOURCES, "watermark", with_sha256(SOURCES["watermark"], "0" * 64))
    with pytest.raises(FetchModelsError, match=r"watermark: watermark_model_v1.pt: sha256 [0-9a-f]{64}, expected 0{64} \(pinned\)"):
        fetch_models(str(tmp_path), _opts(mirror, only=("watermark",)))
    assert not (tmp_path / "watermark_model_v1.pt").exists() and not list(tmp_path.glob(".*.part"))


def test_a_file_that_changed_since_its_first_fetch_is_refused(mirror, tmp_path):
    fetch_models(str(tmp_path), _opts(mirror, only=("watermark",)))
    (tmp_path / "watermark_model_v1.pt").unlink()
    mirror._server.files[_path("watermark")] = b"a different file" * 1000
    with pytest.raises(FetchModelsError, match=r"16000 bytes, expected \d+ \(recorded\)"):
        fetch_models(str(tmp_path), _opts(mirror, only=("watermark",)))
    assert not (tmp_path / "watermark_model_v1.pt").exists()


def test_every_failure_is_listed_and_the_other_files_are_fetched(mirror, tmp_path):
    server = mirror._server
    server.modes[_path("watermark")] = "404"
    server.modes[_path("clip_vitb32")] = "redirect:http://10.0.0.1/weights.safetensors"
    server.modes[_path("clip_vitl14")] = "redirect:http://169.254.169.254/latest/meta-data/"
    with pytest.raises(FetchModelsError) as err:
        fetch_models(str(tmp_path), _opts(mirror))
    message = str(err.value)
    assert "watermark: HTTP 404" in message
    assert "clip_vitb32: cannot fetch" in message and "10.0.0.1: private address" in message
    assert "169.254.169.254: cloud metadata address" in message
    assert (tmp_path / SOURCES["aesthetic_laion_v2"].filename).exists()
    toml = (tmp_path / "MODELS.toml").read_text()
    assert "# [aesthetic_laion_v2] left out" in toml and "[clip_vitb32]" not in toml


def test_the_ssrf_guard_blocks_the_loopback_mirror_unless_allowed(mirror, tmp_path):
    opts = FetchOptions(mirror=mirror.url(""), only=("watermark",), timeout_s=10)
    with pytest.raises(FetchModelsError, match="127.0.0.1: loopback address"):
        fetch_models(str(tmp_path), opts)
    assert mirror.requests == []


def test_url_overrides_take_s3_and_plain_urls(mirror, tmp_path, s3_server, s3_bucket):
    from curation import storage

    bucket, _ = s3_bucket
    data = mirror._server.files[_path("watermark")]
    storage.write_bytes_atomic(f"s3://{bucket}/mirror/wm.pt", data, s3_server)
    opts = FetchOptions(
        urls=(("watermark", f"s3://{bucket}/mirror/wm.pt"), ("aesthetic_laion_v2", mirror.url(_path("aesthetic_laion_v2")))),
        only=("watermark", "aesthetic_laion_v2"), allowed_addresses=LOOPBACK, storage=s3_server,
    )  # fmt: skip
    fetch_models(str(tmp_path), opts)
    assert (tmp_path / "watermark_model_v1.pt").read_bytes() == data
    assert fetch.read_ledger(tmp_path)["watermark"]["url"] == f"s3://{bucket}/mirror/wm.pt"


def test_unknown_model_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"unknown model\(s\) \['clip_vitb16'\]"):
        fetch_models(str(tmp_path), FetchOptions(only=("clip_vitb16",)))


def test_cli_fetch_then_check_lists_every_column_and_every_problem(mirror, tmp_path):
    from typer.testing import CliRunner

    from jobs.cli import app

    runner = CliRunner()
    out = tmp_path / "models"
    result = runner.invoke(app, ["models", "fetch", str(out), "--mirror", mirror.url(""), "--allow-address", "127.0.0.1", "--only", "aesthetic_laion_v2,clip_vitl14"])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "MODELS.toml" in result.output
    checked = runner.invoke(app, ["models", "check", str(out / "MODELS.toml")])
    assert checked.exit_code == 0, checked.output
    assert "clip_similarity_vitb32" in checked.output and "null: [clip_vitb32] not configured" in checked.output
    assert "every fetched file has its recorded size and sha256" in checked.output

    (out / "clip-vit-l-14-openai.safetensors").unlink()
    (out / "MODELS.toml").write_text((out / "MODELS.toml").read_text() + '\n[watermark]\nweights = "gone.pt"\n')
    checked = runner.invoke(app, ["models", "check", str(out / "MODELS.toml")])
    assert checked.exit_code == 2
    lines = checked.output.splitlines()
    assert any(line.startswith("clip_similarity_vitl14") and "PROBLEM" in line and "models fetch DIR --only clip_vitl14" in line for line in lines)
    assert any(line.startswith("watermark_score") and "gone.pt" in line for line in lines)
    assert any(line.startswith("aesthetic_score_laion_v2") and "PROBLEM" in line for line in lines)
    assert "recorded in FETCHED.json but missing" in checked.output
    assert LEDGER == "FETCHED.json"
