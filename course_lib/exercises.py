"""Checks for the notebooks' exercises: run the student's function on known cases.

A stub that still raises ``NotImplementedError`` is reported as "not attempted yet" (so the
notebook runs top to bottom before anyone has solved anything); a wrong answer raises an
AssertionError that says which case failed and what was expected.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch


def _close(got: Any, expected: Any, atol: float) -> bool:
    if isinstance(expected, (torch.Tensor, np.ndarray)) or isinstance(got, (torch.Tensor, np.ndarray)):
        got_t = torch.as_tensor(got, dtype=torch.float64)
        exp_t = torch.as_tensor(expected, dtype=torch.float64)
        return got_t.shape == exp_t.shape and bool(torch.allclose(got_t, exp_t, atol=atol, equal_nan=True))
    if isinstance(expected, dict) and isinstance(got, dict):  # {8: (22, 30)} and {8: [22, 30]} alike
        return set(got) == set(expected) and all(_close(got[k], expected[k], atol) for k in expected)
    if isinstance(expected, (tuple, list)) and isinstance(got, (tuple, list)):  # (10, 18) and [10, 18] alike
        return len(got) == len(expected) and all(_close(g, e, atol) for g, e in zip(got, expected))
    if isinstance(expected, float) or isinstance(got, float):
        if math.isnan(expected):
            return isinstance(got, float) and math.isnan(got)
        return got is not None and abs(float(got) - float(expected)) <= atol
    return got == expected


def check(fn: Callable, cases: Sequence[tuple[tuple, Any]], name: str | None = None,
          atol: float = 1e-6) -> bool:
    """Call ``fn(*args)`` for each ``(args, expected)``; print ✓ when all match.

    Returns False (and prints a hint) if ``fn`` raises NotImplementedError; raises
    AssertionError naming the first failing case otherwise, also when ``fn`` raises.
    """
    name = name or getattr(fn, "__name__", "your function")
    for i, (args, expected) in enumerate(cases):
        try:
            got = fn(*args)
        except NotImplementedError:
            print(f"… {name}: not attempted yet. Fill in the cell above and run this check again.")
            return False
        except Exception as e:  # a shape mismatch inside the answer: say which case, not a bare traceback
            raise AssertionError(f"{name}: case {i + 1} of {len(cases)} raised {type(e).__name__}: {e}") from e
        if not _close(got, expected, atol):
            raise AssertionError(f"{name}: case {i + 1} of {len(cases)} gave {got!r}, expected "
                                 f"{expected!r} (tolerance {atol}).")
    print(f"✓ {name}: all {len(cases)} cases correct.")
    return True
