//! Member and cluster identities.
//!
//! Ids are derived, not configured, as in etcd: a member's id is a hash of its peer URLs and
//! the cluster token, so every founding member computes the same ids for everyone from the same
//! `--initial-cluster` without talking to anyone; the cluster id is a hash of the founding
//! members' ids. Members added later mix the current time in, so a member re-added with the same
//! URLs after a removal gets a new identity and stale data cannot rejoin under the old one.

use sha2::{Digest, Sha256};

fn hash_to_id(hasher: Sha256) -> u64 {
    let digest = hasher.finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    // 0 means "none" in the Raft protocol (votedFor, leader hints); never hand it out.
    u64::from_be_bytes(bytes).max(1)
}

/// The id of a member with these peer URLs; `salt` is `None` for founding members and the
/// current time (or any fresh value) for members added at runtime.
pub fn member_id(peer_urls: &[String], token: &str, salt: Option<u64>) -> u64 {
    let mut urls: Vec<&str> = peer_urls.iter().map(String::as_str).collect();
    urls.sort_unstable();
    let mut h = Sha256::new();
    for u in urls {
        h.update(u.as_bytes());
        h.update([0]);
    }
    h.update(token.as_bytes());
    if let Some(salt) = salt {
        h.update(salt.to_be_bytes());
    }
    hash_to_id(h)
}

/// The id of a cluster founded by these members.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut h = Sha256::new();
    for id in ids {
        h.update(id.to_be_bytes());
    }
    hash_to_id(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn member_id_is_stable_and_order_independent() {
        let a = member_id(&urls(&["http://a:1", "http://b:1"]), "t", None);
        let b = member_id(&urls(&["http://b:1", "http://a:1"]), "t", None);
        assert_eq!(a, b);
        assert_ne!(a, 0);
    }

    #[test]
    fn token_and_salt_change_the_id() {
        let base = member_id(&urls(&["http://a:1"]), "t", None);
        assert_ne!(base, member_id(&urls(&["http://a:1"]), "u", None));
        assert_ne!(base, member_id(&urls(&["http://a:1"]), "t", Some(7)));
    }

    #[test]
    fn cluster_id_ignores_member_order() {
        assert_eq!(cluster_id(&[3, 1, 2]), cluster_id(&[1, 2, 3]));
        assert_ne!(cluster_id(&[1, 2, 3]), cluster_id(&[1, 2, 4]));
    }
}
