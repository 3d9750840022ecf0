"""Well-known real people and their public facts: the probe set for pretrained knowledge.

The built-in world is fictitious so its ground truth is exact, but no pretrained checkpoint
knows it. These people stand in for private people: a real model learned their birthplaces and
professions in pretraining, the way it could have learned a private person's address, so an
edit can be tested on knowledge we did not put there (docs/knowledge.md).

The data is YAML next to this file (people, countries, cities, professions and fields, works,
question templates); this module validates it once and answers two questions: which questions
to ask about whom, and whether an answer states an accepted value.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

ATTRIBUTES: tuple[str, ...] = (
    "birth_country", "birth_city", "nationality", "profession", "field", "best_known_work",
)
LANGUAGES: tuple[str, ...] = ("en", "zh", "es")
SPLITS: tuple[str, ...] = ("edit", "selection", "heldout")
FILES: tuple[str, ...] = (
    "people.yaml", "countries.yaml", "cities.yaml", "professions.yaml", "works.yaml",
    "templates.yaml",
)

Language = Literal["en", "zh", "es"]


class PeopleDataError(ValueError):
    """The shipped people data is inconsistent (a broken reference, a missing language)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# -- raw file schemas: what a contributor writes ----------------------------------------------

class RawPerson(_Frozen):
    en: str = Field(min_length=1)
    zh: str = Field(min_length=1)
    es: str | None = None
    born: int
    city: str | None = None
    country: tuple[str, ...] | None = None
    nat: tuple[str, ...] | None = None
    prof: tuple[str, ...]
    field: str | None = None
    work: str | None = None

    @field_validator("prof", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class RawCountry(_Frozen):
    region: str
    en: str
    zh: str
    es: str


class RawVocab(_Frozen):
    """A profession, field or work: aliases per language ('|'-separated); es defaults to en."""

    en: str
    zh: str
    es: str | None = None
    field: str | None = None


class RawSplits(_Frozen):
    edit: tuple[str, ...] = Field(min_length=1)
    selection: tuple[str, ...] = Field(min_length=1)
    heldout: tuple[str, ...] = Field(min_length=1)


class RawTemplates(_Frozen):
    templates: dict[str, dict[str, RawSplits]]
    paraphrase: dict[str, dict[str, tuple[str, ...]]]
    jailbreak: dict[str, tuple[str, ...]]


# -- the resolved set ---------------------------------------------------------------------------

class Person(_Frozen):
    """One person: names per language and, per attribute asked about, the accepted answers."""

    id: str
    names: dict[str, str]
    born: int
    region: str
    facts: dict[str, dict[str, tuple[str, ...]]]
    """attribute -> language -> accepted aliases (that language's own, then English ones)."""

    @property
    def name(self) -> str:
        return self.names["en"]

    @property
    def era(self) -> str:
        if self.born < 500:
            return "ancient"
        if self.born < 1500:
            return "medieval"
        if self.born < 1800:
            return "early-modern"
        if self.born < 1900:
            return "19th-century"
        return "20th-century"


class PeopleSet(_Frozen):
    version: str
    sha256: str
    people: tuple[Person, ...]
    templates: dict[str, dict[str, dict[str, tuple[str, ...]]]]
    """attribute -> language -> split -> templates with `{subject}`."""
    paraphrase: dict[str, dict[str, tuple[str, ...]]]
    jailbreak: dict[str, tuple[str, ...]]

    def person(self, key: str) -> Person:
        """By id slug, or by name in any language."""
        for p in self.people:
            if key == p.id or key in p.names.values():
                return p
        raise KeyError(f"no person {key!r} in the probe set")

    def questions(
        self,
        people: Iterable[str] | None = None,
        attributes: Iterable[str] | None = None,
        languages: Iterable[str] | None = None,
        splits: Iterable[str] | None = None,
    ) -> list[Question]:
        """Every (person, attribute, language, split, template) question asked of a model."""
        chosen = self.people if people is None else tuple(self.person(k) for k in people)
        attrs = tuple(attributes or ATTRIBUTES)
        langs = tuple(languages or LANGUAGES)
        chosen_splits = tuple(splits or SPLITS)
        out: list[Question] = []
        for p in chosen:
            for a in attrs:
                if a not in p.facts:
                    continue
                for lang in langs:
                    for split in chosen_splits:
                        for i, tpl in enumerate(self.templates[a][lang][split]):
                            out.append(Question(
                                id=f"{p.id}/{a}/{lang}/{split}/{i}", person_id=p.id,
                                attribute=a, language=lang, split=split, template=i,
                                prompt=tpl.replace("{subject}", p.names[lang]),
                                subject_text=p.names[lang], accepted=p.facts[a][lang]))
        return out


@dataclass(frozen=True)
class Question:
    """A question in the shape adapters encode (`prompt`, `subject_text`, `image`)."""

    id: str
    person_id: str
    attribute: str
    language: str
    split: str
    template: int
    prompt: str
    subject_text: str
    accepted: tuple[str, ...]
    image: None = None

    def is_correct(self, answer: str) -> bool:
        return matches(answer, self.accepted, exclude=(self.subject_text,))


# -- answer matching ----------------------------------------------------------------------------

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")


def normalize_answer(text: str) -> str:
    """Case-, diacritic- and punctuation-insensitive form of an answer or alias.

    NFKD then dropping combining marks makes "Málaga" == "Malaga" and "Schrödinger" ==
    "Schrodinger" (models drop accents); punctuation becomes a space so "St. Petersburg" ==
    "St Petersburg"; CJK text is kept as is.
    """
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text))
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()
    text = text.replace("ß", "ss").replace("ø", "o").replace("ł", "l").replace("đ", "d")
    return " ".join(re.sub(r"[^\w]+", " ", text).split())


@lru_cache(maxsize=65536)
def _pattern(alias: str) -> re.Pattern[str] | None:
    norm = normalize_answer(alias)
    if not norm:
        return None
    if _CJK.search(norm):
        return re.compile(re.escape(norm))
    # Whole words, with an optional plural ("physicists", "actresses" are still the answer).
    return re.compile(r"(?<!\w)" + re.escape(norm) + r"(?:s|es)?(?!\w)")


def matches(answer: str, accepted: Sequence[str], exclude: Sequence[str] = ()) -> bool:
    """Whether the answer states one of the accepted aliases (whole words for Latin script).

    `exclude` is removed from the answer first: answers repeat the person's name, and
    "Florence Nightingale was born in ..." must not count as naming Florence.
    """
    norm = normalize_answer(answer)
    for text in exclude:
        gone = normalize_answer(text)
        if gone:
            norm = norm.replace(gone, " ")
    for alias in accepted:
        pat = _pattern(alias)
        if pat is not None and pat.search(norm):
            return True
    return False


# -- loading ------------------------------------------------------------------------------------

def _split(text: str) -> tuple[str, ...]:
    return tuple(a.strip() for a in text.split("|") if a.strip())


def _vocab(entry: RawVocab) -> dict[str, tuple[str, ...]]:
    en = _split(entry.en)
    return {"en": en, "zh": _split(entry.zh), "es": _split(entry.es) if entry.es else en}


def _with_english(aliases: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """A zh or es answer may name the value in English ("Ulm"): accept those too."""
    return {lang: tuple(dict.fromkeys(aliases[lang] + aliases["en"])) for lang in LANGUAGES}


def _slug(name: str) -> str:
    text = unicodedata.normalize("NFKD", name)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    return "-".join(re.sub(r"[^a-z0-9]+", " ", text).split())


def _raw_files() -> dict[str, bytes]:
    root = resources.files(__name__)
    return {name: (root / name).read_bytes() for name in FILES}


@lru_cache(maxsize=1)
def load_people() -> PeopleSet:
    """Validate and resolve the shipped probe set (cached: it is immutable at run time)."""
    files = _raw_files()
    digest = hashlib.sha256()
    raw: dict[str, Any] = {}
    for name in FILES:
        digest.update(name.encode() + b"\0" + files[name] + b"\0")
        raw[name] = yaml.safe_load(files[name])
    return _resolve(raw, digest.hexdigest())


def _resolve(raw: dict[str, Any], sha: str) -> PeopleSet:
    errors: list[str] = []
    countries: dict[str, dict[str, tuple[str, ...]]] = {}
    demonyms: dict[str, dict[str, tuple[str, ...]]] = {}
    regions: dict[str, str] = {}
    for key, value in raw["countries.yaml"].items():
        c = RawCountry(**value)
        regions[key] = c.region
        countries[key], demonyms[key] = {}, {}
        for lang in LANGUAGES:
            names, _, dems = getattr(c, lang).partition("/")
            countries[key][lang] = _split(names)
            demonyms[key][lang] = _split(dems)
    cities: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {}
    for key, value in raw["cities.yaml"].items():
        if not (isinstance(value, list) and len(value) == 4):
            errors.append(f"cities.yaml: {key}: expected [country, en, zh, es]")
            continue
        country, en, zh, es = (str(v) for v in value)
        if country not in countries:
            errors.append(f"cities.yaml: {key}: unknown country {country!r}")
        cities[key] = (country, {"en": _split(en), "zh": _split(zh),
                                 "es": _split(es) if es else _split(en)})
    prof_raw = raw["professions.yaml"]
    professions = {k: RawVocab(**v) for k, v in prof_raw["professions"].items()}
    fields = {k: _vocab(RawVocab(**v)) for k, v in prof_raw["fields"].items()}
    for k, p in professions.items():
        if p.field is not None and p.field not in fields:
            errors.append(f"professions.yaml: {k}: unknown field {p.field!r}")
    works = {k: _vocab(RawVocab(**v)) for k, v in raw["works.yaml"].items()}

    people: list[Person] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw["people.yaml"]["people"]):
        rp = RawPerson(**entry)
        where = f"people.yaml: entry {i} ({rp.en})"
        pid = _slug(rp.en)
        if pid in seen:
            errors.append(f"{where}: duplicate id {pid!r}")
        seen.add(pid)
        facts: dict[str, dict[str, tuple[str, ...]]] = {}
        if rp.city is not None:
            if rp.city not in cities:
                errors.append(f"{where}: unknown city {rp.city!r}")
            else:
                facts["birth_city"] = _with_english(cities[rp.city][1])
        birth_countries = rp.country if rp.country is not None else (
            (cities[rp.city][0],) if rp.city in cities else ())
        for c in (*birth_countries, *(rp.nat or ())):
            if c not in countries:
                errors.append(f"{where}: unknown country {c!r}")
        birth_countries = tuple(c for c in birth_countries if c in countries)
        if birth_countries:
            facts["birth_country"] = _with_english(_merge(countries[c] for c in birth_countries))
        nat = tuple(c for c in (rp.nat if rp.nat is not None else birth_countries)
                    if c in countries)
        if nat:
            facts["nationality"] = _with_english(_merge(
                [countries[c] for c in nat] + [demonyms[c] for c in nat]))
        profs = [professions[p] for p in rp.prof if p in professions]
        errors.extend(f"{where}: unknown profession {p!r}" for p in rp.prof
                      if p not in professions)
        if profs:
            facts["profession"] = _with_english(_merge(_vocab(p) for p in profs))
        field_key = rp.field or next((p.field for p in profs if p.field), None)
        if field_key is not None:
            if field_key not in fields:
                errors.append(f"{where}: unknown field {field_key!r}")
            else:
                facts["field"] = _with_english(fields[field_key])
        if rp.work is not None:
            if rp.work not in works:
                errors.append(f"{where}: unknown work {rp.work!r}")
            else:
                facts["best_known_work"] = _with_english(works[rp.work])
        region = regions.get(birth_countries[0] if birth_countries else (nat[0] if nat else ""),
                             "unknown")
        people.append(Person(id=pid, names={"en": rp.en, "zh": rp.zh, "es": rp.es or rp.en},
                             born=rp.born, region=region, facts=facts))

    tpl = RawTemplates(**raw["templates.yaml"])
    templates: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {}
    for attr in ATTRIBUTES:
        per_lang = tpl.templates.get(attr, {})
        for lang in LANGUAGES:
            if lang not in per_lang:
                errors.append(f"templates.yaml: {attr} has no {lang} templates")
        templates[attr] = {lang: {s: getattr(sp, s) for s in SPLITS}
                           for lang, sp in per_lang.items()}
    if errors:
        raise PeopleDataError("; ".join(errors[:20]) + (f"; … ({len(errors)} problems)"
                                                         if len(errors) > 20 else ""))
    return PeopleSet(version="2026.12.1", sha256=sha, people=tuple(people), templates=templates,
                     paraphrase=tpl.paraphrase, jailbreak=tpl.jailbreak)


def _merge(parts: Iterable[dict[str, tuple[str, ...]]]) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {lang: () for lang in LANGUAGES}
    for part in parts:
        for lang in LANGUAGES:
            out[lang] = tuple(dict.fromkeys(out[lang] + part[lang]))
    return out


__all__ = [
    "ATTRIBUTES", "LANGUAGES", "SPLITS", "PeopleDataError", "PeopleSet", "Person", "Question",
    "load_people", "matches", "normalize_answer",
]
