"""The production deployment files: docker-compose.yml, .env.example and the Dockerfiles.

No container engine is needed: the compose file is checked by `docker compose config -q`
when a compose CLI is installed, and parsed and inspected as YAML in every case.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.settings import CaptionSettings, Settings

pytestmark = pytest.mark.nodb

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILES = [ROOT / "docker" / "Dockerfile", ROOT / "docker" / "Dockerfile.gpu"]
REQUIRED_SECRETS = ("POSTGRES_PASSWORD", "REPIC_SECRET_KEY", "FLOWER_PASSWORD")
SERVICES = ("postgres", "redis", "prestart", "vllm", "app", "worker-cpu", "worker-gpu", "flower")

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}; and bare $NAME.
_BRACED = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)((?::?[-?])([^}]*))?\}")
_BARE = re.compile(r"(?<!\$)\$([A-Za-z_][A-Za-z0-9_]*)")


def _compose_text() -> str:
    return COMPOSE.read_text(encoding="utf-8")


def _env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def _filled_env() -> dict[str, str]:
    """.env.example with a stand-in for every blank required secret."""
    env = _env_example()
    for name in REQUIRED_SECRETS:
        env[name] = env.get(name) or f"test-{name.lower().replace('_', '-')}"
    return env


def _interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose-style substitution of ${VAR...} in every string of a parsed document."""
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(match: re.Match[str]) -> str:
        name, operator, arg = match.group(1), match.group(2) or "", match.group(3) or ""
        current = env.get(name)
        if operator.startswith(":?") or operator.startswith("?"):
            if not current:
                raise AssertionError(f"{name} required: {arg}")
            return current
        if operator.startswith(":-"):
            return current or arg
        if operator.startswith("-"):
            return arg if current is None else current
        return current or ""

    return _BRACED.sub(sub, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(_compose_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def resolved(compose: dict[str, Any]) -> dict[str, Any]:
    return _interpolate(compose, _filled_env())


@lru_cache(maxsize=1)
def _compose_cli() -> tuple[str, ...] | None:
    """`docker compose` (v2 plugin) or `docker-compose`, whichever answers; None if neither."""
    candidates: list[tuple[str, ...]] = []
    if shutil.which("docker"):
        candidates.append(("docker", "compose"))
    if shutil.which("docker-compose"):
        candidates.append(("docker-compose",))
    for cli in candidates:
        try:
            done = subprocess.run([*cli, "version"], capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return cli
    return None


def _run_compose_config(env_file: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    cli = _compose_cli()
    assert cli is not None
    clean_env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    return subprocess.run(
        [*cli, "--env-file", str(env_file), "-f", str(COMPOSE), "config", "-q"],
        capture_output=True, text=True, timeout=120, env=clean_env, cwd=tmp_path,
    )


def _write_env(path: Path, env: dict[str, str]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in env.items()), encoding="utf-8")
    return path


def _command_value(command: list[str], flag: str) -> str:
    assert flag in command, f"vllm is not started with {flag}"
    return command[command.index(flag) + 1]


def _mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """{source: (target, mode)} of a service's short-syntax volumes."""
    mounts = {}
    for entry in service.get("volumes", []):
        source, target, *rest = entry.split(":")
        mounts[source] = (target, rest[0] if rest else "rw")
    return mounts


# -- validity -----------------------------------------------------------------------------


def test_compose_file_is_valid(compose: dict[str, Any], tmp_path: Path) -> None:
    if _compose_cli() is not None:
        done = _run_compose_config(_write_env(tmp_path / ".env", _filled_env()), tmp_path)
        assert done.returncode == 0, done.stderr
    # Structure (always): every service present, each named volume declared.
    assert set(SERVICES) <= set(compose["services"])
    declared = set(compose.get("volumes", {}))
    for name, service in compose["services"].items():
        assert "image" in service, f"{name} has no image"
        for source in _mounts(service):
            if not source.startswith((".", "/")):
                assert source in declared, f"{name} mounts undeclared volume {source}"


def test_compose_refuses_to_start_without_a_secret(tmp_path: Path) -> None:
    if _compose_cli() is None:
        pytest.skip("no docker compose CLI on this machine")
    env = _filled_env()
    env["REPIC_SECRET_KEY"] = ""
    done = _run_compose_config(_write_env(tmp_path / ".env", env), tmp_path)
    assert done.returncode != 0
    assert "REPIC_SECRET_KEY" in done.stderr


def test_every_compose_variable_is_documented_in_env_example() -> None:
    text = _compose_text()
    used = {m.group(1) for m in _BRACED.finditer(text)} | {m.group(1) for m in _BARE.finditer(text)}
    missing = sorted(used - set(_env_example()))
    assert not missing, f"document these in .env.example: {missing}"


def test_required_secrets_fail_fast_and_ship_blank() -> None:
    text = _compose_text()
    example = _env_example()
    for name in REQUIRED_SECRETS:
        uses = [m for m in _BRACED.finditer(text) if m.group(1) == name]
        assert uses, f"{name} is not used by docker-compose.yml"
        for use in uses:
            assert (use.group(2) or "").startswith(":?"), f"{use.group(0)} must use :? to fail fast"
        assert example.get(name) == "", f".env.example must leave {name} blank"


def test_app_environment_is_accepted_by_settings(
    resolved: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in list(os.environ):
        if key.startswith("REPIC_"):
            monkeypatch.delenv(key)
    for key, value in resolved["services"]["app"]["environment"].items():
        monkeypatch.setenv(key, str(value))
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.profile == "production"
    assert settings.caption.backend == "openai"
    assert settings.caption.openai_base_urls == ["http://vllm:8000"]
    assert settings.database_url.startswith("postgresql+psycopg://repic:")
    assert settings.worker.broker_url == "redis://redis:6379/0"
    assert settings.auth.secret_key == _filled_env()["REPIC_SECRET_KEY"]


def test_compose_sets_no_unknown_setting(resolved: dict[str, Any]) -> None:
    from app.settings import unknown_settings

    for name in ("app", "worker-cpu", "worker-gpu", "prestart"):
        environment = resolved["services"][name]["environment"]
        assert unknown_settings({k: str(v) for k, v in environment.items()}) == [], name


# -- vLLM ---------------------------------------------------------------------------------


def test_vllm_serves_runtime_lora_adapters(resolved: dict[str, Any]) -> None:
    vllm = resolved["services"]["vllm"]
    command = [str(part) for part in vllm["command"]]
    assert "--enable-lora" in command
    assert _command_value(command, "--max-lora-rank") == "64"
    assert int(_command_value(command, "--max-loras")) >= 1
    assert int(_command_value(command, "--max-cpu-loras")) >= int(
        _command_value(command, "--max-loras")
    )
    assert str(vllm["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"]).lower() == "true"


def test_vllm_accepts_every_demonstration_plus_the_query(resolved: dict[str, Any]) -> None:
    command = [str(part) for part in resolved["services"]["vllm"]["command"]]
    limits = json.loads(_command_value(command, "--limit-mm-per-prompt"))
    assert limits["image"] >= CaptionSettings().max_demonstrations + 1


def test_vllm_image_bounds_equal_training_bounds(resolved: dict[str, Any]) -> None:
    command = [str(part) for part in resolved["services"]["vllm"]["command"]]
    kwargs = json.loads(_command_value(command, "--mm-processor-kwargs"))
    caption = CaptionSettings()
    assert kwargs == {"min_pixels": caption.min_pixels, "max_pixels": caption.max_pixels}


def test_vllm_serves_the_model_the_app_asks_for(resolved: dict[str, Any]) -> None:
    command = [str(part) for part in resolved["services"]["vllm"]["command"]]
    app_env = resolved["services"]["app"]["environment"]
    assert command[0] == app_env["REPIC_CAPTION__MODEL"]


def test_vllm_runs_on_a_gpu_with_host_ipc_and_a_health_check(resolved: dict[str, Any]) -> None:
    vllm = resolved["services"]["vllm"]
    assert vllm["ipc"] == "host"
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in device["capabilities"] for device in devices)
    assert any("/health" in part for part in vllm["healthcheck"]["test"])


# -- shared volumes -----------------------------------------------------------------------


def test_adapters_volume_is_read_only_for_vllm_and_writable_for_training(
    resolved: dict[str, Any],
) -> None:
    services = resolved["services"]
    adapters_dir = services["app"]["environment"]["REPIC_TRAINING__ADAPTERS_DIR"]
    vllm_target, vllm_mode = _mounts(services["vllm"])["adapters"]
    gpu_target, gpu_mode = _mounts(services["worker-gpu"])["adapters"]
    # One path on both sides: the lora_path the app sends must name the file vLLM reads.
    assert vllm_target == gpu_target == adapters_dir
    assert vllm_mode == "ro"
    assert gpu_mode == "rw"
    assert services["worker-gpu"]["environment"]["REPIC_TRAINING__ADAPTERS_DIR"] == adapters_dir


def test_workers_share_the_app_data_volume(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    data_dir = services["app"]["environment"]["REPIC_STORAGE__DATA_DIR"]
    for name in ("app", "worker-cpu", "worker-gpu", "prestart"):
        assert _mounts(services[name])["data"] == (data_dir, "rw"), name


# -- start order and processes --------------------------------------------------------------


def test_migrations_run_once_before_the_app_and_workers(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    prestart_script = (ROOT / "docker" / "prestart.sh").read_text(encoding="utf-8")
    assert "repic db upgrade" in prestart_script
    assert any("prestart.sh" in part for part in services["prestart"]["command"])
    for name in ("app", "worker-cpu", "worker-gpu"):
        condition = services[name]["depends_on"]["prestart"]["condition"]
        assert condition == "service_completed_successfully", name


def test_app_serves_with_several_uvicorn_workers(resolved: dict[str, Any]) -> None:
    app = resolved["services"]["app"]
    command = " ".join(app["command"])
    assert "uvicorn app.asgi:app" in command
    assert re.search(r"--workers \d+", command)
    assert any("/api/ready" in part for part in app["healthcheck"]["test"])


def test_app_announces_no_server_banner(resolved: dict[str, Any]) -> None:
    # uvicorn adds `server: uvicorn` unless told not to; the app cannot take it off.
    command = " ".join(resolved["services"]["app"]["command"])
    assert "--no-server-header" in command
    web = (ROOT / "docker" / "Dockerfile").read_text(encoding="utf-8")
    (cmd,) = re.findall(r"^CMD (\[.*\])$", web, re.MULTILINE)
    assert "--no-server-header" in json.loads(cmd)


def test_workers_consume_their_queues(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["worker-cpu"]["command"][:4] == ["repic", "worker", "--queues", "cpu"]
    gpu = services["worker-gpu"]
    # No --pool override: the CLI's GPU defaults (one job per fresh prefork child) keep Celery's
    # hard time limits enforced, which a solo pool would not.
    assert gpu["command"] == ["repic", "worker", "--queues", "gpu"]
    assert "devices" in gpu["deploy"]["resources"]["reservations"]


def test_flower_sits_behind_basic_auth(compose: dict[str, Any]) -> None:
    command = compose["services"]["flower"]["command"]
    assert any(part.startswith("--basic_auth=") and ":?" in part for part in command)


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else ""
        assert tag and tag != "latest", f"{name} image {image!r} is not pinned"


# -- Dockerfiles ----------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_pins_its_base_images(dockerfile: Path) -> None:
    bases = re.findall(r"^FROM\s+(\S+)", dockerfile.read_text(encoding="utf-8"), re.MULTILINE)
    assert bases
    for base in bases:
        assert "$" not in base, f"{base}: base images are written out, not taken from ARGs"
        name, _, tag = base.partition(":")
        assert tag and tag != "latest", f"{base} is not pinned to a tag"
        assert re.search(r"\d+\.\d+", tag), f"{base}: tag names no exact version"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_runs_as_a_non_root_user(dockerfile: Path) -> None:
    text = dockerfile.read_text(encoding="utf-8")
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users, "no USER instruction: the container would run as root"
    assert users[-1] not in ("root", "0", "0:0")
    assert "HEALTHCHECK" in text


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_installs_exiftool(dockerfile: Path) -> None:
    # The library's XMP export runs exiftool (app/services/xmp.py) in the app and the CLI.
    text = dockerfile.read_text(encoding="utf-8")
    installs = re.findall(r"apt-get install[^\n]*(?:\\\n[^\n]*)*", text)
    assert any("libimage-exiftool-perl" in line for line in installs)


def test_web_image_torch_pins_match_pyproject() -> None:
    pins = {}
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for requirement in extras["project"]["optional-dependencies"]["ml"]:
        name, _, version = requirement.partition("==")
        pins[name.strip()] = version.strip()
    text = DOCKERFILES[0].read_text(encoding="utf-8")
    assert f"ARG TORCH_VERSION={pins['torch']}" in text
    assert f"ARG TORCHVISION_VERSION={pins['torchvision']}" in text


def test_the_app_starts_through_the_metrics_directory_script(resolved: dict[str, Any]) -> None:
    # Several uvicorn workers sum their metrics only in prometheus_client's multiprocess mode.
    command = " ".join(resolved["services"]["app"]["command"])
    assert "exec /app/docker/app-start.sh uvicorn app.asgi:app" in command
    web = (ROOT / "docker" / "Dockerfile").read_text(encoding="utf-8")
    assert "COPY --chmod=0755 docker/app-start.sh ./docker/app-start.sh" in web
    (cmd,) = re.findall(r"^CMD (\[.*\])$", web, re.MULTILINE)
    assert json.loads(cmd)[:2] == ["/app/docker/app-start.sh", "uvicorn"]


def test_the_metrics_directory_script_empties_it_and_runs_the_command(tmp_path: Path) -> None:
    stale = tmp_path / "metrics" / "counter_41.db"
    stale.parent.mkdir()
    stale.write_bytes(b"an earlier run")

    out = subprocess.run(
        ["sh", str(ROOT / "docker" / "app-start.sh"), "sh", "-c",
         'echo "$PROMETHEUS_MULTIPROC_DIR"; ls -A "$PROMETHEUS_MULTIPROC_DIR"'],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(stale.parent)},
        capture_output=True, text=True, check=True,
    )

    assert out.stdout.splitlines() == [str(stale.parent)]
