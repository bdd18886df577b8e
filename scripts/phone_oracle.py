#!/usr/bin/env python3
"""Phone numbers written the ways people type them, and what libphonenumber makes of each.

For every focus region the script walks every three-digit leading block of the national
significant number at every length the region's plan allows, keeps the numbers the plan
accepts (and a sample of those it refuses), and writes each one the ways people type it:
national format with and without the trunk prefix, grouped with spaces, dashes, dots,
slashes or brackets, with the country code but no "+", with "+", with "00" (and with the
region's own international prefix where that is another, such as the US 011). Numbers from the other focus regions are written in the same ways under each
region, so that an explicit country code and a foreign national number are covered too.

Output: tab-separated lines `region, input, oracle, international`, where `oracle` is the
E.164 number that `phonenumbers.parse(input, region)` gives when `is_valid_number` accepts
it, or "-". `international` is filled only for inputs starting with "00" that libphonenumber
does not read as the region's international prefix (the US one is 011): what it makes of
the digits after the "00" when they follow a "+" instead (leadpipe reads 00 as an
international prefix where the digits are no national number). Lines starting with "#" are
comments.

The output depends only on --seed, --scale and --regions, never on the clock or the hash
seed, so the committed table (made with the defaults) is reproducible:

    python3 scripts/phone_oracle.py > tests/fixtures/phones/oracle.tsv

The metadata of the Python port must match the one compiled into the Rust `phonenumber`
crate, or plan updates show up as differences: --requirement prints the pinned package,
--check exits 0 only when exactly that version is importable.
"""

import argparse
import itertools
import random
import re
import sys

ORACLE_PACKAGE = "phonenumbers"
# The numbering-plan metadata version compiled into the `phonenumber` crate (0.3.10+9.0.33).
ORACLE_VERSION = "9.0.33"

FOCUS_REGIONS = ("IT", "PL", "VN", "US", "GB", "DE", "FR", "ES")
# Types whose patterns make a number valid (libphonenumber's number type helper).
VALID_TYPES = (
    "fixed_line",
    "mobile",
    "toll_free",
    "premium_rate",
    "shared_cost",
    "personal_number",
    "voip",
    "pager",
    "uan",
    "voicemail",
)
# What people put between groups of digits; spaces most often.
SEPARATORS = (" ", " ", "-", ".", "/", "")
# Valid numbers kept per region and --scale step, spread over the leading blocks in use.
NUMBERS_PER_REGION = 600
# Share of leading blocks that also give one number the plan refuses.
REFUSED_SHARE = 0.15
# Numbers from the other focus regions written under each region.
FOREIGN_PER_REGION = 40


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", default="leadpipe", help="seed of the generator")
    parser.add_argument(
        "--scale",
        type=int,
        default=1,
        help="valid numbers kept per leading block (more cases, same shapes)",
    )
    parser.add_argument(
        "--regions",
        default=",".join(FOCUS_REGIONS),
        help="comma-separated regions to generate numbers for (default: the focus regions)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 0 when the pinned oracle version is importable, else 1 with the reason",
    )
    parser.add_argument(
        "--requirement",
        action="store_true",
        help="print the pinned oracle package as a pip requirement",
    )
    return parser.parse_args()


def import_oracle():
    """The pinned phonenumbers module, or the reason it cannot be used."""
    try:
        import phonenumbers
    except ImportError:
        return None, f"python package {ORACLE_PACKAGE} is not installed"
    if phonenumbers.__version__ != ORACLE_VERSION:
        return None, (
            f"{ORACLE_PACKAGE} {phonenumbers.__version__} is installed, "
            f"the oracle needs {ORACLE_VERSION}"
        )
    return phonenumbers, None


class Oracle:
    def __init__(self, pn):
        self.pn = pn

    def metadata(self, region):
        return self.pn.PhoneMetadata.metadata_for_region(region)

    def e164(self, text, region):
        """What libphonenumber makes of `text` typed with `region` as default, or None."""
        pn = self.pn
        try:
            number = pn.parse(text, region)
        except pn.NumberParseException:
            return None
        if not pn.is_valid_number(number):
            return None
        return pn.format_number(number, pn.PhoneNumberFormat.E164)

    def number(self, region, nsn):
        """The parsed number when `nsn` is a valid national significant number of `region`."""
        pn = self.pn
        code = self.metadata(region).country_code
        try:
            number = pn.parse(f"+{code}{nsn}", None)
        except pn.NumberParseException:
            return None
        valid = (
            pn.is_valid_number_for_region(number, region)
            and pn.format_number(number, pn.PhoneNumberFormat.E164) == f"+{code}{nsn}"
        )
        return number if valid else None

    def formatted(self, number, national):
        pn = self.pn
        style = pn.PhoneNumberFormat.NATIONAL if national else pn.PhoneNumberFormat.INTERNATIONAL
        return pn.format_number(number, style)


def group(rng, digits, separator):
    """`digits` split into chunks of two to four, joined by `separator`."""
    chunks = []
    rest = digits
    while rest:
        size = rng.choice((2, 3, 3, 4))
        if len(rest) - size == 1:
            size += 1
        chunks.append(rest[:size])
        rest = rest[size:]
    return separator.join(chunks)


def grouped(rng, digits, lead=""):
    """`lead` + `digits` grouped the way people type them, sometimes with the first
    group in brackets ("(0113) 496 0000", "(212) 555-0183")."""
    separator = rng.choice(SEPARATORS)
    if len(digits) > 5 and rng.random() < 0.2:
        head = rng.choice((2, 3, 4))
        tail = group(rng, digits[head:], separator)
        return f"({lead}{digits[:head]}) {tail}"
    return lead + group(rng, digits, separator)


class Generator:
    def __init__(self, oracle, seed, scale, regions):
        self.oracle = oracle
        self.regions = regions
        self.seed = seed
        self.scale = scale
        self.found = {}

    def rng(self, *parts):
        # str seeds are hashed with SHA-512: the same on every run and machine.
        return random.Random(":".join([str(self.seed), *map(str, parts)]))

    def numbers(self, region):
        """Valid national significant numbers from every leading block, the examples, and
        a sample of numbers the plan refuses, each as (nsn, parsed number or None)."""
        if region not in self.found:
            self.found[region] = self.walk(region)
        return self.found[region]

    def walk(self, region):
        rng = self.rng("numbers", region)
        meta = self.oracle.metadata(region)
        lengths = [n for n in meta.general_desc.possible_length if n >= 3]
        found = []
        for kind in VALID_TYPES:
            desc = getattr(meta, kind)
            if desc is not None and desc.example_number:
                number = self.oracle.number(region, desc.example_number)
                if number is not None:
                    found.append((desc.example_number, number))
        blocks = []
        for block in range(1000):
            prefix = f"{block:03d}"
            by_length = []
            refused = []
            for length in rng.sample(lengths, len(lengths)):
                by_length.append([])
                for _ in range(3):
                    tail = "".join(rng.choice("0123456789") for _ in range(length - 3))
                    number = self.oracle.number(region, prefix + tail)
                    if number is not None:
                        by_length[-1].append((prefix + tail, number))
                    else:
                        refused.append((prefix + tail, None))
            # Round robin over the lengths: the first numbers kept from a block differ
            # in length.
            valid = [n for tier in itertools.zip_longest(*by_length) for n in tier if n]
            blocks.append((valid, refused))
        # Regions differ tenfold in how many blocks are in use; keeping more numbers per
        # block where few are gives every region about the same number of cases.
        in_use = sum(1 for valid, _ in blocks if valid) or 1
        keep = -(-NUMBERS_PER_REGION * self.scale // in_use)
        for valid, refused in blocks:
            found.extend(valid[:keep])
            if refused and rng.random() < REFUSED_SHARE:
                found.append(rng.choice(refused))
        return found

    def written(self, rng, region, nsn, number, foreign):
        """The ways a person may type `nsn` of `region`."""
        meta = self.oracle.metadata(region)
        code = str(meta.country_code)
        trunk = meta.national_prefix or ""
        national = []
        if number is not None:
            national.append(self.oracle.formatted(number, national=True))
        if trunk:
            national.append(grouped(rng, nsn, lead=trunk))
        national.append(grouped(rng, nsn))
        international = [
            code + rng.choice((" ", "")) + grouped(rng, nsn),
            "+" + code + rng.choice((" ", "", "-")) + grouped(rng, nsn),
            "00" + code + rng.choice((" ", "")) + grouped(rng, nsn),
        ]
        if trunk == "0":
            international.append(f"+{code} (0){grouped(rng, nsn)}")
        if number is not None:
            international.append(self.oracle.formatted(number, national=False))
        idd = meta.international_prefix
        if idd.isdigit() and idd != "00":
            international.append(f"{idd} {code} {grouped(rng, nsn)}")
        if foreign:
            return rng.sample(national, 1) + rng.sample(international, 2)
        return national + rng.sample(international, min(2, len(international)))

    def cases(self):
        for region in self.regions:
            rng = self.rng("written", region)
            seen = set()
            own = [(region, nsn, number) for nsn, number in self.numbers(region)]
            foreign = []
            for other in self.regions:
                if other != region:
                    pool = [(other, nsn, n) for nsn, n in self.numbers(other) if n is not None]
                    share = FOREIGN_PER_REGION // max(1, len(self.regions) - 1)
                    foreign += rng.sample(pool, min(len(pool), share))
            for home, nsn, number in own + foreign:
                for text in self.written(rng, home, nsn, number, foreign=home != region):
                    if text in seen:
                        continue
                    seen.add(text)
                    yield region, text, self.oracle.e164(text, region), self.international(
                        region, text
                    )

    def international(self, region, text):
        """For "00…" that libphonenumber does not read as the region's international
        prefix: what it gives for the digits after the 00 when they follow a "+"."""
        digits = "".join(c for c in text if c.isdigit())
        if not digits.startswith("00"):
            return None
        idd = re.match(self.oracle.metadata(region).international_prefix, digits)
        if idd and digits[idd.end() : idd.end() + 1] not in ("", "0"):
            return None
        return self.oracle.e164("+" + digits[2:], region) or "-"


def main():
    args = parse_args()
    if args.requirement:
        print(f"{ORACLE_PACKAGE}=={ORACLE_VERSION}")
        return 0
    pn, problem = import_oracle()
    if args.check:
        if problem:
            print(problem, file=sys.stderr)
            return 1
        return 0
    if problem:
        print(
            f"phone_oracle: {problem}: pip install {ORACLE_PACKAGE}=={ORACLE_VERSION}",
            file=sys.stderr,
        )
        return 1
    if args.scale < 1:
        print("phone_oracle: --scale must be at least 1", file=sys.stderr)
        return 2
    regions = [region.strip().upper() for region in args.regions.split(",") if region.strip()]
    unknown = [r for r in regions if pn.PhoneMetadata.metadata_for_region(r) is None]
    if unknown:
        print(f"phone_oracle: no numbering plan for {', '.join(unknown)}", file=sys.stderr)
        return 2
    out = sys.stdout
    out.write(f"# {ORACLE_PACKAGE} {ORACLE_VERSION}, seed {args.seed}, scale {args.scale}\n")
    if tuple(regions) != FOCUS_REGIONS:
        out.write(f"# regions {','.join(regions)}\n")
    out.write("# region\tinput\toracle\tinternational\n")
    generator = Generator(Oracle(pn), args.seed, args.scale, regions)
    for region, text, e164, international in generator.cases():
        assert "\t" not in text and "\n" not in text
        fields = [region, text, e164 or "-"]
        if international is not None:
            fields.append(international)
        out.write("\t".join(fields) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
