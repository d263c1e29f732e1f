"""The remembered `dtype auto` picks: one JSON file, keyed by CPU, torch and model shape.

Measuring the fastest dtype (`calibration`) takes a few seconds, so the answer is kept in
`<cache dir>/dtype_auto.json` and reused while the key matches: the CPU's model name, the torch
version, the torch thread count, the model's shape (hidden size, layers, heads, kv heads,
vocabulary, intermediate size) and its source ("gguf-q4" when the weights come from a Q4 GGUF,
which adds the `int4` candidate). A new CPU, a torch upgrade or another model measures again. A
damaged file is never a crash: it reads as empty and the next write replaces it.
"""

from __future__ import annotations

import json
import logging
import platform
from pathlib import Path
from typing import Any

from llama_tui.atomic import atomic_write, make_private_dirs
from llama_tui.locations import cache_dir

log = logging.getLogger(__name__)

FILE_NAME = "dtype_auto.json"
# 2: timed on the lean CPU step (and by the fastest step): picks measured the older ways are
# measured again.
FORMAT_VERSION = 2
DTYPES = ("float32", "bfloat16", "float16", "int4")
# config.json fields that decide how fast a decode step is in each dtype.
SHAPE_FIELDS = (
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
    "intermediate_size",
)


def cpu_name(cpuinfo_path: str = "/proc/cpuinfo") -> str:
    """The CPU's model name ("AMD EPYC 9R14 ..."), or the best the platform offers."""
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                names = ("model name", "hardware", "cpu model")
                if key.strip().lower() in names and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def torch_version() -> str:
    import torch

    return str(torch.__version__)


def torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def model_shape(config: dict[str, Any]) -> dict[str, Any]:
    """The fields of config.json (its text part, for a multimodal model) that set the cost."""
    text = config.get("text_config")
    source = text if isinstance(text, dict) else config
    return {name: source.get(name) for name in SHAPE_FIELDS}


def cache_key(config: dict[str, Any], source: str = "") -> str:
    """One string naming this CPU, torch, thread count, model shape and weights' source."""
    key = {
        "cpu": cpu_name(),
        "torch": torch_version(),
        "threads": torch_threads(),
        "shape": model_shape(config),
        "source": source,
    }
    return json.dumps(key, sort_keys=True, ensure_ascii=True)


def cache_file() -> Path:
    return cache_dir() / FILE_NAME


def _read_entries() -> dict[str, Any]:
    """Every remembered pick; {} when there is no file or it is damaged (logged)."""
    path = cache_file()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError) as exc:
        log.warning("ignoring the damaged dtype cache %s (%s)", path, type(exc).__name__)
        return {}
    if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
        log.warning("ignoring the dtype cache %s: not version %s", path, FORMAT_VERSION)
        return {}
    entries = data.get("entries")
    if not isinstance(entries, dict):
        log.warning("ignoring the damaged dtype cache %s (no entries)", path)
        return {}
    return entries


def lookup(key: str) -> str | None:
    """The dtype remembered for `key`, or None (no entry, or an entry that makes no sense)."""
    entry = _read_entries().get(key)
    dtype = entry.get("dtype") if isinstance(entry, dict) else None
    return dtype if dtype in DTYPES else None


def remember(key: str, dtype: str, tokens_per_s: dict[str, float]) -> None:
    """Store the pick for `key`, keeping the other entries; a failed write is only logged
    (the next load measures again, which is slower, not wrong)."""
    entries = _read_entries()
    rates = {k: round(v, 2) for k, v in tokens_per_s.items()}
    entries[key] = {"dtype": dtype, "tokens_per_s": rates}
    data = json.dumps({"version": FORMAT_VERSION, "entries": entries}, indent=1, sort_keys=True)
    path = cache_file()
    try:
        make_private_dirs(path.parent)
        atomic_write(path, (data + "\n").encode("utf-8"), overwrite=True)
    except OSError as exc:
        log.warning("could not write the dtype cache %s: %s", path, exc)
