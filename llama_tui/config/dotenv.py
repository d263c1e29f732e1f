"""Reading ``.env`` files: settings items and the HF_* variables we honour, nothing else.

The syntax is python-dotenv's (its parser, not its loader: nothing is put in ``os.environ``
and ``${VAR}`` is not expanded): ``export`` prefixes, 'single' and "double" quotes (escapes
such as ``\n`` and ``\t`` decoded in double quotes), values over several lines inside quotes,
and ``# comments`` after a value. On top of it, our policy: only documented keys are kept;
the values of other keys are never stored. Secrets (``HF_TOKEN``, the API key) are refused
with a message saying where to set them instead. A ``.env`` in the working directory is
untrusted (it may come with a cloned repository): it cannot set the sensitive keys (remote
code, pickle loading, a server, the API-key variable, TLS settings, ``HF_ENDPOINT``).

This module imports no torch, transformers or textual.
"""

from __future__ import annotations

import io
from pathlib import Path

from llama_tui.config.values import (
    ENV_KEYS,
    ENV_ONLY_KEYS,
    HF_DOTENV_KEYS,
    SECRET_DOTENV_KEYS,
    SENSITIVE_HF_KEYS,
    SENSITIVE_KEYS,
    Item,
    read_text,
)
from llama_tui.core.params import ENV_PREFIX
from llama_tui.text import clean, redact

__all__ = ["read_dotenv"]


def read_dotenv(
    path: Path, *, trusted: bool, warnings: list[str]
) -> tuple[list[Item], dict[str, str]]:
    """Settings items and HF_* exports from one .env file.

    Only documented keys are kept; the values of other keys are never stored. `trusted` is
    False for the working directory's file: sensitive keys are refused there.
    """
    text = read_text(path, ".env file", warnings)
    if text is None:
        return [], {}
    # Imported here, not at the top: most launches have no .env (first paint).
    from dotenv.parser import parse_stream

    items: list[Item] = []
    exports: dict[str, str] = {}
    for binding in parse_stream(io.StringIO(text)):
        n = binding.original.line  # the first line of a value that spans several
        key, value = binding.key, binding.value
        if binding.error or (key is not None and value is None):
            warnings.append(f"{clean(str(path))} line {n}: not KEY=VALUE; skipped")
            continue
        if key is None or value is None:
            continue  # a blank line or a comment
        where = f"{path} line {n}"
        if key in SECRET_DOTENV_KEYS:
            warnings.append(
                redact(
                    clean(
                        f"{where}: {key} is not read from .env files (llama-tui never reads "
                        "secrets); export it in your shell, or for Hugging Face use "
                        "`hf auth login`"
                    )
                )
            )
            continue
        if key in ENV_KEYS:
            setting = ENV_KEYS[key]
            if not trusted and setting in SENSITIVE_KEYS:
                warnings.append(redact(clean(_untrusted_msg(where, key))))
                continue
            items.append(Item(setting, value, f"{where} ({key})", False))
        elif key in HF_DOTENV_KEYS:
            if not trusted and key in SENSITIVE_HF_KEYS:
                warnings.append(redact(clean(_untrusted_msg(where, key))))
                continue
            exports[key] = value
        elif key in ENV_ONLY_KEYS:
            warnings.append(f"{clean(where)}: {key} is only read from the environment; ignored")
        elif key.startswith(ENV_PREFIX):
            warnings.append(redact(clean(f"{where}: unknown variable {key}; ignored")))
        # Any other key belongs to some other tool: ignored, its value not kept.
    return items, exports


def _untrusted_msg(where: str, key: str) -> str:
    return (
        f"{where}: {key} is not accepted from a .env in the working directory (it could "
        "come with a downloaded project); set it in the environment, the config dir's .env, "
        "config.toml or with a flag"
    )
