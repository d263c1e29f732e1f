"""Device check for bigger-model loading: device_map="auto", CPU offload and 4-bit, end to end.

Usage (one call on the lent GPU machine, well under 90 s on an H100 / H200):
    PYTHONUNBUFFERED=1 python benchmarks/device_check.py
    python benchmarks/device_check.py --cpu      # the same code on CPU, tiny shape (tests it)

Builds a random-weight Llama (Llama-3.2-1B body: hidden 2048, 16 layers, GQA 32/8, MLP 8192;
a small byte-level BPE vocabulary, so ~0.97B parameters) on the device, saves it as bf16
safetensors in a temp folder, then goes through llama-tui's own code, not transformers directly:

  device_map   LocalBackend(path, LoadOptions(device_map="auto")): load_model, warm-up, 16
               greedy tokens; prints ModelInfo.device / placement and the VRAM reading
  offload      the same with accelerate told that GPU 0 holds only half the model (max_memory
               injected into from_pretrained: llama-tui has no max-memory setting): checks the
               "+cpu offload" label, the slow-offload warning, the input device, generation
               and less VRAM (--cpu: CPU RAM capped, the rest offloaded to disk)
  4-bit        LoadOptions(load_in_4bit=True) (NF4, double quant): VRAM should be ~3.5x
               smaller than bf16; skipped with a line when bitsandbytes is not importable

One PASS / FAIL / SKIP line per check (with numbers), the table last; written to
$OUT/device_check.md when OUT is set. Exit status 1 when any check failed.

Runs without textual; platformdirs and psutil are optional here (a stand-in platformdirs is
installed when it is missing, and every llama-tui path goes to a temp folder anyway).
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

T0 = time.perf_counter()
GIB = 1024**3
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHAPES: dict[str, dict[str, Any]] = {
    "1b": dict(  # Llama-3.2-1B's body; vocabulary from the tokenizer built below
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    ),
}
NEW_TOKENS = 16
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "Hello there! How are you today? I am fine, thank you.",
    "The quick brown fox jumps over the lazy dog. 0123456789",
    "def hello():\n    return 'world'\n",
    "Markdown: # Title\n- item one\n- item two\n",
] * 30


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


@dataclass
class Row:
    check: str
    status: str  # PASS | FAIL | SKIP
    detail: str

    def line(self) -> str:
        return f"{self.status} {self.check}: {self.detail}"


def ensure_platformdirs() -> None:
    """llama_tui.locations imports platformdirs; the device machine may lack it. Every path is
    redirected by LLAMA_TUI_HOME, so a stand-in that is never really asked is enough."""
    try:
        import platformdirs  # noqa: F401
    except ImportError:
        shim = types.ModuleType("platformdirs")

        class PlatformDirs:
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                base = os.environ.get("LLAMA_TUI_HOME", tempfile.gettempdir())
                for kind in ("config", "data", "cache", "state", "log"):
                    setattr(self, f"user_{kind}_dir", os.path.join(base, kind))

        shim.PlatformDirs = PlatformDirs  # type: ignore[attr-defined]
        sys.modules["platformdirs"] = shim
        log("platformdirs is not installed: using a stand-in (paths under LLAMA_TUI_HOME)")


def build_model(folder: Path, shape: str, device: str) -> tuple[int, float]:
    """A random-weight bf16 Llama with a real tokenizer and chat template; (params, seconds)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    t = time.perf_counter()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(CORPUS, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        model_max_length=2048,
    )
    tok.chat_template = CHATML
    tok.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(tok),
        max_position_embeddings=2048,
        bos_token_id=tok.convert_tokens_to_ids("<|im_start|>"),
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        tie_word_embeddings=False,
        **SHAPES[shape],
    )
    torch.manual_seed(0)
    with torch.device(device):  # random init on the GPU: seconds instead of a minute on CPU
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    with torch.no_grad():
        # A zero row gives the end-of-turn token a logit of exactly 0 while the best of the
        # other 500+ random logits is positive: greedy decoding never stops early, so every
        # check generates exactly NEW_TOKENS tokens.
        model.lm_head.weight[config.eos_token_id].zero_()
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder)  # safetensors
    del model
    free_device()
    return params, time.perf_counter() - t


def free_device() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextmanager
def capped_memory(max_memory: dict[Any, int]) -> Iterator[None]:
    """Make from_pretrained(device_map="auto") believe the devices hold only `max_memory`, so
    accelerate offloads the rest (GPU -> CPU, or CPU -> disk), as it would for a model bigger
    than the machine. llama-tui has no max-memory setting; this wraps transformers' call."""
    import transformers

    cls = transformers.AutoModelForCausalLM
    real = cls.from_pretrained

    def capped(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("device_map") == "auto":
            kwargs["max_memory"] = dict(max_memory)
        return real(*args, **kwargs)

    cls.from_pretrained = capped
    try:
        yield
    finally:
        cls.from_pretrained = real


@dataclass
class RunResult:
    info: Any
    used_bytes: int
    per_device: tuple[tuple[str, int], ...]
    input_device: str
    load_s: float
    tokens: int
    gen_s: float
    stop: str
    text: str
    messages: list[str]


def load_and_generate(folder: Path, options: Any) -> RunResult:
    """Load through LocalBackend (hence load_model), read memory, generate NEW_TOKENS greedily."""
    from llama_tui.core.backend import ChatMessage, LoadProgress
    from llama_tui.core.params import GenerationParams
    from llama_tui.engine.local.backend import LocalBackend

    messages: list[str] = []

    def progress(p: LoadProgress) -> None:
        messages.append(p.message)
        log(f"  load: {p.stage.value}: {p.message}")

    backend = LocalBackend(str(folder), options)
    try:
        t = time.perf_counter()
        info = backend.load(progress)
        load_s = time.perf_counter() - t
        reading = backend.memory()
        input_device = str(getattr(backend, "_input_device", "?"))
        params = GenerationParams(max_new_tokens=NEW_TOKENS, do_sample=False)
        t = time.perf_counter()
        gen = backend.stream(
            [ChatMessage("user", "Hello, who are you?")], params, threading.Event()
        )
        text = gen.text()
        gen_s = time.perf_counter() - t
        stats = gen.stats
        return RunResult(
            info=info,
            used_bytes=reading.used_bytes,
            per_device=reading.per_device,
            input_device=input_device,
            load_s=load_s,
            tokens=stats.generated_tokens if stats else 0,
            gen_s=gen_s,
            stop=stats.stop_reason.value if stats else "?",
            text=text,
            messages=messages,
        )
    finally:
        backend.close()
        free_device()


def gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB"


def generated_ok(r: RunResult) -> bool:
    return r.tokens == NEW_TOKENS and r.stop == "length"


def describe(r: RunResult) -> str:
    rate = (r.tokens / r.gen_s) if r.gen_s > 0 else 0.0
    per = (" [" + ", ".join(f"{d} {gib(b)}" for d, b in r.per_device) + "]") if r.per_device else ""
    return (
        f"device={r.info.device!r} inputs on {r.input_device}, "
        f"{len(r.info.placement)} placed modules, memory {gib(r.used_bytes)}{per}, "
        f"load {r.load_s:.1f} s, {r.tokens} tokens ({r.stop}) in {r.gen_s:.2f} s "
        f"({rate:.1f} tok/s)"
    )


def run_checks(cpu: bool) -> list[Row]:
    import torch

    from llama_tui.core.backend import LoadOptions

    rows: list[Row] = []
    cuda = torch.cuda.is_available() and not cpu
    if not cpu and not cuda:
        return [Row("setup", "FAIL", "no CUDA device; use --cpu for the CPU variant")]
    device = "cuda" if cuda else "cpu"
    shape = "tiny" if cpu else "1b"
    log(
        f"torch {torch.__version__}, CUDA {torch.version.cuda}, "
        + (
            f"{torch.cuda.device_count()} GPU(s): {torch.cuda.get_device_name(0)}"
            if cuda
            else "CPU"
        )
    )
    try:
        import accelerate
        import transformers

        log(f"transformers {transformers.__version__}, accelerate {accelerate.__version__}")
        transformers.utils.logging.disable_progress_bar()  # one line per step, no tqdm bars
    except ImportError as exc:
        rows.append(Row("setup", "FAIL", f"missing {exc.name}: device_map needs accelerate"))
        return rows

    work = Path(tempfile.mkdtemp(prefix="llama_tui_device_check_"))
    os.environ["LLAMA_TUI_HOME"] = str(work / "home")
    os.environ["HF_HUB_OFFLINE"] = "1"
    folder = work / "model"
    try:
        params, build_s = build_model(folder, shape, device)
        size = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
        rows.append(
            Row(
                "build",
                "PASS",
                f"{params / 1e6:,.1f}M params, {gib(size)} safetensors, {build_s:.1f} s",
            )
        )
        log(rows[-1].line())

        # 1. device_map="auto" through LocalBackend / load_model.
        full: RunResult | None = None
        try:
            full = load_and_generate(folder, LoadOptions(device_map="auto", compile=False))
            expect = "cuda:" if cuda else "cpu"
            ok = generated_ok(full) and full.info.device.startswith(expect)
            rows.append(Row("device_map=auto", "PASS" if ok else "FAIL", describe(full)))
            if full.info.placement:
                log(f"  placement: {full.info.placement}")
        except Exception as exc:
            rows.append(Row("device_map=auto", "FAIL", fail_text(exc)))
        log(rows[-1].line())

        # 2. Offload: the first device capped at half the weights. On a GPU the rest goes to the
        # CPU; with --cpu, CPU RAM is capped and the rest is read from disk (safetensors).
        cap: dict[Any, int] = {0: size // 2, "cpu": 64 * GIB} if cuda else {"cpu": size // 2}
        where = "cpu" if cuda else "disk"
        try:
            with capped_memory(cap):
                off = load_and_generate(folder, LoadOptions(device_map="auto", compile=False))
            devices_used = sorted(set(off.info.placement.values()))
            warned = any("offloaded" in m and "slower" in m for m in off.messages)
            ok = (
                generated_ok(off)
                and f"+{where} offload" in off.info.device
                and warned
                and off.input_device.startswith("cuda" if cuda else "cpu")
                and (not cuda or full is None or off.used_bytes < full.used_bytes)
            )
            rows.append(
                Row(
                    f"offload to {where}",
                    "PASS" if ok else "FAIL",
                    describe(off) + f", map devices {devices_used}, warning shown: {warned}",
                )
            )
        except Exception as exc:
            rows.append(Row(f"offload to {where}", "FAIL", fail_text(exc)))
        log(rows[-1].line())

        # 3. 4-bit through bitsandbytes.
        try:
            import bitsandbytes

            bnb_version: str | None = bitsandbytes.__version__
        except Exception as exc:  # not installed, or its native library fails to load
            bnb_version = None
            reason = f"bitsandbytes not importable ({type(exc).__name__})"
        if not cuda:
            rows.append(
                Row("4-bit", "SKIP", "needs CUDA (llama-tui uses bitsandbytes on NVIDIA only)")
            )
        elif bnb_version is None:
            rows.append(Row("4-bit", "SKIP", reason + "; pip install 'llama-tui[quant]'"))
        else:
            try:
                q = load_and_generate(folder, LoadOptions(load_in_4bit=True, compile=False))
                ratio = (full.used_bytes / q.used_bytes) if full and q.used_bytes else 0.0
                ok = generated_ok(q) and ratio >= 2.5
                rows.append(
                    Row(
                        "4-bit",
                        "PASS" if ok else "FAIL",
                        describe(q)
                        + f", {ratio:.1f}x smaller than bf16 (bitsandbytes {bnb_version})",
                    )
                )
            except Exception as exc:
                rows.append(Row("4-bit", "FAIL", fail_text(exc)))
            log(rows[-1].line())
    except Exception as exc:
        rows.append(Row("setup", "FAIL", fail_text(exc)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def fail_text(exc: BaseException) -> str:
    traceback.print_exc()
    return f"{type(exc).__name__}: {str(exc)[:400]}".replace("\n", " | ")


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cpu", action="store_true", help="tiny shape on CPU; 4-bit skipped")
    args = parser.parse_args(argv)
    ensure_platformdirs()
    rows = run_checks(args.cpu)
    total = time.perf_counter() - T0
    table = "\n".join(
        ["| check | result | detail |", "|---|---|---|"]
        + [f"| {r.check} | {r.status} | {r.detail.replace('|', '/')} |" for r in rows]
    )
    summary = f"total {total:.1f} s" + (
        " (over the 90 s target)" if total > 90 and not args.cpu else ""
    )
    out("")
    for r in rows:
        out(r.line())
    out(summary)
    if os.environ.get("OUT"):
        path = Path(os.environ["OUT"]) / "device_check.md"
        path.write_text(f"# device_check\n\n{table}\n\n{summary}\n", encoding="utf-8")
        out(f"wrote {path}")
    return 1 if any(r.status == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
