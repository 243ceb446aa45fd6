"""InProcessBackend with the tiny VLM: RePIC prompts, a free event loop, LoRA adapter swaps."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from app.ml.backends import (
    AdapterLoadError,
    BackendError,
    CaptionRequest,
    GenerationParams,
    build_backend,
)
from app.ml.backends.inprocess import InProcessBackend
from app.ml.errors import ModelUnavailable
from app.ml.prompt import Demonstration, build_caption_prompt
from app.ml.tiny_vlm import TINY_MAX_PIXELS, TINY_MIN_PIXELS, build_tiny_vlm

pytestmark = pytest.mark.nodb


def _save_random_lora(model_dir: Path, out_dir: Path, seed: int) -> Path:
    """A LoRA on the language model's q/v projections with non-zero B, so it changes outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    base = AutoModelForImageTextToText.from_pretrained(model_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q_proj|v_proj)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = get_peft_model(base, config)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn_like(param) * 0.5)
    model.save_pretrained(str(out_dir))
    return out_dir


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inprocess")
    # initializer_range 0.2: with 0.02 the output distribution is nearly uniform (ML notes).
    model_dir = build_tiny_vlm(root / "vlm", initializer_range=0.2, extra_tokens=["<bo>"])
    return {
        "model": model_dir,
        "lora_a": _save_random_lora(model_dir, root / "lora-a", seed=1),
        "lora_b": _save_random_lora(model_dir, root / "lora-b", seed=2),
    }


@pytest.fixture
async def backend(tiny: dict[str, Path]) -> AsyncIterator[InProcessBackend]:
    caption_backend = InProcessBackend(
        tiny["model"], min_pixels=TINY_MIN_PIXELS, max_pixels=TINY_MAX_PIXELS
    )
    yield caption_backend
    await caption_backend.aclose()


def _request(adapter: str | None = None, max_new_tokens: int = 12) -> CaptionRequest:
    prompt = build_caption_prompt(
        [
            Demonstration("bo", "a corgi", Image.new("RGB", (160, 120), (200, 120, 40))),
            Demonstration("anya", "a girl", Image.new("RGB", (120, 160), (90, 30, 160))),
        ],
        Image.new("RGB", (200, 150), (30, 90, 200)),
        question="Give a caption of the image.",
    )
    return CaptionRequest(
        prompt.messages,
        prompt.images,
        adapter=adapter,
        params=GenerationParams(max_new_tokens=max_new_tokens),
    )


async def test_generates_caption_for_repic_prompt(backend: InProcessBackend) -> None:
    result = await backend.generate(_request())

    assert isinstance(result.text, str)
    assert result.prompt_tokens > 3 * 4  # three images of at least 4 visual tokens each
    assert 0 < result.completion_tokens <= 12
    assert result.backend == "inprocess" and result.adapter is None
    assert result.generate_ms > 0


async def test_photo_beyond_the_processors_aspect_ratio_is_captioned(
    backend: InProcessBackend,
) -> None:
    # Qwen's processor alone refuses it: "absolute aspect ratio must be smaller than 200".
    strip = Image.new("RGB", (20, 8000), (200, 120, 40))
    prompt = build_caption_prompt([Demonstration("bo", "a corgi", strip)], strip, "Who?")
    request = CaptionRequest(
        prompt.messages, prompt.images, params=GenerationParams(max_new_tokens=2)
    )

    result = await backend.generate(request)

    assert result.completion_tokens > 0
    assert strip.size == (20, 8000)


async def test_greedy_generation_is_deterministic(backend: InProcessBackend) -> None:
    first = await backend.generate(_request())
    second = await backend.generate(_request())

    assert first.text == second.text


async def test_pixel_bounds_control_visual_tokens(tiny: dict[str, Path]) -> None:
    small = InProcessBackend(tiny["model"], min_pixels=TINY_MIN_PIXELS, max_pixels=56 * 56)
    large = InProcessBackend(tiny["model"], min_pixels=TINY_MIN_PIXELS, max_pixels=224 * 224)
    try:
        few = await small.generate(_request(max_new_tokens=1))
        many = await large.generate(_request(max_new_tokens=1))
    finally:
        await small.aclose()
        await large.aclose()

    assert few.prompt_tokens < many.prompt_tokens


async def test_event_loop_stays_responsive_during_generation(backend: InProcessBackend) -> None:
    await backend.generate(_request(max_new_tokens=1))  # load and warm up outside the timing
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    await backend.generate(_request(max_new_tokens=64))
    elapsed = time.monotonic() - started
    task.cancel()

    # Relative bound: a blocked loop shows one gap as long as the whole generation; the
    # machine may be busy, so absolute tick spacing is not asserted.
    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    assert len(ticks) >= 5, f"only {len(ticks)} ticks in {elapsed:.2f} s"
    assert max(gaps) < max(0.1, elapsed / 2), f"loop blocked {max(gaps):.2f} of {elapsed:.2f} s"


async def test_adapter_changes_output_and_base_stays_the_same_object(
    backend: InProcessBackend, tiny: dict[str, Path]
) -> None:
    plain = await backend.generate(_request())
    base = backend.base_model

    await backend.load_adapter("a", str(tiny["lora_a"]))
    adapted = await backend.generate(_request(adapter="a"))
    without = await backend.generate(_request())

    assert adapted.text != plain.text
    assert without.text == plain.text
    assert backend.base_model is base


async def test_switching_between_two_adapters(
    backend: InProcessBackend, tiny: dict[str, Path]
) -> None:
    await backend.load_adapter("a", str(tiny["lora_a"]))
    base = backend.base_model
    await backend.load_adapter("b", str(tiny["lora_b"]))

    first_a = await backend.generate(_request(adapter="a"))
    first_b = await backend.generate(_request(adapter="b"))
    again_a = await backend.generate(_request(adapter="a"))

    assert first_a.text != first_b.text
    assert again_a.text == first_a.text
    assert backend.base_model is base
    assert backend.adapters == {"a": str(tiny["lora_a"]), "b": str(tiny["lora_b"])}


async def test_concurrent_requests_with_different_adapters_are_not_mixed(
    backend: InProcessBackend, tiny: dict[str, Path]
) -> None:
    await backend.load_adapter("a", str(tiny["lora_a"]))
    await backend.load_adapter("b", str(tiny["lora_b"]))
    expected = {
        name: (await backend.generate(_request(adapter=name, max_new_tokens=6))).text
        for name in ("a", "b", None)
    }

    names = ["a", "b", None, "b", "a", None]
    requests = [_request(adapter=n, max_new_tokens=6) for n in names]
    results = await asyncio.gather(*(backend.generate(r) for r in requests))

    assert [r.text for r in results] == [expected[n] for n in names]


async def test_unloading_the_last_adapter_restores_base_outputs(
    backend: InProcessBackend, tiny: dict[str, Path]
) -> None:
    plain = await backend.generate(_request())
    await backend.load_adapter("a", str(tiny["lora_a"]))
    await backend.unload_adapter("a")
    await backend.unload_adapter("a")  # idempotent

    assert (await backend.generate(_request())).text == plain.text
    with pytest.raises(BackendError, match="adapter 'a' is not loaded"):
        await backend.generate(_request(adapter="a"))


async def test_bad_adapter_path_is_adapter_load_error(
    backend: InProcessBackend, tmp_path: Path
) -> None:
    with pytest.raises(AdapterLoadError, match="adapter_config.json missing"):
        await backend.load_adapter("x", str(tmp_path))


async def test_missing_model_path_is_model_unavailable(tmp_path: Path) -> None:
    missing = InProcessBackend(tmp_path / "nowhere")
    try:
        health = await missing.health()
        with pytest.raises(ModelUnavailable, match="does not exist"):
            await missing.generate(_request())
    finally:
        await missing.aclose()

    assert not health.ok and "does not exist" in health.reason


def test_generate_sync_matches_async(tiny: dict[str, Path]) -> None:
    backend = InProcessBackend(tiny["model"], min_pixels=TINY_MIN_PIXELS, max_pixels=56 * 56)
    sync_text = backend.generate_sync(_request(max_new_tokens=4)).text
    async_text = asyncio.run(backend.generate(_request(max_new_tokens=4))).text
    asyncio.run(backend.aclose())

    assert sync_text == async_text


def test_uncached_hub_id_offline_is_model_unavailable() -> None:
    backend = InProcessBackend("repic-test/no-such-model", local_files_only=True)
    with pytest.raises(ModelUnavailable, match="not available offline"):
        backend.load()


async def test_health_reports_tiny_model_and_adapters(
    backend: InProcessBackend, tiny: dict[str, Path]
) -> None:
    await backend.load_adapter("a", str(tiny["lora_a"]))
    health = await backend.health()

    assert health.ok and health.tiny
    assert health.model == str(tiny["model"]) and health.adapters == ("a",)


def test_build_backend_picks_inprocess(tiny: dict[str, Path]) -> None:
    backend = build_backend("inprocess", model_path=str(tiny["model"]))
    assert isinstance(backend, InProcessBackend)
