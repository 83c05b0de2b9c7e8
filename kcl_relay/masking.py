"""Secrets out of repr, str, log lines and test diffs: a URL's password, secret query options, AWS keys.

Why a hand-written __eq__ (`masked_eq`) beside a masking __repr__: pytest explains a failed `a == b` of two
dataclasses whose __eq__ is the generated one by drilling into every differing field and printing its value, a
password or secret key included, however the class's own repr masks it. With an __eq__ of its own, pytest's
explanation stays at the masking repr.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, TypeVar

MASK = "***"
# A URL's user:password@ (the password up to the last @ before the host: an unencoded @ in it is masked too).
_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@?#]*):[^\s/?#]*@", re.ASCII)
# Query options that carry a secret (psycopg's password=, sslpassword=; anything named token or secret).
_SECRET_OPTION = re.compile(r"([?&][^=&#\s]*(?:password|passwd|secret|token)[^=&#\s]*=)[^&#\s]*", re.IGNORECASE)
# Environment variables of ours whose values are not secrets (everything else in an env mapping is masked).
PUBLIC_ENV = frozenset({"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID"})


def mask_secrets(text: str) -> str:
    """`text` with every URL password and secret query option replaced by ***; the rest kept as it was."""
    if "://" in text:
        text = _USERINFO.sub(rf"\1:{MASK}@", text)
    return _SECRET_OPTION.sub(rf"\1{MASK}", text)


def mask_env(env: Mapping[str, str]) -> dict[str, str]:
    """An environment for showing: the values of every variable but the few known not to be secrets masked."""
    return {name: value if name in PUBLIC_ENV else MASK for name, value in env.items()}


def masked_repr(obj: Any, **shown: str) -> str:
    """The dataclass repr of `obj`, with the text in `shown` instead of the repr of those fields."""
    parts = []
    for field in dataclasses.fields(obj):
        if field.repr:
            parts.append(f"{field.name}={shown[field.name] if field.name in shown else repr(getattr(obj, field.name))}")
    return f"{type(obj).__qualname__}({', '.join(parts)})"


C = TypeVar("C", bound=type)


def masked_eq(cls: C) -> C:
    """Give a dataclass made with eq=False the generated __eq__'s meaning (equal fields of equal type), from here.

    Frozen: hashed by its fields too, as the generated one would be; else unhashable.
    """

    def values(obj: Any) -> tuple[Any, ...]:
        return tuple(getattr(obj, field.name) for field in dataclasses.fields(obj) if field.compare)

    def __eq__(self: Any, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return values(self) == values(other)

    def __hash__(self: Any) -> int:
        return hash(values(self))

    cls.__eq__ = __eq__  # type: ignore[assignment]
    frozen = cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
    cls.__hash__ = __hash__ if frozen else None  # type: ignore[assignment]
    return cls
