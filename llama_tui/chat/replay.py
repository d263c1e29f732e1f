"""Exact replay: what a reply records to be regenerated, and regenerating it (`--replay`).

When a reply ends, `replay_record` files how it was made as its message's `replay` dict:
the seed the backend used (it draws one when none was set), the decode path (``generate``,
``fast`` or ``remote``), every setting, a sha256 of the prompt's token ids, the ids it
generated, the model (spec, name, revision), dtype, device and library versions, and for a
continued reply how many characters came before the part this run generated.

`replay_turns` regenerates the replies on a conversation's active path with those values and
compares token by token. A turn is ``identical``, ``differs`` (the first differing token:
index and both texts), or ``impossible`` where an exact replay cannot be promised (a
server's reply, another device or dtype, nothing recorded): it says so rather than guess.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from llama_tui.config.values import coerce
from llama_tui.core.backend import Backend, GenerationStats, ModelInfo, Replayable
from llama_tui.core.params import PARAM_FIELDS, GenerationParams
from llama_tui.session.export import library_versions
from llama_tui.session.transcript import Conversation, Message


def replay_record(stats: GenerationStats, params: GenerationParams,
                  model: ModelInfo | None, prefix_chars: int) -> dict[str, Any] | None:
    """The `Message.replay` dict of a reply that ended with `stats` (None: the backend
    reported nothing to replay with)."""
    facts = stats.replay
    if facts is None:
        return None
    settings = params.to_dict()
    settings["seed"] = facts.seed
    return {
        "seed": facts.seed,
        "decode_path": facts.decode_path,
        "settings": settings,
        "prompt_sha256": facts.prompt_sha256,
        "token_ids": list(facts.token_ids),
        "prefix_chars": prefix_chars,
        "model": {
            "spec": model.spec if model else None,
            "name": model.name if model else None,
            "revision": model.revision if model else None,
        },
        "dtype": model.dtype if model else None,
        "device": model.device if model else None,
        "versions": library_versions(),
    }


Verdict = Literal["identical", "differs", "impossible"]


@dataclass(frozen=True)
class TurnResult:
    """One replayed reply: `turn` counts the replies of the active path from 1."""

    turn: int
    verdict: Verdict
    detail: str = ""

    def line(self) -> str:
        return f"turn {self.turn}: {self.verdict}" + (f": {self.detail}" if self.detail else "")


def replay_turns(
    conv: Conversation,
    backend: Backend,
    *,
    turn: int | None = None,
    on_result: Callable[[TurnResult], None] | None = None,
) -> list[TurnResult]:
    """Regenerate the replies on the active path (or only reply number `turn`) with what
    each recorded, and compare them with what was recorded."""
    replies = [(i, m) for i, m in enumerate(conv.messages) if m.role == "assistant"]
    if turn is not None:
        if not 1 <= turn <= len(replies):
            raise ValueError(f"there is no turn {turn}: the conversation has "
                             f"{len(replies)} repl{'y' if len(replies) == 1 else 'ies'}")
        chosen = [(turn, *replies[turn - 1])]
    else:
        chosen = [(n, i, m) for n, (i, m) in enumerate(replies, 1)]
    results = []
    for n, index, msg in chosen:
        result = _replay_one(conv, backend, n, index, msg)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def _replay_one(conv: Conversation, backend: Backend, n: int, index: int,
                msg: Message) -> TurnResult:
    record = msg.replay
    why = _impossible(record, backend)
    if why is not None:
        return TurnResult(n, "impossible", why)
    assert record is not None and isinstance(backend, Replayable)
    try:
        params = _params(record["settings"])
    except (TypeError, ValueError) as exc:
        return TurnResult(n, "impossible", f"its recorded settings are unreadable ({exc})")
    recorded = [int(i) for i in record["token_ids"]]
    if msg.status == "stopped":  # stopped by the user: regenerate as far as it went
        params = params.with_changes(max_new_tokens=max(1, len(recorded)))
    path_problem = backend.use_decode_path(str(record.get("decode_path")))
    if path_problem is not None:
        return TurnResult(n, "impossible", f"it was decoded on the {record['decode_path']} "
                          f"path, and {path_problem}")
    prefix = _prefix_chars(record, msg)
    history_conv = Conversation(system_prompt=_system_prompt(conv, msg),
                                messages=list(conv.messages[:index]))
    if prefix:
        history_conv.messages.append(dataclasses.replace(msg, content=msg.content[:prefix]))
    gen = backend.stream(history_conv.history(), params, threading.Event())
    text = gen.text()
    facts = gen.stats.replay if gen.stats is not None else None
    produced = list(facts.token_ids) if facts is not None else []
    result = _compare(n, recorded, produced, msg.content[prefix:], text, backend)
    if facts is not None and facts.prompt_sha256 != record.get("prompt_sha256"):
        result = dataclasses.replace(result, detail=result.detail + (
            " (the prompt's token ids differ from the recorded ones: another chat template "
            "or tokenizer?)"))
    return result


def _impossible(record: dict[str, Any] | None, backend: Backend) -> str | None:
    """Why this reply cannot be replayed exactly here, or None."""
    if record is None:
        return ("nothing recorded to replay it with (an older llama-tui wrote it, or it "
                "never reached the model)")
    if record.get("decode_path") == "remote":
        return ("a server generated it; servers do not report the tokens they drew, so an "
                "exact replay is not possible")
    if not isinstance(backend, Replayable):
        return "this backend cannot replay exactly (a server); load the model locally"
    ids = record.get("token_ids")
    if not isinstance(ids, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in ids):
        return "its recorded token ids are missing or damaged"
    info = backend.info
    if info is not None:
        recorded_device = str(record.get("device") or "")
        if _device_type(recorded_device) != _device_type(info.device):
            return (f"it was generated on {recorded_device or 'an unknown device'} and this "
                    f"run uses {info.device}; results differ between devices, so an exact "
                    "replay is not possible (run --replay on the machine that made it)")
        if record.get("dtype") and record.get("dtype") != info.dtype:
            return (f"it was generated in {record.get('dtype')} and the model is loaded in "
                    f"{info.dtype} here; pass --dtype {record.get('dtype')}")
    return None


def _device_type(device: str) -> str:
    return device.split(":", 1)[0].split(" ", 1)[0].strip().lower()


def _params(recorded: object) -> GenerationParams:
    """The recorded settings, each checked like a config value (the file is untrusted)."""
    if not isinstance(recorded, dict):
        raise ValueError("not a table")
    changes: dict[str, Any] = {}
    for f in PARAM_FIELDS:
        if f.name in recorded:
            value = recorded[f.name]
            changes[f.name] = coerce(f.kind, value)
    params = GenerationParams().with_changes(**changes)
    problems = params.problems()
    if problems:
        raise ValueError("; ".join(f"{k} {v}" for k, v in problems.items()))
    return params


def _prefix_chars(record: dict[str, Any], msg: Message) -> int:
    n = record.get("prefix_chars", 0)
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= len(msg.content):
        return 0
    return n


def _system_prompt(conv: Conversation, msg: Message) -> str:
    return msg.system_prompt if msg.system_prompt is not None else conv.system_prompt


def _compare(n: int, recorded: Sequence[int], produced: Sequence[int], recorded_text: str,
             produced_text: str, backend: Replayable) -> TurnResult:
    common = min(len(recorded), len(produced))
    first = next((i for i in range(common) if recorded[i] != produced[i]), None)
    if first is None and (len(recorded) == len(produced) or recorded_text == produced_text):
        # Lengths may differ past a stop string (the device stops a step or two later),
        # where the text is cut the same way.
        return TurnResult(n, "identical", f"{len(recorded)} tokens")
    if first is None:
        first = common
    was = backend.token_texts([recorded[first]])[0] if first < len(recorded) else "(end)"
    now = backend.token_texts([produced[first]])[0] if first < len(produced) else "(end)"
    return TurnResult(n, "differs",
                      f"first different token at index {first}: recorded {was!r}, "
                      f"replayed {now!r}")
