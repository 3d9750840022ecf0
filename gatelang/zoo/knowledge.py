"""Which real people a pretrained model knows facts about: the "known set".

A privacy edit on a real checkpoint can only be judged on facts the model states before the
edit, so a policy about real knowledge starts by asking the model every question of the probe
set (`gatelang.stdlib.people`) and keeping the (person, attribute) pairs it answers correctly in
*every* template of a language: a fact the model knows in one phrasing only is too weak to show
that an edit removed it.

Asking is staged: every pair is asked its first template, and only pairs still answered
correctly are asked the next one. The result is the same as asking everything (a pair is
dropped at its first wrong answer either way) at a fraction of the cost, since a small model
knows few facts. The result is cached under the model's weights hash and the probe set's hash.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gatelang.stdlib.people import ATTRIBUTES, LANGUAGES, SPLITS, Question, load_people

CACHE_VERSION = 2
# Chinese answers take about twice the tokens of English ones in byte-level BPE vocabularies
# (SmolLM2 spends most of 24 tokens repeating a Chinese name), so zh gets twice the budget.
TOKEN_FACTOR = {"zh": 2}


def cache_root() -> Path:
    """`$XDG_CACHE_HOME/gatelang/knowledge` (or `GATELANG_KNOWLEDGE_CACHE`)."""
    env = os.environ.get("GATELANG_KNOWLEDGE_CACHE")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "gatelang" / "knowledge"


@dataclass
class KnownSet:
    """The (person, attribute) pairs a model answers correctly in every template of a language."""

    model: str
    weights_sha256: str
    people_sha256: str
    languages: list[str]
    attributes: list[str]
    people_asked: int
    known: dict[str, list[list[str]]]
    """language -> [person id, attribute] pairs, in probe-set order."""
    asked: dict[str, int]
    """language -> (person, attribute) pairs asked."""
    first_answers: dict[str, str] = field(default_factory=dict)
    """question id -> answer, for the first template of every pair (to read what went wrong)."""
    questions_asked: int = 0
    seconds: float = 0.0
    max_new_tokens: int = 24
    machine: dict[str, Any] = field(default_factory=dict)
    cached: bool = False

    def pairs(self, language: str) -> list[tuple[str, str]]:
        return [(p, a) for p, a in self.known.get(language, [])]

    def people(self, language: str | None = None) -> list[str]:
        """Ids of people with at least one known fact (in `language`, or in any)."""
        langs = [language] if language else self.languages
        seen: dict[str, None] = {}
        for lang in langs:
            for pid, _ in self.known.get(lang, []):
                seen[pid] = None
        return list(seen)

    def counts(self) -> dict[str, dict[str, int]]:
        """language -> attribute -> known pairs (plus `all`)."""
        out: dict[str, dict[str, int]] = {}
        for lang in self.languages:
            per: dict[str, int] = defaultdict(int)
            for _, attr in self.known.get(lang, []):
                per[attr] += 1
            out[lang] = {a: per.get(a, 0) for a in self.attributes}
            out[lang]["all"] = len(self.known.get(lang, []))
        return out

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["counts"] = self.counts()
        data["cache_version"] = CACHE_VERSION
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KnownSet:
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in names})


def machine_info() -> dict[str, Any]:
    import torch
    import transformers

    return {
        "platform": platform.platform(), "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _cache_file(weights_sha: str, people_sha: str, languages: Sequence[str],
                attributes: Sequence[str], limit: int | None, max_new_tokens: int) -> Path:
    import hashlib

    key = json.dumps([CACHE_VERSION, list(languages), list(attributes), limit, max_new_tokens])
    tag = hashlib.sha256(key.encode()).hexdigest()[:12]
    return cache_root() / f"{weights_sha[:24]}-{people_sha[:12]}-{tag}.json"


def known_set(
    loaded: Any,
    *,
    languages: Sequence[str] = LANGUAGES,
    attributes: Sequence[str] = ATTRIBUTES,
    limit: int | None = None,
    max_new_tokens: int = 24,
    batch_size: int = 32,
    use_cache: bool = True,
    log: Callable[[str], None] | None = None,
) -> KnownSet:
    """Ask `loaded` (a `LoadedModel`) the probe set greedily and return what it knows.

    `limit` asks only the first N people (quick looks; cached separately). Chinese questions get
    `TOKEN_FACTOR["zh"]` times `max_new_tokens`. The cache is keyed
    by the weights hash, the probe set's hash and these arguments, so a changed checkpoint or
    data set is asked again.
    """
    for lang in languages:
        if lang not in LANGUAGES:
            raise ValueError(f"unknown language {lang!r}; the probe set has {', '.join(LANGUAGES)}")
    for attr in attributes:
        if attr not in ATTRIBUTES:
            raise ValueError(f"unknown attribute {attr!r}; the probe set has {', '.join(ATTRIBUTES)}")
    people = load_people()
    chosen = people.people[:limit] if limit else people.people
    path = _cache_file(loaded.weights_sha256, people.sha256, languages, attributes, limit,
                       max_new_tokens)
    if use_cache and path.is_file():
        try:
            result = KnownSet.from_json(json.loads(path.read_text(encoding="utf-8")))
            result.cached = True
            return result
        except (OSError, ValueError, TypeError):
            pass  # a broken cache entry is asked again

    start = time.perf_counter()
    groups: dict[tuple[str, str, str], list[Question]] = defaultdict(list)
    for q in people.questions(people=[p.id for p in chosen], attributes=attributes,
                              languages=languages, splits=SPLITS):
        groups[(q.person_id, q.attribute, q.language)].append(q)
    alive = list(groups)
    depth = max((len(v) for v in groups.values()), default=0)
    first: dict[str, str] = {}
    asked_total = 0
    for stage in range(depth):
        batch = [groups[k][stage] for k in alive if stage < len(groups[k])]
        if not batch:
            break
        if log:
            log(f"template {stage + 1}/{depth}: {len(batch)} questions")
        answers = [""] * len(batch)
        for lang in dict.fromkeys(q.language for q in batch):
            idx = [i for i, q in enumerate(batch) if q.language == lang]
            got = loaded.generate([batch[i] for i in idx], batch_size=batch_size,
                                  max_new_tokens=max_new_tokens * TOKEN_FACTOR.get(lang, 1))
            for i, a in zip(idx, got, strict=True):
                answers[i] = a
        asked_total += len(batch)
        wrong = set()
        for q, a in zip(batch, answers, strict=True):
            if stage == 0:
                first[q.id] = a
            if not q.is_correct(a):
                wrong.add((q.person_id, q.attribute, q.language))
        alive = [k for k in alive if k not in wrong]
    survivors = set(alive)
    order = {p.id: i for i, p in enumerate(chosen)}
    known: dict[str, list[list[str]]] = {}
    asked: dict[str, int] = {}
    for lang in languages:
        keys = sorted((k for k in survivors if k[2] == lang),
                      key=lambda k: (order[k[0]], ATTRIBUTES.index(k[1])))
        known[lang] = [[k[0], k[1]] for k in keys]
        asked[lang] = sum(1 for k in groups if k[2] == lang)
    result = KnownSet(
        model=loaded.name, weights_sha256=loaded.weights_sha256, people_sha256=people.sha256,
        languages=list(languages), attributes=list(attributes), people_asked=len(chosen),
        known=known, asked=asked, first_answers=first, questions_asked=asked_total,
        seconds=round(time.perf_counter() - start, 1), max_new_tokens=max_new_tokens,
        machine=machine_info())
    if use_cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(result.to_json(), ensure_ascii=False), encoding="utf-8")
            os.replace(tmp, path)
        except OSError:
            pass  # a cache only
    return result


def subject_file_text(result: KnownSet, language: str | None = None,
                      name_language: str = "en") -> str:
    """The known people as a subject file (`subjects famous = from "known.txt"`).

    A policy names people by name; the file lists the name in `name_language` of everyone the
    model knows at least one fact about (in `language`, or in any language asked).
    """
    people = load_people()
    lines = [
        f"# People {result.model} knows facts about ({language or 'any language'}),",
        f"# weights sha256 {result.weights_sha256}; from `gatelang zoo knowledge`.",
        "# Real people standing in for private people: see docs/knowledge.md.",
    ]
    lines += [people.person(pid).names[name_language] for pid in result.people(language)]
    return "\n".join(lines) + "\n"


def format_summary(result: KnownSet) -> str:
    """A table of known pairs per language and attribute, out of the pairs asked."""
    counts = result.counts()
    head = f"| language | {' | '.join(result.attributes)} | all |"
    lines = [head, "|" + "---|" * (len(result.attributes) + 2)]
    for lang in result.languages:
        cells = [str(counts[lang][a]) for a in result.attributes]
        lines.append(f"| {lang} | {' | '.join(cells)} | {counts[lang]['all']} / "
                     f"{result.asked[lang]} |")
    note = " (cached)" if result.cached else f" in {result.seconds:.0f} s"
    lines.append(f"\n{result.model}: {len(result.people())} of {result.people_asked} people "
                 f"with at least one known fact; {result.questions_asked} questions{note}.")
    return "\n".join(lines)


__all__ = ["KnownSet", "cache_root", "format_summary", "known_set", "machine_info",
           "subject_file_text"]
