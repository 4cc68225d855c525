"""The Dockerfile the chart's image is built from: it parses and names what exists.

No image is built here (that needs a container runtime and the network);
these checks catch what breaks a build or an admission without one: a COPY
of a path that moved, a floating base image, an extra that pyproject.toml
no longer has, a user the restricted Pod Security profile refuses.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import NamedTuple

import yaml

ROOT = Path(__file__).parents[2]
DOCKERFILE = ROOT / "Dockerfile"
INSTRUCTIONS = frozenset(
    [
        "ADD",
        "ARG",
        "CMD",
        "COPY",
        "ENTRYPOINT",
        "ENV",
        "EXPOSE",
        "FROM",
        "HEALTHCHECK",
        "LABEL",
        "ONBUILD",
        "RUN",
        "SHELL",
        "STOPSIGNAL",
        "USER",
        "VOLUME",
        "WORKDIR",
    ]
)
PINNED = re.compile(r"^[\w./-]+(:\d+\.\d+\.\d+[\w.-]*|@sha256:[0-9a-f]{64})$")


class Instruction(NamedTuple):
    line: int
    keyword: str
    args: str


def parse(text: str) -> list[Instruction]:
    """Dockerfile instructions, continuation lines joined and comments dropped."""
    out: list[Instruction] = []
    pending: tuple[int, str] | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if pending is None and (not line or line.startswith("#")):
            continue
        if pending is not None and line.startswith("#"):
            continue
        start, sofar = pending if pending is not None else (number, "")
        joined = f"{sofar} {line.removesuffix(chr(92)).strip()}".strip()
        if line.endswith("\\"):
            pending = (start, joined)
            continue
        pending = None
        keyword, _, args = joined.partition(" ")
        assert keyword.upper() in INSTRUCTIONS, f"Dockerfile:{start}: unknown {keyword!r}"
        assert keyword.isupper(), f"Dockerfile:{start}: write {keyword.upper()}"
        out.append(Instruction(start, keyword, args.strip()))
    assert pending is None, "Dockerfile ends in a line continuation"
    return out


def instructions() -> list[Instruction]:
    return parse(DOCKERFILE.read_text())


def test_the_dockerfile_parses_into_known_instructions() -> None:
    keywords = [i.keyword for i in instructions()]
    assert keywords[0] == "FROM"
    assert "ENTRYPOINT" in keywords


def test_every_copy_source_exists_in_the_build_context() -> None:
    copies = [i for i in instructions() if i.keyword in ("COPY", "ADD")]
    assert copies
    for copy in copies:
        words = shlex.split(copy.args)
        if any(w.startswith("--from=") for w in words):
            continue
        *sources, _dest = [w for w in words if not w.startswith("--")]
        for source in sources:
            assert (ROOT / source).exists(), f"Dockerfile:{copy.line}: COPY {source}: no such path"


def test_the_copied_sources_hold_what_the_wheel_is_built_from() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    copied = [
        Path(source)
        for i in instructions()
        if i.keyword == "COPY" and "--from=" not in i.args
        for source in shlex.split(i.args)[:-1]
    ]
    needed = [
        Path("pyproject.toml"),
        Path(project["project"]["readme"]),
        *map(Path, project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]),
    ]
    for path in needed:
        assert any(path == c or c in path.parents for c in copied), f"{path} is not copied"


def test_every_base_image_is_pinned() -> None:
    for i in instructions():
        if i.keyword == "FROM":
            image = i.args.split()[0]
            assert PINNED.match(image), (
                f"Dockerfile:{i.line}: {image} floats; pin X.Y.Z or a digest"
            )


def test_the_extras_installed_are_the_projects_and_the_entry_point_is_its_script() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runs = " ".join(i.args for i in instructions() if i.keyword == "RUN")
    extras = {e for group in re.findall(r"\[([\w,]+)\]", runs) for e in group.split(",")}
    assert extras == {"operator", "service"}
    assert extras <= set(project["optional-dependencies"])
    (entrypoint,) = [i for i in instructions() if i.keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint.args)[0] in project["scripts"]


def test_the_image_runs_as_the_non_root_uid_the_chart_declares() -> None:
    users = [i.args for i in instructions() if i.keyword == "USER"]
    assert users, "no USER: the image would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, "USER must be a numeric non-root uid for runAsNonRoot"
    helpers = (ROOT / "charts" / "coordshard" / "templates" / "_helpers.tpl").read_text()
    body = helpers.split('define "coordshard.podSecurityContext"')[1].split("{{- end")[0]
    context = yaml.safe_load(body.split("-}}", 1)[1])
    assert context["runAsUser"] == int(uid)
    assert context["runAsGroup"] == int(gid or uid)


def test_the_parser_rejects_what_docker_would() -> None:
    for bad in ("FRM python:3.11\n", "FROM python:3.11.7 \\\n"):
        try:
            parse(bad)
        except AssertionError:
            continue
        raise AssertionError(f"parsed {bad!r}")
    assert not PINNED.match("python:3.11-slim") and not PINNED.match("python")
    assert PINNED.match("python:3.11.7-slim-bookworm")
