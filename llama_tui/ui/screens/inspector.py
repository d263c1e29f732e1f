"""The token inspector: one reply token by token, how sure the model was of each, and the
alternatives it weighed; Enter on an alternative continues the reply from it as a new branch.

Opened by `/inspect [N]` and F8 (`ui.inspect_control`). Left / right (or h / l) move the
cursor token by token, Home / End to the ends, n / p to the next / previous token below 20%;
up / down choose among the alternatives on the right, Enter continues from the chosen one;
Esc closes. The drawing rules (shading, underline, marks) are `ui.token_view`'s.

Dismisses with a `ForkRequest` (the reply's id and the text to keep: the tokens before the
cursor and the chosen alternative), or None.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from llama_tui.core.tokens import TokenLog
from llama_tui.ui import token_view as tv

# What the shading and the numbers mean (token_view, core.tokens), beside the list.
LEGEND = (
    "darker shade: less sure\n"
    "underline < 20% · bold < 5%\n"
    "p: the model's own, before\n"
    "temperature/top-k/p/penalty"
)


@dataclass(frozen=True)
class ForkRequest:
    """Continue reply `message_id` from `prefix` (kept tokens + the alternative)."""

    message_id: str
    prefix: str


class TokenText(Widget):
    """The reply, token by token, with the cursor; scrolls itself to keep it in view."""

    DEFAULT_CSS = """
    TokenText { height: 1fr; width: 1fr; padding: 0 1; }
    """

    def __init__(self, log: TokenLog) -> None:
        super().__init__(id="token-text")
        self.token_log = log
        self.cursor = 0
        self._top = 0

    def render(self) -> Text:
        tokens = self.token_log.tokens
        if not tokens:
            return Text("")
        width, height = self.content_size.width, self.content_size.height
        lines = tv.layout(tokens, width)
        self._top = tv.scroll_top(lines, self.cursor, self._top, max(height, 1))
        return tv.render(tokens, lines, self.cursor, self._top, max(height, 1))


class InspectorScreen(ModalScreen[ForkRequest | None]):
    """See the module docstring."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "dismiss(None)", "Close"),
        Binding("left,h", "move(-1)", "Previous token", show=False),
        Binding("right,l", "move(1)", "Next token", show=False),
        # Priority: the focused list of alternatives would take them for its own ends.
        Binding("home", "jump(0)", "First token", show=False, priority=True),
        Binding("end", "jump(-1)", "Last token", show=False, priority=True),
        Binding("n", "unsure(1)", "Next unsure token", show=False),
        Binding("p", "unsure(-1)", "Previous unsure token", show=False),
    ]

    DEFAULT_CSS = """
    InspectorScreen { align: center middle; }
    #inspector { width: 100%; height: 100%; border: round $primary; padding: 0; }
    #inspector-title { height: 1; padding: 0 1; color: $text-muted; }
    #inspector-body { height: 1fr; }
    #inspector-side { width: 32; border-left: solid $primary-darken-2; }
    #inspector-legend { height: 4; padding: 0 1; color: $text-muted; }
    #token-info { height: 4; padding: 0 1; }
    #alternatives { height: 1fr; border: none; padding: 0; }
    #inspector-keys { height: 1; padding: 0 1; color: $text-muted; }
    #inspector-empty { height: 1fr; padding: 1 2; }
    """

    def __init__(
        self,
        message_id: str,
        reply_number: int,
        log: TokenLog | None,
        why_none: str = "",
        lead: str = "",
        skip: int = 0,
    ) -> None:
        super().__init__()
        # The reply's text before its first recorded token (a reply continued from an
        # alternative records the tokens it generated, after the text it was given).
        self.lead = lead
        # Characters of the tokens' text that are not in the reply's text: a thought and
        # its markers (kept apart from the answer); no continuing from inside it.
        self.skip = skip
        self.message_id = message_id
        self.reply_number = reply_number
        self.token_log = log if log is not None else TokenLog(0, "generate")
        self.why_none = why_none

    # -- layout ------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Vertical(id="inspector") as box:
            box.border_title = f"Tokens of reply {self.reply_number}"
            yield Static(self._title(), id="inspector-title", markup=False)
            if not self.token_log.tokens:
                yield Static(self._empty_text(), id="inspector-empty", markup=False)
                yield Static("Esc: close", id="inspector-keys", markup=False)
                return
            with Horizontal(id="inspector-body"):
                yield TokenText(self.token_log)
                with Vertical(id="inspector-side"):
                    yield Static("", id="token-info", markup=False)
                    yield OptionList(id="alternatives", markup=False)
                    yield Static(LEGEND, id="inspector-legend", markup=False)
            yield Static(
                "←→ token · n/p unsure · ↑↓ pick · Enter: continue from it · Esc",
                id="inspector-keys",
                markup=False,
            )

    def on_mount(self) -> None:
        if self.token_log.tokens:
            self._show_token()
            self.query_one("#alternatives", OptionList).focus()

    def _title(self) -> str:
        summary = self.token_log.summary()
        if summary is None:
            return "no token probabilities"
        mean, low = summary
        n = len(self.token_log.tokens)
        where = " · from the server" if self.token_log.source == "remote" else ""
        return (
            f"{n} token{'s' if n != 1 else ''} · probability mean {tv.percent_of(mean)}, "
            f"min {tv.percent_of(low)}{where}"
        )

    def _empty_text(self) -> str:
        why = self.why_none or self.token_log.unavailable or "none were recorded for it"
        return (
            f"This reply has no token probabilities: {why}.\n\n"
            "Replies record them while the setting logprobs (/set logprobs 5, "
            "--logprobs 5) is above 0; a remote server must support them."
        )

    # -- the cursor --------------------------------------------------------------------

    @property
    def cursor(self) -> int:
        return self.query_one(TokenText).cursor

    def _set_cursor(self, index: int) -> None:
        view = self.query_one(TokenText)
        view.cursor = max(0, min(index, len(self.token_log.tokens) - 1))
        view.refresh()
        self._show_token()

    def action_move(self, step: int) -> None:
        if self.token_log.tokens:
            self._set_cursor(self.cursor + step)

    def action_jump(self, where: int) -> None:
        if self.token_log.tokens:
            self._set_cursor(where if where >= 0 else len(self.token_log.tokens) - 1)

    def action_unsure(self, step: int) -> None:
        """The next (step 1) or previous (-1) token below `token_view.LOW`."""
        tokens = self.token_log.tokens
        i = self.cursor + step
        while 0 <= i < len(tokens):
            if tokens[i].prob < tv.LOW:
                self._set_cursor(i)
                return
            i += step
        self.app.bell()

    def _show_token(self) -> None:
        tok = self.token_log.tokens[self.cursor]
        ident = f" id {tok.id}" if tok.id is not None else ""
        lines = [
            f"token {self.cursor + 1}/{len(self.token_log.tokens)}{ident}",
            tv.quoted(tok.text)[:30],
            f"p {tv.percent(tok.logprob)}"
            + (
                f" · sampled {tv.percent(tok.sampled_logprob)}"
                if tok.sampled_logprob is not None
                else ""
            ),
        ]
        if tok.top and all(c.id != tok.id or c.text != tok.text for c in tok.top):
            lines.append(f"(not in the top {len(tok.top)})")
        self.query_one("#token-info", Static).update("\n".join(lines))
        options = self.query_one("#alternatives", OptionList)
        options.clear_options()
        options.add_options(
            [
                Option(tv.alternative_label(c, c.id == tok.id and c.text == tok.text), id=str(i))
                for i, c in enumerate(tok.top)
            ]
        )
        if tok.top:
            options.highlighted = 0

    # -- continuing from an alternative ------------------------------------------------

    @on(OptionList.OptionSelected, "#alternatives")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        tok = self.token_log.tokens[self.cursor]
        choice = tok.top[int(event.option.id or 0)]
        kept = "".join(t.text for t in self.token_log.tokens[: self.cursor])
        if len(kept) < self.skip:
            self.app.notify(
                "This token is in the reply's thinking: continuing from there is "
                "not possible. Pick a token of the answer.",
                severity="warning",
            )
            return
        self.dismiss(ForkRequest(self.message_id, self.lead + kept[self.skip :] + choice.text))
