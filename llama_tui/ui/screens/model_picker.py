"""Pick a model to load: type a spec or choose one already in the local cache, or, with a
server, one of the models the server serves.

Shown after a failed load (with its cause and fix) and on F4 / `/model` with no argument.
The list is read in a thread worker so the dialog paints at once: the local cache (nothing
touches the network), or the server's model list (`served`, which asks the server). Repo
ids, folder names and served names are untrusted and shown cleaned, as plain text.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from llama_tui.text import clean
from llama_tui.ui.screens import DIALOG_CSS
from llama_tui.ui.widgets.ordered_input import OrderedInput

log = logging.getLogger(__name__)


def cached_models() -> list[str]:
    """Model repo ids in the Hugging Face cache (offline, ~0.1 s), newest first."""
    from llama_tui.engine.loading.hub import cached_models as scan

    try:
        return [m.repo_id for m in scan()]
    except Exception:  # an unreadable cache: just offer typing a spec
        return []


class ModelPickerScreen(ModalScreen[str | None]):
    """Dismisses with the chosen spec, or None."""

    CSS_PATH = DIALOG_CSS
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, *, error: str = "", current: str = "",
                 served: Callable[[], list[str]] | None = None) -> None:
        super().__init__(classes="dialog-screen")
        self.error = error
        self.current = current
        self.served = served  # with a server: asks it for its models (in a thread)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog picker") as box:
            box.border_title = "Load a model"
            if self.error:
                yield Static(clean(self.error), markup=False, classes="dialog-error")
            if self.served is not None:
                yield Static("A model the server serves:", markup=False)
            else:
                yield Static(
                    "Repo id (org/name[@rev]), a local folder, a .gguf file, or demo:",
                    markup=False,
                )
            yield OrderedInput(value=clean(self.current), id="spec", compact=True)
            demo = [] if self.served is not None else [
                Option("demo  (bundled SmolLM2-135M)", id="demo")]
            yield OptionList(*demo, id="cached", markup=False)

    def on_mount(self) -> None:
        self.query_one("#spec", Input).focus()
        self._scan()

    @work(thread=True, exclusive=True, exit_on_error=False, group="scan")
    def _scan(self) -> None:
        if self.served is None:
            names = cached_models()
        else:
            try:
                names = self.served()
            except Exception:  # the server is unreachable: typing a name still works
                log.warning("listing the server's models failed", exc_info=True)
                names = []
        self.app.call_from_thread(self._show, names)  # once per dialog, not per token

    def _show(self, names: list[str]) -> None:
        options = self.query_one("#cached", OptionList)
        for name in names:
            options.add_option(Option(clean(name), id=f"repo:{name}"))

    def offered(self) -> list[str]:
        """The models listed to choose from, as they would be loaded."""
        options = self.query_one("#cached", OptionList)
        return [_spec(options.get_option_at_index(i).id or "")
                for i in range(options.option_count)]

    @on(Input.Submitted, "#spec")
    def _typed(self, event: Input.Submitted) -> None:
        spec = event.value.strip()
        if spec:
            self.dismiss(spec)

    @on(OptionList.OptionSelected, "#cached")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(_spec(event.option.id or ""))


def _spec(option_id: str) -> str:
    return "demo" if option_id == "demo" else option_id.removeprefix("repo:")
