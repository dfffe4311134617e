//! S3 notification keys arrive form-URL-encoded: `+` is a space and `%2B` a plus.

use percent_encoding::percent_decode;

/// Why a key from a notification could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("object key {raw:?} is not valid UTF-8 once decoded")]
pub struct KeyError {
    pub raw: String,
}

/// Decodes a key as S3 puts it in event notifications.
pub fn decode_key(raw: &str) -> Result<String, KeyError> {
    // `+` must become a space before percent-decoding, or a literal `%2B` would turn into a space too.
    let spaced = raw.replace('+', " ");
    percent_decode(spaced.as_bytes())
        .decode_utf8()
        .map(|key| key.into_owned())
        .map_err(|_| KeyError {
            raw: raw.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plus_is_space_and_encoded_plus_is_plus() {
        assert_eq!(decode_key("a+b%2Bc").unwrap(), "a b+c");
    }

    #[test]
    fn multibyte_and_reserved_characters() {
        assert_eq!(
            decode_key("docs/2024+annual+report%2Bq4%E6%97%A5%E6%9C%AC.jsonl").unwrap(),
            "docs/2024 annual report+q4日本.jsonl"
        );
        assert_eq!(decode_key("x%3Dy%26z%2F%25").unwrap(), "x=y&z/%");
    }

    #[test]
    fn plain_key_unchanged() {
        assert_eq!(decode_key("docs/faq.jsonl").unwrap(), "docs/faq.jsonl");
    }

    #[test]
    fn malformed_escapes_are_kept_literally() {
        // S3 never sends these, but a hand-written event might: keep the text rather than fail.
        assert_eq!(decode_key("100%+sure%zz").unwrap(), "100% sure%zz");
    }

    #[test]
    fn invalid_utf8_is_an_error_naming_the_key() {
        let err = decode_key("bad%FF").unwrap_err();
        assert!(err.to_string().contains("bad%FF"));
    }
}
