"""Pick a model to load: type a spec or choose one already in the local cache.

Shown after a failed load (with its cause and fix) and on F4 / `/model` with no argument.
The cache scan runs in a thread worker so the dialog paints at once; nothing here touches
the network. Repo ids and folder names from disk are untrusted and shown cleaned, as plain
text.
"""

from __future__ import annotations

from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from llama_tui.text import clean


def cached_models() -> list[str]:
    """Model repo ids in the Hugging Face cache (offline, ~0.1 s), newest first."""
    try:
        from huggingface_hub import scan_cache_dir

        repos = [r for r in scan_cache_dir().repos if r.repo_type == "model"]
    except Exception:  # no cache dir, unreadable cache: just offer typing a spec
        return []
    repos.sort(key=lambda r: r.last_modified, reverse=True)
    return [r.repo_id for r in repos]


class ModelPickerScreen(ModalScreen[str | None]):
    """Dismisses with the chosen spec, or None."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, *, error: str = "", current: str = "") -> None:
        super().__init__(classes="dialog-screen")
        self.error = error
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog picker") as box:
            box.border_title = "Load a model"
            if self.error:
                yield Static(clean(self.error), markup=False, classes="dialog-error")
            yield Static(
                "Repo id (org/name[@rev]), a local folder, a .gguf file, or demo:",
                markup=False,
            )
            yield Input(value=clean(self.current), id="spec", compact=True)
            yield OptionList(
                Option("demo  (bundled SmolLM2-135M)", id="demo"), id="cached", markup=False
            )

    def on_mount(self) -> None:
        self.query_one("#spec", Input).focus()
        self._scan()

    @work(thread=True, exclusive=True, exit_on_error=False, group="scan")
    def _scan(self) -> None:
        names = cached_models()
        self.app.call_from_thread(self._show, names)  # once per dialog, not per token

    def _show(self, names: list[str]) -> None:
        options = self.query_one("#cached", OptionList)
        for name in names:
            options.add_option(Option(clean(name), id=f"repo:{name}"))

    @on(Input.Submitted, "#spec")
    def _typed(self, event: Input.Submitted) -> None:
        spec = event.value.strip()
        if spec:
            self.dismiss(spec)

    @on(OptionList.OptionSelected, "#cached")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        oid = event.option.id or ""
        self.dismiss("demo" if oid == "demo" else oid.removeprefix("repo:"))
