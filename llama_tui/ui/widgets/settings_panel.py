"""The settings side panel: every generation setting, validated as the user types.

It starts from the model's own defaults (`Backend.default_params()`) plus the user's saved
overrides; fields that differ from the model defaults are highlighted and show the default.
Each change is parsed and checked with `GenerationParams.problems`; only a fully valid set is
posted (`SettingsPanel.Applied`), so the app never uses or remembers an invalid value.
Changes apply from the next reply; the conversation is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Button, Checkbox, Input, Label, Static, TextArea

from llama_tui.engine.base import GenerationParams
from llama_tui.text import clean
from llama_tui.ui.params_form import (
    FIELDS,
    PRESETS,
    build_params,
    format_value,
    overrides,
    preset_params,
)


class SettingsPanel(VerticalScroll):
    """Generation settings and the system prompt, for the next reply."""

    @dataclass
    class Applied(Message):
        """A valid set of settings the user just entered."""

        params: GenerationParams
        system_prompt: str

    @dataclass
    class Invalid(Message):
        """The current input has problems ({field: reason}); nothing was applied."""

        problems: dict[str, str]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "Settings · next reply"
        self.defaults = GenerationParams()
        self.params = GenerationParams()
        self.system_prompt = ""
        self.context_length: int | None = None
        self.problems: dict[str, str] = {}
        self.built = False

    def compose(self) -> ComposeResult:
        # Empty until first shown (`build`): styling its ~40 widgets took a third of the
        # time to first paint, for a panel most launches never open.
        yield from ()

    async def build(self) -> None:
        """Create the fields (once) and show the current values."""
        if self.built:
            return
        self.built = True
        presets = [
            Button(name.capitalize(), id=f"sp-preset-{name}", compact=True, tooltip=what,
                   classes="sp-preset")
            for name, what in PRESETS.items()
        ]
        widgets: list[Widget] = [
            Horizontal(*presets, id="sp-presets"),
            Checkbox("Greedy", id="sp-greedy", compact=True),
        ]
        for f in FIELDS:
            widgets.append(Horizontal(
                Label(f.label, classes="sp-label"),
                Input(id=f"sp-{f.name}", compact=True, tooltip=f.help),
                classes="sp-row", id=f"sp-row-{f.name}",
            ))
            widgets.append(Static("", markup=False, classes="sp-reason", id=f"sp-why-{f.name}"))
        widgets += [
            Label("System prompt", classes="sp-label sp-system-label"),
            TextArea(id="sp-system", compact=True, soft_wrap=True, tab_behavior="focus"),
            Button("Reset to model defaults", id="sp-reset", compact=True),
        ]
        await self.mount_all(widgets)
        self.load(self.params, self.defaults, self.system_prompt, self.context_length)

    def load(
        self,
        params: GenerationParams,
        defaults: GenerationParams,
        system_prompt: str,
        context_length: int | None,
    ) -> None:
        """Show `params` (not re-posted: the app already uses them)."""
        self.params, self.defaults = params, defaults
        self.system_prompt, self.context_length = system_prompt, context_length
        self.problems = {}
        if not self.built:
            return
        with self.prevent(Input.Changed, Checkbox.Changed, TextArea.Changed):
            self.query_one("#sp-greedy", Checkbox).value = not params.do_sample
            for f in FIELDS:
                self.query_one(f"#sp-{f.name}", Input).value = format_value(
                    f.name, getattr(params, f.name)
                )
            self.query_one("#sp-system", TextArea).load_text(clean(system_prompt))
        self._show_marks()

    def texts(self) -> dict[str, str]:
        return {f.name: self.query_one(f"#sp-{f.name}", Input).value for f in FIELDS}

    def set_field(self, name: str, text: str) -> None:
        """Type into a field programmatically (tests, `/set` mirroring)."""
        self.query_one(f"#sp-{name}", Input).value = text

    @on(Input.Changed)
    @on(Checkbox.Changed)
    @on(TextArea.Changed)
    def _changed(self, event: Message) -> None:
        event.stop()
        self.validate_now()

    def validate_now(self) -> None:
        do_sample = not self.query_one("#sp-greedy", Checkbox).value
        params, problems = build_params(self.params, self.texts(), do_sample, self.context_length)
        system = self.query_one("#sp-system", TextArea).text
        self.problems = problems
        if params is not None:
            changed = params != self.params or system != self.system_prompt
            self.params, self.system_prompt = params, system
            if changed:
                self.post_message(self.Applied(params, system))
        else:
            self.post_message(self.Invalid(dict(problems)))
        self._show_marks()

    @on(Button.Pressed, ".sp-preset")
    def _preset_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.apply_preset((event.button.id or "").removeprefix("sp-preset-"))

    def apply_preset(self, name: str) -> None:
        """A preset over the current values (raises ParseError for an unknown name)."""
        params = preset_params(name, self.params, self.defaults)
        self.load(params, self.defaults, self.system_prompt, self.context_length)
        self.post_message(self.Applied(params, self.system_prompt))

    @on(Button.Pressed, "#sp-reset")
    def reset(self) -> None:
        """Back to the model's defaults (the system prompt is kept)."""
        self.load(self.defaults, self.defaults, self.system_prompt, self.context_length)
        self.post_message(self.Applied(self.defaults, self.system_prompt))

    def _show_marks(self) -> None:
        # Reasons for invalid fields; "default X" for overridden ones; nothing otherwise.
        changed = overrides(self.params, self.defaults)
        self.set_class(bool(self.problems), "-invalid")
        greedy = self.query_one("#sp-greedy", Checkbox)
        greedy.set_class("do_sample" in changed, "-override")
        # The compact checkbox shows its state only in colour; say it in words too.
        greedy.label = f"Greedy: {'on' if greedy.value else 'off (sampling)'}"
        for f in FIELDS:
            row = self.query_one(f"#sp-row-{f.name}", Horizontal)
            why = self.query_one(f"#sp-why-{f.name}", Static)
            reason = self.problems.get(f.name)
            is_override = f.name in changed and not reason
            row.set_class(bool(reason), "-invalid")
            row.set_class(is_override, "-override")
            why.set_class(bool(reason), "-invalid")
            if reason:
                why.update(f"✗ {reason}")
            elif is_override:
                default = format_value(f.name, getattr(self.defaults, f.name)) or "none"
                why.update(f"model default: {default}")
            else:
                why.update("")
            why.display = bool(reason or is_override)
