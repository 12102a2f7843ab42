"""The bad-config corpus: every file in tests/corpus/config gives its expected exit and line.

Each case runs the real command line in-process (``exporter.cli.main``) with only the case's
environment; values that could be credentials hold ``CANARY``, which no output may contain.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from exporter.cli import main
from exporter.config import ENVIRONMENT

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "config"


@dataclass(frozen=True)
class Case:
    """One line of cases.tsv."""

    name: str
    args: str
    exit: int
    fragment: str


def _cases() -> list[Case]:
    lines = (CORPUS / "cases.tsv").read_text(encoding="utf-8").splitlines()
    rows = [line.split("\t") for line in lines if line and not line.startswith("#")]
    header, *body = rows
    assert header == ["name", "args", "exit", "fragment"]
    return [Case(name, args, int(code), fragment) for name, args, code, fragment in body]


CASES = _cases()


def _environment(case: Case) -> dict[str, str]:
    path = CORPUS / f"{case.name}.env"
    if not path.exists():
        return {}
    pairs = (line.partition("=") for line in path.read_text(encoding="utf-8").splitlines())
    return {k: v.replace("{corpus}", str(CORPUS)) for k, _, v in pairs if k and k[0] != "#"}


def _argv(case: Case) -> list[str]:
    if case.args != "-":
        return shlex.split(case.args.replace("{corpus}", str(CORPUS)))
    argv = ["check-config"]
    config = CORPUS / f"{case.name}.yaml"
    if config.exists():
        flag = "--web.config.file" if case.name.startswith("web_") else "--config.file"
        argv += [flag, str(config)]
    return argv


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every variable the exporter or the OpenTelemetry SDK would read."""
    names = {name for aliases, _, _ in ENVIRONMENT for name in aliases}
    for name in list(os.environ):
        if name in names or name.removesuffix("_FILE") in names or name.startswith("OTEL_"):
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("clean_environment")
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_each_corpus_case_gives_its_exit_code_and_line(
    case: Case, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command exits with the listed code, its last line says why, no canary shows."""
    for name, value in _environment(case).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as caught:
        main(_argv(case))
    out, err = capsys.readouterr()
    assert caught.value.code == case.exit, err
    last = (err if case.exit else out).strip().splitlines()[-1]
    assert case.fragment in last
    assert "CANARY" not in out + err
    assert "Traceback" not in err


def test_every_corpus_file_belongs_to_a_case() -> None:
    """No file in the corpus is left out of cases.tsv, and every case is listed once."""
    names = [case.name for case in CASES]
    assert len(names) == len(set(names))
    secrets = {path.name for path in CORPUS.glob("*.secret")}
    for path in CORPUS.iterdir():
        if path.name == "cases.tsv" or path.name in secrets:
            continue
        assert path.stem in names, path.name
    assert len(CASES) >= 60
