"""The settings models' shared pieces: the frozen base model and the checked value types."""

from __future__ import annotations

import re
from typing import Annotated, Any, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

__all__ = ["Identifier", "PlainName", "PositiveSeconds"]

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")

PositiveSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
# Names that refer to a declared dimension: never a URL or a `user:secret` an error could quote.
Identifier = Annotated[str, Field(pattern=_IDENTIFIER.pattern)]
#: Free text that is published (manifest, labels) or sent to a server as a name: no
#: whitespace, '@' or '/', so no URL and no ``user:secret@host`` can be put there by mistake.
PlainName = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[^\s@/]+$")]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """Refuse ``true``/``false`` where a number goes (pydantic would read 1 and 0)."""
        if isinstance(value, bool) and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            if annotation is not bool and bool not in get_args(annotation):
                raise ValueError("expected a number, not a boolean")
        return value
