"""analysis.jsonform: a dataclass's JSON form is derived once from its fields, so writing and reading cannot drift.
Known answers: the exact JSON text of small records, their round trips, and the special forms a field can ask for."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from analysis.jsonform import Codec, JsonForm, from_json, json_meta, to_json


@dataclass(frozen=True)
class Point(JsonForm):
    x: int
    y: float | None


@dataclass(frozen=True)
class Shape(JsonForm):
    name: str
    corners: tuple[Point, ...]
    weights: tuple[float, ...]
    by_name: dict[str, Point]
    centre: Point | None
    extra: dict[str, Any]
    tags: list[str]


@dataclass(frozen=True)
class Plain:  # no mixin: the module functions work on any dataclass
    a: int
    inner: Point


def _pairs_dump(owner: Any, pairs: tuple[tuple[str, float], ...]) -> dict[str, float]:
    return {f"frac({k})": v for k, v in pairs}


def _pairs_load(d: Any) -> tuple[tuple[str, float], ...]:
    return tuple((k[5:-1], v) for k, v in d.items() if k.startswith("frac("))


PAIRS = Codec(_pairs_dump, _pairs_load)


@dataclass(frozen=True)
class Special(JsonForm):
    count: int
    pairs: tuple[tuple[str, float], ...] = field(metadata=json_meta(codec=PAIRS))
    every: int = field(default=1, metadata=json_meta(key=("subsample", "every")))
    codes: int = field(default=0, metadata=json_meta(key=("subsample", "codes")))
    version: int = field(default=3, metadata=json_meta(key="format"))
    stages: dict[str, float] | None = field(default=None, metadata=json_meta(omit_none=True))
    last: float = 0.5


@dataclass(frozen=True)
class V1(JsonForm):
    a: int


@dataclass(frozen=True)
class V2(JsonForm):  # V1 with one more field: it is written and read without writing either side by hand
    a: int
    b: float


@dataclass(frozen=True)
class V2Default(JsonForm):
    a: int
    b: float = 2.5


SHAPE = Shape(name="tri", corners=(Point(0, 0.0), Point(1, None)), weights=(0.25, 0.75),
              by_name={"p": Point(2, 1.5)}, centre=None, extra={"nested": [1, {"k": (2, 3)}]}, tags=["a", "b"])


def test_nested_records_have_a_known_json_text_and_round_trip():
    text = json.dumps(SHAPE.to_json())
    assert text == ('{"name": "tri", "corners": [{"x": 0, "y": 0.0}, {"x": 1, "y": null}], "weights": [0.25, 0.75], '
                    '"by_name": {"p": {"x": 2, "y": 1.5}}, "centre": null, "extra": {"nested": [1, {"k": [2, 3]}]}, '
                    '"tags": ["a", "b"]}')
    back = Shape.from_json(json.loads(text))
    assert back.corners == SHAPE.corners and back.by_name == SHAPE.by_name and back.weights == SHAPE.weights
    assert isinstance(back.corners, tuple) and isinstance(back.weights, tuple) and isinstance(back.tags, list)
    assert json.dumps(back.to_json()) == text


def test_values_are_read_as_stored_without_coercion():
    p = Point.from_json({"x": 3, "y": None, "unknown": "ignored"})
    assert p == Point(3, None) and type(p.x) is int
    assert Point.from_json({"x": 3, "y": 2}).y == 2 and type(Point.from_json({"x": 3, "y": 2}).y) is int


def test_the_module_functions_work_on_any_dataclass():
    d = to_json(Plain(1, Point(2, 3.0)))
    assert d == {"a": 1, "inner": {"x": 2, "y": 3.0}}
    assert from_json(Plain, d) == Plain(1, Point(2, 3.0))


def test_a_field_added_to_the_record_appears_on_both_sides():
    assert V1(1).to_json() == {"a": 1}
    assert V2(1, 0.5).to_json() == {"a": 1, "b": 0.5}  # written …
    assert V2.from_json({"a": 1, "b": 0.5}) == V2(1, 0.5)  # … and read, from the one declaration
    with pytest.raises(KeyError, match="b"):  # an old record lacking a required field is refused, not half-read
        V2.from_json(V1(1).to_json())
    assert V2Default.from_json(V1(1).to_json()) == V2Default(1, 2.5)  # a field with a default reads it when missing


def test_special_forms_codec_key_path_rename_and_omit_none():
    s = Special(count=4, pairs=(("abs", 0.25), ("rel", 0.5)), every=64, codes=7, stages=None)
    text = json.dumps(s.to_json())
    assert text == ('{"count": 4, "frac(abs)": 0.25, "frac(rel)": 0.5, "subsample": {"every": 64, "codes": 7}, '
                    '"format": 3, "last": 0.5}')
    assert Special.from_json(json.loads(text)) == s
    staged = Special(count=4, pairs=(), stages={"r2": 0.5})
    assert list(staged.to_json()) == ["count", "subsample", "format", "stages", "last"]
    assert Special.from_json(staged.to_json()) == staged
    with pytest.raises(KeyError):  # a path whose outer object is missing is a broken record
        Special.from_json({"count": 1, "format": 3})


def test_a_codec_field_takes_no_key_or_omit_none():
    with pytest.raises(TypeError):
        json_meta(codec=PAIRS, key="x")
    with pytest.raises(TypeError):
        json_meta(codec=PAIRS, omit_none=True)
