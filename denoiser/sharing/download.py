"""A model bundle fetched by URL into a cache folder, as the field fetches pretrained weights.

    path, expected = fetch("https://example.org/unet.bundle#sha256=ab12...", cache_dir)

The expected sha256 may ride in the URL's fragment (``#sha256=<64 hex>``, never sent to the
server) or be given apart. A finished download is kept under a name derived from the URL
and reused; an interrupted one is kept as ``.part`` and resumed with an HTTP range request
where the server allows it. Each try that fails (no connection, a reset, no data for
``timeout`` seconds) is retried, after 1, 2, then 4 seconds; the last failure is one line
naming the URL and why. Progress is shown on a terminal.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urldefrag

from tqdm.auto import tqdm

from denoiser.models.checkpoint import Checkpoint
from denoiser.sharing.bundle import SUFFIX, BundleError, file_digest, import_bundle, is_bundle_reference

TIMEOUT_SECONDS = 30.0
TRIES = 4
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def obtain(reference: str, models_dir: str | os.PathLike[str], *, sha256: str | None = None,
           timeout: float = TIMEOUT_SECONDS) -> Checkpoint:
    """The cleaning model of the bundle ``reference`` (a URL or a file), checked and put into
    ``models_dir`` (nothing is written when a check fails). Downloads are cached in
    ``models_dir/.downloads``."""
    if not reference.startswith(("http://", "https://")):
        return import_bundle(reference, models_dir, sha256=sha256.lower() if sha256 else None)
    path, expected = fetch(reference, Path(models_dir) / ".downloads", sha256=sha256, timeout=timeout)
    try:
        return import_bundle(path, models_dir, sha256=expected)
    except BundleError as error:  # a damaged download is fetched afresh next time
        path.unlink(missing_ok=True)
        raise BundleError(str(error).replace(str(path), reference)) from None


def model_reference(reference: str | None, models_dir: str | os.PathLike[str]) -> str | None:
    """What ``--model`` names, as the store knows it: a bundle (a URL or a ``.bundle`` file)
    checked, put into ``models_dir`` and named by its model id; anything else unchanged."""
    if reference and is_bundle_reference(reference):
        return obtain(reference, models_dir).model_id
    return reference


def split_digest(url: str, sha256: str | None = None) -> tuple[str, str | None]:
    """The URL without its fragment, and the expected digest (from ``sha256`` or the
    fragment ``sha256=...``; both given must agree). A malformed one is a one-line error."""
    bare, fragment = urldefrag(url)
    from_url = fragment[len("sha256="):] if fragment.startswith("sha256=") else None
    if fragment and from_url is None:
        raise BundleError(f"{url}: the only fragment a bundle URL may carry is #sha256=<64 hex digits>")
    for given in (from_url, sha256):
        if given is not None and not _HEX64.fullmatch(given):
            raise BundleError(f"{given!r} is not a sha256 (64 hex digits)")
    if from_url and sha256 and from_url.lower() != sha256.lower():
        raise BundleError(f"{url}: the URL's sha256 and --sha256 differ")
    chosen = sha256 or from_url
    return bare, chosen.lower() if chosen else None


def fetch(url: str, cache_dir: str | os.PathLike[str], *, sha256: str | None = None,
          timeout: float = TIMEOUT_SECONDS, tries: int = TRIES) -> tuple[Path, str | None]:
    """The bundle at ``url`` as a local file in ``cache_dir`` (downloaded, resumed or reused)
    and the digest it is expected to have (None: none was given)."""
    bare, expected = split_digest(url, sha256)
    if not bare.startswith(("http://", "https://")):
        raise BundleError(f"{url}: only http:// and https:// URLs are fetched")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(bare.encode()).hexdigest()[:16]
    name = Path(bare.rsplit("/", 1)[-1]).stem or "bundle"
    target = cache_dir / f"{re.sub(r'[^A-Za-z0-9._-]', '_', name)[:60]}-{key}{SUFFIX}"
    if target.is_file() and (expected is None or file_digest(target) == expected):
        return target, expected
    partial = target.with_name(target.name + ".part")
    for attempt in range(1, tries + 1):
        try:
            _download(bare, partial, timeout)
            break
        except _Permanent as error:
            raise BundleError(f"{bare}: {error}") from None
        except (OSError, urllib.error.URLError) as error:
            reason = _reason(error, timeout)
            if attempt == tries:
                raise BundleError(f"{bare}: download failed after {tries} tries ({reason}); the part "
                                  f"fetched is kept and resumed next time") from None
            time.sleep(2 ** (attempt - 1))
    os.replace(partial, target)
    return target, expected


class _Permanent(Exception):
    """A failure a retry cannot mend (404, 403, ...)."""


def _download(url: str, partial: Path, timeout: float) -> None:
    have = partial.stat().st_size if partial.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # nothing left to fetch past what we have
            return
        if 400 <= error.code < 500 and error.code not in (408, 429):
            raise _Permanent(f"the server answered {error.code} {error.reason}") from None
        raise
    with response:
        resumed = response.status == 206
        total = response.headers.get("Content-Length")
        total = int(total) + (have if resumed else 0) if total and total.isdigit() else None
        mode = "ab" if resumed else "wb"
        with open(partial, mode) as out, tqdm(total=total, initial=have if resumed else 0, unit="B",
                                               unit_scale=True, desc=f"downloading {url.rsplit('/', 1)[-1]}",
                                               leave=False, disable=None) as bar:
            while block := response.read(1 << 16):
                out.write(block)
                bar.update(len(block))
        if total is not None and partial.stat().st_size < total:
            raise ConnectionError(f"the connection ended after {partial.stat().st_size:,} of {total:,} bytes")


def _reason(error: BaseException, timeout: float) -> str:
    text = str(getattr(error, "reason", error))
    if "timed out" in text or isinstance(getattr(error, "reason", error), TimeoutError):
        return f"no data for {timeout:g} s"
    return text.splitlines()[0] if text else type(error).__name__

