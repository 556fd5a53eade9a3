"""Fixtures for sharing tests: one small real store, and loopback servers the tests start themselves."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import zarr


@pytest.fixture(scope="session")
def small_store(tiny_store) -> Path:
    """8 synthetic 64-px tiles with tiny-vit features (random weights): a real store, built once."""
    return tiny_store(8)


def _array_paths(group: zarr.Group) -> list[str]:
    """Every array path of a group, sorted."""
    return sorted(path for path, _ in group.arrays()) + sorted(
        f"{name}/{sub}" for name, child in group.groups() for sub in _array_paths(child))


def _read_arrays(store_or_path: object) -> dict[str, np.ndarray]:
    group = zarr.open_group(store=store_or_path, mode="r")
    return {path: np.asarray(group[path][...]) for path in _array_paths(group)}


def _assert_same_arrays(left: object, right: object) -> None:
    left_arrays, right_arrays = _read_arrays(left), _read_arrays(right)
    assert sorted(left_arrays) == sorted(right_arrays) and len(left_arrays) >= 10
    for path in left_arrays:
        np.testing.assert_array_equal(left_arrays[path], right_arrays[path], err_msg=path)


@pytest.fixture(scope="session")
def assert_same_arrays() -> Callable[[object, object], None]:
    """``assert_same_arrays(a, b)``: both stores (path or zarr Store) hold the same arrays, value for value."""
    return _assert_same_arrays


class StaticServer:
    """``http.server`` on 127.0.0.1 (port 0) serving a folder; counts GET requests per path.

    ``truncate`` holds URL paths whose body is cut in half while Content-Length promises all of it.
    """

    def __init__(self, root: Path) -> None:
        self.requests: Counter[str] = Counter()
        self.truncate: set[str] = set()
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.requests[self.path] += 1
                if self.path in server.truncate:
                    body = (root / self.path.lstrip("/")).read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                super().do_GET()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def chunk_requests(self) -> int:
        """GET requests for chunk files (paths with a ``/c/`` component)."""
        return sum(n for path, n in self.requests.items() if "/c/" in path)


@pytest.fixture()
def static_server(tmp_path: Path) -> Iterator[StaticServer]:
    root = tmp_path / "www"
    root.mkdir()
    server = StaticServer(root)
    server.root = root  # type: ignore[attr-defined]
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


class FakeHub:
    """A loopback stand-in for the Hugging Face Hub HTTP API: dataset repos held in memory.

    Serves what ``HfApi.create_repo``, ``upload_folder`` (files sent inline as "regular"),
    ``dataset_info``, ``hf_hub_download`` and ``snapshot_download`` call; answers 404 otherwise.
    """

    def tree(self, repo: str, folder: str, recursive: bool) -> list[dict[str, object]]:
        """The Hub's tree listing of ``folder``: its files and sub-folders (everything when recursive)."""
        prefix = f"{folder}/" if folder else ""
        entries: dict[str, dict[str, object]] = {}
        for name, data in sorted(self.repos[repo].items()):
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix):].split("/")
            for depth in range(1, len(rest)):
                if recursive or depth == 1:
                    path = prefix + "/".join(rest[:depth])
                    entries[path] = {"type": "directory", "path": path, "oid": "0" * 40}
            if recursive or len(rest) == 1:
                entries[name] = {"type": "file", "path": name, "size": len(data), "oid": "0" * 40}
        return list(entries.values())

    def __init__(self) -> None:
        import base64
        import hashlib
        import json
        import re

        self.repos: dict[str, dict[str, bytes]] = {}
        self.commits: dict[str, str] = {}
        self.unknown: list[str] = []
        self.downloads: Counter[str] = Counter()
        hub = self

        class Handler(SimpleHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _json(self, payload: object, status: int = 200) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length", 0)))

            def _file(self, head: bool) -> bool:
                match = re.match(r"^/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", self.path.split("?")[0])
                if not match or match[1] not in hub.repos:
                    return False
                files = hub.repos[match[1]]
                if match[3] not in files:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("X-Repo-Commit", hub.commits[match[1]])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return True
                data = files[match[3]]
                self.send_response(200)
                self.send_header("X-Repo-Commit", hub.commits[match[1]])
                self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not head:
                    hub.downloads[match[3]] += 1
                    self.wfile.write(data)
                return True

            def do_HEAD(self) -> None:
                if not self._file(head=True):
                    self._json({"error": "not found"}, 404)

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if self._file(head=False):
                    return
                match = re.match(r"^/api/datasets/([^/]+/[^/]+)(?:/revision/[^/]+)?$", path)
                if match and match[1] in hub.repos:
                    repo = match[1]
                    self._json({"id": repo, "sha": hub.commits[repo], "private": False,
                                "siblings": [{"rfilename": name} for name in sorted(hub.repos[repo])]})
                    return
                match = re.match(r"^/api/datasets/([^/]+/[^/]+)/tree/[^/]+(?:/(.*))?$", path)
                if match and match[1] in hub.repos:
                    self._json(hub.tree(match[1], (match[2] or "").strip("/"), "recursive=true" in self.path.lower()))
                    return
                hub.unknown.append(f"GET {self.path}")
                self._json({"error": "not found"}, 404)

            def do_POST(self) -> None:
                path = self.path.split("?")[0]
                body = self._body()
                if path == "/api/repos/create":
                    request = json.loads(body)
                    repo = f"{request['organization']}/{request['name']}" if request.get("organization") \
                        else request["name"]
                    hub.repos.setdefault(repo, {})
                    hub.commits.setdefault(repo, "0" * 40)
                    self._json({"url": f"http://127.0.0.1/datasets/{repo}"})
                    return
                match = re.match(r"^/api/datasets/([^/]+/[^/]+)/preupload/[^/]+$", path)
                if match:
                    files = json.loads(body)["files"]
                    self._json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                          for f in files]})
                    return
                match = re.match(r"^/api/datasets/([^/]+/[^/]+)/commit/[^/]+$", path)
                if match:
                    files = dict(hub.repos[match[1]])
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        if item["key"] == "file":
                            files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                        elif item["key"] == "deletedFile":
                            files.pop(item["value"]["path"], None)
                    hub.repos[match[1]] = files
                    sha = hashlib.sha1(json.dumps(sorted(files)).encode() + body).hexdigest()
                    hub.commits[match[1]] = sha
                    self._json({"commitUrl": f"http://127.0.0.1/datasets/{match[1]}/commit/{sha}",
                                "commitOid": sha, "success": True})
                    return
                hub.unknown.append(f"POST {self.path}")
                self._json({"error": "not found"}, 404)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture()
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    hub = FakeHub()
    hub.thread.start()
    yield hub
    hub.httpd.shutdown()
    hub.httpd.server_close()
