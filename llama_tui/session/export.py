"""Saving conversations as files people read (Markdown) or load again (JSON).

Markdown (the default) is for humans and for `cat`: a header with the model id and
revision, device, dtype, settings, versions and date, then `## User` / `## Assistant`
turns with stopped / error / interrupted markers. Control characters are written as
visible placeholders (`text.visible_controls`), so an escape sequence in model output can
never drive the terminal of whoever reads the file.

JSON keeps the exact text and every metadata field, format-versioned, and loads again with
`load_conversation` (so `--resume export.json` works). Raw DEL / C1 / bidi / lone surrogate
characters are written as `\\uXXXX` escapes: the same string once parsed, harmless to `cat`.

Both redact token-shaped strings (`text.redact`) everywhere, message text included: an
export is made to be shared, so a pasted token must not travel with it (the journal keeps
the exact text; see `journal.py`). All writes are atomic and never overwrite without
`overwrite=True`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llama_tui import __version__, locations
from llama_tui.atomic import atomic_write, make_private_dirs
from llama_tui.core.backend import GenerationStats
from llama_tui.core.thinking import thought_summary
from llama_tui.session.attachments import markdown_files
from llama_tui.session.journal import (
    SUFFIX,
    SessionLoadError,
    journal_path,
    parse_journal,
    read_journal,
    resolve_session,
    set_aside,
)
from llama_tui.session.records import redact_tree, state_record
from llama_tui.session.transcript import Conversation, Message, new_id
from llama_tui.session.tree import other_branches
from llama_tui.text import clean, redact, safe_filename, show_bidi, visible_controls

EXPORT_FORMAT = "llama-tui-conversation"
_CLOSE_DETAILS = re.compile("</details", re.IGNORECASE)
EXPORT_VERSION = 1
JSON_SUFFIXES = (".json",)
MAX_STEM = 100  # leaves room for "-NN" and the extension under every filesystem's limit

# Characters json.dumps(ensure_ascii=False) leaves raw that a terminal or editor would act on.
_SURROGATE = re.compile("[\ud800-\udfff]")
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
# Characters that must never end up in a file name we create, even one the user typed (a
# pasted escape sequence would replay whenever the directory is listed): controls and bidi.
_NAME_UNSAFE = re.compile("[\x01-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _safe_user_path(target: Path) -> Path:
    """`target` with control and bidi characters in any component replaced by ``_``."""
    if not _NAME_UNSAFE.search(str(target)):
        return target
    return Path(*(_NAME_UNSAFE.sub("_", part) for part in target.parts))


# Every export names these versions (TUI and headless alike), read from the installed
# distributions' metadata: importing torch just to ask would take seconds.
VERSIONED = ("transformers", "torch", "textual")


def library_versions() -> dict[str, str]:
    """llama-tui's version and those of `VERSIONED` that are installed."""
    # Imported here: importlib.metadata takes ~12 ms to import, and this module is imported
    # before the TUI's first paint (chat.replay), which needs no versions.
    from importlib import metadata

    versions = {"llama-tui": __version__}
    for dist in VERSIONED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    return versions


def default_meta() -> dict[str, Any]:
    """The metadata we know without importing torch: versions and the export time."""
    return {"versions": library_versions(), "exported": time.time()}


def _meta(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    out = default_meta()
    if meta:
        versions = {**out["versions"], **dict(meta.get("versions") or {})}
        out.update(meta)
        out["versions"] = versions
    return out


# -- Markdown ------------------------------------------------------------------------------


def _md(s: object) -> str:
    """Untrusted text for a Markdown file: secrets hidden, control and bidi characters
    visible (bidi overrides can reorder what `cat` shows), lone surrogates replaced."""
    return _SURROGATE.sub("\ufffd", show_bidi(visible_controls(redact(str(s)))))


def _line(s: object) -> str:
    return " ".join(_md(s).split())


def _utc(ts: object) -> str:
    if isinstance(ts, bool) or not isinstance(ts, (int, float)):
        return "unknown"
    try:
        return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))
    except (ValueError, OverflowError, OSError):
        return "unknown"


def to_markdown(conv: Conversation, meta: Mapping[str, Any] | None = None) -> str:
    """The conversation as Markdown, with a header of everything needed to reproduce it.

    The header's settings and system prompt are those of the first reply; a reply made
    with other ones says so above its text. `meta` adds `versions` ({"transformers": ...}),
    `exported` (a timestamp) and any other key: value to show.
    """
    m = _meta(meta)
    settings, prompt = _first_reply_context(conv)
    body, changed = _turns(conv, settings, prompt)
    model = conv.model
    out = [f"# {_line(conv.title) or 'Conversation'}", ""]
    out.append(f"- **Date:** {_utc(conv.created)} (exported {_utc(m['exported'])})")
    out.append(f"- **Session:** `{_line(conv.id)}`")
    if model:
        name = _line(model.get("spec") or model.get("name") or "unknown")
        if model.get("revision"):
            name += f" @ `{_line(model['revision'])}`"
        if model.get("name") and model.get("spec"):
            name += f" ({_line(model['name'])})"
        out.append(f"- **Model:** {name}")
        out.append(
            f"- **Device:** {_line(model.get('device', 'unknown'))}, "
            f"**dtype:** {_line(model.get('dtype', 'unknown'))}"
        )
    if settings:
        note = " (of the first reply; later changes are marked at the replies)" if changed else ""
        out.append(f"- **Settings:** {_settings_text(settings)}{note}")
    versions = ", ".join(f"{_line(k)} {_line(v)}" for k, v in m["versions"].items() if v)
    out.append(f"- **Versions:** {versions}")
    others = other_branches(conv)
    if others:
        out.append(f"- **Branches:** this is the active branch; {others} other "
                   f"branch{'es' if others != 1 else ''} (earlier retries and edits) "
                   "are in the JSON export")
    for key, value in m.items():
        if key not in ("versions", "exported") and value not in (None, "", {}, []):
            out.append(f"- **{_line(key)}:** {_line(value)}")
    if prompt:
        out += ["", "## System prompt", "", _md(prompt)]
    out += body
    return "\n".join(out).rstrip("\n") + "\n"


def _first_reply_context(conv: Conversation) -> tuple[dict[str, Any], str]:
    """The settings and system prompt of the first reply that recorded them, else the
    conversation's (files from before replies recorded their own)."""
    replies = [msg for msg in conv.messages if msg.role == "assistant"]
    settings = next((r.settings for r in replies if r.settings is not None), conv.settings)
    prompt = next((r.system_prompt for r in replies if r.system_prompt is not None),
                  conv.system_prompt)
    return settings, prompt


def _turns(
    conv: Conversation, settings: dict[str, Any], prompt: str
) -> tuple[list[str], bool]:
    """The `## User` / `## Assistant` sections; True when some reply changed settings."""
    out: list[str] = []
    changed = False
    for msg in conv.messages:
        out += ["", f"## {msg.role.capitalize()}", ""]
        if msg.role == "assistant":
            if msg.settings is not None and msg.settings != settings:
                diff = {k: v for k, v in msg.settings.items() if settings.get(k) != v}
                out += [f"*[settings for this reply: {_settings_text(diff) or 'defaults'}]*", ""]
                settings, changed = msg.settings, True
            if msg.system_prompt is not None and msg.system_prompt != prompt:
                prompt, changed = msg.system_prompt, True
                if prompt:
                    quoted = "\n".join(f"> {ln}" for ln in _md(prompt).splitlines())
                    out += ["*[system prompt for this reply:]*", "", quoted, ""]
                else:
                    out += ["*[no system prompt for this reply]*", ""]
        out += markdown_files(msg.attachments, _md)
        out += _thinking(msg)
        out.append(_md(msg.content))
        marker = _marker(msg)
        if marker:
            out += ["", marker]
    return out, changed


def _thinking(msg: Message) -> list[str]:
    """A reply's thought as a folded `<details>` block (its summary line as the title)."""
    if not msg.thinking.strip():
        return []
    stats = GenerationStats.from_dict(msg.stats)
    title = thought_summary(stats.thinking_tokens if stats else None,
                            stats.thinking_s if stats else None).capitalize()
    # The thought's own text must not close the block early.
    text = _CLOSE_DETAILS.sub("&lt;/details", _md(msg.thinking.strip()))
    return ["<details>", f"<summary>{title}</summary>", "", text, "", "</details>", ""]


def _settings_text(settings: Mapping[str, Any]) -> str:
    return ", ".join(f"{_line(k)}={_line(v)}" for k, v in settings.items())


def _marker(msg: Message) -> str:
    if msg.interrupted:
        return "*[interrupted: llama-tui stopped while this reply was being generated]*"
    if msg.status == "stopped":
        return "*[stopped]*"
    if msg.status == "error":
        return f"*[error: {_line(msg.error or 'generation failed')}]*"
    if msg.status == "streaming":
        return "*[incomplete]*"
    if msg.role == "assistant" and (msg.stats or {}).get("stop_reason") == "length":
        return "*[cut off at the length limit (max_new_tokens)]*"
    return ""


# -- JSON ----------------------------------------------------------------------------------


def to_json(conv: Conversation, meta: Mapping[str, Any] | None = None) -> str:
    """Exact text (tokens redacted) and every metadata field, format-versioned."""
    doc = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "meta": redact_tree(_meta(meta)),
        "conversation": redact_tree(conv.to_dict()),
    }
    text = json.dumps(doc, ensure_ascii=False, indent=2, default=str)
    # Outside strings json.dumps writes ASCII only, so every match is inside a string and
    # its \uXXXX escape parses back to the same character.
    return _JSON_UNSAFE.sub(lambda mo: f"\\u{ord(mo.group()):04x}", text) + "\n"


def from_json(text: str | bytes, path: Path | str = "<json>") -> Conversation:
    """Parse an export made by `to_json`; `SessionLoadError` when it is not one."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise SessionLoadError(path, f"not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
        raise SessionLoadError(path, "not a llama-tui conversation export")
    try:
        return Conversation.from_dict(doc.get("conversation"))
    except (ValueError, TypeError, RecursionError) as exc:
        raise SessionLoadError(path, f"damaged conversation: {exc}") from None


# -- loading and saving --------------------------------------------------------------------


def load_conversation(id_or_path: str | Path, directory: Path | None = None) -> Conversation:
    """A session id (or unique prefix), a `.jsonl` journal or a `.json` export.

    Never crashes on bad data: `SessionLoadError` with the path. A journal in the sessions
    directory that holds nothing readable is renamed to `*.corrupt` (kept, never deleted).
    """
    path = resolve_session(id_or_path, directory)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SessionLoadError(path, exc.strerror or str(exc)) from None
    if path.suffix.lower() in JSON_SUFFIXES:
        return _apart_from_its_journal(from_json(data, path), directory)
    try:
        return parse_journal(data, path)[0]
    except SessionLoadError as err:
        try:
            # an export saved under another name
            return _apart_from_its_journal(from_json(data, path), directory)
        except SessionLoadError:
            pass
        sessions = directory or locations.sessions_dir()
        if path.name.endswith(SUFFIX) and _same_dir(path.parent, sessions):
            moved = set_aside(path)
            if moved is not None:
                raise SessionLoadError(moved, f"{err.reason}; kept aside as {moved.name}") from None
        raise


def _apart_from_its_journal(conv: Conversation, directory: Path | None) -> Conversation:
    """An export whose session journal holds something else continues as a new session.

    Resuming keeps journaling under the conversation's id, and a journal that does not match
    what is resumed gets a snapshot of it: continuing an older export under its own id would
    replace every turn the session gained after the export was written.
    """
    try:
        journal = journal_path(conv.id, directory)
        on_disk = read_journal(journal)[0] if journal.exists() else None
    except (ValueError, OSError, SessionLoadError):
        return conv  # no usable journal of that id: nothing to overwrite
    if on_disk is None or state_record(on_disk) == state_record(conv):
        return conv
    old, conv.id = conv.id, new_id()
    conv.load_warnings.append(
        f"Session {old} has changed since this file was saved, so this continues as a new "
        f"session ({conv.id}); {old} is kept as it is (F5 or --resume {old} opens it)."
    )
    return conv


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def slug(text: str, limit: int = 60) -> str:
    """`text` as a file-name part: lower-case words joined by hyphens, no spaces or
    punctuation, secrets redacted; "" when nothing is left."""
    words = re.findall(r"[^\W_]+", redact(clean(text)).lower())
    return "-".join(words)[:limit].strip("-")


def export_name(conv: Conversation, ext: str = ".md", when: float | None = None) -> str:
    """`2026-11-29-what-is-the-capital-of-france.md`: the local date, then the title's slug."""
    date = time.strftime("%Y-%m-%d", time.localtime(time.time() if when is None else when))
    stem = safe_filename(f"{date}-{slug(conv.title) or 'conversation'}")[:MAX_STEM]
    return f"{stem.rstrip('. ') or date}{ext}"


def default_export_path(
    conv: Conversation, directory: Path | str, ext: str = ".md", *, unique: bool = True
) -> Path:
    """`export_name` in `directory`, never outside it.

    With `unique`, the first name that does not exist yet (`name.md`, `name-2.md`...).
    """
    directory = Path(directory)
    name = export_name(conv, ext)
    stem = name.removesuffix(ext)
    candidate = directory / name
    n = 2
    while unique and os.path.lexists(candidate) and n < 10_000:
        candidate = directory / f"{stem}-{n}{ext}"
        n += 1
    return candidate


def save_conversation(
    conv: Conversation,
    path: Path | str,
    meta: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write `conv` to `path` atomically; returns the path written.

    The format follows the extension: `.json` is JSON, anything else Markdown (no extension:
    `.md` is added). A directory (or a path ending in a separator) gets a file named after
    the title inside it. A path the user typed is used as typed, `..` included, except that
    control and bidi characters become ``_``; names built from titles never leave their
    directory. An existing file, directory or symlink raises
    `FileExistsError` naming the path unless `overwrite` (a symlink is then replaced, never
    written through). Missing parent directories are created 0700. `OSError` (disk full,
    permission) leaves any previous file byte-identical and no temp file behind.
    """
    text = os.fspath(path)
    if "\0" in text:
        raise ValueError("the file name contains a NUL character")
    if not text.strip():
        raise ValueError("no file name given")
    target = _safe_user_path(Path(text).expanduser())
    if text.endswith(("/", os.sep)) or target.is_dir():
        target = default_export_path(conv, target, unique=not overwrite)
    elif not target.suffix:
        target = target.with_name(target.name + ".md")
    if target.suffix.lower() in JSON_SUFFIXES:
        data = to_json(conv, meta)
    else:
        data = to_markdown(conv, meta)
    if not overwrite and os.path.lexists(target):
        # Checked before creating directories; atomic_write checks again without a race.
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target))
    make_private_dirs(target.parent)
    return atomic_write(target, data.encode("utf-8"), overwrite=overwrite)
