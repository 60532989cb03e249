"""write_atomically: the target is replaced whole or left as it was."""

import pytest

from metacam.atomic import temporary_sibling, write_atomically


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out" / "scores.csv"
    write_atomically(target, lambda partial: partial.write_text("old,complete\n"))

    def torn(partial):
        partial.write_text("new,half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, torn)
    assert target.read_text() == "old,complete\n"
    assert [p.name for p in target.parent.iterdir()] == ["scores.csv"]


def test_temporary_names_are_hidden_unique_and_keep_the_suffix(tmp_path):
    first, second = temporary_sibling(tmp_path / "a.npz"), temporary_sibling(tmp_path / "a.npz")
    assert first != second and first.parent == tmp_path
    assert first.name.startswith(".a.") and first.name.endswith(".partial.npz")
