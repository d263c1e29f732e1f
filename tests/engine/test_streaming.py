"""Unit tests for the streaming plumbing: UTF-8-safe incremental decoding, stop strings,
the cancel criteria and error classification. No model needed (the tokenizer of the tiny
Llama is used where real byte-level decoding matters)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from llama_tui.core.errors import (
    DeviceFatalError,
    GenerationError,
    NonFiniteError,
    OutOfMemoryError,
)
from llama_tui.engine.local.decoding import IncrementalDecoder
from llama_tui.engine.local.failures import classify_error
from llama_tui.engine.local.streaming import StopFlags
from llama_tui.engine.stops import REPLACEMENT


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir, local_files_only=True)


def byte_ids(tok: Any, text: str) -> list[int]:
    """One token per UTF-8 byte: every multi-byte character is split across tokens."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    b2u = bytes_to_unicode()
    return [tok.convert_tokens_to_ids(b2u[b]) for b in text.encode("utf-8")]


def decoder_for(tok: Any, stop: tuple[str, ...] = (), context: list[int] | None = None) -> Any:
    return IncrementalDecoder(
        lambda ids: tok.decode(ids, skip_special_tokens=True), context or [], stop
    )


@pytest.mark.parametrize("text", ["經過一段時間的努力", "naïve café 🙂 ok", "日本語のテキスト"])
def test_split_multibyte_characters_are_held_until_complete(tok: Any, text: str) -> None:
    dec = decoder_for(tok)
    chunks = [dec.push([i]) for i in byte_ids(tok, text)]
    chunks.append(dec.flush())
    assert "".join(chunks) == text
    assert all(REPLACEMENT not in c for c in chunks)
    # CJK: one 3-byte character per 3 ids, so two of every three pushes emit nothing.
    assert sum(1 for c in chunks if c) >= len(text) - 1


def test_bursts_of_ids_decode_the_same(tok: Any) -> None:
    text = "經過一段時間的努力, done."
    ids = byte_ids(tok, text)
    dec = decoder_for(tok)
    out = [dec.push(ids[i : i + 4]) for i in range(0, len(ids), 4)]
    assert "".join(out) + dec.flush() == text


def test_long_stream_keeps_window_small(tok: Any) -> None:
    text = "經過一段時間的努力。" * 30
    dec = decoder_for(tok)
    out = "".join(dec.push([i]) for i in byte_ids(tok, text)) + dec.flush()
    assert out == text
    assert len(dec._ids) < 80  # the decoded window never grows with the reply


def test_invalid_bytes_are_emitted_later_not_lost(tok: Any) -> None:
    # A stray continuation byte is never completed: it is emitted with the next token, and
    # the total equals a full decode (which contains the replacement character too).
    ids = byte_ids(tok, "ab") + byte_ids(tok, "經")[1:2] + byte_ids(tok, "cd")
    dec = decoder_for(tok)
    chunks = [dec.push([i]) for i in ids] + [dec.flush()]
    assert "".join(chunks) == tok.decode(ids)
    assert not any(c.endswith(REPLACEMENT) for c in chunks[:-1])


@pytest.mark.parametrize("cut", [1, 2])
def test_reply_cut_inside_a_character_ends_without_replacement(tok: Any, cut: int) -> None:
    # The token limit stops the reply after 1 or 2 of the 3 bytes of "力": those bytes are
    # dropped at the end, not shown (or saved) as U+FFFD.
    ids = byte_ids(tok, "經過一段時間的努力")[:-3 + cut]
    dec = decoder_for(tok)
    chunks = [dec.push([i]) for i in ids] + [dec.flush()]
    assert "".join(chunks) == "經過一段時間的努"
    assert "".join(dec.text_parts) == "經過一段時間的努"


def test_cut_inside_a_character_with_stop_strings(tok: Any) -> None:
    ids = byte_ids(tok, "ok 努力")[:-1]
    dec = decoder_for(tok, stop=("END",))
    out = "".join(dec.push([i]) for i in ids) + dec.flush()
    assert out == "ok 努"


def test_sentencepiece_style_leading_space_is_kept() -> None:
    # A SentencePiece decoder drops the leading space of the first piece it decodes; the prompt
    # ids used as context keep " there" after "Once upon a time".
    vocab = {1: "▁Once", 2: "▁upon", 3: "▁a", 4: "▁time", 5: "▁there", 6: "▁was"}

    def sp_decode(ids: list[int]) -> str:
        return "".join(vocab[i] for i in ids).replace("▁", " ").removeprefix(" ")

    dec = IncrementalDecoder(sp_decode, [1, 2, 3, 4])
    assert dec.push([5]) + dec.push([6]) + dec.flush() == " there was"


def test_stop_string_is_cut_and_never_emitted(tok: Any) -> None:
    text = "Hello there! How are you today?"
    dec = decoder_for(tok, stop=("How are",))
    chunks = [dec.push([i]) for i in byte_ids(tok, text)]
    assert dec.stopped
    assert "".join(chunks) == "Hello there! "
    assert dec.flush() == ""
    assert dec.push(byte_ids(tok, "x")) == ""


def test_partial_stop_string_is_released_when_it_does_not_match(tok: Any) -> None:
    dec = decoder_for(tok, stop=("User:",))
    out = [dec.push([i]) for i in byte_ids(tok, "Use it, Us")]
    assert "".join(out) == "Use it, "  # "Us" could still become "User:"
    assert dec.flush() == "Us"
    assert not dec.stopped


def test_earliest_of_several_stop_strings_wins(tok: Any) -> None:
    dec = decoder_for(tok, stop=("world", "lo w"))
    out = "".join(dec.push([i]) for i in byte_ids(tok, "hello world"))
    assert out == "hel"
    assert dec.stopped


def test_stop_flags_return_a_bool_per_row() -> None:
    import torch

    cancel, internal = threading.Event(), threading.Event()
    flags = StopFlags(cancel, internal)
    ids = torch.zeros((2, 5), dtype=torch.long)
    assert flags(ids, None).tolist() == [False, False]
    internal.set()
    assert flags(ids, None).tolist() == [True, True]
    internal.clear()
    cancel.set()
    result = flags(ids, None)
    assert result.dtype == torch.bool and result.shape == (2,)


def test_classify_errors() -> None:
    import torch

    oom = classify_error(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate"), "cuda")
    assert isinstance(oom, OutOfMemoryError)
    assert "4-bit" in oom.fix and "max new tokens" in oom.fix
    nan = classify_error(
        RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")
    )
    assert isinstance(nan, NonFiniteError) and "bfloat16" in nan.fix and "greedy" in nan.fix
    fatal = classify_error(RuntimeError("CUDA error: device-side assert triggered"))
    assert isinstance(fatal, DeviceFatalError) and "restart" in fatal.fix.lower()
    mps = classify_error(
        NotImplementedError(
            "The operator 'aten::foo' is not currently implemented for the MPS device."
        )
    )
    assert type(mps) is GenerationError and "PYTORCH_ENABLE_MPS_FALLBACK=1" in mps.fix
    other = classify_error(ValueError("x" * 5000))
    assert type(other) is GenerationError and len(str(other)) < 700
    mine = GenerationError("already classified")
    assert classify_error(mine) is mine
