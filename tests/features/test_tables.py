"""User files: a non-UTF-8 file and a header-only file get a clear error naming the file."""

from __future__ import annotations

import pytest

from offerlift.features.errors import DataError
from offerlift.features.tables import read_table


def test_a_file_that_is_not_utf8_gets_a_clear_error(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("city,x\nM\xfcnchen,1\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.csv.*not UTF-8"):
        read_table(path)


def test_a_header_only_file_gets_a_clear_error(tmp_path):
    path = tmp_path / "header.csv"
    path.write_text("segment,visit,recency\n")
    with pytest.raises(DataError, match=r"header\.csv.*has a header \(segment, visit, recency\) but no rows"):
        read_table(path)


def test_an_empty_file_gets_a_clear_error(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(DataError, match=r"empty\.csv.*is empty"):
        read_table(path)
