"""OpenAICompatBackend against a fake vLLM (contract, retries, replicas, adapters) and against a
real OpenAI-compatible server (``transformers serve`` with the tiny VLM)."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

from app.ml.backends import (
    AdapterLoadError,
    BackendError,
    BackendUnavailable,
    CaptionRequest,
    GenerationParams,
    build_backend,
)
from app.ml.backends.openai_compat import OpenAICompatBackend, to_openai_messages
from app.ml.prompt import Demonstration, build_caption_prompt
from tests.support.fake_vllm import FakeVLLM
from tests.support.openai_server import free_port, start_transformers_serve, transformers_cli

pytestmark = pytest.mark.nodb

BackendFactory = Callable[..., OpenAICompatBackend]


def _image(color: tuple[int, int, int], size: tuple[int, int] = (320, 240)) -> Image.Image:
    return Image.new("RGB", size, color)


def _request(adapter: str | None = None, **params: object) -> CaptionRequest:
    prompt = build_caption_prompt(
        [Demonstration("bo", "a corgi", _image((200, 120, 40)))],
        _image((30, 90, 200), (640, 480)),
        question="Give a caption of the image.",
    )
    return CaptionRequest(
        prompt.messages,
        prompt.images,
        adapter=adapter,
        params=GenerationParams(max_new_tokens=32, **params),  # type: ignore[arg-type]
    )


@pytest.fixture
def server() -> Iterator[FakeVLLM]:
    with FakeVLLM() as fake:
        yield fake


@pytest.fixture
def second_server() -> Iterator[FakeVLLM]:
    with FakeVLLM() as fake:
        yield fake


@pytest.fixture
async def make_backend() -> AsyncIterator[BackendFactory]:
    made: list[OpenAICompatBackend] = []

    def make(*servers: FakeVLLM | str, **kwargs: object) -> OpenAICompatBackend:
        urls = [s if isinstance(s, str) else s.base_url for s in servers]
        options: dict[str, object] = {"model": "base-model", "retry_backoff_s": 0.01}
        options.update(kwargs)
        backend = OpenAICompatBackend(urls, **options)  # type: ignore[arg-type]
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.aclose()


def _decode_data_url(url: str) -> Image.Image:
    header, encoded = url.split(",", 1)
    assert header == "data:image/jpeg;base64"
    return Image.open(io.BytesIO(base64.b64decode(encoded)))


def test_smart_resize_matches_the_qwen_processor() -> None:
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as hf

    from app.ml.images import smart_resize

    sizes = [(h, w) for h in (28, 57, 240, 480, 1000, 3024) for w in (30, 320, 999, 4032)]
    for height, width in sizes:
        for low, high in ((4 * 784, 1024 * 784), (56 * 56, 112 * 112)):
            expected = hf(height, width, factor=28, min_pixels=low, max_pixels=high)
            assert smart_resize(height, width, 28, low, high) == expected, (height, width)


def test_to_openai_messages_fills_placeholders_in_order() -> None:
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "sys"}]},
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": "a"}, {"type": "image"}],
        },
    ]
    converted = to_openai_messages(messages, ["data:1", "data:2"])
    assert converted == [
        {"role": "system", "content": "sys"},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "data:1"}},
                {"type": "text", "text": "a"},
                {"type": "image_url", "image_url": {"url": "data:2"}},
            ],
        },
    ]


async def test_request_shape_sends_data_urls_and_base_model(
    server: FakeVLLM, make_backend: BackendFactory
) -> None:
    backend = make_backend(server, max_pixels=64 * 28 * 28)
    result = await backend.generate(_request())

    body = server.chat_requests[0]
    assert body["model"] == "base-model"
    assert body["max_tokens"] == 32
    assert body["temperature"] == 0.0
    assert "top_k" not in body
    system, user = body["messages"]
    assert isinstance(system["content"], str) and system["content"].startswith("You are")
    urls = [p["image_url"]["url"] for p in user["content"] if p["type"] == "image_url"]
    assert len(urls) == 2
    query = _decode_data_url(urls[1])
    assert query.width % 28 == 0 and query.height % 28 == 0
    assert query.width * query.height <= 64 * 28 * 28
    assert result.text == "a caption from base-model"
    assert result.completion_tokens == 4 and result.prompt_tokens > 0
    assert result.backend == "openai" and result.adapter is None


def test_photo_beyond_the_processors_aspect_ratio_is_sent_padded() -> None:
    from app.ml.images import MAX_ASPECT_RATIO

    backend = OpenAICompatBackend(["http://unused"], model="m", max_pixels=64 * 28 * 28)
    sent = _decode_data_url(backend._encode_image(_image((200, 120, 40), (20, 8000))))

    assert sent.height / sent.width <= MAX_ASPECT_RATIO


async def test_top_k_is_sent_to_vllm_only(server: FakeVLLM, make_backend: BackendFactory) -> None:
    vllm = make_backend(server, server_kind="vllm")
    generic = make_backend(server, server_kind="generic")
    await vllm.generate(_request(temperature=1.0, top_k=50, top_p=0.9))
    await generic.generate(_request(temperature=1.0, top_k=50, top_p=0.9))

    to_vllm, to_generic = server.chat_requests
    assert to_vllm["top_k"] == 50 and to_vllm["top_p"] == 0.9
    assert "top_k" not in to_generic and to_generic["top_p"] == 0.9


async def test_adapter_name_is_sent_as_model(
    server: FakeVLLM, make_backend: BackendFactory
) -> None:
    backend = make_backend(server)
    await backend.load_adapter("v2", "/adapters/v2")
    result = await backend.generate(_request(adapter="v2"))

    assert server.chat_requests[0]["model"] == "v2"
    assert result.text == "a caption from v2" and result.adapter == "v2"


async def test_server_errors_are_retried_until_success(
    server: FakeVLLM, make_backend: BackendFactory
) -> None:
    server.fail_next(2, status=503)
    backend = make_backend(server, max_retries=2)

    result = await backend.generate(_request())

    assert result.text == "a caption from base-model"
    assert len(server.chat_requests) == 3


async def test_exhausted_retries_raise_backend_unavailable(
    server: FakeVLLM, make_backend: BackendFactory
) -> None:
    server.fail_next(10, status=500)
    backend = make_backend(server, max_retries=2)

    with pytest.raises(BackendUnavailable, match="answered 500"):
        await backend.generate(_request())
    assert len(server.chat_requests) == 3


async def test_connection_refused_is_unavailable_quickly(make_backend: BackendFactory) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    backend = make_backend(closed, max_retries=2)

    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="unreachable"):
        await backend.generate(_request())
    assert time.monotonic() - started < 2.0


async def test_read_timeout_is_unavailable_within_bound_and_not_retried(
    server: FakeVLLM, make_backend: BackendFactory
) -> None:
    server.hang_next(1, seconds=10)
    backend = make_backend(server, timeout_s=0.5, max_retries=3)

    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="did not answer within 0.5 s"):
        await backend.generate(_request())
    assert time.monotonic() - started < 2.0
    assert len(server.chat_requests) == 1


async def test_client_error_is_backend_error_with_server_message(
    server: FakeVLLM, make_backend: BackendFactory
) -> None:
    backend = make_backend(server)

    with pytest.raises(BackendError, match="The model `nope` does not exist"):
        await backend.generate(_request(adapter="nope"))
    assert len(server.chat_requests) == 1


async def test_concurrent_requests_are_not_serialized(make_backend: BackendFactory) -> None:
    with FakeVLLM(latency_s=0.3) as slow:
        backend = make_backend(slow)
        started = time.monotonic()
        results = await asyncio.gather(*(backend.generate(_request()) for _ in range(16)))
        elapsed = time.monotonic() - started

    assert len(results) == 16
    assert elapsed < 16 * 0.3 / 3, f"16 requests took {elapsed:.2f} s"
    assert slow.max_in_flight >= 8


async def test_generate_round_robins_across_replicas(
    server: FakeVLLM, second_server: FakeVLLM, make_backend: BackendFactory
) -> None:
    backend = make_backend(server, second_server)
    for _ in range(4):
        await backend.generate(_request())

    assert len(server.chat_requests) == 2 and len(second_server.chat_requests) == 2


async def test_generate_skips_a_replica_that_refuses_connections(
    server: FakeVLLM, make_backend: BackendFactory
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    backend = make_backend(closed, server, max_retries=1)

    results = [await backend.generate(_request()) for _ in range(4)]

    assert all(r.text == "a caption from base-model" for r in results)
    assert len(server.chat_requests) == 4


async def test_load_adapter_loads_on_every_replica(
    server: FakeVLLM, second_server: FakeVLLM, make_backend: BackendFactory
) -> None:
    backend = make_backend(server, second_server)
    await backend.load_adapter("v2", "/adapters/v2")

    assert server.loaded_adapters == {"v2": "/adapters/v2"}
    assert second_server.loaded_adapters == {"v2": "/adapters/v2"}
    assert await backend.replica_models() == {
        server.base_url: ["base-model", "v2"],
        second_server.base_url: ["base-model", "v2"],
    }


async def test_load_adapter_failure_names_replica_and_rolls_back(
    server: FakeVLLM, second_server: FakeVLLM, make_backend: BackendFactory
) -> None:
    second_server.refuse_adapter_path("/adapters/bad", "adapter_config.json not found")
    backend = make_backend(server, second_server)

    with pytest.raises(AdapterLoadError) as info:
        await backend.load_adapter("v3", "/adapters/bad")

    assert second_server.base_url in info.value.reason
    assert "adapter_config.json not found" in info.value.reason
    assert server.base_url not in info.value.reason
    assert server.loaded_adapters == {} and second_server.loaded_adapters == {}


async def test_load_adapter_already_loaded_from_same_path_succeeds(
    server: FakeVLLM, make_backend: BackendFactory
) -> None:
    server.loaded_adapters["v2"] = "/adapters/v2"
    backend = make_backend(server)

    await backend.load_adapter("v2", "/adapters/v2")

    assert server.loaded_adapters == {"v2": "/adapters/v2"}


async def test_load_adapter_name_taken_by_other_path_fails(
    server: FakeVLLM, make_backend: BackendFactory
) -> None:
    server.loaded_adapters["v2"] = "/adapters/old"
    backend = make_backend(server)

    with pytest.raises(AdapterLoadError, match="already loaded from /adapters/old"):
        await backend.load_adapter("v2", "/adapters/v2")


async def test_load_adapter_without_runtime_lora_explains_setting(
    make_backend: BackendFactory,
) -> None:
    with FakeVLLM(runtime_lora=False) as plain:
        backend = make_backend(plain)
        with pytest.raises(AdapterLoadError, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING"):
            await backend.load_adapter("v2", "/adapters/v2")


async def test_generic_server_refuses_adapters(
    server: FakeVLLM, make_backend: BackendFactory
) -> None:
    backend = make_backend(server, server_kind="generic")
    with pytest.raises(AdapterLoadError, match="no runtime LoRA"):
        await backend.load_adapter("v2", "/adapters/v2")


async def test_unload_adapter_is_idempotent(
    server: FakeVLLM, second_server: FakeVLLM, make_backend: BackendFactory
) -> None:
    backend = make_backend(server, second_server)
    await backend.load_adapter("v2", "/adapters/v2")

    await backend.unload_adapter("v2")
    await backend.unload_adapter("v2")

    assert server.loaded_adapters == {} and second_server.loaded_adapters == {}
    assert await backend.list_models(server.base_url) == ["base-model"]


async def test_restarted_replica_gets_its_adapter_back(
    server: FakeVLLM, make_backend: BackendFactory
) -> None:
    backend = make_backend(server)
    await backend.load_adapter("v2", "/adapters/v2")
    server.reset()  # the replica restarted and forgot runtime adapters

    result = await backend.generate(_request(adapter="v2"))

    assert result.text == "a caption from v2"
    assert server.loaded_adapters == {"v2": "/adapters/v2"}


async def test_health_is_ok_while_one_replica_answers(
    server: FakeVLLM, make_backend: BackendFactory
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    backend = make_backend(server, closed)

    health = await backend.health()

    assert health.ok and closed in health.reason and not health.tiny


async def test_health_reports_down_server(make_backend: BackendFactory) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    health = await make_backend(closed).health()

    assert not health.ok and "unreachable" in health.reason


def test_backend_survives_one_event_loop_per_call(server: FakeVLLM) -> None:
    # Celery tasks run each job in its own asyncio.run: pooled sockets must not leak across.
    backend = OpenAICompatBackend([server.base_url], model="base-model")
    texts = [asyncio.run(backend.generate(_request())).text for _ in range(2)]
    asyncio.run(backend.aclose())

    assert texts == ["a caption from base-model"] * 2


def test_build_backend_picks_openai_and_rejects_unknown_kind() -> None:
    backend = build_backend("openai", base_urls=["http://127.0.0.1:1/v1"], model="m")
    assert isinstance(backend, OpenAICompatBackend)
    assert backend.base_urls == ["http://127.0.0.1:1"]
    with pytest.raises(ValueError, match="expected one of: inprocess, openai"):
        build_backend("tgi")


# -- contract test against a real OpenAI-compatible server ----------------------------------


@pytest.fixture(scope="module")
def transformers_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    if transformers_cli() is None:
        pytest.skip("transformers CLI (transformers[serving]) is not installed")
    from app.ml.tiny_vlm import build_tiny_vlm

    model_dir = build_tiny_vlm(tmp_path_factory.mktemp("serve") / "tiny-vlm")
    with start_transformers_serve(model_dir, startup_timeout_s=120) as running:
        yield running.base_url, model_dir


@pytest.mark.slow
async def test_contract_with_transformers_serve(
    transformers_server: tuple[str, Path],
) -> None:
    base_url, model_dir = transformers_server
    backend = OpenAICompatBackend(
        [base_url], model=str(model_dir), server_kind="generic", timeout_s=60, max_retries=0
    )
    try:
        result = await backend.generate(_request(temperature=0.7, top_k=20))
        health = await backend.health()
    finally:
        await backend.aclose()

    assert isinstance(result.text, str)
    assert result.prompt_tokens > 0 and 0 < result.completion_tokens <= 32
    assert health.ok and health.tiny


def test_tagged_reference_images_are_encoded_once(monkeypatch) -> None:
    """Stored photos repeat across requests: their resize + JPEG encoding is cached."""
    from PIL import Image

    from app.ml import images
    from app.ml.backends import openai_compat
    from app.ml.backends.openai_compat import OpenAICompatBackend

    calls: list[int] = []
    real = images.to_data_url

    def counting(image, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(image, **kwargs)

    monkeypatch.setattr(openai_compat, "to_data_url", counting)
    backend = OpenAICompatBackend(["http://unused"], model="m")
    ref = Image.new("RGB", (64, 64), (1, 2, 3))
    ref.info[images.CACHE_KEY_INFO] = "sha-of-ref"
    query = Image.new("RGB", (64, 64), (9, 9, 9))
    first = backend._encode_image(ref)
    assert backend._encode_image(ref) == first
    backend._encode_image(query)
    backend._encode_image(query)
    assert len(calls) == 3  # the reference once, the untagged query every time


def _valid_jpeg(size: tuple[int, int]):  # type: ignore[no-untyped-def]
    from app.storage import validate_image

    buf = io.BytesIO()
    _image((30, 90, 200), size).save(buf, "JPEG")
    data = buf.getvalue()
    return data, validate_image(
        data, "q.jpg", "image/jpeg", max_bytes=10**7, max_pixels=10**8
    ).open()


def test_query_jpeg_within_bounds_is_sent_byte_identical() -> None:
    backend = OpenAICompatBackend(["http://unused"], model="m", max_pixels=112 * 112)
    data, query = _valid_jpeg((112, 84))  # multiples of 28, within the bounds
    url = backend._encode_image(query)
    assert base64.b64decode(url.split(",", 1)[1]) == data


def test_query_jpeg_beyond_bounds_is_resized_and_encoded() -> None:
    backend = OpenAICompatBackend(["http://unused"], model="m", max_pixels=112 * 112)
    data, query = _valid_jpeg((512, 384))
    url = backend._encode_image(query)
    assert base64.b64decode(url.split(",", 1)[1]) != data
    assert _decode_data_url(url).size == (112, 84)


@pytest.mark.parametrize("size", [(512, 384), (100, 60), (28, 28), (4032, 3024), (20, 8000)])
def test_model_image_size_is_the_size_sent(size: tuple[int, int]) -> None:
    backend = OpenAICompatBackend(["http://unused"], model="m", max_pixels=112 * 112)
    expected = backend.model_image_size(*size)
    sent = _decode_data_url(backend._encode_image(_image((1, 2, 3), size))).size
    assert expected == sent or (expected is None and size == (20, 8000))
