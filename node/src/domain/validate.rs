//! Input rules shared by every command. Each violation is a typed error naming
//! the field and the allowed range.

use super::error::{invalid, DomainError};

pub const MAX_PARTITIONS: u32 = 65_536;
pub const MIN_TTL_MS: u64 = 1_000;
pub const MAX_TTL_MS: u64 = 300_000;
pub const MAX_KEY_BYTES: usize = 1024;
pub const MAX_WORKER_ID_BYTES: usize = 253;
pub const MAX_WEIGHT: u32 = 10_000;
pub const MAX_LABELS: usize = 32;
pub const MAX_HANDOFF_TIMEOUT_MS: u64 = 3_600_000;
pub const MAX_REJOIN_GRACE_MS: u64 = 3_600_000;
pub const MAX_TOMBSTONE_TTL_MS: u64 = 365 * 24 * 3_600_000;

/// `[a-z0-9][a-z0-9-]{0,62}`.
pub fn group_name(name: &str) -> Result<(), DomainError> {
    let rule = "1 to 63 characters of a-z, 0-9 and '-', starting with a letter or digit";
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !first_ok || !rest_ok || name.len() > 63 {
        return Err(invalid("group name", name, rule));
    }
    Ok(())
}

/// 1 to 253 bytes of printable ASCII without spaces (host and pod names fit).
pub fn worker_id(id: &str) -> Result<(), DomainError> {
    if id.is_empty() || id.len() > MAX_WORKER_ID_BYTES || !id.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(invalid(
            "worker id",
            id,
            format!("1 to {MAX_WORKER_ID_BYTES} bytes of printable ASCII, no spaces"),
        ));
    }
    Ok(())
}

pub fn partitions(count: u32) -> Result<(), DomainError> {
    if count == 0 || count > MAX_PARTITIONS {
        return Err(invalid(
            "partition count",
            count,
            format!("1 to {MAX_PARTITIONS}"),
        ));
    }
    Ok(())
}

pub fn ttl_ms(field: &'static str, ttl: u64) -> Result<(), DomainError> {
    if !(MIN_TTL_MS..=MAX_TTL_MS).contains(&ttl) {
        return Err(invalid(field, format!("{ttl} ms"), "1 s to 300 s"));
    }
    Ok(())
}

pub fn key(key: &str) -> Result<(), DomainError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(invalid("key", key, format!("1 to {MAX_KEY_BYTES} bytes")));
    }
    Ok(())
}

pub fn weight(weight: u32) -> Result<(), DomainError> {
    if weight == 0 || weight > MAX_WEIGHT {
        return Err(invalid("weight", weight, format!("1 to {MAX_WEIGHT}")));
    }
    Ok(())
}

pub fn labels(labels: &std::collections::BTreeMap<String, String>) -> Result<(), DomainError> {
    if labels.len() > MAX_LABELS {
        return Err(invalid(
            "labels",
            labels.len(),
            format!("at most {MAX_LABELS} labels"),
        ));
    }
    for (k, v) in labels {
        if k.is_empty() || k.len() > 63 || !k.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid("label name", k, "1 to 63 bytes of printable ASCII"));
        }
        if v.len() > 253 || v.chars().any(char::is_control) {
            return Err(invalid(
                "label value",
                v,
                "at most 253 bytes, no control characters",
            ));
        }
    }
    Ok(())
}

pub fn range_ms(field: &'static str, value: u64, min: u64, max: u64) -> Result<(), DomainError> {
    if !(min..=max).contains(&value) {
        return Err(invalid(
            field,
            format!("{value} ms"),
            format!("{min} ms to {max} ms"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names() {
        for ok in ["a", "mail-sync", "0", "a-b-c-1", &"a".repeat(63)] {
            assert_eq!(group_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "-a", "A", "mail_sync", "a.b", &"a".repeat(64), "é"] {
            let err = group_name(bad).expect_err(bad).to_string();
            assert!(err.contains("group name") && err.contains("a-z"), "{err}");
        }
    }

    #[test]
    fn worker_ids_keys_and_ranges() {
        assert!(worker_id("pod-7.mail-sync").is_ok());
        assert!(worker_id("has space").is_err());
        assert!(worker_id(&"w".repeat(254)).is_err());
        assert!(worker_id("").is_err());
        assert!(key(&"k".repeat(1024)).is_ok());
        let err = key(&"k".repeat(1025)).expect_err("too long").to_string();
        assert!(
            err.contains("1025 bytes") && err.contains("1 to 1024 bytes"),
            "{err}"
        );
        assert!(
            partitions(65_536).is_ok() && partitions(65_537).is_err() && partitions(0).is_err()
        );
        let err = ttl_ms("lease TTL", 999).expect_err("short").to_string();
        assert!(
            err.contains("lease TTL") && err.contains("1 s to 300 s"),
            "{err}"
        );
        assert!(weight(0).is_err() && weight(1).is_ok());
    }
}
