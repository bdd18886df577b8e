//! Mail that is never a lead, recognised by its headers: bounces and delivery reports,
//! auto-replies, mailing-list mail and mail from the company's own domains; and senders
//! that are machines (a shop's `noreply@`), whose mail names the customer elsewhere.

use mail_parser::{HeaderValue, Message, MimeHeaders};

use super::NotALeadReason;

/// Why a readable message is not a lead, if it is not; `sender` is the From address and
/// `customer_outside` tells whether a machine notification from the company's own domain
/// names a customer outside it (then it is a lead, not internal mail).
pub(crate) fn not_a_lead(
    message: &Message<'_>,
    sender: Option<&str>,
    internal_domains: &[String],
    customer_outside: bool,
) -> Option<NotALeadReason> {
    if is_delivery_report(message, sender) {
        return Some(NotALeadReason::Bounce);
    }
    if is_auto_reply(message, customer_outside) {
        return Some(NotALeadReason::AutoReply);
    }
    if null_return_path(message) {
        // A null reverse path with no other sign is still machine mail about delivery.
        return Some(NotALeadReason::Bounce);
    }
    if has_header(message, "List-Id") || has_header(message, "List-Unsubscribe") {
        return Some(NotALeadReason::MailingList);
    }
    // Bulk mail without list headers is a newsletter, unless it is a machine's
    // notification naming an outside customer: some web shops mark those bulk too.
    if bulk_precedence(message) && !customer_outside {
        return Some(NotALeadReason::MailingList);
    }
    if sender.is_some_and(|s| is_internal(s, internal_domains))
        && !(sender.is_some_and(is_machine_address) && customer_outside)
    {
        return Some(NotALeadReason::InternalSender);
    }
    None
}

/// The trimmed raw value of the first header called `name`.
fn raw_header<'a>(message: &'a Message<'_>, name: &str) -> Option<&'a str> {
    message
        .headers_raw()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

fn has_header(message: &Message<'_>, name: &str) -> bool {
    raw_header(message, name).is_some()
}

/// A header that is present and does not say "no" (`X-Autoreply: no`).
fn says_yes(message: &Message<'_>, name: &str) -> bool {
    raw_header(message, name).is_some_and(|v| {
        !matches!(
            without_comments(v).trim().to_ascii_lowercase().as_str(),
            "no" | "false" | "0" | "off" | ""
        )
    })
}

/// `value` without its RFC 5322 comments ("no (sent by a person)" is "no "); nested
/// parentheses and quoted pairs inside them are followed, an unclosed one runs to the end.
fn without_comments(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut depth = 0usize;
    let mut escaped = false;
    for c in value.chars() {
        match (depth, c) {
            (0, '(') => depth = 1,
            (0, c) => out.push(c),
            (_, _) if escaped => escaped = false,
            (_, '\\') => escaped = true,
            (_, '(') => depth += 1,
            (_, ')') => depth -= 1,
            _ => {}
        }
    }
    out
}

/// RFC 3464 / 6522 reports (`multipart/report`, a `message/delivery-status` part), mail
/// from MAILER-DAEMON or postmaster, `X-Failed-Recipients`, Exchange's reports.
fn is_delivery_report(message: &Message<'_>, sender: Option<&str>) -> bool {
    let root_is_report = message.root_part().content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("multipart")
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("report"))
    });
    let status_part = message.parts.iter().any(|part| {
        part.is_content_type("message", "delivery-status")
            || part.is_content_type("message", "global-delivery-status")
    });
    let daemon = sender.is_some_and(|address| {
        let local = address
            .rsplit_once('@')
            .map_or(address, |(local, _)| local)
            .to_ascii_lowercase();
        matches!(
            local.as_str(),
            "mailer-daemon" | "postmaster" | "mail-daemon"
        ) || local.starts_with("microsoftexchange")
    });
    // Exchange sends its non-delivery reports as plain mail, marked by this header and
    // from its MicrosoftExchange<hex> mailbox.
    root_is_report
        || status_part
        || daemon
        || has_header(message, "X-Failed-Recipients")
        || has_header(message, "X-MS-Exchange-Message-Is-Ndr")
}

/// `Return-Path: <>`, the null reverse path of bounces and automatic replies. An absent
/// Return-Path says nothing: mail put into a folder by other means has none.
fn null_return_path(message: &Message<'_>) -> bool {
    raw_header(message, "Return-Path").is_some_and(|v| {
        let bare: String = v.chars().filter(|c| !c.is_whitespace()).collect();
        bare == "<>" || bare.is_empty()
    })
}

/// Subject prefixes of automatic replies, in lower case.
const AUTO_REPLY_SUBJECTS: &[&str] = &[
    "auto:",
    "autoreply",
    "auto-reply",
    "auto reply",
    "automatic reply",
    "autosvar",
    "out of office",
    "out of the office",
    "risposta automatica",
    "fuori ufficio",
    "odpowiedź automatyczna",
    "automatyczna odpowiedź",
    "nieobecność",
    "trả lời tự động",
    "thư trả lời tự động",
    "abwesenheitsnotiz",
    "automatische antwort",
    "réponse automatique",
    "absence",
    "respuesta automática",
    "fuera de la oficina",
];

fn auto_reply_subject(message: &Message<'_>) -> bool {
    message.subject().is_some_and(|subject| {
        let lower = subject.trim().to_lowercase();
        AUTO_REPLY_SUBJECTS.iter().any(|p| lower.starts_with(p))
    })
}

/// The lower-cased values of `Precedence` and `X-Precedence`.
fn precedence(message: &Message<'_>) -> Vec<String> {
    ["Precedence", "X-Precedence"]
        .iter()
        .filter_map(|name| raw_header(message, name))
        .map(|v| v.to_ascii_lowercase())
        .collect()
}

/// `Precedence: bulk` or `list`: mail sent to many.
fn bulk_precedence(message: &Message<'_>) -> bool {
    precedence(message)
        .iter()
        .any(|p| matches!(p.as_str(), "bulk" | "list"))
}

/// RFC 3834 `Auto-Submitted` other than `no` (comments aside); the headers older
/// responders set (`X-Autoreply`, `X-Autorespond`, ...); `Precedence: junk` (vacation(1) marks its
/// replies so) and `Precedence: bulk|list` on a reply or with an auto-responder's sign;
/// Exchange's out-of-office replies. A machine's notification naming an outside
/// customer is marked bulk and asks for no automatic answers without being one.
fn is_auto_reply(message: &Message<'_>, customer_outside: bool) -> bool {
    let auto_submitted = raw_header(message, "Auto-Submitted").is_some_and(|v| {
        let token = without_comments(v.split(';').next().unwrap_or(""))
            .trim()
            .to_ascii_lowercase();
        !token.is_empty() && token != "no"
    });
    let responder_header = [
        "X-Autoreply",
        "X-Autorespond",
        "X-AutoReply-From",
        "X-Mail-Autoreply",
        "X-Autogenerated",
        "X-FC-MachineGenerated",
    ]
    .iter()
    .any(|name| says_yes(message, name));
    let precedence = precedence(message);
    let auto_precedence = precedence
        .iter()
        .any(|p| matches!(p.as_str(), "auto_reply" | "junk"));
    let suppress = raw_header(message, "X-Auto-Response-Suppress").is_some_and(|v| {
        let v = v.to_ascii_lowercase();
        ["oof", "autoreply", "all", "dr"]
            .iter()
            .any(|t| v.split([',', ' ']).any(|w| w.trim() == *t))
    });
    let exchange_oof = has_header(message, "X-MS-Exchange-Inbox-Rules-Loop")
        || (suppress && auto_reply_subject(message));
    // A person's reply never carries a Precedence header; a responder's answer does.
    let is_reply = has_header(message, "In-Reply-To") || has_header(message, "References");
    let responder_sign = auto_reply_subject(message) || (suppress && !customer_outside) || is_reply;
    auto_submitted
        || responder_header
        || auto_precedence
        || (bulk_precedence(message) && responder_sign)
        || exchange_oof
}

/// True when `address` is at one of `domains` or below it (`mail.example.it` is under
/// `example.it`).
pub(crate) fn is_internal(address: &str, domains: &[String]) -> bool {
    let Some((_, domain)) = address.rsplit_once('@') else {
        return false;
    };
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    domains.iter().any(|internal| {
        let internal = internal
            .trim()
            .trim_start_matches('@')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        !internal.is_empty()
            && (domain == internal
                || domain
                    .strip_suffix(&internal)
                    .is_some_and(|head| head.ends_with('.')))
    })
}

/// Mailbox names machines send from; a person does not write from them, so their mail
/// names its customer elsewhere (Reply-To, labelled lines).
const MACHINE_NAMES: &[&str] = &[
    "noreply",
    "no-reply",
    "no_reply",
    "no.reply",
    "donotreply",
    "do-not-reply",
    "do_not_reply",
    "do.not.reply",
    "notreply",
    "nepasrepondre",
    "ne-pas-repondre",
    "nieodpowiadaj",
    "mailer",
    "notification",
    "notifications",
    "notify",
    "wordpress",
    "www-data",
    "apache",
    "nginx",
    "formmail",
    "webform",
    "webforms",
    "forms",
    "autoresponder",
    "robot",
];

/// True for a sender address a machine writes from (`noreply@shop.example.it`,
/// `shop-noreply@`, `wordpress@`).
pub(crate) fn is_machine_address(address: &str) -> bool {
    let local = address
        .rsplit_once('@')
        .map_or(address, |(local, _)| local)
        .to_ascii_lowercase();
    let local = local.split('+').next().unwrap_or("");
    // "Do not reply" in any writing and our languages, also inside a longer name
    // (`shop-noreply`, `nie-odpowiadaj-sklep`): separators do not count.
    let joined: String = local
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | '.'))
        .collect();
    MACHINE_NAMES.contains(&local)
        || [
            "noreply",
            "donotreply",
            "nepasrepondre",
            "nieodpowiadaj",
            "nonrispondere",
            "khongtraloi",
            "keineantwort",
            "noresponder",
        ]
        .iter()
        .any(|m| joined.contains(m))
}

/// Every message id in a header that holds a list of them (In-Reply-To, References),
/// without angle brackets.
pub(crate) fn message_ids(value: &HeaderValue<'_>) -> Vec<String> {
    match value {
        HeaderValue::Text(id) => vec![id.trim().to_owned()],
        HeaderValue::TextList(ids) => ids.iter().map(|id| id.trim().to_owned()).collect(),
        _ => Vec::new(),
    }
    .into_iter()
    .filter(|id| !id.is_empty())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_domains_cover_their_subdomains_only() {
        let domains = vec!["Example-Company.it".to_owned(), "@other.pl.".to_owned()];
        assert!(is_internal("anna@example-company.it", &domains));
        assert!(is_internal("anna@mail.EXAMPLE-company.it", &domains));
        assert!(is_internal("jan@other.pl", &domains));
        assert!(!is_internal("anna@notexample-company.it", &domains));
        assert!(!is_internal("anna@example-company.it.evil.com", &domains));
        assert!(!is_internal("anna@example.it", &[]));
    }

    #[test]
    fn an_exchange_non_delivery_report_without_a_report_part_is_a_bounce() {
        let by_header: &[u8] = b"From: Postmaster <outlook@contoso.example.com>\r\nTo: sales@example.it\r\nSubject: Undeliverable: Preventivo\r\nX-MS-Exchange-Message-Is-Ndr:\r\nContent-Type: text/plain\r\n\r\nDelivery has failed to these recipients: anna@example.it 347 123 4567\r\n";
        let by_sender: &[u8] = b"From: Microsoft Outlook <MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@contoso.example.com>\r\nTo: sales@example.it\r\nSubject: Undeliverable: Preventivo\r\nContent-Type: text/plain\r\n\r\nYour message to anna@example.it couldn't be delivered.\r\n";
        for (raw, sender) in [
            (by_header, "outlook@contoso.example.com"),
            (
                by_sender,
                "MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@contoso.example.com",
            ),
        ] {
            let message = mail_parser::MessageParser::default().parse(raw).unwrap();
            assert_eq!(
                not_a_lead(&message, Some(sender), &[], false),
                Some(NotALeadReason::Bounce)
            );
        }
    }

    #[test]
    fn machine_senders_are_told_from_people() {
        for machine in [
            "noreply@shop.example.it",
            "No-Reply@example.com",
            "shop-noreply@example.pl",
            "wordpress@example.vn",
            "donotreply+orders@example.com",
            "nie-odpowiadaj@sklep.example.pl",
            "sklep_nieodpowiadaj@example.pl",
            "non-rispondere@negozio.example.it",
            "nonrispondere@example.it",
            "khong-tra-loi@cuahang.example.vn",
            "no.reply@example.com",
        ] {
            assert!(is_machine_address(machine), "{machine}");
        }
        for person in [
            "niccolo.fabbri@example.it",
            "info@example.it",
            "noreen@example.com",
            "formica@example.it",
        ] {
            assert!(!is_machine_address(person), "{person}");
        }
    }
}
