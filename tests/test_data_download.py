"""Download logic against a local HTTP server on 127.0.0.1 (no network)."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from mvbook.data.download import (
    ChecksumError,
    DownloadError,
    download,
    read_ledger,
    verify_against_ledger,
)

PAYLOAD = bytes(range(256)) * 400  # 102400 bytes


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    cut_after: dict[str, int] = {}  # path -> bytes sent before dropping the connection (once)
    always_fail: set[str] = set()
    ignore_range: set[str] = set()
    log: list[tuple[str, str | None]] = []

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        self.log.append((self.path, self.headers.get("Range")))
        if self.path in self.always_fail:
            self.send_response(503)
            self.end_headers()
            return
        data = self.files.get(self.path)
        if data is None:
            self.send_response(404)
            self.end_headers()
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and self.path not in self.ignore_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = self.cut_after.pop(self.path, None)
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture()
def server():
    _Handler.files = {"/a.bin": PAYLOAD, "/b.bin": PAYLOAD[:1000]}
    _Handler.cut_after = {}
    _Handler.always_fail = set()
    _Handler.ignore_range = set()
    _Handler.log = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler
    httpd.shutdown()
    httpd.server_close()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_download_and_ledger(server, tmp_path):
    url, h = server
    res = download(f"{url}/a.bin", tmp_path / "x" / "a.bin", sha256=_sha(PAYLOAD), progress=False,
                   ledger_root=tmp_path)  # fmt: skip
    assert res.downloaded and (tmp_path / "x" / "a.bin").read_bytes() == PAYLOAD
    assert read_ledger(tmp_path) == {"x/a.bin": _sha(PAYLOAD)}
    # second call: nothing downloaded, file untouched
    n = len(h.log)
    res2 = download(f"{url}/a.bin", tmp_path / "x" / "a.bin", progress=False, ledger_root=tmp_path)
    assert not res2.downloaded and len(h.log) == n
    assert verify_against_ledger(tmp_path) == []
    (tmp_path / "x" / "a.bin").write_bytes(b"corrupt")
    assert any("does not match" in p for p in verify_against_ledger(tmp_path))
    with pytest.raises(ChecksumError, match="left untouched"):
        download(f"{url}/a.bin", tmp_path / "x" / "a.bin", progress=False, ledger_root=tmp_path)
    assert (tmp_path / "x" / "a.bin").read_bytes() == b"corrupt"


def test_resume_after_cut_connection(server, tmp_path):
    url, h = server
    h.cut_after["/a.bin"] = 30000
    res = download(f"{url}/a.bin", tmp_path / "a.bin", sha256=_sha(PAYLOAD), backoff=0.01,
                   progress=False, chunk_size=4096)  # fmt: skip
    assert res.attempts == 2 and (tmp_path / "a.bin").read_bytes() == PAYLOAD
    ranges = [r for p, r in h.log if p == "/a.bin"]
    assert ranges[0] is None and ranges[1] == "bytes=30000-"
    assert not (tmp_path / "a.bin.part").exists()


def test_resume_of_partial_file_from_earlier_run(server, tmp_path):
    url, h = server
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD[:5000])
    download(f"{url}/a.bin", tmp_path / "a.bin", sha256=_sha(PAYLOAD), progress=False)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD
    assert h.log[0][1] == "bytes=5000-"
    # a server that ignores Range: start again from zero, still correct
    h.ignore_range.add("/b.bin")
    (tmp_path / "b.bin.part").write_bytes(b"\x00" * 300)
    download(f"{url}/b.bin", tmp_path / "b.bin", sha256=_sha(PAYLOAD[:1000]), progress=False)
    assert (tmp_path / "b.bin").read_bytes() == PAYLOAD[:1000]


def test_checksum_mismatch_is_clear_and_loses_nothing(server, tmp_path):
    url, _ = server
    with pytest.raises(ChecksumError, match="differs from the expected") as err:
        download(f"{url}/b.bin", tmp_path / "b.bin", sha256="0" * 64, progress=False)
    assert "sha256-mismatch" in str(err.value)
    assert not (tmp_path / "b.bin").exists()
    assert (tmp_path / "b.bin.sha256-mismatch").read_bytes() == PAYLOAD[:1000]
    assert read_ledger(tmp_path) == {}


def test_retries_are_bounded(server, tmp_path):
    url, h = server
    h.always_fail.add("/a.bin")
    with pytest.raises(DownloadError, match="gave up after 3 attempts"):
        download(f"{url}/a.bin", tmp_path / "a.bin", retries=2, backoff=0.01, progress=False)
    assert sum(1 for p, _ in h.log if p == "/a.bin") == 3
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(f"{url}/missing.bin", tmp_path / "m.bin", retries=5, backoff=0.01, progress=False)
    assert sum(1 for p, _ in h.log if p == "/missing.bin") == 1  # client errors are not retried


def test_panoptic_fetch_layout(server, tmp_path):
    from mvbook.data import panoptic

    url, h = server
    seq = "160906_pizza1"
    for _, rel in panoptic.sequence_urls(seq, (3, 6), "http://x"):
        src = rel.replace("hdVideos/", "videos/hd_shared_crf20/")
        h.files["/" + src] = rel.encode()
    h.cut_after[f"/{seq}/videos/hd_shared_crf20/hd_00_03.mp4"] = 5
    paths = panoptic.fetch(tmp_path, [seq], (3, 6), base_url=url, progress=False, retries=2)
    rels = sorted(str(Path(p).relative_to(tmp_path)) for p in paths)
    assert rels == sorted([f"{seq}/calibration_{seq}.json", f"{seq}/hdPose3d_stage1_coco19.tar",
                           f"{seq}/hdVideos/hd_00_03.mp4", f"{seq}/hdVideos/hd_00_06.mp4"])  # fmt: skip
    assert (
        tmp_path / seq / "hdVideos" / "hd_00_03.mp4"
    ).read_bytes() == f"{seq}/hdVideos/hd_00_03.mp4".encode()
    assert len(read_ledger(tmp_path)) == 4
    from mvbook.data.cli import check_raw

    assert check_raw("panoptic", tmp_path, sequences=[seq], cameras=(3, 6)) == []


def test_complete_partial_file_and_416(server, tmp_path):
    url, h = server
    (tmp_path / "b.bin.part").write_bytes(PAYLOAD[:1000])  # complete but not yet renamed
    res = download(f"{url}/b.bin", tmp_path / "b.bin", sha256=_sha(PAYLOAD[:1000]), progress=False)
    assert res.path.read_bytes() == PAYLOAD[:1000]
    (tmp_path / "c.bin.part").write_bytes(PAYLOAD[:1500])  # larger than the remote file
    h.files["/c.bin"] = PAYLOAD[:1000]
    with pytest.raises(DownloadError, match="remote file changed"):
        download(f"{url}/c.bin", tmp_path / "c.bin", progress=False)
    assert (tmp_path / "c.bin.part").stat().st_size == 1500
