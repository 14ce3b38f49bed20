"""The search suites and the fictional world behind them.

``search_entity`` (mirrors HR-MMSearch: a fact about the organisation whose emblem the image shows) and
``search_fact`` (mirrors MMSearch: a fact about a named organisation) both need ``search``. Both draw
from a fixed fictional world (:func:`world`) whose documents are the built-in search index
(:func:`corpus_documents`), so the facts exist nowhere else.
"""

from __future__ import annotations

import itertools
import random
from abc import abstractmethod
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

from PIL import Image, ImageDraw

from axpo_core.envs.suites.base import COLOURS, Question, Suite, answer_turn, tool_call_turn
from axpo_core.envs.suites.control_shapes import ControlShapes
from axpo_core.envs.suites.drawing import _blend, _draw_shape, _font, _muted
from axpo_core.rewards import AnswerType

_NAME_HEADS = (
    "Var Os Tal Bren Kel Mor Ast Fen Hal Jor Lun Nes Quar Ril Sel Tor Wen Yar Zel Cor Del Gar Pel Vin Sar "
    "Brom"
).split()
_NAME_TAILS = "holt by mere stead vik ander ling dale ton rath wyn gard ley mark ven rin".split()
_TOWN_HEADS = "Ash Bel Cal Dor Elm Fal Gil Har Ivel Kes Lor Mal Nor Pen Rad Sol Tam Ul Wes Yel".split()
_TOWN_TAILS = "ford mouth bury wick ham port".split()
_KINDS = (
    "Rowing Club",
    "Lantern Society",
    "Glassworks",
    "Observatory",
    "Choir",
    "Chess Club",
    "Weavers Guild",
    "Botanical Garden",
    "Brewery",
    "Theatre Company",
    "Cycling Club",
    "Printing House",
)
_FIRST_NAMES = (
    "Elsa Tomas Ingrid Piet Mara Anselm Livia Oskar Greta Bruno Hedda Casimir Ilse Rutger Nora Emil Sabine "
    "Lorenz Agnes Viktor"
).split()
_SURNAMES = (
    "Brandt Holm Castell Vogel Lindqvist Marek Sorensen Aalto Quist Falk Berger Nyberg Kessler Dahl Roos "
    "Weiss Lund Krantz Moll Strand"
).split()
_MASCOTS = (
    "heron otter badger lynx falcon stag hare owl fox swan boar raven salmon beaver crane wolf marten ibex "
    "kestrel seal"
).split()
_TOWN_LINES = (
    "{town} is a small market town on the river {river}. Its weekly market is held on {day}s.",
    "{town} is a quiet harbour town on the coast. Its lighthouse dates from the old shipping days.",
    "{town} is an old mining town in the northern hills. Its main street climbs towards the {river} pass.",
    "{town} is a busy river town where the {river} meets the sea. Its bridges are known across the region.",
)
_RIVERS = "Ost Vell Marr Tiva Lenn Orra".split()
_DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday".split()
_PATTERNS = ("horizontal", "vertical", "diagonal", "plain")
N_ENTITIES = 240
N_TOWNS = 30


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


@dataclass(frozen=True)
class Entity:
    """A fictional organisation of the built-in encyclopedia."""

    id: str
    name: str
    kind: str
    town: str
    year: int
    founder: str
    mascot: str
    pattern: str  # of the emblem's background: horizontal / vertical (stripes), diagonal (halves), plain
    colours: tuple[str, ...]  # the background's colours (one when plain)
    symbol: str  # the shape in the emblem's centre
    symbol_colour: str

    @property
    def emblem(self) -> str:
        """The emblem in words (without an article), as its document and the oracle's query say it."""
        if self.pattern == "plain":
            background = f"a plain {self.colours[0]} field"
        else:
            what = "halves" if self.pattern == "diagonal" else "stripes"
            background = f"{self.colours[0]} and {self.colours[1]} {self.pattern} {what}"
        return f"{self.symbol_colour} {self.symbol} on {background}"

    def fact(self, which: str) -> str:
        return {"year": str(self.year), "town": self.town, "founder": self.founder, "mascot": self.mascot}[
            which
        ]

    def document(self) -> dict[str, str]:
        # Each fact ends its sentence, and the emblem shares the first one: a snippet (the sentences that
        # match the query) then ends close to the fact asked for.
        text = (
            f"The {self.name}, whose emblem is {_a(self.emblem)}, is {_a(self.kind.lower())} based in the "
            f"town of {self.town}. It was founded in {self.year} by {self.founder}. "
            f"Its mascot is the {self.mascot}."
        )
        return {"id": self.id, "title": self.name, "text": text}


def _emblem_bags() -> list[tuple[str, tuple[str, ...], str]]:
    """Every (pattern, background colours, symbol, symbol colour) whose words differ from all others'
    as a set: BM25 sees a bag of words, so "a red star on yellow and blue" must not also describe
    "a yellow star on red and blue"."""
    colours, bags = list(COLOURS), []
    for pattern in _PATTERNS:
        k = 2 if pattern == "plain" else 3
        for group in itertools.combinations(colours, k):
            for symbol in ControlShapes.SHAPES:
                bags.append((pattern, group, symbol))
    return bags


@lru_cache(maxsize=1)
def world() -> tuple[tuple[Entity, ...], tuple[str, ...]]:
    """The fixed fictional world (entities and towns) behind the search suites and the built-in index."""
    rng = random.Random("axpo-world-v1")
    towns = tuple(rng.sample([h + t for h in _TOWN_HEADS for t in _TOWN_TAILS], N_TOWNS))
    words = rng.sample([h + t for h in _NAME_HEADS for t in _NAME_TAILS], N_ENTITIES)
    assert not set(words) & set(towns)
    founders = rng.sample([f"{f} {s}" for f in _FIRST_NAMES for s in _SURNAMES], N_ENTITIES)
    entities = []
    bags = rng.sample(_emblem_bags(), N_ENTITIES)
    for i, (word, (pattern, group, symbol)) in enumerate(zip(words, bags, strict=True)):
        symbol_colour = rng.choice(group)
        background = [c for c in group if c != symbol_colour]
        rng.shuffle(background)
        kind = rng.choice(_KINDS)
        entities.append(
            Entity(
                id=f"entity-{i:03d}",
                name=f"{word} {kind}",
                kind=kind,
                town=rng.choice(towns),
                year=rng.randint(1720, 1990),
                founder=founders[i],
                mascot=rng.choice(_MASCOTS),
                pattern=pattern,
                colours=tuple(background),
                symbol=symbol,
                symbol_colour=symbol_colour,
            )
        )
    return tuple(entities), towns


def corpus_documents() -> list[dict[str, str]]:
    """The built-in search index's documents: one per entity, plus town pages that share its vocabulary
    (so a search has near misses to rank below the right page)."""
    entities, towns = world()
    rng = random.Random("axpo-world-v1:towns")
    docs = [e.document() for e in entities]
    for i, town in enumerate(towns):
        line = rng.choice(_TOWN_LINES).format(town=town, river=rng.choice(_RIVERS), day=rng.choice(_DAYS))
        docs.append({"id": f"town-{i:02d}", "title": town, "text": line})
    return docs


class _SearchSuite(Suite):
    """Questions about the fictional world, whose facts are only in the built-in search index."""

    tool = "search"
    FACTS: ClassVar[tuple[str, ...]]  # which facts questions ask for
    _ASK: ClassVar[dict[str, str]]  # fact -> question text
    _SEARCH_THINK: ClassVar[tuple[str, ...]]  # the oracle's thinking before its search

    @staticmethod
    def entity(question: Question) -> Entity:
        return world()[0][question.meta["entity"]]

    @staticmethod
    def _answer_type(fact: str) -> AnswerType:
        return "exact"

    def _question(self, seed: int, index: int, image: Image.Image, meta: dict[str, Any]) -> Question:
        entity = world()[0][meta["entity"]]
        fact = meta["fact"]
        return self._build(
            seed,
            index,
            text=self._ASK[fact].format(name=entity.name),
            image=image,
            answer=entity.fact(fact),
            answer_type=self._answer_type(fact),
            meta=meta,
        )

    @abstractmethod
    def query(self, question: Question, rng: random.Random) -> str:
        """The oracle's search query: built only from what the question and image show."""

    _FACT_SENTENCE: ClassVar[dict[str, str]] = {
        "year": "it was founded in {year}",
        "town": "it is based in the town of {town}",
        "founder": "it was founded by {founder}",
        "mascot": "its mascot is the {mascot}",
    }
    # The word a query adds for the fact asked: the result's snippet is the sentences that match it.
    _QUERY: ClassVar[dict[str, str]] = {
        "year": "founded", "town": "town", "founder": "founded by", "mascot": "mascot"
    }
    _ANSWER_THINK = ("The result says {sentence}.",)
    _GUESS_THINK = ("I do not know it. I guess {answer}.",)

    def oracle(self, question: Question, rng: random.Random | None = None) -> list[str]:
        rng = self._turn_rng(question, rng)
        entity = self.entity(question)
        think = rng.choice(self._SEARCH_THINK).format(name=entity.name)
        # One result: the answer is then copied from the one snippet, not picked among look-alike pages.
        call = tool_call_turn(think, "search", {"query": self.query(question, rng), "max_results": 1})
        sentence = self._FACT_SENTENCE[question.meta["fact"]].format(**vars(entity))
        final = rng.choice(self._ANSWER_THINK).format(
            name=entity.name, sentence=sentence, answer=question.answer
        )
        return [call, answer_turn(final, question.answer)]

    def no_tool_oracle(self, question: Question, rng: random.Random | None = None) -> list[str]:
        """A guess: a year near the right one, or one of four names of the right kind (one of them right)."""
        rng = self._turn_rng(question, rng)
        fact = question.meta["fact"]
        if fact == "year":
            guess = str(int(question.answer) + rng.randint(-3, 3))
        else:
            entities, towns = world()
            pool = {
                "town": towns,
                "founder": [e.founder for e in entities],
                "mascot": _MASCOTS,
            }[fact]
            guess = rng.choice([question.answer, *rng.sample(sorted(set(pool) - {question.answer}), 3)])
        return [answer_turn(rng.choice(self._GUESS_THINK).format(answer=guess), guess)]


# --------------------------------------------------------------------------- search_entity


class SearchEntity(_SearchSuite):
    """A fact about the organisation whose emblem the image shows (HR-MMSearch-like): needs ``search``.

    The emblem (a flag: stripes or halves or a plain field, with a big symbol) is plain to see at
    128×128, and no two organisations' emblems are described by the same words; the fact is only in
    the index, so the oracle searches for the emblem's description.
    """

    name = "search_entity"
    description = "A fact about the organisation whose emblem is shown; needs search (HR-MMSearch-like)."
    FACTS = ("year", "town", "founder")
    _ASK = {
        "year": "The image shows the emblem of an organisation. In what year was it founded? "
        "Answer with a year.",
        "town": "The image shows the emblem of an organisation. In which town is it based? "
        "Answer with the town's name.",
        "founder": "The image shows the emblem of an organisation. Who founded it? Answer with the "
        "founder's full name.",
    }
    _SEARCH_THINK = ("I do not know this emblem, so I search for it.",)

    @staticmethod
    def _answer_type(fact: str) -> AnswerType:
        return "numeric" if fact == "year" else "exact"

    def _make(self, seed: int, index: int) -> Question:
        rng = self._question_rng(seed, index)
        meta = {"entity": rng.randrange(N_ENTITIES), "fact": rng.choice(self.FACTS)}
        entity = world()[0][meta["entity"]]
        w, h = rng.randint(448, 640), rng.randint(384, 512)
        image = Image.new("RGB", (w, h), _muted(rng, 200, 240))
        draw = ImageDraw.Draw(image)
        fw = round(w * rng.uniform(0.55, 0.7))
        fh = round(fw * 2 / 3)
        x0, y0 = rng.randint(40, w - fw - 20), rng.randint(20, h - fh - 20)
        x1, y1 = x0 + fw, y0 + fh
        draw.rectangle((x0 - 14, y0, x0 - 6, h - 1), fill=(90, 80, 70))  # the pole
        c = [COLOURS[n] for n in entity.colours]
        if entity.pattern == "plain":
            draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=c[0])
        elif entity.pattern == "diagonal":
            draw.polygon([(x0, y0), (x1, y0), (x0, y1)], fill=c[0])
            draw.polygon([(x1, y0), (x1, y1), (x0, y1)], fill=c[1])
        else:
            for k in range(4):
                if entity.pattern == "horizontal":
                    box = (x0, y0 + k * fh // 4, x1 - 1, y0 + (k + 1) * fh // 4 - 1)
                else:
                    box = (x0 + k * fw // 4, y0, x0 + (k + 1) * fw // 4 - 1, y1 - 1)
                draw.rectangle(box, fill=c[k % 2])
        _draw_shape(
            draw, entity.symbol, (x0 + x1) / 2, (y0 + y1) / 2, fh * 0.3, COLOURS[entity.symbol_colour]
        )
        meta |= {"image_size": [w, h], "flag_px": [x0, y0, x1, y1]}
        return self._question(seed, index, image, meta)

    def query(self, question: Question, rng: random.Random) -> str:
        emblem = self.entity(question).emblem
        return f"{emblem} emblem {self._QUERY[question.meta['fact']]}"


# --------------------------------------------------------------------------- search_fact


class SearchFact(_SearchSuite):
    """A fact about an organisation named in the question (MMSearch-like): needs ``search``.

    The image is a poster with the organisation's name; the answer (a year, a town, a person, an
    animal) is only in the index.
    """

    name = "search_fact"
    description = "A fact about a named fictional organisation; needs search (MMSearch-like)."
    FACTS = ("year", "town", "founder", "mascot")
    _ASK = {
        "year": "In what year was the {name} founded? Answer with the year.",
        "town": "In which town is the {name} based? Answer with the town's name.",
        "founder": "Who founded the {name}? Answer with the founder's full name.",
        "mascot": "What animal is the mascot of the {name}? Answer with the animal's name.",
    }
    _SEARCH_THINK = ("I do not know the {name}, so I search for it.",)

    def _make(self, seed: int, index: int) -> Question:
        rng = self._question_rng(seed, index)
        meta = {"entity": rng.randrange(N_ENTITIES), "fact": rng.choice(self.FACTS)}
        entity = world()[0][meta["entity"]]
        w, h = rng.randint(320, 448), rng.randint(224, 320)
        image = Image.new("RGB", (w, h), _blend(rng.choice(list(COLOURS.values())), (255, 255, 255), 0.2))
        draw = ImageDraw.Draw(image)
        word, kind = entity.name.split(" ", 1)
        font = _font(h // 7)
        draw.text((w / 2, h / 2 - h // 9), word, (20, 20, 20), font, "mm")
        draw.text((w / 2, h / 2 + h // 9), kind, (20, 20, 20), font, "mm")
        meta |= {"image_size": [w, h]}
        return self._question(seed, index, image, meta)

    def query(self, question: Question, rng: random.Random) -> str:
        name = self.entity(question).name
        return f"{name} {self._QUERY[question.meta['fact']]}"
