"""`repic models status` / `pull` against a local server speaking the hub's file protocol
(tests/support/fake_hub.py) that serves the tiny models as hub repositories.

Why a fake hub rather than a pre-built cache folder: `pull` must ask the hub for sizes, check
the disk, download, resume and verify checksums, and be a no-op the second time; only a server
exercises that, and huggingface_hub's own client does the talking. The commands run in a
subprocess with HF_ENDPOINT and HF_HUB_CACHE pointing at the fake hub and a temp cache, as a
user's shell would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.db import make_engine, make_session_factory, session_scope
from app.services.users import create_admin
from app.settings import Settings
from tests.support.fake_hub import FakeHub
from tests.utils.server import LiveServer, settings_env

pytestmark = pytest.mark.slow

VLM, CLIP = "test-org/tiny-vlm", "test-org/tiny-clip"


def _repo(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.fixture
def hub(tiny_models: Path) -> Iterator[FakeHub]:
    with FakeHub({VLM: _repo(tiny_models / "vlm"), CLIP: _repo(tiny_models / "clip")}) as fake:
        yield fake


@pytest.fixture
def hub_settings(settings_factory: Any) -> Settings:
    settings: Settings = settings_factory(
        caption={"model": VLM}, embedder={"model_name": f"hf-hub:{CLIP}", "pretrained": ""}
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings


def _env(settings: Settings, hub: FakeHub, cache: Path) -> dict[str, str]:
    env = {**os.environ, **settings_env(settings)}
    env.update(HF_ENDPOINT=hub.url, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="0",
               HF_HUB_DISABLE_XET="1")
    return env


def _repic(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", "models", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_status_names_the_pull_command_for_a_missing_model(hub_settings: Settings, hub: FakeHub,
                                                           tmp_path: Path) -> None:
    r = _repic(_env(hub_settings, hub, tmp_path / "cache"), "status", "--json")
    assert r.returncode == 0, r.stderr
    models = {m["role"]: m for m in json.loads(r.stdout)["models"]}
    assert models["caption"]["present"] is False
    assert models["caption"]["fix"] == f"repic models pull {VLM}"


def test_pull_shows_sizes_downloads_and_then_has_nothing_to_do(hub_settings: Settings,
                                                               hub: FakeHub,
                                                               tmp_path: Path) -> None:
    env = _env(hub_settings, hub, tmp_path / "cache")
    first = _repic(env, "pull")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "model.safetensors" in first.stdout and "to download" in first.stdout
    fetched = sum(hub.downloads.values())
    second = _repic(env, "pull")
    assert second.returncode == 0, second.stderr
    assert "up to date" in second.stdout
    assert sum(hub.downloads.values()) == fetched
    status = json.loads(_repic(env, "status", "--json").stdout)
    assert all(m["present"] for m in status["models"])


def test_the_next_start_serves_the_pulled_models(hub_settings: Settings, hub: FakeHub,
                                                 tmp_path: Path) -> None:
    env = _env(hub_settings, hub, tmp_path / "cache")
    assert _repic(env, "pull").returncode == 0
    extra = {"HF_HUB_CACHE": str(tmp_path / "cache"), "HF_ENDPOINT": "http://127.0.0.1:9"}
    with session_scope(make_session_factory(make_engine(hub_settings.database_url))) as session:
        create_admin(session, "root", "root-password-1")
    with LiveServer(hub_settings, extra_env=extra) as server:
        token = httpx.post(f"{server.url}/api/auth/token",
                           data={"username": "root", "password": "root-password-1"}).json()
        report = httpx.get(f"{server.url}/api/admin/models",
                           headers={"Authorization": f"Bearer {token['access_token']}"}).json()
    models = {m["role"]: m for m in report["models"]}
    assert models["caption"]["loaded"] and models["embedder"]["loaded"], report
    assert not [w for w in report["warnings"] if "not downloaded" in w]
