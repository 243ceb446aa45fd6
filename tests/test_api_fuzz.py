"""Schemathesis against the live app: no server error, every answer as the OpenAPI document
says (status and body), once as a regular user and once as an admin.

Bounded for ``make test`` (a fixed seed, a few examples per operation: well under three
minutes on two cores); ``make fuzz`` runs the same test longer (``FUZZ_MAX_EXAMPLES``,
``FUZZ_SEED``). The figures of the long run are in docs/security.md ("API fuzzing").
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.utils.images import make_image
from tests.utils.server import LiveServer
from tests.utils.users import PASSWORD

pytestmark = pytest.mark.slow

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "8"))
SEED = int(os.environ.get("FUZZ_SEED", "13"))
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance"

#: Operations that end the run's own credentials: revoking a token (the fuzzer tries small ids,
#: and its own token's id is one of them) and logging out everywhere (``revoke_tokens``).
#: Their bad input is covered by tests/app/api/test_params.py and routes/test_auth.py.
EXCLUDED_PATHS = ("/api/auth/tokens/{token_id}", "/api/auth/logout-all")


def _bearer(url: str, username: str) -> str:
    r = httpx.post(f"{url}/api/auth/token", data={"username": username, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def _seed(server: LiveServer) -> dict[str, str]:
    """A user and an admin, each with a concept, a caption and an evaluation set (so that the
    small ids the fuzzer tries name rows); their bearer tokens by role."""
    from app.db import make_engine, make_session_factory, session_scope
    from app.services.users import create_admin

    r = httpx.post(
        f"{server.url}/api/auth/register", json={"username": "fuzz", "password": PASSWORD}
    )
    assert r.status_code == 201, r.text
    engine = make_engine(server.settings.database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            create_admin(session, "fuzzadmin", PASSWORD)
    finally:
        engine.dispose()
    tokens = {"user": _bearer(server.url, "fuzz"), "admin": _bearer(server.url, "fuzzadmin")}
    for token in tokens.values():
        _own_data(server.url, {"Authorization": f"Bearer {token}"})
    return tokens


def _own_data(url: str, headers: dict[str, str]) -> None:
    photos = [("images", (f"bo{i}.png", make_image(shape=i), "image/png")) for i in range(2)]
    r = httpx.post(
        f"{url}/api/concepts", headers=headers, data={"name": "bo"}, files=photos, timeout=60
    )
    assert r.status_code == 201, r.text
    concept = r.json()
    held_out = concept["images"][-1]["id"]
    r = httpx.patch(
        f"{url}/api/concepts/{concept['id']}/images/{held_out}",
        headers=headers,
        json={"eval_only": True},
    )
    assert r.status_code == 200, r.text
    r = httpx.post(f"{url}/api/evaluation-sets/heldout", headers=headers, json={"name": "held"})
    assert r.status_code == 201, r.text
    r = httpx.post(
        f"{url}/api/captions",
        headers=headers,
        timeout=60,
        files={"image": ("q.png", make_image(shape=2), "image/png")},
    )
    assert r.status_code == 201, r.text


def _schemathesis(
    url: str, token: str, report: Path, workdir: Path
) -> subprocess.CompletedProcess[str]:
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{url}/openapi.json",
        "--checks",
        CHECKS,
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--header",
        f"Authorization: Bearer {token}",
        "--generation-database",
        "none",
        "--request-timeout",
        "60",
        "--no-color",
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
    ]
    for path in EXCLUDED_PATHS:
        command += ["--exclude-path", path]
    # In a directory of its own: schemathesis writes a .schemathesis/ cache where it runs.
    return subprocess.run(
        command, capture_output=True, text=True, timeout=900, check=False, cwd=workdir
    )


@pytest.fixture
def fuzzed_server(settings):  # type: ignore[no-untyped-def]
    from app.migrate import upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    with LiveServer(settings) as server:
        yield server, _seed(server)


@pytest.mark.parametrize("role", ["user", "admin"])
def test_fuzzing_finds_no_server_error_and_no_schema_violation(
    fuzzed_server, role: str, tmp_path: Path
) -> None:
    server, tokens = fuzzed_server
    began = time.monotonic()
    run = _schemathesis(server.url, tokens[role], tmp_path / "junit.xml", tmp_path)
    (tmp_path / "schemathesis.txt").write_text(run.stdout + run.stderr)
    summary = run.stdout[run.stdout.rfind("= SUMMARY =") :]
    print(f"schemathesis as {role}: {time.monotonic() - began:.0f} s\n{summary}")
    # The failures come first in the output, the summary last.
    assert run.returncode == 0, f"{run.stdout[-20000:]}\n{run.stderr[-2000:]}"
