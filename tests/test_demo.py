"""`fastllm demo`: the whole pipeline on the embedded corpus and on a user's folder, resume, errors.

Oracles: the files the report points at are checked for what they claim (the PNGs decode as
images, the checkpoint loads with `MiniGPT.from_pretrained` and generates, the tokenizer
round-trips, `corpus.jsonl` holds exactly the kept documents and its duplicates are really gone,
the unigram entropy is recomputed from the shards), and a resumed run skips the finished stages
and ends where an uninterrupted run ends.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fastllm.cli import main
from fastllm.demo import DemoConfig, DemoInterrupted, run_demo
from fastllm.demo.report import PLOTS
from fastllm.demo.stages import STAGES, corpus_documents


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


QUICK = dict(max_docs=120, max_steps=24, eval_interval=12, gen_batches=(1, 2), gen_tokens=8, sample_tokens=8)


def _check_outputs(out, state):
    import matplotlib.image as mpimg

    from fastllm.data.shards import list_shards, load_shard
    from fastllm.model.gpt import MiniGPT
    from fastllm.tokenizer import BPETokenizer

    assert set(state["stages"]) == set(STAGES)
    report = (out / "report.md").read_text()
    for plot in PLOTS:
        assert f"({plot})" in report
        img = mpimg.imread(out / plot)  # decodes: a real PNG
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    d = state["stages"]["dedup"]
    kept = [json.loads(line) for line in (out / "corpus.jsonl").read_text().splitlines()]
    assert (
        len(kept) == d["docs_out"]
        and d["docs_out"] + d["exact_duplicates"] + d["near_duplicates"] == d["docs_in"]
    )
    texts = [k["text"] for k in kept]
    assert len(set(texts)) == len(texts)  # no exact duplicate survived
    tok = BPETokenizer.from_file(out / "tokenizer.json")
    assert tok.vocab_size == state["settings"]["vocab_size"] and tok.decode(tok.encode(texts[0])) == texts[0]
    counts = np.zeros(tok.vocab_size, dtype=np.int64)
    for header in list_shards(out / "shards", "train"):
        counts += np.bincount(load_shard(header).astype(np.int64), minlength=tok.vocab_size)
    p = counts[counts > 0] / counts.sum()
    assert state["stages"]["tokenize"]["unigram_entropy"] == pytest.approx(
        float(-(p * np.log(p)).sum()), rel=1e-9
    )
    model = MiniGPT.from_pretrained(out / "train" / "model").eval()
    ids = tok.encode("def ")
    new = model.generate([ids], 5, temperature=0)[0]
    assert len(new) == len(ids) + 5
    assert "val_loss" in state["stages"]["train"] and (out / "samples.md").is_file()
    assert all(r["tokens_per_s"] > 0 for r in state["stages"]["generate"]["throughput"])


def test_quick_demo_end_to_end_on_the_standard_library(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative --out: the printed paths must work from here
    result = CliRunner().invoke(main, ["demo", "--quick", "--quiet", "--out", "demo"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "demo"
    for stage in ("dedup:", "tokenizer:", "tokenize:", "train:", "generate:", "report:"):
        assert stage in result.output
    state = json.loads((out / "state.json").read_text())
    _check_outputs(out, state)
    # the quick run's model has learned something: validation loss under the unigram entropy
    assert state["stages"]["train"]["val_loss"] < state["stages"]["tokenize"]["unigram_entropy"]
    # the printed command works from the folder the demo ran in, the report's from any folder
    printed = [line for line in result.output.splitlines() if line.startswith("try: fastllm generate ")]
    assert len(printed) == 1
    report = (out / "report.md").read_text()
    in_report = [line for line in report.splitlines() if line.startswith("fastllm generate ")]
    assert len(in_report) == 1
    for command, cwd in (
        (printed[0][len("try: ") :], tmp_path),
        (in_report[0], tmp_path / "demo" / "shards"),
    ):
        monkeypatch.chdir(cwd)
        args = shlex.split(command)[1:]
        for flag in ("--checkpoint", "--tokenizer"):
            assert Path(args[args.index(flag) + 1]).exists(), (command, cwd)
        gen = CliRunner().invoke(main, [*args, "--max-new-tokens", "5", "--seed", "0"])
        assert gen.exit_code == 0, gen.output
    monkeypatch.chdir(tmp_path)
    again = CliRunner().invoke(main, ["demo", "--quick", "--out", "demo"])
    assert again.exit_code == 1 and "already holds a demo run; pass --resume" in again.output
    _check_report_says_what_was_done(out, state, result.output)


def _check_report_says_what_was_done(out, state, output):
    """The report's words against the run's figures: what the validation loss is over, how the
    samples were made, why batch 1 is faster, where the time went; the summary lines say each
    figure once."""
    from fastllm.data.dataset import TokenDataset
    from fastllm.train.trainer import eval_windows

    cfg = DemoConfig.from_dict(state["settings"])
    report = (out / "report.md").read_text()
    train, gen = state["stages"]["train"], state["stages"]["generate"]
    val = TokenDataset(out / "shards", cfg.context, split="val")
    windows = eval_windows(val, cfg.eval_batches * train["batch_size"], cfg.seed)
    ev = train["eval"]
    assert (ev["windows"], ev["of_windows"], ev["sampled"]) == (
        len(windows),
        len(val),
        len(windows) < len(val),
    )
    assert ev["sampled"] and ev["tokens"] == len(windows) * cfg.context and ev["split_tokens"] == val.tokens
    assert (
        f"over {len(windows):,} windows of {cfg.context} tokens ({len(windows) * cfg.context:,} tokens) "
        f"drawn at random with seed {cfg.seed} from the {len(val):,} windows ({val.tokens:,} tokens)"
    ) in report
    assert f"({len(windows):,} of {len(val):,} validation windows, seed {cfg.seed})" in output
    # the samples are under a heading that says how they were made, and none says "Greedy" over them
    heading = [line for line in report.splitlines() if line.startswith("### Samples")]
    assert heading == [
        f"### Samples: temperature 0.8, top-k 50 (not greedy), seed {cfg.seed} + the prompt's index "
        "(`samples.md`)"
    ]
    samples_at = report.index(heading[0])
    assert "reedy" not in report[samples_at:].replace("(not greedy)", "")
    assert gen["sampling"] == {"temperature": 0.8, "top_k": 50, "seed": cfg.seed}
    # the batch-1 step is named, and the dip it causes is explained next to the table
    steps = {r["batch"]: r["step"] for r in gen["throughput"]}
    assert steps == {1: "rust", 2: "torch", 4: "torch"}
    assert "| 1 | " in report and "Rust one-sequence step |" in report
    assert "That dip is the switch between the two steps, not a fault" in report
    # each stage's wall time, in the state and the report
    assert list(state["timings"]) == list(STAGES) and all(t > 0 for t in state["timings"].values())
    assert "## Time" in report and f"| train | {state['timings']['train']:,.1f} |" in report
    # the generate line names each batch size at most once ("10,053 at batch 1, 10,053 at batch 1")
    line = next(x for x in output.splitlines() if x.startswith("generate:"))
    named = re.findall(r"at batch (\d+)", line)
    assert named and len(named) == len(set(named)), line


def test_resume_after_ctrl_c_in_training(tmp_path, monkeypatch):
    """Ctrl-C in the train stage (a real SIGINT: the Trainer finishes the step and saves) keeps
    the finished stages; --resume skips them and continues from the checkpoint."""
    from fastllm.train.trainer import Trainer

    out = tmp_path / "demo"
    cfg = DemoConfig.quick(**QUICK)
    step = Trainer.step
    calls = {"n": 0}

    def interrupting_step(self):
        calls["n"] += 1
        if calls["n"] == 7:
            os.kill(os.getpid(), signal.SIGINT)
        return step(self)

    monkeypatch.setattr(Trainer, "step", interrupting_step)
    with pytest.raises(DemoInterrupted, match="interrupted during the train stage"):
        run_demo(cfg, out, progress=False, say=lambda s: None)
    state = json.loads((out / "state.json").read_text())
    assert list(state["stages"]) == ["dedup", "tokenizer", "tokenize"]
    assert list((out / "train" / "checkpoints").glob("step_*.pt"))
    monkeypatch.setattr(Trainer, "step", step)
    lines: list[str] = []
    resumed = run_demo(cfg, out, resume=True, progress=False, say=lines.append)
    assert resumed.ran == ["train", "generate"]
    assert sum("done before (resumed)" in line for line in lines) == 3
    train = resumed.state["stages"]["train"]
    assert train["steps"] == cfg.max_steps
    # the resumed run ends where an uninterrupted one does (exact resume of the Trainer)
    whole = run_demo(cfg, tmp_path / "whole", progress=False, say=lambda s: None).state["stages"]["train"]
    assert train["val_loss"] == pytest.approx(whole["val_loss"], rel=1e-6)
    _check_outputs(out, resumed.state)
    with pytest.raises(ValueError, match="other settings than the run .* max_steps was 24, now 30"):
        run_demo(
            DemoConfig.quick(**{**QUICK, "max_steps": 30}),
            out,
            resume=True,
            progress=False,
            say=lambda s: None,
        )


def test_interrupt_between_stages_keeps_the_finished_ones(tmp_path, monkeypatch):
    import fastllm.demo.stages as demo

    out = tmp_path / "demo"
    cfg = DemoConfig.quick(**QUICK)

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    real = demo.stage_tokenize
    monkeypatch.setattr(demo, "stage_tokenize", ctrl_c)
    with pytest.raises(DemoInterrupted, match="tokenize stage"):
        run_demo(cfg, out, progress=False, say=lambda s: None)
    assert list(json.loads((out / "state.json").read_text())["stages"]) == ["dedup", "tokenizer"]
    assert (out / "report.md").exists() is False
    monkeypatch.setattr(demo, "stage_tokenize", real)
    result = CliRunner().invoke(
        main,
        ["demo", "--quick", "--quiet", "--resume", "--out", str(out), "--max-docs", "120", "--steps", "24"],
    )
    # the CLI's quick settings differ from QUICK in other fields: --resume refuses, naming one
    assert result.exit_code == 1 and "other settings" in result.output
    # `--resume` alone carries on with the run's own settings
    result = CliRunner().invoke(main, ["demo", "--resume", "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (
        "dedup: done before (resumed)" in result.output
        and "tokenizer: done before (resumed)" in result.output
    )
    state = json.loads((out / "state.json").read_text())
    assert state["settings"] == cfg.to_dict() and list(state["stages"]) == list(STAGES)


def test_user_corpus_folder(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(300)]
    base = " ".join(rng.choice(words, 400))
    for i in range(12):
        (corpus / f"doc{i}.txt").write_text(" ".join(rng.choice(words, 400)) + "\n")
    (corpus / "sub" / "copy.txt").write_text(base + "\n")
    (corpus / "sub" / "near.txt").write_text(base.replace(words[0], "zz", 1) + "\n")  # a near duplicate
    (corpus / "sub" / "again.txt").write_text(base + "\n")  # an exact duplicate
    (corpus / "binary.bin").write_bytes(b"\xff\xfe\x00bad")  # not UTF-8: skipped and counted
    record = json.dumps({"text": " ".join(rng.choice(words, 400))})
    (corpus / "notes.jsonl").write_text(f"{record}\nnot json\n")  # one document, one bad line
    (corpus / ".hidden.txt").write_text(base)  # hidden files are not read
    out = tmp_path / "demo"
    lines: list[str] = []
    state = run_demo(
        DemoConfig.quick(
            corpus=str(corpus),
            max_steps=10,
            eval_interval=5,
            gen_batches=(1,),
            gen_tokens=4,
            sample_tokens=4,
            compression_sizes=(300, 400),
        ),
        out,
        threads=1,
        progress=False,
        say=lines.append,
    ).state
    assert state["stages"]["train"]["threads"] == 1 and state["stages"]["train"]["threads_measured"] == {}
    d = state["stages"]["dedup"]
    assert (
        d["docs_in"] == 16
        and d["exact_duplicates"] == 1
        and d["near_duplicates"] == 1
        and d["docs_out"] == 14
    )
    # the demo skips what is not text, and says so: in its first line, its figures and the report
    assert d["invalid"] == 2 and [r.split(": ")[0] for r in d["invalid_examples"]] == [
        str(corpus / "binary.bin"),
        f"{corpus / 'notes.jsonl'}:2",
    ]
    assert "2 invalid records skipped (first: " in lines[0] and "binary.bin" in lines[0]
    # one batch size timed: the generate line names it once
    assert [line.count("at batch") for line in lines if line.startswith("generate:")] == [1]
    assert "2 records that are not text were skipped" in (out / "report.md").read_text()
    assert d["cluster_sizes"] == [3]
    assert {m.split("/")[-1] for m in d["largest_clusters"][0]["members"]} == {
        "copy.txt",
        "near.txt",
        "again.txt",
    }
    _check_outputs(out, state)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing", "corpus not found"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "has 0 non-empty UTF-8 document"),
        (
            lambda p: (p / "blank.txt").write_text("\n\n   \n") and p / "blank.txt",
            "has 0 non-empty UTF-8 document",
        ),
    ],
)
def test_missing_or_empty_corpus_is_a_clear_error(tmp_path, make, message):
    path = make(tmp_path)
    result = CliRunner().invoke(
        main, ["demo", "--quick", "--corpus", str(path), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    with pytest.raises((FileNotFoundError, ValueError), match=message):
        corpus_documents(str(path))


def test_bad_out_and_resume_without_a_run(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    r = CliRunner().invoke(main, ["demo", "--quick", "--out", str(f)])
    assert r.exit_code == 1 and "is a file, not a folder" in r.output
    r = CliRunner().invoke(main, ["demo", "--quick", "--resume", "--out", str(tmp_path / "none")])
    assert r.exit_code == 1 and "nothing to resume" in r.output
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep me")
    r = CliRunner().invoke(main, ["demo", "--quick", "--out", str(busy)])
    assert r.exit_code == 1 and "not empty and holds no demo run" in r.output
    r = CliRunner().invoke(main, ["demo", "--quick", "--device", "tpu", "--out", str(tmp_path / "d")])
    assert r.exit_code == 1 and "device must be" in r.output


def test_stdlib_corpus_has_the_charmap_near_duplicates():
    docs, _ = corpus_documents(None)
    texts, sources = [d.text for d in docs], [d.where for d in docs]
    assert len(texts) > 500 and any(s.startswith("pydoc_data/topics:") for s in sources)
    from fastllm.data.dedup import MinHashDeduper

    codecs = [
        i for i, s in enumerate(sources) if s.startswith("encodings/cp") or s.startswith("encodings/mac_")
    ]
    r = MinHashDeduper(threshold=0.8).dedup([texts[i] for i in codecs])
    assert (
        len(r.clusters) >= 1 and int((~r.keep).sum()) >= 5
    )  # the charmap codecs are near copies of each other


@pytest.mark.parametrize(
    "name, value, error, message",
    [
        ("context", 0, ValueError, "context=0 is out of range: it must be >= 1"),
        ("context", 2.0, TypeError, "context must be an int, not float"),
        ("n_head", True, TypeError, "n_head must be an int, not bool"),
        ("max_docs", 1, ValueError, "max_docs=1 is out of range: it must be >= 2"),
        (
            "dedup_threshold",
            1.0,
            ValueError,
            r"dedup_threshold=1.0 is out of range: it must be in \(0.0, 1.0\)",
        ),
        ("dedup_threshold", "0.8", TypeError, "dedup_threshold must be a number, not str"),
        ("vocab_size", 256, ValueError, "vocab_size=256 is out of range: it must be >= 257"),
        ("compression_sizes", (512, 100), ValueError, r"compression_sizes\[1\]=100 is out of range"),
        ("compression_sizes", 512, TypeError, "compression_sizes must be tuple or list, not int"),
        ("compression_sizes", (), ValueError, "compression_sizes is empty"),
        ("lr", 0.0, ValueError, r"lr=0.0 is out of range: it must be > 0.0"),
        ("warmup_steps", -1, ValueError, "warmup_steps=-1 is out of range: it must be >= 0"),
        ("seed", -1, ValueError, "seed=-1 is out of range"),
        ("sample_prompts", ("def ", 3), TypeError, r"sample_prompts\[1\] must be str, not int"),
        ("sample_prompts", ("",), ValueError, r"sample_prompts\[0\] is empty"),
        ("gen_batches", (1, 0), ValueError, r"gen_batches\[1\]=0 is out of range"),
        ("corpus", 3, TypeError, "corpus must be str or PathLike, not int"),
    ],
)
def test_demo_config_checks_every_setting(name, value, error, message):
    with pytest.raises(error, match=message):
        DemoConfig(**{name: value})
    with pytest.raises(error, match=message):  # a state.json edited by hand gets the same checks
        DemoConfig.from_dict({**DemoConfig.quick().to_dict(), name: value})


def test_demo_config_normalises_lists_and_paths(tmp_path):
    cfg = DemoConfig.quick(gen_batches=[1, 2], corpus=tmp_path)
    assert cfg.gen_batches == (1, 2) and cfg.corpus == str(tmp_path)
    assert DemoConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match=r"settings this fastllm does not know: \['colour'\]"):
        DemoConfig.from_dict({"colour": "blue"})
    with pytest.raises(TypeError, match="cfg must be DemoConfig, not dict"):
        run_demo(cfg.to_dict(), tmp_path / "o", progress=False, say=lambda s: None)
    with pytest.raises(TypeError, match="device must be str, not int"):
        run_demo(cfg, tmp_path / "o", device=0, progress=False, say=lambda s: None)
    with pytest.raises(ValueError, match="threads=0 is out of range: it must be >= 1"):
        run_demo(cfg, tmp_path / "o", threads=0, progress=False, say=lambda s: None)
    with pytest.raises(TypeError, match="threads must be an int, not str"):
        run_demo(cfg, tmp_path / "o", threads="2", progress=False, say=lambda s: None)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_missing_cuda_fails_before_any_stage(tmp_path, monkeypatch, device):
    import fastllm.demo.stages as demo

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in STAGES:
        monkeypatch.setattr(demo, f"stage_{name}", lambda *a, **k: pytest.fail("a stage ran"))
    out = tmp_path / "demo"
    r = CliRunner().invoke(main, ["demo", "--quick", "--device", device, "--out", str(out)])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert f"Error: device {device!r} asked for, but torch sees no CUDA device" in r.output
    assert not out.exists()  # nothing ran, nothing was written: a rerun needs no --resume


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--quick", "--full"], 2, "--quick and --full are two sizes of the demo: pass one of them"),
        (["--threads", "0"], 2, "Invalid value for '--threads'"),
        (["--steps", "0"], 2, "Invalid value for '--steps'"),
    ],
)
def test_bad_demo_flags(tmp_path, args, code, message):
    r = CliRunner().invoke(main, ["demo", *args, "--out", str(tmp_path / "d")])
    assert r.exit_code == code and message in r.output and "Traceback" not in r.output
    assert not (tmp_path / "d").exists()


def test_full_is_the_longer_run_and_the_default_is_smaller():
    full, default, quick = DemoConfig.full(), DemoConfig(), DemoConfig.quick()
    assert (full.context, full.d_model, full.n_layer, full.max_steps) == (256, 192, 4, 800)

    def tokens_x_width(c):  # training cost grows with tokens seen and with the model's width
        return c.max_steps * c.batch_size * c.context * c.d_model

    assert tokens_x_width(quick) < tokens_x_width(default) < tokens_x_width(full) / 3
    assert DemoConfig.full(max_steps=5).max_steps == 5 and DemoConfig.full(max_steps=5).d_model == 192


def test_choose_threads_measures_and_leaves_the_model_as_it_was():
    from fastllm.demo.stages import choose_threads
    from fastllm.model.gpt import MiniGPT, MiniGPTConfig

    torch.manual_seed(0)
    model = MiniGPT(MiniGPTConfig(vocab_size=300, context=16, n_layer=1, n_head=2, d_model=32))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    assert choose_threads(model, 4) == (1, {})  # torch already on one thread: nothing to measure
    torch.set_num_threads(2)
    threads, seconds = choose_threads(model, 4)
    assert torch.get_num_threads() == 2 and set(seconds) == {1, 2} and threads in (1, 2)
    assert all(s > 0 for s in seconds.values())
    assert threads == (2 if seconds[2] < 0.85 * seconds[1] else 1)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters()) and model.training
    assert torch.equal(torch.get_rng_state(), rng)
