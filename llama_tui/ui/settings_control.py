"""Settings changes (`/set`, the panel, presets) and remembering the user's own, field by field.

Only a field the user changed here, in the panel or with `/set` / `/system`, is remembered
for the next launch, with the value they chose: values that came from flags, the
environment, ``.env`` or a resumed session (`/set session`) are used but never written.
A field set back to what config.toml (or, without one, the model) gives is forgotten rather
than remembered. `/set forget KEY|all` drops remembered values and goes back to the file's.
Settings are validated before they are applied and written only when valid.
"""

from __future__ import annotations

from typing import Any

from textual import on

from llama_tui.config.values import show
from llama_tui.core.params import PARAM_BY_NAME, InvalidValue, lookup
from llama_tui.text import clean
from llama_tui.ui.chat_control import ChatControl
from llama_tui.ui.params_form import (
    PRESETS,
    apply_setting,
    format_value,
    overrides,
    preset_params,
)
from llama_tui.ui.widgets.settings_panel import SettingsPanel

_FORGET_USAGE = "/set forget KEY (a setting or system_prompt) or /set forget all"


class SettingsControl(ChatControl):
    """`/set`, the panel's changes, and the remembered settings."""

    def session_settings(self) -> tuple[Any, list[str]]:
        """The resumed session's recorded settings over the current ones: (params, changed).

        The values come from a file: each goes through the same checks as `/set KEY VALUE`,
        and one that fails is skipped.
        """
        new = self.params
        changed: list[str] = []
        recorded = self.conversation.settings
        for key, value in (recorded.items() if isinstance(recorded, dict) else ()):
            if key not in PARAM_BY_NAME:
                continue
            if key == "stop" and not (
                isinstance(value, list) and all(isinstance(v, str) for v in value)
            ):
                continue
            try:
                text = format_value(key, value)
                candidate = apply_setting(new, key, text, self.context_length)
            except (TypeError, ValueError):  # InvalidValue is a ValueError
                continue
            if candidate != new:
                new = candidate
                changed.append(key)
        return new, changed

    async def cmd_set(self, arg: str) -> None:
        key, _, value = arg.partition(" ")
        if key == "preset":
            try:
                new = preset_params(value, self.params, self.defaults)
            except InvalidValue as e:
                await self.note(f"/set preset: {e}. Nothing was changed.", variant="warning")
                return
            self.apply_params(new, self.system_prompt)
            self.panel.load(self.params, self.defaults, self.system_prompt, self.context_length)
            self.say(f"Preset {value.strip().lower()}: {PRESETS[value.strip().lower()]}. "
                     "Applies from the next reply.")
            return
        if key == "session":
            new, changed = self.session_settings()
            if not changed:
                self.say("The settings already match the session's.")
                return
            # The session's values are for this conversation: used, never remembered. The
            # user's own pending changes are written first, before these replace them.
            self.remember_settings()
            self.apply_params(new, self.system_prompt, remember=False)
            self.panel.load(self.params, self.defaults, self.system_prompt, self.context_length)
            self.say(f"Using the session's {', '.join(changed)} from the next reply.")
            return
        if key == "forget":
            await self.forget_settings(value.strip())
            return
        if not key:
            await self.note(self.settings_listing(), title="settings")
            return
        try:
            new = apply_setting(self.params, key, value, self.context_length)
        except InvalidValue as e:
            # "top_p must be in (0, 1]" names the key already; "must be a number" does not.
            reason = str(e)
            said = reason if reason.startswith(f"{key.lower()} ") else f"{key}: {reason}"
            await self.note(f"/set {said}. Nothing was changed.", variant="warning")
            return
        self.apply_params(new, self.system_prompt)
        self.panel.load(self.params, self.defaults, self.system_prompt, self.context_length)
        overridden = overrides(new, self.defaults)
        shown = ", ".join(f"{k}={format_value(k, getattr(new, k))}" if k != "do_sample"
                          else f"greedy={not new.do_sample}" for k in sorted(overridden))
        self.say(f"Applies from the next reply. Overrides: {shown or 'none'}.")

    def settings_listing(self) -> str:
        """`/set` alone: every setting in use, and which are the user's own over config.toml."""
        files = self.loaded.file_values
        values: dict[str, Any] = {**self.params.to_dict(), "system_prompt": self.system_prompt}
        lines = []
        for k, v in values.items():
            mark = ""
            if k in self.yours:
                mark = "  (yours" + (f"; config.toml: {show(files[k])}; /set forget {k})"
                                     if k in files and files[k] != self._value(k) else ")")
            lines.append(f"{k} = {show(v)}{mark}")
        return "\n".join(lines) + "\nChange one with /set KEY VALUE; /set forget KEY undoes yours."

    async def forget_settings(self, what: str) -> None:
        """`/set forget KEY|all`: drop remembered values; use what the files and flags give."""
        from llama_tui.config.remembered import REMEMBERED_KEYS, update_remembered
        from llama_tui.config.settings import config_file_values

        found = lookup(what)
        name = found[0].name if found else what.strip().lower()
        if name != "all" and name not in REMEMBERED_KEYS:
            await self.note(f"/set forget: unknown setting {clean(what)!r}; {_FORGET_USAGE}.",
                            variant="warning")
            return
        keys = list(REMEMBERED_KEYS) if name == "all" else [name]
        try:
            files = config_file_values(self.loaded.config_path)
            update_remembered(dict.fromkeys(keys), files)
        except (OSError, ValueError) as e:
            self.say(f"Could not forget the settings: {e}", severity="warning", timeout=10)
            return
        self.loaded.file_values = files
        mine = [k for k in keys if k in self.yours]
        below = {k: self._value_below(k, files) for k in mine}
        params = self.params.with_changes(**{k: v for k, v in below.items()
                                             if k != "system_prompt"})
        system = below.get("system_prompt", self.system_prompt)
        if params.problems(self.context_length):
            params = self.params  # the values below do not fit together here: keep these
        self.apply_params(params, system, remember=False)
        self.yours -= set(keys)
        self.unsaved -= set(keys)
        self._show_origins()
        self.panel.load(self.params, self.defaults, self.system_prompt, self.context_length)
        now = ", ".join(f"{k} {show(self._value(k))}" for k in mine)
        self.say(f"Forgot your {name if name != 'all' else 'remembered settings'}"
                 + (f"; now {now}." if now else "."))

    @on(SettingsPanel.Applied)
    def _panel_applied(self, event: SettingsPanel.Applied) -> None:
        self.apply_params(event.params, event.system_prompt)

    def apply_params(self, params: Any, system_prompt: str, *, remember: bool = True) -> None:
        """Use these settings from the next reply; `remember`: they are the user's choice."""
        old, new = self.params.to_dict(), params.to_dict()
        changed = {k for k in new if new[k] != old[k]}
        if system_prompt != self.system_prompt:
            changed.add("system_prompt")
        self.params, self.system_prompt = params, system_prompt
        self.user_fields = overrides(params, self.defaults)
        if remember:
            self.yours |= changed
            self.unsaved |= changed
        else:
            self.yours -= changed
            self.unsaved -= changed
        self._show_origins()

    def remember_settings(self) -> None:
        """Write the fields the user changed since the last write (valid values only)."""
        if not self.unsaved or self.params.problems(self.context_length):
            return  # nothing new, or never persist an invalid value
        from llama_tui.config.remembered import base_entry, update_remembered
        from llama_tui.config.settings import config_file_values

        done = set(self.unsaved)
        try:
            files = config_file_values(self.loaded.config_path)
            changes = {}
            for k in done:
                value = self._value(k)
                below = files[k] if k in files else self._fallback(k)
                changes[k] = None if value == below else base_entry(k, value, files)
            update_remembered(changes, files)
        except (OSError, ValueError) as e:
            self.say(f"Could not remember the settings: {e}", severity="warning")
            return
        self.unsaved -= done
        self.loaded.file_values = files
        self._show_origins()

    async def settings_closed(self) -> None:
        """The panel closed: an invalid field gets the value in use back, and the user is told."""
        lines = self.panel.revert_invalid()
        if lines:
            panel = self.panel
            if (panel.params, panel.system_prompt) != (self.params, self.system_prompt):
                self.apply_params(panel.params, panel.system_prompt)
            await self.note("\n".join(lines), title="not applied: invalid", variant="warning")
        self.remember_settings()

    async def settings_startup(self) -> None:
        """Once at startup: notes about remembered settings; drop stale ones, convert old files."""
        from llama_tui.config.remembered import update_remembered
        from llama_tui.config.settings import config_file_values

        loaded = self.loaded
        if self.system_prompt != loaded.settings.system_prompt:
            self.yours.discard("system_prompt")  # a resumed conversation's own prompt
        # Warnings are toasts too (app.py); here they stay in view with the notes.
        notes = [*loaded.warnings, *loaded.notes]
        if loaded.remembered.needs_write:
            try:
                update_remembered({}, config_file_values(loaded.config_path))
            except (OSError, ValueError) as e:
                notes.append(f"Could not update the remembered settings: {e}")
        if notes:
            variant = "warning" if loaded.warnings or loaded.remembered.stale else "info"
            await self.note("\n".join(notes), title="settings", variant=variant)
        self._show_origins()

    # -- helpers -------------------------------------------------------------------------

    def _value(self, key: str) -> Any:
        return self.system_prompt if key == "system_prompt" else getattr(self.params, key)

    def _fallback(self, key: str) -> Any:
        """The value without config.toml or remembered values: the model's default."""
        return "" if key == "system_prompt" else getattr(self.defaults, key)

    def _value_below(self, key: str, files: dict[str, Any]) -> Any:
        """The value `key` takes without the user's own: a flag's or env's, else the file's."""
        source = self.loaded.sources.get(key, "default")
        if source not in ("default", "config") and not source.startswith(
            ("remembered:", "config:")
        ):
            s = self.loaded.settings
            return s.system_prompt if key == "system_prompt" else getattr(s.params, key)
        return files[key] if key in files else self._fallback(key)

    def _show_origins(self) -> None:
        self.panel.show_origins(self.loaded.file_values, self.yours)
