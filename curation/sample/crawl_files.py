"""Deterministic generator of the project's embedded sample of Common Crawl files.

:func:`write_sample` writes two WAT files and one WARC file in Common Crawl's exact layout: one gzip
member per record, ``WARC/1.0`` headers with CRLF framing, exact ``Content-Length``, sha1 digests and,
per page, the request / response / metadata records of one fetch. A WAT file holds one JSON metadata
record per record of its source WARC (ia-web-commons' envelope, the HTML's links in the response's);
the source WARCs are built in memory, so the WAT offsets, gzip metadata and digests are real values.

The pages hold what real crawls hold: English alts of every length (some > 1000 chars or > 256 words),
seven other languages, repeated texts and repeated (url, alt) pairs, junk alts (file names, entities,
emoji, blank or missing), absolute, relative, protocol-relative and ``<base href>`` image links, odd
schemes, and pages in windows-1252, iso-8859-1 and windows-1251. Same seed -> byte-identical files.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import html
import json
import logging
import random
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from urllib.parse import urljoin, urlsplit

from curation import storage
from curation.errors import InputError
from curation.storage import StorageOptions

log = logging.getLogger(__name__)

WAT_FILES = ("CC-MAIN-sample-00000.warc.wat.gz", "CC-MAIN-sample-00001.warc.wat.gz")
WARC_FILE = "CC-MAIN-sample-00002.warc.gz"
N_IMAGES = 150  # distinct images of the 300-page sample; larger samples get pages // 2 (distinct work grows too)


def image_count(pages: int) -> int:
    return max(N_IMAGES, pages // 2)
_CRAWL_START = datetime(2024, 5, 18, 1, 0, 0, tzinfo=timezone.utc)
_EXTRACT_START = datetime(2024, 5, 31, 1, 0, 0, tzinfo=timezone.utc)

SITES = [  # (origin, site name, language), drawn with _SITE_WEIGHTS
    ("http://example.com", "Example News", "en"), ("https://www.example.org", "Example Foundation", "en"),
    ("https://shop.example.net", "Example Shop", "en"), ("https://travel.example.com", "Example Travel", "en"),
    ("http://blog.example.de", "Beispiel Blog", "de"), ("https://www.example.fr", "Exemple Magazine", "fr"),
    ("https://tienda.example.es", "Tienda Ejemplo", "es"), ("https://news.example.ru", "Пример Новости", "ru"),
    ("https://www.example.jp", "サンプル写真館", "ja"), ("https://www.example.cn", "示例图库", "zh"),
    ("https://www.example.ae", "موقع مثال", "ar"),
]
_SITE_WEIGHTS = [5, 4, 5, 3, 2, 2, 2, 2, 1, 1, 1]
_ADJ = "red blue green yellow old small large wooden vintage modern rustic colorful elegant handmade tiny".split()
_NOUN = "bicycle car boat chair table lamp guitar teapot backpack kettle sofa armchair".split()
_PLACE_ADJ = "busy quiet snowy sunny empty crowded old narrow".split()
_PLACE_NOUN = "market street square harbour bridge garden cathedral park".split()
_PLACE = ["Amsterdam", "Paris", "Berlin", "Lisbon", "Kyoto", "New York", "Cape Town", "Buenos Aires",
          "Copenhagen", "Edinburgh", "a small village", "the old town"]
_SCENE = ["leaning against a brick wall in {place}", "parked on a quiet street in {place}", "at sunset in {place}",
          "in front of a white house", "under a clear blue sky", "covered in fresh snow",
          "next to a river in {place}", "in the morning fog", "surrounded by autumn leaves"]
_TEMPLATES = ["{An_adj} {noun} {scene}", "{Adj} {noun} {scene}", "Close-up of {an_adj} {noun}", "Two {noun}s {scene}",
              "{Adj} {noun} for sale", "Our new {adj} {noun}", "A {pet} sleeping on {an_adj} {noun}",
              "View of the {padj} {pnoun} in {place}", "A family walking through the {padj} {pnoun} in {place}",
              "{Padj} {pnoun} in {place} at sunset"]
_SHORT = ["logo", "image", "photo", "icon", "banner", "thumbnail", "picture", "avatar"]
_FREQUENT = ["Click here", "product image", "Read more", "Home", "Add to cart", "Share on Facebook"]
_PRODUCT_NOUN = "chair table lamp teapot backpack kettle sofa armchair bookshelf stool".split()
_PRODUCT = [  # product-description sentences ({noun}, {material}... filled per product)
    "Made from {material} with a {finish} finish, it is built to last for many years.", "Available in {colors}.",
    "The {noun} measures {n} cm in height and weighs only {w} kg.", "Clean with a soft, damp cloth, no abrasives.",
    "Free shipping on all orders over 50 euros, with returns accepted within 30 days.",
    "Each piece is finished by hand in our workshop and inspected before it leaves.",
    "Perfect for the living room, the office or as a thoughtful gift for friends and family.",
    "Customers love how easy it is to assemble, with no tools required.",
    "The design was inspired by classic Scandinavian furniture from the 1960s.",
    "Every order includes a two-year warranty and friendly customer support.",
    "Our makers source their materials from small family businesses within two hundred kilometres.",
    "Thanks to its compact shape, the {noun} fits easily into smaller apartments and studios.",
    "Please allow a few days for delivery, as every item is packed by hand and shipped in recycled boxes.",
    "Small variations in colour and grain are part of its character and make every piece unique.",
    "Pair it with the matching accessories from the same collection for a calm and consistent look.",
]
_MATERIAL = ["solid oak", "recycled aluminium", "organic cotton", "stainless steel", "bamboo", "walnut"]
_FINISH = ["matte", "glossy", "brushed", "natural oil", "powder-coated"]
_COLOR = ["black", "white", "navy blue", "forest green", "sand", "terracotta", "light grey"]
FOREIGN = {
    "de": ["Ein rotes Fahrrad lehnt an einer Backsteinmauer in Hamburg", "Frische Brötchen vom Bäcker um die Ecke",
           "Blick über die Dächer der Altstadt bei Sonnenuntergang", "Wanderweg durch den herbstlichen Schwarzwald",
           "Unser neues Sofa aus grauem Stoff, bequem und pflegeleicht", "Kinder spielen im Schnee vor dem Rathaus"],
    "fr": ["Une rue pavée à Montmartre sous la pluie", "Croissants frais sur une table en bois",
           "Vue de la tour Eiffel depuis le Trocadéro", "Robe d'été légère en coton, taille 38",
           "Le marché provençal du samedi matin", "Un café en terrasse au bord de la Seine"],
    "es": ["Una calle estrecha en el centro de Sevilla", "Paella tradicional con mariscos frescos",
           "Atardecer en la playa de la Barceloneta", "Zapatillas deportivas de color azul, talla 42",
           "Niños jugando en el parque del Retiro", "Montañas nevadas en los Pirineos"],
    "ru": ["Красный трамвай на улице Санкт-Петербурга", "Зимний лес под толстым слоем снега",
           "Деревянный дом на берегу озера", "Новая кожаная сумка коричневого цвета",
           "Вид на Кремль с Москвы-реки", "Свежие яблоки на деревянном столе"],
    "zh": ["夕阳下的长城", "一只白色的小猫在窗台上睡觉", "上海外滩的夜景", "新款蓝色连衣裙，纯棉面料", "杭州西湖的春天",
           "一碗热腾腾的牛肉面"],
    "ja": ["桜の木の下で写真を撮る人々", "東京の夜景とスカイツリー", "手作りの木製テーブル", "京都の古いお寺と紅葉",
           "富士山と湖の朝の風景", "駅前の小さなパン屋さん"],
    "ar": ["غروب الشمس فوق الصحراء", "سوق تقليدي في مدينة مراكش", "فنجان قهوة عربية مع التمر",
           "حديقة جميلة مليئة بالزهور", "منظر ليلي لمدينة دبي", "قارب صيد صغير على شاطئ البحر"],
}
_JUNK = ["Tom &amp; Jerry stickers", "Mom&#39;s apple pie recipe", "Fish &amp; Chips &#8211; London", "&nbsp;",
         "Sunset at the beach 🌅🌊", "Best coffee in town ☕😍", "🎉🎉🎉", "New arrivals!!! 🔥", "photo (3).jpeg",
         "untitled-1", "_MG_4471", "Screenshot 2023-11-02 at 14.21.07"]
_BLANK: list[str | None] = ["", "", "   ", "\t\n ", None, None, None]  # None: no alt attribute
_ODD = ["javascript:void(0)", "file:///etc/passwd", "ftp://ftp.example.org/pub/images/photo.jpg", "about:blank",
        "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(24))).decode()]
_CAPTION_KINDS = ["medium", "short", "frequent", "product", "foreign", "junk", "blank"]
_SRC_KINDS = ["host", "root", "dotdot", "protorel", "cdn", "odd"]
_SECTIONS = ["news", "blog", "products", "gallery", "travel", "recipes"]
_SERVERS = ["nginx", "Apache", "cloudflare", "Apache/2.4.57 (Debian)", "nginx/1.24.0"]
_REQUEST = ("GET {path} HTTP/1.1\r\nUser-Agent: CCBot/2.0 (https://commoncrawl.org/faq/)\r\n"
            "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.5"
            "\r\nAccept-Encoding: br,gzip\r\nHost: {host}\r\nConnection: Keep-Alive\r\n\r\n")
_CLD2 = {"en": "ENGLISH", "de": "GERMAN", "fr": "FRENCH", "es": "SPANISH", "ru": "RUSSIAN", "ja": "JAPANESE",
         "zh": "CHINESE", "ar": "ARABIC"}


def _fits(text: str, charset: str) -> bool:
    try:
        text.encode(charset)
        return True
    except UnicodeEncodeError:
        return False


@dataclass
class Page:
    url: str
    title: str
    lang: str
    charset: str
    base: str | None
    links: list[tuple[str, str, str | None]] = field(default_factory=list)  # (tag "img"/"a", url, alt/text)

    def render(self) -> bytes:
        """The HTML in its charset; attributes are escaped, so an HTML parser reads the alts as generated."""
        esc = html.escape
        head = [f'<meta charset="{self.charset}">', f"<title>{esc(self.title)}</title>"]
        head += [f'<base href="{esc(self.base)}">'] if self.base else []
        head.append('<meta name="viewport" content="width=device-width, initial-scale=1">')
        body = [f"<header><h1>{esc(self.title)}</h1></header>", "<main>"]
        for tag, url, text in self.links:
            if tag == "a":
                body.append(f'<p><a href="{esc(url)}">{esc(text or "")}</a></p>')
            else:
                alt = "" if text is None else f' alt="{esc(text)}"'
                body.append(f'<figure><img src="{esc(url)}"{alt} loading="lazy"></figure>')
        body += ["</main>", f"<footer><p>&copy; 2024 {esc(self.title)}</p></footer>"]
        return (f'<!DOCTYPE html>\n<html lang="{self.lang}">\n<head>\n' + "\n".join(head) + "\n</head>\n<body>\n"
                + "\n".join(body) + "\n</body>\n</html>\n").encode(self.charset)


class _Generator:
    """All randomness of one sample, drawn from one ``random.Random(seed)`` in a fixed order."""

    def __init__(self, seed: int, image_host: str, n_images: int = N_IMAGES) -> None:
        self.rng = random.Random(seed)
        self.host = image_host.rstrip("/")
        names = [f"img-{i:05d}.jpg" for i in range(n_images)]
        # fixed images: a logo per site and an icon per frequent text give repeated (url, alt) pairs
        self.logos = dict(zip((s[0] for s in SITES), names))
        self.icons = dict(zip(_FREQUENT, names[len(SITES) :]))
        self.pool = names[len(SITES) + len(_FREQUENT) :]
        self.deck: list[str] = []
        self.clock = _CRAWL_START

    def uuid(self) -> str:
        return f"<urn:uuid:{uuid.UUID(int=self.rng.getrandbits(128), version=4)}>"

    def tick(self) -> datetime:
        self.clock += timedelta(seconds=self.rng.randint(1, 40))
        return self.clock

    def image(self) -> str:
        """Image names dealt from a reshuffled deck: every name is used, most of them by several pages."""
        if not self.deck:
            self.deck = self.rng.sample(self.pool, len(self.pool))
        return self.deck.pop()

    def medium(self) -> str:
        r = self.rng
        place, adj, padj = r.choice(_PLACE), r.choice(_ADJ), r.choice(_PLACE_ADJ)
        an_adj = ("an " if adj[0] in "aeiou" else "a ") + adj
        return r.choice(_TEMPLATES).format(
            adj=adj, Adj=adj.capitalize(), an_adj=an_adj, An_adj=an_adj.capitalize(), noun=r.choice(_NOUN),
            scene=r.choice(_SCENE).format(place=place), pet=r.choice(["cat", "dog", "puppy", "kitten"]),
            padj=padj, Padj=padj.capitalize(), pnoun=r.choice(_PLACE_NOUN), place=place)

    def product(self) -> str:
        """A shop's product description: 2-5 sentences, or 14+ (> 1000 chars), or 26 (> 256 words)."""
        r = self.rng
        n = r.choice([2, 3, 3, 4, 5, 14, 18, 26])
        colors = r.sample(_COLOR, 3)
        fill = {"material": r.choice(_MATERIAL), "finish": r.choice(_FINISH), "noun": r.choice(_PRODUCT_NOUN),
                "n": r.randint(20, 180), "w": round(r.uniform(0.4, 25.0), 1),
                "colors": f"{colors[0]}, {colors[1]} and {colors[2]}"}
        sentences: list[str] = []
        while len(sentences) < n:  # no repeats until the list runs out, as in a long shop description
            sentences += r.sample(_PRODUCT, len(_PRODUCT))
        return f"{r.choice(_ADJ).capitalize()} {fill['noun']} - " + " ".join(sentences[:n]).format(**fill)

    def caption(self, page_lang: str) -> str | None:
        r = self.rng
        weights = [34, 6, 10, 8, 10, 12, 12] if page_lang == "en" else [14, 4, 8, 4, 40, 10, 12]
        kind = r.choices(_CAPTION_KINDS, weights)[0]
        if kind == "junk":
            roll = r.randrange(4)
            if roll < 2:
                return f"IMG_{r.randint(1000, 9999)}.JPG" if roll == 0 else f"DSC{r.randint(0, 99999):05d}"
            return r.choice(_JUNK)
        if kind == "foreign":
            return r.choice(FOREIGN[page_lang if page_lang != "en" else r.choice(sorted(FOREIGN))])
        simple = {"short": _SHORT, "frequent": _FREQUENT, "blank": _BLANK}
        if kind in simple:
            return r.choice(simple[kind])
        return self.medium() if kind == "medium" else self.product()

    def src(self, alt: str | None, base: str | None) -> str:
        r = self.rng
        if alt in self.icons and r.random() < 0.5:
            return f"{self.host}/images/{self.icons[alt]}"
        if base and r.random() < 0.6:
            return f"images/{self.image()}"  # resolved against <base href>
        kind = r.choices(_SRC_KINDS, [74, 6, 4, 5, 4, 7])[0]
        return {
            "host": lambda: f"{self.host}/images/{self.image()}",
            "root": lambda: f"/images/{self.image()}",
            "dotdot": lambda: f"../img/{self.image().replace('.jpg', '.png')}",
            "protorel": lambda: f"//cdn.example.org/{self.image()}",
            "cdn": lambda: f"https://static.example.net/media/{r.randint(2019, 2024)}/{self.image()}",
            "odd": lambda: r.choice(_ODD),
        }[kind]()

    def page(self, index: int) -> Page:
        r = self.rng
        origin, site_name, site_lang = r.choices(SITES, _SITE_WEIGHTS)[0]
        lang = site_lang if r.random() < 0.7 else "en"
        charset = "utf-8"
        if {lang, site_lang} <= {"en", "de", "fr", "es"} and r.random() < 0.12:
            charset = r.choice(["windows-1252", "iso-8859-1"])
        elif site_lang == "ru" and r.random() < 0.4:
            charset = "windows-1251"
        base = r.choice([f"{self.host}/", "https://static.example.org/assets/"]) if r.random() < 0.1 else None
        topic = self.medium() if lang == "en" else r.choice(FOREIGN[lang])
        title = f"{topic} | {site_name}" if _fits(site_name, charset) else topic
        slug = "-".join(self.medium().lower().split()[:4])
        page = Page(f"{origin}/{r.choice(_SECTIONS)}/{slug}-{index}.html", title, lang, charset, base)
        name = site_name if _fits(site_name, charset) else "Example"
        page.links += [("a", f"{origin}/", name), ("img", f"{self.host}/images/{self.logos[origin]}", f"{name} logo")]
        for _ in range(r.randint(3, 9)):
            alt = self.caption(lang)
            if alt is not None and not _fits(alt, charset):
                alt = self.medium()
            page.links.append(("img", self.src(alt, base), alt))
            if r.random() < 0.4:
                page.links.append(("a", f"{origin}/{r.choice(_SECTIONS)}/", r.choice(_FREQUENT)))
        return page


# --- WARC records -------------------------------------------------------------------------------


def _sha1(data: bytes) -> str:
    return "sha1:" + base64.b32encode(hashlib.sha1(data).digest()).decode("ascii")


def _warc_date(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _fields_block(fields: list[tuple[str, str]]) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in fields).encode("utf-8")


@dataclass
class Record:
    headers: list[tuple[str, str]]  # WARC headers in order, Content-Length included
    block: bytes

    @staticmethod
    def build(fields: list[tuple[str, str]], block: bytes, digests: tuple[bytes, ...] = (), cl_at: int = 3) -> Record:
        """``fields`` plus Content-Length (exact, in bytes) at ``cl_at`` and, at the end, the sha1
        digests of ``digests`` (payload then block, or the block alone)."""
        headers = list(fields)
        headers.insert(cl_at, ("Content-Length", str(len(block))))
        names = ("WARC-Payload-Digest", "WARC-Block-Digest") if len(digests) == 2 else ("WARC-Block-Digest",)
        headers += [(name, _sha1(data)) for name, data in zip(names, digests)]
        return Record(headers, block)

    def get(self, name: str) -> str:
        return next((v for k, v in self.headers if k == name), "")

    def header_bytes(self) -> bytes:
        return b"WARC/1.0\r\n" + _fields_block(self.headers) + b"\r\n"

    def raw(self) -> bytes:
        return self.header_bytes() + self.block + b"\r\n\r\n"

    def member(self) -> bytes:
        """The record as Common Crawl stores it: one gzip member of its own (mtime 0: reproducible)."""
        return gzip.compress(self.raw(), compresslevel=6, mtime=0)


def _warcinfo(gen: _Generator, filename: str, fields: list[tuple[str, str]], when: datetime, wat: bool) -> Record:
    """The leading warcinfo record, in the header order of Common Crawl's WARC or WAT files."""
    block = _fields_block(fields)
    date, rid, name = ("WARC-Date", _warc_date(when)), ("WARC-Record-ID", gen.uuid()), ("WARC-Filename", filename)
    ctype = ("Content-Type", "application/warc-fields")
    if wat:
        return Record.build([("WARC-Type", "warcinfo"), date, name, rid, ctype], block, (block,), cl_at=5)
    return Record.build([("WARC-Type", "warcinfo"), date, rid, ctype, name], block, (block,))


def _page_records(gen: _Generator, page: Page, warcinfo_id: str) -> list[Record]:
    """The request, response and metadata records of one fetch, as Common Crawl's crawler writes them."""
    r = gen.rng
    when, ip = gen.tick(), f"93.184.{r.randint(0, 255)}.{r.randint(1, 254)}"
    date, url, parts = _warc_date(when), page.url, urlsplit(page.url)
    req = _REQUEST.format(path=parts.path, host=parts.netloc).encode("ascii")
    body = page.render()
    http = [("Date", format_datetime(when, usegmt=True)), ("Server", r.choice(_SERVERS)),
            ("Content-Type", f"text/html; charset={page.charset}")]
    http += [("Vary", "Accept-Encoding"), ("X-Crawler-Content-Encoding", "gzip")] if r.random() < 0.5 else []
    resp = b"HTTP/1.1 200 OK\r\n" + _fields_block([*http, ("Content-Length", str(len(body)))]) + b"\r\n" + body
    info = ("WARC-Warcinfo-ID", warcinfo_id)
    req_id, resp_id, meta_id = gen.uuid(), gen.uuid(), gen.uuid()
    request = Record.build([("WARC-Type", "request"), ("WARC-Date", date), ("WARC-Record-ID", req_id),
                            ("Content-Type", "application/http; msgtype=request"), info, ("WARC-IP-Address", ip),
                            ("WARC-Target-URI", url)], req, (b"", req))
    response = Record.build([("WARC-Type", "response"), ("WARC-Date", date), ("WARC-Record-ID", resp_id),
                             ("Content-Type", "application/http; msgtype=response"), info,
                             ("WARC-Concurrent-To", req_id), ("WARC-IP-Address", ip), ("WARC-Target-URI", url)],
                            resp, (body, resp))
    response.headers.append(("WARC-Identified-Payload-Type", "text/html"))
    cld2 = {"reliable": True, "text-bytes": len(body) // 3,
            "languages": [{"code": page.lang, "text-covered": 0.93, "score": 900.0, "name": _CLD2[page.lang]}]}
    meta = _fields_block([("fetchTimeMs", str(r.randint(40, 2500))), ("charset-detected", page.charset.upper()),
                          ("languages-cld2", json.dumps(cld2, separators=(",", ":")))])
    metadata = Record.build([("WARC-Type", "metadata"), ("WARC-Date", date), ("WARC-Record-ID", meta_id),
                             ("Content-Type", "application/warc-fields"), info, ("WARC-Concurrent-To", resp_id),
                             ("WARC-Target-URI", url)], meta, (meta, meta))
    return [request, response, metadata]


def _warc_records(gen: _Generator, pages: list[Page], filename: str) -> list[Record]:
    info = _warcinfo(gen, filename, [
        ("isPartOf", "CC-MAIN-sample"), ("publisher", "Common Crawl"), ("description", "Embedded sample of a crawl"),
        ("operator", "Common Crawl Admin (info@commoncrawl.org)"), ("hostname", "ip-10-0-0-1"),
        ("software", "Apache Nutch 1.19 (modified, https://github.com/commoncrawl/nutch/)"),
        ("format", "WARC File Format 1.1"),
        ("conformsTo", "https://iipc.github.io/warc-specifications/specifications/warc-format/warc-1.1/"),
    ], _CRAWL_START, wat=False)
    return [info] + [rec for page in pages for rec in _page_records(gen, page, info.get("WARC-Record-ID"))]


# --- WAT ----------------------------------------------------------------------------------------


def _html_metadata(page: Page) -> dict:
    head: dict = {"Metas": [{"charset": page.charset},
                            {"name": "viewport", "content": "width=device-width, initial-scale=1"}],
                  "Title": page.title}
    if page.base:
        head["Base"] = page.base
    links = []
    for tag, url, text in page.links:
        link = {"path": "IMG@/src" if tag == "img" else "A@/href", "url": url}
        if text is not None:
            link["alt" if tag == "img" else "text"] = text
        links.append(link)
    return {"Head": head, "Links": links}


def _payload_metadata(rec: Record, page: Page | None) -> dict:
    """ia-web-commons' ``Payload-Metadata`` of a WARC record."""
    rtype, block = rec.get("WARC-Type"), rec.block
    lines = [line.split(": ", 1) for line in block.decode("utf-8").split("\r\n") if line] if rtype in (
        "warcinfo", "metadata") else []
    if rtype == "warcinfo":
        meta: dict = {"Actual-Content-Type": "application/warc-fields", "WARC-Info-Metadata": dict(lines)}
    elif rtype == "metadata":
        records = [{"Name": k, "Value": v} for k, v in lines]
        meta = {"Actual-Content-Type": "application/metadata-fields",
                "WARC-Metadata-Metadata": {"Metadata-Records": records}}
    else:
        end = block.index(b"\r\n\r\n") + 4
        first, *header_lines = block[: end - 4].decode("latin-1").split("\r\n")
        a, b, c = first.split(" ", 2)
        kind = "request" if rtype == "request" else "response"
        http: dict = ({"Request-Message": {"Method": a, "Path": b, "Version": c}} if kind == "request"
                      else {"Response-Message": {"Status": b, "Version": a, "Reason": c}})
        http |= {"Headers-Length": str(end), "Headers": dict(line.split(": ", 1) for line in header_lines)}
        if page is not None and kind == "response":
            http["HTML-Metadata"] = _html_metadata(page)
        entity = block[end:]
        http |= {"Entity-Length": str(len(entity)), "Entity-Digest": _sha1(entity), "Entity-Trailing-Slop-Length": "0"}
        meta = {"Actual-Content-Type": f"application/http; msgtype={kind}", f"HTTP-{kind.capitalize()}-Metadata": http}
    return meta | {"Actual-Content-Length": str(len(block)), "Trailing-Slop-Length": "4", "Block-Digest": _sha1(block)}


def _wat_records(gen: _Generator, source: list[Record], pages: list[Page], source_name: str, name: str) -> list[Record]:
    """One JSON metadata record per source record, as ia-web-commons (Common Crawl's WAT tool) writes them."""
    when = _EXTRACT_START
    info = _warcinfo(gen, name, [
        ("Software-Info", "ia-web-commons.1.1.10-SNAPSHOT-20240513074037"),
        ("Extracted-Date", format_datetime(when, usegmt=True)), ("ip", "10.0.0.2"),
        ("hostname", "ip-10-0-0-2.ec2.internal"), ("format", "WARC File Format 1.0"),
        ("conformsTo", "http://bibnum.bnf.fr/WARC/WARC_ISO_28500_version1_latestdraft.pdf"),
    ], when, wat=True)
    by_url = {p.url: p for p in pages}
    out, offset = [info], 0
    for rec in source:
        member, raw = rec.member(), rec.raw()
        crc = zlib.crc32(raw)
        container = {"Filename": source_name, "Compressed": True, "Offset": str(offset), "Gzip-Metadata": {
            "Deflate-Length": str(len(member) - 18), "Header-Length": "10", "Footer-Length": "8",
            "Inflated-CRC": str(crc - (1 << 32) if crc >= 1 << 31 else crc), "Inflated-Length": str(len(raw))}}
        offset += len(member)
        target = rec.get("WARC-Target-URI")
        envelope = {"Payload-Metadata": _payload_metadata(rec, by_url.get(target)), "Format": "WARC/1.0",
                    "WARC-Header-Length": str(len(rec.header_bytes())), "WARC-Header-Metadata": dict(rec.headers)}
        doc = {"Container": container, "Envelope": envelope}
        block = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        when += timedelta(seconds=gen.rng.randint(0, 2))
        out.append(Record.build([("WARC-Type", "metadata"), ("WARC-Target-URI", target or source_name),
                                 ("WARC-Date", _warc_date(when)), ("WARC-Record-ID", gen.uuid()),
                                 ("WARC-Refers-To", rec.get("WARC-Record-ID")), ("Content-Type", "application/json")],
                                block, (block, block), cl_at=6))
    return out


# --- files --------------------------------------------------------------------------------------


def write_sample(
    out_dir: str, seed: int = 0, pages: int = 300, image_host: str = "http://127.0.0.1:8765", options: StorageOptions | None = None
) -> dict:
    """Write the sample under ``out_dir/crawl/`` (a local folder or an s3:// prefix); return its manifest.

    The pages are split in thirds: two WAT files (the WAT of an in-memory WARC each) and one WARC file
    (request/response/metadata records with the HTML). Manifest: ``files`` (paths), ``pages``,
    ``image_links`` (``<img>`` links, all kinds) and ``image_names`` (the names under
    ``{image_host}/images/`` that links resolve to, for a server to provide).
    """
    if pages < 3:
        raise InputError(f"pages must be at least 3, got {pages}")
    gen = _Generator(seed, image_host, image_count(pages))
    all_pages = [gen.page(i) for i in range(pages)]
    third = pages // 3
    groups = [all_pages[:third], all_pages[third : 2 * third], all_pages[2 * third :]]
    crawl = storage.join(out_dir, "crawl")
    files = []
    for name, group in zip((*WAT_FILES, WARC_FILE), groups):
        source_name = name.replace(".warc.wat.gz", ".warc.gz")
        records = _warc_records(gen, group, source_name)
        if name != WARC_FILE:
            records = _wat_records(gen, records, group, source_name, name)
        path = storage.join(crawl, name)
        # same bytes, same file: an unchanged sample keeps its mtime, so later stages stay current
        storage.write_bytes_if_changed(path, b"".join(rec.member() for rec in records), options)
        files.append(path)
        log.info("wrote %s: %d pages, %d records", path, len(group), len(records))
    prefix = f"{gen.host}/images/"
    img = [urljoin(p.base or p.url, url) for p in all_pages for tag, url, _ in p.links if tag == "img"]
    names = sorted({u[len(prefix) :] for u in img if u.startswith(prefix)})
    return {"files": files, "pages": pages, "image_links": len(img), "image_names": names}
