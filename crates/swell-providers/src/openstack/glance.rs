//! Glance (image v2): an image's id from its name or id.

use super::client::{CallError, Client, Service};
use super::neutron::looks_like_uuid;
use super::nova::enc;
use serde_json::Value;

/// The image's id, or `None`; by name, the newest active image of that name (Glance
/// lists newest first).
pub(crate) async fn resolve_image(
    c: &Client,
    name_or_id: &str,
) -> Result<Option<String>, CallError> {
    if looks_like_uuid(name_or_id) {
        match c
            .get(Service::Image, &format!("/images/{name_or_id}"))
            .await
        {
            Ok(v) => {
                if let Some(id) = v.get("id").and_then(Value::as_str) {
                    return Ok(Some(id.to_string()));
                }
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    let v = c
        .get(
            Service::Image,
            &format!("/images?name={}&status=active", enc(name_or_id)),
        )
        .await?;
    Ok(v.get("images")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(|i| i.get("id"))
        .and_then(Value::as_str)
        .map(str::to_string))
}
