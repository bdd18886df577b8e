//! Which inquiries are filed: for tools that submit inquiries whose ids they know in
//! advance (the leads import), to skip what is filed already and say so.

use std::collections::HashSet;

use ingest::InquiryId;
use uuid::Uuid;

use crate::error::StoreError;
use crate::store::Store;

impl Store {
    /// Of `ids`, those the consumers have filed, whatever became of them (lead, merge,
    /// duplicate, spam).
    pub async fn filed_inquiries(
        &self,
        ids: &[InquiryId],
    ) -> Result<HashSet<InquiryId>, StoreError> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        let wanted: Vec<Uuid> = ids.iter().map(InquiryId::as_uuid).collect();
        let filed: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM inquiries WHERE id = ANY($1)")
            .bind(&wanted)
            .fetch_all(self.pool())
            .await?;
        Ok(filed.into_iter().map(InquiryId::from_uuid).collect())
    }
}

#[cfg(test)]
mod tests {
    use ingest::Channel;
    use sqlx::PgPool;

    use super::*;

    #[sqlx::test(migrator = "crate::store::MIGRATOR")]
    async fn filed_inquiries_are_those_of_the_ids_that_are_stored(pool: PgPool) {
        let store = Store::from_pool(pool.clone());
        let filed = InquiryId::from_external(Channel::Import, "crm-export", "row:a");
        let other_source = InquiryId::from_external(Channel::Import, "other", "row:a");
        let unknown = InquiryId::from_external(Channel::Import, "crm-export", "row:b");
        sqlx::query(
            "INSERT INTO inquiries (id, channel, source, external_id, received_at, disposition,
                                    payload, raw_body)
             VALUES ($1, 'import', 'crm-export', 'row:a', now(), 'spam', '{}', '')",
        )
        .bind(filed.as_uuid())
        .execute(&pool)
        .await
        .unwrap();
        let found = store
            .filed_inquiries(&[unknown, filed, other_source])
            .await
            .unwrap();
        assert_eq!(found, HashSet::from([filed]));
        assert!(store.filed_inquiries(&[]).await.unwrap().is_empty());
    }
}
