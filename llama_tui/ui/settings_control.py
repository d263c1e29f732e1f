"""Settings changes (`/set`, the panel, presets) and remembering the user's own, field by field.

Only a field the user changed here, in the panel or with `/set` / `/system`, is remembered
for the next launch, with the value they chose: values that came from flags, the
environment, ``.env`` or a resumed session (`/set session`) are used but never written.
A field set back to what config.toml (or, without one, the model) gives is forgotten rather
than remembered. `/set forget KEY|all` drops remembered values and goes back to the file's.
Settings are validated before they are applied and written only when valid.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llama_tui.chat.state import params_for_model
from llama_tui.config.values import show
from llama_tui.core.params import PARAM_BY_NAME, GenerationParams, InvalidValue, lookup
from llama_tui.text import clean
from llama_tui.ui.params_form import (
    PRESETS,
    apply_setting,
    format_value,
    overrides,
    preset_params,
)

if TYPE_CHECKING:
    from llama_tui.config.settings import LoadedSettings
    from llama_tui.session.transcript import Conversation
    from llama_tui.ui.app import LlamaTuiApp
    from llama_tui.ui.widgets.settings_panel import SettingsPanel

_FORGET_USAGE = "/set forget KEY (a setting or system_prompt) or /set forget all"


class SettingsControl:
    """The settings in use, for the whole app: `/set`, `/system`, the panel's changes, and
    the remembered settings. The values in use are the chat state's `params` and
    `system_prompt` (what a reply reads); this is their only writer."""

    def __init__(self, app: LlamaTuiApp) -> None:
        self.app = app
        loaded = app.loaded
        self.defaults = GenerationParams()  # the model's own, once one is loaded
        # Fields the user chose (config, remembered, flags, panel, /set): they survive a
        # model switch; the others follow the new model's generation_config.
        self.user_fields = {
            name for name in GenerationParams.field_names()
            if loaded.sources.get(name, "default") != "default"
        }
        # Remembering settings is per field: `yours` are the fields whose value in use is the
        # user's own (remembered, or changed in the panel / with /set here); `unsaved` those
        # changed here and not yet written. Flags, env and resumed values are never in them.
        self.yours = {k for k, src in loaded.sources.items() if src.startswith("remembered:")}
        self.unsaved: set[str] = set()

    # -- what the settings are read from and shown in ------------------------------------

    @property
    def params(self) -> GenerationParams:
        return self.app.chat_state.params

    @property
    def system_prompt(self) -> str:
        return self.app.chat_state.system_prompt

    @property
    def loaded(self) -> LoadedSettings:
        return self.app.loaded

    @property
    def conversation(self) -> Conversation:
        return self.app.chat_state.conversation

    @property
    def context_length(self) -> int | None:
        return self.app.model.context_length

    @property
    def panel(self) -> SettingsPanel:
        return self.app.chat.panel

    def say(self, text: str, *, severity: str = "information", timeout: float = 5) -> None:
        self.app.say(text, severity=severity, timeout=timeout)

    async def note(self, text: str, *, title: str = "", variant: str = "info") -> None:
        await self.app.chat.note(text, title=title, variant=variant)

    def show_in_panel(self) -> None:
        self.panel.load(self.params, self.defaults, self.system_prompt, self.context_length)

    # -- changes -----------------------------------------------------------------------

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

    async def set_command(self, arg: str) -> None:
        """`/set`: list, change, preset, session, forget."""
        key, _, value = arg.partition(" ")
        if key == "preset":
            try:
                new = preset_params(value, self.params, self.defaults)
            except InvalidValue as e:
                await self.note(f"/set preset: {e}. Nothing was changed.", variant="warning")
                return
            self.apply_params(new, self.system_prompt)
            self.remember_settings()
            self.show_in_panel()
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
            self.show_in_panel()
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
        # Written now, not at the next reply: a typed command is a decision, and a crash or a
        # second instance must not lose it.
        self.apply_params(new, self.system_prompt)
        self.remember_settings()
        self.show_in_panel()
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
        self.show_in_panel()
        now = ", ".join(f"{k} {show(self._value(k))}" for k in mine)
        self.say(f"Forgot your {name if name != 'all' else 'remembered settings'}"
                 + (f"; now {now}." if now else "."))

    def apply_params(self, params: Any, system_prompt: str, *, remember: bool = True) -> None:
        """Use these settings from the next reply; `remember`: they are the user's choice."""
        old, new = self.params.to_dict(), params.to_dict()
        changed = {k for k in new if new[k] != old[k]}
        if system_prompt != self.system_prompt:
            changed.add("system_prompt")
        state = self.app.chat_state
        state.params, state.system_prompt = params, system_prompt
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

    async def system_command(self, arg: str) -> None:
        """`/system TEXT` sets the system prompt, `/system -` clears it, bare shows it."""
        if not arg:
            current = self.system_prompt or "(none: the model's template may add its own)"
            await self.note(f"System prompt: {current}\nSet it with /system TEXT; /system - "
                            "clears it.")
            return
        self.apply_params(self.params, "" if arg == "-" else arg)
        self.remember_settings()
        self.show_in_panel()
        self.say("System prompt set; it applies from the next reply.")

    def model_defaults(self, defaults: GenerationParams) -> None:
        """A model loaded: its defaults, with the user's own choices (config, remembered,
        flags) on top. A user value that does not fit this model (e.g. max_new_tokens
        above its context) is dropped with a note rather than used."""
        self.defaults = defaults
        params, warnings = params_for_model(defaults, self.params, self.user_fields,
                                            self.context_length)
        for warning in warnings:
            self.say(warning, severity="warning")
        self.app.chat_state.params = params
        self.show_in_panel()

    def use_session_prompt(self, system_prompt: str) -> None:
        """A saved session was opened: its system prompt is used, never remembered; the
        user's own pending changes are written first."""
        self.remember_settings()
        self.apply_params(self.params, system_prompt, remember=False)
        self.show_in_panel()

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
