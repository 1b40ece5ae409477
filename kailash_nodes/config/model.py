"""The base of every settings model: pydantic validation, our errors, live markers.

A model's fields are the options' names, so a mapping from keyword options, and later from
environment variables or a file, fills the same model. Validation is strict (no "5" for 5,
no 1 for True, no NaN or infinity); a failure is a `ConfigError` naming the option, the
value (only its type when the option is secret) and what is allowed; pydantic's own
``ValidationError`` never escapes. Models are frozen: reading a field is a plain attribute
read, and a setting changed live is changed on the object that uses it, after `check`.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Mapping
from dataclasses import FrozenInstanceError
from typing import Annotated, Any, ClassVar, Union, get_args, get_origin

import annotated_types as at
from pydantic import BaseModel, BeforeValidator, ConfigDict, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from kailash_nodes.config.checks import rule_text, short_repr
from kailash_nodes.errors import ConfigError

__all__ = [
    "LIVE",
    "NAME_RULE",
    "SECRET",
    "Settings",
    "config_error",
    "default_if_empty",
    "field_rule",
    "is_live",
]

LIVE: dict[str, Any] = {"live": True}
"""``json_schema_extra`` of a field changeable live on the running object."""
SECRET: dict[str, Any] = {"secret": True}
"""``json_schema_extra`` of a field whose value is never shown (an error shows its type)."""

_STRICT = ConfigDict(strict=True, allow_inf_nan=False, arbitrary_types_allowed=True)
_RANGE_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal"})


class Settings(BaseModel):
    """A frozen, strictly validated set of options; build it with :meth:`from_options`."""

    model_config = ConfigDict(frozen=True, extra="forbid", **_STRICT)

    owner: ClassVar[str] = "settings"
    """Who takes these options, for the unknown-option message (e.g. ``QueryRouterNode``)."""
    none_means_default: ClassVar[bool] = False
    """Whether an explicit None for a number option that has no "no limit" means its default."""

    def __setattr__(self, name: str, value: Any) -> None:
        # As a frozen dataclass does (not pydantic's ValidationError, which is no error of
        # the value): a live change goes to the running object, not to its settings.
        raise FrozenInstanceError(
            f"cannot assign to {name!r}: {type(self).__name__} is frozen (the live options, "
            f"{list(self.live_options())}, are set on the object that uses them)"
        )

    def __delattr__(self, name: str) -> None:
        self.__setattr__(name, None)

    @classmethod
    def options(cls) -> frozenset[str]:
        """Return the option names this model accepts."""
        return frozenset(cls.model_fields)

    @classmethod
    def live_options(cls) -> tuple[str, ...]:
        """Return the options that may be changed on the running object, in field order."""
        return tuple(name for name, info in cls.model_fields.items() if is_live(info))

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Any:
        """Validate keyword options (the option names) and return the model.

        Raises ConfigError for an unknown option (listing the known ones) or a bad value.
        """
        return cls.from_mapping(options)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Any:
        """Validate ``data`` keyed by option name and return the model (see from_options)."""
        cls.refuse_unknown(data)
        return cls.build(cls._defaults_for_none(data))

    @classmethod
    def refuse_unknown(cls, data: Mapping[str, Any]) -> None:
        """Raise ConfigError naming the keys of ``data`` that are not options, and the known."""
        unknown = set(data) - cls.options()
        if unknown:
            raise ConfigError(
                f"unknown option(s) {sorted(unknown)} for {cls.owner}; "
                f"known options: {sorted(cls.options())}"
            )

    @classmethod
    def build(cls, data: Mapping[str, Any]) -> Any:
        """Validate ``data`` (known option names only) and return the model."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise config_error(cls, exc, data) from None

    @classmethod
    def check(cls, key: str, value: Any) -> Any:
        """Return ``value`` validated as option ``key`` would be (for a live setter).

        Raises ConfigError naming the option, the rule and the value.
        """
        try:
            return _adapter(cls, key).validate_python(value, strict=True)
        except ValidationError as exc:
            raise config_error(cls, exc, {key: value}, key) from None

    @classmethod
    def _defaults_for_none(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(data)
        if cls.none_means_default:
            for key, value in data.items():
                info = cls.model_fields[key]
                if value is None and _kinds(info) & {int, float} and not _none_ok(info):
                    del out[key]
        return out


def default_if_empty(default: str) -> BeforeValidator:
    """Return a validator that turns None or ``""`` into ``default`` (a name option's rule)."""
    return BeforeValidator(lambda value: default if value is None or value == "" else value)


NAME_RULE: dict[str, Any] = {"rule": "a string (empty or None: the default)"}
"""``json_schema_extra`` of a name option, whose empty value means the default name."""


def is_live(info: FieldInfo) -> bool:
    """Return whether the field is marked changeable live."""
    extra = info.json_schema_extra
    return isinstance(extra, dict) and extra.get("live") is True


def field_rule(info: FieldInfo) -> str:
    """Return what the field allows, as an error message states it."""
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    none_ok = _none_ok(info)
    if "rule" in extra:
        return str(extra["rule"])
    kinds = _kinds(info)
    if kinds == {bool}:
        return "True or False"
    if kinds and kinds <= {int, float}:
        low, high, strict = _bounds(info)
        return rule_text(low, high, strict=strict, integer=float not in kinds, none_ok=none_ok)
    if kinds == {str}:
        empty_ok = not any(isinstance(m, at.MinLen) and m.min_length > 0 for m in info.metadata)
        return ("a string" if empty_ok else "a non-empty string") + (" or None" if none_ok else "")
    return str(info.description or info.annotation)


def config_error(
    model: type[BaseModel], exc: ValidationError, data: Mapping[str, Any], key: str = ""
) -> ConfigError:
    """Return the ConfigError for pydantic's ``exc``: each bad option, its value and rule.

    A ConfigError raised by a validator (a DSN, a cross-option rule) is returned as is.
    """
    messages = []
    for err in exc.errors(include_url=False):
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, ConfigError):
            return cause
        name = str(err["loc"][0]) if err["loc"] and not key else key
        info = model.model_fields.get(name)
        value = data.get(name, err.get("input"))
        rule = field_rule(info) if info is not None else err["msg"]
        messages.append(f"{name} must be {rule} (got {_got(name, value, err['type'], info)})")
    return ConfigError("; ".join(dict.fromkeys(messages)))


def _got(name: str, value: Any, kind: str, info: FieldInfo | None) -> str:
    extra = info.json_schema_extra if info is not None else None
    if isinstance(extra, dict) and extra.get("secret"):
        return f"a value of type {type(value).__name__}"
    if kind == "missing":
        return "no value"
    if kind == "finite_number":
        return f"{name}={value!r}, not finite"
    if kind in _RANGE_ERRORS:
        return f"{name}={value!r}"
    return f"{short_repr(value)} of type {type(value).__name__}"


def _kinds(info: FieldInfo) -> set[Any]:
    """Return the field's types other than None (``int | None`` -> ``{int}``)."""
    ann = info.annotation
    args = get_args(ann) if get_origin(ann) in (Union, types.UnionType) else (ann,)
    return {a for a in args if a is not type(None)}


def _none_ok(info: FieldInfo) -> bool:
    ann = info.annotation
    return get_origin(ann) in (Union, types.UnionType) and type(None) in get_args(ann)


def _bounds(info: FieldInfo) -> tuple[Any, Any, bool]:
    low: Any = None
    high: Any = None
    strict = False
    for m in info.metadata:
        if isinstance(m, at.Ge):
            low = m.ge
        elif isinstance(m, at.Gt):
            low, strict = m.gt, True
        elif isinstance(m, at.Le):
            high = m.le
    return low, high, strict


@functools.cache
def _adapter(model: type[BaseModel], key: str) -> TypeAdapter[Any]:
    info = model.model_fields.get(key)
    if info is None:
        raise ConfigError(f"{key} is not an option of {model.__name__}")
    annotated: Any = info.annotation
    if info.metadata:
        annotated = Annotated[(annotated, *info.metadata)]
    return TypeAdapter(annotated, config=_STRICT)
