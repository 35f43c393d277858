"""`microvar push`: the Hub folder (parquet shards in row order + card) written with --to-dir
and loaded back by `datasets`, and the upload tested at the huggingface_hub boundary (HfApi
methods replaced; any socket connection fails the test, so nothing can reach the network)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import httpx2
import pytest
from click.testing import CliRunner
from datasets import load_dataset, load_from_disk
from huggingface_hub import DatasetCard, HfApi, constants
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from microvar.cli import main
from microvar.export import hub
from microvar.export.card import write_card

SEEDS = [{"id": "ru", "text": "Мышление не равно генерации текста."},
         {"id": "cjk", "text": "Токены 🙂 and tokens: 你好 means hello."},
         {"id": "en", "text": "Rhythm matters more than quantity.", "continuation": " Small steps, often."},
         {"id": "code", "text": "def add(a, b):\n    return a + b"}]
URL = "https://huggingface.co/datasets/user/ds"


@pytest.fixture(autouse=True)
def offline_hub(no_network, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # whatever the environment says


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    """A small expanded dataset whose non-root rows carry made-up volatility (so the struct
    column round-trips with values, not only nulls)."""
    tmp = tmp_path_factory.mktemp("push")
    seeds = tmp / "seeds.jsonl"
    seeds.write_text("\n".join(json.dumps(s, ensure_ascii=False) for s in SEEDS) + "\n", encoding="utf-8")
    plain = tmp / "plain"
    res = run("expand", seeds, "-o", plain, "--model", "none", "--variants", "8", "-q")
    assert res.exit_code == 0, res.stderr
    ds = load_from_disk(str(plain))
    names = list(ds.features["volatility"])

    def fill(row, i):
        if not row["parent_id"]:
            return {"volatility": None}
        v = {n: None for n in names}
        v.update(surprisal=i / 7, ripple_kl=(i % 5) / 3, top1=1 - (i % 4) / 4, new_tokens=i % 3, drift=[0.5, i / 10])
        return {"volatility": v}

    target = tmp / "out"
    ds.map(fill, with_indices=True, features=ds.features).save_to_disk(str(target))
    for name in ("manifest.json", "rejects.jsonl"):
        shutil.copyfile(plain / name, target / name)
    return target


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def loaded(folder: Path, cache: Path):
    return load_dataset(str(folder), cache_dir=str(cache))


def test_to_dir_loads_back_the_same_rows_in_order(out, tmp_path):
    target = tmp_path / "hub"
    res = run("push", out, "--to-dir", target, "--license", "Apache-2.0")
    assert res.exit_code == 0, res.stderr
    assert tree(target) == ["README.md", "data/train-00000-of-00001.parquet", "manifest.json", "rejects.jsonl"]
    original = load_from_disk(str(out))
    back = loaded(target, tmp_path / "cache")
    assert list(back) == ["train"]
    train = back["train"]
    assert train.features == original.features  # struct volatility and list columns included
    assert train.to_list() == original.to_list()  # every column, same order
    assert train["order"] == list(range(len(original)))
    assert any(v is not None and v["drift"] for v in train["volatility"])
    card = DatasetCard.load(target / "README.md")
    assert card.data.license == "apache-2.0"
    assert card.data.configs == [{"config_name": "default",
                                  "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}]
    assert [f["name"] for f in card.data.dataset_info["features"]] == original.column_names
    assert card.data.dataset_info["splits"][0]["num_examples"] == len(original)
    assert 'train_sampling_strategy="sequential"' in card.text and "data/train-*.parquet" in card.text
    assert "http" not in card.text and "Мышление" in card.text
    assert (target / "manifest.json").read_bytes() == (out / "manifest.json").read_bytes()
    assert (target / "rejects.jsonl").read_bytes() == (out / "rejects.jsonl").read_bytes()


def test_many_shards_keep_the_order(out, tmp_path):
    original = load_from_disk(str(out))
    size = original.data.nbytes // 3 - 1
    n = math.ceil(original.data.nbytes / size)
    folder = hub.to_dir(out, tmp_path / "hub", max_shard_bytes=size)
    assert folder.shards == n == 4 and folder.rows == len(original)
    assert tree(tmp_path / "hub")[1:5] == [f"data/train-0000{i}-of-00004.parquet" for i in range(4)]
    train = loaded(tmp_path / "hub", tmp_path / "cache")["train"]
    assert train.to_list() == original.to_list() and train.features == original.features


def test_existing_dir_refused_without_overwrite(out, tmp_path):
    target = tmp_path / "hub"
    target.mkdir()
    (target / "keep.txt").write_text("mine", encoding="utf-8")
    res = run("push", out, "--to-dir", target)
    assert res.exit_code == 2 and "already exists" in res.stderr and "--overwrite" in res.stderr
    assert tree(target) == ["keep.txt"] and (target / "keep.txt").read_text(encoding="utf-8") == "mine"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hub")]  # no staging left behind
    res = run("push", out, "--to-dir", target, "--overwrite")
    assert res.exit_code == 0, res.stderr
    assert "keep.txt" not in tree(target) and "README.md" in tree(target)


@pytest.mark.parametrize("args,message", [
    ((), "exactly one of REPO_ID"),
    (("user/ds", "--to-dir", "DIR"), "exactly one of REPO_ID"),
    (("--to-dir", "DIR", "--private"), "not --to-dir"),
    (("--to-dir", "OUT/inside"), "must be outside the dataset"),
])
def test_usage_errors_exit_2(out, tmp_path, args, message):
    args = [str(out / "inside") if a == "OUT/inside" else str(tmp_path / "d") if a == "DIR" else a for a in args]
    res = run("push", out, *args)
    assert res.exit_code == 2 and message in res.stderr
    assert not (tmp_path / "d").exists() and not (out / "inside").exists()


def test_not_a_dataset_or_no_rows_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    res = run("push", tmp_path / "empty", "--to-dir", tmp_path / "x")
    assert res.exit_code == 2 and "not a dataset written by microvar expand" in res.stderr
    seeds = tmp_path / "bad.jsonl"
    seeds.write_text("{not json\n", encoding="utf-8")
    assert run("expand", seeds, "-o", tmp_path / "none", "--model", "none", "--skip-invalid", "-q").exit_code == 0
    res = run("push", tmp_path / "none", "--to-dir", tmp_path / "x")
    assert res.exit_code == 2 and "has no rows" in res.stderr and not (tmp_path / "x").exists()
    card = DatasetCard.load(write_card(tmp_path / "none"))  # the card itself copes with no rows
    assert card.data.dataset_info["splits"][0]["num_examples"] == 0 and "`input` | 1 |" in card.text


def test_messages_format_brings_its_chat_template(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("\n".join(json.dumps(s, ensure_ascii=False) for s in SEEDS[:2]) + "\n", encoding="utf-8")
    res = run("expand", seeds, "-o", tmp_path / "out", "--model", "none", "--variants", "4", "--format", "messages",
              "--chat-template", "chat_plain.jinja", "-q")
    assert res.exit_code == 0, res.stderr
    assert run("push", tmp_path / "out", "--to-dir", tmp_path / "hub").exit_code == 0
    assert "chat_template.jinja" in tree(tmp_path / "hub")
    card = DatasetCard.load(tmp_path / "hub" / "README.md")
    assert 'ds = ds.select_columns(["messages"])' in card.text and "chat_template_path=" in card.text
    train = loaded(tmp_path / "hub", tmp_path / "cache")["train"]
    assert train.to_list() == load_from_disk(str(tmp_path / "out")).to_list()


class FakeHub:
    """HfApi methods that record their calls; upload_folder snapshots the folder it is given
    (the temporary folder is gone once push returns)."""

    def __init__(self, monkeypatch, files=(".gitattributes",), fail=None):
        self.calls: list[tuple[str, dict]] = []
        self.uploaded: dict[str, bytes] = {}
        self.files, self.fail = list(files), fail or {}
        for name in ("list_repo_files", "create_repo", "create_branch", "upload_folder"):
            monkeypatch.setattr(HfApi, name, self._method(name))

    def _method(self, name):
        fake = self

        def method(api, *args, **kwargs):
            fake.calls.append((name, {"args": args, "token": api.token, **kwargs}))
            if name == "upload_folder":
                fake.folder = Path(kwargs["folder_path"])
            if name in fake.fail:
                raise fake.fail[name]
            if name == "list_repo_files":
                return fake.files
            if name == "create_repo":
                return URL
            if name == "upload_folder":
                folder = fake.folder
                fake.uploaded = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
            return None
        return method

    def names(self) -> list[str]:
        return [n for n, _ in self.calls]

    def call(self, name) -> dict:
        return next(kw for n, kw in self.calls if n == name)


def http_error(cls, status: int, message: str):
    request = httpx2.Request("POST", "https://huggingface.co/api/datasets/user/ds/commit/main")
    return cls(message, response=httpx2.Response(status, request=request))


def test_push_uploads_the_same_folder_in_one_commit(out, tmp_path, monkeypatch):
    fake = FakeHub(monkeypatch)
    res = run("push", out, "user/ds", "--private", "--token", "hf_test", "--license", "mit")
    assert res.exit_code == 0, res.stderr
    assert res.stdout.strip() == URL
    assert fake.names() == ["list_repo_files", "create_repo", "upload_folder"]
    assert fake.call("create_repo") == {"args": ("user/ds",), "token": "hf_test", "repo_type": "dataset",
                                        "private": True, "exist_ok": True}
    up = fake.call("upload_folder")
    assert up["repo_id"] == "user/ds" and up["repo_type"] == "dataset" and up["token"] == "hf_test"
    assert up["revision"] is None and "curriculum order" in up["commit_message"]
    assert "data/*" in up["delete_patterns"]  # stale shards of an earlier push go in the same commit
    assert sorted(fake.uploaded) == ["README.md", "data/train-00000-of-00001.parquet", "manifest.json",
                                     "rejects.jsonl"]
    assert not fake.folder.exists()  # the temporary folder is cleaned up
    card = DatasetCard(fake.uploaded["README.md"].decode("utf-8"))
    assert card.data.license == "mit"
    assert card.data.configs[0]["data_files"] == [{"split": "train", "path": "data/train-*.parquet"}]
    assert 'load_dataset("user/ds", split="train")' in card.text and "from datasets import load_dataset" in card.text
    assert "microvar train OUT --output adapter" in card.text
    # the uploaded shard is the dataset, in order
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train-00000-of-00001.parquet").write_bytes(fake.uploaded["data/train-00000-of-00001.parquet"])
    (tmp_path / "README.md").write_bytes(fake.uploaded["README.md"])
    assert loaded(tmp_path, tmp_path / "cache")["train"].to_list() == load_from_disk(str(out)).to_list()


def test_push_to_a_branch(out, monkeypatch):
    fake = FakeHub(monkeypatch)
    res = run("push", out, "user/ds", "--token", "hf_test", "--revision", "dev")
    assert res.exit_code == 0, res.stderr
    assert res.stdout.strip() == f"{URL}/tree/dev"
    assert fake.call("create_branch")["branch"] == "dev" and fake.call("upload_folder")["revision"] == "dev"


def test_a_repo_with_files_needs_overwrite(out, monkeypatch):
    fake = FakeHub(monkeypatch, files=[".gitattributes", "README.md", "data/train-00000-of-00002.parquet"])
    res = run("push", out, "user/ds", "--token", "hf_test")
    assert res.exit_code == 2 and "already holds files" in res.stderr and "nothing was uploaded" in res.stderr
    assert fake.names() == ["list_repo_files"]
    res = run("push", out, "user/ds", "--token", "hf_test", "--overwrite")
    assert res.exit_code == 0, res.stderr
    assert fake.names()[-1] == "upload_folder"


def test_new_repo_is_created(out, monkeypatch):
    fake = FakeHub(monkeypatch, fail={"list_repo_files": http_error(RepositoryNotFoundError, 404, "404 Not Found")})
    res = run("push", out, "user/ds", "--token", "hf_test")
    assert res.exit_code == 0, res.stderr
    assert fake.names() == ["list_repo_files", "create_repo", "upload_folder"]


def no_token_anywhere(monkeypatch, tmp_path):
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "hf-home"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))  # read at import: patch it too
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))


def test_missing_token_exit_2(out, tmp_path, monkeypatch):
    no_token_anywhere(monkeypatch, tmp_path)
    fake = FakeHub(monkeypatch)
    res = run("push", out, "user/ds")
    assert res.exit_code == 2
    assert "no Hugging Face token" in res.stderr and "--token" in res.stderr and "HF_TOKEN" in res.stderr
    assert "nothing was uploaded" in res.stderr
    assert fake.calls == []


def test_token_from_the_environment(out, tmp_path, monkeypatch):
    no_token_anywhere(monkeypatch, tmp_path)
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    fake = FakeHub(monkeypatch)
    assert run("push", out, "user/ds").exit_code == 0
    assert fake.call("upload_folder")["token"] == "hf_from_env"


def test_upload_failure_says_nothing_was_committed(out, monkeypatch):
    fake = FakeHub(monkeypatch, fail={"upload_folder": http_error(HfHubHTTPError, 500, "500 Server Error: boom")})
    res = run("push", out, "user/ds", "--token", "hf_test")
    assert res.exit_code == 2
    assert "upload to user/ds failed: 500 Server Error: boom" in res.stderr
    assert "nothing was committed" in res.stderr and "the repo is as it was before" in res.stderr
    assert not fake.folder.exists() and fake.folder.parent == out.parent  # staged beside OUT, then removed
    assert not list(out.parent.glob(".out.push-*"))


def test_upload_failure_after_creating_the_repo(out, monkeypatch):
    FakeHub(monkeypatch, fail={"list_repo_files": http_error(RepositoryNotFoundError, 404, "404 Not Found"),
                               "upload_folder": ConnectionError("connection reset")})
    res = run("push", out, "user/ds", "--token", "hf_test")
    assert res.exit_code == 2 and "connection reset" in res.stderr
    assert "nothing was committed" in res.stderr and "created but is empty" in res.stderr


def test_create_repo_failure(out, monkeypatch):
    fake = FakeHub(monkeypatch, fail={"create_repo": http_error(HfHubHTTPError, 403, "403 Forbidden: no write access")})
    res = run("push", out, "user/ds", "--token", "hf_test")
    assert res.exit_code == 2 and "403 Forbidden" in res.stderr and "nothing was uploaded" in res.stderr
    assert "upload_folder" not in fake.names()


def test_offline_mode_and_bad_repo_id(out, monkeypatch):
    fake = FakeHub(monkeypatch)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    res = run("push", out, "user/ds", "--token", "hf_test")
    assert res.exit_code == 2 and "HF_HUB_OFFLINE" in res.stderr and "--to-dir" in res.stderr
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for bad in ("ds", "user/bad name", "a/b/c"):
        res = run("push", out, bad, "--token", "hf_test")
        assert res.exit_code == 2 and "repo" in res.stderr, bad
    assert fake.calls == []
