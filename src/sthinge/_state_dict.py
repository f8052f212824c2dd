"""Compare the tensors of a weights file with a module's state dict, in one wording for every loader.

Used by the CellFM loader, the official-HINGE loader and the histology encoders, so that a mismatched file is
described the same way whichever of them reads it. Works on anything with a ``.shape`` (torch tensors, numpy
arrays, meta tensors); imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


def listing(names: Iterable[str], n: int = 5) -> str:
    """``"[a, b, c, ...] (12 in all)"``: the first ``n`` names, sorted, and how many there are."""
    names = sorted(names)
    shown = ", ".join(names[:n])
    return f"[{shown}{', ...' if len(names) > n else ''}] ({len(names)} in all)"


@dataclass(frozen=True)
class KeyReport:
    """What separates a file's tensors from a module's: missing and unexpected keys, and mismatched shapes."""

    missing: list[str]
    unexpected: list[str]
    wrong_shape: list[str]  # "key [file shape] (file) vs [model shape] (model)"

    def key_problems(self) -> list[str]:
        """The missing and unexpected keys, one phrase each (empty when the names match)."""
        parts = []
        if self.missing:
            parts.append(f"missing keys {listing(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected keys {listing(self.unexpected)}")
        return parts

    def shape_problem(self) -> str | None:
        """One phrase naming the first mismatched shapes, or ``None``."""
        if not self.wrong_shape:
            return None
        shown = "; ".join(self.wrong_shape[:5]) + ("; ..." if len(self.wrong_shape) > 5 else "")
        return f"{len(self.wrong_shape)} tensor(s) have the wrong shape: {shown}"

    def problems(self) -> list[str]:
        """Every phrase: key problems, then the shape problem."""
        shape = self.shape_problem()
        return self.key_problems() + ([shape] if shape else [])


def compare_state_dict(expected: Mapping[str, Any], state: Mapping[str, Any], *, ignore: tuple[str, ...] = ()):
    """Compare ``state`` (the file's tensors) with ``expected`` (the module's); keys starting with ``ignore`` in the
    file are not counted as unexpected. Returns a :class:`KeyReport`."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected and not k.startswith(ignore)]
    wrong = [
        f"{k} {list(state[k].shape)} (file) vs {list(v.shape)} (model)"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    return KeyReport(missing, unexpected, wrong)
