#!/usr/bin/env python3
"""Derives legal_forms_elf.tsv from the ISO 20275 Entity Legal Forms code list.

Usage: python3 derive_legal_forms.py "ISO-20275 - 2023-09-28.csv" > legal_forms_elf.tsv

The input is the CSV that GLEIF publishes (CC0 1.0). The output keeps, for the
countries leadpipe's forms serve, the spellings that people write after (or, in
Vietnam and France, before) a company name, one per line:

    country <TAB> position <TAB> spelling <TAB> ELF codes (comma-separated)

See README.md beside this file for the rules and why each exists.
"""

import csv
import hashlib
import re
import sys
import unicodedata

COUNTRIES = ["IT", "PL", "VN", "US", "GB", "DE", "FR", "ES"]

# Abbreviations in the list that are not legal forms, or are ordinary words
# that end many names of other things.
NOT_FORMS = {
    "dba",  # "doing business as": introduces a trade name
    "mbe",
    "trust",
    "consorzio",
    "gruppo consortile",
}

# Words that may be skipped when deciding whether an abbreviation stands for
# a form's full name ("S.R.L." for "Società A Responsabilità Limitata").
CONNECTIVES = {
    "a", "à", "al", "and", "auf", "con", "d", "das", "de", "del", "della",
    "der", "des", "di", "die", "do", "du", "e", "en", "et", "für", "i", "in",
    "la", "le", "les", "mit", "o", "of", "per", "por", "the", "und", "y", "z",
}


def fold(text):
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(c for c in text if not unicodedata.combining(c))
    return text.replace("ł", "l").replace("đ", "d")


def words(text):
    return [w for w in re.split(r"[^0-9a-z]+", fold(text)) if w]


def compact(text):
    return "".join(words(text))


def abbreviations(row):
    """Every abbreviation of a row; the list separates them with ';', and a few
    US rows with ',' or ' or '."""
    found = []
    for field in ("Abbreviations Local language", "Abbreviations transliterated"):
        for part in re.split(r";|,| or ", row[field]):
            part = part.strip()
            if part.lower().startswith("or "):
                part = part[3:].strip()
            # Explanations ("P.C. for those rendering professional services.")
            # are not spellings.
            if part and len(part.split()) <= 5 and fold(part) not in NOT_FORMS:
                found.append(part)
    return found


def stands_for(abbreviation, name):
    """True when the abbreviation's pieces (or letters) begin the name's words
    in order, skipping only connectives: "sp. z o.o." for "spółka z
    ograniczoną odpowiedzialnością", "LLC" for "Limited Liability Company",
    but not "Corp." for "Railroad" (a state's rule that any corporation's
    name carries "Corp."), which would make "Railroad" a legal form."""
    name_words = words(name)
    pieces = words(abbreviation)
    return covers(pieces, name_words) or covers(list("".join(pieces)), name_words)


def covers(pieces, name_words):
    i = 0
    for piece in pieces:
        while i < len(name_words) and not name_words[i].startswith(piece):
            if name_words[i] not in CONNECTIVES:
                return False
            i += 1
        if i == len(name_words):
            return False
        i += 1
    return all(w in CONNECTIVES for w in name_words[i:])


def without_parentheses(name):
    """'Limited Liability Company (including professional LLC)' ->
    'Limited Liability Company', and the all-capitals abbreviations found in
    the parentheses ('... (GIE)' -> 'GIE')."""
    inner = re.findall(r"\(([^)]*)\)", name)
    bare = re.sub(r"\s*\([^)]*\)", "", name).strip()
    return bare, [x for x in inner if re.fullmatch(r"[A-Z]{2,}", x)]


def position(country, spelling):
    # Vietnamese law puts the form before the name ("Công ty TNHH Sao Mai").
    if country == "VN":
        return "start"
    # French usage writes it on either side ("SCI Les Tilleuls", "Dupont
    # SARL"); two-letter forms only at the end, where "SA Dupont" is rare
    # and a name such as "SE Énergies" common.
    if country == "FR" and len(compact(spelling)) >= 3:
        return "both"
    return "end"


def main():
    path = sys.argv[1]
    raw = open(path, "rb").read()
    rows = list(csv.DictReader(raw.decode("utf-8-sig").splitlines()))
    out = {}
    for row in rows:
        country = row["Country Code (ISO 3166-1)"]
        if country not in COUNTRIES:
            continue
        code = row["ELF Code"]
        abbrs = abbreviations(row)
        names = set()
        for field in (
            "Entity Legal Form name Local name",
            "Entity Legal Form name Transliterated name (per ISO 01-140-10)",
        ):
            if row[field].strip():
                bare, inner = without_parentheses(row[field].strip())
                abbrs.extend(inner)
                names.add(bare)
        spellings = set(abbrs)
        for name in names:
            # Full names are kept where they are the designation itself: in
            # Vietnam always, elsewhere when an abbreviation of the row stands
            # for them; names without one are mostly public bodies,
            # associations and foundations whose "form" is an ordinary word
            # of their own name ("Fondazione", "Credit Union").
            if country == "VN" or any(stands_for(a, name) for a in abbrs):
                spellings.add(name)
        for spelling in spellings:
            spelling = " ".join(spelling.split())
            # One letter is never stripped: it is too often part of the name.
            if len(compact(spelling)) < 2:
                continue
            key = (country, position(country, spelling), spelling)
            out.setdefault(key, set()).add(code)
    source = path.rsplit("/", 1)[-1]
    print(
        "# ISO 20275 Entity Legal Forms (ELF) code list, version 1.5 of 2023-09-28,\n"
        "# published by GLEIF (Global Legal Entity Identifier Foundation) under CC0 1.0.\n"
        f"# Source: {source}, SHA-256 {hashlib.sha256(raw).hexdigest()}.\n"
        f"# Countries: {' '.join(COUNTRIES)}. Derived by derive_legal_forms.py; see README.md.\n"
        "# Do not edit by hand: add missing spellings to legal_forms_customary.tsv.\n"
        "# country\tposition\tspelling\tELF codes"
    )
    for (country, where, spelling), codes in sorted(
        out.items(), key=lambda item: (item[0][0], item[0][2].lower(), item[0][2])
    ):
        print("\t".join([country, where, spelling, ",".join(sorted(codes))]))


if __name__ == "__main__":
    main()
