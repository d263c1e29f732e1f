"""The code blocks of a reply, found the way the transcript renders them.

The transcript shows replies with Textual's Markdown widget, which parses with markdown-it-py
("gfm-like"). F3 and `/copy N` use the same parser, so a fence inside a numbered list or a
blockquote is found, its content comes without the list indentation or the `>` markers,
and the numbering agrees with what is on the screen. Indented code blocks count too (the
widget shows them as code).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llama_tui.text import clean

# Fence info strings (lower case) -> file extension, for files written from a code block.
_EXTENSIONS: dict[str, str] = {
    "python": "py", "py": "py", "python3": "py", "pycon": "py",
    "javascript": "js", "js": "js", "jsx": "jsx", "typescript": "ts", "ts": "ts",
    "tsx": "tsx", "json": "json", "jsonc": "json", "yaml": "yaml", "yml": "yaml",
    "toml": "toml", "ini": "ini", "xml": "xml", "html": "html", "css": "css", "scss": "scss",
    "bash": "sh", "sh": "sh", "shell": "sh", "zsh": "zsh", "fish": "fish", "console": "sh",
    "powershell": "ps1", "ps1": "ps1", "bat": "bat", "c": "c", "h": "h", "cpp": "cpp",
    "c++": "cpp", "cxx": "cpp", "hpp": "hpp", "cs": "cs", "csharp": "cs", "java": "java",
    "kotlin": "kt", "kt": "kt", "scala": "scala", "go": "go", "golang": "go", "rust": "rs",
    "rs": "rs", "ruby": "rb", "rb": "rb", "php": "php", "perl": "pl", "lua": "lua",
    "r": "r", "julia": "jl", "swift": "swift", "sql": "sql", "haskell": "hs", "hs": "hs",
    "elixir": "ex", "erlang": "erl", "clojure": "clj", "dart": "dart", "zig": "zig",
    "markdown": "md", "md": "md", "latex": "tex", "tex": "tex", "dockerfile": "dockerfile",
    "makefile": "mk", "make": "mk", "cmake": "cmake", "diff": "diff", "patch": "diff",
    "csv": "csv", "text": "txt", "txt": "txt", "plaintext": "txt",
}
_LANGUAGE = re.compile(r"[A-Za-z0-9_+#.-]{1,30}")


def extension_for(language: str) -> str:
    """The file extension (no dot) for a fence's language; "txt" when unknown."""
    return _EXTENSIONS.get(language.lower(), "txt")


@dataclass(frozen=True)
class CodeBlock:
    """A code block of a reply: its language (from the fence info, may be "") and code."""

    language: str
    code: str

    @property
    def title(self) -> str:
        first = next((line.strip() for line in self.code.splitlines() if line.strip()), "")
        lang = self.language or "text"
        lines = self.code.count("\n") + (0 if self.code.endswith("\n") else 1)
        return f"{lang}, {lines} line{'s' if lines != 1 else ''}: {first[:50]}"

    @property
    def extension(self) -> str:
        return extension_for(self.language)


def code_blocks(markdown: str) -> list[CodeBlock]:
    """Code blocks of a Markdown text in the order the transcript shows them (an unclosed
    fence runs to the end, as the widget renders it)."""
    from markdown_it import MarkdownIt  # ~60 ms to import: only when a reply is copied

    blocks: list[CodeBlock] = []
    for token in MarkdownIt("gfm-like").parse(clean(markdown)):
        if token.type not in ("fence", "code_block"):
            continue
        info = token.info.strip().split(maxsplit=1)
        language = info[0] if info and _LANGUAGE.fullmatch(info[0]) else ""
        blocks.append(CodeBlock(language, token.content))
    return blocks
