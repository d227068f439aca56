import pytest
import torch

from course_lib.exercises import check


def test_check_passes_flags_stub_and_fails_wrong(capsys):
    cases = [((2, 3), 5), ((0.1, 0.2), 0.3), ((torch.ones(2), torch.ones(2)), torch.full((2,), 2.0))]
    assert check(lambda a, b: a + b, cases, "add") is True
    assert "all 3 cases correct" in capsys.readouterr().out

    def stub(a, b):
        raise NotImplementedError

    assert check(stub, cases) is False
    assert "not attempted yet" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="case 1 of 3 gave -1, expected 5"):
        check(lambda a, b: a - b, cases, "add")
    assert check(lambda: float("nan"), [((), float("nan"))])


def test_check_compares_numpy_arrays_by_shape_and_value():
    import numpy as np

    mask = np.array([[True, False], [False, True]])
    assert check(lambda: mask.copy(), [((), mask)])
    with pytest.raises(AssertionError):
        check(lambda: ~mask, [((), mask)])
    with pytest.raises(AssertionError):
        check(lambda: mask[:1], [((), mask)])


def test_check_accepts_a_list_for_a_tuple():
    assert check(lambda: [10, 18], [((), (10, 18))])
    with pytest.raises(AssertionError):
        check(lambda: [10, 17], [((), (10, 18))])


def test_check_compares_dicts_key_by_key():
    expected = {8: (22, 30), 16: (11, 15)}
    assert check(lambda: {8: [22, 30], 16: torch.tensor([11, 15])}, [((), expected)])
    with pytest.raises(AssertionError):  # a wrong value
        check(lambda: {8: (22, 30), 16: (11, 16)}, [((), expected)])
    with pytest.raises(AssertionError):  # a missing key
        check(lambda: {8: (22, 30)}, [((), expected)])
    with pytest.raises(AssertionError):  # the right values under the wrong keys
        check(lambda: {"8": (22, 30), "16": (11, 15)}, [((), expected)])


def test_check_names_the_case_whose_answer_raises():
    def shape_bug(n):
        return torch.ones(n) + torch.ones(3)

    with pytest.raises(AssertionError, match="case 2 of 2 raised RuntimeError"):
        check(shape_bug, [((3,), torch.full((3,), 2.0)), ((4,), torch.full((4,), 2.0))], "shape_bug")
