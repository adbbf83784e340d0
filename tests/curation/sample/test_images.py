"""curation/sample/images.py: the sample's generated images are deterministic, varied like the web, and
served on loopback under the names the crawl sample links to."""

from __future__ import annotations

import io
import re
import urllib.error
import urllib.request
from collections import Counter

import pytest
from PIL import Image

from curation.sample.images import N_SAMPLE_IMAGES, ImageServer, Response, sample_image, sample_index, sample_name, sample_routes
from curation.sample.crawl_files import write_sample
from filters.image import ImageRules, Rejection, process_image

FIRST_TWO_CYCLES = list(range(30))  # the kinds repeat every 15 images


@pytest.fixture(scope="module")
def images() -> dict[int, bytes]:
    return {i: sample_image(i) for i in FIRST_TWO_CYCLES}


def test_same_index_and_seed_give_the_same_bytes(images):
    assert sample_image(3) == images[3]
    assert sample_image(3, seed=1) != images[3]


def test_images_are_real_jpegs_of_varied_sizes_and_kinds(images):
    sizes, modes, rotated = [], Counter(), 0
    for data in images.values():
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            assert img.format == "JPEG"
            sizes.append(img.size)
            modes[img.mode] += 1
            rotated += img.getexif().get(0x0112, 1) == 6
    assert min(min(s) for s in sizes) < 200 and max(max(s) for s in sizes) > 1000
    assert sum(max(s) / min(s) > 3 for s in sizes) >= 2  # panoramas
    assert sum(len(d) < 5 * 1024 for d in images.values()) >= 2  # tiny files
    assert modes["CMYK"] >= 2 and rotated >= 2


def test_the_image_rules_keep_most_and_drop_each_kind_of_misfit(images):
    outcomes = Counter()
    for data in images.values():
        result = process_image(data, ImageRules())
        outcomes[result.reason if isinstance(result, Rejection) else "kept"] += 1
    assert outcomes["kept"] >= 20
    assert {"aspect_ratio", "too_small_bytes", "too_small_side"} <= set(outcomes)


def test_names_cover_every_image_the_crawl_sample_links_to(tmp_path):
    manifest = write_sample(str(tmp_path), pages=30, image_host="http://127.0.0.1:8765")
    names = {sample_name(i) for i in range(N_SAMPLE_IMAGES)}
    assert set(manifest["image_names"]) <= names
    assert all(re.fullmatch(r"img-\d{5}\.jpg", n) for n in names)


def test_server_serves_the_routes_and_answers_404_otherwise():
    routes = sample_routes([sample_name(5)])
    with ImageServer(routes) as server:
        with urllib.request.urlopen(server.url(f"/images/{sample_name(5)}?any=query"), timeout=5) as r:
            assert r.read() == routes[f"/images/{sample_name(5)}"].body
            assert r.headers["Content-Type"] == "image/jpeg"
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(server.url("/images/none.jpg"), timeout=5)
        assert caught.value.code == 404
        assert server.requests == [f"/images/{sample_name(5)}?any=query", "/images/none.jpg"]


def test_a_port_in_use_is_a_clear_error():
    with ImageServer({"/x": Response(b"x")}) as first:
        with pytest.raises(OSError, match=f"127.0.0.1:{first.port}.*another port"):
            ImageServer({}, port=first.port)


def test_a_few_images_are_broken_or_opted_out_like_on_the_web():
    routes = sample_routes([sample_name(i) for i in (47, 48, 49)])
    opted_out, html, truncated = (routes[f"/images/{sample_name(i)}"] for i in (47, 48, 49))
    assert ("X-Robots-Tag", "noai, noimageai") in opted_out.headers
    assert process_image(html.body, ImageRules()).reason == "not_decodable"
    assert process_image(truncated.body, ImageRules()).reason == "not_decodable"


def test_routes_draw_an_image_only_when_it_is_first_asked_for(monkeypatch):
    import curation.sample.images as module

    drawn = []
    monkeypatch.setattr(module, "sample_image", lambda index, seed=0: drawn.append(index) or b"jpeg %d" % index)
    routes = sample_routes([sample_name(i) for i in (3, 4)])
    with ImageServer(routes):  # a resumed pipeline past its download stage serves nothing: draws nothing
        assert len(routes) == 2 and drawn == []
    assert routes[f"/images/{sample_name(4)}"].body == b"jpeg 4" and routes.get("/images/none.jpg") is None
    assert routes[f"/images/{sample_name(4)}"].body == b"jpeg 4" and drawn == [4]


def test_a_cache_folder_keeps_drawn_images_on_disk_not_in_memory(tmp_path, monkeypatch):
    import curation.sample.images as module

    drawn = []
    monkeypatch.setattr(module, "sample_image", lambda index, seed=0: drawn.append(index) or b"jpeg %d" % index)
    routes = sample_routes([sample_name(i) for i in (3, 47)], cache_dir=str(tmp_path))
    for _ in range(2):
        assert routes[f"/images/{sample_name(47)}"].body == b"jpeg 47"
    assert drawn == [47] and routes._drawn == {}  # drawn once, then read back from the folder
    assert ("X-Robots-Tag", "noai, noimageai") in routes[f"/images/{sample_name(47)}"].headers
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert files == [sample_name(47)]  # no temp file left behind
    again = sample_routes([sample_name(47)], cache_dir=str(tmp_path))  # a later run reuses the folder
    assert again[f"/images/{sample_name(47)}"].body == b"jpeg 47" and drawn == [47]
    other_seed = sample_routes([sample_name(47)], seed=1, cache_dir=str(tmp_path))
    assert other_seed[f"/images/{sample_name(47)}"].body == b"jpeg 47" and drawn == [47, 47]  # its own folder


def test_draw_images_fills_the_folder_once_with_the_same_bytes(tmp_path):
    from curation.sample.images import cache_folder, draw_images

    names = [sample_name(i) for i in (5, 6, 7)]
    assert draw_images(str(tmp_path), names, processes=2) == 3
    assert draw_images(str(tmp_path), names, processes=2) == 0  # already there: nothing redrawn
    for name in names:
        assert (tmp_path / cache_folder("", 0) / name).read_bytes() == sample_image(sample_index(name))
