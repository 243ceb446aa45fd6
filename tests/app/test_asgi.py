"""``uvicorn app.asgi:app`` refuses to start on bad settings or an unreachable database with
one line on stderr, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.utils.server import free_port

pytestmark = pytest.mark.nodb
ROOT = Path(__file__).resolve().parents[2]


def _import_the_app(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("REPIC_")}
    return subprocess.run(
        [sys.executable, "-c", "import app.asgi"],
        env={**clean, "REPIC_STORAGE__DATA_DIR": str(tmp_path), **env},
        cwd=tmp_path,  # no .env file there
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_an_unreachable_database_stops_the_start_in_one_line(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://repic:db-pass-123@127.0.0.1:{free_port()}/repic"
    done = _import_the_app(tmp_path, REPIC_DATABASE__URL=url, PYTHONPATH=str(ROOT))
    assert done.returncode != 0
    (line,) = done.stderr.strip().splitlines()
    assert "REPIC_DATABASE__URL" in line and "db-pass-123" not in line


def test_a_nonsense_setting_stops_the_start_in_one_line(tmp_path: Path) -> None:
    done = _import_the_app(tmp_path, REPIC_WORKER__MAX_ATTEMPTS="0", PYTHONPATH=str(ROOT))
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "REPIC_WORKER__MAX_ATTEMPTS=0: Input should be greater than or equal to 1"
    ]
