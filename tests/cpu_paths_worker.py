"""Every CPU path once, in a fresh process: `python tests/cpu_paths_worker.py MODE OUT_DIR`.

MODE "blocked" makes triton unimportable before anything else runs (`sys.modules["triton"] =
None`: `import triton` raises ImportError and `importlib.util.find_spec("triton")` gives None, as
on a machine with CPU-only torch); MODE "plain" leaves the environment as it is. The worker then
imports fastllm, trains and uses a tokenizer, tokenizes a corpus into shards, trains a tiny MiniGPT
with the Trainer, evaluates it, generates with `generate` and the Engine, calls `fastllm.attention`,
and runs the same steps through the CLI (`tokenizer train`, `tokenize`, `train`, `eval`,
`generate`, in process with click's runner). It prints one JSON object of every number it got;
tests/test_without_triton.py runs both modes and compares them.
"""

from __future__ import annotations

import sys

MODE, OUT = sys.argv[1], sys.argv[2]
if MODE == "blocked":
    sys.modules["triton"] = None  # type: ignore[assignment]

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import fastllm  # noqa: E402
from fastllm import BPETokenizer  # noqa: E402

result: dict = {"torch_after_import": "torch" in sys.modules}
out = Path(OUT)
corpus = out / "corpus.txt"
lines = [f"the {w} fox jumps over the lazy dog number {i % 7}." for i, w in enumerate(["quick", "slow"] * 60)]
corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")

# tokenizer (Rust), API
tok = BPETokenizer.train(lines, 300, special_tokens=["<|endoftext|>"], show_progress=False)
tok.save(out / "tok.json")
result["merges"] = [list(m) for m in tok.merges]
result["ids"] = tok.encode("the quick fox jumps over the lazy dog")

import torch  # noqa: E402

torch.set_num_threads(1)
from fastllm import (  # noqa: E402
    Engine,
    MiniGPT,
    MiniGPTConfig,
    SamplingParams,
    TokenDataset,
    TrainConfig,
    Trainer,
    kernels,
)
from fastllm.data.tokenize import tokenize_to_shards  # noqa: E402
from fastllm.generation import generate  # noqa: E402

# shards, training, evaluation, generation, API
stats = tokenize_to_shards([corpus], out / "shards", tokenizer=out / "tok.json", val_fraction=0.1)
result["documents"] = stats.documents
torch.manual_seed(0)
model = MiniGPT(MiniGPTConfig.preset("tiny", vocab_size=tok.vocab_size, context=32))
config = TrainConfig(
    out_dir=str(out / "api-run"),
    max_steps=3,
    batch_size=2,
    lr=3e-3,
    warmup_steps=1,
    dtype="float32",
    device="cpu",
    progress=False,
    peak_flops=1e12,
    log_interval=1,
    checkpoint_interval=0,
    eval_interval=0,
    eval_batches=2,
)
fit = Trainer(
    model,
    TokenDataset(out / "shards", context=32),
    val_data=TokenDataset(out / "shards", context=32, split="val"),
    config=config,
).fit()
result["train_loss"] = fit.loss
result["val_loss"] = fit.val_loss
model.eval()
prompt = tok.encode("the quick")
result["prompt"] = prompt
greedy = SamplingParams(max_new_tokens=8, temperature=0)
result["generate"] = generate(model, [prompt], greedy)[0].tolist()
result["engine"] = Engine(model, tokenizer=tok, block_size=16).generate(["the slow"], greedy)[0].token_ids
g = torch.Generator().manual_seed(0)
q, k, v = (torch.randn(1, 2, 5, 16, generator=g) for _ in range(3))
result["attention"] = fastllm.attention(q, k, v).flatten().tolist()
result["kernels_available"] = kernels.is_available()
try:
    kernels.flash_attention(q, k, v)
except ImportError as e:
    result["kernel_error"] = f"ImportError: {e}"
except ValueError as e:  # triton present: CPU tensors outside its interpreter
    result["kernel_error"] = f"ValueError: {e}"

# the same steps through the command line
from click.testing import CliRunner  # noqa: E402

from fastllm.cli import main  # noqa: E402

runner = CliRunner()


def cli(*args) -> str:
    r = runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, (args, r.output)
    return r.stdout


special = ["--special-token", "<|endoftext|>"]
cli("tokenizer", "train", corpus, "--vocab-size", 300, "-o", out / "cli-tok.json", *special, "--quiet")
result["cli_tokenizer"] = BPETokenizer.from_file(out / "cli-tok.json").encode("the lazy dog number 3.")
cli("tokenize", corpus, "-o", out / "cli-shards", "--tokenizer", out / "cli-tok.json", "--val-fraction", 0.1)
cli(
    "train",
    "--data",
    out / "cli-shards",
    "--preset",
    "tiny",
    "--context",
    32,
    "--max-steps",
    2,
    "--batch-size",
    2,
    "--warmup-steps",
    1,
    "--dtype",
    "float32",
    "--device",
    "cpu",
    "--no-progress",
    "--peak-flops",
    1e12,
    "--out-dir",
    out / "cli-run",
)
evaluation = json.loads(
    cli("eval", out / "cli-run" / "model", "--data", out / "cli-shards", "--batch-size", 2, "--json")
)
result["cli_eval"] = {k: v for k, v in evaluation.items() if k != "checkpoint"}  # the path differs
result["cli_generate"] = cli(
    "generate",
    "the quick",
    "--checkpoint",
    out / "cli-run" / "model",
    "--tokenizer",
    out / "cli-tok.json",
    "--temperature",
    0,
    "--max-new-tokens",
    8,
)
result["triton_blocked"] = "triton" in sys.modules and sys.modules["triton"] is None  # still blocked
print(json.dumps(result))
