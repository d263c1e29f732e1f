"""Settings layers: precedence, malformed files, bad values, .env rules, remembered settings."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llama_tui import locations
from llama_tui.atomic import make_private_dirs
from llama_tui.config.remembered import (
    Entry,
    base_entry,
    forget_remembered,
    remembered_settings_file,
    update_remembered,
)
from llama_tui.config.settings import LoadedSettings, Settings, config_file_values, load_settings
from llama_tui.core.backend import LoadOptions
from llama_tui.core.params import GenerationParams
from llama_tui.startup import endpoint_warning

TOKEN = "hf_" + "Zq9" * 12


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def cfg_dir() -> Path:
    return make_private_dirs(locations.config_dir())


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    return d


def remember(**fields: object) -> Path:
    """What the app writes when the user changes `fields` in the panel or with /set."""
    files = config_file_values(None)
    return update_remembered({k: base_entry(k, v, files) for k, v in fields.items()}, files)


def _load(cwd: Path, environ: dict[str, str] | None = None, **kw: object) -> LoadedSettings:
    return load_settings(environ=environ or {}, cwd=cwd, **kw)  # type: ignore[arg-type]


def test_defaults(cwd: Path) -> None:
    loaded = _load(cwd)
    assert loaded.settings == Settings()
    assert loaded.warnings == [] and loaded.errors == []
    assert set(loaded.sources.values()) == {"default"}
    s = loaded.settings
    assert s.model == "demo" and s.params == GenerationParams()
    assert s.load_options() == LoadOptions()


def test_load_options_carry_every_field(cwd: Path) -> None:
    s = _load(
        cwd,
        cli={
            "device": "cpu",
            "dtype": "bf16",
            "threads": 3,
            "trust_remote_code": True,
            "allow_pickle": True,
            "compile": False,
            "kv_reuse": False,
            "device_map": "auto",
            "load_in_4bit": True,
        },
    ).settings
    assert s.load_options() == LoadOptions(
        device="cpu",
        dtype="bfloat16",
        threads=3,
        trust_remote_code=True,
        allow_pickle=True,
        device_map="auto",
        load_in_4bit=True,
        compile=False,
        kv_reuse=False,
    )


def test_precedence_across_all_layers(cfg_dir: Path, cwd: Path) -> None:
    # Six keys; each layer sets the ones from its level up, so each key shows one layer.
    _write(
        cfg_dir / "config.toml",
        'model = "from-config"\n[generation]\ntop_k = 1\ntop_p = 0.1\nmin_p = 0.1\n'
        "max_new_tokens = 11\ntemperature = 0.11\n",
    )
    remember(top_k=2, top_p=0.2, min_p=0.2, max_new_tokens=22, temperature=0.22,
             system_prompt="remembered prompt")
    _write(
        cwd / ".env",
        "LLAMA_TUI_TOP_P=0.3\nLLAMA_TUI_MIN_P=0.3\n"
        "LLAMA_TUI_MAX_NEW_TOKENS=33\nLLAMA_TUI_TEMPERATURE=0.33\n",
    )
    env = {
        "LLAMA_TUI_MIN_P": "0.4",
        "LLAMA_TUI_MAX_NEW_TOKENS": "44",
        "LLAMA_TUI_TEMPERATURE": "0.44",
    }
    loaded = _load(cwd, env, cli={"temperature": 0.55, "max_new_tokens": 55})
    p = loaded.settings.params
    assert loaded.warnings == []
    assert loaded.settings.model == "from-config"
    assert p.top_k == 2 and loaded.sources["top_k"].startswith("remembered:")
    assert p.top_p == 0.3 and loaded.sources["top_p"].startswith(".env:")
    assert p.min_p == 0.4 and loaded.sources["min_p"] == "env"
    assert p.temperature == 0.55 and loaded.sources["temperature"] == "flag"
    assert p.max_new_tokens == 55
    assert loaded.settings.system_prompt == "remembered prompt"
    assert loaded.sources["model"].startswith("config:")
    assert loaded.sources["device"] == "default"


def test_config_sections_and_types(cfg_dir: Path, cwd: Path) -> None:
    _write(
        cfg_dir / "config.toml",
        'model = "org/name@main"\ndevice = "CUDA:1"\ndtype = "fp16"\nthreads = 4\n'
        'server = "http://localhost:8000/"\nsystem_prompt = "Be brief."\nraw = true\n'
        '[generation]\ndo_sample = false\ntemperature = 0\nseed = 7\nstop = ["###", "END"]\n',
    )
    loaded = _load(cwd)
    s = loaded.settings
    assert loaded.warnings == []
    assert (s.model, s.device, s.dtype, s.threads) == ("org/name@main", "cuda:1", "float16", 4)
    assert s.server == "http://localhost:8000" and s.raw and s.system_prompt == "Be brief."
    assert s.params.do_sample is False and s.params.temperature == 0.0
    assert s.params.seed == 7 and s.params.stop == ("###", "END")


def test_malformed_toml_names_path_and_line_and_is_untouched(cfg_dir: Path, cwd: Path) -> None:
    text = 'model = "x"\n[generation]\ntemperature = = 3\n'
    path = _write(cfg_dir / "config.toml", text)
    before = path.read_bytes()
    loaded = _load(cwd)
    assert loaded.settings == Settings()
    assert len(loaded.warnings) == 1
    w = loaded.warnings[0]
    assert str(path) in w and "line 3" in w
    assert path.read_bytes() == before
    assert list(cfg_dir.iterdir()) == [path]  # nothing renamed or written beside it


@pytest.mark.parametrize(
    "content", [b"", b"\x00\xff\xfe binary", "model = 'é'".encode("latin-1"), b"[[[", b'a="\n']
)
def test_empty_binary_truncated_config(cfg_dir: Path, cwd: Path, content: bytes) -> None:
    path = cfg_dir / "config.toml"
    path.write_bytes(content)
    loaded = _load(cwd)
    assert loaded.settings == Settings()
    if content:
        assert any(str(path) in w for w in loaded.warnings)
    assert path.read_bytes() == content


def test_explicit_config_path(tmp_path: Path, cwd: Path) -> None:
    p = _write(tmp_path / "other.toml", 'model = "other"\n')
    assert _load(cwd, config_path=p).settings.model == "other"
    assert _load(cwd, {"LLAMA_TUI_CONFIG": str(p)}).settings.model == "other"
    missing = _load(cwd, config_path=tmp_path / "nope.toml")
    assert missing.errors and "nope.toml" in missing.errors[0]


BAD_VALUES = [
    ("temperature", '"hot"', "must be a number"),
    ("temperature", "-1.0", "temperature"),
    ("temperature", "nan", "finite"),
    ("temperature", "inf", "finite"),
    ("top_p", "1.5", "(0, 1]"),
    ("top_p", "0", "(0, 1]"),
    ("top_k", "-1", ">= 0"),
    ("top_k", "2.5", "whole number"),
    ("top_k", "true", "whole number"),
    ("min_p", "1.0", "[0, 1)"),
    ("repetition_penalty", "0", "> 0"),
    ("max_new_tokens", "0", ">= 1"),
    ("max_new_tokens", "10000000", "below"),
    ("seed", "-3", ">= 0"),
    ("do_sample", '"yes"', "true or false"),
    ("stop", "[1, 2]", "list of strings"),
    ("stop", '[""]', "non-empty"),
]


@pytest.mark.parametrize(("key", "toml_value", "reason"), BAD_VALUES)
def test_bad_generation_values_are_named_and_ignored(
    cfg_dir: Path, cwd: Path, key: str, toml_value: str, reason: str
) -> None:
    other = "repetition_penalty = 1.5" if key != "repetition_penalty" else "top_k = 5"
    path = _write(cfg_dir / "config.toml", f"[generation]\n{other}\n{key} = {toml_value}\n")
    loaded = _load(cwd)
    p = loaded.settings.params
    assert (p.repetition_penalty, p.top_k) != (1.0, 50)  # the good value in the file applies
    assert getattr(loaded.settings.params, key) == getattr(GenerationParams(), key)
    assert len(loaded.warnings) == 1, loaded.warnings
    w = loaded.warnings[0]
    assert key in w and str(path) in w and "line 3" in w and reason in w


@pytest.mark.parametrize(
    ("key", "toml_value"),
    [
        ("model", '""'),
        ("model", "3"),
        ("server", '"ftp://x"'),
        ("api_key_env", '"not a name"'),
        ("device", '"gpu"'),
        ("dtype", '"int3"'),
        ("threads", "0"),
        ("threads", '"4"'),
        ("device_map", '"everywhere"'),
        ("trust_remote_code", '"yes"'),
        ("verify_tls", "1"),
        ("raw", '"no"'),
    ],
)
def test_bad_setting_values(cfg_dir: Path, cwd: Path, key: str, toml_value: str) -> None:
    _write(cfg_dir / "config.toml", f"{key} = {toml_value}\n")
    loaded = _load(cwd)
    assert getattr(loaded.settings, key) == getattr(Settings(), key)
    assert len(loaded.warnings) == 1 and key in loaded.warnings[0]


def test_unknown_keys_warn(cfg_dir: Path, cwd: Path) -> None:
    _write(cfg_dir / "config.toml", 'modle = "x"\n[generation]\ntempature = 1\n[other]\na=1\n')
    loaded = _load(cwd)
    assert loaded.settings == Settings()
    text = "\n".join(loaded.warnings)
    assert "modle" in text and "tempature" in text and "other" in text


def test_later_layer_can_invalidate_earlier(cfg_dir: Path, cwd: Path) -> None:
    # Greedy with temperature 0 in the config; the environment turns sampling back on.
    _write(cfg_dir / "config.toml", "[generation]\ndo_sample = false\ntemperature = 0\n")
    loaded = _load(cwd, {"LLAMA_TUI_DO_SAMPLE": "1"})
    p = loaded.settings.params
    assert p.do_sample is True and p.temperature == GenerationParams().temperature
    assert any("temperature" in w and "default" in w for w in loaded.warnings)


def test_env_values(cwd: Path) -> None:
    env = {
        "LLAMA_TUI_MODEL": "org/m",
        "LLAMA_TUI_TRUST_REMOTE_CODE": "yes",
        "LLAMA_TUI_COMPILE": "off",
        "LLAMA_TUI_SEED": "random",
        "LLAMA_TUI_STOP": '["a", "b"]',
        "LLAMA_TUI_SERVER": "",
        "LLAMA_TUI_THREADS": "2",
    }
    loaded = _load(cwd, env)
    s = loaded.settings
    assert loaded.warnings == []
    assert s.model == "org/m" and s.trust_remote_code and not s.compile
    assert s.params.seed is None and s.params.stop == ("a", "b") and s.server is None
    assert s.threads == 2


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("LLAMA_TUI_TEMPERATURE", "warm"),
        ("LLAMA_TUI_TOP_K", "1.5"),
        ("LLAMA_TUI_RAW", "maybe"),
        ("LLAMA_TUI_STOP", "[1"),
        ("LLAMA_TUI_DEVICE", "tpu"),
        ("LLAMA_TUI_TOP_P", "2"),
    ],
)
def test_bad_env_values_name_the_variable(cwd: Path, var: str, value: str) -> None:
    loaded = _load(cwd, {var: value})
    assert loaded.settings == Settings()
    assert len(loaded.warnings) == 1 and var in loaded.warnings[0]


def test_bad_flag_values_are_errors(cwd: Path) -> None:
    loaded = _load(cwd, cli={"temperature": -1.0, "top_k": 3})
    assert loaded.errors and "--temperature" in loaded.errors[0]
    assert loaded.settings.params.top_k == 3
    assert _load(cwd, cli={"temperature": 0.0}).errors  # sampling with temperature 0
    assert not _load(cwd, cli={"temperature": 0.0, "do_sample": False}).errors


def test_warnings_never_echo_tokens(cfg_dir: Path, cwd: Path) -> None:
    _write(cfg_dir / "config.toml", f'[generation]\ntemperature = "{TOKEN}"\n')
    loaded = _load(cwd, {"LLAMA_TUI_TOP_K": TOKEN})
    text = "\n".join(loaded.warnings)
    assert "temperature" in text and "LLAMA_TUI_TOP_K" in text
    assert TOKEN not in text


# --- .env ------------------------------------------------------------------------------------


def test_dotenv_never_overrides_real_environment(cwd: Path) -> None:
    _write(cwd / ".env", "LLAMA_TUI_MODEL=from-dotenv\nLLAMA_TUI_TOP_K=9\nHF_HOME=/dotenv/hf\n")
    loaded = _load(cwd, {"LLAMA_TUI_MODEL": "from-env", "HF_HOME": "/real/hf"})
    assert loaded.settings.model == "from-env" and loaded.sources["model"] == "env"
    assert loaded.settings.params.top_k == 9
    assert "HF_HOME" not in loaded.env_exports


def test_dotenv_syntax_and_unknown_keys(cwd: Path) -> None:
    _write(
        cwd / ".env",
        "# comment\n\nexport LLAMA_TUI_MODEL='org/quoted'\n"
        'LLAMA_TUI_SYSTEM_PROMPT="two\\nlines"\n'
        "LLAMA_TUI_TOP_K=7   # inline comment\n"
        "OPENAI_API_KEY=sk-should-not-be-kept-anywhere-0000\n"
        "LLAMA_TUI_TYPO=1\n"
        "this is not an assignment\n"
        "HF_HUB_OFFLINE=1\nHF_HOME=/x/hf\n",
    )
    loaded = _load(cwd)
    s = loaded.settings
    assert s.model == "org/quoted" and s.system_prompt == "two\nlines" and s.params.top_k == 7
    assert loaded.env_exports == {"HF_HUB_OFFLINE": "1", "HF_HOME": "/x/hf"}
    text = "\n".join(loaded.warnings)
    assert "LLAMA_TUI_TYPO" in text and "line 7" in text
    assert "OPENAI_API_KEY" not in text and "sk-should" not in text


def test_dotenv_only_from_cwd_and_config_dir(tmp_path: Path, cfg_dir: Path, cwd: Path) -> None:
    _write(tmp_path / ".env", "LLAMA_TUI_MODEL=from-parent\n")  # a parent dir: never read
    sub = cwd / "sub"
    sub.mkdir()
    assert _load(sub).settings.model == "demo"
    _write(cfg_dir / ".env", "LLAMA_TUI_MODEL=from-config-dir\nLLAMA_TUI_TOP_K=3\n")
    assert _load(sub).settings.model == "from-config-dir"
    _write(sub / ".env", "LLAMA_TUI_MODEL=from-cwd\n")
    loaded = _load(sub)
    assert loaded.settings.model == "from-cwd" and loaded.settings.params.top_k == 3


def test_dotenv_secrets_are_not_read(cwd: Path) -> None:
    _write(cwd / ".env", f"HF_TOKEN={TOKEN}\nLLAMA_TUI_API_KEY=sk-abcdefghijklmnopqrstu\n")
    loaded = _load(cwd)
    assert "HF_TOKEN" not in loaded.env_exports
    text = "\n".join(loaded.warnings)
    assert "HF_TOKEN" in text and "LLAMA_TUI_API_KEY" in text
    assert TOKEN not in text and "sk-abc" not in text
    assert TOKEN not in repr(loaded)


def test_cwd_dotenv_cannot_enable_sensitive_settings(cfg_dir: Path, cwd: Path) -> None:
    _write(
        cwd / ".env",
        "LLAMA_TUI_TRUST_REMOTE_CODE=1\nLLAMA_TUI_ALLOW_PICKLE=1\nHF_ENDPOINT=http://evil\n"
        "LLAMA_TUI_SERVER=http://evil\nLLAMA_TUI_API_KEY_ENV=AWS_SECRET_ACCESS_KEY\n"
        "LLAMA_TUI_VERIFY_TLS=0\n",
    )
    loaded = _load(cwd)
    assert loaded.settings == Settings() and loaded.env_exports == {}
    assert len(loaded.warnings) == 6
    # The config dir's .env is the user's own: accepted there.
    _write(cfg_dir / ".env", "LLAMA_TUI_TRUST_REMOTE_CODE=1\nHF_ENDPOINT=http://mirror\n")
    loaded = _load(cwd)
    assert loaded.settings.trust_remote_code and loaded.env_exports == {
        "HF_ENDPOINT": "http://mirror"
    }


def test_apply_env_exports_does_not_override(cwd: Path) -> None:
    _write(cwd / ".env", "HF_HOME=/from/dotenv\nHF_HUB_OFFLINE=1\n")
    loaded = _load(cwd)
    env = {"HF_HUB_OFFLINE": "0"}
    loaded.apply_env_exports(env)
    assert env == {"HF_HUB_OFFLINE": "0", "HF_HOME": "/from/dotenv"}


# --- remembered ------------------------------------------------------------------------------


def test_remember_round_trip_and_mode(cwd: Path, cfg_dir: Path) -> None:
    params = GenerationParams(temperature=0.3, top_k=7, seed=4, stop=("###",), do_sample=True)
    path = remember(temperature=0.3, top_k=7, seed=4, stop=("###",),
                    system_prompt="You are terse.")
    assert path == remembered_settings_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert not (cfg_dir / "config.toml").exists()  # config.toml is never written
    loaded = _load(cwd)
    assert loaded.settings.params == params
    assert loaded.settings.system_prompt == "You are terse."
    # No temp file left; the lock file that serialises writers stays.
    assert sorted(p.name for p in cfg_dir.iterdir()) == [path.name, "remembered.lock"]
    forget_remembered()
    assert _load(cwd).settings == Settings()


def test_remember_refuses_values_of_the_wrong_kind() -> None:
    with pytest.raises(ValueError, match="top_p"):
        update_remembered({"top_p": Entry("high")}, {})
    with pytest.raises(ValueError, match="model"):
        update_remembered({"model": Entry("x")}, {})
    assert not remembered_settings_file().exists()


def test_remembered_file_cannot_set_model(cfg_dir: Path, cwd: Path) -> None:
    _write(remembered_settings_file(), json.dumps({"model": "x", "generation": {"top_k": 4}}))
    loaded = _load(cwd)
    assert loaded.settings.model == "demo" and loaded.settings.params.top_k == 4
    assert any("model" in w for w in loaded.warnings)


def test_corrupt_remembered_is_kept_aside(cfg_dir: Path, cwd: Path) -> None:
    path = _write(remembered_settings_file(), "{not json")
    loaded = _load(cwd)
    assert loaded.settings == Settings() and str(path) in loaded.warnings[0]
    remember(top_k=3)
    assert (cfg_dir / "remembered.json.bad").read_text() == "{not json"
    assert _load(cwd).settings.params.top_k == 3


def test_remember_write_failure_keeps_previous(
    cfg_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = remember(top_k=1, system_prompt="first")
    before = path.read_bytes()

    def boom(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", boom)
    with pytest.raises(OSError):
        remember(top_k=2, system_prompt="second")
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in cfg_dir.iterdir()) == [path.name, "remembered.lock"]


# --- endpoint and robustness -----------------------------------------------------------------


def test_endpoint_warning() -> None:
    assert endpoint_warning({}) is None
    assert endpoint_warning({"HF_ENDPOINT": "https://huggingface.co/"}) is None
    w = endpoint_warning({"HF_ENDPOINT": "http://mirror.local:8080"})
    assert w and "http://mirror.local:8080" in w and "token" in w
    w = endpoint_warning({"HF_ENDPOINT": f"http://x/?t={TOKEN}\x1b]52;c;x\x07"})
    assert w and TOKEN not in w and "\x1b" not in w


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    config=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)),
    dotenv=st.text(max_size=200),
    env=st.dictionaries(
        st.sampled_from(
            [
                "LLAMA_TUI_" + k
                for k in (
                    "MODEL",
                    "TEMPERATURE",
                    "TOP_K",
                    "STOP",
                    "SEED",
                    "DO_SAMPLE",
                    "DEVICE",
                    "SERVER",
                    "THREADS",
                )
            ]
        ),
        st.text(max_size=20).filter(lambda s: "\x00" not in s),
    ),
)
def test_loader_never_crashes(
    cfg_dir: Path, cwd: Path, config: bytes, dotenv: str, env: dict[str, str]
) -> None:
    (cfg_dir / "config.toml").write_bytes(config)
    (cwd / ".env").write_text(dotenv, encoding="utf-8", errors="surrogatepass")
    loaded = _load(cwd, env)
    assert isinstance(loaded.settings, Settings)
    assert loaded.settings.params.problems() == {}
    for w in loaded.warnings:
        assert "\x1b" not in w


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "temperature",
                "top_p",
                "top_k",
                "min_p",
                "repetition_penalty",
                "max_new_tokens",
                "do_sample",
                "seed",
                "stop",
                "model",
                "threads",
            ]
        ),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(),
            st.text(max_size=5),
            st.lists(st.text(max_size=3), max_size=2),
        ),
    )
)
def test_remembered_json_never_crashes(cfg_dir: Path, cwd: Path, gen: dict[str, object]) -> None:
    remembered_settings_file().write_text(json.dumps({"generation": gen}), encoding="utf-8")
    loaded = _load(cwd)
    assert loaded.settings.params.problems() == {}


def test_env_example_documents_every_variable() -> None:
    import re

    from llama_tui.config.values import ENV_KEYS, ENV_ONLY_KEYS, HF_DOTENV_KEYS

    text = (Path(__file__).parents[2] / ".env.example").read_text(encoding="utf-8")
    documented = set(re.findall(r"^# ?((?:LLAMA_TUI|HF)_[A-Z0-9_]+)=", text, re.M))
    assert set(ENV_KEYS) | set(HF_DOTENV_KEYS) | set(ENV_ONLY_KEYS) <= documented
    assert documented - set(ENV_KEYS) - set(HF_DOTENV_KEYS) - set(ENV_ONLY_KEYS) == {
        "LLAMA_TUI_API_KEY"
    }


def test_env_example_uncommented_is_the_defaults(cwd: Path) -> None:
    text = (Path(__file__).parents[2] / ".env.example").read_text(encoding="utf-8")
    lines = [line[2:] if line.startswith("# LLAMA_TUI_") else "" for line in text.splitlines()]
    _write(cwd / ".env", "\n".join(lines))
    loaded = _load(cwd)
    assert loaded.settings == Settings()


def test_dotenv_that_is_not_a_regular_file(cwd: Path) -> None:
    os.mkfifo(cwd / ".env")  # reading a FIFO would block for ever
    loaded = _load(cwd)
    assert loaded.settings == Settings()
    assert any("not a regular file" in w for w in loaded.warnings)
