//! Who owns what: the tenant a request acts for (docs/security.md), the keys under which a tenant's images, logits
//! and jobs are stored, and the server secret that image ids are derived with.
//!
//! Isolation comes from storage keys, not from checks after a lookup: tenant B asking for tenant A's id looks up
//! `B.ID`, a key that does not exist, on exactly the path an unknown id takes (same answer, same work, no timing
//! tell). Image ids are keyed hashes (HMAC-SHA256 with the server secret) of the tenant, the model and the bytes,
//! so nobody can compute one from an image they hold.

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The tenant of a request: one named in the API keys, or the anonymous tenant of a server without keys.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Tenant(Arc<str>);

impl Tenant {
    /// Everyone, on a server without API keys.
    pub fn anonymous() -> Self {
        Self(Arc::from(""))
    }

    /// A tenant of the API keys: 1 to 64 ASCII letters, digits, `_` or `-` (it becomes part of storage keys and
    /// folder names, where `.` separates it from the id).
    pub fn named(name: &str) -> Result<Self, String> {
        let valid = (1..=64).contains(&name.len())
            && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
        if valid {
            Ok(Self(Arc::from(name)))
        } else {
            Err(format!("{name:?} is not a tenant name (1 to 64 letters, digits, '_' or '-')"))
        }
    }

    /// The name; empty for the anonymous tenant.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// Where this tenant's object `id` is stored: `TENANT.ID`, or the id itself for the anonymous tenant.
    pub fn scope(&self, id: &str) -> String {
        if self.0.is_empty() { id.to_string() } else { format!("{}.{id}", self.0) }
    }
}

/// The tenant name of a key made by [`Tenant::scope`] (ids hold no dots); empty for the anonymous tenant's.
pub fn owner_of_scoped(key: &str) -> &str {
    key.split_once('.').map_or("", |(owner, _)| owner)
}

impl fmt::Debug for Tenant {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() { formatter.write_str("anonymous") } else { formatter.write_str(&self.0) }
    }
}

/// The server secret image ids are derived with. Replicas sharing a Redis share it (see
/// [`crate::engine::shared::SharedStore::id_secret`]); a server alone draws one at start, as its cache starts empty.
#[derive(Clone)]
pub struct IdSecret([u8; 32]);

impl IdSecret {
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the operating system's random numbers");
        Self(bytes)
    }

    /// The form Redis keeps it in: 64 hex digits.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    pub fn from_hex(text: &str) -> Option<Self> {
        let digits = text.as_bytes();
        if digits.len() != 64 {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
        }
        Some(Self(bytes))
    }

    /// The id of an image uploaded by `tenant` for `model`: the same bytes give the same id for the same tenant
    /// and model (uploads are idempotent), and nothing an outsider can compute.
    pub fn image_id(&self, tenant: &Tenant, model: &str, bytes: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        for part in [tenant.name().as_bytes(), &[0], model.as_bytes(), &[0], bytes] {
            mac.update(part);
        }
        hex(&mac.finalize().into_bytes()[..16])
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

impl fmt::Debug for IdSecret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("IdSecret(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names_cannot_reach_into_another_tenants_keys() {
        assert!(Tenant::named("team-a_1").is_ok());
        for bad in ["", "a.b", "a/b", "a b", "ä", &"x".repeat(65)] {
            assert!(Tenant::named(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Tenant::named("a").unwrap().scope("b.c"), "a.b.c");
        assert_eq!(Tenant::anonymous().scope("0123"), "0123");
    }

    #[test]
    fn image_ids_depend_on_the_secret_the_tenant_the_model_and_the_bytes() {
        let secret = IdSecret::random();
        assert_eq!(IdSecret::from_hex(&secret.to_hex()).unwrap().0, secret.0);
        assert!(IdSecret::from_hex("zz").is_none());
        let (a, b) = (Tenant::named("a").unwrap(), Tenant::named("b").unwrap());
        let id = secret.image_id(&a, "m", b"image");
        assert_eq!(id.len(), 32);
        assert_eq!(id, secret.image_id(&a, "m", b"image"));
        assert_ne!(id, secret.image_id(&b, "m", b"image"));
        assert_ne!(id, secret.image_id(&a, "n", b"image"));
        assert_ne!(id, secret.image_id(&a, "m", b"imagf"));
        assert_ne!(id, IdSecret::random().image_id(&a, "m", b"image"));
    }
}
