"""The embedded sample: deterministic crawl files and the images they link to.

    crawl_files.py  two WAT files and one WARC file of realistic pages, written by ``write_sample``
    images.py       the sample's pictures and the loopback image server that serves them
"""
