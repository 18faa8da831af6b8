"""What the tests share: data they make themselves (IDX files, digit-like images), the
``denoiser`` command run as a user runs it, a free local port."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import gzip
import hashlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from denoiser.data.datasets import IdxDataset, IdxFile

#: The repository's root (tests run subprocesses there).
ROOT = Path(__file__).resolve().parent.parent


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an IDX file (type 0x08)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def draw_digits(n: int, *, seed: int = 0, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """``n`` digit-like uint8 images (bright strokes on black) and labels 0-9."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    for i in range(n):
        canvas = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(canvas)
        for _ in range(int(rng.integers(2, 4))):
            x0, y0, x1, y1 = rng.integers(5, size - 5, size=4)
            draw.line([(int(x0), int(y0)), (int(x1), int(y1))], fill=255, width=int(rng.integers(2, 4)))
        if labels[i] % 2 == 0:
            c = int(rng.integers(9, size - 9))
            draw.ellipse([c - 5, c - 6, c + 5, c + 6], outline=255, width=2)
        images[i] = np.asarray(canvas)
    return images, labels


def typed(n: int, alphabet: str, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 (28, 28) characters of ``alphabet`` typed in Pillow's font, bright on black,
    of random size and slant; and each one's index in ``alphabet``."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), np.uint8)
    labels = rng.integers(0, len(alphabet), size=n).astype(np.uint8)
    for i in range(n):
        canvas = Image.new("L", (28, 28), 0)
        ImageDraw.Draw(canvas).text((14, 14), alphabet[labels[i]], fill=255, anchor="mm",
                                    font=ImageFont.load_default(size=int(rng.integers(18, 25))))
        images[i] = np.asarray(canvas.rotate(float(rng.uniform(-12, 12)), resample=Image.BILINEAR))
    return images, labels


def write_idx_dataset(folder: Path, *, n_train: int = 600, n_test: int = 100, seed: int = 0,
                      gz: bool = True) -> IdxDataset:
    """Write the four MNIST-layout files into ``folder``; return a spec with their checksums."""
    folder.mkdir(parents=True, exist_ok=True)
    train_x, train_y = draw_digits(n_train, seed=seed)
    test_x, test_y = draw_digits(n_test, seed=seed + 1)
    specs = []
    for name, array in (("train-images-idx3-ubyte", train_x), ("train-labels-idx1-ubyte", train_y),
                        ("t10k-images-idx3-ubyte", test_x), ("t10k-labels-idx1-ubyte", test_y)):
        content = idx_bytes(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(content))
        else:
            (folder / name).write_bytes(content)
        specs.append(IdxFile(name, array.shape, md5=hashlib.md5(content).hexdigest()))
    return IdxDataset("synthetic", *specs)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + \
        chunk(b"IEND", b"")


def digit_scan(size: tuple[int, int], *, seed: int = 0, noise: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """(clean, noisy) float gray (H, W) images: digit strokes, light on dark."""
    h, w = size
    rng = np.random.default_rng(seed)
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    for _ in range(3):
        x0, x1 = rng.integers(2, max(3, w - 2), size=2)
        y0, y1 = rng.integers(2, max(3, h - 2), size=2)
        draw.line([(int(x0), int(y0)), (int(x1), int(y1))], fill=255, width=max(2, min(h, w) // 10))
    clean = np.asarray(canvas, dtype=np.float32) / 255.0
    noisy = np.clip(clean + noise * rng.standard_normal(clean.shape), 0, 1).astype(np.float32)
    return clean, noisy


def make_messy_tree(root: Path, outside: Path) -> dict[str, str]:
    """Every format, mode and bit depth, odd sizes, nesting, hidden and bad files.

    Returns {relative path: expected status} for the files the cleaner should report.
    """
    expected: dict[str, str] = {}

    def put(rel: str, image: Image.Image, status: str = "ok", **save) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, **save)
        expected[rel] = status

    _, noisy = digit_scan((28, 28), seed=1)
    u8 = (noisy * 255).astype(np.uint8)
    gray = Image.fromarray(u8, "L")
    put("mnist-like.png", gray)
    put("modes/binary.png", gray.point(lambda v: 255 if v > 128 else 0).convert("1"))
    put("modes/la.png", Image.fromarray(np.dstack([u8, np.full_like(u8, 200)]), "LA"))
    put("modes/palette.png", gray.convert("P"))
    put("modes/rgb.png", gray.convert("RGB"))
    alpha = (np.arange(784).reshape(28, 28) % 256).astype(np.uint8)
    put("modes/rgba.png", Image.fromarray(np.dstack([u8, u8, u8, alpha]), "RGBA"))
    put("modes/gray16.png", Image.fromarray((noisy * 65535).astype(np.uint16)))
    put("modes/int32.tif", Image.fromarray((noisy * 65535).astype(np.int32)))
    put("modes/float.tif", Image.fromarray(noisy.astype(np.float32), "F"))
    put("formats/scan.JPG", gray.convert("RGB"), quality=90)
    put("formats/scan.jpeg", gray)
    put("formats/scan.bmp", gray)
    put("formats/scan.tiff", Image.fromarray((noisy * 65535).astype(np.uint16)))
    put("formats/scan.webp", gray.convert("RGB"), lossless=True)
    put("formats/scan.gif", gray.convert("P"))
    for size in [(16, 16), (27, 31), (300, 300), (28, 84)]:
        _, n = digit_scan(size, seed=sum(size))
        put(f"sizes/{size[1]}x{size[0]}.png", Image.fromarray((n * 255).astype(np.uint8), "L"))
    _, n = digit_scan((28, 28), seed=9)
    put("inverted/dark-on-light.png", Image.fromarray(((1 - n) * 255).astype(np.uint8), "L"))
    put("nested folder/with spaces/ünïcödé 数字.png", gray)

    def bad(rel: str, content: bytes) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        expected[rel] = "error"

    bad("bad/empty.png", b"")
    bad("bad/not-an-image.png", b"this is a text file, not a PNG")
    full = root / "mnist-like.png"
    bad("bad/truncated.png", full.read_bytes()[: len(full.read_bytes()) // 2])
    bad("bad/bomb.png", png_header_only(20000, 20000))
    (root / "bad/dangling.png").symlink_to((root / "bad").resolve() / "no-such-file.png")
    expected["bad/dangling.png"] = "error"

    # Left alone: hidden files and folders, other file types, a link leading outside.
    (root / ".hidden.png").write_bytes(full.read_bytes())
    (root / ".cache").mkdir()
    (root / ".cache/x.png").write_bytes(full.read_bytes())
    (root / "notes.txt").write_text("not an image")
    outside.mkdir(parents=True, exist_ok=True)
    gray.save(outside / "secret.png")
    (root / "link-outside.png").symlink_to((outside / "secret.png").resolve())
    expected["link-outside.png"] = "skipped"
    return expected


#: A folder that every xdist worker of this test run shares (set by tests/conftest.py), or None.
SHARED: Path | None = None


def _migrate(home: Path) -> None:
    prefect = Path(sys.executable).with_name("prefect")
    command = [str(prefect)] if prefect.exists() else [sys.executable, "-m", "prefect"]
    subprocess.run(command + ["server", "database", "upgrade", "-y"], check=True, capture_output=True,
                   env={**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": ""}, timeout=300)


@functools.cache
def _prefect_db_template() -> Path:
    """A Prefect database with every migration applied (8 s to make), made once per test run
    where the workers share a folder, else once per test process."""
    if SHARED is not None:
        return made_once(SHARED, "prefect-db-template", _migrate) / "prefect.db"
    home = Path(tempfile.mkdtemp(prefix="prefect-db-template-"))
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    _migrate(home)
    return home / "prefect.db"


def seed_prefect_home(home: str | os.PathLike[str]) -> None:
    """Give a new PREFECT_HOME a migrated, empty database: a command's temporary server then
    starts in about 15 s instead of 20 (the migrations of a fresh database, measured on 2 cores)."""
    home = Path(home)
    if not (home / "prefect.db").exists():
        home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_prefect_db_template(), home / "prefect.db")


def denoiser(*args, cwd=None, env=None, timeout=300) -> subprocess.CompletedProcess:
    """Run the ``denoiser`` command in a subprocess, as a user would."""
    script = Path(sys.executable).with_name("denoiser")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "flows.cli"]
    full_env = {**os.environ, **(env or {})}
    if env and "PREFECT_HOME" in env and not env.get("PREFECT_API_URL"):
        seed_prefect_home(env["PREFECT_HOME"])
    return subprocess.run(command + list(args), capture_output=True, text=True, cwd=cwd,
                          env=full_env, timeout=timeout)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: Root ignores file permissions unless it lacks CAP_DAC_OVERRIDE: a command prefixed with
#: this runs without it, so permission tests mean the same as root and as a user.
WITHOUT_ROOT_OVERRIDE = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"] \
    if os.geteuid() == 0 and shutil.which("setpriv") else []


def digit_png(seed: int = 3) -> Image.Image:
    """A noisy 28x28 digit-like scan as an 8-bit gray image."""
    _, noisy = digit_scan((28, 28), seed=seed)
    return Image.fromarray((noisy * 255).astype(np.uint8), "L")


@contextlib.contextmanager
def webhook_server():
    """A local HTTP endpoint that keeps the JSON posted to it: (its URL, the bodies so far)."""
    posted: list[dict] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the stdlib's name
            posted.append(json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0)))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", posted
    finally:
        server.shutdown()


@contextlib.contextmanager
def bundle_server(files: dict[str, bytes], *, cut_first_at: int | None = None, stall: bool = False):
    """A local HTTP server of ``files`` (name -> bytes) that honours Range requests; with
    ``cut_first_at``, the first answer ends after that many bytes (a dropped connection);
    with ``stall``, it answers nothing at all. Yields (base URL, the Range header of each GET)."""
    ranges: list[str | None] = []

    class Files(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            ranges.append(self.headers.get("Range"))
            if stall:
                time.sleep(30)
                return
            data = files.get(self.path.lstrip("/"))
            if data is None:
                self.send_error(404)
                return
            start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            body = data[start:]
            if cut_first_at is not None and len(ranges) == 1:
                body = body[:cut_first_at]  # then the connection closes short of Content-Length
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", ranges
    finally:
        server.shutdown()
        server.server_close()


def shared_folder(tmp_path_factory) -> Path:
    """This test run's folder that all its xdist workers share (pytest's base temp folder
    without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def made_once(shared: Path, name: str, make: Callable[[Path], object]) -> Path:
    """The folder ``shared / name``, made by ``make(folder)`` once per test run and shared by
    the xdist workers: the first worker makes it (in a folder of its own, renamed when whole);
    the others wait for it at a file lock. A model trained per worker was trained twice per CI run."""
    folder = shared / name
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not folder.exists():
            partial = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=shared))
            make(partial)
            partial.rename(folder)
    return folder
