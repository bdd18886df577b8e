//! Company identity: keys that say two inquiries come from the same company,
//! one from the company name as typed and one from its web or mail domain.
//!
//! A name key folds away everything that differs between two spellings of one
//! company: case, diacritics, punctuation and the legal-form designation
//! ("Fabbri Arredamenti S.r.l." and "FABBRI ARREDAMENTI SRL" are one company).
//! `&` is punctuation too, so "Harbor & Pine" and "Harbor&Pine" agree; "and"
//! is a word and is kept, since dropping connectives would also drop the
//! Polish "i" in "Żółkiewski i Synowie". The legal forms come from the ISO
//! 20275 Entity Legal Forms code list for the countries our forms serve, plus
//! customary spellings it lacks (`normalizer/data/`, described in its README).
//!
//! A domain key is the host name in the canonical form that
//! [`EmailAddress`](crate::EmailAddress) gives its domain, so a company's
//! website and its people's addresses meet on one key. Free-mail domains say
//! nothing about the company and give no key. Sub-domains other than `www.`
//! are kept: without the public-suffix list, `shop.example.co.uk` cannot be
//! cut to its registrable domain safely.

use std::collections::HashSet;
use std::sync::LazyLock;

use crate::email::canonical_domain;
use crate::text::fold_key;

/// Legal forms of the focus countries (IT, PL, VN, US, GB, DE, FR, ES), derived
/// from the ISO 20275 Entity Legal Forms code list (see `data/README.md`).
const ELF_FORMS: &str = include_str!("../data/legal_forms_elf.tsv");
/// Spellings people write that the code list lacks, and forms of other countries.
const CUSTOMARY_FORMS: &str = include_str!("../data/legal_forms_customary.tsv");

/// Consumer mail providers, sorted for binary search: an address there says
/// nothing about the company. A sub-domain counts only when listed itself.
const FREE_MAIL_DOMAINS: &[&str] = &[
    "126.com",
    "163.com",
    "abv.bg",
    "aim.com",
    "alice.it",
    "aol.co.uk",
    "aol.com",
    "aol.de",
    "aol.fr",
    "arcor.de",
    "aruba.it",
    "att.net",
    "autograf.pl",
    "azet.sk",
    "bellsouth.net",
    "bk.ru",
    "blu.it",
    "bluewin.ch",
    "blueyonder.co.uk",
    "bol.com.br",
    "btinternet.com",
    "buziaczek.pl",
    "centrum.cz",
    "charter.net",
    "citromail.hu",
    "club-internet.fr",
    "comcast.net",
    "cox.net",
    "daum.net",
    "earthlink.net",
    "email.com",
    "email.cz",
    "email.it",
    "fastmail.com",
    "fastmail.fm",
    "fastwebnet.it",
    "foxmail.com",
    "fpt.vn",
    "free.fr",
    "freemail.hu",
    "freenet.de",
    "gazeta.pl",
    "giallo.it",
    "gmail.com",
    "gmx.at",
    "gmx.ch",
    "gmx.co.uk",
    "gmx.com",
    "gmx.de",
    "gmx.es",
    "gmx.fr",
    "gmx.net",
    "gmx.us",
    "go2.pl",
    "googlemail.com",
    "hanmail.net",
    "hcm.vnn.vn",
    "hn.vnn.vn",
    "hotmail.be",
    "hotmail.ca",
    "hotmail.co.uk",
    "hotmail.com",
    "hotmail.com.br",
    "hotmail.de",
    "hotmail.es",
    "hotmail.fr",
    "hotmail.it",
    "hotmail.nl",
    "hushmail.com",
    "icloud.com",
    "ig.com.br",
    "inbox.ru",
    "int.pl",
    "interia.eu",
    "interia.pl",
    "inwind.it",
    "iol.it",
    "katamail.com",
    "laposte.net",
    "libero.it",
    "list.ru",
    "live.be",
    "live.ca",
    "live.co.uk",
    "live.com",
    "live.com.au",
    "live.de",
    "live.fr",
    "live.it",
    "live.nl",
    "lycos.com",
    "mac.com",
    "mail.com",
    "mail.ru",
    "mailbox.org",
    "me.com",
    "msn.com",
    "naver.com",
    "neuf.fr",
    "ntlworld.com",
    "o2.pl",
    "onet.eu",
    "onet.pl",
    "op.pl",
    "orange.fr",
    "outlook.com",
    "outlook.com.vn",
    "outlook.de",
    "outlook.es",
    "outlook.fr",
    "outlook.it",
    "outlook.jp",
    "pm.me",
    "poczta.fm",
    "poczta.onet.eu",
    "poczta.onet.pl",
    "post.cz",
    "posteo.de",
    "posteo.net",
    "proton.me",
    "protonmail.ch",
    "protonmail.com",
    "qq.com",
    "rambler.ru",
    "rediffmail.com",
    "rocketmail.com",
    "sbcglobal.net",
    "seznam.cz",
    "sfr.fr",
    "sina.com",
    "sky.com",
    "sohu.com",
    "spoko.pl",
    "supereva.it",
    "t-online.de",
    "talktalk.net",
    "telefonica.net",
    "terra.com.br",
    "terra.es",
    "tim.it",
    "tin.it",
    "tiscali.it",
    "tiscalinet.it",
    "tlen.pl",
    "tuta.io",
    "tutanota.com",
    "ukr.net",
    "uol.com.br",
    "verizon.net",
    "virgilio.it",
    "virginmedia.com",
    "vnn.vn",
    "vodafone.it",
    "vp.pl",
    "wanadoo.fr",
    "web.de",
    "windowslive.com",
    "wp.pl",
    "ya.ru",
    "yahoo.ca",
    "yahoo.co.id",
    "yahoo.co.in",
    "yahoo.co.jp",
    "yahoo.co.nz",
    "yahoo.co.uk",
    "yahoo.com",
    "yahoo.com.ar",
    "yahoo.com.au",
    "yahoo.com.br",
    "yahoo.com.hk",
    "yahoo.com.mx",
    "yahoo.com.ph",
    "yahoo.com.sg",
    "yahoo.com.tw",
    "yahoo.com.vn",
    "yahoo.de",
    "yahoo.es",
    "yahoo.fr",
    "yahoo.gr",
    "yahoo.ie",
    "yahoo.in",
    "yahoo.it",
    "yandex.com",
    "yandex.ru",
    "yeah.net",
    "ymail.com",
    "zoho.com",
    "zohomail.com",
];

/// Where a legal form is written relative to the company name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Position {
    /// Before it, as in Vietnam ("Công ty TNHH Sao Mai").
    Start,
    /// After it, as almost everywhere ("Fabbri Arredamenti S.r.l.").
    End,
    /// On either side, as in France ("SCI Les Tilleuls", "Dupont SARL").
    Both,
}

/// One line of a legal-form data file.
#[derive(Clone, Debug)]
struct FormRow {
    position: Position,
    spelling: &'static str,
}

/// Every legal-form line of both data files, and the lines that do not parse.
fn legal_form_rows() -> (Vec<FormRow>, Vec<&'static str>) {
    let mut rows = Vec::new();
    let mut bad = Vec::new();
    let lines = ELF_FORMS.lines().chain(CUSTOMARY_FORMS.lines());
    for line in lines.filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
        let mut columns = line.split('\t');
        let row = match (columns.next(), columns.next(), columns.next()) {
            (Some(_country), Some(position), Some(spelling)) if !spelling.trim().is_empty() => {
                let position = match position {
                    "start" => Position::Start,
                    "end" => Position::End,
                    "both" => Position::Both,
                    _ => {
                        bad.push(line);
                        continue;
                    }
                };
                FormRow {
                    position,
                    spelling: spelling.trim(),
                }
            }
            _ => {
                bad.push(line);
                continue;
            }
        };
        rows.push(row);
    }
    (rows, bad)
}

/// A set of legal forms as the word runs they may be written in.
struct LegalForms {
    /// Every writing of every form: its words joined by single spaces.
    runs: HashSet<String>,
    /// Length in bytes of the longest run: longer runs cannot match.
    max_len: usize,
}

impl LegalForms {
    fn new<'a>(spellings: impl Iterator<Item = &'a str>) -> LegalForms {
        let runs: HashSet<String> = spellings
            // A single letter is too often part of the name itself.
            .filter(|spelling| compact(spelling).chars().count() >= 2)
            .flat_map(writings)
            .collect();
        let max_len = runs.iter().map(String::len).max().unwrap_or(0);
        LegalForms { runs, max_len }
    }

    /// How many words at one edge of `words` (the end when `from_end`) form
    /// the longest legal form that may be cut there; 0 when none does.
    /// Longest, so that "S.a.s." is not read as "A/S" preceded by a stray "S".
    ///
    /// A cut is refused where it would split a letter-by-letter spelling:
    /// when the form's innermost word has one letter and so has the word left
    /// beside it ("X.L.L.C." read as "X" + "LLC"). Only the words decide, not
    /// the dots between them, so the key is stable when computed again from
    /// itself.
    fn longest_run(&self, words: &[&str], from_end: bool) -> usize {
        let inward: Vec<&str> = if from_end {
            words.iter().rev().copied().collect()
        } else {
            words.to_vec()
        };
        let mut run = String::new();
        let mut best = 0;
        for (taken, word) in inward.iter().enumerate() {
            if from_end {
                if !run.is_empty() {
                    run.insert(0, ' ');
                }
                run.insert_str(0, word);
            } else {
                if !run.is_empty() {
                    run.push(' ');
                }
                run.push_str(word);
            }
            if run.len() > self.max_len {
                break;
            }
            let strays =
                is_letter(word) && inward.get(taken + 1).is_some_and(|next| is_letter(next));
            if self.runs.contains(&run) && !strays {
                best = taken + 1;
            }
        }
        best
    }
}

/// Longest part of a legal form that may be an initialism spelt letter by letter.
const INITIALISM_MAX: usize = 6;

/// The word runs a legal form is written as, each joined by single spaces.
///
/// Each space-separated part of the spelling is written either whole, its
/// dots dropped ("o.o." as "oo"), word by word ("o o"), or when short letter
/// by letter ("SCI" as "s c i"); the whole form may also be run together into
/// one word ("spzoo"). Dots go all or none within a part. Word boundaries that no
/// writing has are not accepted, so a word of the name is never taken as the
/// start of a form: "LL LP" is the name "LL" and the form "LP", not "L.L.L.P.".
fn writings(spelling: &str) -> Vec<String> {
    let folded = fold_key(spelling);
    let mut runs: Vec<Vec<String>> = vec![Vec::new()];
    for part in folded.split(' ') {
        let part_words: Vec<&str> = words(part).collect();
        if part_words.is_empty() {
            continue;
        }
        let whole = part_words.concat();
        let mut choices = vec![
            vec![whole.clone()],
            part_words.iter().map(|w| (*w).to_owned()).collect(),
            // Dots dropped, other marks still between words ("SCom:pAP").
            words(&part.replace('.', "")).map(str::to_owned).collect(),
        ];
        // An initialism the list writes plain is also written dotted ("SCI"
        // as "S.C.I.").
        let letters = whole.chars().count();
        if (2..=INITIALISM_MAX).contains(&letters) {
            choices.push(whole.chars().map(String::from).collect());
        }
        choices.sort();
        choices.dedup();
        runs = runs
            .iter()
            .flat_map(|run| {
                choices.iter().map(move |choice| {
                    let mut longer = run.clone();
                    longer.extend(choice.iter().cloned());
                    longer
                })
            })
            .collect();
    }
    let mut writings: Vec<String> = runs.iter().map(|run| run.join(" ")).collect();
    writings.push(compact(spelling));
    writings
}

/// A one-letter word.
fn is_letter(word: &str) -> bool {
    word.chars().count() == 1
}

/// Legal forms written at the start of a name, and those written at its end.
struct EdgeForms {
    start: LegalForms,
    end: LegalForms,
}

static LEGAL_FORMS: LazyLock<EdgeForms> = LazyLock::new(|| {
    let rows = legal_form_rows().0;
    let at = |wanted: Position| {
        rows.iter()
            .filter(move |r| r.position == wanted || r.position == Position::Both)
            .map(|r| r.spelling)
    };
    EdgeForms {
        start: LegalForms::new(at(Position::Start)),
        end: LegalForms::new(at(Position::End)),
    }
});

/// The words of already folded text: runs of letters and digits.
fn words(folded: &str) -> impl Iterator<Item = &str> {
    folded
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
}

/// A spelling with its words run together, so dots and spaces do not matter.
fn compact(spelling: &str) -> String {
    words(&fold_key(spelling)).collect()
}

/// Matching key for a company name: folded, legal form and punctuation removed.
///
/// A legal form is removed only as whole words at the edge of the name where
/// its country writes it, in any dotting, spacing or case ("P.L.L.C.",
/// "PLLC", "p.l.l.c"); never so that a single letter of it stays behind.
pub fn company_key(name: &str) -> Option<String> {
    let folded = fold_key(name);
    let mut kept: Vec<&str> = words(&folded).collect();
    let forms = &*LEGAL_FORMS;
    // Repeatedly, because names pile forms up ("Acme Holdings Ltd. Inc",
    // "Sp. z o.o. Sp.k.") and a key must not change when recomputed.
    loop {
        let suffix = forms.end.longest_run(&kept, true);
        if suffix > 0 {
            kept.truncate(kept.len() - suffix);
            continue;
        }
        let prefix = forms.start.longest_run(&kept, false);
        if prefix > 0 {
            kept.drain(..prefix);
            continue;
        }
        break;
    }
    if kept.is_empty() {
        None
    } else {
        Some(kept.join(" "))
    }
}

/// Whether `domain` belongs to a consumer mail provider (case-insensitive).
pub fn is_free_mail(domain: &str) -> bool {
    // A trailing dot is the fully qualified spelling of the same domain.
    let domain = domain.strip_suffix('.').unwrap_or(domain).to_lowercase();
    FREE_MAIL_DOMAINS.binary_search(&domain.as_str()).is_ok()
}

/// Company key from a website or an email domain; `None` for free mail or junk.
pub fn domain_key(raw: &str) -> Option<String> {
    let host = host_of(raw.trim())?;
    let host = host.strip_suffix('.').unwrap_or(host);
    let mut domain = canonical_domain(host).ok()?;
    // "www." names the web server, not the company; stripped while something
    // with a dot remains, so that "www.com" stays a domain and the key is
    // stable when recomputed.
    while let Some(rest) = domain.strip_prefix("www.") {
        if !rest.contains('.') {
            break;
        }
        domain = rest.to_owned();
    }
    // IP addresses and special-use names (`app.localhost`, `shop.test`) fail
    // `canonical_domain` already.
    if is_free_mail(&domain) {
        return None;
    }
    Some(domain)
}

/// The host part of a URL, a bare host name or an email address.
fn host_of(raw: &str) -> Option<&str> {
    let (rest, had_scheme) = match raw.split_once("://") {
        Some((scheme, rest)) if is_scheme(scheme) => (rest, true),
        _ => match raw.get(..7) {
            Some(prefix) if prefix.eq_ignore_ascii_case("mailto:") => (&raw[7..], false),
            _ => (raw.strip_prefix("//").unwrap_or(raw), false),
        },
    };
    // Without a scheme an `@` separates an address's local part, which may
    // contain '/', '?' or '#', so it goes first; in a URL the `@` ends the
    // credentials, which sit inside the authority.
    let rest = if had_scheme {
        rest
    } else {
        rest.rsplit_once('@').map_or(rest, |(_, domain)| domain)
    };
    let authority = rest.split(['/', '?', '#', '\\']).next()?;
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    // An IPv6 literal is no company's domain, and its colons are not a port.
    if host_port.starts_with('[') {
        return None;
    }
    host_port.split(':').next()
}

/// An RFC 3986 scheme: a letter, then letters, digits, '+', '-' or '.'.
fn is_scheme(candidate: &str) -> bool {
    let mut chars = candidate.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EmailAddress;
    use proptest::prelude::*;

    /// Asserts that every spelling in each group gives the group's key.
    fn assert_keys(groups: &[(&str, &[&str])]) {
        for (expected, spellings) in groups {
            for spelling in *spellings {
                assert_eq!(
                    company_key(spelling).as_deref(),
                    Some(*expected),
                    "input {spelling:?}"
                );
            }
        }
    }

    #[test]
    fn italian_company_names_lose_their_legal_form() {
        assert_keys(&[
            (
                "fabbri arredamenti",
                &[
                    "Fabbri Arredamenti S.r.l.",
                    "FABBRI ARREDAMENTI SRL",
                    "Fabbri Arredamenti srl",
                    "Fabbri Arredamenti s.r.l",
                    "Fabbri Arredamenti S R L",
                    "  Fabbri   Arredamenti, S.r.l. ",
                    "Fabbri Arredamenti S.r.l.s.",
                    "Fabbri Arredamenti",
                ],
            ),
            (
                "gallo costruzioni",
                &[
                    "Gallo Costruzioni S.p.A.",
                    "GALLO COSTRUZIONI SPA",
                    "Gallo Costruzioni SpA",
                    "Gallo Costruzioni S.p.a",
                ],
            ),
            (
                "bianchi figli",
                &[
                    "Bianchi & Figli S.n.c.",
                    "BIANCHI & FIGLI SNC",
                    "Bianchi&Figli s.n.c.",
                    "Bianchi & Figli",
                ],
            ),
            (
                "rossi",
                &[
                    "Rossi S.a.s.",
                    "ROSSI SAS",
                    "Rossi & C. S.a.s.",
                    "Rossi & C. sas",
                    "Rossi & C. S.n.c.",
                ],
            ),
            (
                "cantina sociale di soave",
                &[
                    "Cantina Sociale di Soave S.c.a.r.l.",
                    "Cantina Sociale di Soave Scarl",
                    "Cantina Sociale di Soave s.c. a r.l.",
                ],
            ),
            (
                "niccolo ferri",
                &["Niccolò Ferri S.r.l.", "NICCOLO' FERRI SRL"],
            ),
        ]);
    }

    #[test]
    fn polish_company_names_lose_their_legal_form() {
        assert_keys(&[
            (
                "zolkiewski i synowie",
                &[
                    "Żółkiewski i Synowie Sp. z o.o.",
                    "ŻÓŁKIEWSKI I SYNOWIE SP. Z O.O.",
                    "Zolkiewski i Synowie sp. z o. o.",
                    "Żółkiewski i Synowie Sp.z o.o.",
                    "Żółkiewski i Synowie spółka z o.o.",
                    "Żółkiewski i Synowie Spółka z ograniczoną odpowiedzialnością",
                ],
            ),
            (
                "nowak budownictwo",
                &[
                    "Nowak Budownictwo S.A.",
                    "NOWAK BUDOWNICTWO SA",
                    "Nowak Budownictwo Spółka Akcyjna",
                    "Nowak Budownictwo Sp.j.",
                    "Nowak Budownictwo sp. k.",
                    "Nowak Budownictwo Sp. z o.o. Sp.k.",
                    "Nowak Budownictwo S.K.A.",
                ],
            ),
        ]);
    }

    #[test]
    fn vietnamese_company_names_lose_their_legal_form_at_the_start() {
        assert_keys(&[
            (
                "sao mai",
                &[
                    "Công ty TNHH Sao Mai",
                    "CÔNG TY TNHH SAO MAI",
                    "Cong ty TNHH Sao Mai",
                    "Cty TNHH Sao Mai",
                    "Công ty TNHH MTV Sao Mai",
                    "Công ty TNHH Một Thành Viên Sao Mai",
                    "Công ty Sao Mai",
                    "Sao Mai Co., Ltd.",
                    "Sao Mai Company Limited",
                ],
            ),
            (
                "sua viet nam",
                &[
                    "Công ty Cổ phần Sữa Việt Nam",
                    "CTCP Sữa Việt Nam",
                    "Công ty CP Sữa Việt Nam",
                    "Sữa Việt Nam JSC",
                ],
            ),
            (
                "thanh dat",
                &["DNTN Thành Đạt", "Doanh nghiệp tư nhân Thành Đạt"],
            ),
        ]);
    }

    #[test]
    fn english_company_names_lose_their_legal_form() {
        assert_keys(&[
            (
                "harbor pine design",
                &[
                    "Harbor & Pine Design LLC",
                    "Harbor & Pine Design, L.L.C.",
                    "harbor&pine design llc",
                    "Harbor & Pine Design",
                ],
            ),
            (
                "acme holdings",
                &[
                    "Acme Holdings Ltd. Inc",
                    "ACME HOLDINGS LIMITED",
                    "Acme Holdings, Inc.",
                    "Acme Holdings Incorporated",
                    "Acme Holdings Corp.",
                    "Acme Holdings Corporation",
                    "Acme Holdings PLC",
                    "Acme Holdings LLP",
                    "Acme Holdings Pty Ltd",
                    "Acme Holdings & Co.",
                    "Acme Holdings Company",
                ],
            ),
            ("whitaker legal group", &["Whitaker Legal Group"]),
        ]);
    }

    #[test]
    fn german_and_other_european_company_names_lose_their_legal_form() {
        assert_keys(&[
            (
                "muller maschinenbau",
                &[
                    "Müller Maschinenbau GmbH",
                    "MÜLLER MASCHINENBAU GMBH",
                    "Müller Maschinenbau GmbH & Co. KG",
                    "Müller Maschinenbau AG",
                    "Müller Maschinenbau KG",
                    "Müller Maschinenbau UG (haftungsbeschränkt)",
                ],
            ),
            ("svensk design", &["Svensk Design AB"]),
            (
                "nordisk mobler",
                &["Nordisk Møbler A/S", "Nordisk Møbler ApS"],
            ),
            ("suomen puu", &["Suomen Puu Oy"]),
            (
                "hollands glorie",
                &["Hollands Glorie B.V.", "Hollands Glorie N.V."],
            ),
            ("iberica", &["Ibérica S.L.", "Ibérica SL", "Ibérica S.A.U."]),
            (
                "paris conseil",
                &["Paris Conseil SARL", "Paris Conseil SAS"],
            ),
        ]);
    }

    #[test]
    fn vietnamese_full_legal_forms_are_removed_from_the_start() {
        assert_keys(&[
            (
                "sao mai",
                &[
                    "Công ty trách nhiệm hữu hạn Sao Mai",
                    "CÔNG TY TRÁCH NHIỆM HỮU HẠN SAO MAI",
                    "Cong ty trach nhiem huu han Sao Mai",
                    "Công ty trách nhiệm hữu hạn một thành viên Sao Mai",
                    "Công ty cổ phần Sao Mai",
                    "Công ty hợp danh Sao Mai",
                    "Doanh nghiệp tư nhân Sao Mai",
                ],
            ),
            (
                "nong nghiep thanh cong",
                &[
                    "Hợp tác xã Nông nghiệp Thành Công",
                    "HTX Nông nghiệp Thành Công",
                    "hop tac xa nong nghiep thanh cong",
                ],
            ),
        ]);
    }

    #[test]
    fn polish_partnership_and_simple_joint_stock_forms_are_removed() {
        assert_keys(&[
            (
                "kowalski i wspolnicy",
                &[
                    "Kowalski i Wspólnicy s.c.",
                    "KOWALSKI I WSPÓLNICY S.C.",
                    "Kowalski i Wspólnicy sc",
                    "Kowalski i Wspólnicy spółka cywilna",
                    "Kowalski i Wspólnicy s.j.",
                    "Kowalski i Wspólnicy S.J.",
                    "Kowalski i Wspólnicy sp. j.",
                ],
            ),
            (
                "nowak software",
                &[
                    "Nowak Software PSA",
                    "Nowak Software P.S.A.",
                    "Nowak Software prosta spółka akcyjna",
                ],
            ),
        ]);
    }

    #[test]
    fn italian_simple_and_cooperative_forms_are_removed() {
        assert_keys(&[
            (
                "azienda agricola rossi",
                &[
                    "Azienda Agricola Rossi S.S.",
                    "Azienda Agricola Rossi s.s.",
                    "Azienda Agricola Rossi SS",
                    "Azienda Agricola Rossi Società Semplice",
                ],
            ),
            (
                "la rondine",
                &[
                    "La Rondine Soc. Coop.",
                    "La Rondine soc.coop.",
                    "La Rondine Società Cooperativa",
                    "La Rondine Soc. Coop. a r.l.",
                    "La Rondine S.C.",
                ],
            ),
        ]);
    }

    #[test]
    fn german_registered_and_cooperative_forms_are_removed() {
        assert_keys(&[
            (
                "muller handel",
                &[
                    "Müller Handel e.K.",
                    "Müller Handel e. K.",
                    "Müller Handel eK",
                    "Müller Handel e.Kfm.",
                    "Müller Handel eG",
                    "Müller Handel e.G.",
                    "Müller Handel eingetragene Genossenschaft",
                ],
            ),
            (
                "sportverein musterstadt",
                &["Sportverein Musterstadt e.V.", "Sportverein Musterstadt eV"],
            ),
            (
                "lebenshilfe werkstatten",
                &[
                    "Lebenshilfe Werkstätten gGmbH",
                    "Lebenshilfe Werkstätten GGMBH",
                ],
            ),
            (
                "schmidt partner",
                &[
                    "Schmidt & Partner PartG mbB",
                    "Schmidt & Partner PartGmbB",
                    "Schmidt & Partner PartG",
                ],
            ),
        ]);
    }

    #[test]
    fn spanish_labour_and_new_enterprise_forms_are_removed() {
        assert_keys(&[(
            "iberica",
            &[
                "Ibérica S.L.L.",
                "Ibérica SLL",
                "Ibérica S.L.N.E.",
                "Ibérica SLNE",
                "Ibérica Sociedad Limitada Laboral",
                "Ibérica Sociedad Limitada de Nueva Empresa",
            ],
        )]);
    }

    #[test]
    fn french_forms_are_removed_from_either_end() {
        assert_keys(&[
            (
                "les tilleuls",
                &[
                    "SCI Les Tilleuls",
                    "S.C.I. Les Tilleuls",
                    "Les Tilleuls SCI",
                    "Société Civile Immobilière Les Tilleuls",
                ],
            ),
            (
                "dupont",
                &["SARL Dupont", "Dupont SARL", "EURL Dupont", "Dupont S.A.S."],
            ),
        ]);
    }

    #[test]
    fn us_professional_forms_are_removed_whole() {
        assert_keys(&[
            (
                "whitaker legal group",
                &[
                    "Whitaker Legal Group PLLC",
                    "Whitaker Legal Group, P.L.L.C.",
                    "Whitaker Legal Group p.l.l.c",
                    "Whitaker Legal Group Pllc",
                    "Whitaker Legal Group, Professional Limited Liability Company",
                ],
            ),
            (
                "smith dental",
                &[
                    "Smith Dental P.C.",
                    "Smith Dental PC",
                    "Smith Dental, p.c.",
                    "Smith Dental Professional Corporation",
                ],
            ),
        ]);
    }

    #[test]
    fn a_partial_removal_never_leaves_a_stray_letter() {
        // A dotted form the list does not know ends in one it does ("L.L.C."):
        // cutting there would leave "x" behind, so nothing is cut.
        for (raw, expected) in [
            ("Acme X.L.L.C.", "acme x l l c"),
            ("Acme X. L. L. C.", "acme x l l c"),
            ("Acme Q.S.p.A.", "acme q s p a"),
        ] {
            assert_eq!(company_key(raw).as_deref(), Some(expected), "input {raw:?}");
        }
        // A name that ends in a letter keeps it when the form is one word.
        assert_eq!(company_key("Vitamin C LLC").as_deref(), Some("vitamin c"));
    }

    #[test]
    fn a_word_of_the_name_is_never_read_as_part_of_a_legal_form() {
        // "LL" + "LP" run together spell "LLLP", but no writing of "L.L.L.P."
        // splits it as "LL LP": the form is "LP" and the name keeps "LL".
        for (raw, expected) in [
            ("ll LP", "ll"),
            ("Acme LL LP", "acme ll"),
            ("Kowalski SPZ OO", "kowalski spz oo"),
        ] {
            assert_eq!(company_key(raw).as_deref(), Some(expected), "input {raw:?}");
        }
        // Every writing of a form's own words still goes: dotted, spaced,
        // undotted, or run together.
        for raw in [
            "Acme L.L.L.P.",
            "Acme L. L. L. P.",
            "Acme LLLP",
            "Rossi Sp. z o.o.",
            "Rossi Sp z oo",
            "Rossi sp. z o. o.",
            "Rossi Spzoo",
            "Rossi Sp.zo.o.",
        ] {
            let key = company_key(raw).unwrap();
            assert!(
                key == "acme" || key == "rossi",
                "input {raw:?} gave {key:?}"
            );
        }
    }

    #[test]
    fn legal_forms_are_only_stripped_as_whole_words_at_the_edges() {
        let cases: &[(&str, &str)] = &[
            // Not at the end, or only part of a word.
            ("Company Store Online", "company store online"),
            ("Rossi Srl Servizi", "rossi srl servizi"),
            ("Atlas", "atlas"),
            ("Incas", "incas"),
            ("Coca-Cola", "coca cola"),
            // Vietnamese forms only at the start, English ones only at the end.
            ("Sao Mai Công ty", "sao mai cong ty"),
            ("Ltd Services", "ltd services"),
            // Non-Latin names keep their letters.
            ("株式会社", "株式会社"),
        ];
        for (raw, expected) in cases {
            assert_eq!(
                company_key(raw).as_deref(),
                Some(*expected),
                "input {raw:?}"
            );
        }
    }

    #[test]
    fn a_name_that_is_only_a_legal_form_or_punctuation_has_no_key() {
        for raw in [
            "",
            "   ",
            "S.r.l.",
            "Sp. z o.o.",
            "GmbH & Co. KG",
            "Công ty TNHH",
            "Ltd.",
            "Company Limited",
            "&",
            "...",
        ] {
            assert_eq!(company_key(raw), None, "input {raw:?}");
        }
    }

    #[test]
    fn free_mail_domains_are_recognised_case_insensitively() {
        for domain in [
            "gmail.com",
            "GMail.COM",
            "googlemail.com",
            "yahoo.it",
            "yahoo.com.vn",
            "hotmail.co.uk",
            "outlook.it",
            "icloud.com",
            "libero.it",
            "virgilio.it",
            "wp.pl",
            "o2.pl",
            "interia.pl",
            "poczta.fm",
            "vnn.vn",
            "hcm.vnn.vn",
            "fpt.vn",
            "proton.me",
            "gmail.com.",
        ] {
            assert!(is_free_mail(domain), "{domain:?} should be free mail");
        }
        for domain in [
            "example.it",
            "fabbri-arredamenti.it",
            "mail.gmail.com",
            "gmail.co",
            "pec.it",
            "vn.vnn.vn",
            "",
            "com",
        ] {
            assert!(!is_free_mail(domain), "{domain:?} should not be free mail");
        }
    }

    #[test]
    fn legal_form_and_free_mail_lists_are_well_formed() {
        assert!(
            FREE_MAIL_DOMAINS.windows(2).all(|pair| pair[0] < pair[1]),
            "FREE_MAIL_DOMAINS must be sorted and unique for binary search"
        );
        for domain in FREE_MAIL_DOMAINS {
            assert_eq!(
                canonical_domain(domain).as_deref(),
                Ok(*domain),
                "free-mail entries must be canonical domains"
            );
        }
        let (forms, bad) = legal_form_rows();
        assert!(bad.is_empty(), "malformed legal-form lines: {bad:?}");
        for country in ["IT", "PL", "VN", "US", "GB", "DE", "FR", "ES"] {
            assert!(
                ELF_FORMS
                    .lines()
                    .any(|l| l.starts_with(&format!("{country}\t"))),
                "no legal forms for {country}"
            );
        }
        for form in &forms {
            assert!(
                compact(form.spelling).chars().count() >= 2,
                "{form:?} would strip a single letter"
            );
        }
        assert!(
            ELF_FORMS.starts_with("# ISO 20275 Entity Legal Forms (ELF) code list, version 1.5"),
            "the derived list names its origin and version"
        );
    }

    #[test]
    fn domain_key_takes_the_host_of_urls_hosts_and_addresses() {
        let cases: &[(&str, &str)] = &[
            ("https://www.Example.IT/contatti?x=1", "example.it"),
            ("www.example.it", "example.it"),
            ("example.it", "example.it"),
            ("EXAMPLE.it.", "example.it"),
            ("ana@example.it", "example.it"),
            (" Ana.Rossi@Example.IT ", "example.it"),
            ("mailto:Ana@Example.IT", "example.it"),
            ("a/b?c#d@example.it", "example.it"),
            (
                "http://user:secret@shop.example.co.uk:8080/x#y",
                "shop.example.co.uk",
            ),
            ("//www.example.it/", "example.it"),
            ("example.it:443", "example.it"),
            ("example.it/?next=https://other.com", "example.it"),
            ("https://www.www.example.it", "example.it"),
            ("www.com", "www.com"),
            ("https://xn--exmple-cua.de/", "exämple.de"),
            ("WWW.EXÄMPLE.DE", "exämple.de"),
            ("https://www.żółw.pl", "żółw.pl"),
        ];
        for (raw, expected) in cases {
            assert_eq!(domain_key(raw).as_deref(), Some(*expected), "input {raw:?}");
        }
    }

    #[test]
    fn domain_key_rejects_free_mail_addresses_and_junk() {
        for raw in [
            "gmail.com",
            "ana@GMAIL.COM",
            "https://www.libero.it/",
            "mario@yahoo.com.vn",
            "192.168.0.1",
            "http://192.168.0.1:8080/",
            "[::1]",
            "http://[2001:db8::1]:80/",
            "localhost",
            "http://localhost:3000",
            "app.localhost",
            "https://fabbri.test/",
            "www.fabbri.example",
            "fabbri.c",
            "fabbri.c0m",
            "example",
            "exa_mple.com",
            "exam ple.com",
            "example..com",
            "xn--abc.com",
            "😀.com",
            "",
            "https://",
            "ana@",
        ] {
            assert_eq!(domain_key(raw), None, "input {raw:?}");
        }
    }

    #[test]
    fn domain_key_agrees_with_the_domain_of_a_parsed_email_address() {
        for raw in [
            "josé@xn--exmple-cua.de",
            "JOSÉ@EXÄMPLE.DE",
            "biuro@ŻÓŁW.PL",
            "lien.he@xn--vit-nam-zv4c.vn",
            "a@ｅｘａｍｐｌｅ。ｃｏｍ",
            "Paolo.Rossi@Example.IT",
        ] {
            let address = EmailAddress::parse(raw).unwrap();
            assert_eq!(
                domain_key(raw).as_deref(),
                Some(address.domain()),
                "{raw:?}"
            );
            assert_eq!(
                domain_key(address.domain()).as_deref(),
                Some(address.domain())
            );
        }
    }

    proptest! {
        #[test]
        fn company_key_never_panics_and_is_idempotent(raw in any::<String>()) {
            if let Some(key) = company_key(&raw) {
                prop_assert_eq!(company_key(&key), Some(key.clone()));
            }
        }

        #[test]
        fn company_key_is_idempotent_on_names_with_legal_forms(
            raw in "(Công ty TNHH |CTCP |Cty )?([A-Za-zàèéòùłżĐđÜü]{1,4}[ .&/-]{1,2}){0,5}(S\\.r\\.l\\.|SpA|S\\.a\\.s\\.|Sp\\. z o\\.o\\.|GmbH & Co\\. KG|Ltd\\.|Inc|A/S|Co\\.)?"
        ) {
            if let Some(key) = company_key(&raw) {
                prop_assert_eq!(company_key(&key), Some(key.clone()));
            }
        }

        #[test]
        fn a_legal_form_in_any_spelling_is_removed_whole(
            base in prop::collection::vec("[a-z]{2,7}", 1..4),
            form in prop::sample::select(legal_form_rows().0),
            style in 0..5u8,
            join in prop::sample::select(vec![" ", ", ", " - "]),
        ) {
            let spelling = match style {
                0 => form.spelling.to_owned(),
                1 => form.spelling.to_uppercase(),
                2 => form.spelling.to_lowercase(),
                3 => form.spelling.replace('.', ""),
                _ => form.spelling.replace('.', ". "),
            };
            let base = base.join(" ");
            let name = if form.position == Position::Start {
                format!("{spelling}{join}{base}")
            } else {
                format!("{base}{join}{spelling}")
            };
            prop_assert_eq!(company_key(&name), company_key(&base), "{:?}", name);
        }

        #[test]
        fn no_key_starts_or_ends_with_a_letter_left_over_from_a_legal_form(
            base in prop::collection::vec("[a-z]{2,7}", 1..4),
            form in prop::sample::select(legal_form_rows().0),
            extra in "[a-z]{0,2}",
        ) {
            // The form spelt letter by letter ("p.l.l.c."), with letters the
            // list does not know on its inner side ("x.p.l.l.c."): the letters
            // are kept or removed together, never cut in the middle.
            let letters: String = compact(form.spelling);
            let chain: Vec<String> = if form.position == Position::Start {
                letters.chars().chain(extra.chars()).map(String::from).collect()
            } else {
                extra.chars().chain(letters.chars()).map(String::from).collect()
            };
            let dotted = format!("{}.", chain.join("."));
            let base = base.join(" ");
            let name = if form.position == Position::Start {
                format!("{dotted} {base}")
            } else {
                format!("{base} {dotted}")
            };
            if let Some(key) = company_key(&name) {
                let words: Vec<&str> = key.split(' ').collect();
                let stray = if form.position == Position::Start {
                    words.iter().take_while(|w| is_letter(w)).count()
                } else {
                    words.iter().rev().take_while(|w| is_letter(w)).count()
                };
                prop_assert!(stray == 0 || stray == chain.len(), "{:?} -> {:?}", name, key);
                prop_assert_eq!(company_key(&key), Some(key.clone()));
            }
        }

        #[test]
        fn domain_key_never_panics_and_is_idempotent(raw in any::<String>()) {
            if let Some(key) = domain_key(&raw) {
                prop_assert_eq!(domain_key(&key), Some(key.clone()));
            }
        }

        #[test]
        fn domain_key_is_idempotent_on_url_like_input(
            raw in "(https?://|mailto:|[a-z.]{1,6}@)?([wW]{3}\\.)?[a-zA-Z0-9äöüÄÖÜ-]{1,10}\\.[a-zA-Z]{2,3}\\.?(:[0-9]{1,4})?(/[a-z?=&#]{0,8})?"
        ) {
            if let Some(key) = domain_key(&raw) {
                prop_assert_eq!(domain_key(&key), Some(key.clone()));
            }
        }
    }
}
