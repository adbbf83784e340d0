"""The embedded sample's images and the loopback HTTP server that serves them.

:func:`sample_images` draws deterministic, real-looking JPEGs (smooth gradients, shapes, sensor-like
noise) for the names the crawl sample links to (``img-00000.jpg`` ...): varied sizes from 150 to
1600 px, some panoramas wider than 3:1, some tiny files under 5 KB, a few CMYK and a few stored sideways
with an EXIF orientation, a few truncated, an HTML page under a .jpg name, and a few served with an
X-Robots-Tag opt-out, so the download stage meets what the web serves.

:class:`ImageServer` serves a dict of paths on 127.0.0.1 (or another loopback address, so that tests and
the bench can play several hosts) from a background thread (``curation pipeline`` starts one for
``[pipeline] sample = true``; the tests and the bench extend its handler). It counts the connections it is
serving at once and keeps the maximum (what a per-host limit must bound).
"""

from __future__ import annotations

import contextlib
import io
import logging
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

log = logging.getLogger(__name__)

N_SAMPLE_IMAGES = 150
ORIENTATION_TAG = 0x0112


def sample_name(index: int) -> str:
    return f"img-{index:05d}.jpg"


def sample_index(name: str) -> int:
    return int(name.removeprefix("img-").removesuffix(".jpg"))


def _size(index: int, rng: np.random.Generator) -> tuple[int, int]:
    kind = index % 15
    if kind == 0:  # panorama, > 3:1
        h = int(rng.integers(250, 400))
        return int(h * rng.uniform(3.3, 4.5)), h
    if kind == 1:  # thumbnail: shorter side < 200 px, a few KB
        return int(rng.integers(100, 180)), int(rng.integers(80, 150))
    if kind == 2:  # wide banner, shorter side < 200 but many bytes
        return int(rng.integers(600, 900)), int(rng.integers(150, 199))
    w = int(rng.integers(220, 1600))
    h = int(np.clip(w / rng.uniform(0.6, 1.9), 200, 1600))
    return w, h


def picture(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """A gradient sky, a few soft shapes and grain: compresses like a photo, not like a flat graphic."""
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    sky = np.broadcast_to(top * (1 - t) + bottom * t, (height, width, 3))
    img = Image.fromarray(sky.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 9))):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(20, max(21, width // 2))), y0 + int(rng.integers(20, max(21, height // 2)))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=color)
    img = img.filter(ImageFilter.GaussianBlur(radius=max(1.0, min(width, height) / 80)))
    grain = rng.normal(0.0, 6.0, (height, width, 1)).astype(np.float32)
    return Image.fromarray(np.clip(np.asarray(img, dtype=np.float32) + grain, 0, 255).astype(np.uint8), "RGB")


def sample_image(index: int, seed: int = 0) -> bytes:
    """The JPEG bytes of sample image ``index`` (same index and seed, same bytes). Like the web, a few
    are not what their name says: every 50th is cut short, the one before it is an HTML error page."""
    if index % 50 == 48:
        return (b"<!DOCTYPE html><html><head><title>404 Not Found</title></head><body><h1>Not Found</h1>"
                + b"<p>The requested image was not found on this server.</p>" * 100 + b"</body></html>")
    rng = np.random.default_rng([seed, index])
    width, height = _size(index, rng)
    img = picture(width, height, rng)
    out = io.BytesIO()
    if index % 15 == 1:
        img.save(out, "JPEG", quality=40)
    elif index % 15 == 3:  # CMYK JPEG (print workflows still publish them)
        img.convert("CMYK").save(out, "JPEG", quality=85)
    elif index % 15 == 4:  # stored sideways; EXIF orientation 6 says "rotate 90 degrees clockwise to view"
        exif = Image.Exif()
        exif[ORIENTATION_TAG] = 6
        img.transpose(Image.Transpose.ROTATE_90).save(out, "JPEG", quality=85, exif=exif)
    else:
        img.save(out, "JPEG", quality=85)
    data = out.getvalue()
    return data[: len(data) * 2 // 3] if index % 50 == 49 else data


def sample_images(names: list[str] | None = None, seed: int = 0) -> dict[str, bytes]:
    """``{name: jpeg bytes}`` for the sample's image names (default: all ``N_SAMPLE_IMAGES``)."""
    wanted = names if names is not None else [sample_name(i) for i in range(N_SAMPLE_IMAGES)]
    return {name: sample_image(sample_index(name), seed) for name in wanted}


# --- the loopback server ------------------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    body: bytes
    content_type: str = "image/jpeg"
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()


class ImageHandler(BaseHTTPRequestHandler):
    """Serves ``server.routes`` (path -> Response); 404 for the rest. Records each request path.

    A connection counts as open from its accept until just before the last byte the client must read is
    sent: the last byte of the body, or of the headers for an answer a client may drop after reading them
    (an error status, an X-Robots-Tag opt-out). The client cannot have finished (and started another fetch
    in its place) earlier, so the maximum the server sees never exceeds what the client holds open
    (a client that drops a 200 answer early, e.g. over its size limit, may be over-counted briefly)."""

    server: _Server
    disable_nagle_algorithm = True  # the last byte goes out on its own (see respond)

    def setup(self) -> None:
        super().setup()
        self._open = True
        self.server.opened()

    def finish(self) -> None:
        self._closed()
        super().finish()

    def _closed(self) -> None:
        if self._open:
            self._open = False
            self.server.closed()

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.record(self.path)
        response = self.server.routes.get(self.path.split("?", 1)[0])
        self.respond(response or Response(b"not found", "text/plain", 404))

    def respond(self, response: Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers:
            self.send_header(name, value)
        self._headers_buffer.append(b"\r\n")  # what end_headers() adds before it sends them
        head = b"".join(self._headers_buffer)
        self._headers_buffer = []
        may_drop = response.status != 200 or any(name.lower() == "x-robots-tag" for name, _ in response.headers)
        cut = len(head) - 1 if may_drop or not response.body else len(head) + len(response.body) - 1
        message = head + response.body
        self.wfile.write(message[:cut])
        self._closed()
        self.wfile.write(message[cut:])

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (signature of the base class)
        log.debug("image server: " + format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def __init__(self, address, handler, routes: Mapping[str, Response]) -> None:
        super().__init__(address, handler)
        self.routes = routes  # not copied: a lazy mapping (SampleRoutes) stays lazy
        self.requests: list[str] = []
        self.active = self.max_active = 0
        self._lock = threading.Lock()

    def record(self, path: str) -> None:
        with self._lock:
            self.requests.append(path)

    def opened(self) -> None:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)

    def closed(self) -> None:
        with self._lock:
            self.active -= 1

    def handle_error(self, request, client_address) -> None:
        # a client that gives up (timeout, size limit) closes the socket mid-response: not a server error
        log.debug("image server: client %s went away", client_address, exc_info=True)


class ImageServer:
    """``with ImageServer(routes) as server: server.url("/images/a.jpg")`` on 127.0.0.1 (port 0: any free
    one); ``host`` may be another loopback address (127.0.0.2 ...), never a public one."""

    def __init__(
        self, routes: Mapping[str, Response], port: int = 0, handler: type[ImageHandler] = ImageHandler, host: str = "127.0.0.1"
    ):
        if not host.startswith("127."):
            raise ValueError(f"ImageServer serves loopback only, not {host}")
        self.host = host
        try:
            self._server = _Server((host, port), handler, routes)
        except OSError as e:
            raise OSError(f"cannot serve images on {host}:{port}: {e} (choose another port in the config)") from e
        self._thread = threading.Thread(target=self._server.serve_forever, name="image-server", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def requests(self) -> list[str]:
        return list(self._server.requests)

    @property
    def max_concurrent(self) -> int:
        """The most connections served at once since the start (or the last reset)."""
        return self._server.max_active

    def reset_concurrency(self) -> None:
        with self._server._lock:
            self._server.max_active = self._server.active

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def __enter__(self) -> ImageServer:
        self._thread.start()
        log.info("image server on http://%s:%d (%d paths)", self.host, self.port, len(self._server.routes))
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


def _headers(name: str) -> tuple[tuple[str, str], ...]:
    """Every 50th image's owner opts out of AI use (X-Robots-Tag), as some sites do."""
    return (("X-Robots-Tag", "noai, noimageai"),) if sample_index(name) % 50 == 47 else ()


class SampleRoutes(Mapping[str, Response]):
    """``/images/<name>`` -> its response, for :class:`ImageServer`. An image is drawn on its first request:
    a run that fetches none (a resumed pipeline past its download stage) draws none.

    With ``cache_dir`` a drawn image is written there (atomically) and read back on later requests, so
    the serving process holds no image bytes however large the sample (a 30,000-page sample draws 15,000
    images, about 2.3 GB); a folder filled earlier (``bench/pipeline.py`` draws every image up front) is
    served as it is. Without it, drawn images are kept in memory (fine for the 150 of the default sample)."""

    def __init__(self, names: list[str] | None = None, seed: int = 0, cache_dir: str | None = None) -> None:
        wanted = names if names is not None else [sample_name(i) for i in range(N_SAMPLE_IMAGES)]
        self._names = {f"/images/{name}": name for name in wanted}
        self._seed = seed
        self._cache = None if cache_dir is None else cache_folder(cache_dir, seed)
        self._drawn: dict[str, Response] = {}  # handler threads may draw one twice: same bytes, no harm

    def __getitem__(self, path: str) -> Response:
        name = self._names[path]
        if self._cache is not None:
            return Response(cached_image(self._cache, name, self._seed), headers=_headers(name))
        if path not in self._drawn:
            self._drawn[path] = Response(sample_image(sample_index(name), self._seed), headers=_headers(name))
        return self._drawn[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


CACHE_VERSION = 1  # bump when sample_image draws other bytes, so an old cache is never served


def cache_folder(cache_dir: str, seed: int) -> str:
    return os.path.join(cache_dir, f"v{CACHE_VERSION}-seed{seed}")


def cached_image(folder: str, name: str, seed: int = 0) -> bytes:
    """Image ``name``'s bytes from ``folder``, drawn and written there (temp name + rename) when absent."""
    path = os.path.join(folder, name)
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        pass
    data = sample_image(sample_index(name), seed)
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return data


def _draw_one(args: tuple[str, str, int]) -> int:
    return len(cached_image(*args))


def draw_images(cache_dir: str, names: list[str], seed: int = 0, processes: int | None = None,
                progress: Callable[[int, int], None] | None = None) -> int:
    """Draw every image of ``names`` not yet in ``cache_dir`` (by ``processes`` processes, default one per
    core), so that serving them is a file read: a server that draws on request answers slowly on a busy
    machine, and its clients' fetches time out. Returns how many were drawn; ``progress(done, total)``
    is called every 1,000."""
    folder = cache_folder(cache_dir, seed)
    todo = [(folder, name, seed) for name in names if not os.path.exists(os.path.join(folder, name))]
    if not todo:
        return 0
    processes = max(1, min(processes or os.cpu_count() or 1, len(todo)))
    with contextlib.ExitStack() as scope:
        if processes == 1:
            drawn = map(_draw_one, todo)
        else:
            pool = scope.enter_context(multiprocessing.get_context("spawn").Pool(processes))
            drawn = pool.imap_unordered(_draw_one, todo, chunksize=16)
        for done, _ in enumerate(drawn, 1):
            if progress and done % 1000 == 0:
                progress(done, len(todo))
    return len(todo)


def sample_routes(names: list[str] | None = None, seed: int = 0, cache_dir: str | None = None) -> SampleRoutes:
    """``/images/<name>`` -> its response, for :class:`ImageServer` (each image drawn when first asked for;
    kept in ``cache_dir`` when given, else in memory)."""
    return SampleRoutes(names, seed, cache_dir)
