"""Session search (F5, `--sessions`) over 1,000 generated journals of 20 turns each.

Usage:
    python benchmarks/session_search.py [--sessions 1000] [--turns 20] [--runs 5]

Writes `--sessions` journals in a temporary folder (each `--turns` user prompts and
replies of 300 to 900 characters, in the real journal format: a snapshot, then one
`message` / `assistant_started` / `checkpoint` / `assistant_finished` record per turn, as
the recorder writes them) and prints, side by side in one run, the time to the first
screenful of results (20 sessions) for:

- cold index: no index file; open, build it from every journal, search;
- cold index as F5 builds it: searching after each batch of journals (newest first: 20,
  then 100 at a time), until a search finds something;
- warm index: the index is up to date; open it, check every journal's size and mtime, search;
- one changed: as warm, after one journal got a new turn (re-read of that one);
- no index: read the journals themselves, newest first, until 20 hits (or all of them);

for a rare word (in 3 sessions, so a scan reads them all) and a common one (in every
session); then the latency of each keystroke of typing a word into the search (each prefix
searched on the warm index, as the F5 field does after its debounce); and, in the real F5
browser (`SessionsScreen` in a headless Textual app over the same 1,000 journals), typing a
word key by key: the longest the UI thread was ever late (a 5 ms ticker on it: a stutter
would show here), how long each key took to show in the field, and the time from opening
the browser to the first rows and from the last key to its results. Medians of `--runs`.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llama_tui.session import records
from llama_tui.session.search import scan_sessions
from llama_tui.session.search_index import SearchIndex
from llama_tui.session.transcript import Conversation, Message

FIRST_PAGE = 20
RARE = "quetzalcoatl"
COMMON = "question"
VOCABULARY = 20_000  # distinct words; drawn with Zipf's law, like natural text


def vocabulary(rng: random.Random) -> tuple[list[str], list[float]]:
    """Made-up words of 2 to 11 letters, and Zipf weights (the rank-th word ~ 1/rank)."""
    words = sorted(
        {
            "".join(rng.choices("etaoinshrdlucmfwypvbgkqjxz"[:20], k=rng.randint(2, 11)))
            for _ in range(VOCABULARY * 2)
        }
    )[:VOCABULARY]
    rng.shuffle(words)
    return words, [1 / rank for rank in range(1, len(words) + 1)]


def paragraph(rng: random.Random, vocab: tuple[list[str], list[float]], chars: int) -> str:
    out: list[str] = []
    n = 0
    while n < chars:
        batch = rng.choices(vocab[0], cum_weights=vocab[1], k=16)
        out.extend(batch)
        n += sum(len(w) + 1 for w in batch)
    return " ".join(out)


def write_journals(directory: Path, sessions: int, turns: int) -> None:
    rng = random.Random(15)
    words, weights = vocabulary(rng)
    vocab = (words, list(itertools.accumulate(weights)))
    rare = set(rng.sample(range(sessions), 3))
    start = time.time() - sessions * 3600
    for i in range(sessions):
        conv = Conversation(title=f"Session {i} {rng.choice(words)}", created=start + i * 3600)
        conv.model = {"name": rng.choice(["SmolLM2-135M-Instruct", "Llama-3.1-8B-Instruct"])}
        sid = conv.id = f"bench-{i:04d}"
        lines = [records.encode_record(sid, records.snapshot_rec(conv))]
        for t in range(turns):
            text = f"{COMMON} {t}: " + paragraph(rng, vocab, rng.randint(300, 900))
            if i in rare and t == turns // 2:
                text += f" and then {RARE.capitalize()} appeared"
            user = conv.add("user", text)
            reply = conv.add("assistant", paragraph(rng, vocab, rng.randint(300, 900)))
            lines.append(records.encode_record(sid, records.message_rec(user)))
            lines.append(records.encode_record(sid, records.reply_started_rec(reply)))
            lines.append(
                records.encode_record(sid, records.checkpoint_rec(reply.id, 0, reply.content))
            )
            lines.append(records.encode_record(sid, records.reply_finished_rec(reply)))
        path = directory / f"{sid}.jsonl"
        path.write_bytes(b"".join(lines))
        t0 = start + i * 3600
        os.utime(path, (t0, t0))


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def first_results(directory: Path, index_path: Path, query: str, mode: str) -> tuple[float, int]:
    """Seconds to the first screenful of hits, and how many there were."""
    t0 = time.perf_counter()
    if mode == "scan":
        hits = []
        for hit in scan_sessions(directory, query):
            hits.append(hit)
            if len(hits) == FIRST_PAGE:
                break
        return time.perf_counter() - t0, len(hits)
    index = SearchIndex(directory, index_path)
    try:
        index.refresh()
        found = index.search(query, limit=FIRST_PAGE)
    finally:
        index.close()
    return time.perf_counter() - t0, len(found)


def first_hits_while_building(directory: Path, index_path: Path, query: str) -> tuple[float, int]:
    """A cold build as the F5 browser runs it: searching after each batch (newest journals
    first); seconds until a search found something, and how many."""
    t0 = time.perf_counter()
    first: list[tuple[float, int]] = []
    index = SearchIndex(directory, index_path)

    def progress(done: int, total: int) -> None:
        if not first:
            hits = index.search(query, limit=FIRST_PAGE)
            if hits:
                first.append((time.perf_counter() - t0, len(hits)))

    try:
        index.refresh(progress)
        if not first:
            first.append((time.perf_counter() - t0, len(index.search(query, limit=FIRST_PAGE))))
    finally:
        index.close()
    return first[0]


def add_turn(directory: Path) -> None:
    path = sorted(directory.glob("*.jsonl"))[0]
    msg = Message("user", "one more question about the cache")  # follows the last one
    with path.open("ab") as f:
        f.write(records.encode_record(path.stem, records.message_rec(msg)))


def median(xs: list[float]) -> float:
    return statistics.median(xs) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--turns", type=int, default=20)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LLAMA_TUI_HOME"] = tmp  # the F5 browser reads the default folders
        directory = Path(tmp) / "data" / "sessions"
        directory.mkdir(parents=True)
        gen_s, _ = timed(lambda: write_journals(directory, args.sessions, args.turns))
        size = sum(p.stat().st_size for p in directory.iterdir())
        index_path = directory.parent / "search-index.sqlite3"  # where the app keeps it
        print(
            f"{args.sessions} journals x {args.turns} turns: {size / 1e6:.0f} MB "
            f"(written in {gen_s:.1f} s); median of {args.runs} runs\n"
        )

        rows: dict[str, dict[str, tuple[float, int]]] = {}  # query -> label -> (ms, hits)
        for query in (RARE, COMMON):
            cold, early, warm, changed, scan = [], [], [], [], []
            found: dict[str, int] = {}
            for _ in range(args.runs):
                for suffix in ("", "-journal", "-wal"):
                    Path(f"{index_path}{suffix}").unlink(missing_ok=True)
                s, found["early"] = first_hits_while_building(directory, index_path, query)
                early.append(s)
                for suffix in ("", "-journal", "-wal"):
                    Path(f"{index_path}{suffix}").unlink(missing_ok=True)
                s, found["cold"] = first_results(directory, index_path, query, "index")
                cold.append(s)
                s, found["warm"] = first_results(directory, index_path, query, "index")
                warm.append(s)
                add_turn(directory)
                s, found["changed"] = first_results(directory, index_path, query, "index")
                changed.append(s)
                s, found["scan"] = first_results(directory, index_path, query, "scan")
                scan.append(s)
            rows[query] = {
                "cold index (build + search)": (median(cold), found["cold"]),
                "cold index, first hits as it builds": (median(early), found["early"]),
                "warm index": (median(warm), found["warm"]),
                "warm index, 1 journal changed": (median(changed), found["changed"]),
                "no index (read the journals)": (median(scan), found["scan"]),
            }
        print(f"{'time to first results (ms)':38} {RARE!r:>16} {COMMON!r:>16}")
        for label in rows[RARE]:
            a, b = rows[RARE][label], rows[COMMON][label]
            print(f"  {label:36} {a[0]:9.1f} ({a[1]:2d}) {b[0]:9.1f} ({b[1]:2d})")
        warm_rare = rows[RARE]["warm index"][0]
        print(
            f"\n  no index / warm index, rare word: "
            f"{rows[RARE]['no index (read the journals)'][0] / warm_rare:.0f}x"
        )
        print(
            f"  cold build / warm index, rare word: "
            f"{rows[RARE]['cold index (build + search)'][0] / warm_rare:.0f}x"
        )

        index = SearchIndex(directory, index_path)
        index.refresh()
        per_key: dict[str, list[float]] = {}
        for word in (RARE, f"{COMMON} 7"):
            lat = per_key.setdefault(word, [])
            for _ in range(args.runs):
                for n in range(1, len(word) + 1):
                    s, _ = timed(lambda n=n, word=word: index.search(word[:n], limit=100))
                    lat.append(s)
        index.close()
        print("\nper keystroke, warm index open (search of each prefix, up to 100 rows):")
        for word, lat in per_key.items():
            lat.sort()
            p95 = lat[int(0.95 * (len(lat) - 1))] * 1000
            print(
                f"  typing {word!r:16} median {median(lat):6.1f} ms  p95 {p95:6.1f} ms  "
                f"max {lat[-1] * 1000:6.1f} ms"
            )

        ui = asyncio.run(ui_typing(RARE))
        print(f"\nin the F5 browser (Textual, headless), typing {RARE!r} 30 ms apart:")
        print(f"  open to first rows (warm index):   {ui['open'] * 1000:6.1f} ms")
        print(
            f"  key to the field, median / max:    {ui['key_median'] * 1000:6.1f} / "
            f"{ui['key_max'] * 1000:.1f} ms"
        )
        print(
            f"  UI thread late (5 ms ticker), max: {ui['lag_max'] * 1000:6.1f} ms while typing, "
            f"{ui['idle_lag_max'] * 1000:.1f} ms idle just before"
        )
        print(
            f"  last key to its results:           {ui['results'] * 1000:6.1f} ms "
            "(80 ms of it the debounce)"
        )


async def ui_typing(word: str) -> dict[str, float]:
    """The real browser in a headless app: how late the UI thread gets while typing."""
    from textual import events
    from textual.app import App
    from textual.widgets import Input

    from llama_tui.ui.screens.sessions import SessionsScreen

    app: App[None] = App()
    async with app.run_test(size=(100, 30)):
        ticks: list[float] = []
        t0 = time.perf_counter()
        screen = SessionsScreen()
        app.push_screen(screen)
        while screen.shown_query is None:
            await asyncio.sleep(0.001)
        opened = time.perf_counter() - t0
        app.set_interval(0.005, lambda: ticks.append(time.perf_counter()))
        await asyncio.sleep(0.5)  # idle first: how late the ticker is on this machine anyway
        idle = [b - a for a, b in itertools.pairwise(ticks)]
        ticks.clear()
        field = screen.query_one("#search", Input)
        keys: list[float] = []
        last_key = 0.0
        for n, ch in enumerate(word, 1):
            last_key = time.perf_counter()
            app.post_message(events.Key(ch, ch))  # as the terminal driver posts it
            while field.value != word[:n]:
                await asyncio.sleep(0.0005)
            keys.append(time.perf_counter() - last_key)
            await asyncio.sleep(0.03)
        while screen.shown_query != word:
            await asyncio.sleep(0.001)
        results = time.perf_counter() - last_key
        gaps = [b - a for a, b in itertools.pairwise(ticks)]
    return {
        "open": opened,
        "key_max": max(keys),
        "key_median": statistics.median(keys),
        "lag_max": max(gaps) - 0.005,
        "idle_lag_max": max(idle) - 0.005,
        "results": results,
    }


if __name__ == "__main__":
    main()
