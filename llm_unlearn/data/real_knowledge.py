"""Real-world knowledge for the utility sets of a benchmark on a *pretrained* model.

TOFU's ``real_authors`` and ``world_facts`` sets measure whether unlearning fictitious entities damages what the
base model knew before any fine-tuning. For the embedded tiny Llama (trained from scratch) the synthetic generator
invents such facts and trains them; a pretrained model brings its own. This module lists candidate facts (classic
books and their authors; capitals, chemical symbols and other short world facts), each with wrong answers of the
same kind for the truth ratio, and :func:`known_facts` keeps those a given model answers correctly with greedy
decoding *before* fine-tuning, so the utility sets hold only knowledge the model has and can lose.

The facts are common knowledge, written here. Answers are short (a name, a city, a symbol), so ROUGE-L recall of a
generation reads "is the right answer in it".
"""

from __future__ import annotations

import random
from collections.abc import Sequence

# (book, author): famous works whose author is rarely disputed.
CLASSIC_BOOKS: list[tuple[str, str]] = [
    ("Pride and Prejudice", "Jane Austen"),
    ("Hamlet", "William Shakespeare"),
    ("Romeo and Juliet", "William Shakespeare"),
    ("War and Peace", "Leo Tolstoy"),
    ("Anna Karenina", "Leo Tolstoy"),
    ("Nineteen Eighty-Four", "George Orwell"),
    ("Animal Farm", "George Orwell"),
    ("The Great Gatsby", "F. Scott Fitzgerald"),
    ("Moby-Dick", "Herman Melville"),
    ("Don Quixote", "Miguel de Cervantes"),
    ("Crime and Punishment", "Fyodor Dostoevsky"),
    ("The Brothers Karamazov", "Fyodor Dostoevsky"),
    ("Oliver Twist", "Charles Dickens"),
    ("A Tale of Two Cities", "Charles Dickens"),
    ("Great Expectations", "Charles Dickens"),
    ("The Adventures of Tom Sawyer", "Mark Twain"),
    ("Adventures of Huckleberry Finn", "Mark Twain"),
    ("Frankenstein", "Mary Shelley"),
    ("Dracula", "Bram Stoker"),
    ("Jane Eyre", "Charlotte Bronte"),
    ("Wuthering Heights", "Emily Bronte"),
    ("The Odyssey", "Homer"),
    ("The Iliad", "Homer"),
    ("The Divine Comedy", "Dante Alighieri"),
    ("Les Miserables", "Victor Hugo"),
    ("The Hunchback of Notre-Dame", "Victor Hugo"),
    ("The Old Man and the Sea", "Ernest Hemingway"),
    ("To Kill a Mockingbird", "Harper Lee"),
    ("The Hobbit", "J. R. R. Tolkien"),
    ("The Lord of the Rings", "J. R. R. Tolkien"),
    ("Harry Potter and the Philosopher's Stone", "J. K. Rowling"),
    ("The Catcher in the Rye", "J. D. Salinger"),
    ("Brave New World", "Aldous Huxley"),
    ("Alice's Adventures in Wonderland", "Lewis Carroll"),
    ("The Origin of Species", "Charles Darwin"),
    ("The Republic", "Plato"),
    ("The Raven", "Edgar Allan Poe"),
    ("Macbeth", "William Shakespeare"),
    ("The Picture of Dorian Gray", "Oscar Wilde"),
    ("One Hundred Years of Solitude", "Gabriel Garcia Marquez"),
    ("The Adventures of Sherlock Holmes", "Arthur Conan Doyle"),
    ("Treasure Island", "Robert Louis Stevenson"),
    ("The Metamorphosis", "Franz Kafka"),
    ("Madame Bovary", "Gustave Flaubert"),
    ("The Count of Monte Cristo", "Alexandre Dumas"),
    ("Gulliver's Travels", "Jonathan Swift"),
    ("Robinson Crusoe", "Daniel Defoe"),
    ("The Time Machine", "H. G. Wells"),
]

# (country, capital)
CAPITALS: list[tuple[str, str]] = [
    ("France", "Paris"),
    ("Japan", "Tokyo"),
    ("Italy", "Rome"),
    ("Germany", "Berlin"),
    ("Spain", "Madrid"),
    ("the United Kingdom", "London"),
    ("Russia", "Moscow"),
    ("China", "Beijing"),
    ("Egypt", "Cairo"),
    ("Greece", "Athens"),
    ("Portugal", "Lisbon"),
    ("Austria", "Vienna"),
    ("Ireland", "Dublin"),
    ("Norway", "Oslo"),
    ("Sweden", "Stockholm"),
    ("Finland", "Helsinki"),
    ("Denmark", "Copenhagen"),
    ("Poland", "Warsaw"),
    ("Hungary", "Budapest"),
    ("Canada", "Ottawa"),
    ("Australia", "Canberra"),
    ("India", "New Delhi"),
    ("South Korea", "Seoul"),
    ("Thailand", "Bangkok"),
    ("Argentina", "Buenos Aires"),
    ("Peru", "Lima"),
    ("Kenya", "Nairobi"),
    ("Turkey", "Ankara"),
    ("Mexico", "Mexico City"),
    ("Brazil", "Brasilia"),
    ("the Netherlands", "Amsterdam"),
    ("Belgium", "Brussels"),
    ("Switzerland", "Bern"),
    ("the Czech Republic", "Prague"),
    ("Iran", "Tehran"),
    ("Cuba", "Havana"),
    ("Chile", "Santiago"),
    ("Indonesia", "Jakarta"),
    ("Vietnam", "Hanoi"),
    ("the Philippines", "Manila"),
]

# (question, answer, kind): answers of one kind are each other's wrong answers.
OTHER_FACTS: list[tuple[str, str, str]] = [
    ("What is the chemical symbol for gold?", "Au", "symbol"),
    ("What is the chemical symbol for silver?", "Ag", "symbol"),
    ("What is the chemical symbol for iron?", "Fe", "symbol"),
    ("What is the chemical symbol for sodium?", "Na", "symbol"),
    ("What is the chemical symbol for lead?", "Pb", "symbol"),
    ("What is the chemical symbol for copper?", "Cu", "symbol"),
    ("What is the chemical symbol for tin?", "Sn", "symbol"),
    ("What is the chemical symbol for mercury?", "Hg", "symbol"),
    ("Which planet is known as the Red Planet?", "Mars", "planet"),
    ("What is the largest planet in the solar system?", "Jupiter", "planet"),
    ("Which planet is closest to the Sun?", "Mercury", "planet"),
    ("Which planet is famous for its rings?", "Saturn", "planet"),
    ("On which planet do humans live?", "Earth", "planet"),
    ("Which planet is the farthest from the Sun?", "Neptune", "planet"),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci", "person"),
    ("Who developed the theory of relativity?", "Albert Einstein", "person"),
    ("Who was the first person to walk on the Moon?", "Neil Armstrong", "person"),
    ("Who formulated the laws of motion and universal gravitation?", "Isaac Newton", "person"),
    ("Who was the first President of the United States?", "George Washington", "person"),
    ("Who painted The Starry Night?", "Vincent van Gogh", "person"),
    ("What is the largest ocean on Earth?", "the Pacific Ocean", "place"),
    ("Which ocean lies between Europe and North America?", "the Atlantic Ocean", "place"),
    ("What is the longest river in Africa?", "the Nile", "place"),
    ("Which river flows through London?", "the Thames", "place"),
    ("Which river flows through Paris?", "the Seine", "place"),
    ("What is the largest river in South America?", "the Amazon", "place"),
    ("What is the tallest mountain in the world?", "Mount Everest", "place"),
    ("What is the largest desert in Africa?", "the Sahara", "place"),
    ("How many continents are there on Earth?", "seven", "count"),
    ("How many legs does a spider have?", "eight", "count"),
    ("How many sides does a hexagon have?", "six", "count"),
    ("How many months are there in a year?", "twelve", "count"),
    ("How many hours are there in a day?", "twenty-four", "count"),
    ("How many minutes are there in an hour?", "sixty", "count"),
    ("What is the currency of Japan?", "the yen", "currency"),
    ("What is the currency of the United Kingdom?", "the pound sterling", "currency"),
    ("What is the currency of the United States?", "the dollar", "currency"),
    ("What is the currency of most countries of the European Union?", "the euro", "currency"),
    ("What is the currency of India?", "the rupee", "currency"),
    ("What is the currency of Russia?", "the ruble", "currency"),
    ("What is the currency of China?", "the yuan", "currency"),
]


def _items(facts: Sequence[tuple[str, str, str]], n_perturbed: int, rng: random.Random) -> list[dict]:
    """TOFU-schema rows: the wrong answers are other answers of the same kind (never the right one)."""
    by_kind: dict[str, list[str]] = {}
    for _, answer, kind in facts:
        by_kind.setdefault(kind, [])
        if answer not in by_kind[kind]:
            by_kind[kind].append(answer)
    rows = []
    for question, answer, kind in facts:
        pool = [a for a in by_kind[kind] if a != answer]
        if len(pool) < n_perturbed:
            raise ValueError(f"kind {kind!r} has {len(pool) + 1} answers: {n_perturbed} wrong answers need more")
        rows.append(
            {
                "question": question,
                "answer": answer,
                "paraphrased_answer": answer,
                "perturbed_answer": rng.sample(pool, n_perturbed),
                "entity": answer,
                "attribute": kind,
            }
        )
    return rows


def candidate_facts(n_perturbed: int = 5, seed: int = 0) -> dict[str, list[dict]]:
    """Every candidate row of the two utility sets, before filtering by what a model knows (deterministic)."""
    rng = random.Random(seed)
    authors = _items([(f"Who wrote {book}?", author, "author") for book, author in CLASSIC_BOOKS], n_perturbed, rng)
    world = _items(
        [(f"What is the capital of {country}?", capital, "capital") for country, capital in CAPITALS] + OTHER_FACTS,
        n_perturbed,
        rng,
    )
    return {"real_authors_perturbed": authors, "world_facts_perturbed": world}


def _plain(text: str) -> str:
    """Accents removed (a generation may write "Brontë" for "Bronte")."""
    import unicodedata

    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def answered_correctly(generation: str, answer: str) -> bool:
    """A generation knows the fact when it holds the answer as whole words: case-insensitive, accents ignored, a
    leading "the " optional, initials with or without spaces ("J.R.R." for "J. R. R."); answers of at most two
    characters (chemical symbols) must match their case: "Au", not "au"."""
    import re

    key = _plain(answer.removeprefix("the "))
    pattern = re.escape(key).replace(r"\.\ ", r"\.\s?")
    flags = 0 if len(key) <= 2 else re.IGNORECASE
    return re.search(rf"(?<!\w){pattern}(?!\w)", _plain(generation), flags) is not None


def known_facts(model, formatter, rows: list[dict], max_new_tokens: int = 32, batch_size: int = 16) -> list[dict]:
    """The rows whose question ``model`` answers correctly with greedy decoding (see :func:`answered_correctly`)."""
    from ..evaluation.scoring import generate_answers

    answers = generate_answers(model, formatter, [r["question"] for r in rows], max_new_tokens, batch_size)
    return [r for r, g in zip(rows, answers) if answered_correctly(g, r["answer"])]
