"""The shards `select --materialize` writes, read by the loaders training jobs use: webdataset, open_clip's
training loader, HF datasets (webdataset and parquet builders) and a multi-worker, two-rank torch DataLoader.
Each reader must give back exactly the selected rows: their captions and their image bytes."""

from __future__ import annotations

import argparse
import io
import json
import tarfile
from collections import Counter

import pyarrow.parquet as pq
import pytest

from curation.output.shards import sample_key
from jobs import select as job
from jobs.stages.card import brace_pattern
from jobs.stages.config import load_config
from schemas import ANNOTATED
from tests.conftest import annotated_row, photo_files

ROWS_PER_SHARD = 2
DOTTED_UID = "row.with/dots.jpg"  # a uid that is no plain word: its key must still be one


@pytest.fixture(scope="module")
def selection(tmp_path_factory):
    """9 selected rows (8 photos and one under a dotted uid) of 11 annotated ones, in 5 shards of <= 2."""
    root = tmp_path_factory.mktemp("readers")
    photos = photo_files(10)
    rows = [annotated_row(i, image_bytes=data, text=f"photo {i}: {name} — ünïcode") for i, (name, data) in enumerate(photos)]
    rows[2]["width"] = rows[5]["width"] = 200  # non-face drops them
    rows.append(annotated_row(10, uid=DOTTED_UID, image_bytes=photos[0][1], text="the dotted one"))
    src = root / "annotated"
    src.mkdir()
    pq.write_table(ANNOTATED.from_pylist(rows), src / "part-00000.parquet")
    out = root / "subset"
    cfg = load_config(None, {"select": {"rows_per_shard": ROWS_PER_SHARD, "webdataset": True}})
    stats = job.run(None, cfg, str(src), "non-face", str(out), materialize=True)
    kept = sorted((r for r in rows if r["width"] > 256), key=lambda r: r["uid"])
    assert stats["materialized"]["rows"] == len(kept) == 9 and stats["materialized"]["shards"] == 5
    return out, {r["uid"]: (r["text"], r["image_bytes"]) for r in kept}


def tar_pattern(out) -> str:
    return str(out / "wds" / brace_pattern(5, "tar"))


def test_sizes_json_counts_each_tar_and_keys_hold_no_dot(selection):
    out, expected = selection
    sizes = json.loads((out / "wds" / "sizes.json").read_text())
    assert sizes == {"part-00000.tar": 2, "part-00001.tar": 2, "part-00002.tar": 2, "part-00003.tar": 2, "part-00004.tar": 1}
    names = []
    for tar in sorted((out / "wds").glob("*.tar")):
        with tarfile.open(tar) as t:
            names += t.getnames()
    assert len(names) == 3 * len(expected)
    assert all(name.count(".") == 1 and "/" not in name for name in names)
    dotted_key = sample_key(DOTTED_UID)
    assert {f"{dotted_key}.jpg", f"{dotted_key}.txt", f"{dotted_key}.json"} <= set(names)
    assert sample_key("0123abcdef") == "0123abcdef"


def test_webdataset_reads_every_selected_row_once(selection):
    import webdataset as wds

    out, expected = selection
    seen = Counter()
    for sample in wds.WebDataset(tar_pattern(out), shardshuffle=False):
        uid = json.loads(sample["json"])["uid"]
        seen[uid] += 1
        assert (sample["txt"].decode("utf-8"), sample["jpg"]) == expected[uid]
    assert seen == Counter(expected.keys())


def _preprocess():
    from torchvision import transforms

    return transforms.Compose([transforms.Resize((24, 24)), transforms.ToTensor()])


def test_open_clip_training_loader_gives_batches_of_the_selected_rows(selection):
    import torch
    from open_clip.tokenizer import SimpleTokenizer
    from open_clip_train.data import get_wds_dataset
    from PIL import Image

    out, expected = selection
    preprocess, tokenizer = _preprocess(), SimpleTokenizer(context_length=32)
    # the fields open_clip_train.main's parser gives get_wds_dataset; no train_num_samples: sizes.json counts them
    args = argparse.Namespace(
        train_data=tar_pattern(out), val_data=None, train_num_samples=None, dataset_resampled=False,
        train_data_upsampling_factors=None, seed=0, batch_size=3, workers=1, world_size=1,
    )
    data = get_wds_dataset(args, preprocess, is_train=True, epoch=0, tokenizer=tokenizer)
    assert (data.dataloader.num_samples, data.dataloader.num_batches) == (9, 3)
    by_tokens = {
        tuple(tokenizer(text)[0].tolist()): preprocess(Image.open(io.BytesIO(image)).convert("RGB"))
        for text, image in expected.values()
    }
    seen = Counter()
    for images, texts in data.dataloader:
        assert isinstance(images, torch.Tensor) and images.shape == (3, 3, 24, 24)
        assert isinstance(texts, torch.Tensor) and texts.shape == (3, 32)
        for image, tokens in zip(images, texts):
            key = tuple(tokens.tolist())
            assert torch.equal(image, by_tokens[key])
            seen[key] += 1
    assert seen == Counter(by_tokens.keys())


@pytest.fixture
def hf_offline(tmp_path, monkeypatch):
    """HF datasets with the hub switched off and a cache of its own."""
    for name in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import datasets
    import huggingface_hub.constants

    for module, name in ((datasets.config, "HF_DATASETS_OFFLINE"), (datasets.config, "HF_HUB_OFFLINE"), (huggingface_hub.constants, "HF_HUB_OFFLINE")):
        monkeypatch.setattr(module, name, True)  # read at import: an earlier import may predate the env
    datasets.disable_progress_bars()
    return str(tmp_path / "hf-cache")


def test_hf_datasets_webdataset_builder_reads_the_tars(selection, hf_offline):
    from datasets import Image, load_dataset

    out, expected = selection
    tars = [str(p) for p in sorted((out / "wds").glob("*.tar"))]
    rows = load_dataset("webdataset", data_files={"train": tars}, split="train", cache_dir=hf_offline)
    rows = rows.cast_column("jpg", Image(decode=False))
    got = {r["json"]["uid"]: (r["txt"], r["jpg"]["bytes"]) for r in rows}
    assert len(rows) == len(expected) and got == expected


def test_hf_datasets_parquet_builder_reads_the_shards_in_uid_order(selection, hf_offline):
    from datasets import load_dataset

    out, expected = selection
    shards = [str(p) for p in sorted((out / "data").glob("*.parquet"))]
    rows = load_dataset("parquet", data_files={"train": shards}, split="train", cache_dir=hf_offline)
    assert rows["uid"] == list(expected)
    assert {r["uid"]: (r["text"], r["image_bytes"]) for r in rows} == expected
    assert rows.features["image_bytes"].dtype == "binary" and rows.features["width"].dtype == "int32"


def _uid_of(sample: dict) -> str:
    return json.loads(sample["json"])["uid"]


def test_two_ranks_of_two_workers_see_every_row_once_per_epoch(selection, monkeypatch):
    import webdataset as wds
    from torch.utils.data import DataLoader

    out, expected = selection
    per_rank = {}
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))  # what torchrun sets; wds.split_by_node reads it
        monkeypatch.setenv("WORLD_SIZE", "2")
        pipeline = wds.DataPipeline(
            wds.SimpleShardList(tar_pattern(out)), wds.split_by_node, wds.split_by_worker,
            wds.tarfile_to_samples(), wds.map(_uid_of),
        )
        loader = DataLoader(pipeline, batch_size=None, num_workers=2)
        epochs = [list(loader) for _ in range(2)]
        assert Counter(epochs[0]) == Counter(epochs[1])
        per_rank[rank] = epochs[0]
    assert per_rank[0] and per_rank[1] and not set(per_rank[0]) & set(per_rank[1])
    assert Counter(per_rank[0] + per_rank[1]) == Counter(expected.keys())
