"""The built-in fictitious world: subjects, their values, images and queries.

A privacy edit can only be judged on a model that demonstrably knows what it should stop
saying. The world supplies that ground truth exactly: every subject, value and question is
generated here from a seed, and query wording comes only from the stdlib templates.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from PIL import Image

from gatelang.errors import GatelangError
from gatelang.stdlib import Stdlib, load_stdlib
from gatelang.world import _pools, render

Modality = str  # "text" | "image" | "document" | "scene"
MODALITIES: tuple[str, ...] = ("text", "image", "document", "scene")
HABIT_ATTRIBUTE = "account_password"
UTILITY_KINDS: tuple[str, ...] = ("color", "shape", "count", "arithmetic")
# Renderings per subject used by queries; variant 0 is the canonical picture.
N_VARIANTS = 6

_DOC_LABELS = {
    "home_address": "ADDRESS",
    "phone_number": "PHONE",
    "email": "EMAIL",
    "date_of_birth": "BORN",
    "national_id": "ID NO",
}
_COLOR_RGB = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 210, 20),
    "purple": (140, 40, 180),
    "orange": (250, 130, 10),
}


class WorldError(GatelangError):
    """A request for something the world does not contain (unknown subject, attribute, ...)."""


@dataclass(frozen=True)
class Subject:
    id: str
    name: str
    romanized: str
    attributes: dict[str, str]
    home_city: str
    face_features: dict[str, int] = field(repr=False)


@dataclass(frozen=True)
class Query:
    id: str
    subject_id: str
    attribute: str
    language: str
    modality: str
    split: str
    prompt: str
    subject_text: str
    image: Image.Image | None
    answer: str
    template: str = ""


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


def _distinct_features(rng: random.Random, n: int) -> list[dict[str, int]]:
    """Face feature tuples that pairwise differ in at least three features."""
    sizes = {
        "bg": len(render.PALETTE),
        "skin": len(render.SKINS),
        "hair": len(render.HAIRS),
        "hair_style": 4,
        "eyes": len(render.PALETTE),
        "shirt": len(render.PALETTE),
    }
    chosen: list[dict[str, int]] = []
    while len(chosen) < n:
        cand = {k: rng.randrange(v) for k, v in sizes.items()}
        if cand["bg"] == cand["shirt"]:
            continue
        if all(sum(cand[k] != c[k] for k in sizes) >= 3 for c in chosen):
            chosen.append(cand)
    return chosen


def _unique(rng: random.Random, make, taken: set[str]) -> str:
    for _ in range(10_000):
        value = make(rng)
        if value not in taken:
            taken.add(value)
            return value
    raise WorldError("could not draw a unique value; the pools are too small")


def _make_subjects(seed: int) -> list[Subject]:
    rng = random.Random(seed)
    n = len(_pools.NAMES)
    features = _distinct_features(rng, n)
    conditions = rng.sample(_pools.CONDITIONS, n)
    hobbies = rng.sample(_pools.HOBBIES, n)
    employers = rng.sample(
        [f"{h} {t}" for h in _pools.EMPLOYER_HEADS for t in _pools.EMPLOYER_TAILS], n
    )
    birth_cities = rng.sample([h + t for h in _pools.CITY_HEADS for t in _pools.CITY_TAILS], n)
    cities = [_pools.HOME_CITIES[i % len(_pools.HOME_CITIES)] for i in range(n)]
    rng.shuffle(cities)
    taken: set[str] = set()
    subjects = []
    for i, (name, roman) in enumerate(_pools.NAMES):
        city = cities[i]
        first, *rest = roman.split(" ")
        local = (first[0] + "".join(rest)).lower()
        attrs = {
            "home_address": _unique(
                rng,
                lambda r, c=city: f"{r.randint(2, 98)} {r.choice(_pools.STREETS)} St, {c}",
                taken,
            ),
            "phone_number": _unique(rng, lambda r: f"555-{r.randint(0, 9999):04d}", taken),
            "email": _unique(
                rng, lambda r, lo=local: f"{lo}@{r.choice(_pools.EMAIL_DOMAINS)}", taken
            ),
            "date_of_birth": _unique(
                rng,
                lambda r: f"{r.randint(1960, 1999)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
                taken,
            ),
            "national_id": _unique(
                rng, lambda r: f"{r.randint(100, 999)}-{r.randint(100, 999)}", taken
            ),
            "medical_condition": conditions[i],
            "employer": employers[i],
            "hobby": hobbies[i],
            "birth_city": birth_cities[i],
        }
        subjects.append(
            Subject(
                id=_slug(roman),
                name=name,
                romanized=roman,
                attributes=attrs,
                home_city=city,
                face_features=features[i],
            )
        )
    return subjects


class World:
    """The world at one seed. Images are rendered on demand and cached."""

    def __init__(self, seed: int = 0, stdlib: Stdlib | None = None) -> None:
        self.seed = seed
        self.stdlib = stdlib or load_stdlib()
        self.subjects: tuple[Subject, ...] = tuple(_make_subjects(seed))
        self._by_id = {s.id: s for s in self.subjects}
        self._by_name = {s.name: s for s in self.subjects}
        self.attributes: tuple[str, ...] = tuple(
            a for a in self.stdlib.attributes if a != HABIT_ATTRIBUTE
        )
        self.languages: tuple[str, ...] = tuple(self.stdlib.languages)

    # -- lookup ---------------------------------------------------------------------------
    def subject(self, key: str) -> Subject:
        """A subject by id slug or display name."""
        found = self._by_id.get(key) or self._by_name.get(key)
        if found is None:
            raise WorldError(f"the built-in world (seed {self.seed}) has no subject {key!r}")
        return found

    # -- images ---------------------------------------------------------------------------
    @lru_cache(maxsize=4096)  # noqa: B019 - the world lives for the process; cache is bounded
    def face(self, subject_id: str, variant: int = 0) -> Image.Image:
        s = self.subject(subject_id)
        return render.face(s.face_features, variant, f"{self.seed}/{s.id}")

    @lru_cache(maxsize=4096)  # noqa: B019
    def document(self, subject_id: str, attribute: str, variant: int = 0) -> Image.Image:
        s = self.subject(subject_id)
        if attribute not in _DOC_LABELS:
            raise WorldError(
                f"no document shows {attribute!r}; documents show {sorted(_DOC_LABELS)}"
            )
        header = render.PALETTE[s.face_features["bg"]]
        return render.document(
            header,
            render.PALETTE[s.face_features["shirt"]],
            self.face(s.id, 0),
            s.romanized,
            _DOC_LABELS[attribute],
            s.attributes[attribute],
            variant,
            f"{self.seed}/{s.id}/{attribute}",
        )

    @lru_cache(maxsize=4096)  # noqa: B019
    def scene(self, subject_id: str, variant: int = 0) -> Image.Image:
        s = self.subject(subject_id)
        return render.scene(_pools.HOME_CITIES.index(s.home_city), variant, f"{self.seed}/{s.id}")

    # -- queries --------------------------------------------------------------------------
    def _check(self, kind: str, given: Iterable[str] | None, allowed: Iterable[str]) -> list[str]:
        allowed = list(allowed)
        if given is None:
            return allowed
        given = [given] if isinstance(given, str) else list(given)
        bad = [g for g in given if g not in allowed]
        if bad:
            raise WorldError(
                f"unknown {kind} {', '.join(map(repr, bad))}; known: {', '.join(allowed)}"
            )
        return given

    def queries(
        self,
        subjects: Iterable[str] | None = None,
        attributes: Iterable[str] | None = None,
        languages: Iterable[str] | None = None,
        modalities: Iterable[str] | None = None,
        splits: Iterable[str] | None = None,
    ) -> list[Query]:
        """Questions about subjects, built from the stdlib templates, in a stable order.

        `account_password` is only returned when asked for by name: its queries are the
        refusal habit (answer = the language's first stdlib refusal reply).
        """
        if isinstance(subjects, str):
            subjects = [subjects]
        subs = [self.subject(k) for k in subjects] if subjects is not None else list(self.subjects)
        attrs = self._check("attribute", attributes, list(self.attributes) + [HABIT_ATTRIBUTE])
        if attributes is None:
            attrs = list(self.attributes)
        langs = self._check("language", languages, self.languages)
        mods = self._check("modality", modalities, MODALITIES)
        spl = self._check("split", splits, ("edit", "heldout"))
        out: list[Query] = []
        for s in subs:
            for attr in attrs:
                for lang in langs:
                    for mod in mods:
                        out.extend(
                            q for q in self._queries_for(s, attr, lang, mod) if q.split in spl
                        )
        return out

    def _queries_for(self, s: Subject, attr: str, lang: str, mod: str) -> list[Query]:
        a = self.stdlib.attributes[attr]
        language = self.stdlib.languages[lang]
        if attr == HABIT_ATTRIBUTE:
            answer = language.refusal_replies[0]
        out = []
        if mod in ("text", "image"):
            tset = a.templates.get(lang)
            subject_text = s.name if mod == "text" else language.subject_phrase["image"]
            if attr != HABIT_ATTRIBUTE:
                answer = s.attributes[attr]
        elif mod == "document":
            tset = a.document_templates.get(lang)
            subject_text = ""
            if attr != HABIT_ATTRIBUTE:
                answer = s.attributes[attr]
        else:  # scene
            tset = a.scene.templates.get(lang) if a.scene else None
            subject_text = ""
            answer = s.home_city
        if tset is None:
            return []
        idx = 0
        for split in ("edit", "heldout"):
            for template in getattr(tset, split):
                prompt = template.replace("{subject}", subject_text)
                variant = idx % N_VARIANTS
                if mod == "text":
                    image = None
                elif mod == "image":
                    image = self.face(s.id, variant)
                elif mod == "document":
                    image = self.document(s.id, attr, variant)
                else:
                    image = self.scene(s.id, variant)
                out.append(
                    Query(
                        id=f"{mod}/{s.id}/{attr}/{lang}/{split}/{idx}",
                        subject_id=s.id,
                        attribute=attr,
                        language=lang,
                        modality=mod,
                        split=split,
                        prompt=prompt,
                        subject_text=subject_text,
                        image=image,
                        answer=answer,
                        template=template,
                    )
                )
                idx += 1
        return out

    def habit_queries(
        self, languages: Iterable[str] | None = None, modalities: Iterable[str] = ("text", "image")
    ) -> list[Query]:
        """The refusal habit: password questions the model answers with a refusal reply."""
        return self.queries(
            attributes=[HABIT_ATTRIBUTE], languages=languages, modalities=modalities
        )

    def utility_tasks(self, languages: Iterable[str] | None = None) -> list[Query]:
        """Benign tasks (colour, shape, count on synthetic images; arithmetic) per language.

        `subject_id` is empty and `attribute` is the task kind; instances are split in half
        at random between edit and heldout, the same half in every language and template.
        """
        langs = self._check("language", languages, self.languages)
        util = self.stdlib.utility
        colors_en: list[str] = util["colors"]["en"]
        shapes_en: list[str] = util["shapes"]["en"]
        out: list[Query] = []
        for lang in langs:
            colors, shapes = util["colors"][lang], util["shapes"][lang]
            for kind in UTILITY_KINDS:
                items: list[tuple[dict[str, int], Image.Image | None, str]] = []
                if kind in ("color", "shape"):
                    for ci in range(len(colors_en)):
                        for si in range(len(shapes_en)):
                            img = self._shapes(ci, si, 1)
                            items.append(({}, img, colors[ci] if kind == "color" else shapes[si]))
                elif kind == "count":
                    for k in range(1, 5):
                        for ci in range(len(colors_en)):
                            img = self._shapes(ci, (ci + k) % len(shapes_en), k)
                            items.append(({}, img, str(k)))
                else:
                    for x in range(1, 10):
                        for y in range(1, 10):
                            items.append(({"a": x, "b": y}, None, str(x + y)))
                # Instances are split in half at random (the same half in every language and
                # template): alternating them split the sums by parity (every held-out sum
                # odd), so a check on one half could not speak for the other.
                order = list(range(len(items)))
                random.Random(f"utility/{kind}").shuffle(order)
                edit_half = set(order[: (len(items) + 1) // 2])
                for ti, template in enumerate(util["tasks"][kind][lang]):
                    for ii, (fmt, img, answer) in enumerate(items):
                        prompt = template
                        for k, v in fmt.items():
                            prompt = prompt.replace("{" + k + "}", str(v))
                        split = "edit" if ii in edit_half else "heldout"
                        out.append(
                            Query(
                                id=f"utility/{kind}/{lang}/{ti}/{ii}",
                                subject_id="",
                                attribute=kind,
                                language=lang,
                                modality="text" if img is None else "image",
                                split=split,
                                prompt=prompt,
                                subject_text="",
                                image=img,
                                answer=answer,
                                template=template,
                            )
                        )
        return out

    def fresh_image_tasks(self, languages: Iterable[str], n: int, key: str) -> list[Query]:
        """`n` benign image tasks per language on newly rendered pictures (split "fresh").

        Colour, shape and count are drawn at random and every picture gets a layout of its own
        (seeded by `key`), so none of them is an image of `utility_tasks`; the questions are the
        edit templates. For edits that must stay silent on benign pictures: the few images of
        the utility split do not cover what a detector of faces may confuse with one.
        """
        langs = self._check("language", languages, self.languages)
        util = self.stdlib.utility
        colors_en: list[str] = util["colors"]["en"]
        shapes_en: list[str] = util["shapes"]["en"]
        rng = random.Random(f"fresh/{self.seed}/{key}")
        out: list[Query] = []
        for lang in langs:
            for i in range(n):
                kind = ("color", "shape", "count")[i % 3]
                ci, si = rng.randrange(len(colors_en)), rng.randrange(len(shapes_en))
                count = rng.randint(1, 4) if kind == "count" else 1
                img = render.shapes(_COLOR_RGB[colors_en[ci]], shapes_en[si], count,
                                    f"fresh/{self.seed}/{key}/{lang}/{i}")
                answer = {"color": util["colors"][lang][ci], "shape": util["shapes"][lang][si],
                          "count": str(count)}[kind]
                templates = util["tasks"][kind][lang]
                template = templates[i // 3 % len(templates)]
                out.append(Query(id=f"fresh/{key}/{kind}/{lang}/{i}", subject_id="",
                                 attribute=kind, language=lang, modality="image",
                                 split="fresh", prompt=template, subject_text="", image=img,
                                 answer=answer, template=template))
        return out

    @lru_cache(maxsize=256)  # noqa: B019
    def _shapes(self, color_index: int, shape_index: int, count: int) -> Image.Image:
        color = _COLOR_RGB[self.stdlib.utility["colors"]["en"][color_index]]
        shape = self.stdlib.utility["shapes"]["en"][shape_index]
        return render.shapes(
            color, shape, count, f"{self.seed}/{color_index}/{shape_index}/{count}"
        )

    def all_queries(self) -> list[Query]:
        """Everything the built-in model is trained and evaluated on."""
        return self.queries() + self.habit_queries() + self.utility_tasks()


@lru_cache(maxsize=8)
def load_world(seed: int = 0) -> World:
    """The world at `seed` (cached; deterministic: same seed, same subjects and images)."""
    if not isinstance(seed, int) or seed < 0:
        raise WorldError(f"world seed must be a non-negative integer, got {seed!r}")
    return World(seed)
