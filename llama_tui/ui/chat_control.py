"""One turn of the conversation: prompt -> generation worker -> streamed reply -> stats.

The worker gets an immutable history snapshot, the frozen params and a `threading.Event`
(the engine's StoppingCriteria checks it, so the device stops too). It posts every chunk as a
message; the UI thread appends it to the conversation and to the reply's MarkdownStream
(which batches renders, so typing stays responsive).

Esc finalises the reply at once as "stopped" (partial text kept) and sets the event; chunks
still in flight are ignored. The next generation waits for the previous worker thread to
release `backend_lock`, since a cancelled Textual worker keeps running: cancelling marks it
cancelled but its thread runs on until the engine notices the event.
Only the UI thread mutates the conversation.
"""

from __future__ import annotations

import logging
import threading
import time

from textual import work

from llama_tui.core.backend import Backend, ChatMessage, GenerationStats, StopReason
from llama_tui.core.params import GenerationParams
from llama_tui.session.transcript import Message, MessageStatus
from llama_tui.ui.base import ChatAppBase, Turn
from llama_tui.ui.messages import ReplyChunk, ReplyFinished, ReplyStarted
from llama_tui.ui.model_control import PICK_HINT, describe_error

log = logging.getLogger(__name__)

CONTINUE_HINT = "Ctrl+G or /continue to go on"


def footer_for(
    status: MessageStatus, stats: GenerationStats | None, cause: str | None, fix: str
) -> tuple[str, str]:
    """(footer text, variant) under a finished reply."""
    speed = ""
    if stats is not None and stats.generated_tokens:
        n = stats.generated_tokens
        speed = f"{n} token{'s' if n != 1 else ''}"
        if stats.decode_tokens_per_s:
            speed += f" · {stats.decode_tokens_per_s:.1f} tok/s"
        if stats.ttft_s is not None and stats.prompt_tokens:
            # Prefill apart from decode: with KV reuse only the new part of the prompt runs.
            fresh = max(0, stats.prompt_tokens - stats.reused_prompt_tokens)
            cached = f", {stats.reused_prompt_tokens} cached" if stats.reused_prompt_tokens else ""
            speed += f" · prompt {fresh} new{cached}, first token {stats.ttft_s:.2f} s"
    if status == "error":
        return f"✗ error: {cause or 'generation failed'}" + (f"\n{fix}" if fix else ""), "error"
    if status == "stopped":
        return "■ stopped" + (f" · {speed}" if speed else "") + f" · {CONTINUE_HINT}", "stopped"
    if stats is not None and stats.stop_reason == StopReason.LENGTH:
        return f"… cut off at the length limit · {speed} · {CONTINUE_HINT}", "length"
    return speed, "ok"


class ChatControl(ChatAppBase):
    """Sending prompts and handling the reply stream."""

    async def send_prompt(self, text: str) -> None:
        """Add the user's message and start the reply (or queue it while loading)."""
        if self.generating:
            self.prompt.give_back(text)
            self.say("A reply is being generated. Press Esc to stop it first; your text is kept.",
                     severity="warning")
            return
        if self.backend is None and self.loading_spec is None:
            self.prompt.give_back(text)
            self.say(f"No model is loaded. {PICK_HINT}", severity="error", timeout=8)
            return
        msg = self.conversation.add("user", text)
        self.record("user_message", msg)  # fsynced before generation starts
        self.transcript.show_welcome(False)
        await self.transcript.add_user(text, msg.id)
        if self.backend is None:
            # Decision: a prompt sent while the model loads is queued (one at a time) and
            # sent when the model is ready; typing meanwhile is fine.
            self.queued = True
            await self.note("The model is still loading; this message is sent once it is ready.")
            return
        await self.start_turn()

    async def start_turn(self, *, continuing: bool = False) -> None:
        """Generate a reply to the conversation as it is now (or extend the last one)."""
        backend = self.backend
        if backend is None or self.generating:
            return
        self.sync_settings()
        history = self.conversation.history()
        last = self.conversation.messages[-1] if self.conversation.messages else None
        if continuing and last is not None and last.role == "assistant":
            msg = last
            msg.status = "streaming"
            widget = self.transcript.find_assistant(msg.id)
            if widget is None:
                widget = await self.transcript.add_assistant(msg.content, msg.id)
            widget.set_footer("")
        else:
            continuing = False
            msg = self.conversation.add("assistant", "", status="streaming")
            widget = await self.transcript.add_assistant("", msg.id)
        widget.start_stream()
        self.gen_counter += 1
        self.turn = Turn(self.gen_counter, msg, widget, threading.Event(), time.monotonic(),
                         continuing)
        self.state = "generating"
        self.status.update_facts(state="generating", detail="", ttft_s=None, tokens_per_s=None)
        self.record("assistant_started", msg)
        self._generate_worker(self.turn.gen_id, backend, history, self.params, self.turn.cancel)

    @work(thread=True, exclusive=True, exit_on_error=False, group="generate")
    def _generate_worker(
        self,
        gen_id: int,
        backend: Backend,
        history: tuple[ChatMessage, ...],
        params: GenerationParams,
        cancel: threading.Event,
    ) -> None:
        # The lock makes this wait for a previous (stopped) generation's thread to end.
        with self.backend_lock:
            if cancel.is_set():
                self.post_message(ReplyFinished(gen_id, None))
                return
            generation = None
            try:
                generation = backend.stream(history, params, cancel)
                started = False
                for chunk in generation:
                    if not started:
                        started = True
                        self.post_message(ReplyStarted(
                            gen_id, generation.dropped_messages, generation.prompt_tokens))
                    # Every chunk at once (never held back: a stalled step must not hide
                    # text already generated); the widget batches the rendering instead.
                    self.post_message(ReplyChunk(gen_id, chunk))
                self.post_message(ReplyFinished(gen_id, generation.stats))
            except BaseException as exc:  # shown as the reply's error; the app never exits
                log.exception("generation failed")
                cause, fix, _ = describe_error(exc)
                stats = generation.stats if generation is not None else None
                self.post_message(ReplyFinished(gen_id, stats, cause, fix))

    async def on_reply_started(self, message: ReplyStarted) -> None:
        if self.turn is None or message.gen_id != self.turn.gen_id:
            return
        if message.dropped:
            await self.note(f"The {message.dropped} oldest message(s) were left out to fit the "
                            "model's context (the system prompt is kept).", variant="warning")

    async def on_reply_chunk(self, message: ReplyChunk) -> None:
        turn = self.turn
        if turn is None or message.gen_id != turn.gen_id:
            return  # stopped already: the reply was finalised with what was shown
        turn.message.content += message.text  # raw, exact text for the journal / JSON
        await turn.widget.write(message.text)  # cleaned for display
        self.record("assistant_progress", turn.message)

    async def on_reply_finished(self, message: ReplyFinished) -> None:
        turn = self.turn
        if turn is None or message.gen_id != turn.gen_id:
            stopped = self.stopped_replies.pop(message.gen_id, None)
            if stopped is not None and message.stats is not None:
                # Stopped with Esc: the engine's numbers arrive afterwards; keep them.
                stopped.stats = message.stats.to_dict()
                self.record("assistant_finished", stopped)
            return
        stats = message.stats
        status: MessageStatus
        if message.cause is not None:
            status = "error"
        elif stats is not None and stats.stop_reason == StopReason.CANCELLED:
            status = "stopped"
        else:
            status = "complete"
        await self.finish_turn(status, stats, message.cause, message.fix)

    async def finish_turn(
        self,
        status: MessageStatus,
        stats: GenerationStats | None,
        cause: str | None = None,
        fix: str = "",
    ) -> None:
        turn = self.turn
        if turn is None:
            return
        self.turn = None
        msg: Message = turn.message
        msg.status = status
        if stats is not None:
            msg.stats = stats.to_dict()
        msg.error = cause
        footer, variant = footer_for(status, stats, cause, fix)
        await turn.widget.finish(msg.content, footer, variant)
        self.record("assistant_finished", msg)
        self.state = {"complete": "ready", "stopped": "stopped"}.get(status, "error")
        facts: dict[str, object] = {"state": self.state, "detail": ""}
        if stats is not None:
            facts.update(ttft_s=stats.ttft_s, tokens_per_s=stats.decode_tokens_per_s)
        self.status.update_facts(**facts)
        self.refresh_meters()

    async def stop_generation(self) -> bool:
        """Esc / Ctrl+C: stop now, keep the partial reply marked "stopped". False if idle."""
        turn = self.turn
        if turn is None:
            return False
        turn.cancel.set()  # the engine stops within about one token step
        self.stopped_replies[turn.gen_id] = turn.message
        await self.finish_turn("stopped", None)
        return True

    # -- retry / edit / continue -------------------------------------------------------------

    def _busy(self) -> bool:
        if self.generating:
            self.say("A reply is being generated. Press Esc to stop it first.", severity="warning")
            return True
        if self.backend is None:
            self.say(f"No model is loaded. {PICK_HINT}", severity="warning")
            return True
        return False

    async def retry(self) -> None:
        """Generate the last reply again (the old one is discarded)."""
        if self._busy():
            return
        msgs = self.conversation.messages
        if msgs and msgs[-1].role == "assistant":
            await self.remove_messages_from(len(msgs) - 1)
        if not msgs or msgs[-1].role != "user":
            self.say("Nothing to retry: send a message first.")
            return
        await self.start_turn()

    async def edit_last(self) -> None:
        """Put the last prompt back in the input and remove the last exchange."""
        if self.generating:
            self.say("A reply is being generated. Press Esc to stop it first.", severity="warning")
            return
        msgs = self.conversation.messages
        index = next((i for i in range(len(msgs) - 1, -1, -1) if msgs[i].role == "user"), None)
        if index is None:
            self.say("No prompt to edit yet.")
            return
        text = msgs[index].content
        await self.remove_messages_from(index)
        self.prompt.set_text(text)
        self.prompt.focus()

    async def continue_reply(self) -> None:
        """Extend the last reply (stopped, or cut off at the length limit)."""
        if self._busy():
            return
        msgs = self.conversation.messages
        last = msgs[-1] if msgs else None
        if last is None or last.role != "assistant":
            self.say("Nothing to continue: the last message is not a reply.")
            return
        if not last.content:
            # Stopped before its first word: nothing to extend, so generate it afresh (the
            # footer offered Ctrl+G, and that offer must hold).
            await self.remove_messages_from(len(msgs) - 1)
            await self.start_turn()
            return
        await self.start_turn(continuing=True)

    async def remove_messages_from(self, index: int) -> None:
        """Drop messages[index:] from the conversation, the view and the journal."""
        removed = self.conversation.messages[index:]
        del self.conversation.messages[index:]
        for m in removed:
            await self.transcript.remove_message(m.id)
        self.journal_rewrite([m.id for m in removed])
        self.refresh_meters()

    def journal_rewrite(self, removed_ids: list[str]) -> None:
        """Tell the journal that messages were removed (retry / edit).

        The recorder has no removal record yet: "cleared" then the remaining messages again
        rebuilds the same conversation on load (records are keyed by message id).
        """
        rec = self.recorder
        if rec is None:
            return
        removed = getattr(rec, "messages_removed", None)
        if callable(removed):
            self.record("messages_removed", removed_ids)
            return
        self.record("cleared")
        for m in self.conversation.messages:
            self.record("user_message", m)

    def sync_settings(self) -> None:
        """Before a reply: journal the settings in use if they changed since last time."""
        current = (self.params, self.system_prompt)
        if current != self.recorded_settings:
            self.recorded_settings = current
            self.record("settings_changed", self.params.to_dict(), self.system_prompt)
            # The reply about to be added is stamped with these (also without a journal).
            self.conversation.settings = self.params.to_dict()
            self.conversation.system_prompt = self.system_prompt
            self.remember_settings()
