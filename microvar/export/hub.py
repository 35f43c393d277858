"""`microvar push`: a dataset directory (``microvar expand``'s OUT) as a Hub dataset repo.

The folder that goes up is the one ``datasets.push_to_hub`` would make, built locally first:
``data/train-00000-of-0000N.parquet`` shards in row order (contiguous slices, so the
curriculum order survives), the dataset card ``README.md`` whose ``configs`` point at them,
and ``manifest.json``, ``rejects.jsonl`` and a chat template when there is one. ``to_dir``
writes it to a local folder (staged, renamed at the end); ``push`` uploads it with one
``upload_folder`` call, which is one commit: the Hub never holds half a dataset."""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import MicrovarError
from .card import PARQUET_FILES, load_saved, write_card
from .dataset import quiet_datasets, staging

log = logging.getLogger(__name__)

MAX_SHARD_BYTES = 500 * 1024 * 1024   # Arrow bytes per parquet shard, as datasets' push_to_hub ("500MB")
COPIED = ("manifest.json", "rejects.jsonl")
# what a previous push left that this one replaces (removed in the same commit if not re-uploaded)
REPLACED = ["data/*", "README.md", "manifest.json", "rejects.jsonl", "*.jinja"]


@dataclass
class Folder:
    path: Path
    rows: int
    shards: int


def load(out: Path):
    """The dataset at OUT, refusing what microvar did not write."""
    out = Path(out)
    if not out.is_dir():
        raise MicrovarError(f"{out}: no such directory")
    if not (out / "state.json").is_file() or not (out / "dataset_info.json").is_file():
        raise MicrovarError(f"{out}: not a dataset written by microvar expand (no state.json / dataset_info.json)")
    quiet_datasets()
    ds = load_saved(out)
    if not len(ds):
        raise MicrovarError(f"{out} has no rows (every seed was rejected: see {out / 'rejects.jsonl'}); "
                            "nothing to push")
    return ds


def build(out: Path, folder: Path, license: str | None = None, repo_id: str | None = None,
          max_shard_bytes: int = MAX_SHARD_BYTES, ds=None) -> Folder:
    """Write the Hub folder for OUT into the (existing, empty) directory ``folder``."""
    out = Path(out)
    ds = ds if ds is not None else load(out)
    n = max(1, math.ceil(ds.data.nbytes / max_shard_bytes))
    n = min(n, max(1, len(ds)))
    data = folder / "data"
    data.mkdir()
    for i in range(n):
        # contiguous: shard i holds rows [start_i, end_i), so the shards in name order are the rows in order
        part = ds.shard(num_shards=n, index=i, contiguous=True)
        part.to_parquet(str(data / f"train-{i:05d}-of-{n:05d}.parquet"))
    for name in COPIED:
        if (out / name).is_file():
            shutil.copyfile(out / name, folder / name)
    for template in out.glob("*.jinja"):
        shutil.copyfile(template, folder / template.name)
    write_card(folder, data_files=PARQUET_FILES, license=license, repo_id=repo_id)
    return Folder(folder, len(ds), n)


def to_dir(out: Path, target: Path, overwrite: bool = False, license: str | None = None,
           max_shard_bytes: int = MAX_SHARD_BYTES) -> Folder:
    """The Hub folder for OUT at TARGET (``datasets.load_dataset(TARGET)`` loads it). An
    existing TARGET is refused unless ``overwrite``; TARGET appears complete or not at all."""
    out, target = Path(out), Path(target)
    ds = load(out)
    _not_nested(out, target)
    with staging(target, overwrite) as tmp:
        folder = build(out, tmp, license=license, max_shard_bytes=max_shard_bytes, ds=ds)
    return Folder(target, folder.rows, folder.shards)


def _not_nested(out: Path, target: Path) -> None:
    a, b = out.resolve(), target.resolve()
    if a == b or a in b.parents or b in a.parents:
        raise MicrovarError(f"-o {target} must be outside the dataset {out} (and not contain it)")


def resolve_token(token: str | None) -> str:
    """--token, else HF_TOKEN, else the token of `hf auth login`."""
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise MicrovarError("no Hugging Face token: pass --token, set HF_TOKEN, or log in with `hf auth login` "
                            "(a token with write access); nothing was uploaded")
    return token


def push(out: Path, repo_id: str, private: bool = False, token: str | None = None, revision: str | None = None,
         license: str | None = None, overwrite: bool = False, max_shard_bytes: int = MAX_SHARD_BYTES) -> str:
    """Upload OUT to the dataset repo ``repo_id`` in one commit; returns the dataset's URL.

    A repo that already holds files is refused unless ``overwrite`` (then this commit replaces
    the dataset's files; the old ones stay in the repo's history)."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import (
        HFValidationError,
        HTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise MicrovarError(f"{repo_id!r} is not a repo id (USER/NAME or ORG/NAME): {e}") from None
    if "/" not in repo_id:
        raise MicrovarError(f"{repo_id!r}: give the repo as USER/NAME or ORG/NAME")
    token = resolve_token(token)
    if constants.HF_HUB_OFFLINE:
        raise MicrovarError("HF_HUB_OFFLINE is set, so the Hub cannot be reached; nothing was uploaded (unset it, "
                            "or write the folder with -o DIR (--to-dir) and upload it later)")
    ds = load(out)
    network = (HTTPError, OSError)   # HfHubHTTPError and its kin, httpx transport errors, connection errors
    try:  # beside OUT: the same disk as the data, which /tmp may be too small for
        tmp = Path(tempfile.mkdtemp(dir=Path(out).resolve().parent, prefix=f".{Path(out).name}.push-"))
    except OSError:
        tmp = Path(tempfile.mkdtemp(prefix="microvar-push-"))
    try:
        folder = build(out, tmp, license=license, repo_id=repo_id, max_shard_bytes=max_shard_bytes, ds=ds)
        api = HfApi(token=token)
        created, made = False, []   # made: what this push created on the Hub before it failed
        try:
            try:
                existing = [f for f in api.list_repo_files(repo_id, repo_type="dataset", revision=revision)
                            if f != ".gitattributes"]
            except RevisionNotFoundError:
                existing = []
            except RepositoryNotFoundError:
                existing, created = [], True
            if existing and not overwrite:
                shown = ", ".join(sorted(existing)[:5]) + (", …" if len(existing) > 5 else "")
                raise MicrovarError(f"the dataset repo {repo_id} already holds files ({shown}); pass --overwrite to "
                                    "replace them in one commit (the old files stay in the repo history); "
                                    "nothing was uploaded")
            url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
            if created:
                made.append("the repo was created but is empty")
            if revision:
                api.create_branch(repo_id, repo_type="dataset", branch=revision, exist_ok=True)
                made.append(f"the branch {revision} may have been created")
        except network as e:
            raise MicrovarError(f"could not {'create' if created else 'reach'} the dataset repo {repo_id} on the Hub: "
                                f"{_why(e)}; nothing was uploaded" + "".join(f"; {m}" for m in made)) from None
        try:
            api.upload_folder(repo_id=repo_id, folder_path=str(folder.path), repo_type="dataset", revision=revision,
                              commit_message=f"microvar: {folder.rows} rows in curriculum order, "
                                             f"{folder.shards} parquet shard{'s' if folder.shards > 1 else ''}",
                              delete_patterns=REPLACED)
        except network as e:
            state = "; ".join(made) + "; run the same command again to retry" if made else \
                "the repo is as it was before"
            raise MicrovarError(f"upload to {repo_id} failed: {_why(e)}; nothing was committed (the Hub takes all the "
                                f"files in one commit or none): {state}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    url = str(url).rstrip("/")
    return f"{url}/tree/{revision}" if revision else url


def _why(e: Exception) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 400 else text[:399] + "…"
