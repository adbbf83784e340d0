"""The loopback HTTP server the download tests fetch from (no test touches the internet).

It serves real image files (the photos of ../shared/data/images and the photo matplotlib ships, when
present), generated edge cases (truncated JPEG, zero bytes, HTML served as image/jpeg, a decompression
bomb, tiny, small-side, wide panorama, SVG, CMYK, 16-bit, 32-bit float, palette, animated, EXIF-rotated) and
behaviours: 404/429/500/503, a flaky path (503 once, then the image), 429 with a Retry-After header
once, then the image, slow and dripping responses, a connection reset without a response, redirects
(to an image, in a loop, to a private address, to cloud metadata), X-Robots-Tag opt-outs, bodies
without a length, an echo of the User-Agent header, and a distinct photo for every name under /photo/.
Any path takes ``?delay=S`` (answer after S seconds) and /status/ takes ``?retry_after=V``. Several servers
on 127.0.0.2, 127.0.0.3 ... play distinct hosts; each counts the connections it serves at once
(``max_concurrent``).
"""

from __future__ import annotations

import io
import socket
import struct
import threading
import time
import zlib
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from functools import lru_cache
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
from PIL import Image

from curation.sample.images import ORIENTATION_TAG, ImageHandler, ImageServer, Response, picture

SHARED_IMAGES = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "images").resolve()
SLOW_SECONDS = 3.0


def jpeg(width: int, height: int, seed: int = 0, quality: int = 85, **save) -> bytes:
    out = io.BytesIO()
    picture(width, height, np.random.default_rng(seed)).save(out, "JPEG", quality=quality, **save)
    return out.getvalue()


def encode(img: Image.Image, fmt: str, **save) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **save)
    return out.getvalue()


def png_header_bomb(width: int = 40_000, height: int = 40_000) -> bytes:
    """A tiny PNG whose header declares width x height pixels (what a decompression bomb looks like
    before it is inflated): Pillow reads the header, so the guard must act on it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    idat = zlib.compress(b"\x00" * 1024, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def rotated_jpeg(shown_width: int, shown_height: int) -> bytes:
    """Stored sideways (shown_height x shown_width) with EXIF orientation 6: a viewer shows the given size."""
    img = picture(shown_width, shown_height, np.random.default_rng(7)).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = 6
    return encode(img, "JPEG", quality=85, exif=exif)


@lru_cache(maxsize=256)
def named_photo(name: str) -> bytes:
    """A 640x480 photo-like JPEG of its own for every name (the seed is the name's CRC)."""
    return jpeg(640, 480, seed=zlib.crc32(name.encode("utf-8", "surrogatepass")))


def retry_after_value(spec: str) -> str:
    """A Retry-After header value: ``N`` (seconds) as is, ``date+N`` the HTTP date N seconds from now."""
    if spec.startswith("date+"):
        return format_datetime(datetime.now(UTC) + timedelta(seconds=int(spec[5:])), usegmt=True)
    return spec


@lru_cache(maxsize=1)
def generated_cases() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, content type) of the generated edge cases."""
    photo = jpeg(800, 600, seed=1)
    rng = np.random.default_rng(3)
    noisy = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    frames = [Image.fromarray(np.roll(noisy, 40 * i, axis=1)).convert("P") for i in range(3)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=100)
    gray16 = (rng.integers(0, 65536, (300, 300))).astype(np.uint16)
    floats = rng.random((300, 400), dtype=np.float32)
    rgba = np.dstack([noisy, np.full((300, 400), 128, np.uint8)])
    return {
        "photo.jpg": (photo, "image/jpeg"),
        "truncated.jpg": (photo[: len(photo) * 6 // 10], "image/jpeg"),
        "zero.jpg": (b"", "image/jpeg"),
        "html.jpg": (b"<!DOCTYPE html><html><body><h1>Sorry, this page has moved</h1>" + b" " * 6000 + b"</body></html>", "image/jpeg"),
        "bomb.png": (png_header_bomb(), "image/png"),
        "tiny.jpg": (jpeg(120, 90, seed=4, quality=40), "image/jpeg"),
        "small-side.jpg": (jpeg(700, 180, seed=5), "image/jpeg"),
        "panorama.jpg": (jpeg(1600, 400, seed=6), "image/jpeg"),
        "drawing.svg": (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="800" height="600">'
                        + b'<rect width="800" height="600" fill="red"/>' * 150 + b"</svg>", "image/svg+xml"),
        "cmyk.jpg": (encode(picture(640, 480, np.random.default_rng(8)).convert("CMYK"), "JPEG", quality=85), "image/jpeg"),
        "palette.png": (encode(Image.fromarray(noisy).convert("P"), "PNG"), "image/png"),
        "gray16.png": (encode(Image.fromarray(gray16), "PNG"), "image/png"),
        "float.tif": (encode(Image.fromarray(floats, "F"), "TIFF"), "image/tiff"),
        "rgba.png": (encode(Image.fromarray(rgba, "RGBA"), "PNG"), "image/png"),
        "animated.gif": (gif.getvalue(), "image/gif"),
        "rotated.jpg": (rotated_jpeg(500, 300), "image/jpeg"),
        "large.jpg": (jpeg(1600, 1200, seed=9, quality=95), "image/jpeg"),
    }


def real_photos() -> dict[str, Path]:
    """Real photos available on this machine: ../shared/data/images/photos and matplotlib's sample."""
    found = {p.name: p for p in sorted((SHARED_IMAGES / "photos").glob("*")) if p.is_file()}
    try:
        import matplotlib

        hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        if hopper.exists():
            found["grace_hopper.jpg"] = hopper
    except ImportError:
        pass
    return found


def odd_files() -> dict[str, Path]:
    return {p.name: p for p in sorted((SHARED_IMAGES / "odd").glob("*")) if p.is_file() and p.suffix != ".md"}


_CONTENT_TYPES = {".jpg": "image/jpeg", ".png": "image/png", ".gif": "image/gif", ".svg": "image/svg+xml"}


class LoopbackHandler(ImageHandler):
    """Static routes from the server's table, plus behaviours chosen by the path."""

    def do_GET(self) -> None:  # noqa: N802
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        self.server.record(self.path)
        self.server.arrived(path)
        if "delay" in query:
            time.sleep(float(query["delay"][0]))
        if path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
            headers = (("Retry-After", query["retry_after"][0]),) if "retry_after" in query else ()
            return self.respond(Response(f"status {code}".encode(), "text/plain", code, headers))
        if path.startswith("/flaky/"):  # 503 on the first request of each path, the photo afterwards
            if self.server.first_time(path):
                return self.respond(Response(b"busy", "text/plain", 503))
            return self.respond(self.server.routes["/gen/photo.jpg"])
        if path.startswith("/retry-after/"):  # /retry-after/<N | date+N>/<route>: 429 once, then the route
            spec, route = path[len("/retry-after/") :].split("/", 1)
            if self.server.first_time(path):
                return self.respond(Response(b"slow down", "text/plain", 429, (("Retry-After", retry_after_value(spec)),)))
            path = "/" + route
        if path.startswith("/photo/"):
            return self.respond(Response(named_photo(unquote(path[len("/photo/") :]))))
        if path == "/slow":
            time.sleep(SLOW_SECONDS)
            return self.respond(self.server.routes["/gen/photo.jpg"])
        if path == "/reset":  # the connection is reset (RST) before any byte of a response
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return self.connection.close()
        if path == "/drip":  # a byte every 0.2 s: each read is quick, the whole transfer is not
            return self._drip()
        if path == "/redirect":  # ?to=<url or path>
            return self.respond(Response(b"", "text/plain", 302, (("Location", query["to"][0]),)))
        if path == "/loop":
            return self.respond(Response(b"", "text/plain", 302, (("Location", "/loop"),)))
        if path == "/robots":  # ?tag=<X-Robots-Tag value>
            photo = self.server.routes["/gen/photo.jpg"]
            return self.respond(Response(photo.body, photo.content_type, 200, (("X-Robots-Tag", query["tag"][0]),)))
        if path == "/ua":  # echoes the User-Agent header
            return self.respond(Response(self.headers.get("User-Agent", "").encode(), "text/plain"))
        if path == "/unbounded":  # no Content-Length: the body only ends when the connection closes
            return self._unbounded()
        response = self.server.routes.get(path)
        self.respond(response or Response(b"not found", "text/plain", 404))

    def _drip(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", "100")
        self.end_headers()
        for _ in range(100):
            self.wfile.write(b"x")
            self.wfile.flush()
            time.sleep(0.2)

    def _unbounded(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.end_headers()
        for _ in range(64):
            self.wfile.write(b"\0" * 65536)


class LoopbackServer(ImageServer):
    def __init__(self, host: str = "127.0.0.1") -> None:
        routes = {f"/gen/{name}": Response(data, ctype) for name, (data, ctype) in generated_cases().items()}
        for prefix, files in (("/photos/", real_photos()), ("/odd/", odd_files())):
            for name, path in files.items():
                routes[prefix + name] = Response(path.read_bytes(), _CONTENT_TYPES.get(path.suffix, "image/jpeg"))
        super().__init__(routes, handler=LoopbackHandler, host=host)
        seen: set[str] = set()
        lock = threading.Lock()

        def first_time(path: str) -> bool:
            with lock:
                new = path not in seen
                seen.add(path)
                return new

        self._server.first_time = first_time  # type: ignore[attr-defined]
        self._arrivals: dict[str, list[float]] = {}

        def arrived(path: str) -> None:
            with lock:
                self._arrivals.setdefault(path, []).append(time.monotonic())

        self._server.arrived = arrived  # type: ignore[attr-defined]

    def paths(self, prefix: str) -> list[str]:
        return sorted(p for p in self._server.routes if p.startswith(prefix))

    def arrival_times(self, path: str) -> list[float]:
        """When each request for ``path`` (without its query) arrived, in time.monotonic() seconds."""
        return list(self._arrivals.get(path, []))

    def hits(self, path: str) -> int:
        return sum(1 for p in self.requests if p.split("?", 1)[0] == path)
