//! Flag conventions shared with the reference scripts: `--learn_sigma True` style booleans.

/// Parses a boolean as the reference's `str2bool` does (`True`, `true`, `yes`, `1`, ...).
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "1" => Ok(true),
        "false" | "f" | "no" | "n" | "0" => Ok(false),
        _ => Err(format!("{s:?} is not a boolean; use True or False")),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_bool;

    #[test]
    fn reference_spellings_are_accepted() {
        assert_eq!(parse_bool("True"), Ok(true));
        assert_eq!(parse_bool("false"), Ok(false));
        assert_eq!(parse_bool("1"), Ok(true));
        assert!(parse_bool("maybe").unwrap_err().contains("maybe"));
    }
}
