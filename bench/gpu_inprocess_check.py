"""CUDA path of the in-process caption backend (tiny VLM, bf16) and of a tiny GRPO run.

Run on a GPU machine: ``python bench/gpu_inprocess_check.py``. Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import torch

    dev = "cpu" if "--cpu" in sys.argv else "cuda"  # --cpu: a dry run of this script
    from peft import LoraConfig, get_peft_model
    from PIL import Image
    from transformers import AutoModelForImageTextToText

    from app.ml.backends import build_backend
    from app.ml.backends.base import CaptionRequest, GenerationParams
    from app.ml.prompt import Demonstration, build_caption_prompt
    from app.ml.tiny_vlm import build_tiny_vlm

    out: dict[str, object] = {
        "cuda": torch.cuda.is_available(),
        "device": (torch.cuda.get_device_name(0) if dev == "cuda" else "cpu"),
    }
    tmp = Path(tempfile.mkdtemp())
    vlm = build_tiny_vlm(tmp / "vlm", initializer_range=0.2)
    # A LoRA adapter with non-zero B so it changes the output.
    base = AutoModelForImageTextToText.from_pretrained(vlm)
    peft_model = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    )
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    peft_model.save_pretrained(tmp / "adapter")

    async def run() -> None:
        backend = build_backend(
            "inprocess",
            model_path=str(vlm),
            device=dev,
            dtype="bfloat16" if dev == "cuda" else "float32",
            min_pixels=None,
            max_pixels=None,
        )
        t = time.perf_counter()
        await backend.aload()
        out["load_s"] = round(time.perf_counter() - t, 3)
        img = lambda c: Image.new("RGB", (96, 80), c)  # noqa: E731
        prompt = build_caption_prompt(
            [Demonstration("bo", "a corgi", img((200, 100, 50)))],
            img((10, 200, 30)),
            "Give a caption of the image.",
        )
        req = CaptionRequest(
            prompt.messages, prompt.images, params=GenerationParams(max_new_tokens=32)
        )
        await backend.generate(req)
        t = time.perf_counter()
        base_result = await backend.generate(req)
        out["generate_ms"] = round((time.perf_counter() - t) * 1000, 1)
        out["tokens"] = base_result.completion_tokens
        await backend.load_adapter("v1", str(tmp / "adapter"))
        with_adapter = await backend.generate(
            CaptionRequest(prompt.messages, prompt.images, adapter="v1", params=req.params)
        )
        out["adapter_changes_output"] = with_adapter.text != base_result.text
        out["param_device"] = str(next(backend.base_model.parameters()).device)
        out["param_dtype"] = str(next(backend.base_model.parameters()).dtype)
        await backend.aclose()

    asyncio.run(run())

    from trainer.arguments import load_args
    from trainer.grpo import main as grpo_main

    args = load_args(
        tiny=True,
        overrides=[f"device={dev}", "max_steps=3", f"output_dir={tmp / 'runs'}", "torch_threads=4"],
    )
    t = time.perf_counter()
    result = grpo_main(args)
    out["tiny_grpo_cuda_s"] = round(time.perf_counter() - t, 1)
    out["tiny_grpo_steps"] = result.steps
    out["tiny_grpo_version"] = {k: v for k, v in result.version.items() if k != "reward_means"}
    if dev == "cuda":
        out["tiny_grpo_peak_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
