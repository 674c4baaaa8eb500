//! Bearer tokens for the TCP listener, compared in constant time.

use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The expected token, kept as its SHA-256 so that comparing takes the same time whatever the
/// length or content of the presented one.
#[derive(Clone)]
pub struct Token {
    digest: [u8; 32],
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// Why the token file is refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// It cannot be read.
    #[error("cannot read the token file {}: {source}", .path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// It holds only whitespace.
    #[error("the token file {} is empty", .path.display())]
    Empty {
        /// The file.
        path: std::path::PathBuf,
    },
}

impl Token {
    /// Reads the token from a file (surrounding whitespace ignored; it must not be empty).
    pub fn from_file(path: &Path) -> Result<Token, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Token::new(text.trim()).ok_or_else(|| TokenError::Empty {
            path: path.to_path_buf(),
        })
    }

    /// A token from its text; `None` when it is empty.
    pub fn new(text: &str) -> Option<Token> {
        if text.is_empty() {
            return None;
        }
        Some(Token {
            digest: Sha256::digest(text.as_bytes()).into(),
        })
    }

    /// True when an `Authorization` header value is `Bearer <this token>`.
    pub fn accepts(&self, header: Option<&str>) -> bool {
        let presented = header
            .and_then(|h| {
                let (scheme, rest) = h.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(rest.trim())
            })
            .unwrap_or("");
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let equal: bool = digest.ct_eq(&self.digest).into();
        equal && !presented.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_is_accepted() {
        let t = Token::new("s3cret").unwrap();
        assert!(t.accepts(Some("Bearer s3cret")));
        assert!(t.accepts(Some("bearer s3cret")));
        assert!(!t.accepts(Some("Bearer s3cre")));
        assert!(!t.accepts(Some("Bearer s3cret2")));
        assert!(!t.accepts(Some("Basic s3cret")));
        assert!(!t.accepts(Some("s3cret")));
        assert!(!t.accepts(None));
        assert!(Token::new("").is_none());
    }
}
