"""Inputs for the annotate tests: photos as the download stage stores them, UNIQUE-shaped tables."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.conftest import SHARED_DATA

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CAPTIONS = ["a dog on a beach", "two people riding bicycles in the city", "a bowl of fruit", "a red car", "coffee"]


def source_images(n: int) -> list[Image.Image]:
    """``n`` real photos of ../shared/data/images/photos; where that folder is absent (a user's clone),
    the loopback server's generated photo-like JPEGs, so the tests that need pixels run everywhere."""
    folder = SHARED_DATA / "images" / "photos"
    if folder.is_dir():
        return [Image.open(p).convert("RGB") for p in sorted(folder.iterdir())[:n]]
    from tests.http_server import jpeg

    sizes = [(640, 480), (480, 640), (800, 600), (500, 500), (1024, 400), (300, 700)]
    return [Image.open(io.BytesIO(jpeg(*sizes[i % len(sizes)], seed=i))).convert("RGB") for i in range(n)]


def photo_bytes(n: int, short_side: int = 384) -> list[bytes]:
    """``n`` photos re-encoded as JPEG with the shorter side ``short_side`` (what download stores)."""
    out = []
    for img in source_images(n):
        scale = short_side / min(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def unique_rows(images: list[bytes | None], prefix: str = "row") -> list[dict]:
    rows = []
    for i, data in enumerate(images):
        url = f"https://img.example.com/{prefix}/{i}.jpg"
        text = CAPTIONS[i % len(CAPTIONS)] + f" number {i}"
        rows.append(
            {
                "uid": hashlib.md5((text + url).encode()).hexdigest(), "url": url, "text": text,
                "page_url": "https://example.com/", "source_file": "test.warc.wat.gz", "text_original": None,
                "status": "success", "error_message": None, "width": 1000 + i, "height": 800 + i,
                "image_bytes": data, "image_format": "jpeg", "bytes_original": 50_000,
                "image_phash": f"{i:016x}",
                "sha256": hashlib.sha256(data or b"").hexdigest(), "md5": hashlib.md5(data or b"").hexdigest(),
            }
        )  # fmt: skip
    return rows


def write_unique(folder: Path, images: list[bytes | None], files: int = 1, row_group_size: int = 4) -> Path:
    """A UNIQUE stage folder (the dedup stage's table) under folder/data/."""
    from schemas.tables import UNIQUE

    schema = UNIQUE.arrow_schema()
    rows = unique_rows(images)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    per = -(-len(rows) // files)
    for f in range(files):
        part = rows[f * per : (f + 1) * per]
        pq.write_table(pa.Table.from_pylist(part, schema=schema), folder / "data" / f"part-{f:05d}.parquet", row_group_size=row_group_size)
    return folder


@pytest.fixture(scope="session")
def tiny_models_toml(tmp_path_factory) -> str:
    """Tiny random-weight checkpoints of the real architectures, written by the production code."""
    from models.weights.random_init import write_random_models

    return write_random_models(str(tmp_path_factory.mktemp("tiny-models")), "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_models(tiny_models_toml):
    from models.config import load_models_config

    return load_models_config(tiny_models_toml)


@pytest.fixture(scope="session")
def photos() -> list[bytes]:
    return photo_bytes(6)
