import pickle

from cmrssp.errors import InputError


def test_message_names_the_file_and_survives_pickling():
    error = InputError("/data/x.nii.gz", "truncated")
    assert str(error) == "/data/x.nii.gz: truncated"
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(copy, InputError) and str(copy) == str(error) and copy.path == error.path
    assert str(InputError(None, "bad value")) == "bad value"


def test_read_text_names_the_file_and_the_problem(tmp_path):
    import pytest

    from cmrssp.errors import InputError, read_text

    good = tmp_path / "a.txt"
    good.write_text("hello", encoding="utf-8")
    assert read_text(good, "split file") == "hello"
    with pytest.raises(InputError, match=r"b.txt: split file not found \(make one first\)"):
        read_text(tmp_path / "b.txt", "split file", missing_hint="make one first")
    bad = tmp_path / "c.txt"
    bad.write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(InputError, match="unreadable split file"):
        read_text(bad, "split file")
