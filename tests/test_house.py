"""The shared helpers every module leans on: `fastllm._io` (atomic writes) and `fastllm._checks`.

Oracles: the file system itself (what is on disk after a write that succeeds, raises, or meets a
symlink; the mode a plain `open(path, "w")` gets under the same umask) for `atomic_path` /
`write_atomic`; for the checks, the contract their module docstring
states, written here as plain comparisons (bounds inclusive unless `*_open`; a bool is never a
number; a wrong type raises TypeError, an out-of-range value ValueError, both naming the argument)
and checked by hypothesis over arbitrary values, bounds and argument names.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fastllm._checks import (
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_optional_int,
    check_texts,
    check_type,
    check_vocab_pair,
)
from fastllm._io import atomic_path, write_atomic

# ------------------------------------------------------------------ atomic writes


class _Boom(Exception):
    pass


@pytest.mark.parametrize("existing", [None, b"old contents"])
def test_atomic_path_under_an_exception_leaves_the_target_untouched(tmp_path, existing):
    target = tmp_path / "out.bin"
    if existing is not None:
        target.write_bytes(existing)
    with pytest.raises(_Boom), atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.is_file() and tmp != target
        tmp.write_bytes(b"half of the new con")
        raise _Boom
    assert (target.read_bytes() if target.exists() else None) == existing
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if existing is None else ["out.bin"])


def test_atomic_path_under_keyboard_interrupt_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("new")
        raise KeyboardInterrupt
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_path_when_the_writer_removes_its_temporary(tmp_path):
    """A writer that renames or deletes the temporary itself makes the rename fail: the target stays."""
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(FileNotFoundError), atomic_path(target) as tmp:
        tmp.unlink()
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_path_creates_the_folder_and_replaces(tmp_path):
    target = tmp_path / "a" / "b" / "out.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("one")
    with atomic_path(target) as tmp:
        assert tmp.read_bytes() == b""  # a fresh temporary, not a copy of the target
        tmp.write_text("two")
    assert target.read_text() == "two" and [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_atomic_path_replaces_a_symlink_instead_of_writing_through_it(tmp_path):
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("not yours")
    link = tmp_path / "out.txt"
    link.symlink_to(elsewhere)
    write_atomic(link, "mine")
    assert elsewhere.read_text() == "not yours"
    assert not link.is_symlink() and link.read_text() == "mine"


@given(
    data=st.one_of(
        st.text(max_size=50),
        st.binary(max_size=50),
        st.lists(st.binary(max_size=10), max_size=5),
    )
)
def test_write_atomic_writes_text_bytes_and_chunks(tmp_path_factory, data):
    target = tmp_path_factory.mktemp("w") / "out"
    write_atomic(target, data if not isinstance(data, list) else iter(data))
    expected = (
        data.encode("utf-8") if isinstance(data, str) else b"".join(data) if isinstance(data, list) else data
    )
    assert target.read_bytes() == expected
    assert os.listdir(target.parent) == ["out"]


def test_write_atomic_failing_chunks_leave_the_target(tmp_path):
    target = tmp_path / "out"
    target.write_bytes(b"old")

    def chunks():
        yield b"new"
        raise _Boom

    with pytest.raises(_Boom):
        write_atomic(target, chunks())
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["out"]


@pytest.fixture
def umask():
    """Set the process umask for one test (restored after)."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077, 0o027, 0o000])
@pytest.mark.parametrize("proc", [True, False], ids=["proc", "fallback"])
def test_atomic_writes_honour_the_umask_for_new_files(tmp_path, umask, monkeypatch, mask, proc):
    """A new file gets what `open(path, "w")` would give it (0o666 & ~umask), not mkstemp's 0600;
    read from /proc, or from the value taken at import where /proc cannot tell."""
    import fastllm._io as io

    umask(mask)
    if not proc or io._umask_from_proc() is None:  # (a system without /proc: the fallback only)
        monkeypatch.setattr(io, "_umask_from_proc", lambda: None)
        monkeypatch.setattr(io, "_IMPORT_UMASK", mask)
    assert io.current_umask() == mask
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # the oracle: the mode the OS gives a plain new file
    write_atomic(tmp_path / "new.txt", "x")
    with atomic_path(tmp_path / "via_path.bin") as tmp:
        tmp.write_bytes(b"x")
        assert tmp.stat().st_mode & 0o777 == 0o600  # private while being written
    for name in ("new.txt", "via_path.bin"):
        mode = (tmp_path / name).stat().st_mode & 0o777
        assert mode == 0o666 & ~mask == plain.stat().st_mode & 0o777, (name, oct(mode))


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("existing", [0o600, 0o640, 0o644, 0o444, 0o755])
def test_atomic_writes_keep_the_mode_of_the_file_they_replace(tmp_path, umask, existing):
    umask(0o022)
    target = tmp_path / "out.txt"
    target.write_text("old")
    target.chmod(existing)
    write_atomic(target, "new")
    assert target.read_text() == "new" and target.stat().st_mode & 0o777 == existing


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_atomic_writes_over_a_symlink_take_the_umask_not_the_links_mode(tmp_path, umask):
    umask(0o027)
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("not yours")
    elsewhere.chmod(0o600)
    link = tmp_path / "out.txt"
    link.symlink_to(elsewhere)
    write_atomic(link, "mine")
    assert not link.is_symlink() and link.stat().st_mode & 0o777 == 0o640
    assert elsewhere.stat().st_mode & 0o777 == 0o600


# ------------------------------------------------------------------ argument checks

names = st.from_regex(r"[a-z_][a-z0-9_]{0,12}", fullmatch=True)
bounds = st.one_of(st.none(), st.integers(-1000, 1000))
# Values that are bools in every spelling a caller may hand over.
BOOLS = [True, False, np.True_, np.False_, torch.tensor(True)]
NOT_NUMBERS = ["3", b"3", None, [3], (3,), {"n": 3}, 3j, object()]


def _int_in_range(v: int, lo: int | None, hi: int | None, max_open: bool) -> bool:
    return (lo is None or v >= lo) and (hi is None or (v < hi if max_open else v <= hi))


@given(v=st.integers(-2000, 2000), lo=bounds, hi=bounds, max_open=st.booleans(), name=names)
def test_check_int_bounds_are_exactly_as_documented(v, lo, hi, max_open, name):
    if _int_in_range(v, lo, hi, max_open):
        out = check_int(v, name, minimum=lo, maximum=hi, max_open=max_open)
        assert out == v and type(out) is int
    else:
        with pytest.raises(ValueError) as info:
            check_int(v, name, minimum=lo, maximum=hi, max_open=max_open)
        assert str(info.value).startswith(f"{name}={v} is out of range")


@given(v=st.integers(-10, 10), lo=st.integers(-10, 10))
def test_check_int_bound_edges(v, lo):
    """The minimum is always inclusive; the maximum inclusive unless max_open."""
    assert (check_int(lo, "n", minimum=lo) == lo) and (check_int(lo, "n", maximum=lo) == lo)
    with pytest.raises(ValueError, match=r"n=.* < "):
        check_int(lo, "n", maximum=lo, max_open=True)
    with pytest.raises(ValueError, match=r">= "):
        check_int(lo - 1, "n", minimum=lo)


@given(name=names, value=st.sampled_from(BOOLS), lo=bounds)
def test_a_bool_is_never_a_number(name, value, lo):
    for check in (check_int, check_optional_int, check_float):
        with pytest.raises(TypeError) as info:
            check(value, name, minimum=lo)
        assert str(info.value).startswith(f"{name} must be ")
    with pytest.raises(TypeError, match=name):
        check_choice(value, name, (0, 1))


@given(name=names, value=st.one_of(st.floats(), st.sampled_from(NOT_NUMBERS)))
def test_check_int_rejects_non_integers_with_a_type_error(name, value):
    with pytest.raises(TypeError) as info:
        check_int(value, name)
    assert str(info.value) == f"{name} must be an int, not {type(value).__name__}"


@pytest.mark.parametrize("value", [np.int64(7), np.uint8(7), torch.tensor(7)])
def test_check_int_accepts_integer_scalars_of_numpy_and_torch(value):
    out = check_int(value, "n", minimum=0)
    assert out == 7 and type(out) is int


@pytest.mark.parametrize("value", [torch.tensor(1.5), torch.tensor([1, 2]), np.float64(2.0), 2.0])
def test_check_int_rejects_float_and_vector_tensors_naming_the_argument(value):
    with pytest.raises(TypeError, match="^n must be an int"):
        check_int(value, "n")


@given(name=names, lo=bounds, hi=bounds)
def test_check_optional_int_passes_none_and_checks_the_rest(name, lo, hi):
    assert check_optional_int(None, name, minimum=lo, maximum=hi) is None
    with pytest.raises(TypeError, match=f"^{name} must be an int"):
        check_optional_int("1", name, minimum=lo, maximum=hi)


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
fbounds = st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False))


@given(v=finite, lo=fbounds, hi=fbounds, min_open=st.booleans(), max_open=st.booleans(), name=names)
def test_check_float_bounds_are_exactly_as_documented(v, lo, hi, min_open, max_open, name):
    ok = (lo is None or (v > lo if min_open else v >= lo)) and (
        hi is None or (v < hi if max_open else v <= hi)
    )
    if ok:
        out = check_float(v, name, minimum=lo, maximum=hi, min_open=min_open, max_open=max_open)
        assert out == v and type(out) is float
    else:
        with pytest.raises(ValueError) as info:
            check_float(v, name, minimum=lo, maximum=hi, min_open=min_open, max_open=max_open)
        assert str(info.value).startswith(f"{name}={v} is out of range")


@given(lo=st.floats(-100, 100, allow_nan=False), name=names)
def test_check_float_bound_edges(lo, name):
    assert check_float(lo, name, minimum=lo) == lo and check_float(lo, name, maximum=lo) == lo
    for kw in (dict(minimum=lo, min_open=True), dict(maximum=lo, max_open=True)):
        with pytest.raises(ValueError, match=f"^{name}="):
            check_float(lo, name, **kw)


@given(name=names, v=st.sampled_from([math.nan, math.inf, -math.inf, 10**400]))
def test_check_float_rejects_non_finite_values(name, v):
    with pytest.raises(ValueError) as info:
        check_float(v, name)
    assert str(info.value).startswith(name) and "finite" in str(info.value)


@given(name=names, v=st.integers(-(2**60), 2**60))
def test_check_float_takes_ints_as_floats(name, v):
    out = check_float(v, name)
    assert type(out) is float and out == float(v)


@given(name=names, value=st.sampled_from(NOT_NUMBERS + [torch.zeros(2)]))
def test_check_float_rejects_non_numbers_with_a_type_error(name, value):
    with pytest.raises(TypeError) as info:
        check_float(value, name)
    assert str(info.value) == f"{name} must be a number, not {type(value).__name__}"


@given(name=names, value=st.one_of(st.integers(), st.floats(), st.text(max_size=3), st.none()))
def test_check_bool_takes_only_bools(name, value):
    with pytest.raises(TypeError) as info:
        check_bool(value, name)
    assert str(info.value) == f"{name} must be a bool, not {type(value).__name__}"
    assert check_bool(True, name) is True and check_bool(False, name) is False


@given(name=names, value=st.one_of(st.integers(), st.text(max_size=3), st.none()))
def test_check_type_names_the_expected_types(name, value):
    if isinstance(value, str):
        assert check_type(value, name, str) is value
    else:
        with pytest.raises(TypeError) as info:
            check_type(value, name, (str, bytes))
        assert str(info.value) == f"{name} must be str or bytes, not {type(value).__name__}"


@given(
    name=names,
    choices=st.lists(st.text(max_size=4), min_size=1, max_size=4, unique=True),
    value=st.text(max_size=4),
)
def test_check_choice(name, choices, value):
    if value in choices:
        assert check_choice(value, name, choices) == value
    else:
        with pytest.raises(ValueError) as info:
            check_choice(value, name, choices)
        assert str(info.value).startswith(f"{name} must be one of ") and repr(value) in str(info.value)
    with pytest.raises(TypeError, match=f"^{name} must be one of"):
        check_choice(1, name, choices)


@given(
    items=st.lists(
        st.one_of(st.text(max_size=5), st.integers(), st.binary(max_size=3), st.none()), max_size=6
    )
)
def test_check_texts_names_the_first_item_that_is_not_a_str(items):
    bad = [i for i, t in enumerate(items) if not isinstance(t, str)]
    if not bad:
        assert check_texts(iter(items)) == items  # any iterable, returned as a list
    else:
        with pytest.raises(TypeError, match=rf"^docs\[{bad[0]}\] must be str, not "):
            check_texts(items, "docs")


@pytest.mark.parametrize("value", ["one text", b"bytes", 3, None])
def test_check_texts_refuses_a_single_text_or_a_non_iterable(value):
    with pytest.raises(TypeError, match="^texts must be a list of str, not "):
        check_texts(value)


@pytest.mark.parametrize(
    "ids,model,ok",
    [
        (50257, 50257, True),
        (50257, 50304, True),  # GPT-2 padded to a multiple of 64 (and of 128)
        (50257, 50388, False),  # past the next multiple of 128
        (1000, 4096, False),  # the case: another model's tokenizer
        (1000, 1024, True),
        (1000, 999, False),  # id 999 has no embedding
        (4096, 4096, True),
        (4096, 4097, False),  # a multiple of 128 already: no padding allowed
        (1, 128, True),
        (1, 129, False),
    ],
)
def test_check_vocab_pair_table(ids, model, ok):
    if ok:
        check_vocab_pair(ids, model)
    else:
        with pytest.raises(ValueError, match=rf"{ids:,} ids .*{model:,}"):
            check_vocab_pair(ids, model)


@given(ids=st.integers(1, 2**32), extra=st.integers(-300, 300))
def test_check_vocab_pair_accepts_exactly_every_id_embedded_plus_padding(ids, extra):
    model = ids + extra
    if model < 1:
        return
    fits = ids <= model and model <= math.ceil(ids / 128) * 128
    try:
        check_vocab_pair(ids, model, "the shards")
    except ValueError as e:
        assert not fits and str(e).startswith("the shards has")
    else:
        assert fits
