"""Remembered settings per field: config.toml edits win unless the user changed the field later.

Each test is a sequence of launches: `_load` is one launch reading the files; `remember`
is what the app writes when the user changes fields in the panel or with /set.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llama_tui import locations
from llama_tui.config.remembered import base_entry, remembered_settings_file, update_remembered
from llama_tui.config.settings import LoadedSettings, config_file_values, load_settings


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    return d


def _config(text: str) -> None:
    path = locations.config_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _load(cwd: Path, **cli: object) -> LoadedSettings:
    return load_settings(cli=cli or None, environ={}, cwd=cwd)


def remember(**fields: object) -> None:
    files = config_file_values(None)
    update_remembered({k: base_entry(k, v, files) for k, v in fields.items()}, files)


def settle() -> None:
    """What the app does at startup: drop stale entries, convert an old file."""
    update_remembered({}, config_file_values(None))


def stored() -> dict[str, dict[str, object]]:
    data = json.loads(remembered_settings_file().read_text(encoding="utf-8"))
    assert data["version"] == 2
    fields: dict[str, dict[str, object]] = data["fields"]
    return fields


def test_only_the_changed_field_is_remembered_and_a_later_config_edit_applies(cwd: Path) -> None:
    remember(temperature=0.3)
    assert stored() == {"temperature": {"value": 0.3}}  # no snapshot of every field
    _config('system_prompt = "From the file."\n[generation]\nmax_new_tokens = 30\n')
    loaded = _load(cwd)
    s = loaded.settings
    assert (s.params.temperature, s.params.max_new_tokens) == (0.3, 30)
    assert s.system_prompt == "From the file."
    assert loaded.sources["max_new_tokens"].startswith("config:")
    assert loaded.notes == []  # nothing overrides the file


def test_config_edit_after_a_panel_change_wins_with_a_note(cwd: Path) -> None:
    _config("[generation]\ntop_p = 0.8\n")
    remember(top_p=0.9)
    assert stored() == {"top_p": {"value": 0.9, "base": 0.8}}
    loaded = _load(cwd)
    assert loaded.settings.params.top_p == 0.9
    assert any("top_p 0.9 (config.toml: 0.8)" in n and "/set forget" in n for n in loaded.notes)
    _config("[generation]\ntop_p = 0.85\n")  # the user edits the file afterwards
    loaded = _load(cwd)
    assert loaded.settings.params.top_p == 0.85
    assert loaded.sources["top_p"].startswith("config:")
    assert any("top_p is now 0.85" in n and "forgotten" in n for n in loaded.notes)
    assert loaded.remembered.needs_write
    settle()
    assert stored() == {}
    _config("[generation]\ntop_p = 0.8\n")  # back to the old base: the old choice stays gone
    assert _load(cwd).settings.params.top_p == 0.8


def test_panel_change_after_a_config_edit_wins(cwd: Path) -> None:
    _config("[generation]\ntop_p = 0.8\n")
    assert _load(cwd).settings.params.top_p == 0.8
    _config("[generation]\ntop_p = 0.85\n")
    remember(top_p=0.9)  # the user's change comes after the edit
    assert _load(cwd).settings.params.top_p == 0.9


def test_a_field_the_file_starts_or_stops_setting_counts_as_an_edit(cwd: Path) -> None:
    remember(max_new_tokens=100, seed=3)
    _config("[generation]\nmax_new_tokens = 30\n")  # the file now sets it
    loaded = _load(cwd)
    assert loaded.settings.params.max_new_tokens == 30 and loaded.settings.params.seed == 3
    _config("[generation]\nseed = 5\n")
    remember(seed=4)
    _config("")  # the file no longer sets seed: the default shows, not the old choice
    assert _load(cwd).settings.params.seed is None


def test_legacy_full_snapshot_keeps_only_real_choices(cwd: Path) -> None:
    # An earlier llama-tui wrote every field, an empty system prompt included.
    legacy = {"version": 1, "system_prompt": "",
              "generation": {"temperature": 0.3, "top_p": 1.0, "top_k": 50, "min_p": 0.0,
                             "repetition_penalty": 1.0, "max_new_tokens": 512,
                             "do_sample": True, "seed": None, "stop": []}}
    remembered_settings_file().parent.mkdir(parents=True, exist_ok=True)
    remembered_settings_file().write_text(json.dumps(legacy), encoding="utf-8")
    _config('system_prompt = "From the file."\n[generation]\nmax_new_tokens = 30\n')
    loaded = _load(cwd)
    s = loaded.settings
    assert (s.params.temperature, s.params.max_new_tokens) == (0.3, 30)
    assert s.system_prompt == "From the file."
    assert any("earlier llama-tui" in n and "temperature 0.3" in n for n in loaded.notes)
    settle()
    assert stored() == {"temperature": {"value": 0.3}}
    # Converted: from now on a config edit of temperature wins.
    _config("[generation]\ntemperature = 0.5\n")
    assert _load(cwd).settings.params.temperature == 0.5


def test_legacy_value_equal_to_the_file_is_not_kept(cwd: Path) -> None:
    _config("[generation]\ntop_k = 5\n")
    remembered_settings_file().write_text(json.dumps({"generation": {"top_k": 5}}))
    loaded = _load(cwd)
    assert loaded.remembered.live == {} and loaded.remembered.legacy


def test_second_instance_keeps_the_first_instances_change(cwd: Path) -> None:
    remember(temperature=0.3)  # instance A
    remember(top_p=0.9)  # instance B, started before A wrote, changes another field
    params = _load(cwd).settings.params
    assert (params.temperature, params.top_p) == (0.3, 0.9)


_WRITER = """
import sys
from llama_tui.config.remembered import Entry, update_remembered
key = sys.argv[1]
for i in range(1, 41):
    update_remembered({key: Entry(i)}, {})
"""


def test_two_writer_processes_at_once_lose_nothing(cwd: Path) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, key])
             for key in ("top_k", "max_new_tokens")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert stored() == {"top_k": {"value": 40}, "max_new_tokens": {"value": 40}}


def test_forget_one_field_keeps_the_others(cwd: Path) -> None:
    _config("[generation]\ntop_p = 0.8\n")
    remember(top_p=0.9, temperature=0.3)
    update_remembered({"top_p": None}, config_file_values(None))
    params = _load(cwd).settings.params
    assert (params.top_p, params.temperature) == (0.8, 0.3)


def test_flags_override_but_loading_never_writes(cwd: Path) -> None:
    remember(temperature=0.3)
    before = remembered_settings_file().read_bytes()
    loaded = _load(cwd, system_prompt="Flag prompt.", temperature=0.9)
    assert loaded.settings.system_prompt == "Flag prompt."
    assert loaded.settings.params.temperature == 0.9
    assert remembered_settings_file().read_bytes() == before
    assert _load(cwd).settings.params.temperature == 0.3


def test_bad_entries_are_reported_and_skipped(cwd: Path) -> None:
    remembered_settings_file().parent.mkdir(parents=True, exist_ok=True)
    remembered_settings_file().write_text(json.dumps({"version": 2, "fields": {
        "top_k": {"value": "many"}, "model": {"value": "x"}, "seed": 3,
        "temperature": {"value": 0.4}}}))
    loaded = _load(cwd)
    assert loaded.settings.params.temperature == 0.4
    assert loaded.settings.model == "demo"
    for key in ("top_k", "model", "seed"):
        assert any(key in w for w in loaded.warnings), loaded.warnings


def test_entry_with_an_unreadable_base_is_stale(cwd: Path) -> None:
    _config("[generation]\ntop_k = 5\n")
    remembered_settings_file().write_text(json.dumps({"version": 2, "fields": {
        "top_k": {"value": 7, "base": "five"}}}))
    loaded = _load(cwd)
    assert loaded.settings.params.top_k == 5 and "top_k" in loaded.remembered.stale


def test_notes_about_the_system_prompt_name_system_not_set(cwd: Path) -> None:
    # The system prompt is chosen with /system (or the panel), never /set.
    _config('system_prompt = "From the file."\n')
    remember(system_prompt="Mine.")
    over = _load(cwd).notes
    assert any("/system or the panel" in n and "system_prompt" in n for n in over), over
    assert not any("/set or" in n for n in over), over
    _config('system_prompt = "Edited file."\n')  # an edit afterwards wins
    stale = _load(cwd).notes
    assert any("when you set" in n and "with /system or the panel)" in n for n in stale), stale
    assert not any("/set or the panel" in n for n in stale), stale
