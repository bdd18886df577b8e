//! The stored search text (migrations 0014 and 0016): 0016 made it cheaper to compute,
//! and it must give the same text as 0014's definition for every mix of parts.

use sqlx::PgPool;

/// 0014's definition, written out.
const FIRST_DEFINITION: &str = "lower(public.unaccent('public.unaccent'::regdictionary, \
     concat_ws(' ', name, email, company))) \
     || ' ' || coalesce(regexp_replace(phone, '\\D', '', 'g'), '')";

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn the_search_text_is_the_same_as_first_defined_for_every_mix_of_parts(pool: PgPool) {
    let parts = [
        None,
        Some(""),
        Some(" "),
        Some("Żółkiewski ŁUCJA"),
        Some("Nguyễn Văn Đức"),
        Some("Müller-Lüdenscheidt"),
    ];
    let phones = [None, Some(""), Some("+39 340 123 4567"), Some("abc")];
    let mut checked = 0;
    for name in parts {
        for email in [None, Some(""), Some("Anna.Rossi@Example.COM")] {
            for company in parts {
                for phone in phones {
                    let (now, first): (Option<String>, Option<String>) = sqlx::query_as(&format!(
                        "SELECT lead_search_text(name, email, phone, company), {FIRST_DEFINITION}
                         FROM (SELECT $1::text AS name, $2::text AS email, $3::text AS phone,
                                      $4::text AS company) p"
                    ))
                    .bind(name)
                    .bind(email)
                    .bind(phone)
                    .bind(company)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                    assert_eq!(now, first, "{name:?} {email:?} {phone:?} {company:?}");
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 6 * 3 * 6 * 4);
}
