"""Common Crawl files -> candidate pairs.

    reader.py   the file loop: WARC/WAT/WET records through FastWARC, bounded and accounted for
    wat.py      WAT metadata records: the page's links with their alt texts
    links.py    HTML pages and links: URL resolution, uids, the per-file extraction result
"""
