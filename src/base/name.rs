//! The names an admin gives things (DISA accounts, standing entries): one rule for all of them.

/// 1 to 64 ASCII letters, digits, `.`, `_` or `-`, after trimming.
pub fn is_plain(name: &str) -> bool {
    let name = name.trim();
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_only() {
        assert!(is_plain("alice") && is_plain(" office-2.main_trunk "));
        assert!(!is_plain("") && !is_plain("a b") && !is_plain("a;b") && !is_plain(&"x".repeat(65)));
    }
}
