"""Fetching images over HTTP.

    http.py        one request: size and time limits, redirects, content hashes, transient errors
    ssrf.py        the address guard: no request reaches a private, loopback or link-local address unless allowed
    politeness.py  per-host connection limits, back-off on 429/503, host lanes across tasks
"""
