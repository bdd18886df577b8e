//! The readable text of a mail: HTML turned into lines a person would read, and the part
//! of a reply its sender wrote (without the quoted mail below it).

use unicode_normalization::UnicodeNormalization;

/// The most text kept of one message (bytes of UTF-8); the rest is cut at a character
/// boundary, so a runaway body cannot bloat the queue.
pub(crate) const MAX_TEXT_BYTES: usize = 256 * 1024;

/// `text` in NFC with CRLF turned into LF, trailing spaces of each line and leading and
/// trailing blank lines dropped, and cut to [`MAX_TEXT_BYTES`]. The second value is true
/// when something was cut.
pub(crate) fn tidy(text: &str) -> (String, bool) {
    let text: String = text
        .replace("\r\n", "\n")
        .replace('\r', "\n")
        .nfc()
        .collect();
    let mut lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let start = lines
        .iter()
        .position(|l| !l.is_empty())
        .unwrap_or(lines.len());
    let mut out = lines[start..].join("\n");
    let cut = out.len() > MAX_TEXT_BYTES;
    if cut {
        let mut end = MAX_TEXT_BYTES;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    (out, cut)
}

/// The lines of a mail its sender wrote: lines quoted with `>` are left out with the
/// attribution above them ("On ... wrote:", "Il ... ha scritto:") and any unmarked rest
/// of a wrapped quoted line (up to a blank line), so text written below a quote (a
/// bottom-posted or inline answer, after a blank line) stays; everything from a quoted header
/// block ("From: ... Sent: ...") or an "Original message" / "Forwarded message"
/// separator on belongs to an earlier mail, unmarked. The signature stays: it is the
/// sender's.
pub(crate) fn own_text(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    // An attribution is only one when a quote follows it (or nothing does), so a
    // sentence that merely ends in "wrote:" is not taken for one.
    let quote_follows = |from: usize| {
        lines
            .get(from..)
            .unwrap_or_default()
            .iter()
            .map(|l| l.trim())
            .find(|l| !l.is_empty())
            .is_none_or(|l| l.starts_with('>'))
    };
    let mut own = Vec::with_capacity(lines.len());
    // Inside a quote until a blank line: a mail program that wrapped a quoted line may
    // leave its rest unmarked, and that rest is still the earlier mail.
    let mut in_quote = false;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim();
        let next = lines.get(i + 1).map(|l| l.trim()).unwrap_or("");
        if trimmed.is_empty() {
            in_quote = false;
        }
        if trimmed.starts_with('>') || (is_attribution(trimmed) && quote_follows(i + 1)) {
            in_quote = true;
            i += 1;
        } else if in_quote {
            i += 1;
        } else if !next.is_empty()
            && !next.starts_with('>')
            && !starts_attribution(next)
            && is_attribution(&format!("{trimmed} {next}"))
            && quote_follows(i + 2)
        {
            in_quote = true;
            i += 2;
        } else if is_separator(trimmed) || starts_header_block(&lines[i..]) {
            break;
        } else {
            own.push(line);
            i += 1;
        }
    }
    // What a quote leaves behind (the blank lines around it) is not the sender's.
    while own.last().is_some_and(|l| l.trim().is_empty()) {
        own.pop();
    }
    let first = own
        .iter()
        .position(|l| !l.trim().is_empty())
        .unwrap_or(own.len());
    own[first..].join("\n")
}

/// Words that end the line introducing a quoted mail, in the languages leadpipe reads
/// (compared in lower case, spaces around the colon ignored).
const ATTRIBUTION_ENDS: &[&str] = &[
    "wrote:",
    "writes:",
    "ha scritto:",
    "scrive:",
    "napisał:",
    "napisała:",
    "napisał(a):",
    "pisze:",
    "đã viết:",
    "viết:",
    "schrieb:",
    "a écrit:",
    "escribió:",
    "escreveu:",
];

/// Words an attribution line begins with ("On Tue, …", "Il giorno …", "W dniu …").
const ATTRIBUTION_STARTS: &[&str] = &[
    "on ", "il ", "dnia ", "w dniu ", "vào ", "am ", "le ", "el ", "em ",
];

/// A whole attribution on one line, not the wrapped end of one: the line above it is
/// then the sender's own ("Telefon 601 234 567" right above "Dnia … pisze:").
fn starts_attribution(line: &str) -> bool {
    let lower = line.to_lowercase();
    is_attribution(line) && ATTRIBUTION_STARTS.iter().any(|s| lower.starts_with(s))
}

fn is_attribution(line: &str) -> bool {
    let lower = line.to_lowercase().replace(" :", ":");
    lower.len() < 400 && ATTRIBUTION_ENDS.iter().any(|end| lower.ends_with(end))
}

/// Lines that mail programs put above a quoted or forwarded mail.
const SEPARATORS: &[&str] = &[
    "original message",
    "messaggio originale",
    "wiadomość oryginalna",
    "oryginalna wiadomość",
    "thư gốc",
    "ursprüngliche nachricht",
    "message d'origine",
    "mensaje original",
    "forwarded message",
    "messaggio inoltrato",
    "wiadomość przekazana",
    "przekazana wiadomość",
    "thư được chuyển tiếp",
    "weitergeleitete nachricht",
    "message transféré",
    "mensaje reenviado",
    "begin forwarded message",
    "inizio messaggio inoltrato",
];

fn is_separator(line: &str) -> bool {
    let lower = line.to_lowercase();
    let bare = lower.trim_matches(|c: char| matches!(c, '-' | '_' | ' ' | ':' | '*' | '='));
    // Only a decorated line ("-----Original Message-----", "Begin forwarded message:")
    // is a separator; the words alone may be a sentence.
    bare.len() < lower.len() && SEPARATORS.contains(&bare)
}

/// Field names of a quoted header block, as Outlook and webmail write them above the mail
/// they quote: a "From" line followed closely by a "Sent"/"Date" line.
const FROM_FIELDS: &[&str] = &["from:", "da:", "od:", "từ:", "von:", "de:"];
const SENT_FIELDS: &[&str] = &[
    "sent:",
    "date:",
    "inviato:",
    "data:",
    "wysłano:",
    "wysłane:",
    "đã gửi:",
    "gửi:",
    "gesendet:",
    "envoyé:",
    "enviado:",
];

fn starts_header_block(lines: &[&str]) -> bool {
    let field = |line: &str, names: &[&str]| {
        let lower = line.trim().to_lowercase().replace(" :", ":");
        let lower = lower.trim_start_matches('*');
        names.iter().any(|n| lower.starts_with(n))
    };
    field(lines[0], FROM_FIELDS)
        && lines
            .iter()
            .skip(1)
            .take(4)
            .any(|line| field(line, SENT_FIELDS))
}

/// Turns an HTML body into plain text: block elements and `<br>` end lines, list items
/// start with "- ", table cells are separated by tabs, quoted blocks get "> ", scripts,
/// styles and comments are dropped and character references decoded.
pub(crate) fn html_to_text(html: &str) -> String {
    let mut out = HtmlText::default();
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        out.text(&rest[..lt]);
        rest = &rest[lt..];
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = after.find("-->").map_or("", |end| &after[end + 3..]);
            continue;
        }
        let Some(gt) = tag_end(rest) else {
            // A lone '<' is text.
            out.text("<");
            rest = &rest[1..];
            continue;
        };
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        let closing = tag.starts_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        if name.is_empty() {
            // "<!DOCTYPE ...>", "<?xml ...?>": not content.
            continue;
        }
        if !closing && matches!(name.as_str(), "script" | "style" | "head" | "title") {
            let close = format!("</{name}");
            rest = find_ascii_ci(rest, &close).map_or("", |at| {
                rest[at..].find('>').map_or("", |gt| &rest[at + gt + 1..])
            });
            continue;
        }
        out.tag(&name, closing);
    }
    out.text(rest);
    out.finish()
}

/// Where a tag that starts at `text[0] == '<'` ends, quotes in attributes respected.
fn tag_end(text: &str) -> Option<usize> {
    let first = text[1..].chars().next()?;
    if !(first.is_ascii_alphabetic() || first == '/' || first == '!' || first == '?') {
        return None;
    }
    let mut quote = None;
    for (i, c) in text.char_indices().skip(1) {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '>') => return Some(i),
            _ => {}
        }
    }
    None
}

fn find_ascii_ci(haystack: &str, needle: &str) -> Option<usize> {
    let hay = haystack.as_bytes();
    let needle = needle.as_bytes();
    (0..hay.len().saturating_sub(needle.len() - 1))
        .find(|&i| hay[i..i + needle.len()].eq_ignore_ascii_case(needle))
}

/// Plain text sent `format=flowed` (RFC 3676) as its sender wrote it: a line ending in a
/// space goes on with the next line of the same quote depth (without that space when
/// `delsp`), a space that stuffs a line is removed, and the signature separator stays.
pub(crate) fn unflow(text: &str, delsp: bool) -> String {
    let mut lines: Vec<String> = Vec::new();
    // The quote depth and text of a paragraph still being joined.
    let mut open: Option<(usize, String)> = None;
    let emit = |lines: &mut Vec<String>, (depth, body): (usize, String)| {
        let quote = if depth > 0 {
            format!("{} ", ">".repeat(depth))
        } else {
            String::new()
        };
        lines.push(quote + &body);
    };
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let depth = line.chars().take_while(|&c| c == '>').count();
        let content = &line[depth..];
        let content = content.strip_prefix(' ').unwrap_or(content);
        let flowed = content.ends_with(' ') && content != "-- ";
        let piece = match content.strip_suffix(' ') {
            Some(kept) if flowed && delsp => kept,
            _ => content,
        };
        match &mut open {
            Some((open_depth, body)) if *open_depth == depth => body.push_str(piece),
            _ => {
                if let Some(paragraph) = open.take() {
                    emit(&mut lines, paragraph);
                }
                open = Some((depth, piece.to_owned()));
            }
        }
        if !flowed && let Some(paragraph) = open.take() {
            emit(&mut lines, paragraph);
        }
    }
    if let Some(paragraph) = open {
        emit(&mut lines, paragraph);
    }
    lines.join("\n")
}

#[derive(Default)]
struct HtmlText {
    lines: Vec<String>,
    line: String,
    /// Inside `<pre>`: whitespace kept as it is.
    pre: usize,
    /// Depth of `<blockquote>`: each line inside starts with "> ".
    quote: usize,
    /// A space is due before the next word.
    space: bool,
    /// A cell was written in the current table row.
    cell: bool,
    /// Inside a table cell, and whether it has text yet.
    in_cell: bool,
    cell_text: bool,
    /// A break a block or `<br>` inside a cell asked for, made only if more text follows
    /// in the same cell: an Outlook cell wraps its text in `<p>`, which must not split
    /// the row. 0 a line break, 1 a block, 2 a block with an empty line after it.
    deferred: Option<u8>,
}

impl HtmlText {
    fn text(&mut self, raw: &str) {
        if raw.is_empty() {
            return;
        }
        let decoded = decode_entities(raw);
        if self.pre > 0 {
            let mut parts = decoded.split('\n');
            if let Some(first) = parts.next() {
                self.push_word(first);
            }
            for part in parts {
                self.end_line();
                self.push_word(part);
            }
            return;
        }
        if decoded.starts_with(char::is_whitespace) {
            self.space = true;
        }
        for word in decoded.split_whitespace() {
            self.push_word(word);
            self.space = true;
        }
        if !decoded.ends_with(char::is_whitespace) {
            self.space = false;
        }
    }

    fn push_word(&mut self, word: &str) {
        if let Some(strength) = self.deferred.take()
            && self.cell_text
        {
            self.make_break(strength);
        }
        self.cell_text |= self.in_cell;
        if self.line.is_empty() && self.quote > 0 {
            self.line.push_str(&"> ".repeat(self.quote));
        } else if self.space && !self.line.is_empty() && !self.line.ends_with([' ', '\t']) {
            self.line.push(' ');
        }
        self.line.push_str(word);
        self.space = false;
    }

    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        self.lines.push(line.trim_end().to_owned());
        self.space = false;
    }

    /// Ends the current line if it has text, and leaves one empty line after a paragraph.
    fn block(&mut self, blank: bool) {
        if !self.line.trim().is_empty() {
            self.end_line();
        } else {
            self.line.clear();
        }
        if blank && self.lines.last().is_some_and(|l| !l.is_empty()) {
            self.lines.push(String::new());
        }
    }

    fn tag(&mut self, name: &str, closing: bool) {
        let strength = match name {
            "br" => Some(0),
            "div" | "section" | "article" | "header" | "footer" | "address" | "center" | "dt"
            | "dd" | "hr" | "form" | "fieldset" | "caption" => Some(1),
            "li" if self.in_cell => Some(1),
            "p" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "ul" | "ol" | "dl" => Some(2),
            _ => None,
        };
        match strength {
            Some(strength) if self.in_cell => {
                self.deferred = self.deferred.max(Some(strength));
                self.space = true;
                return;
            }
            Some(strength) => return self.make_break(strength),
            None => {}
        }
        match name {
            "pre" => {
                self.block(true);
                self.pre = if closing {
                    self.pre.saturating_sub(1)
                } else {
                    self.pre + 1
                };
            }
            "blockquote" => {
                self.block(false);
                self.quote = if closing {
                    self.quote.saturating_sub(1)
                } else {
                    self.quote + 1
                };
            }
            "li" if !closing => {
                self.block(false);
                self.push_word("-");
                self.space = true;
            }
            "li" => self.block(false),
            "tr" => {
                self.block(false);
                self.cell = false;
                self.leave_cell();
            }
            "table" => {
                self.leave_cell();
                self.block(true);
            }
            "td" | "th" if !closing => {
                self.leave_cell();
                if self.cell {
                    self.line.push('\t');
                }
                self.cell = true;
                self.in_cell = true;
                self.space = false;
            }
            "td" | "th" => self.leave_cell(),
            _ => {}
        }
    }

    /// 0 a line break, 1 a block, 2 a block with an empty line after it.
    fn make_break(&mut self, strength: u8) {
        match strength {
            0 => self.end_line(),
            strength => self.block(strength == 2),
        }
    }

    /// Out of a cell: a break it deferred is not made (the next cell's tab or the row's
    /// end separates what follows).
    fn leave_cell(&mut self) {
        self.in_cell = false;
        self.cell_text = false;
        self.deferred = None;
    }

    fn finish(mut self) -> String {
        self.block(false);
        let mut out = String::new();
        let mut blank = 0;
        for line in &self.lines {
            if line.trim().is_empty() {
                blank += 1;
                continue;
            }
            if !out.is_empty() {
                out.push_str(if blank > 0 { "\n\n" } else { "\n" });
            }
            blank = 0;
            out.push_str(line.trim_start_matches(' '));
        }
        out
    }
}

/// Decodes character references (`&amp;`, `&#8217;`, `&#x20AC;` and the named ones mail
/// programs write); an unknown one stays as it is.
fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let end = rest
            .char_indices()
            .skip(1)
            .take(32)
            .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '#'))
            .map(|(i, _)| i);
        let (name, after) = match end {
            Some(i) if rest[i..].starts_with(';') => (&rest[1..i], &rest[i + 1..]),
            _ => {
                out.push('&');
                rest = &rest[1..];
                continue;
            }
        };
        let decoded = if let Some(num) = name.strip_prefix('#') {
            let value = match num.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                None => num.parse().ok(),
            };
            value.map(|v| char::from_u32(v).unwrap_or('\u{fffd}'))
        } else {
            named_entity(name)
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = after;
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn named_entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" | "AMP" => '&',
        "lt" | "LT" => '<',
        "gt" | "GT" => '>',
        "quot" | "QUOT" => '"',
        "apos" => '\'',
        "nbsp" => '\u{a0}',
        "ensp" | "emsp" | "thinsp" => ' ',
        "shy" | "zwnj" | "zwj" | "lrm" | "rlm" => '\u{ad}',
        "ndash" => '–',
        "mdash" => '—',
        "lsquo" => '‘',
        "rsquo" => '’',
        "sbquo" => '‚',
        "ldquo" => '“',
        "rdquo" => '”',
        "bdquo" => '„',
        "laquo" => '«',
        "raquo" => '»',
        "hellip" => '…',
        "bull" => '•',
        "middot" => '·',
        "euro" => '€',
        "pound" => '£',
        "yen" => '¥',
        "cent" => '¢',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "deg" => '°',
        "times" => '×',
        "divide" => '÷',
        "plusmn" => '±',
        "sect" => '§',
        "para" => '¶',
        "ordm" => 'º',
        "ordf" => 'ª',
        "iexcl" => '¡',
        "iquest" => '¿',
        "szlig" => 'ß',
        _ => return latin_letter(name),
    })
}

/// `&agrave;`, `&Eacute;`, `&ouml;`, `&ccedil;`, ...: a base letter and a diacritic.
fn latin_letter(name: &str) -> Option<char> {
    let mut chars = name.chars();
    let base = chars.next()?;
    let mark = match chars.as_str() {
        "grave" => '\u{300}',
        "acute" => '\u{301}',
        "circ" => '\u{302}',
        "tilde" => '\u{303}',
        "uml" => '\u{308}',
        "ring" => '\u{30a}',
        "cedil" => '\u{327}',
        "caron" => '\u{30c}',
        "ogon" => '\u{328}',
        "dot" => '\u{307}',
        "slash" if base.eq_ignore_ascii_case(&'o') => {
            return Some(if base == 'O' { 'Ø' } else { 'ø' });
        }
        "lig" if base.eq_ignore_ascii_case(&'a') => {
            return Some(if base == 'A' { 'Æ' } else { 'æ' });
        }
        _ => return None,
    };
    if !base.is_ascii_alphabetic() {
        return None;
    }
    let composed: String = [base, mark].iter().collect::<String>().nfc().collect();
    let mut it = composed.chars();
    match (it.next(), it.next()) {
        (Some(c), None) => Some(c),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_blocks_lists_and_breaks_become_lines() {
        let html = "<div dir=\"ltr\"><p>Kính gửi Quý công ty,</p>\n<p>Chúng tôi cần:</p>\n<ul>\n<li>25 bộ bàn</li>\n<li>1 bàn họp 12 chỗ</li></ul>\n<p>Điện thoại: <b>090 123 4567</b></p><p>Trân trọng,<br>Hà</p></div>";
        assert_eq!(
            html_to_text(html),
            "Kính gửi Quý công ty,\n\nChúng tôi cần:\n\n- 25 bộ bàn\n- 1 bàn họp 12 chỗ\n\nĐiện thoại: 090 123 4567\n\nTrân trọng,\nHà"
        );
    }

    #[test]
    fn html_entities_scripts_styles_and_comments_are_handled() {
        let html = "<html><head><title>x</title><style>p{color:red}</style></head><body><!-- hi --><script>alert('<p>')</script><p>We&#8217;re &amp; O&rsquo;Connor &euro;&nbsp;5 &Eacute;l&egrave;ve &#x1F600; &bogus; a&b</p></body></html>";
        assert_eq!(
            html_to_text(html),
            "We\u{2019}re & O\u{2019}Connor € 5 Élève 😀 &bogus; a&b"
        );
    }

    #[test]
    fn html_tables_keep_their_cells_apart_and_quotes_are_marked() {
        let html = "<table><tr><th>Nome</th><td>Anna Neri</td></tr><tr><td>Telefono:</td><td>347 123 4567</td></tr></table><blockquote><p>old text</p></blockquote>";
        assert_eq!(
            html_to_text(html),
            "Nome\tAnna Neri\nTelefono:\t347 123 4567\n\n> old text"
        );
    }

    #[test]
    fn paragraphs_and_breaks_inside_table_cells_keep_a_row_on_one_line() {
        let outlook = "<table><tr><td><p class=MsoNormal>Nome<o:p></o:p></p></td><td><p class=MsoNormal>Francesca Romano</p></td></tr>\
            <tr><td><div>Telefono<br></div></td><td><div>347 123 4567</div></td></tr>\
            <tr><td>Indirizzo</td><td><p>Via Roma 1</p><p>Milano</p></td></tr></table>";
        assert_eq!(
            html_to_text(outlook),
            "Nome\tFrancesca Romano\nTelefono\t347 123 4567\nIndirizzo\tVia Roma 1\n\nMilano"
        );
        // A layout table around a whole mail keeps its paragraphs apart.
        let layout = "<table><tr><td><p>Buongiorno,</p><p>vorrei un preventivo.</p><br>Anna</td></tr></table>";
        assert_eq!(
            html_to_text(layout),
            "Buongiorno,\n\nvorrei un preventivo.\n\nAnna"
        );
    }

    #[test]
    fn quoted_mail_below_a_reply_is_not_its_senders_text() {
        let reply = "Grazie,\nchiamate lo 02 8736 1234.\n\nIl 13/05/2025 09:14, Niccolò Fabbri ha scritto:\n> vecchio testo 348 221 7790\n";
        assert_eq!(own_text(reply), "Grazie,\nchiamate lo 02 8736 1234.");
        let outlook =
            "Sure.\n\nFrom: Sales <sales@example.com>\nSent: Monday\nSubject: x\n\nold 555 0100";
        assert_eq!(own_text(outlook), "Sure.");
        let wrapped =
            "Ok\nOn Tue, 13 May 2025 at 09:14, Sarah O'Connor <s@example.com>\nwrote:\n> old\n";
        assert_eq!(own_text(wrapped), "Ok");
        let bottom = "Il giorno mar 13 mag 2025 alle ore 09:14 Niccolò Fabbri\n<n.fabbri@example.it> ha scritto:\n> vecchio testo 348 221 7790\n>\n> Niccolò\n\nGrazie, chiamate lo 02 8736 1234.\n\n-- \nAnna";
        assert_eq!(
            own_text(bottom),
            "Grazie, chiamate lo 02 8736 1234.\n\n-- \nAnna",
            "an answer below the quote is the sender's"
        );
        let inline = "Dnia 13.05.2025 o 09:14 Jan pisze:\n> Jaki numer?\n\nTelefon 601 234 567\n\n> Kiedy?\n\nJutro";
        assert_eq!(own_text(inline), "Telefon 601 234 567\n\n\nJutro");
        // The unmarked rest of a wrapped quoted line is still the quote.
        let wrapped_quote = "Sure, call me.\n\nOn Mon, Sales <sales@example.it> wrote:\n> Thanks, our office is at\n02 8736 1234, open 9-18.\n";
        assert_eq!(own_text(wrapped_quote), "Sure, call me.");
        // A line right above an attribution is the sender's, not the attribution's start.
        let tight = "Telefon 601 234 567\nDnia 13.05.2025 o 09:14 Jan pisze:\n> Kiedy?";
        assert_eq!(own_text(tight), "Telefon 601 234 567");
        let forwarded = "FYI\n---------- Forwarded message ---------\nFrom: x";
        assert_eq!(own_text(forwarded), "FYI");
        let plain = "I wrote:\nthe list below\n- a";
        assert_eq!(
            own_text(plain),
            plain,
            "no quote follows, so nothing is cut"
        );
    }

    #[test]
    fn tidy_makes_nfc_lf_text_and_cuts_at_a_character_boundary() {
        let (text, cut) = tidy("\r\n\r\nHo\u{300}a\r\nline  \r\n\r\n");
        assert_eq!(text, "Hòa\nline");
        assert!(!cut);
        let long = "é".repeat(MAX_TEXT_BYTES);
        let (text, cut) = tidy(&long);
        assert!(cut && text.len() <= MAX_TEXT_BYTES && text.chars().all(|c| c == 'é'));
    }

    proptest::proptest! {
        #[test]
        fn any_html_and_quotes_read_without_panicking(text in "[<>/!&#;a-z\"' \n-]{0,120}|\\PC{0,120}") {
            let _ = html_to_text(&text);
            let _ = own_text(&text);
            let _ = tidy(&text);
        }
    }
}
