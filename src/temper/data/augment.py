"""EDA-style text augmentation (Wei & Zou 2019, "EDA: Easy Data Augmentation Techniques for Boosting
Performance on Text Classification Tasks", EMNLP-IJCNLP): synonym replacement, random swap, random deletion.

Synonyms come from the small built-in English table below (common review/news words), not from WordNet: the
WordNet corpus is a separate download that is not available offline. Words outside the table are left alone
by synonym replacement, so on other languages only swap and deletion change the text. Everything is seeded:
the same seed and input always give the same output.

Example:
    >>> import random
    >>> eda("the movie was good and the actors were great", ["synonym"], 0.3, random.Random(0)) != ""
    True
"""

from __future__ import annotations

import random

from temper.data.records import ClsExample

# Groups of interchangeable words; every word maps to the others in its group.
_GROUPS: tuple[tuple[str, ...], ...] = (
    ("good", "fine", "nice", "decent", "solid"),
    ("great", "excellent", "wonderful", "superb", "terrific", "fantastic"),
    ("bad", "poor", "awful", "terrible", "lousy"),
    ("boring", "dull", "tedious", "tiresome"),
    ("funny", "amusing", "hilarious", "comic"),
    ("sad", "unhappy", "gloomy", "sorrowful"),
    ("happy", "glad", "cheerful", "pleased"),
    ("beautiful", "lovely", "gorgeous", "pretty"),
    ("ugly", "unsightly", "hideous"),
    ("big", "large", "huge", "vast"),
    ("small", "little", "tiny", "compact"),
    ("fast", "quick", "rapid", "swift"),
    ("slow", "sluggish", "unhurried"),
    ("smart", "clever", "intelligent", "bright"),
    ("stupid", "dumb", "foolish", "silly"),
    ("movie", "film", "picture"),
    ("story", "tale", "narrative", "plot"),
    ("actor", "performer", "player"),
    ("actors", "performers", "cast"),
    ("room", "chamber"),
    ("hotel", "inn", "lodge"),
    ("clean", "tidy", "spotless"),
    ("dirty", "filthy", "grimy"),
    ("cheap", "inexpensive", "affordable"),
    ("expensive", "costly", "pricey"),
    ("staff", "employees", "personnel"),
    ("friendly", "kind", "warm", "welcoming"),
    ("rude", "impolite", "discourteous"),
    ("begin", "start", "commence"),
    ("end", "finish", "conclude"),
    ("said", "stated", "noted", "remarked"),
    ("say", "state", "declare"),
    ("buy", "purchase", "acquire"),
    ("sell", "market", "vend"),
    ("company", "firm", "business", "corporation"),
    ("shares", "stocks", "equities"),
    ("rise", "increase", "climb", "grow"),
    ("fall", "drop", "decline", "decrease"),
    ("help", "aid", "assist", "support"),
    ("show", "display", "reveal", "present"),
    ("make", "create", "produce"),
    ("think", "believe", "reckon"),
    ("want", "wish", "desire"),
    ("like", "enjoy", "appreciate"),
    ("hate", "detest", "loathe", "dislike"),
    ("often", "frequently", "regularly"),
    ("very", "really", "extremely", "quite"),
    ("almost", "nearly", "practically"),
    ("maybe", "perhaps", "possibly"),
    ("important", "significant", "major"),
    ("strange", "odd", "weird", "peculiar"),
    ("new", "fresh", "recent"),
    ("old", "aged", "ancient"),
    ("hard", "difficult", "tough"),
    ("easy", "simple", "effortless"),
    ("interesting", "engaging", "fascinating", "intriguing"),
    ("scary", "frightening", "terrifying"),
    ("man", "guy", "gentleman"),
    ("woman", "lady"),
    ("child", "kid", "youngster"),
    ("people", "folks", "persons"),
    ("car", "automobile", "vehicle"),
    ("house", "home", "residence"),
    ("job", "work", "occupation"),
    ("money", "cash", "funds"),
    ("problem", "issue", "trouble"),
    ("answer", "reply", "response"),
    ("ask", "inquire", "query"),
    ("look", "appear", "seem"),
    ("end", "ending", "finale"),
    ("entire", "whole", "complete"),
    ("mostly", "largely", "mainly"),
)
SYNONYMS: dict[str, tuple[str, ...]] = {}
for _group in _GROUPS:
    for _word in _group:
        SYNONYMS[_word] = tuple(
            dict.fromkeys(SYNONYMS.get(_word, ()) + tuple(w for w in _group if w != _word))
        )

OPS = ("synonym", "swap", "delete")


def synonym_replacement(words: list[str], n: int, rng: random.Random) -> list[str]:
    """Replace up to n distinct words that have table synonyms (case kept for a leading capital)."""
    out = list(words)
    positions = [i for i, w in enumerate(words) if w.lower() in SYNONYMS]
    rng.shuffle(positions)
    for i in positions[:n]:
        choice = rng.choice(SYNONYMS[words[i].lower()])
        out[i] = choice.capitalize() if words[i][:1].isupper() else choice
    return out


def random_swap(words: list[str], n: int, rng: random.Random) -> list[str]:
    """Swap two random positions n times."""
    out = list(words)
    if len(out) < 2:
        return out
    for _ in range(n):
        i, j = rng.sample(range(len(out)), 2)
        out[i], out[j] = out[j], out[i]
    return out


def random_deletion(words: list[str], p: float, rng: random.Random) -> list[str]:
    """Drop each word with probability p, always keeping at least one word."""
    if len(words) <= 1:
        return list(words)
    kept = [w for w in words if rng.random() > p]
    return kept or [rng.choice(words)]


def eda(text: str, ops: list[str], rate: float, rng: random.Random) -> str:
    """Apply the chosen ops in order; n = max(1, rate * words) changes for synonym and swap.

    Example:
        >>> eda("a b c d", ["swap"], 0.25, random.Random(1))
        'a c b d'
    """
    words = text.split()
    if not words:
        return text
    n = max(1, int(rate * len(words)))
    for op in ops:
        if op == "synonym":
            words = synonym_replacement(words, n, rng)
        elif op == "swap":
            words = random_swap(words, n, rng)
        elif op == "delete":
            words = random_deletion(words, rate, rng)
    return " ".join(words)


def augment_examples(
    examples: list[ClsExample], ops: list[str], copies: int = 1, rate: float = 0.1, seed: int = 42
) -> list[ClsExample]:
    """The original records followed by `copies` augmented versions of each (both texts of a pair change).

    Example:
        >>> rows = augment_examples([ClsExample("a great film", 1)], ["synonym"], copies=1, seed=0)
        >>> len(rows), rows[1].label, rows[1].source.endswith("#aug1")
        (2, 1, True)
    """
    if not ops or copies <= 0:
        return list(examples)
    rng = random.Random(seed)
    out = list(examples)
    for k in range(1, copies + 1):
        for e in examples:
            pair = eda(e.text_pair, ops, rate, rng) if e.text_pair is not None else None
            out.append(ClsExample(eda(e.text, ops, rate, rng), e.label, pair, f"{e.source}#aug{k}"))
    return out
