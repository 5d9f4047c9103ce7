"""An event vocabulary made of named, contiguous integer ranges (the design of MT3's event codec)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence


@dataclass(frozen=True)
class EventRange:
    """Events ``name`` with integer values ``min_value..max_value`` (inclusive)."""

    name: str
    min_value: int
    max_value: int

    def __post_init__(self) -> None:
        if self.max_value < self.min_value:
            raise ValueError(f"event range {self.name!r}: max {self.max_value} < min {self.min_value}")

    @property
    def size(self) -> int:
        return self.max_value - self.min_value + 1


class EventVocabulary:
    """Maps ``(name, value)`` events to ids ``0..size-1``; ranges are laid out in the order given."""

    def __init__(self, ranges: Iterable[EventRange]) -> None:
        self.ranges: tuple[EventRange, ...] = tuple(ranges)
        self._offset: dict[str, int] = {}
        self._by_name: dict[str, EventRange] = {}
        offset = 0
        for r in self.ranges:
            if r.name in self._offset:
                raise ValueError(f"duplicate event range {r.name!r}")
            self._offset[r.name] = offset
            self._by_name[r.name] = r
            offset += r.size
        self.size = offset
        # id -> (name, value) table for fast decoding
        self._table: list[tuple[str, int]] = [
            (r.name, v) for r in self.ranges for v in range(r.min_value, r.max_value + 1)
        ]

    def __len__(self) -> int:
        return self.size

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.ranges)

    def range(self, name: str) -> EventRange:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"unknown event type {name!r}; known: {', '.join(self.names)}") from None

    def id_range(self, name: str) -> tuple[int, int]:
        """The ids ``[first, stop)`` of event type ``name``."""
        r = self.range(name)
        first = self._offset[name]
        return first, first + r.size

    def encode(self, name: str, value: int = 0) -> int:
        r = self.range(name)
        if not r.min_value <= value <= r.max_value:
            raise ValueError(f"{name} value {value} outside {r.min_value}..{r.max_value}")
        return self._offset[name] + int(value) - r.min_value

    def decode(self, token: int) -> tuple[str, int]:
        """``(name, value)`` of an id; ``ValueError`` when it is not an id of this vocabulary."""
        if isinstance(token, bool) or not 0 <= token < self.size or int(token) != token:
            raise ValueError(f"id {token!r} outside vocabulary 0..{self.size - 1}")
        return self._table[int(token)]

    def name_of(self, token: int) -> str:
        """Readable form: ``"shift:25"``, ``"pitch:60"``, ``"tie"``; ``"invalid:<id>"`` when out of range."""
        try:
            name, value = self.decode(token)
        except (ValueError, TypeError):
            return f"invalid:{token}"
        return name if self.range(name).size == 1 else f"{name}:{value}"

    def names_of(self, tokens: Sequence[int]) -> list[str]:
        return [self.name_of(t) for t in tokens]
