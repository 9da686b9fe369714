import pickle

from cmrssp.errors import InputError


def test_message_names_the_file_and_survives_pickling():
    error = InputError("/data/x.nii.gz", "truncated")
    assert str(error) == "/data/x.nii.gz: truncated"
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(copy, InputError) and str(copy) == str(error) and copy.path == error.path
    assert str(InputError(None, "bad value")) == "bad value"
