"""Invite codes as people see them: hard to guess, easy to type, typos caught before any lookup.

invite_svc makes and looks them up; web_svc checks what a person types before asking it.

A code is `length` symbols drawn with a CSPRNG from a 32-symbol alphabet without 0/O/1/I (40
bits at the default 8), plus one check symbol, shown as `XXXX-XXXX-C`.

The check symbol is a Damm check over a totally anti-symmetric quasigroup of order 32: with
GF(32) built on x^5 + x^2 + 1 and g its generator, `x * y = g.x + y`. Each row and column of * is
a permutation (so any single substitution changes the result) and `(c*x)*y = (c*y)*x` forces
`x = y` (so any adjacent swap does too); tests/unit/mesh/test_invite_codes.py proves both
exhaustively. The check symbol `k` makes the whole code fold to 0: `interim * k = 0`, i.e.
`k = g.interim` (addition in GF(2^5) is XOR).
"""

from __future__ import annotations

import secrets

ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
DEFAULT_LENGTH = 8
_INDEX = {symbol: index for index, symbol in enumerate(ALPHABET)}
_NEVER_USED = frozenset("0O1I")
_SEPARATORS = frozenset(" -_\t")
_FIELD_POLYNOMIAL = 0b100101  # x^5 + x^2 + 1, primitive over GF(2)


def _times_alpha(value: int) -> int:
    shifted = value << 1
    return shifted ^ _FIELD_POLYNOMIAL if shifted & 0b100000 else shifted


OPERATION: tuple[tuple[int, ...], ...] = tuple(tuple(_times_alpha(x) ^ y for y in range(32)) for x in range(32))
"""`OPERATION[x][y]` is `x * y`."""


class InvalidCode(Exception):
    """Input that cannot be a code, caught before any lookup."""

    def __init__(self, reason: str, description: str) -> None:
        super().__init__(description)
        self.reason = reason
        """INVITE_CODE_MALFORMED, INVITE_CODE_AMBIGUOUS_SYMBOL or INVITE_CODE_TYPO."""
        self.description = description


def _fold(symbols: str) -> int:
    interim = 0
    for symbol in symbols:
        interim = OPERATION[interim][_INDEX[symbol]]
    return interim


def check_symbol(body: str) -> str:
    """The symbol that makes `body` + it fold to 0."""
    return ALPHABET[_times_alpha(_fold(body))]


def generate(length: int = DEFAULT_LENGTH) -> str:
    """A fresh code in canonical form (no separators), check symbol included."""
    body = "".join(secrets.choice(ALPHABET) for _ in range(length))
    return body + check_symbol(body)


def normalize(typed: str, length: int = DEFAULT_LENGTH) -> str:
    """The canonical form of a typed code: upper case, no spaces or dashes, check symbol verified."""
    compact = "".join(symbol for symbol in typed.upper() if symbol not in _SEPARATORS)
    ambiguous = sorted(set(compact) & _NEVER_USED)
    if ambiguous:
        raise InvalidCode(
            "INVITE_CODE_AMBIGUOUS_SYMBOL",
            f"codes never contain {', '.join(ambiguous)}: they use 2-9 and A-Z without O and I, "
            "so a 0 is probably a Q or D and a 1 probably an L or 7",
        )
    if any(symbol not in _INDEX for symbol in compact):
        raise InvalidCode("INVITE_CODE_MALFORMED", "codes contain only the digits 2-9 and the letters A-Z")
    if len(compact) != length + 1:
        raise InvalidCode("INVITE_CODE_MALFORMED", f"a code has {length + 1} symbols, not {len(compact)}")
    if _fold(compact) != 0:
        raise InvalidCode("INVITE_CODE_TYPO", "this code has a typo: please check each symbol")
    return compact


def display(code: str) -> str:
    """`ABCDEFGHJ` → `ABCD-EFGH-J`: groups of four, then the check symbol."""
    body, check = code[:-1], code[-1]
    groups = [body[start : start + 4] for start in range(0, len(body), 4)]
    return "-".join([*groups, check])
