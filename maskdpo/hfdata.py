"""Opening a Hugging Face ``datasets`` source: a Hub name, a local dataset folder or a data file.

Used where the project reads a dataset that others publish (prompt sets,
preference datasets). Rows are named ``source[split] row N`` (N from 0) in
errors. Offline (``HF_DATASETS_OFFLINE=1``) only what is local or already
in the ``datasets`` cache opens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

DATA_FILE_KINDS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text"}


def load_hf_dataset(source: str, split: str | None = None, config: str | None = None):
    """``(dataset, split)`` from ``datasets.load_dataset``: a Hub name, a local dataset folder or a local
    data file (by extension). Without ``split``, a source with one split gives that one; several are an
    error naming them."""
    from datasets import load_dataset

    path = Path(source)
    if path.is_file():
        kind = DATA_FILE_KINDS.get(path.suffix)
        if kind is None:
            raise ValueError(f"{source}: cannot tell the file type from its extension "
                             f"({', '.join(DATA_FILE_KINDS)})")
        return load_dataset(kind, data_files=str(path), split="train"), "train"
    try:
        loaded = load_dataset(source, config, split=split)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{source}: no such file, folder or Hub dataset ({exc})") from None
    except ValueError as exc:
        if split is not None and "split" in str(exc).lower():
            raise ValueError(f"{source}: no split {split!r} ({exc})") from None
        raise
    if split is not None:
        return loaded, split
    if len(loaded) != 1:
        raise ValueError(f"{source} has splits {', '.join(loaded)}: choose one")
    (split, dataset), = loaded.items()
    return dataset, split


def iter_hf_rows(source: str, split: str | None = None, config: str | None = None) -> Iterator[tuple[str, dict]]:
    """``(where, row)`` of every row; columns a row does not have (``None`` after Arrow's schema merge) are left out."""
    dataset, split = load_hf_dataset(source, split=split, config=config)
    for i, row in enumerate(dataset):
        yield f"{source}[{split}] row {i}", {k: v for k, v in row.items() if v is not None}


def row_error(where: str, exc: Any) -> ValueError:
    """A row's field error as ``source[split] row N: field 'F': message``."""
    return ValueError(f"{where}: {exc}")
