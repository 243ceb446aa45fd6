"""Tiny PEFT LoRA adapters for import tests, built on the tiny VLM (seconds, no download)."""

from __future__ import annotations

from pathlib import Path


def save_tiny_lora(model_dir: Path, out_dir: Path, target_modules: str, seed: int = 1) -> Path:
    """A LoRA adapter on ``target_modules`` (a PEFT regex) of the model in ``model_dir``, with
    non-zero B matrices (so it changes outputs); ``base_model_name_or_path`` is ``model_dir``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    base = AutoModelForImageTextToText.from_pretrained(model_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8,
                                                target_modules=target_modules))
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn_like(param) * 0.5)
    model.save_pretrained(str(out_dir))
    return out_dir


LANGUAGE_ONLY = r".*language_model.*\.(q_proj|v_proj)"
WITH_VISION = r".*(language_model.*\.q_proj|visual.*\.qkv)"
