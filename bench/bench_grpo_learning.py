"""GRPO learning check: does RePIC's GRPO + LoRA raise the single-ICT reward on a tiny model?

A benchmark, not a unit test (it takes minutes on CPU). It trains the tiny random Qwen2.5-VL
(``initializer_range=0.2``: with the default 0.02 the output distribution is near uniform and
LoRA cannot move the logits, ML_STACK_NOTES.md) with LoRA on the language model's attention
and MLP layers, on a toy single-ICT task built from the DreamBooth photos
(``../shared/data/dreambooth``; drawn shapes when absent), scored by the real RePIC reward
(>= 100 characters AND the exact ``<name>``; REPIC_SPEC.md §3), through the same
:func:`trainer.grpo.main` the service uses. It prints the curve (step, mean ICT reward over a
window) and writes the figures into ``docs/benchmarks.md`` under its own section.

Usage: ``python bench/bench_grpo_learning.py [--steps 300] [--subjects 1,3] [--fake-steps 40]
[--loss grpo|gspo] [--base qwen2.5-vl|qwen3-vl] [--no-doc]`` (about 12 minutes with the
defaults). ``--loss gspo`` (sequence-level importance ratios) and ``--base qwen3-vl`` (a tiny
random Qwen3-VL, :mod:`app.ml.tiny_qwen3_vl`) check the follow-up's recipe the same way; each
combination writes its own section.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trainer.arguments import load_args  # noqa: E402
from trainer.callbacks import Progress  # noqa: E402
from trainer.grpo import main  # noqa: E402
from trainer.toy_concepts import (  # noqa: E402
    SHARED_DREAMBOOTH,
    dreambooth_concepts,
    generated_concepts,
)

SECTION = "## GRPO learning check (bench/bench_grpo_learning.py)"
BASES = ("qwen2.5-vl", "qwen3-vl")


def section(args: argparse.Namespace) -> str:
    """The doc section of a run: the GRPO/Qwen2.5-VL one keeps its historical title."""
    if args.loss == "grpo" and args.base == "qwen2.5-vl":
        return SECTION
    return (f"## {args.loss.upper()} learning check, tiny {args.base} "
            f"(bench/bench_grpo_learning.py --loss {args.loss} --base {args.base})")
SUMMARY_HEADER = (
    "| subjects | names | steps | s/step | ICT reward, first 10 steps | last 20 steps "
    "| first 10-step window > 0.8 | below 0.2 -> above 0.8 |\n|---|---|---|---|---|---|---|---|"
)
SUBJECTS = ["dog", "cat", "backpack", "vase", "candle", "clock", "can", "duck_toy"]


class Curve:
    """Collects (step, ICT reward mean) from the run's progress reports."""

    def __init__(self) -> None:
        self.points: list[tuple[int, float, float]] = []

    def on_progress(self, p: Progress) -> None:
        if "ict" in p.reward_means:
            self.points.append((p.step, p.reward_means["ict"], p.elapsed_s))
            if p.step % 10 == 0:
                window = [r for _, r, _ in self.points[-10:]]
                print(f"step {p.step:4d}  ict reward (last 10) {sum(window) / len(window):.3f}"
                      f"  elapsed {p.elapsed_s:6.0f}s", flush=True)


def windows(points: list[tuple[int, float, float]], size: int) -> list[tuple[int, float]]:
    out = []
    for start in range(0, len(points), size):
        chunk = points[start:start + size]
        out.append((chunk[-1][0], sum(r for _, r, _ in chunk) / len(chunk)))
    return out


def write_doc(text: str, title: str = SECTION) -> None:
    doc = REPO / "docs" / "benchmarks.md"
    doc.parent.mkdir(parents=True, exist_ok=True)
    current = doc.read_text(encoding="utf-8") if doc.exists() else "# Benchmarks\n"
    start = current.find(title + "\n")
    if start == -1:
        updated = current.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    else:
        # Replace only our section: up to the next "## " heading (other engineers' sections).
        end = current.find("\n## ", start + len(title))
        tail = current[end + 1:] if end != -1 else ""
        updated = current[:start] + text.rstrip("\n") + "\n" + ("\n" + tail if tail else "")
    doc.write_text(updated, encoding="utf-8")


def run(args: argparse.Namespace, subjects: int, name_tokens: bool, steps: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="repic-grpo-bench-"))
    if SHARED_DREAMBOOTH.is_dir():
        concepts = dreambooth_concepts(SHARED_DREAMBOOTH, SUBJECTS[:subjects], max_photos=4)
        source = "DreamBooth photos"
    else:
        concepts = generated_concepts(work / "photos", n_concepts=subjects)
        source = "drawn shapes (no ../shared)"
    from app.ml.tiny_qwen3_vl import build_tiny_qwen3_vl
    from app.ml.tiny_vlm import build_tiny_vlm

    build = build_tiny_qwen3_vl if args.base == "qwen3-vl" else build_tiny_vlm
    side = 32 if args.base == "qwen3-vl" else 28  # one visual token: patch x merge
    model = "tiny" if args.base == "qwen2.5-vl" else str(
        build(work / "tiny-plain", initializer_range=0.2))
    if name_tokens:
        # Each concept's "<name>" becomes ONE token of the tiny byte-level tokenizer, as real
        # names are few tokens for Qwen's BPE. Spelled byte by byte, a random tiny model never
        # emits a whole name by chance, every reward is 0 and GRPO has no signal at all.
        names = [f"<{c.name}>" for c in concepts]
        model = str(build(work / "tiny", initializer_range=0.2, extra_tokens=names))
    train_args = load_args(
        None,
        tiny=True,
        model_name_or_path=model,
        output_dir=str(work / "runs"),
        num_concept_records=64,
        mix_oct=0, mix_vlt=0, mix_ict=1, mix_ict_multi=0,
        detail_question_rate=0.0,
        fake_names=not name_tokens,
        min_pixels=side * side,
        max_pixels=4 * side * side,
        loss=args.loss,
        num_generations=4,
        prompts_per_step=args.prompts,
        max_completion_length=args.max_len,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        beta=0.04,
        num_train_epochs=1000,
        max_steps=steps,
        lora_r=16,
        lora_alpha=32,
        lora_dropout=0.0,
        device="cpu",
        torch_threads=args.threads,
        seed=args.seed,
    )
    curve = Curve()
    started = time.monotonic()
    result = main(train_args, callbacks=[curve], concepts=concepts)
    wall = time.monotonic() - started
    points = curve.points
    # The start is the first 10 steps: on an easy task learning shows within 20.
    first = [r for _, r, _ in points[:10]]
    last = [r for _, r, _ in points[-20:]]
    crossed = next((s for s, r in windows(points, 10) if r > 0.8), None)
    first10 = round(sum(first) / max(1, len(first)), 3)
    last20 = round(sum(last) / max(1, len(last)), 3)
    return {
        "subjects": len(concepts),
        "source": source,
        "names": "one token each, real" if name_tokens else "fake, per epoch, byte by byte",
        "steps": result.steps,
        "wall_s": round(wall, 1),
        "s_per_step": round(wall / max(1, result.steps), 2),
        "ict_first10": first10,
        "ict_last20": last20,
        "first_window_above_0.8": crossed,
        "target_met": first10 < 0.2 and last20 > 0.8,
        "curve": windows(points, args.window),
        "run_dir": str(result.run_dir),
    }


GRPO_READING = """Reading it:
- With one subject the run meets the target: the policy learns to write long completions
  that contain the name token.
- With several subjects the reward climbs, then stalls: once the policy settles on a name,
  a prompt whose G=4 completions all miss gets zero reward spread, hence zero advantage and no
  gradient (GRPO's known dead zone); more generations, a higher temperature or more steps
  would be needed.
- With fake names spelled byte by byte (the production setting: names change every epoch)
  the random tiny model never writes a whole name by chance, every reward is 0 and nothing
  trains. This is a limit of a random byte-level toy model, not of the pipeline: a real
  Qwen2.5-VL copies names from its prompt zero-shot (the paper's zero-shot recall is
  33-77%), which is exactly the signal GRPO amplifies.
"""


def reading(reports: list[dict], args: argparse.Namespace) -> str:
    """What the figures say: the commentary of the GRPO run, measured lines for the others."""
    if section(args) == SECTION:
        return GRPO_READING
    lines = [f"- {r['subjects']} subject(s), names {r['names']}: ICT reward "
             f"{r['ict_first10']:.3f} over the first 10 steps, first 10-step window above 0.8 "
             f"at step {r['first_window_above_0.8']}, best {args.window}-step window "
             f"{max((v for _, v in r['curve']), default=0.0):.3f}, {r['ict_last20']:.3f} over "
             f"the last 20 steps (below 0.2 -> above 0.8: {'yes' if r['target_met'] else 'no'})."
             for r in reports]
    return "Reading it:\n" + "\n".join(lines) + "\n"


def render(reports: list[dict], args: argparse.Namespace) -> str:
    side = 64 if args.base == "qwen3-vl" else 56
    settings = {"G": 4, "prompts_per_step": args.prompts, "max_completion_length": args.max_len,
                "lr": args.lr, "lr_schedule": "constant", "lora_r": 16, "lora_alpha": 32,
                "beta": 0.04, "images": f"<= {side}*{side} px", "torch_threads": args.threads,
                "loss": args.loss, "base": f"tiny {args.base}"}
    summary = "\n".join(
        f"| {r['subjects']} | {r['names']} | {r['steps']} | {r['s_per_step']} | "
        f"{r['ict_first10']:.3f} | {r['ict_last20']:.3f} | {r['first_window_above_0.8']} | "
        f"{'yes' if r['target_met'] else 'no'} |"
        for r in reports
    )
    steps = sorted({s for r in reports for s, _ in r["curve"]})
    header = " | ".join(f"{r['subjects']} subj., {r['names'].split(',')[0]}" for r in reports)
    curve_rows = []
    for step in steps:
        cells = []
        for r in reports:
            value = dict(r["curve"]).get(step)
            cells.append("" if value is None else f"{value:.3f}")
        curve_rows.append(f"| {step} | " + " | ".join(cells) + " |")
    flags = "".join(f" {arg}" for arg in sys.argv[1:] if arg != "--no-doc")
    model = "Qwen3-VL" if args.base == "qwen3-vl" else "Qwen2.5-VL"
    ratios = ("sequence-level importance ratios, GSPO" if args.loss == "gspo"
              else "token-level importance ratios")
    return f"""{section(args)}

`python bench/bench_grpo_learning.py{flags}` ({time.strftime('%Y-%m-%d')}; CPU, 2 shared cores).
The tiny random {model} (initializer_range 0.2) + LoRA on the language model's attention
and MLP layers, trained by `trainer.grpo.main` (TRL GRPOTrainer, beta 0.04, {ratios}) on a
toy single-ICT task built from {reports[0]['source']} (one reference + one query photo per
record), scored by the real ICT reward: >= 100 characters AND the exact `<name>`.
Settings: `{json.dumps(settings)}`.

{SUMMARY_HEADER}
{summary}

Mean ICT reward per {args.window}-step window:

| step | {header} |
|---|{'---|' * len(reports)}
{chr(10).join(curve_rows)}

{reading(reports, args)}
"""


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--subjects", default="1,3",
                        help="comma-separated subject counts, one run each")
    parser.add_argument("--fake-steps", type=int, default=40,
                        help="steps of the fake-name probe run (0: skip)")
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-2)
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--loss", choices=("grpo", "gspo"), default="grpo")
    parser.add_argument("--base", choices=BASES, default="qwen2.5-vl")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    reports = []
    for subjects in (int(s) for s in args.subjects.split(",") if s.strip()):
        print(f"== {subjects} subject(s), names as single tokens", flush=True)
        reports.append(run(args, subjects, True, args.steps))
    if args.fake_steps > 0:
        print("== fake names spelled byte by byte", flush=True)
        reports.append(run(args, 1, False, args.fake_steps))
    for report in reports:
        print(json.dumps({k: v for k, v in report.items() if k != "curve"}))
    text = render(reports, args)
    print(text)
    if not args.no_doc:
        write_doc(text, section(args))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
