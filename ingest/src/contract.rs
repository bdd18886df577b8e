//! The intake API's part of `/openapi.json`: the documented routes of every HTTP
//! connector kind, whether or not it is configured, so the document is the same on every
//! deployment. Each connector mounts exactly these registrations (its `documented()`), so
//! what is served and what is described cannot drift apart.

use utoipa::openapi::OpenApi;

/// Every intake endpoint, described.
pub fn intake_api() -> OpenApi {
    let mut api = crate::forms::documented().into_openapi();
    for part in [
        crate::events::documented().into_openapi(),
        crate::whatsapp::documented().into_openapi(),
        crate::telegram::webhook::documented().into_openapi(),
        crate::twilio::documented().into_openapi(),
    ] {
        api.merge(part);
    }
    api
}
