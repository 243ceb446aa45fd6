"""``repic data``: training data as the model will see it, checked before GPU hours are spent,
and dataset files built from public formats (``from-subjects``, ``from-coco``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from app.cli.context import fail

data_app = typer.Typer(
    help="Training data: look at a dataset file as the trainer will read it, or build one "
    "from pairs of photos of one subject or from COCO-style referring expressions.",
    no_args_is_help=True,
)


@data_app.command("preview")
def data_preview(
    file: Annotated[
        Path,
        typer.Argument(help="Dataset file: JSON list or JSONL, our record format or the original."),
    ],
    image_root: Annotated[
        Path | None,
        typer.Option(help="Folder relative image paths resolve against (default: the file's)."),
    ] = None,
    n: Annotated[int, typer.Option("--n", help="Records to show (0: all).")] = 10,
    seed: Annotated[int, typer.Option(help="Seed of the run (keys the suffix draws).")] = 0,
    epoch: Annotated[int, typer.Option(help="Epoch whose suffix draws to show (from 0).")] = 0,
) -> None:
    """Print, one JSON object per record, exactly what the model is given: the task, the number
    of images, the user-turn text (preamble, question and the suffix drawn for this epoch) and
    the solution the rewards compare against (a box in the pixels of the model's view)."""
    from trainer.records import DatasetError, load_records
    from trainer.trl_dataset import RecordTransform, record_table

    try:
        records = load_records(file, image_root)
    except (OSError, DatasetError) as exc:
        fail(f"{file}: {exc}")
    shown = records if n <= 0 else records[:n]
    table = record_table(shown)
    # The trainer's own transform, with the run's defaults: what is printed is what it builds.
    transform = RecordTransform(None, seed=seed)
    transform.epoch = epoch
    for index in range(len(shown)):
        row = transform({column: values[index : index + 1] for column, values in table.items()})
        (message,) = row["prompt"][0]
        line = {
            "task": row["task"][0],
            "images": len(row["images"][0]),
            "text": message["content"][-1]["text"],
            "solution": row["solution"][0],
        }
        typer.echo(json.dumps(line, ensure_ascii=False))


@data_app.command("from-subjects")
def data_from_subjects(
    folder: Annotated[
        Path,
        typer.Argument(help="Subject folders (photos of one subject each, optional "
                            "subject.json) and/or Subjects200K pair images with their JSON."),
    ],
    out: Annotated[Path, typer.Argument(help="Dataset file to write (JSONL).")],
    records: Annotated[int, typer.Option(help="Records to build.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the pairs, questions and names.")] = 0,
    fixed_names: Annotated[
        bool,
        typer.Option(help="Write fake names into the file (as the paper's data has them, "
                          "readable by the original code) instead of name slots drawn anew "
                          "each epoch."),
    ] = False,
) -> None:
    """Build OCT (yes/no) and ICT records from pairs of photos of one subject and write them as
    a dataset file in our record format (images relative to the file's folder when under it).

    By default a record keeps its name slot (``{name0}``) and the subject's name beside it
    (``real_names``): training fills the slot with a fresh fake name every epoch, the preview
    shows the subject's name."""
    from trainer.fake_names import FakeNameSampler
    from trainer.records import DatasetError, fill_names
    from trainer.subject_pairs import load_subject_folders, subject_pair_records

    if records < 1:
        fail("--records must be at least 1")
    work = out.parent / f"{out.stem}_images"
    try:
        subjects = load_subject_folders(folder, work)
        built = subject_pair_records(subjects, work, records, seed=seed)
    except (OSError, DatasetError) as exc:
        fail(f"{folder}: {exc}")
    sampler = FakeNameSampler(seed=seed) if fixed_names else None
    written = _path_writer(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as handle:
        for index, record in enumerate(built):
            real = list(record.meta["real_names"])
            row = {"image": [written(p) for p in record.images], "problem": record.problem,
                   "solution": record.solution, "task": record.task,
                   "kind": record.meta["kind"], "subjects": record.meta["concept_ids"]}
            if sampler is not None:
                names = sampler.draw(f"subjects:{index}", record.name_slots, exclude=real)
                row["problem"] = fill_names(record.problem, names)
                row["solution"] = fill_names(record.solution, names)
            else:
                row["real_names"] = real
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    counts = {task: sum(1 for r in built if r.task == task) for task in ("oct", "ict")}
    typer.echo(f"wrote {out}: {len(built)} records (oct {counts['oct']}, ict {counts['ict']}) "
               f"from {len(subjects)} subjects")


def _path_writer(out: Path) -> Callable[[Path | str], str]:
    """Image paths as a dataset file holds them: relative to its folder when under it."""
    base = out.parent.resolve()

    def written(path: Path | str) -> str:
        absolute = Path(path).resolve()
        return str(absolute.relative_to(base)) if absolute.is_relative_to(base) else str(absolute)

    return written


@data_app.command("from-coco")
def data_from_coco(
    file: Annotated[
        Path,
        typer.Argument(help="COCO instances JSON (with RefCOCO 'refs', or expressions on the "
                            "annotations), or a JSON list of rows with file_name, bbox and "
                            "expression(s)."),
    ],
    image_root: Annotated[
        Path, typer.Option(help="Folder the file's image names (file_name) are under.")
    ],
    out: Annotated[
        Path, typer.Option(help="Dataset file to write: .json (a list) or .jsonl.")
    ],
    split: Annotated[
        str | None, typer.Option(help="Keep only refs of this split (RefCOCO: train, val...).")
    ] = None,
    records: Annotated[
        int | None, typer.Option(help="Keep a seeded sample of this many records (default: all).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the questions and the sample.")] = 0,
    skip_missing: Annotated[
        bool, typer.Option(help="Skip objects whose image is not under --image-root.")
    ] = False,
) -> None:
    """Build VLT records (a referring expression and its box) from COCO-style detection or
    referring-expression JSON, with the paper's VLT questions, and write them as a dataset
    file (boxes as [x1, y1, x2, y2] in the image's pixels)."""
    from trainer.coco_records import coco_vlt_records, load_coco_refs
    from trainer.records import DatasetError

    if records is not None and records < 1:
        fail("--records must be at least 1")
    if out.suffix.lower() not in (".json", ".jsonl"):
        fail(f"--out {out}: the dataset file must end in .json or .jsonl")
    if not image_root.is_dir():
        fail(f"--image-root {image_root}: not a folder")
    try:
        objects = load_coco_refs(file, image_root, split=split)
        built, skipped = coco_vlt_records(
            objects, seed=seed, max_records=records, skip_missing=skip_missing
        )
    except (OSError, DatasetError) as exc:
        fail(f"{file}: {exc}")
    written = _path_writer(out)
    rows = [
        {"image": written(record.images[0]), "problem": record.problem,
         "solution": record.solution, "task": record.task, **record.meta}
        for record in built
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".jsonl":
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    else:
        text = json.dumps(rows, ensure_ascii=False, indent=1) + "\n"
    out.write_text(text, encoding="utf-8")
    kinds = {kind: sum(1 for r in rows if r["kind"] == kind) for kind in sorted(
        {r["kind"] for r in rows})}
    note = f"; skipped {dict(skipped)}" if skipped else ""
    typer.echo(f"wrote {out}: {len(rows)} VLT records {kinds} from {len(objects)} objects{note}")


@data_app.command("from-feedback")
def data_from_feedback(
    out: Annotated[Path, typer.Argument(help="Dataset file to write (JSONL).")],
    seed: Annotated[int, typer.Option(help="Seed of the questions drawn per caption.")] = 0,
) -> None:
    """Write the caption feedback that the next retrain learns from: accepted and edited
    captions naming concepts, of users who allowed their feedback to train the model, as ICT
    and multi-ICT records (what a training job builds itself; see it with ``data preview``)."""
    from app.cli.context import open_container
    from app.services.feedback_data import feedback_records, write_records

    if out.suffix.lower() != ".jsonl":
        fail(f"{out}: the feedback file must end in .jsonl")
    with open_container() as container, container.session_factory() as session:
        found = feedback_records(session, container.store, seed=seed)
    write_records(found.records, out)
    summary = found.summary()
    skipped = f"; skipped {summary['skipped']}" if summary["skipped"] else ""
    typer.echo(f"wrote {out}: {summary['records']} records (ict {summary['ict']}, ict_multi "
               f"{summary['ict_multi']}) from {summary['captions']} consented captions{skipped}")
