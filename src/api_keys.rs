//! API keys (`--api-keys FILE` or `SAMSERVE_API_KEYS`, docs/security.md): which tenant a bearer key belongs to.
//!
//! Keys are kept as SHA-256 digests and a presented key is compared with every one of them in constant time, so
//! neither the answer's timing nor a memory dump gives a key away. The file is read again on SIGHUP; a file that
//! no longer parses keeps the keys in force and says why.

use std::path::PathBuf;
use std::sync::RwLock;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::tenant::Tenant;

/// Shorter keys are refused: a key is the whole of a tenant's protection.
pub const MIN_KEY_LENGTH: usize = 16;

struct Entry {
    tenant: Tenant,
    digest: [u8; 32],
}

/// Where the keys come from.
enum Source {
    File(PathBuf),
    /// `SAMSERVE_API_KEYS`: fixed for the life of the process.
    Environment,
}

pub struct ApiKeys {
    source: Source,
    entries: RwLock<Vec<Entry>>,
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Parses `TENANT:KEY` pairs, each with its place ("line 3") for messages, which never show a key.
fn parse<'a>(items: impl Iterator<Item = (String, &'a str)>) -> Result<Vec<Entry>, String> {
    let mut entries: Vec<Entry> = Vec::new();
    for (place, item) in items {
        let (tenant, key) = item.split_once(':').ok_or_else(|| format!("{place}: expected TENANT:KEY"))?;
        let tenant = Tenant::named(tenant.trim()).map_err(|e| format!("{place}: {e}"))?;
        let key = key.trim();
        if key.len() < MIN_KEY_LENGTH || !key.bytes().all(|byte| byte.is_ascii_graphic() && byte != b',') {
            return Err(format!(
                "{place}: the key of {tenant:?} must be at least {MIN_KEY_LENGTH} visible ASCII characters, \
                 without commas"
            ));
        }
        let digest = digest(key);
        if entries.iter().any(|entry| entry.digest == digest) {
            return Err(format!("{place}: the key of {tenant:?} is already given above"));
        }
        entries.push(Entry { tenant, digest });
    }
    if entries.is_empty() {
        return Err("no keys: every request would be refused".to_string());
    }
    Ok(entries)
}

/// A keys file: `TENANT:KEY` per line; blank lines and lines starting with `#` are skipped.
fn parse_file(text: &str) -> Result<Vec<Entry>, String> {
    let lines = text.lines().enumerate().map(|(index, line)| (format!("line {}", index + 1), line.trim()));
    parse(lines.filter(|(_, line)| !line.is_empty() && !line.starts_with('#')))
}

fn read_file(path: &PathBuf) -> Result<Vec<Entry>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("--api-keys {}: {e}", path.display()))?;
    parse_file(&text).map_err(|e| format!("--api-keys {}: {e}", path.display()))
}

impl ApiKeys {
    pub fn from_file(path: PathBuf) -> Result<Self, String> {
        let entries = read_file(&path)?;
        Ok(Self { source: Source::File(path), entries: RwLock::new(entries) })
    }

    /// `SAMSERVE_API_KEYS`: the same pairs, separated by commas.
    pub fn from_list(list: &str) -> Result<Self, String> {
        let items = list.split(',').map(str::trim).filter(|item| !item.is_empty());
        let entries = parse(items.enumerate().map(|(index, item)| (format!("pair {}", index + 1), item)))
            .map_err(|e| format!("SAMSERVE_API_KEYS: {e}"))?;
        Ok(Self { source: Source::Environment, entries: RwLock::new(entries) })
    }

    /// Reads the keys file again (on SIGHUP). On failure the keys in force stay; the error says why.
    pub fn reload(&self) -> Result<usize, String> {
        let Source::File(path) = &self.source else {
            return Err("the keys come from SAMSERVE_API_KEYS, which cannot change while running".to_string());
        };
        let entries = read_file(path)?;
        let count = entries.len();
        *self.entries.write().unwrap_or_else(|p| p.into_inner()) = entries;
        Ok(count)
    }

    /// The tenant a key belongs to. Every entry is compared, in constant time, whatever matches.
    pub fn tenant(&self, key: &str) -> Option<Tenant> {
        let presented = digest(key);
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let mut found = None;
        for entry in entries.iter() {
            if bool::from(entry.digest[..].ct_eq(&presented[..])) {
                found = Some(entry.tenant.clone());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "a-key-of-sixteen-chars";
    const KEY_B: &str = "another:key:with:colons";

    #[test]
    fn a_keys_file_names_tenants_and_skips_comments_and_blank_lines() {
        let text = format!("# team keys\n\nalpha:{KEY_A}\n  beta : {KEY_B}  \nalpha:rotated-key-0123456789\n");
        let entries = parse_file(&text).unwrap();
        assert_eq!(entries.len(), 3);
        let keys = ApiKeys { source: Source::Environment, entries: RwLock::new(entries) };
        assert_eq!(keys.tenant(KEY_A).unwrap().name(), "alpha");
        assert_eq!(keys.tenant(KEY_B).unwrap().name(), "beta");
        assert_eq!(keys.tenant("rotated-key-0123456789").unwrap().name(), "alpha");
        assert!(keys.tenant("not-a-key-at-all-no").is_none());
        assert!(keys.tenant("").is_none());
    }

    #[test]
    fn bad_files_are_refused_with_the_line_and_never_the_key() {
        let cases = [
            ("alpha", "line 1: expected TENANT:KEY"),
            ("al.pha:a-key-of-sixteen-chars", "line 1: \"al.pha\" is not a tenant name"),
            ("alpha:short-secret", "line 1: the key of alpha must be at least 16"),
            ("alpha:a key of sixteen chars", "must be at least 16 visible ASCII"),
            ("# nothing\n", "no keys"),
            ("alpha:a-key-of-sixteen-chars\nbeta:a-key-of-sixteen-chars", "line 2: the key of beta is already given"),
        ];
        for (text, expected) in cases {
            let error = parse_file(text).err().unwrap();
            assert!(error.contains(expected), "{text:?}: {error}");
            assert!(!error.contains("short-secret") && !error.contains("sixteen"), "{error}");
        }
    }

    #[test]
    fn the_environment_list_is_comma_separated() {
        let keys = ApiKeys::from_list(&format!("alpha:{KEY_A}, beta:{KEY_B},")).unwrap();
        assert_eq!(keys.tenant(KEY_B).unwrap().name(), "beta");
        assert!(keys.reload().is_err());
        assert!(ApiKeys::from_list("alpha").err().unwrap().starts_with("SAMSERVE_API_KEYS: pair 1:"));
    }

    #[test]
    fn a_reload_that_fails_keeps_the_keys_in_force() {
        let path = std::env::temp_dir().join(format!("samserve-keys-{}", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, format!("alpha:{KEY_A}\n")).unwrap();
        let keys = ApiKeys::from_file(path.clone()).unwrap();
        std::fs::write(&path, "alpha:short\n").unwrap();
        assert!(keys.reload().unwrap_err().contains("line 1"));
        assert!(keys.tenant(KEY_A).is_some());
        std::fs::write(&path, format!("beta:{KEY_B}\n")).unwrap();
        assert_eq!(keys.reload(), Ok(1));
        assert!(keys.tenant(KEY_A).is_none());
        assert_eq!(keys.tenant(KEY_B).unwrap().name(), "beta");
        std::fs::remove_file(path).unwrap();
    }
}
