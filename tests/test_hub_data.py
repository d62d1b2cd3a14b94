"""Loading datasets from the Hub, against the fake Hub of ``hub_server.py``: the real ``datasets.load_dataset`` and
``huggingface_hub`` download code over real HTTP on 127.0.0.1, no network, nothing mocked in between.

Two dataset repos are served the way their originals are published:

- ``someone/TOFU-mini``, TOFU's layout (``locuslab/TOFU``): one JSON Lines file per split at the root and one config
  per split in the README (``config_name: forget10``, ``data_files: forget10.json``, so the split is ``train``);
- ``someone/MUSE-mini``, MUSE's layout (``muse-bench/MUSE-News``), uploaded with ``HfApi.upload_folder``: Parquet
  shards ``raw/forget-00000-of-00001.parquet`` ... and configs ``raw`` / ``verbmem`` / ``knowmem`` whose splits are
  declared as ``{split: forget, path: raw/forget-*}`` (a glob: the listing of the repo tree resolves it).

The tests check that ``load_split`` and the text loaders return exactly the served rows, that a missing config,
split, repo or token fails with the project's ``DataValidationError`` naming what was asked, that a new commit is
loaded rather than a stale cache, and the ``llm-unlearn data check`` command on a Hub id.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from hub_server import FakeHub

from llm_unlearn.cli import main
from llm_unlearn.data.loading import load_split
from llm_unlearn.data.schema import EVAL_FIELDS, QA_FIELDS, DataValidationError
from llm_unlearn.data.synth import SynthConfig, generate, write_benchmark, write_text_corpus
from llm_unlearn.data.text import load_documents, load_knowmem, load_verbmem

TOFU = "someone/TOFU-mini"
MUSE = "someone/MUSE-mini"
# the splits of the forget10 setting, as `data check` reads them; forget05 & co. are deliberately not served
SERVED = ("forget10", "retain90", "forget10_perturbed", "holdout10", "retain_perturbed")
SERVED += ("real_authors_perturbed", "world_facts_perturbed")
MUSE_SPLITS = ("raw/forget", "raw/retain1", "raw/holdout", "verbmem/forget", "knowmem/forget_qa", "knowmem/retain_qa")


# --- building the repos --------------------------------------------------------------------------------------------


def tofu_rows(seed: int = 3) -> dict[str, list[dict]]:
    """TOFU-schema rows per split: ``question``/``answer``, plus the answer variants in the ``*_perturbed`` splits."""
    splits = generate(SynthConfig(n_authors=10, seed=seed))
    fields = {name: EVAL_FIELDS if name.endswith("_perturbed") else QA_FIELDS for name in SERVED}
    return {name: [{f: row[f] for f in fields[name]} for row in splits[name]] for name in SERVED}


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def tofu_files(rows: dict[str, list[dict]]) -> dict[str, str]:
    """TOFU's layout: ``<split>.json`` (JSON Lines) at the root, one README config per split."""
    configs = "".join(f"- config_name: {name}\n  data_files: {name}.json\n" for name in rows)
    readme = f"---\nlicense: mit\nconfigs:\n{configs}---\n\n# TOFU-mini\n\nA few synthetic authors in TOFU's layout.\n"
    return {"README.md": readme, **{f"{name}.json": jsonl(r) for name, r in rows.items()}}


def muse_folder(text_bench: Path, out: Path) -> Path:
    """MUSE's layout, as ``push_to_hub`` writes it: a Parquet shard per split, globs in the README configs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    configs: dict[str, str] = {}
    for ref in MUSE_SPLITS:
        config, split = ref.split("/")
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(local_rows(text_bench, ref)), buf)
        (out / config).mkdir(parents=True, exist_ok=True)
        (out / config / f"{split}-00000-of-00001.parquet").write_bytes(buf.getvalue())
        configs[config] = configs.get(config, "") + f"  - split: {split}\n    path: {config}/{split}-*\n"
    listed = "".join(f"- config_name: {c}\n  data_files:\n{s}" for c, s in configs.items())
    (out / "README.md").write_text(f"---\nlicense: cc-by-4.0\nconfigs:\n{listed}---\n\n# MUSE-mini\n")
    return out


def local_rows(text_bench: Path, ref: str) -> list[dict]:
    return [json.loads(line) for line in (text_bench / f"{ref}.jsonl").read_text().splitlines()]


# --- fixtures ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A running fake Hub that ``huggingface_hub`` and ``datasets`` talk to as if it were HF_ENDPOINT, with Hub
    access on and every cache, token and home folder in a temporary directory.

    Both libraries read HF_ENDPOINT, HF_HUB_OFFLINE (set by conftest) and the cache folders once, at import: the
    values they made of them are patched, and restored after this module.
    """
    import datasets.config
    import huggingface_hub.hf_api as hf_api
    from huggingface_hub import constants

    home = tmp_path_factory.mktemp("hf_home")
    with FakeHub() as server, pytest.MonkeyPatch.context() as mp:
        url = server.url
        for name, value in {
            "HF_HOME": home,
            "HF_HUB_CACHE": home / "hub",
            "HF_DATASETS_CACHE": home / "datasets",
            "HF_ENDPOINT": url,
            "HF_HUB_OFFLINE": "0",
        }.items():
            mp.setenv(name, str(value))
        for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_DATASETS_OFFLINE"):
            mp.delenv(name, raising=False)  # no developer's token travels to the test server
        mp.setattr(constants, "ENDPOINT", url)
        mp.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
        mp.setattr(constants, "HF_HUB_OFFLINE", False)
        mp.setattr(constants, "HF_HOME", str(home))
        mp.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
        mp.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))  # none there: a stored token is not used
        mp.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
        mp.setattr(constants, "AGENT_HARNESSES_PATH", str(home / ".agent_harnesses.json"))
        mp.setattr(hf_api.api, "endpoint", url)
        mp.setattr(datasets.config, "HF_ENDPOINT", url)
        mp.setattr(datasets.config, "HUB_DATASETS_URL", url + "/datasets/{repo_id}/resolve/{revision}/{path}")
        mp.setattr(datasets.config, "HF_HUB_OFFLINE", False)
        mp.setattr(datasets.config, "HF_DATASETS_OFFLINE", False)
        mp.setattr(datasets.config, "HF_CACHE_HOME", str(home))
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", home / "datasets")
        mp.setattr(datasets.config, "HF_MODULES_CACHE", home / "modules")
        mp.setattr(datasets.config, "DOWNLOADED_DATASETS_PATH", home / "datasets" / "downloads")
        mp.setattr(datasets.config, "EXTRACTED_DATASETS_PATH", home / "datasets" / "downloads" / "extracted")
        # Not the Hub: a HEAD to an S3 bucket (download counts), and the Dataset Viewer (exported dataset infos),
        # a separate service at http://datasets-server.<Hub host>, a name that cannot point at 127.0.0.1. `datasets`
        # goes on without either; switched off so that no request or name lookup leaves the machine.
        mp.setattr(datasets.config, "HF_UPDATE_DOWNLOAD_COUNTS", False)
        mp.setattr(datasets.config, "USE_PARQUET_EXPORT", False)
        yield server


@pytest.fixture(scope="module")
def tofu(hub) -> dict[str, list[dict]]:
    """The rows served in ``someone/TOFU-mini``, by split."""
    rows = tofu_rows()
    hub.add_dataset_repo(TOFU, tofu_files(rows), message="Add TOFU-mini")
    return rows


@pytest.fixture(scope="module")
def text_bench(tmp_path_factory) -> Path:
    bench = write_benchmark(SynthConfig(n_authors=10, seed=3), tmp_path_factory.mktemp("bench"))
    return write_text_corpus(bench, tmp_path_factory.mktemp("text"))


@pytest.fixture(scope="module")
def muse(hub, text_bench, tmp_path_factory) -> str:
    """``someone/MUSE-mini``, created and uploaded through the Hub API (``repo_type="dataset"``)."""
    from huggingface_hub import HfApi

    folder = muse_folder(text_bench, tmp_path_factory.mktemp("muse"))
    api = HfApi(endpoint=hub.url, token=hub.token)
    url = api.create_repo(MUSE, repo_type="dataset")
    assert url == f"{hub.url}/datasets/{MUSE}" and url.repo_type == "dataset"
    api.upload_folder(folder_path=folder, repo_id=MUSE, repo_type="dataset", commit_message="Add MUSE-mini")
    assert set(hub.files(MUSE, repo_type="dataset")) == {p.relative_to(folder).as_posix() for p in folder.rglob("*.*")}
    assert MUSE not in hub.repos  # a dataset repo, not a model repo of the same name
    return MUSE


# --- (a) TOFU: one config per split --------------------------------------------------------------------------------


def test_tofu_splits_load_from_the_hub_as_served(hub, tofu):
    sha = hub.datasets[TOFU].head
    for split in ("forget10", "forget10_perturbed", "retain90", "world_facts_perturbed"):
        assert load_split(TOFU, split) == tofu[split], split
    perturbed = load_split(TOFU, "forget10_perturbed")
    assert set(perturbed[0]) == set(EVAL_FIELDS) and set(load_split(TOFU, "forget10")[0]) == set(QA_FIELDS)
    assert all(isinstance(a, str) for row in perturbed for a in row["perturbed_answer"])
    assert len(perturbed[0]["perturbed_answer"]) > 1

    # it went over HTTP: the card at main, then the data files at the commit the card was read from
    paths = hub.paths_requested()
    assert f"GET /datasets/{TOFU}/resolve/main/README.md" in paths
    assert f"GET /datasets/{TOFU}/resolve/{sha}/forget10.json" in paths
    assert f"GET /datasets/{TOFU}/resolve/{sha}/retain90.json" in paths


def test_missing_config_repo_or_token_is_a_clear_data_error(hub, tofu, monkeypatch):
    with pytest.raises(DataValidationError) as e:
        load_split(TOFU, "forget05")
    msg = str(e.value)
    assert f"config 'forget05' of Hub dataset '{TOFU}'" in msg
    assert "BuilderConfig 'forget05' not found" in msg and "'forget10'" in msg  # the library lists what exists

    with pytest.raises(DataValidationError, match=r"config 'forget10' of Hub dataset 'someone/nothing-here'.*exist"):
        load_split("someone/nothing-here", "forget10")

    # a private repo: not found without a token (as the Hub answers), loaded with one
    hub.add_dataset_repo("someone/TOFU-private", tofu_files(tofu), private=True)
    with pytest.raises(DataValidationError, match="Hub dataset 'someone/TOFU-private'.*exist"):
        load_split("someone/TOFU-private", "forget10")
    monkeypatch.setenv("HF_TOKEN", hub.token)
    assert load_split("someone/TOFU-private", "forget10") == tofu["forget10"]
    assert [r.authorised for r in hub.requests if "TOFU-private/resolve" in r.path][-1]


def test_a_new_commit_is_loaded_and_an_unchanged_repo_comes_from_the_cache(hub, tofu):
    import datasets

    repo = "someone/TOFU-edits"
    first = hub.add_dataset_repo(repo, tofu_files(tofu), message="first")
    assert load_split(repo, "forget10") == tofu["forget10"]
    hub.requests.clear()
    assert load_split(repo, "forget10") == tofu["forget10"]
    assert f"HEAD /datasets/{repo}/resolve/main/README.md" in hub.paths_requested()  # the revision is checked...
    assert not [p for p in hub.paths_requested() if p.endswith("forget10.json")]  # ...the data is not fetched again

    edited = [{**row, "answer": row["answer"].upper()} for row in tofu["forget10"][:3]]
    second = hub.add_dataset_repo(repo, {"forget10.json": jsonl(edited)}, message="edit forget10")
    assert second != first
    assert load_split(repo, "forget10") == edited
    assert f"GET /datasets/{repo}/resolve/{second}/forget10.json" in hub.paths_requested()
    # the first commit is still served at its sha (the Hub keeps every revision)
    old = datasets.load_dataset(repo, name="forget10", split="train", revision=first)
    assert old.to_list() == tofu["forget10"]


# --- (b) MUSE: configs of several splits, Parquet shards found by glob ----------------------------------------------


def test_muse_text_splits_load_from_the_hub_as_local_files(hub, muse, text_bench):
    for ref in ("raw/forget", "raw/retain1", "raw/holdout"):
        docs = load_documents(muse, ref)
        assert docs == [r["text"] for r in local_rows(text_bench, ref)], ref
        assert docs == load_documents(text_bench, ref)  # the local loader agrees
    assert load_verbmem(muse, "verbmem/forget") == local_rows(text_bench, "verbmem/forget")
    assert load_knowmem(muse, "knowmem/retain_qa") == local_rows(text_bench, "knowmem/retain_qa")
    assert load_knowmem(muse, "knowmem/forget_qa") == load_knowmem(text_bench, "knowmem/forget_qa")

    sha = hub.datasets[muse].head
    paths = hub.paths_requested()
    assert f"GET /api/datasets/{muse}/tree/{sha}/raw" in paths  # the glob raw/forget-* is resolved by listing raw/
    assert f"GET /datasets/{muse}/resolve/{sha}/verbmem/forget-00000-of-00001.parquet" in paths

    with pytest.raises(DataValidationError) as e:
        load_documents(muse, "raw/retain2")
    assert f"split 'retain2' of config 'raw' of Hub dataset '{muse}'" in str(e.value)
    assert "Unknown split" in str(e.value)
    with pytest.raises(DataValidationError, match=r"config 'news' of Hub dataset 'someone/MUSE-mini'.*not found"):
        load_documents(muse, "news/forget")
    with pytest.raises(DataValidationError, match="field 'text' must be a non-empty string"):
        load_documents(muse, "knowmem/forget_qa")  # QA rows are no documents


# --- (c) the CLI ---------------------------------------------------------------------------------------------------


def test_data_check_cli_on_a_hub_dataset(hub, tofu, capsys):
    assert main(["data", "check", "--data", TOFU, "--forget_split", "forget10"]) == 0
    out = capsys.readouterr().out
    for split in ("forget10", "retain90", "forget10_perturbed", "retain_perturbed", "world_facts_perturbed"):
        assert f"{split}: {len(tofu[split])} items ok" in out
    assert "forget10 and retain90 have no duplicate items and share no items" in out

    assert main(["data", "check", "--data", TOFU, "--forget_split", "forget05"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("llm-unlearn data: error:") and f"config 'forget05' of Hub dataset '{TOFU}'" in err


# --- the server's dataset endpoints, through huggingface_hub -------------------------------------------------------


def test_fake_hub_serves_dataset_repos_like_the_hub(hub, muse):
    from huggingface_hub import HfApi, HfFileSystem
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    api = HfApi(endpoint=hub.url)
    repo = hub.datasets[muse]
    info = api.dataset_info(muse)
    assert info.sha == repo.head and {s.rfilename for s in info.siblings} == set(repo.files)
    assert api.dataset_info(muse, revision=repo.head).sha == repo.head

    top = {(type(e).__name__, e.path) for e in api.list_repo_tree(muse, repo_type="dataset")}
    assert top == {
        ("RepoFolder", "raw"),
        ("RepoFolder", "verbmem"),
        ("RepoFolder", "knowmem"),
        ("RepoFile", "README.md"),
    }
    deep = {e.path for e in api.list_repo_tree(muse, repo_type="dataset", recursive=True, expand=True)}
    assert deep == set(repo.files) | {"raw", "verbmem", "knowmem"}
    found = api.get_paths_info(muse, ["raw", "raw/forget-00000-of-00001.parquet", "nope"], repo_type="dataset")
    assert [(type(e).__name__, e.path) for e in found] == [
        ("RepoFolder", "raw"),
        ("RepoFile", "raw/forget-00000-of-00001.parquet"),
    ]
    assert found[1].size == len(repo.files[found[1].path])

    fs = HfFileSystem(endpoint=hub.url)
    assert sorted(fs.glob(f"datasets/{muse}/raw/*.parquet")) == [
        f"datasets/{muse}/raw/{s}-00000-of-00001.parquet" for s in ("forget", "holdout", "retain1")
    ]
    readme = repo.files["README.md"]
    assert fs.cat_file(f"datasets/{muse}/README.md", start=4, end=20) == readme[4:20]  # a Range request

    with pytest.raises(RevisionNotFoundError):  # the Parquet export branch: none here
        api.dataset_info(muse, revision="refs/convert/parquet")
    with pytest.raises(EntryNotFoundError):
        api.hf_hub_download(muse, "raw/nope.parquet", repo_type="dataset")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(muse)  # repo types are apart, as on the Hub
