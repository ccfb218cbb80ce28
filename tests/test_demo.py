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
import signal

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


def test_quick_demo_end_to_end_on_the_standard_library(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", "--quick", "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for stage in ("dedup:", "tokenizer:", "tokenize:", "train:", "generate:", "report:"):
        assert stage in result.output
    state = json.loads((out / "state.json").read_text())
    _check_outputs(out, state)
    # the quick run's model has learned something: validation loss under the unigram entropy
    assert state["stages"]["train"]["val_loss"] < state["stages"]["tokenize"]["unigram_entropy"]
    # the checkpoint works with the other commands
    gen = CliRunner().invoke(
        main,
        [
            "generate",
            "def ",
            "--checkpoint",
            str(out / "train" / "model"),
            "--tokenizer",
            str(out / "tokenizer.json"),
            "--max-new-tokens",
            "5",
            "--seed",
            "0",
        ],
    )
    assert gen.exit_code == 0, gen.output
    again = CliRunner().invoke(main, ["demo", "--quick", "--out", str(out)])
    assert again.exit_code == 1 and "already holds a demo run; pass --resume" in again.output


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
        progress=False,
        say=lines.append,
    ).state
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
    assert not (tmp_path / "o").exists()
