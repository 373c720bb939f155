"""flowdeck's workflow format, as pydantic models.

The models check each field's shape; :mod:`flowdeck.domain.validation` adds what needs the
whole document (references, dependencies, cycles) and positions in the YAML source.  The
JSON Schema served at ``/api/v1/schema/workflow.json`` is generated from these models.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$"
PORT_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
STEP_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"
PYTHON_TARGET = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
USES_PATTERN = r"^([a-z0-9][a-z0-9._-]*/)?[a-z0-9][a-z0-9._-]{0,63}@[A-Za-z0-9][A-Za-z0-9._+-]*$"

ScalarType = Literal["string", "int", "float", "bool", "file", "directory", "enum"]
PortType = Literal["string", "int", "float", "bool", "file", "directory", "enum", "array", "stream"]
PortName = Annotated[str, Field(pattern=PORT_PATTERN)]
StepName = Annotated[str, Field(pattern=STEP_PATTERN)]

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE | re.ASCII)
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.ASCII)
# What a run's resources accept as text (the API's document says the same): a positive
# number of at most 6 (sizes) or 15 (durations) integer digits, ASCII only, so that every
# text that matches is a positive, finite size (at most 2^62 bytes) or duration.
_POSITIVE = r"(0*[1-9][0-9]{0,%d}(\.[0-9]+)?|0+\.[0-9]*[1-9][0-9]*)"
SIZE_PATTERN = r"^ *%s *([KMGTkmgt][Ii]?[Bb]?|[Bb])? *$" % (_POSITIVE % 5)
DURATION_PATTERN = r"^ *%s *(ms|s|m|h|d)? *$" % (_POSITIVE % 14)
_SIZE_UNITS = {"": 2**20, "B": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4}
_DURATIONS = {"ms": 0.001, "s": 1, "": 1, "m": 60, "h": 3600, "d": 86400}


def parse_size(value: int | str) -> int:
    """Bytes from ``512`` (MiB), ``"2GiB"``, ``"500M"``, ``"1.5G"``."""
    if isinstance(value, int):
        return value * 2**20
    m = _SIZE_RE.match(value)
    if m is None:
        raise ValueError(f"not a size: {value!r} (use e.g. 512, '512MiB' or '2GiB')")
    number, given = float(m.group(1)), (m.group(2) or "").upper()
    unit = given if given == "B" else given.removesuffix("B")  # "512B" is bytes, "512" MiB
    factor = 1024 ** "KMGT".index(unit[0]) * 1024 if unit.endswith("I") else _SIZE_UNITS[unit]
    return math.ceil(number * factor)  # a part of a byte is a byte


def parse_duration(value: float | str) -> float:
    """Seconds from ``90``, ``"90s"``, ``"10m"``, ``"2h"``."""
    if isinstance(value, int | float):
        return float(value)
    m = _DURATION_RE.match(value)
    if m is None:
        raise ValueError(f"not a duration: {value!r} (use e.g. 30, '90s', '10m' or '2h')")
    return float(m.group(1)) * _DURATIONS[m.group(2) or ""]


def _as_text(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class InputSpec(_Model):
    """A typed workflow input."""

    type: PortType
    items: ScalarType | None = Field(None, description="Element type when type is array.")
    description: str = ""
    required: bool | None = Field(None, description="Default: true unless a default is given.")
    default: Any = None
    symbols: list[str] | None = Field(None, description="Allowed values of an enum.")
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = Field(None, ge=0)
    max_length: int | None = Field(None, ge=0)
    pattern: str | None = Field(None, description="Regular expression a string must match.")
    min_items: int | None = Field(None, ge=0)
    max_items: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> InputSpec:
        if self.type == "array" and self.items is None:
            raise ValueError("an array input needs 'items' (the element type)")
        if self.type != "array" and self.items is not None:
            raise ValueError("'items' is only for array inputs")
        element = self.items if self.type == "array" else self.type
        if element == "enum" and not self.symbols:
            raise ValueError("an enum input needs 'symbols'")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern is not a valid regular expression: {exc}") from exc
        return self

    @property
    def is_required(self) -> bool:
        return self.required if self.required is not None else self.default is None

    @property
    def type_name(self) -> str:
        return f"array of {self.items}" if self.type == "array" else self.type


class OutputSpec(_Model):
    """Where a step output comes from: exactly one source."""

    path: str | None = Field(None, description="A file the step writes (relative path).")
    glob: str | None = Field(None, description="Files matching a pattern: an array of files.")
    json_file: str | None = Field(
        None, alias="json", description="A value read from a JSON file the step writes."
    )
    key: str | None = Field(None, description="With json: take this key of the object.")
    stdout: Literal["text", "json", "stream"] | None = Field(
        None, description="The step's standard output as text, as JSON, or as a stream port."
    )
    returns: str | None = Field(
        None, alias="return", description="Python steps: this key of the returned mapping."
    )
    type: PortType | None = None
    items: ScalarType | None = None
    description: str = ""

    @model_validator(mode="after")
    def _one_source(self) -> OutputSpec:
        sources = [
            s
            for s in ("path", "glob", "json_file", "stdout", "returns")
            if getattr(self, s) is not None
        ]
        if len(sources) > 1:
            names = ", ".join("json" if s == "json_file" else s for s in sources)
            raise ValueError(f"an output has one source, not several ({names})")
        if self.key is not None and self.json_file is None:
            raise ValueError("'key' goes with 'json'")
        return self

    @property
    def kind(self) -> str:
        """The output's type, declared or implied by its source."""
        if self.type is not None:
            return self.type
        if self.glob is not None:
            return "array"
        if self.path is not None:
            return "file"
        if self.stdout == "stream":
            return "stream"
        if self.stdout == "text":
            return "string"
        return "any"


class Resources(_Model):
    cpus: float = Field(1, gt=0, le=1024)
    memory: int | str | None = Field(None, description="MiB as a number, or '2GiB', '500MB'.")
    timeout: float | str | None = Field(None, description="Seconds, or '90s', '10m', '2h'.")
    network: bool = Field(
        False,
        description="The step needs the network (outbound only); the server's step_network "
        "setting must allow it.",
    )

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: int | str | None) -> int | str | None:
        if v is not None and parse_size(v) <= 0:
            raise ValueError("memory must be positive")
        return v

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: float | str | None) -> float | str | None:
        if v is not None and not 0 < parse_duration(v) < math.inf:
            raise ValueError("timeout must be positive")
        return v

    @property
    def memory_bytes(self) -> int | None:
        return parse_size(self.memory) if self.memory is not None else None

    @property
    def timeout_s(self) -> float | None:
        return parse_duration(self.timeout) if self.timeout is not None else None


SECRET_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"  # noqa: S105 - as domain/secrets.py's
SECRET_FILE_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"  # noqa: S105 - a pattern
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


class SecretUse(_Model):
    """One of the run owner's secrets, given to the step as an environment variable or as
    a file (mode 0600) in its work folder, removed after the attempt."""

    name: str = Field(pattern=SECRET_NAME_PATTERN, description="The secret's name.")
    env: str | None = Field(
        None, pattern=ENV_NAME_PATTERN, description="The environment variable it goes in."
    )
    file: str | None = Field(
        None,
        pattern=SECRET_FILE_PATTERN,
        description="The file it goes in, in the step's work folder.",
    )

    @model_validator(mode="after")
    def _one_form(self) -> SecretUse:
        if (self.env is None) == (self.file is None):
            raise ValueError("a secret goes in exactly one of env or file")
        if self.env is not None and self.env.upper().startswith("FLOWDECK_"):
            raise ValueError("FLOWDECK_* variables are flowdeck's own")
        return self


class Retries(_Model):
    count: int = Field(0, ge=0, le=100)
    backoff: float = Field(1.0, ge=0, description="Seconds before the first retry.")
    factor: float = Field(2.0, ge=1, description="Each further wait is this many times longer.")
    max_backoff: float = Field(300.0, gt=0)

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1 for the first)."""
        return min(self.max_backoff, self.backoff * self.factor ** (attempt - 1))


class StepSpec(_Model):
    """One step: exactly one of run, python or uses."""

    description: str = ""
    run: list[str] | str | None = Field(
        None,
        description="argv template (list, or a string split like a shell would, without a "
        "shell); with shell: bash, a script.",
    )
    shell: Literal["bash"] | None = None
    python: str | None = Field(
        None, pattern=PYTHON_TARGET, description="module:function from the workflow archive."
    )
    uses: str | None = Field(
        None, pattern=USES_PATTERN, description="Another stored workflow, name@version."
    )
    with_: dict[PortName, Any] = Field(
        default_factory=dict, alias="with", description="Inputs of a python or uses step."
    )
    needs: list[StepName] = Field(default_factory=list)
    env: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], str] = Field(
        default_factory=dict
    )
    outputs: dict[PortName, OutputSpec] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    retries: Retries | int = Field(0, description="A count, or {count, backoff, factor}.")
    when: str | None = Field(None, description="Run only when this expression is true.")
    foreach: str | None = Field(None, description="Scatter over this array: ${{ item }}.")
    foreach_limit: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="A foreach step: at most this many of its instances run at once (on "
        "Slurm, the job array's throttle %N).",
    )
    allow_failure: bool = False
    stdin: str | None = Field(None, description="A stream port fed to standard input.")
    secrets: list[SecretUse] = Field(
        default_factory=list,
        max_length=64,
        description="Secrets of the run's owner this step gets (env or file).",
    )

    @field_validator("run", mode="before")
    @classmethod
    def _argv_scalars(cls, v: Any) -> Any:
        # YAML reads `run: [sleep, 5]` as a number and `[true]` as a boolean: argv is text.
        return [_as_text(x) for x in v] if isinstance(v, list) else v

    @field_validator("env", mode="before")
    @classmethod
    def _env_scalars(cls, v: Any) -> Any:
        return {k: _as_text(x) for k, x in v.items()} if isinstance(v, dict) else v

    @model_validator(mode="after")
    def _one_kind(self) -> StepSpec:
        kinds = [k for k in ("run", "python", "uses") if getattr(self, k) is not None]
        if len(kinds) != 1:
            found = ", ".join(kinds) if kinds else "none"
            raise ValueError(f"a step needs exactly one of run, python or uses (found: {found})")
        if self.shell is not None and not isinstance(self.run, str):
            raise ValueError("shell: bash needs run to be a script (a string)")
        if self.with_ and self.run is not None:
            raise ValueError("'with' is for python and uses steps; run steps use templates")
        if self.foreach_limit is not None and self.foreach is None:
            raise ValueError("foreach_limit is for a step with foreach")
        if self.secrets and self.uses is not None:
            raise ValueError("a uses step has no secrets: its workflow's steps ask for theirs")
        envs = [s.env for s in self.secrets if s.env is not None]
        files = [s.file for s in self.secrets if s.file is not None]
        if len(set(envs)) < len(envs) or len(set(files)) < len(files):
            raise ValueError("two secrets go in the same variable or file")
        if set(envs) & set(self.env):
            raise ValueError("a secret's variable is also set in env")
        return self

    @property
    def kind(self) -> str:
        return "run" if self.run is not None else "python" if self.python else "uses"

    @property
    def retry(self) -> Retries:
        return self.retries if isinstance(self.retries, Retries) else Retries(count=self.retries)


class WorkflowOutput(_Model):
    source: str = Field(alias="from", description="${{ steps.STEP.outputs.NAME }}")
    description: str = ""


class WorkflowSpec(_Model):
    """A flowdeck workflow."""

    flowdeck: Literal[1] = Field(1, description="Format version.")
    name: str = Field(pattern=NAME_PATTERN)
    version: str = Field(pattern=VERSION_PATTERN)
    description: str = ""
    inputs: dict[PortName, InputSpec] = Field(default_factory=dict)
    outputs: dict[PortName, WorkflowOutput] = Field(default_factory=dict)
    steps: dict[StepName, StepSpec] = Field(min_length=1)
    cache: bool = Field(
        False,
        description="Memoize: a run reuses the outputs of step instances of earlier runs of "
        "this version whose inputs are unchanged (reruns always do).",
    )

    @field_validator("version", mode="before")
    @classmethod
    def _quoted_version(cls, v: Any) -> Any:
        if isinstance(v, int | float) and not isinstance(v, bool):
            raise ValueError(f"version must be a string: quote it, e.g. version: '{v}'")
        return v

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def json_schema() -> dict[str, Any]:
    schema = WorkflowSpec.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "/api/v1/schema/workflow.json"
    return schema
