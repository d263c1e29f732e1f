"""The reply in flight: prompt -> generation worker -> streamed reply -> stats.

`ReplyRunner` belongs to the chat screen and holds the one running turn. The reply itself
(settings journaled, history snapshot, outcome mapped into the message and the journal) is
the chat core's `ReplyRun`, shared with headless mode; this adds the worker, the widget
and the status bar. The worker runs `stream_reply` with the frozen request and posts each
piece to the screen, which hands it here; only the UI thread touches the conversation and
the reply's MarkdownStream (which batches renders, so typing stays responsive).

Esc finalises the reply at once as "stopped" (partial text kept) and sets the cancel event
(the engine's StoppingCriteria checks it, so the device stops too); chunks still in flight
are ignored. The next generation waits for the previous worker thread to release the
model's lock, since a cancelled Textual worker keeps running: cancelling marks it cancelled
but its thread runs on until the engine notices the event.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from llama_tui.chat.footer import assisted_note, footer_for
from llama_tui.chat.reply import (
    ReplyError,
    ReplyOutcome,
    ReplyRequest,
    ReplyRun,
    describe_failure,
    stream_reply,
)
from llama_tui.chat.tokens import confidence_text
from llama_tui.core.backend import Backend, GenerationStats, StopReason
from llama_tui.ui import token_underline
from llama_tui.ui.messages import ReplyChunk, ReplyFinished, ReplyStarted
from llama_tui.ui.widgets.turns import AssistantTurn

if TYPE_CHECKING:
    from llama_tui.session.transcript import Message
    from llama_tui.ui.chat_screen import ChatScreen

log = logging.getLogger(__name__)

ENDED_ON_ITS_OWN = "This reply ended on its own; Ctrl+R writes a new one."


def _ended_on_its_own(msg: Message) -> bool:
    """A complete reply that the model ended (end of text or a stop string): there is
    nothing to continue. Stopped and length-cut replies (and ones without stats) can be."""
    if msg.status != "complete":
        return False
    stats = GenerationStats.from_dict(msg.stats)
    return stats is not None and stats.stop_reason in (StopReason.EOS, StopReason.STOP_STRING)


@dataclass
class Turn:
    """The reply being generated: the core's run, its widget, when it started."""

    gen_id: int
    run: ReplyRun
    widget: AssistantTurn
    started: float


@dataclass
class _Poster:
    """`stream_reply`'s sink in the worker thread: every piece becomes a message."""

    screen: ChatScreen
    gen_id: int

    def started(self, dropped: int, prompt_tokens: int) -> None:
        self.screen.post_message(ReplyStarted(self.gen_id, dropped, prompt_tokens))

    def chunk(self, text: str) -> None:
        # Every chunk at once (never held back: a stalled step must not hide text already
        # generated); the widget batches the rendering instead.
        self.screen.post_message(ReplyChunk(self.gen_id, text))

    def thought(self, text: str, tokens: int, seconds: float | None) -> None:
        self.screen.post_message(ReplyChunk(self.gen_id, text, True, tokens, seconds))

    def finished(self, stats: GenerationStats | None, error: ReplyError | None) -> None:
        self.screen.post_message(ReplyFinished(self.gen_id, stats, error))


class ReplyRunner:
    """Starts, streams, stops and finishes the chat screen's replies (one at a time)."""

    def __init__(self, screen: ChatScreen) -> None:
        self.screen = screen
        self.turn: Turn | None = None
        self.gen_counter = 0
        self.stopped: dict[int, ReplyRun] = {}  # gen_id -> reply stopped by the user
        self.queued = False  # a prompt sent while loading waits for the model

    @property
    def started_at(self) -> float | None:
        return self.turn.started if self.turn is not None else None

    async def start(self, *, continuing: bool = False) -> None:
        """Generate a reply to the conversation as it is now (or extend the last one)."""
        screen, host = self.screen, self.screen.host
        backend = host.model.backend
        if backend is None or self.turn is not None:
            return
        run = ReplyRun(host.chat_state, continuing=continuing)
        host.prefs.remember_settings()  # the settings a reply used are worth keeping
        msg = run.message
        widget = screen.transcript.find_assistant(msg.id) if run.continuing else None
        if widget is None:
            widget = await screen.transcript.add_assistant(msg.content, msg.id)
        if run.continuing:
            widget.set_footer("")
        screen.branches.mark()  # a retry's new version shows its place: 2/2
        widget.start_stream()
        self.gen_counter += 1
        self.turn = Turn(self.gen_counter, run, widget, time.monotonic())
        screen.set_class(True, "-generating")
        host.status.update_facts(state="generating", detail="", ttft_s=None, tokens_per_s=None,
                                 assisted="")
        work = partial(self._generate, self.gen_counter, backend, host.model.lock, run.request)
        screen.run_worker(work, thread=True, exclusive=True, exit_on_error=False,
                          group="generate")

    def _generate(self, gen_id: int, backend: Backend, lock: threading.Lock,
                  request: ReplyRequest) -> None:
        """The worker thread: stream the reply, posting each piece to the screen."""
        sink = _Poster(self.screen, gen_id)
        # The lock makes this wait for a previous (stopped) generation's thread to end.
        with lock:
            if request.cancel.is_set():
                sink.finished(None, None)
                return
            try:
                stream_reply(backend, request, sink)
            except BaseException as exc:  # the reply's error; the app never exits
                log.exception("the reply worker failed")
                sink.finished(None, describe_failure(exc))

    # -- the worker's messages, handed over by the screen ----------------------------------

    async def started(self, message: ReplyStarted) -> None:
        if self.turn is None or message.gen_id != self.turn.gen_id:
            return
        if message.dropped:
            await self.screen.note(
                f"The {message.dropped} oldest message(s) were left out to fit the model's "
                "context (the system prompt is kept).", variant="warning")

    async def chunk(self, message: ReplyChunk) -> None:
        turn = self.turn
        if turn is None or message.gen_id != turn.gen_id:
            return  # stopped already: the reply was finalised with what was shown
        if message.thinking:
            turn.run.add_thinking(message.text)
            turn.widget.thinking.write(message.text, message.tokens, message.seconds)
            return
        turn.widget.thinking.answer_started()
        turn.run.add(message.text)  # raw, exact text for the journal / JSON
        await turn.widget.write(message.text)  # cleaned for display

    async def finished(self, message: ReplyFinished) -> None:
        turn = self.turn
        if turn is None or message.gen_id != turn.gen_id:
            stopped = self.stopped.pop(message.gen_id, None)
            if stopped is not None:
                # Stopped with Esc: the engine's numbers arrive afterwards; keep them.
                stopped.finish(message.stats)
            return
        await self._show(turn, turn.run.finish(message.stats, message.error))

    async def stop(self) -> bool:
        """Esc / Ctrl+C: stop now, keep the partial reply marked "stopped". False if idle."""
        turn = self.turn
        if turn is None:
            return False
        self.stopped[turn.gen_id] = turn.run
        await self._show(turn, turn.run.stop())  # the engine stops within about one step
        return True

    async def _show(self, turn: Turn, outcome: ReplyOutcome) -> None:
        """The reply ended: its footer, the status bar, the meters."""
        self.turn = None
        self.screen.set_class(False, "-generating")
        error = outcome.error
        footer, variant = footer_for(outcome.status, outcome.stats,
                                     error.cause if error else None, error.fix if error else "",
                                     confidence=confidence_text(outcome.message.tokens))
        turn.widget.thinking.finish(outcome.message.thinking, outcome.stats)
        await turn.widget.finish(outcome.message.content, footer, variant)
        token_underline.show(turn.widget, outcome.message)  # `/inspect underline N`
        state = {"complete": "ready", "stopped": "stopped"}.get(outcome.status, "error")
        facts: dict[str, object] = {"state": state, "detail": ""}
        if outcome.stats is not None:
            facts.update(ttft_s=outcome.stats.ttft_s,
                         tokens_per_s=outcome.stats.decode_tokens_per_s,
                         assisted=assisted_note(outcome.stats))
        host = self.screen.host
        host.status.update_facts(**facts)
        host.model.refresh_meters()

    async def wait_for_model(self) -> None:
        """A prompt sent while the model loads is queued (one at a time) and sent when the
        model is ready; typing meanwhile is fine."""
        self.queued = True
        await self.screen.note("The model is still loading; this message is sent once it is "
                               "ready.")

    async def model_ready(self) -> None:
        """A model finished loading: send the prompt that waited for it."""
        if self.queued:
            self.queued = False
            await self.start()

    async def model_failed(self) -> None:
        if self.queued:
            await self.screen.note("Your message is kept; send /retry once a model is loaded.")
            self.queued = False

    # -- retry / edit / continue -------------------------------------------------------------

    def cannot_start(self) -> bool:
        model = self.screen.host.model
        if self.screen.host.refuse_while_generating():
            return True
        if model.backend is None:
            self.screen.host.say(f"No model is loaded. {model.pick_hint}", severity="warning")
            return True
        return False

    async def retry(self) -> None:
        """Generate the last reply again; the old one stays as another version (a branch)."""
        if self.cannot_start():
            return
        msgs = self.screen.host.chat_state.conversation.messages
        if msgs and msgs[-1].role == "assistant":
            await self.branch_from(len(msgs) - 1)
        if not msgs or msgs[-1].role != "user":
            self.screen.host.say("Nothing to retry: send a message first.")
            return
        await self.start()

    async def edit_last(self) -> None:
        """Put the last prompt back in the input; the last exchange becomes a branch, and
        the edited prompt, once sent, its sibling."""
        screen = self.screen
        if screen.host.refuse_while_generating():
            return
        msgs = screen.host.chat_state.conversation.messages
        index = next((i for i in range(len(msgs) - 1, -1, -1) if msgs[i].role == "user"), None)
        if index is None:
            screen.host.say("No prompt to edit yet.")
            return
        text, files = msgs[index].content, msgs[index].attachments
        await self.branch_from(index)
        screen.attachments.restore(files)  # the edited prompt keeps its files
        screen.prompt.set_text(text)
        screen.prompt.focus()

    async def continue_reply(self) -> None:
        """Extend the last reply (stopped, or cut off at the length limit)."""
        if self.cannot_start():
            return
        msgs = self.screen.host.chat_state.conversation.messages
        last = msgs[-1] if msgs else None
        if last is None or last.role != "assistant":
            self.screen.host.say("Nothing to continue: the last message is not a reply.")
            return
        if _ended_on_its_own(last):
            self.screen.host.say(ENDED_ON_ITS_OWN, severity="warning")
            return
        if not last.content and not last.thinking:
            # Stopped before its first word: nothing to extend, so generate it afresh (the
            # footer offered Ctrl+G, and that offer must hold). A stopped thought goes on.
            await self.remove_messages_from(len(msgs) - 1)
            await self.start()
            return
        await self.start(continuing=True)

    async def branch_from(self, index: int) -> None:
        """End the active path before messages[index] (kept in the tree) and in the view."""
        screen = self.screen
        for m in screen.host.chat_state.branch_from(index):
            await screen.transcript.remove_message(m.id)
        screen.host.model.refresh_meters()

    async def remove_messages_from(self, index: int) -> None:
        """Drop messages[index:] from the conversation, the view and the journal."""
        screen = self.screen
        for m in screen.host.chat_state.remove_from(index):
            await screen.transcript.remove_message(m.id)
        screen.host.model.refresh_meters()
