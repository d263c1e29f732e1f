"""The settings side panel: every generation setting, validated as the user types.

It starts from the model's own defaults (`Backend.default_params()`) plus the user's saved
overrides; fields that differ from the model defaults are highlighted and show the default.
Each change is parsed and checked with `GenerationParams.problems`; only a fully valid set is
posted (`SettingsPanel.Applied`), so the app never uses or remembers an invalid value.
Changes apply from the next reply; the conversation is kept. A field whose value is the
user's own (remembered, or changed here) over a different config.toml value says so, with
the command that goes back to the file's value. Closing the panel with an invalid field puts
the value in use back (`revert_invalid`); the app tells the user which.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Button, Checkbox, Input, Label, Static, TextArea

from llama_tui.core.params import GenerationParams, ParamField
from llama_tui.text import clean
from llama_tui.ui.params_form import (
    CHECKBOXES,
    FIELD_BY_NAME,
    FIELDS,
    PRESETS,
    build_params,
    format_value,
    overrides,
    preset_params,
)
from llama_tui.ui.widgets.ordered_input import OrderedInput, OrderedTextArea

# The fields' rules, read when the panel is first built (it is hidden until F2): app.tcss,
# parsed before the first paint, keeps only the panel's place in the layout.
PANEL_CSS = Path(__file__).resolve().parent.parent / "settings_panel.tcss"


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
        self.shown_system = ("", "")  # (the text shown, the prompt it stands for)
        self.context_length: int | None = None
        self.problems: dict[str, str] = {}
        self.file_values: dict[str, Any] = {}  # config.toml's values
        self.yours: set[str] = set()  # fields holding the user's own value
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
        _read_css(self, PANEL_CSS)
        presets = [
            Button(name.capitalize(), id=f"sp-preset-{name}", compact=True, tooltip=what,
                   classes="sp-preset")
            for name, what in PRESETS.items()
        ]
        widgets: list[Widget] = [
            Horizontal(*presets, id="sp-presets"),
            *(Checkbox(f.label, id=_box_id(f), compact=True, tooltip=f.help) for f in CHECKBOXES),
        ]
        for f in FIELDS:
            widgets.append(Horizontal(
                Label(f.label, classes="sp-label"),
                OrderedInput(id=f"sp-{f.name}", compact=True, tooltip=f.help),
                classes="sp-row", id=f"sp-row-{f.name}",
            ))
            widgets.append(Static("", markup=False, classes="sp-reason", id=f"sp-why-{f.name}"))
        widgets += [
            Label("System prompt", classes="sp-label sp-system-label"),
            Static("", markup=False, classes="sp-reason", id="sp-why-system_prompt"),
            OrderedTextArea(id="sp-system", compact=True, soft_wrap=True, tab_behavior="focus"),
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
        self.shown_system = (clean(system_prompt), system_prompt)
        self.problems = {}
        if not self.built:
            return
        with self.prevent(Input.Changed, Checkbox.Changed, TextArea.Changed):
            for f in CHECKBOXES:
                self._box(f).value = getattr(params, f.name) != bool(f.inverse)
            for f in FIELDS:
                self.query_one(f"#sp-{f.name}", Input).value = format_value(
                    f.name, getattr(params, f.name)
                )
            self.query_one("#sp-system", TextArea).load_text(self.shown_system[0])
        self._show_marks()

    def show_origins(self, file_values: dict[str, Any], yours: set[str]) -> None:
        """Which fields hold the user's own value, and config.toml's values (for the marks)."""
        self.file_values, self.yours = dict(file_values), set(yours)
        if self.built:
            self._show_marks()

    def revert_invalid(self) -> list[str]:
        """Put the values in use back into invalid fields; one line per field put back."""
        if not self.built or not self.problems:
            return []
        texts, lines = self.texts(), []
        with self.prevent(Input.Changed):
            for name, reason in self.problems.items():
                if name not in FIELD_BY_NAME:
                    lines.append(f"{name} {reason}")
                    continue
                kept = format_value(name, getattr(self.params, name))
                lines.append(f"{name}: {clean(texts[name])!r} {reason}; kept {kept or 'none'}")
                self.set_field(name, kept)
        self.validate_now()
        if self.problems:  # a problem between fields: everything back to the values in use
            self.load(self.params, self.defaults, self.system_prompt, self.context_length)
        return lines

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
        flags = {f.name: self._box(f).value != bool(f.inverse) for f in CHECKBOXES}
        params, problems = build_params(self.params, self.texts(), flags, self.context_length)
        text = self.query_one("#sp-system", TextArea).text
        # The prompt shown is sanitised: unless edited, it stands for the prompt in use.
        system = self.shown_system[1] if text == self.shown_system[0] else text
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
        """A preset over the current values (raises InvalidValue for an unknown name)."""
        params = preset_params(name, self.params, self.defaults)
        self.load(params, self.defaults, self.system_prompt, self.context_length)
        self.post_message(self.Applied(params, self.system_prompt))

    @on(Button.Pressed, "#sp-reset")
    def reset(self) -> None:
        """Back to the model's defaults (the system prompt is kept)."""
        self.load(self.defaults, self.defaults, self.system_prompt, self.context_length)
        self.post_message(self.Applied(self.defaults, self.system_prompt))

    def _show_marks(self) -> None:
        # Reasons for invalid fields; the user's own value over config.toml's, or "model
        # default X" for overridden ones; nothing otherwise.
        changed = overrides(self.params, self.defaults)
        over_file = {k for k in self.yours if k in self.file_values
                     and self.file_values[k] != self._value(k)}
        self.set_class(bool(self.problems), "-invalid")
        for f in CHECKBOXES:
            box = self._box(f)
            box.set_class(f.name in changed or f.name in over_file, "-override")
            # Textual's compact checkbox draws its "X" on and off alike, telling the state
            # only by colour ("▐X▌ Greedy: off" read as checked): the X only when on, and
            # the state in words too. An inverse box off means its field is on (sampling).
            box.BUTTON_INNER = "X" if box.value else " "
            off = "off (sampling)" if f.inverse and f.sampling else "off"
            box.label = f"{f.label}: {'on' if box.value else off}"
        for f in FIELDS:
            row = self.query_one(f"#sp-row-{f.name}", Horizontal)
            why = self.query_one(f"#sp-why-{f.name}", Static)
            reason = self.problems.get(f.name)
            is_override = (f.name in changed or f.name in over_file) and not reason
            row.set_class(bool(reason), "-invalid")
            row.set_class(is_override, "-override")
            why.set_class(bool(reason), "-invalid")
            if reason:
                why.update(f"✗ {reason}")
            elif f.name in over_file:
                file = format_value(f.name, self.file_values[f.name]) or "none"
                why.update(f"yours over config.toml's {file} · /set forget {f.name}")
            elif is_override:
                default = format_value(f.name, getattr(self.defaults, f.name)) or "none"
                why.update(f"model default: {default}")
            else:
                why.update("")
            why.display = bool(reason or is_override)
        why = self.query_one("#sp-why-system_prompt", Static)
        why.update("yours over config.toml's · /set forget system_prompt")
        why.display = "system_prompt" in over_file

    def _value(self, key: str) -> Any:
        return self.system_prompt if key == "system_prompt" else getattr(self.params, key, None)

    def _box(self, f: ParamField) -> Checkbox:
        return self.query_one(f"#{_box_id(f)}", Checkbox)


def _read_css(widget: Widget, path: Path) -> None:
    """Add a stylesheet to the app the first time a widget needs it and restyle, as Textual
    does for a Screen's CSS_PATH when the screen is first shown."""
    sheet = widget.app.stylesheet
    if not sheet.has_source(str(path), ""):
        sheet.read(path)
        sheet.reparse()
        sheet.update(widget.app)


def _box_id(f: ParamField) -> str:
    """A boolean field's checkbox, named after what it shows: ``sp-greedy``."""
    return f"sp-{f.inverse or f.name}"
