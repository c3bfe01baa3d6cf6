//! Image references (`hello`, `hello:v1`, `localhost:5000/team/x@sha256:…`),
//! parsed with the grammar of the distribution reference library so that
//! what kubectl users type for `image:` means the same thing here.

use std::fmt;

/// Why an image reference was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// The reference does not follow the grammar; the text says where.
    #[error("invalid reference format: {0}")]
    InvalidFormat(String),
}

/// Tag or digest of an image.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    /// `:v1` (`latest` when the reference names neither).
    Tag(String),
    /// `@sha256:…`, content-addressed.
    Digest(String),
}

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// Registry host (`localhost:5000`, `ghcr.io`); `None` for wasmkube's own
    /// module store.
    pub registry: Option<String>,
    /// Path below the registry: `hello`, `team/hello`.
    pub repository: String,
    /// Which version of the repository.
    pub reference: Reference,
}

const MAX_NAME_LEN: usize = 255;

fn invalid(msg: impl Into<String>) -> ImageError {
    ImageError::InvalidFormat(msg.into())
}

fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn is_path_component(s: &str) -> bool {
    let b: Vec<char> = s.chars().collect();
    if b.is_empty() || !is_lower_alnum(b[0]) || !b.last().is_some_and(|c| is_lower_alnum(*c)) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_lower_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_lower_alnum(b[i]) {
            i += 1;
        }
        let sep: String = b[start..i].iter().collect();
        let ok = sep == "." || sep == "_" || sep == "__" || sep.chars().all(|c| c == '-');
        if !ok {
            return false;
        }
    }
    true
}

/// `[\w][\w.-]{0,127}`
pub fn is_valid_tag(s: &str) -> bool {
    let mut chars = s.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    first_ok
        && s.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// `algorithm:hex` with an algorithm of `[a-z0-9]+([+._-][a-z0-9]+)*` and at
/// least 32 hex digits (sha256 needs exactly 64).
fn is_valid_digest(s: &str) -> bool {
    let Some((algo, hex)) = s.split_once(':') else {
        return false;
    };
    let algo_ok = !algo.is_empty()
        && algo
            .split(['+', '.', '_', '-'])
            .all(|p| !p.is_empty() && p.chars().all(is_lower_alnum));
    let hex_ok = hex.len() >= 32 && hex.chars().all(|c| c.is_ascii_hexdigit());
    let sha_ok = algo != "sha256"
        || (hex.len() == 64
            && hex
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
    algo_ok && hex_ok && sha_ok
}

/// A registry host: `host[:port]`, host made of DNS-ish labels or `[ipv6]`.
fn is_valid_host(s: &str) -> bool {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || s.starts_with('[') => (h, Some(p)),
        _ => (s, None),
    };
    if let Some(p) = port
        && (p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()))
    {
        return false;
    }
    if host.starts_with('[') && host.ends_with(']') {
        return host.len() > 2
            && host[1..host.len() - 1]
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':');
    }
    !host.is_empty()
        && host.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

impl ImageRef {
    /// Parses an image reference; no tag and no digest means `latest`. A
    /// first path component containing `.` or `:`, or equal to `localhost`,
    /// names a registry.
    pub fn parse(s: &str) -> Result<ImageRef, ImageError> {
        if s.is_empty() {
            return Err(invalid("empty image reference"));
        }
        if s.trim() != s {
            return Err(invalid(format!("{s:?} has leading or trailing whitespace")));
        }
        let (name_and_tag, digest) = match s.split_once('@') {
            Some((n, d)) => {
                if !is_valid_digest(d) {
                    return Err(invalid(format!("invalid digest {d:?}")));
                }
                (n, Some(d))
            }
            None => (s, None),
        };
        // The tag is a ':' after the last '/', so `host:5000/x` has no tag.
        let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_and_tag[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&name_and_tag[..at], Some(&name_and_tag[at + 1..]))
            }
            None => (name_and_tag, None),
        };
        if let Some(t) = tag
            && !is_valid_tag(t)
        {
            return Err(invalid(format!("invalid tag {t:?}")));
        }
        if name.is_empty() {
            return Err(invalid("empty repository name"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(invalid(format!(
                "repository name must not be more than {MAX_NAME_LEN} characters"
            )));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
                if !is_valid_host(first) {
                    return Err(invalid(format!("invalid registry host {first:?}")));
                }
                (Some(first.to_string()), rest)
            }
            _ => (None, name),
        };
        if repository.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(invalid(format!(
                "repository name ({repository}) must be lowercase"
            )));
        }
        if !repository.split('/').all(is_path_component) {
            return Err(invalid(format!("invalid repository name {repository:?}")));
        }
        let reference = match (digest, tag) {
            (Some(d), _) => Reference::Digest(d.to_string()),
            (None, Some(t)) => Reference::Tag(t.to_string()),
            (None, None) => Reference::Tag("latest".to_string()),
        };
        Ok(ImageRef {
            registry,
            repository: repository.to_string(),
            reference,
        })
    }

    /// True when the image lives in wasmkube's own module store (no registry).
    pub fn is_local(&self) -> bool {
        self.registry.is_none()
    }

    /// The tag, if the reference is one.
    pub fn tag(&self) -> Option<&str> {
        match &self.reference {
            Reference::Tag(t) => Some(t),
            Reference::Digest(_) => None,
        }
    }

    /// The digest, if the reference is one.
    pub fn digest(&self) -> Option<&str> {
        match &self.reference {
            Reference::Digest(d) => Some(d),
            Reference::Tag(_) => None,
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(r) = &self.registry {
            write!(f, "{r}/")?;
        }
        f.write_str(&self.repository)?;
        match &self.reference {
            Reference::Tag(t) => write!(f, ":{t}"),
            Reference::Digest(d) => write!(f, "@{d}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn parse(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn missing_tag_means_latest() {
        let r = parse("hello");
        assert_eq!(
            r,
            ImageRef {
                registry: None,
                repository: "hello".into(),
                reference: Reference::Tag("latest".into())
            }
        );
        assert!(r.is_local());
        assert_eq!(r.to_string(), "hello:latest");
    }

    #[test]
    fn tags_and_digests_are_recognised() {
        assert_eq!(parse("hello:v1").reference, Reference::Tag("v1".into()));
        let r = parse(&format!("hello@{DIGEST}"));
        assert_eq!(r.digest(), Some(DIGEST));
        assert_eq!(r.to_string(), format!("hello@{DIGEST}"));
        assert_eq!(
            parse(&format!("hello:v1@{DIGEST}")).digest(),
            Some(DIGEST),
            "a digest wins over a tag"
        );
    }

    #[test]
    fn first_component_is_a_registry_only_when_it_looks_like_a_host() {
        let r = parse("localhost:5000/team/x:1");
        assert_eq!(r.registry.as_deref(), Some("localhost:5000"));
        assert_eq!(r.repository, "team/x");
        assert_eq!(r.tag(), Some("1"));
        assert!(!r.is_local());
        assert_eq!(parse("ghcr.io/a/b").registry.as_deref(), Some("ghcr.io"));
        assert_eq!(parse("localhost/x").registry.as_deref(), Some("localhost"));
        let r = parse("team/x");
        assert_eq!(r.registry, None);
        assert_eq!(r.repository, "team/x");
        let r = parse("localhost:5000/x");
        assert_eq!(r.tag(), Some("latest"), "a port is not a tag");
    }

    #[test]
    fn malformed_references_are_rejected() {
        for bad in [
            "",
            "Hello",
            "hello:",
            "hello:-x",
            "hello@sha256:abc",
            "a//b",
            " hello",
            "hello/",
            "-x",
            "x:v1:v2",
            &format!("hello@sha256:{}", "A".repeat(64)),
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} should fail");
        }
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(
            registry in proptest::option::of("(localhost|[a-z]{1,6}\\.io)(:[0-9]{2,5})?"),
            repo in "[a-z0-9]{1,6}(/[a-z0-9]{1,6}){0,2}",
            tag in "[A-Za-z0-9_][A-Za-z0-9._-]{0,10}",
        ) {
            let r = ImageRef { registry, repository: repo, reference: Reference::Tag(tag) };
            prop_assert_eq!(ImageRef::parse(&r.to_string()), Ok(r));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = ImageRef::parse(&s);
        }
    }
}
