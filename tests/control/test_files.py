"""simrec.infra.files: atomic writes."""

import json
import stat

import pytest

from simrec.infra.files import atomic_write, write_json_atomic


def test_an_atomic_write_gets_the_mode_open_would_give(tmp_path) -> None:
    """Not mkstemp's 0600: the serve image's user (or another pod's) reads what a step wrote."""
    plain = tmp_path / "plain.json"
    plain.write_text("{}")
    write_json_atomic(tmp_path / "atomic.json", {"a": 1})
    assert stat.S_IMODE((tmp_path / "atomic.json").stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    assert json.loads((tmp_path / "atomic.json").read_text()) == {"a": 1}


def test_a_failed_atomic_write_leaves_nothing(tmp_path) -> None:
    with pytest.raises(RuntimeError), atomic_write(tmp_path / "half.bin") as out:
        out.write(b"part")
        raise RuntimeError("cut short")
    assert list(tmp_path.iterdir()) == []
