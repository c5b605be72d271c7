"""Opt-in download of a model folder from the Hugging Face Hub, only when asked for.

Only the files a model folder needs are fetched (configs, tokenizer, chat template, ``*.safetensors``;
never pickles), with the ``huggingface_hub`` client, into a hidden sibling folder that the model lists
skip. Each file is checked against the hub's size and hash, and the folder is renamed into place only
once complete. A failed or cancelled download resumes where it stopped on the next call.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from huggingface_hub import HfApi, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import http_get
from huggingface_hub.utils import build_hf_headers

from . import __version__

Progress = Callable[[int, int], None]

PARTIAL_PREFIX = ".illava-partial-"
INCOMPLETE_SUFFIX = ".incomplete"
# Names the commit a partial folder holds files of: a rerun against a newer commit starts over.
COMMIT_FILE = ".illava-commit"
WANTED_SUFFIXES = (".json", ".jinja", ".txt", ".model", ".safetensors")
WANTED_NAMES = ("LICENSE", "README.md")
HASH_BLOCK = 8 * 2**20


class DownloadError(OSError):
    """A download that could not finish; the message names the repo and what to do."""


@dataclass(frozen=True)
class RemoteFile:
    """A file of the repo at one commit, with what the hub says it must be."""

    name: str
    size: int
    sha256: str | None
    git_blob_id: str | None


def download(repo_id: str, to_dir: str | Path, revision: str | None = None, progress: Progress | None = None) -> Path:
    """Download ``repo_id`` into the model folder ``to_dir`` and return it.

    A complete folder already there is returned at once, without the network. Files go to a hidden
    ``.illava-partial-<name>`` beside ``to_dir`` first; ``progress(bytes_done, bytes_total)`` is called
    as they arrive. Raises ``DownloadError`` with what to do when the download cannot finish.
    """
    target = Path(to_dir)
    if target.exists():
        return _existing(target)
    partial = target.parent / f"{PARTIAL_PREFIX}{target.name}"
    api = HfApi()
    with _explained(repo_id, revision, "its file list", partial, api.endpoint):
        info = api.model_info(repo_id, revision=revision, files_metadata=True)
    files = _wanted_files(repo_id, info.siblings or [])
    _start(partial, info.sha)
    _check_space(partial, files)
    done = sum(_bytes_present(partial, f) for f in files)
    total = sum(f.size for f in files)

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(min(done, total), total)

    advance(0)
    headers = build_hf_headers(library_name="illava", library_version=__version__)
    for remote in files:
        if (partial / remote.name).is_file():
            continue
        url = hf_hub_url(repo_id, remote.name, revision=info.sha, endpoint=api.endpoint)
        incomplete = partial / (remote.name + INCOMPLETE_SUFFIX)
        with _explained(repo_id, revision, remote.name, partial, api.endpoint):
            _fetch(url, incomplete, remote, headers, _bar_class(advance))
        _verify(repo_id, incomplete, remote)
        incomplete.rename(partial / remote.name)
    (partial / COMMIT_FILE).unlink()
    os.replace(partial, target)
    return target


def _is_complete(folder: Path) -> bool:
    """Whether ``folder`` has config.json and its weights (every shard its index names)."""
    if not (folder / "config.json").is_file():
        return False
    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        return any(folder.glob("*.safetensors"))
    try:
        shards = set(json.loads(index.read_text())["weight_map"].values())
    except (ValueError, KeyError, TypeError, AttributeError):
        return False
    return all((folder / shard).is_file() for shard in shards)


def _existing(target: Path) -> Path:
    if _is_complete(target):
        return target
    raise DownloadError(
        f"Move {target} away (or finish it by hand), then try again: it exists but is not a complete model folder "
        "(config.json and every *.safetensors file its index names), and a download never writes into a folder it did not make."
    )


def _wanted(name: str) -> bool:
    return "/" not in name and (name.endswith(WANTED_SUFFIXES) or name in WANTED_NAMES)


def _wanted_files(repo_id: str, siblings: list[Any]) -> list[RemoteFile]:
    files = [
        RemoteFile(s.rfilename, s.lfs.size if s.lfs else s.size, s.lfs.sha256 if s.lfs else None, None if s.lfs else s.blob_id)
        for s in siblings if _wanted(s.rfilename)
    ]
    names = {f.name for f in files}
    if "config.json" not in names:
        raise DownloadError(f"Choose another repo: {repo_id} has no config.json at its top, so it is not a transformers model folder.")
    if not any(name.endswith(".safetensors") for name in names):
        raise DownloadError(f"Choose another repo: {repo_id} has no *.safetensors weights, and pickled weights (*.bin, *.pt) are never downloaded.")
    if any(f.size is None for f in files):
        raise DownloadError(
            f"Point HF_ENDPOINT at a Hugging Face Hub (or unset it): the server listed the files of {repo_id} without their sizes, "
            "so they could not be checked."
        )
    return files


def _start(partial: Path, commit: str) -> None:
    marker = partial / COMMIT_FILE
    if partial.is_dir() and not (marker.is_file() and marker.read_text() == commit):
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    marker.write_text(commit)


def _bytes_present(partial: Path, remote: RemoteFile) -> int:
    for name in (remote.name, remote.name + INCOMPLETE_SUFFIX):
        if (partial / name).is_file():
            return (partial / name).stat().st_size
    return 0


def _check_space(partial: Path, files: list[RemoteFile]) -> None:
    needed = sum(f.size - _bytes_present(partial, f) for f in files)
    free = shutil.disk_usage(partial).free
    if free < needed:
        raise DownloadError(f"Free {(needed - free) / 1e9:.1f} GB on the disk of {partial.parent}: the download needs {needed / 1e9:.1f} GB more.")


def _bar_class(advance: Callable[[int], None]) -> type:
    """A stand-in for tqdm, which ``http_get`` drives: each chunk written advances the count."""

    class Bar:
        def __init__(self, *_: object, **__: object) -> None:
            pass

        def __enter__(self) -> "Bar":
            return self

        def __exit__(self, *_: object) -> None:
            return None

        def update(self, n: float | None = 1) -> None:
            advance(int(n or 0))

    return Bar


def _fetch(url: str, path: Path, remote: RemoteFile, headers: dict[str, str], bar: type) -> None:
    """Append the rest of the file to ``path``: a Range request from the bytes already there."""
    if path.is_file() and path.stat().st_size > remote.size:
        path.unlink()
    path.touch()
    with path.open("r+b") as out:
        out.seek(0, os.SEEK_END)
        http_get(url, out, resume_size=out.tell(), headers=headers, expected_size=remote.size,
                 displayed_filename=remote.name, tqdm_class=bar)


def _verify(repo_id: str, path: Path, remote: RemoteFile) -> None:
    size = path.stat().st_size
    if remote.sha256 is not None:
        digest, expected, kind = hashlib.sha256(), remote.sha256, "sha256"
    elif remote.git_blob_id is not None:
        # A non-LFS file's id is git's blob hash: sha1 over a "blob <size>\0" header and the content.
        digest, expected, kind = hashlib.sha1(f"blob {size}\0".encode()), remote.git_blob_id, "git blob hash"
    else:
        digest = expected = kind = None
    if size == remote.size and digest is not None:
        with path.open("rb") as stream:
            while block := stream.read(HASH_BLOCK):
                digest.update(block)
    if size != remote.size or (digest is not None and digest.hexdigest() != expected):
        path.unlink()
        found = f"{size} bytes" if size != remote.size else f"a different {kind}"
        raise DownloadError(
            f"Try again: {remote.name} of {repo_id} arrived with {found} than the hub lists, so it was deleted "
            "(the other files are kept, and the next try fetches only what is missing)."
        )


def _network_errors() -> tuple[type[BaseException], ...]:
    """Transport errors of the HTTP library the hub client uses (httpx2 in huggingface_hub 2, httpx in 1)."""
    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for name in ("httpx2", "httpx"):
        try:
            found.append(importlib.import_module(name).TransportError)
        except ImportError:
            continue
    return tuple(found)


@contextmanager
def _explained(repo_id: str, revision: str | None, what: str, partial: Path, endpoint: str) -> Iterator[None]:
    """Turn the hub client's errors inside the block into a ``DownloadError`` saying what to do."""
    try:
        yield
    except Exception as error:
        explained = _explain(error, repo_id, revision, what, partial, endpoint)
        if explained is None:
            raise
        raise explained from error


def _explain(error: Exception, repo_id: str, revision: str | None, what: str, partial: Path, endpoint: str) -> DownloadError | None:
    """A ``DownloadError`` saying what to do about ``error``; None for errors that are not the download's
    (a bug, or ComfyUI's Cancel), which go on unchanged."""
    kept = f"Files already downloaded are kept in {partial}, and the next try continues from them."
    if isinstance(error, OfflineModeIsEnabled):
        return DownloadError(f"Unset HF_HUB_OFFLINE (and TRANSFORMERS_OFFLINE) to download {repo_id}: the Hugging Face client is set to stay offline.")
    if isinstance(error, GatedRepoError):
        return DownloadError(f"Accept the terms of {repo_id} on its hub page and log in (hf auth login), then try again: the repo is gated.")
    if isinstance(error, RepositoryNotFoundError):
        return DownloadError(f"Check the repo id {repo_id!r}: the hub at {endpoint} has no such model (or it is private: log in with hf auth login).")
    if isinstance(error, RevisionNotFoundError):
        return DownloadError(f"Check the revision {revision!r}: {repo_id} has no such branch, tag or commit.")
    if isinstance(error, EntryNotFoundError):
        return DownloadError(f"Try again later: the hub lists {what} in {repo_id} but did not serve it (404). {kept}")
    if isinstance(error, HfHubHTTPError):
        status = error.response.status_code if error.response is not None else "an error"
        return DownloadError(f"Try again later: the hub at {endpoint} answered {status} for {what} of {repo_id}. {kept}")
    if isinstance(error, _network_errors()):
        return DownloadError(f"Check the network connection (or proxy) and try again: {endpoint} could not be reached for {what} of {repo_id} ({error}). {kept}")
    if isinstance(error, OSError):
        return DownloadError(f"Try again: downloading {what} of {repo_id} failed ({error}). {kept}")
    return None
