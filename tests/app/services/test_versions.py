"""VersionService against vLLM's runtime-LoRA contract (two fake replicas), base row, rollback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from app.api.errors import http_status
from app.errors import Conflict, DomainError
from app.ml.backends.openai_compat import OpenAICompatBackend
from app.models import ModelVersion
from app.services.versions import ActivationFailed, VersionService
from app.wiring import build_container
from tests.support.fake_vllm import FakeVLLM, fake_vllm_servers


@pytest.fixture
def replicas() -> Iterator[list[FakeVLLM]]:
    yield from fake_vllm_servers(2)


@pytest.fixture
def container(settings):  # type: ignore[no-untyped-def]
    ctr = build_container(settings)
    yield ctr
    ctr.close()


@pytest.fixture
async def backend(replicas: list[FakeVLLM]) -> AsyncIterator[OpenAICompatBackend]:
    b = OpenAICompatBackend([r.base_url for r in replicas], model="base-model", max_retries=0)
    yield b
    await b.aclose()


def _service(container: Any, backend: Any, gate: Any = None) -> VersionService:
    return VersionService(container.session_factory, "base-model", lambda: backend, gate=gate)


def _candidate(container: Any, service: VersionService, tmp_path: Path, name: str) -> int:
    folder = tmp_path / "adapters" / name
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    with container.session_factory() as session:
        version = service.register_candidate(
            session, name=name, adapter_path=str(folder), base_model="base-model",
            training_job_id=None, config={}, data_summary={})
        return version.id


def _states(container: Any) -> dict[str, str]:
    with container.session_factory() as session:
        return {v.name: v.state for v in session.scalars(select(ModelVersion))}


def test_base_version_is_created_lazily_and_active(container, backend) -> None:  # type: ignore[no-untyped-def]
    service = _service(container, backend)
    assert _states(container) == {}
    with container.session_factory() as session:
        rows, count = service.list(session)
    assert count == 1 and rows[0].name == "base" and rows[0].state == "active"
    assert rows[0].adapter_path is None


def test_database_allows_one_active_version(container) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy.exc import IntegrityError

    with container.session_factory() as session:
        session.add_all([ModelVersion(name="a", base_model="m", state="active"),
                         ModelVersion(name="b", base_model="m", state="active")])
        with pytest.raises(IntegrityError):
            session.commit()


async def test_activation_loads_adapter_on_every_replica(container, backend, replicas,
                                                         tmp_path) -> None:  # type: ignore[no-untyped-def]
    service = _service(container, backend)
    vid = _candidate(container, service, tmp_path, "r1")
    with container.session_factory() as session:
        version = await service.activate(session, vid, None)
    assert version.state == "active"
    for replica in replicas:
        assert replica.loaded_adapters == {f"v{vid}": str(tmp_path / "adapters" / "r1")}
    assert _states(container) == {"base": "retired", "r1": "active"}


async def test_one_replica_refusing_keeps_previous_version(container, backend, replicas,
                                                           tmp_path) -> None:  # type: ignore[no-untyped-def]
    service = _service(container, backend)
    vid = _candidate(container, service, tmp_path, "r1")
    replicas[1].refuse_adapter_path(str(tmp_path / "adapters" / "r1"), "bad adapter weights")
    with container.session_factory() as session, pytest.raises(ActivationFailed) as err:
        await service.activate(session, vid, None)
    assert "bad adapter weights" in err.value.detail
    assert "base stays active" in err.value.detail
    assert _states(container) == {"base": "active", "r1": "candidate"}
    # All or nothing: the replica that accepted it unloaded it again.
    assert replicas[0].loaded_adapters == {}


async def test_rollback_activates_the_previous_version(container, backend, tmp_path) -> None:  # type: ignore[no-untyped-def]
    service = _service(container, backend)
    v1 = _candidate(container, service, tmp_path, "r1")
    v2 = _candidate(container, service, tmp_path, "r2")
    with container.session_factory() as session:
        await service.activate(session, v1, None)
        await service.activate(session, v2, None)
        back = await service.rollback(session, None)
    assert back.id == v1
    assert _states(container)["r1"] == "active"


async def test_rollback_without_history_conflicts(container, backend) -> None:  # type: ignore[no-untyped-def]
    service = _service(container, backend)
    with container.session_factory() as session, pytest.raises(Conflict):
        await service.rollback(session, None)


async def test_gate_refuses_unless_forced(container, backend, tmp_path) -> None:  # type: ignore[no-untyped-def]
    class Gate:
        """Refuses every activation; records the forced ones (the gate is given to the
        constructor: nothing is patched after construction)."""

        def __call__(self, session: Any, candidate: ModelVersion,
                     current: ModelVersion | None) -> None:
            raise Conflict("F1 dropped by 3.0 points")

        def forced(self, session: Any, candidate: ModelVersion, current: ModelVersion | None,
                   actor: Any = None) -> None:
            pass

    service = _service(container, backend, Gate())
    vid = _candidate(container, service, tmp_path, "r1")
    with container.session_factory() as session:
        with pytest.raises(DomainError, match="F1 dropped"):
            await service.activate(session, vid, None)
        assert (await service.activate(session, vid, None, force=True)).state == "active"


async def test_replica_started_later_gets_the_active_adapter(container, replicas,
                                                             tmp_path) -> None:  # type: ignore[no-untyped-def]
    first = OpenAICompatBackend([replicas[0].base_url], model="base-model", max_retries=0)
    service = _service(container, first)
    vid = _candidate(container, service, tmp_path, "r1")
    with container.session_factory() as session:
        await service.activate(session, vid, None)
    await first.aclose()
    assert replicas[1].loaded_adapters == {}
    # A new app replica starts with both model servers configured.
    both = OpenAICompatBackend([r.base_url for r in replicas], model="base-model")
    try:
        problem = await _service(container, both).ensure_active_adapter_loaded()
    finally:
        await both.aclose()
    assert problem is None
    assert replicas[1].loaded_adapters == {f"v{vid}": str(tmp_path / "adapters" / "r1")}


async def test_activating_a_missing_version_is_404(container, backend) -> None:  # type: ignore[no-untyped-def]
    service = _service(container, backend)
    with container.session_factory() as session, pytest.raises(DomainError) as err:
        await service.activate(session, 999, None)
    assert http_status(err.value) == 404


