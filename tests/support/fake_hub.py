"""A local server that speaks the Hugging Face Hub's file protocol for a few in-memory repos.

Point ``HF_ENDPOINT`` at it and ``huggingface_hub`` (``snapshot_download``, ``hf_hub_download``,
``HfApi.model_info``/``list_repo_tree``) downloads from it as from the real hub: the revision
endpoint gives the commit, the tree endpoint lists files with sizes and SHA-256 (LFS), and
``/{repo}/resolve/{revision}/{file}`` serves the bytes with ``X-Repo-Commit``, ``ETag`` and
range requests (so an interrupted download resumes). No network is involved; the test decides
what the repo holds. Requests are counted per file, so a test can see what was fetched.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.utils.server import free_port


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """``repos``: ``{repo_id: {path: bytes}}``; ``url`` is the endpoint while started."""

    def __init__(self, repos: dict[str, dict[str, bytes]]) -> None:
        self.repos = repos
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.downloads: Counter[str] = Counter()  # "repo/path" -> GETs of the bytes
        #: Bytes after which the next GET of a file is cut off (to test resuming), per path.
        self.cut_after: dict[str, int] = {}
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def commit(self, repo_id: str) -> str:
        digest = hashlib.sha1(repo_id.encode())
        for path, data in sorted(self.repos[repo_id].items()):
            digest.update(path.encode() + hashlib.sha256(data).digest())
        return digest.hexdigest()

    # -- the protocol ------------------------------------------------------------------
    async def _dispatch(self, request: Request) -> Response:
        path = request.url.path
        if path.startswith("/api/models/"):
            return self._api(path.removeprefix("/api/models/"), request)
        if "/resolve/" in path:
            repo_id, rest = path.lstrip("/").split("/resolve/", 1)
            _revision, filename = rest.split("/", 1)
            return self._resolve(repo_id, filename, request)
        return JSONResponse({"error": "not found"}, status_code=404)

    def _api(self, rest: str, request: Request) -> Response:
        for marker in ("/revision/", "/tree/"):
            if marker in rest:
                repo_id, _revision = rest.split(marker, 1)
                break
        else:
            repo_id = rest
            marker = "/revision/"
        if repo_id not in self.repos:
            return JSONResponse({"error": "Repository not found"}, status_code=404,
                                headers={"X-Error-Code": "RepoNotFound"})
        files = self.repos[repo_id]
        if marker == "/tree/":
            return JSONResponse([
                {"type": "file", "path": p, "size": len(d), "oid": _git_blob_id(d),
                 "lfs": {"oid": hashlib.sha256(d).hexdigest(), "size": len(d),
                         "pointerSize": 134}}
                for p, d in sorted(files.items())
            ])
        return JSONResponse({
            "id": repo_id, "modelId": repo_id, "sha": self.commit(repo_id), "private": False,
            "siblings": [{"rfilename": p, "size": len(d)} for p, d in sorted(files.items())],
            "usedStorage": sum(len(d) for d in files.values()),
        })

    def _resolve(self, repo_id: str, filename: str, request: Request) -> Response:
        data = self.repos.get(repo_id, {}).get(filename)
        if data is None:
            return JSONResponse({"error": "Entry not found"}, status_code=404,
                                headers={"X-Error-Code": "EntryNotFound"})
        headers = {
            "X-Repo-Commit": self.commit(repo_id),
            "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
            "Accept-Ranges": "bytes",
        }
        if request.method == "HEAD":
            return Response(b"", headers={**headers, "Content-Length": str(len(data))})
        start = 0
        ranged = request.headers.get("range", "")
        if ranged.startswith("bytes="):
            start = int(ranged.removeprefix("bytes=").split("-", 1)[0] or 0)
        key = f"{repo_id}/{filename}"
        self.downloads[key] += 1
        body = data[start:]
        cut = self.cut_after.pop(key, None)
        if cut is not None:
            body = body[:cut]  # the connection "drops": the client sees a short body
        status = 206 if start else 200
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        return Response(body, status_code=status,
                        headers={**headers, "Content-Length": str(len(body))})

    # -- life cycle --------------------------------------------------------------------
    def start(self) -> FakeHub:
        app = Starlette(routes=[Route("/{path:path}", self._dispatch, methods=["GET", "HEAD"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
