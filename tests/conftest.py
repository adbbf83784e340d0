"""Shared fixtures: one local[2] Spark session, a moto S3 server on 127.0.0.1, the shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# Fake credentials for the moto server, set before the Spark JVM starts: its Python workers inherit
# the JVM's environment, not later changes made in this process.
os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"})

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()
CRAWL = SHARED_DATA / "crawl"


def shared(*parts: str) -> Path:
    """A file of ../shared/data; the test is skipped when the folder is absent (a user's clone)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


def photo_files(n: int, pattern: str = "*.jpg") -> list[tuple[str, bytes]]:
    """``n`` photos as (file name, file bytes): the real ones of ../shared/data/images/photos (the
    first ``n`` names matching ``pattern``) where that folder exists, else distinct generated
    photo-like 640x480 JPEGs (tests/http_server.py's pictures). For tests that need decodable
    photos, not particular ones: they then run in any clone, without the shared data."""
    folder = SHARED_DATA / "images" / "photos"
    if folder.is_dir():
        return [(p.name, p.read_bytes()) for p in sorted(folder.glob(pattern))[:n]]
    from tests.http_server import named_photo

    return [(f"generated-{i}.jpg", named_photo(f"generated-{i}.jpg")) for i in range(n)]


def photo_image(index: int = 0):
    """Photo ``index`` of :func:`photo_files`, decoded to RGB."""
    import io

    from PIL import Image

    _, data = photo_files(index + 1)[index]
    return Image.open(io.BytesIO(data)).convert("RGB")


def sticker(image):
    """A red sale banner over the bottom fifth, with text: the overlay real copies carry."""
    from PIL import ImageDraw

    out = image.copy()
    w, h = out.size
    draw = ImageDraw.Draw(out)
    draw.rectangle((0, int(h * 0.8), w, h), fill=(220, 30, 40))
    draw.text((w // 20, int(h * 0.84)), "www.example.com SALE", fill=(255, 255, 255), font_size=int(h * 0.1))
    return out


@pytest.fixture(scope="session")
def spark():
    from jobs.session import build_spark_session

    session = build_spark_session(
        "local[2]",
        "curation-tests",
        {"spark.sql.shuffle.partitions": "4", "spark.ui.enabled": "false", "spark.driver.memory": "1g"},
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def image_server():
    """The loopback HTTP server of tests/http_server.py (real and generated images, errors, redirects)."""
    from tests.http_server import LoopbackServer

    with LoopbackServer() as server:
        yield server


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 API (moto's server) on 127.0.0.1; yields StorageOptions pointing at it."""
    from moto.server import ThreadedMotoServer

    from curation.storage import StorageOptions

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    yield StorageOptions(s3_endpoint_url=endpoint, s3_region="us-east-1")
    server.stop()


@pytest.fixture
def s3_bucket(s3_server, request):
    import boto3

    name = "test-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    client = boto3.client("s3", endpoint_url=s3_server.s3_endpoint_url, region_name="us-east-1")
    client.create_bucket(Bucket=name)
    return name, client


def annotated_row(i: int, **values) -> dict:
    """One ANNOTATED row (uid = md5 of i) that every built-in preset keeps; keyword arguments override columns."""
    import hashlib

    row = {
        "id": i, "url": f"https://img.example.com/{i}.jpg", "text": f"a photo number {i} of a red bicycle by the sea",
        "width": 1500, "height": 1500, "image_phash": f"{i:016x}", "text_length": 44, "word_count": 11,
        "num_tokens_bert": 12, "num_tokens_gpt": 12, "num_faces": 0, "clip_similarity_vitb32": 0.35,
        "clip_similarity_vitl14": 0.3, "nsfw_score_opennsfw2": 0.01, "nsfw_score_gantman": 0.02,
        "watermark_score": 0.1, "aesthetic_score_laion_v2": 6.0, "uid": hashlib.md5(str(i).encode()).hexdigest(),
        "image_bytes": None,
    }
    return {**row, **values}


@pytest.fixture(scope="session")
def host_servers():
    """Three loopback servers on 127.0.0.2, 127.0.0.3, 127.0.0.4 (three hosts for the politeness tests);
    each counts the connections it serves at once."""
    from contextlib import ExitStack

    from tests.http_server import LoopbackServer

    with ExitStack() as stack:
        yield [stack.enter_context(LoopbackServer(f"127.0.0.{k}")) for k in (2, 3, 4)]
