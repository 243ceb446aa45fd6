"""Retrieval with real-size models (random weights cost the same FLOPs as trained ones).

Times, on this machine's CPU (or a GPU with --device cuda), the detector once per photo and the
retriever on 1, 5 and 20 crops embedded in one batch (plus the whole image), for the paper's
stack (OWLv2 base patch16, open_clip ViT-L/14-336) and the cpu profile's (no detector,
ViT-B/32). The ratio column is against ViT-B/32 on the same batch, measured in the same run.

    .venv/bin/python bench/bench_retrieval_models.py [--reps 3] [--device cpu] [--crops 1,5,20]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image


def _time(fn: Callable[[], object], reps: int) -> float:
    fn()  # warm-up
    runs = []
    for _ in range(reps):
        began = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - began)
    return statistics.median(runs)


def _photo(seed: int, size: tuple[int, int] = (1024, 768)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def clip(name: str, device: str) -> tuple[torch.nn.Module, Callable[[Image.Image], torch.Tensor]]:
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None,
                                                                 device=device)
    return model.eval(), preprocess


def embed_fn(model: torch.nn.Module, preprocess: Callable[[Image.Image], torch.Tensor],
             crops: list[Image.Image], device: str) -> Callable[[], object]:
    def run() -> object:
        with torch.inference_mode():
            batch = torch.stack([preprocess(c) for c in crops]).to(device)
            return model.encode_image(batch)  # type: ignore[operator]
    return run


def owl(device: str) -> tuple[torch.nn.Module, object]:
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor

    config = Owlv2Config(vision_config={"image_size": 960, "patch_size": 16})
    model = Owlv2ForObjectDetection(config).to(device).eval()
    return model, Owlv2ImageProcessor()


def detect_fn(model: torch.nn.Module, processor: object, photo: Image.Image, size: int,
              device: str) -> Callable[[], object]:
    pixels = processor(images=photo, size={"height": size, "width": size},  # type: ignore[operator]
                       return_tensors="pt")["pixel_values"].to(device)
    ids = torch.randint(0, 1000, (2, 16), device=device)
    mask = torch.ones_like(ids)

    def run() -> object:
        with torch.inference_mode():
            return model(input_ids=ids, attention_mask=mask, pixel_values=pixels,
                         interpolate_pos_encoding=size != 960)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--crops", default="1,5,20")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.device == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    photo = _photo(0)
    counts = [int(c) for c in args.crops.split(",")]
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, reps {args.reps}\n")

    model, processor = owl(args.device)
    print("| detector (OWLv2 base patch16, 1 photo, 2 queries) | input | seconds |")
    print("|---|---:|---:|")
    for size in (960, 768):
        seconds = _time(detect_fn(model, processor, photo, size, args.device), args.reps)
        print(f"| OWLv2 | {size} px | {seconds:.2f} |")
    del model

    big, big_pre = clip("ViT-L-14-336-quickgelu", args.device)
    small, small_pre = clip("ViT-B-32-quickgelu", args.device)
    print("\n| crops + whole image | ViT-L/14-336 s | ViT-B/32 s | ratio L/B |")
    print("|---:|---:|---:|---:|")
    for n in counts:
        crops = [photo] + [_photo(i + 1, (320, 320)) for i in range(n)]
        large = _time(embed_fn(big, big_pre, crops, args.device), args.reps)
        base = _time(embed_fn(small, small_pre, crops, args.device), args.reps)
        print(f"| {n} + 1 | {large:.2f} | {base:.3f} | {large / base:.1f} |")


if __name__ == "__main__":
    main()
