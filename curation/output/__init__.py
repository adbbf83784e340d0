"""Output formats besides the stage tables.

    shards.py      even parquet and webdataset shards (select --materialize)
    embeddings.py  CLIP embeddings in clip-retrieval's layout (annotate, read by semdedup)
"""
