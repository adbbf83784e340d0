"""The dedup Spark job, one module per step.

    job.py         the entry point: hash the input shards, decide, write kept and rejected
    bands.py       banded candidate pairs (4 x 16-bit bands for Hamming <= k), window joins
    verify.py      candidate links that need a keypoint / pixel verdict
    components.py  connected components of the links (driver or Spark)
    decide.py      the decision plan: exact pHash, (phash, text), blocklist, near-duplicate groups
"""
