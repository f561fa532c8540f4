"""Resumable, verified HTTP downloads for raw dataset files.

:func:`download` fetches one URL into a file:

- bytes go to ``<dest>.part`` first; an interrupted transfer resumes with an HTTP ``Range``
  request (a server that ignores ``Range`` makes it restart from zero);
- connection errors and short reads are retried a bounded number of times (``retries``), with
  exponential back-off; every retry resumes from the bytes already received;
- when complete, the size is checked against ``Content-Length``/``Content-Range`` and, when an
  expected ``sha256`` is given, the digest: on a mismatch the bytes are kept as
  ``<dest>.sha256-mismatch`` (nothing is deleted) and :class:`ChecksumError` explains what to do;
- a file that already exists at ``dest`` is never modified: it is verified (if a checksum is
  known) and kept.

Digests of completed downloads are recorded in a ledger ``SHA256SUMS`` next to them (one
``<sha256>  <relative path>`` line per file, the ``sha256sum`` format), so that later runs and
``mvbook data check`` detect corrupted raw files even for sources that publish no checksums.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path

LEDGER = "SHA256SUMS"
USER_AGENT = "mvbook-data/1.0 (+https://github.com; research dataset download)"


class DownloadError(RuntimeError):
    """A download failed after its bounded retries (the partial file is kept for resuming)."""


class ChecksumError(DownloadError):
    """A file's sha256 differs from the expected one (nothing was deleted)."""


@dataclass
class DownloadResult:
    path: Path
    sha256: str
    size: int
    downloaded: bool  # False when the file was already there
    attempts: int


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


# -- ledger ------------------------------------------------------------------------------------


def read_ledger(folder: str | os.PathLike) -> dict[str, str]:
    """``{relative path: sha256}`` from ``folder/SHA256SUMS`` (empty if none)."""
    path = Path(folder) / LEDGER
    out: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            m = re.match(r"^([0-9a-f]{64}) [ *](.+)$", line.strip())
            if m:
                out[m.group(2)] = m.group(1)
    return out


def record_in_ledger(folder: str | os.PathLike, relpath: str, digest: str) -> None:
    """Add or update one ``<sha256>  <relpath>`` line (written atomically)."""
    folder = Path(folder)
    entries = read_ledger(folder)
    entries[relpath] = digest
    tmp = folder / f".{LEDGER}.tmp"
    tmp.write_text("".join(f"{d}  {p}\n" for p, d in sorted(entries.items())))
    os.replace(tmp, folder / LEDGER)


def verify_against_ledger(folder: str | os.PathLike) -> list[str]:
    """Problems (missing files, digest mismatches) of the files listed in the ledger."""
    folder = Path(folder)
    problems = []
    for rel, digest in read_ledger(folder).items():
        p = folder / rel
        if not p.exists():
            problems.append(f"{p} listed in {LEDGER} is missing")
        elif sha256_of(p) != digest:
            problems.append(f"{p} does not match its recorded sha256 (corrupted or changed)")
    return problems


# -- download ----------------------------------------------------------------------------------


def _total_from_headers(status: int, headers, offset: int) -> int | None:
    if status == 206:
        cr = headers.get("Content-Range", "")
        m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", cr)
        if m and m.group(3) != "*":
            return int(m.group(3))
        cl = headers.get("Content-Length")
        return offset + int(cl) if cl is not None else None
    cl = headers.get("Content-Length")
    return int(cl) if cl is not None else None


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 60.0,
    chunk_size: int = 1 << 20,
    ledger_root: str | os.PathLike | None = None,
    progress: bool | Callable[[int, int | None], None] = True,
) -> DownloadResult:
    """Download ``url`` to ``dest`` (resumable, bounded retries, verified).

    Args:
        url: http(s) URL.
        dest: final path. Never overwritten if it exists.
        sha256: expected hex digest or None (then only the size is checked and the digest is
            recorded in the ledger).
        retries: attempts after the first one (connection errors, timeouts, short reads).
        backoff: seconds before the first retry, doubled after each.
        ledger_root: folder whose ``SHA256SUMS`` records the digest (default: ``dest``'s folder).
        progress: show a tqdm bar (True), nothing (False), or a callback ``(done, total)``.

    Returns:
        :class:`DownloadResult`. Raises :class:`ChecksumError` or :class:`DownloadError`.
    """
    dest = Path(dest)
    ledger_root = Path(ledger_root) if ledger_root is not None else dest.parent
    rel = os.path.relpath(dest, ledger_root)
    known = sha256 or read_ledger(ledger_root).get(rel)
    if dest.exists():
        digest = sha256_of(dest)
        if known is not None and digest != known:
            raise ChecksumError(
                f"{dest} exists but its sha256 {digest} differs from the expected {known}. "
                f"It was left untouched: move it away and rerun to download it again."
            )
        if known is None:
            record_in_ledger(ledger_root, rel, digest)
        return DownloadResult(dest, digest, dest.stat().st_size, False, 0)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    attempts = 0
    total: int | None = None
    bar = None
    last_error: BaseException | None = None
    while True:
        attempts += 1
        offset = part.stat().st_size if part.exists() else 0
        req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        if offset:
            req.add_header("Range", f"bytes={offset}-")
        try:
            try:
                resp = urllib.request.urlopen(req, timeout=timeout)
            except urllib.error.HTTPError as err:
                if err.code == 416 and offset:
                    m = re.match(r"bytes \*/(\d+)", err.headers.get("Content-Range", "") or "")
                    remote = int(m.group(1)) if m else total
                    if remote in (None, offset):
                        break  # the partial file is already complete
                    raise DownloadError(
                        f"{part} has {offset} bytes but {url} has {remote}: the remote file "
                        f"changed; move {part} away and rerun"
                    ) from err
                if 400 <= err.code < 500 and err.code not in (408, 429):
                    raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from err
                raise
            with resp:
                status = resp.status
                if offset and status != 206:
                    offset = 0  # server ignored Range: start again
                total = _total_from_headers(status, resp.headers, offset)
                if bar is None and progress is True:
                    from tqdm.auto import tqdm

                    bar = tqdm(
                        total=total,
                        initial=offset,
                        unit="B",
                        unit_scale=True,
                        desc=dest.name,
                        file=sys.stderr,
                        leave=False,
                    )
                elif bar is not None:
                    bar.reset(total=total)
                    bar.update(offset)
                with open(part, "ab" if offset else "wb") as f:
                    done = offset
                    while True:
                        block = resp.read(chunk_size)
                        if not block:
                            break
                        f.write(block)
                        done += len(block)
                        if bar is not None:
                            bar.update(len(block))
                        elif callable(progress):
                            progress(done, total)
            size = part.stat().st_size
            if total is not None and size < total:
                raise ConnectionError(f"connection closed at {size} of {total} bytes")
            if total is not None and size > total:
                raise DownloadError(f"{part} has {size} bytes, more than the {total} announced")
            break
        except DownloadError:
            if bar is not None:
                bar.close()
            raise
        except (
            urllib.error.URLError,
            ConnectionError,
            TimeoutError,
            socket.timeout,
            HTTPException,
            OSError,
        ) as err:
            last_error = err
            if attempts > retries:
                if bar is not None:
                    bar.close()
                have = part.stat().st_size if part.exists() else 0
                raise DownloadError(
                    f"{url}: gave up after {attempts} attempts ({err}); {have} bytes kept in "
                    f"{part}, rerun to resume"
                ) from err
            time.sleep(backoff * 2 ** (attempts - 1))
    if bar is not None:
        bar.close()
    del last_error
    digest = sha256_of(part)
    if known is not None and digest != known:
        bad = dest.with_name(dest.name + ".sha256-mismatch")
        os.replace(part, bad)
        raise ChecksumError(
            f"{url}: downloaded sha256 {digest} differs from the expected {known}. The bytes "
            f"were kept as {bad} (nothing deleted); the source may have changed or the transfer "
            f"was corrupted: delete {bad} and rerun, or check the expected checksum."
        )
    os.replace(part, dest)
    record_in_ledger(ledger_root, rel, digest)
    return DownloadResult(dest, digest, dest.stat().st_size, True, attempts)
