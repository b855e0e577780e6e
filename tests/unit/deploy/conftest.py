"""The deployment files as data: the Dockerfile (read with dockerfile-parse), the compose file
and the Kubernetes manifests (read with PyYAML). No container engine or cluster runs here, so
these tests check what can be checked without one: syntax, schemas, and that the files agree."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from dockerfile_parse import DockerfileParser

REPO = Path(__file__).resolve().parents[3]


@dataclass
class Stage:
    name: str
    base: str  # an image, or an earlier stage's name
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, value)

    def values(self, instruction: str) -> list[str]:
        return [value for instr, value in self.instructions if instr == instruction]

    def copied_from(self) -> list[str]:
        return [flag.split("=", 1)[1] for value in self.values("COPY")
                for flag in value.split() if flag.startswith("--from=")]


class Dockerfile:
    """A multi-stage Dockerfile whose every stage is named (``FROM image AS name``)."""

    def __init__(self, path: Path) -> None:
        parser = DockerfileParser(path=str(path))
        images = iter(parser.parent_images)  # one per FROM, build args' defaults substituted
        self.stages: dict[str, Stage] = {}
        current: Stage | None = None
        for item in parser.structure:
            instruction, value = item["instruction"], item["value"]
            if instruction == "FROM":
                words = value.split()
                assert len(words) == 3 and words[1].upper() == "AS", f"unnamed stage: FROM {value}"
                current = self.stages[words[2]] = Stage(words[2], next(images))
            elif current is not None and instruction != "COMMENT":
                current.instructions.append((instruction, value))

    def chain(self, name: str) -> list[Stage]:
        """The stage and those it is built FROM, the root first."""
        out = [self.stages[name]]
        while out[0].base in self.stages:
            out.insert(0, self.stages[out[0].base])
        return out

    def closure(self, name: str) -> list[Stage]:
        """Every stage whose files can end up in ``name``'s image: its chain and what it copies from."""
        seen: dict[str, Stage] = {}
        todo = [name]
        while todo:
            for stage in self.chain(todo.pop()):
                if stage.name not in seen:
                    seen[stage.name] = stage
                    todo += [source for source in stage.copied_from() if source in self.stages]
        return list(seen.values())

    def last(self, name: str, instruction: str) -> str | None:
        """The last ``instruction`` in ``name``'s chain: what the image ends up with."""
        values = [value for stage in self.chain(name) for value in stage.values(instruction)]
        return values[-1] if values else None

    def exec_form(self, name: str, instruction: str) -> list[str]:
        value = self.last(name, instruction)
        return json.loads(value) if value else []

    def env(self, name: str) -> dict[str, str]:
        """The ENV of ``name``'s image (KEY=VALUE pairs, without quoting: all this Dockerfile uses)."""
        out: dict[str, str] = {}
        for stage in self.chain(name):
            for value in stage.values("ENV"):
                for pair in value.split():
                    key, _, val = pair.partition("=")
                    out[key] = val
        return out


# Custom resources of the operators the manifests name (deploy/k8s/kafka.yaml, redis-cluster.yaml):
# their schemas are the operators' CRDs, which kubernetes-validate does not bundle.
OPERATORS = {"kafka.strimzi.io": "Strimzi", "redis.redis.opstreelabs.in": "OT-Container-Kit redis-operator"}


def operator_of(doc: dict) -> str | None:
    """The operator whose custom resource ``doc`` is, or None for a built-in kind."""
    group = doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else ""
    return OPERATORS.get(group)


@pytest.fixture(scope="session")
def custom_resources(manifests) -> dict[tuple[str, str], str]:
    """(kind, name) -> operator, for every custom resource in deploy/k8s."""
    return {key: operator_of(doc) for key, doc in manifests.items() if operator_of(doc)}


@pytest.fixture(scope="session")
def dockerfile() -> Dockerfile:
    return Dockerfile(REPO / "Dockerfile")


@pytest.fixture(scope="session")
def compose() -> dict:
    return yaml.safe_load((REPO / "deploy" / "compose" / "docker-compose.yml").read_text())


@pytest.fixture(scope="session")
def manifests() -> dict[tuple[str, str], dict]:
    """Every Kubernetes object under deploy/k8s, by (kind, name)."""
    out = {}
    for path in sorted((REPO / "deploy" / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out
