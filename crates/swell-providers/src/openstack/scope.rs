//! What one provider may use: the rules that keep a provider inside its credential's own
//! project, as pure functions over what the cloud answered.
//!
//! A provider acts for one tenant with one credential scoped to one project (the
//! token's `project.id`). Even when that credential is an admin's, which sees every
//! project's resources, a name or id in a template resolves only to:
//!
//! - **servers, security groups, Octavia pools**: the project's own (`project_id`, or
//!   the older `tenant_id`, equal to the token's project);
//! - **networks a server attaches to**: the project's own, and networks shared with the
//!   project (`shared`: shared with every project, or with this one by an RBAC policy —
//!   Neutron computes it for the asking project);
//! - **floating-IP networks**: external networks (`router:external`), which are every
//!   project's by design;
//! - **images**: the project's own, `public` and `community` ones, and `shared` ones the
//!   project is a member of (asked separately: [`ImageAccess::IfMember`]);
//! - **flavors**: public ones, and private ones the project has access to;
//! - **key pairs**: the credential's user's own (Nova keeps key pairs per user).
//!
//! Anything else is "not found", with the same message as a name that exists nowhere,
//! so an error never tells one project about another's resources.

use serde_json::Value;

/// Whether a resource whose owner fields are these belongs to `project`. A resource
/// that names no owner belongs to no one (never assumed to be the project's).
pub(crate) fn owned(project_id: Option<&str>, tenant_id: Option<&str>, project: &str) -> bool {
    !project.is_empty() && project_id.or(tenant_id) == Some(project)
}

/// What a template wants a network for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NetworkUse {
    /// A server's port (`template.openstack.networks`).
    Attach,
    /// Floating IPs (`template.openstack.floating_ip_network`).
    FloatingIp,
}

/// Whether a network (as Neutron describes it to the project's token) may serve `use_`.
pub(crate) fn network_usable(
    owned_by_project: bool,
    shared: bool,
    external: bool,
    use_: NetworkUse,
) -> bool {
    match use_ {
        NetworkUse::Attach => owned_by_project || shared,
        NetworkUse::FloatingIp => external,
    }
}

/// Whether a project may boot from an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ImageAccess {
    /// Its own, public or community.
    Yes,
    /// Shared by another project: only if this project is one of its members.
    IfMember,
    /// Another project's private image, or one in a state or visibility Swell does not
    /// know.
    No,
}

/// How `project` may use a Glance image (its JSON as Glance answered).
pub(crate) fn image_access(image: &Value, project: &str) -> ImageAccess {
    let owner = image.get("owner").and_then(Value::as_str);
    if owned(owner, None, project) {
        return ImageAccess::Yes;
    }
    match image.get("visibility").and_then(Value::as_str) {
        Some("public" | "community") => ImageAccess::Yes,
        Some("shared") => ImageAccess::IfMember,
        _ => ImageAccess::No,
    }
}

/// Whether a Nova flavor is public (`os-flavor-access:is_public`; absent means public,
/// as Nova shows flavors to projects that may not see the field).
pub(crate) fn flavor_is_public(flavor: &Value) -> bool {
    flavor
        .get("os-flavor-access:is_public")
        .and_then(Value::as_bool)
        .unwrap_or(true)
}

/// Whether a private flavor's access list (`GET /flavors/{id}/os-flavor-access`) names
/// `project`.
pub(crate) fn flavor_access_lists(access: &Value, project: &str) -> bool {
    access
        .get("flavor_access")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|a| owned(a.get("tenant_id").and_then(Value::as_str), None, project))
}

/// The description Swell gives a group's own security group: it names the owner, so
/// that a group another Swell (another owner) made under the same name in the same
/// project is never taken, changed or deleted as this one's.
pub(crate) fn security_group_description(owner: &str) -> String {
    format!("Managed by Swell (owner {owner}): the rules of the group's template")
}

/// The description of groups made before the owner was recorded in it.
const LEGACY_SG_DESCRIPTION: &str = "Managed by Swell: the rules of the group's template";

/// Whether a security group (already known to be the project's own, of the group's
/// name) is this owner's: its description is [`security_group_description`], or the
/// description of groups made before the owner was recorded (adopted).
pub(crate) fn security_group_is_ours(description: &str, owner: &str) -> bool {
    description == security_group_description(owner) || description == LEGACY_SG_DESCRIPTION
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const P: &str = "fbd090c4a9de469684ea6e7dfe0e81b3";
    const OTHER: &str = "8a92df540ec845898d7abe2034acde80";

    #[test]
    fn ownership_is_an_exact_project_match_and_never_assumed() {
        for (project_id, tenant_id, project, want) in [
            (Some(P), Some(P), P, true),
            (Some(P), None, P, true),
            (None, Some(P), P, true),
            (Some(OTHER), Some(OTHER), P, false),
            // project_id wins over a stale tenant_id.
            (Some(OTHER), Some(P), P, false),
            (None, None, P, false),
            // A token without a project owns nothing, not even ownerless things.
            (None, None, "", false),
            (Some(""), None, "", false),
            // No prefix or case games.
            (Some("fbd090c4"), None, P, false),
            (Some("FBD090C4A9DE469684EA6E7DFE0E81B3"), None, P, false),
        ] {
            assert_eq!(
                owned(project_id, tenant_id, project),
                want,
                "{project_id:?} {tenant_id:?} {project}"
            );
        }
    }

    #[test]
    fn networks_attach_when_own_or_shared_and_float_only_when_external() {
        use NetworkUse::*;
        // (owned, shared, external, use) → usable
        for (own, shared, external, use_, want) in [
            (true, false, false, Attach, true),
            (false, true, false, Attach, true),
            // Another project's network, neither shared nor external: never.
            (false, false, false, Attach, false),
            (false, false, false, FloatingIp, false),
            // External but not shared: floating IPs yes, ports no.
            (false, false, true, Attach, false),
            (false, false, true, FloatingIp, true),
            // The project's own internal network is no floating-IP pool.
            (true, false, false, FloatingIp, false),
            (true, true, true, FloatingIp, true),
        ] {
            assert_eq!(
                network_usable(own, shared, external, use_),
                want,
                "own {own} shared {shared} external {external} {use_:?}"
            );
        }
    }

    #[test]
    fn images_of_other_projects_only_when_published_or_shared_with_us() {
        let image =
            |owner: &str, visibility: &str| json!({"owner": owner, "visibility": visibility});
        assert_eq!(image_access(&image(P, "private"), P), ImageAccess::Yes);
        assert_eq!(image_access(&image(P, "shared"), P), ImageAccess::Yes);
        assert_eq!(image_access(&image(OTHER, "public"), P), ImageAccess::Yes);
        assert_eq!(
            image_access(&image(OTHER, "community"), P),
            ImageAccess::Yes
        );
        assert_eq!(
            image_access(&image(OTHER, "shared"), P),
            ImageAccess::IfMember
        );
        assert_eq!(image_access(&image(OTHER, "private"), P), ImageAccess::No);
        assert_eq!(
            image_access(&image(OTHER, "unheard-of"), P),
            ImageAccess::No
        );
        assert_eq!(image_access(&json!({"owner": OTHER}), P), ImageAccess::No);
        // The recorded fixture image (public, the admin project's).
        let listed: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/openstack/image-list-tiny.json"
        ))
        .unwrap();
        assert_eq!(image_access(&listed["images"][0], OTHER), ImageAccess::Yes);
    }

    #[test]
    fn private_flavors_only_with_access() {
        assert!(flavor_is_public(&json!({"id": "1"})));
        assert!(flavor_is_public(
            &json!({"id": "1", "os-flavor-access:is_public": true})
        ));
        assert!(!flavor_is_public(
            &json!({"id": "1", "os-flavor-access:is_public": false})
        ));
        let access = json!({"flavor_access": [
            {"flavor_id": "x", "tenant_id": OTHER},
            {"flavor_id": "x", "tenant_id": P}]});
        assert!(flavor_access_lists(&access, P));
        assert!(!flavor_access_lists(&access, "someone-else"));
        assert!(!flavor_access_lists(&json!({"flavor_access": []}), P));
        assert!(!flavor_access_lists(&json!({}), P));
    }

    #[test]
    fn a_security_group_is_ours_only_with_our_owner_in_its_description() {
        let ours = security_group_description("server-1");
        assert!(security_group_is_ours(&ours, "server-1"));
        assert!(!security_group_is_ours(&ours, "server-2"));
        assert!(!security_group_is_ours(
            &security_group_description("server-10"),
            "server-1"
        ));
        assert!(!security_group_is_ours("", "server-1"));
        assert!(!security_group_is_ours("hand-made", "server-1"));
        // Made before the owner was recorded: adopted.
        assert!(security_group_is_ours(LEGACY_SG_DESCRIPTION, "server-1"));
    }
}
