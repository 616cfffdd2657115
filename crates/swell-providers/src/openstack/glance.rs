//! Glance (image v2): an image's id from its name or id, among the images the
//! project may boot from.

use super::client::{CallError, Client, Service};
use super::neutron::looks_like_uuid;
use super::nova::enc;
use super::scope::{self, ImageAccess};
use serde_json::Value;

/// The image's id, or `None`; by name, the newest active image of that name the project
/// may use (Glance lists newest first). Usable: the project's own, public and community
/// images, and shared ones the project is a member of — never another project's private
/// image, even when an admin's credential lists it ([`scope::image_access`]).
pub(crate) async fn resolve_image(
    c: &Client,
    project: &str,
    name_or_id: &str,
) -> Result<Option<String>, CallError> {
    if looks_like_uuid(name_or_id) {
        match c
            .get(Service::Image, &format!("/images/{}", enc(name_or_id)))
            .await
        {
            Ok(v) => {
                if let Some(id) = usable(c, project, &v).await? {
                    return Ok(Some(id));
                }
            }
            Err(e) if e.is_not_found() || e.status() == Some(403) => {}
            Err(e) => return Err(e),
        }
    }
    let v = c
        .get(
            Service::Image,
            &format!("/images?name={}&status=active", enc(name_or_id)),
        )
        .await?;
    for image in v
        .get("images")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if image.get("name").and_then(Value::as_str) != Some(name_or_id) {
            continue;
        }
        if let Some(id) = usable(c, project, image).await? {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// The image's id when `project` may boot from it.
async fn usable(c: &Client, project: &str, image: &Value) -> Result<Option<String>, CallError> {
    let Some(id) = image.get("id").and_then(Value::as_str) else {
        return Ok(None);
    };
    let ok = match scope::image_access(image, project) {
        ImageAccess::Yes => true,
        ImageAccess::No => false,
        // A member of a shared image may boot from it, whatever its answer to the
        // invitation (that only decides whether the image is listed).
        ImageAccess::IfMember => match c
            .get(
                Service::Image,
                &format!("/images/{}/members/{}", enc(id), enc(project)),
            )
            .await
        {
            Ok(_) => true,
            Err(e) if e.is_not_found() || e.status() == Some(403) => false,
            Err(e) => return Err(e),
        },
    };
    Ok(ok.then(|| id.to_string()))
}
