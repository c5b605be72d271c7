"""Opt-in download: the real huggingface_hub client against a stand-in hub on 127.0.0.1 (no internet)."""

from __future__ import annotations

import shutil
import socket

import pytest
from huggingface_hub import constants

import illava
from illava.__main__ import main
from hub_server import HubServer, point_client_at
from illava.backbones import supported_model_types
from illava.backbones.catalogue import CATALOGUE
from illava.hub import PARTIAL_PREFIX, DownloadError, download
from illava.testing.models import build_model_folder

REPO = "tester/tiny-qwen2_5_vl"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A fixture model folder as the hub holds it, with a pickle and a subfolder that must not be fetched."""
    folder = build_model_folder(tmp_path_factory.mktemp("hub") / "tiny-qwen2_5_vl", arch="qwen2_5_vl")
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    (folder / "onnx").mkdir()
    (folder / "onnx" / "model.onnx").write_bytes(b"onnx")
    return folder


@pytest.fixture
def hub(source, monkeypatch, tmp_path):
    server = HubServer({REPO: source})
    point_client_at(monkeypatch, tmp_path, server.url)
    yield server
    server.close()


def model_files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def nothing_looks_like_a_model(parent) -> bool:
    return all(p.name.startswith(".") for p in parent.iterdir())


def test_downloads_only_the_model_files_verified_and_loads(hub, source, tmp_path):
    seen = []
    folder = download(REPO, tmp_path / "models" / "tiny", progress=lambda done, total: seen.append((done, total)))
    assert folder == tmp_path / "models" / "tiny"
    wanted = {name: data for name, data in model_files(source).items() if name != "pytorch_model.bin"}
    assert model_files(folder) == wanted
    assert not hub.requests_for("pytorch_model.bin") and not hub.requests_for("model.onnx")
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["tiny"]
    total = sum(len(data) for data in wanted.values())
    assert seen[-1] == (total, total) and seen[0][0] < total
    assert illava.load(folder, device="cpu", dtype="fp32").backbone is not None


def test_a_complete_folder_is_returned_without_any_request(hub, tmp_path):
    folder = download(REPO, tmp_path / "tiny")
    before = len(hub.log)
    assert download(REPO, folder) == folder
    assert len(hub.log) == before


def test_an_interrupted_download_resumes_with_only_the_rest(hub, source, tmp_path, monkeypatch):
    # Small chunks, so the bytes before the cut reach the disk (the client writes whole chunks).
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 16 * 1024)
    hub.faults["model.safetensors"] = ["cut", "500"]
    target = tmp_path / "models" / "tiny"
    with pytest.raises(DownloadError, match="answered 500 for model.safetensors of " + REPO):
        download(REPO, target)
    assert not target.exists() and nothing_looks_like_a_model(target.parent)
    partial = target.parent / f"{PARTIAL_PREFIX}tiny" / "model.safetensors.incomplete"
    kept = partial.stat().st_size
    size = (source / "model.safetensors").stat().st_size
    assert 0 < kept < size
    first_try = len(hub.log)
    download(REPO, target)
    resumed = [r for r in hub.log[first_try:] if r.path.endswith("/model.safetensors") and r.method == "GET"]
    assert resumed and all(r.range == f"bytes={kept}-" for r in resumed)
    assert (target / "model.safetensors").read_bytes() == (source / "model.safetensors").read_bytes()


@pytest.mark.parametrize("fault, message", [("404", "did not serve it \\(404\\)"), ("500", "answered 500")])
def test_a_failing_file_is_a_clear_error_and_leaves_no_model_folder(hub, tmp_path, fault, message):
    hub.faults["tokenizer.json"] = [fault]
    target = tmp_path / "models" / "tiny"
    with pytest.raises(DownloadError, match=f"{message}.*tokenizer.json.*{REPO}|tokenizer.json.*{REPO}.*{message}") as error:
        download(REPO, target)
    assert "next try continues" in str(error.value)
    assert not target.exists() and nothing_looks_like_a_model(target.parent)
    assert download(REPO, target) == target


def test_a_corrupted_file_is_deleted_and_fetched_again(hub, source, tmp_path):
    hub.faults["config.json"] = ["corrupt"]
    target = tmp_path / "tiny"
    with pytest.raises(DownloadError, match="config.json of .* different git blob hash"):
        download(REPO, target)
    download(REPO, target)
    assert (target / "config.json").read_bytes() == (source / "config.json").read_bytes()


def test_unknown_repo_no_network_and_offline_mode_say_what_to_do(hub, tmp_path, monkeypatch):
    with pytest.raises(DownloadError, match="Check the repo id 'tester/missing'"):
        download("tester/missing", tmp_path / "missing")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    point_client_at(monkeypatch, tmp_path, closed)
    with pytest.raises(DownloadError, match=f"Check the network connection .*{closed} could not be reached"):
        download(REPO, tmp_path / "tiny")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DownloadError, match="Unset HF_HUB_OFFLINE"):
        download(REPO, tmp_path / "tiny")
    assert nothing_looks_like_a_model(tmp_path) or not (tmp_path / "tiny").exists()


def test_an_incomplete_folder_of_the_users_is_never_written_into(hub, source, tmp_path):
    target = tmp_path / "tiny"
    target.mkdir()
    shutil.copy(source / "config.json", target)
    with pytest.raises(DownloadError, match="Move .* away"):
        download(REPO, target)
    assert [p.name for p in target.iterdir()] == ["config.json"] and not hub.log


def test_the_catalogue_names_supported_types_and_distinct_folders():
    assert {c.model_type for c in CATALOGUE} <= set(supported_model_types())
    assert len({c.folder for c in CATALOGUE}) == len(CATALOGUE)
    assert all(c.memory_bytes > c.download_bytes for c in CATALOGUE)


def test_cli_downloads_with_progress_on_stderr_and_prints_the_folder(hub, tmp_path, capsys):
    assert main(["download", REPO, "--to", str(tmp_path / "LLM")]) == 0
    out, err = capsys.readouterr()
    assert out.strip().splitlines()[-1] == str(tmp_path / "LLM" / "tiny-qwen2_5_vl")
    assert REPO in err and "100%" in err


def test_cli_errors_exit_2_with_one_line(hub, tmp_path, capsys):
    hub.faults["config.json"] = ["500"]
    assert main(["download", REPO, "--to", str(tmp_path)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "answered 500 for config.json of " + REPO in lines[0]
