"""The KLUE download, against a local HTTP server on 127.0.0.1 (no other address is contacted)."""
from __future__ import annotations

import functools
import hashlib
import http.server
import os
import socket
import threading
from pathlib import Path
from typing import Iterator

import pytest

from ner_lit.corpus.klue import KLUE_NER_FILES, download_klue_ner, read_klue_tsv, write_klue_tsv
from ner_lit.corpus.records import CorpusError, Sentence

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


class Server:
    """A static file server over a directory that counts the requests it answers."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy from the environment would carry the loopback requests off the machine."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "served"
    root.mkdir()
    dev = [Sentence("d1", "서울에서 봄", ["B-LC", "I-LC", "O", "O", "O", "O"])]
    train = [Sentence("t1", "김 철수", ["B-PS", "I-PS", "I-PS", "I-PS"]), Sentence("t2", "봄")]
    write_klue_tsv(dev, root / KLUE_NER_FILES["dev"])
    write_klue_tsv(train, root / KLUE_NER_FILES["train"])
    s = Server(root)
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def expected(server: Server) -> dict[str, object]:
    """The check values that match the served files."""
    dev_bytes = (server.root / KLUE_NER_FILES["dev"]).read_bytes()
    return {"expected_dev_sha256": hashlib.sha256(dev_bytes).hexdigest(), "expected_train_sentences": 2}


def test_download_fetches_both_files_into_the_cache(server: Server, tmp_path: Path) -> None:
    paths = download_klue_ner(tmp_path / "cache", server.url, timeout=10, **expected(server))
    assert paths["dev"].read_bytes() == (server.root / KLUE_NER_FILES["dev"]).read_bytes()
    assert [s.id for s in read_klue_tsv(paths["train"])] == ["t1", "t2"]


def test_download_reuses_valid_cached_files_without_a_request(server: Server, tmp_path: Path) -> None:
    download_klue_ner(tmp_path / "cache", server.url, timeout=10, **expected(server))
    server.requests.clear()
    paths = download_klue_ner(tmp_path / "cache", server.url, timeout=10, **expected(server))
    assert server.requests == []
    assert set(paths) == {"train", "dev"}


def test_download_error_corrupted_dev_file_leaves_nothing_in_the_cache(server: Server, tmp_path: Path) -> None:
    checks = expected(server)
    with open(server.root / KLUE_NER_FILES["dev"], "ab") as f:
        f.write(b"tampered")
    with pytest.raises(CorpusError, match=f"sha256 [0-9a-f]{{64}}, expected {checks['expected_dev_sha256']}"):
        download_klue_ner(tmp_path / "cache", server.url, timeout=10, **checks)
    assert os.listdir(tmp_path / "cache") == []


def test_download_error_wrong_train_sentence_count_leaves_nothing_in_the_cache(server: Server, tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="2 sentences, expected 3"):
        download_klue_ner(tmp_path / "cache", server.url, timeout=10, **expected(server) | {"expected_train_sentences": 3})
    assert os.listdir(tmp_path / "cache") == []


def test_download_error_unreachable_server_says_to_pass_local_files(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port that was free a moment ago refuses connections
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    with pytest.raises(CorpusError) as exc:
        download_klue_ner(tmp_path / "cache", url, timeout=5)
    message = str(exc.value)
    assert f"{url}klue-ner-v1.1_dev.tsv could not be reached" in message
    assert "pass local files with --data.data_dir DIR --data.train_file FILE --data.val_file FILE instead" in message
    assert os.listdir(tmp_path / "cache") == []
