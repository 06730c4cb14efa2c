//! Platforms (os, architecture, variant) in OCI's normalised spelling.
//!
//! One normaliser serves both sides of platform-aware placement: the node
//! describing itself and the image index describing what it supports. The
//! rules follow containerd's `platforms.Normalize`: `x86_64` is `amd64`,
//! `aarch64` is `arm64` (variant `v8`), `armv7l` is `arm` variant `v7`,
//! `i686` is `386`. Matching is strict about variants: an `arm/v7` image never
//! runs on an `arm64` node, and an `arm/v6` image is not offered to `arm/v7`
//! nodes unless the caller opts into compatible variants.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A normalised platform. `variant` is empty when the architecture has none.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: String,
}

impl Platform {
    /// Builds a platform from raw (possibly un-normalised) names.
    pub fn new(os: &str, architecture: &str, variant: &str) -> Platform {
        let os = normalize_os(os);
        let (architecture, variant) = normalize_arch(architecture, variant);
        Platform { os, architecture, variant }
    }

    /// The platform this binary was compiled for, normalised.
    pub fn host() -> Platform {
        let arch = host_arch(std::env::consts::ARCH, cfg!(target_endian = "little"));
        // 32-bit ARM builds for Raspberry Pi are armv7 hard-float.
        let variant = if arch == "arm" { "v7" } else { "" };
        Platform::new(std::env::consts::OS, arch, variant)
    }

    /// Parses `os/arch[/variant]`, e.g. `linux/arm/v7`.
    pub fn parse(s: &str) -> Result<Platform, PlatformError> {
        let mut parts = s.split('/');
        let os = parts.next().filter(|p| !p.is_empty());
        let arch = parts.next().filter(|p| !p.is_empty());
        let variant = parts.next().unwrap_or("");
        match (os, arch, parts.next()) {
            (Some(os), Some(arch), None) => Ok(Platform::new(os, arch, variant)),
            _ => Err(PlatformError::Malformed(s.to_string())),
        }
    }

    /// Whether an image built for `self` runs on a node of platform `node`.
    /// An empty architecture in `self` means "any architecture of this os"
    /// (Swarm writes such entries for images whose index omits it).
    pub fn runs_on(&self, node: &Platform) -> bool {
        if !self.os.is_empty() && self.os != node.os {
            return false;
        }
        if self.architecture.is_empty() {
            return true;
        }
        self.architecture == node.architecture && self.variant == node.variant
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// Errors from parsing a platform string.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlatformError {
    #[error("malformed platform {0:?}: expected os/arch[/variant], e.g. linux/arm/v7")]
    Malformed(String),
}

/// Rust's `target_arch` does not say the byte order: `powerpc64` covers
/// ppc64le and `mips64` covers mips64el, which OCI spells differently.
fn host_arch(arch: &str, little_endian: bool) -> &str {
    match arch {
        "powerpc64" if little_endian => "ppc64le",
        "powerpc64" => "ppc64",
        "mips64" if little_endian => "mips64le",
        "mips" if little_endian => "mipsle",
        "loongarch64" => "loong64",
        other => other,
    }
}

fn normalize_os(os: &str) -> String {
    let os = os.to_ascii_lowercase();
    match os.as_str() {
        "macos" => "darwin".to_string(),
        _ => os,
    }
}

fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant.to_ascii_lowercase();
    let (a, v): (&str, &str) = match arch.as_str() {
        "x86_64" | "x86-64" | "amd64" => ("amd64", if variant == "v1" { "" } else { &variant }),
        "i386" | "i486" | "i586" | "i686" | "x86" | "386" => ("386", ""),
        "aarch64" | "arm64" => ("arm64", if variant.is_empty() || variant == "8" { "v8" } else { &variant }),
        "armhf" => ("arm", "v7"),
        "armel" => ("arm", "v6"),
        "armv5l" | "armv5tel" => ("arm", "v5"),
        "armv6l" => ("arm", "v6"),
        "armv7l" | "armv7" => ("arm", "v7"),
        "armv8l" => ("arm", "v8"),
        "arm" => (
            "arm",
            match variant.as_str() {
                "" | "7" => "v7",
                "5" => "v5",
                "6" => "v6",
                "8" => "v8",
                other => other,
            },
        ),
        "mips64el" | "mips64le" => ("mips64le", ""),
        "mipsel" | "mipsle" => ("mipsle", ""),
        "powerpc64le" | "ppc64le" => ("ppc64le", ""),
        "powerpc64" | "ppc64" => ("ppc64", ""),
        "s390x" => ("s390x", ""),
        "riscv64" => ("riscv64", ""),
        other => (other, &variant),
    };
    (a.to_string(), v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expect: &str) {
        assert_eq!(Platform::parse(input).unwrap().to_string(), expect, "input {input}");
    }

    #[test]
    fn normalises_like_containerd() {
        check("linux/x86_64", "linux/amd64");
        check("linux/aarch64", "linux/arm64/v8");
        check("linux/arm64", "linux/arm64/v8");
        check("linux/armv7l", "linux/arm/v7");
        check("linux/arm", "linux/arm/v7");
        check("linux/arm/v6", "linux/arm/v6");
        check("linux/i686", "linux/386");
        check("linux/mips64el", "linux/mips64le");
        check("linux/powerpc64le", "linux/ppc64le");
        check("linux/powerpc64", "linux/ppc64");
        check("linux/mipsel", "linux/mipsle");
        check("linux/mips64", "linux/mips64");
        check("Linux/S390X", "linux/s390x");
    }

    /// What `shoal version` and the node description report, per build
    /// target; targets/qemu-test.sh runs this on each architecture.
    #[test]
    fn host_is_the_build_target() {
        let expect = if cfg!(target_arch = "x86_64") {
            "linux/amd64"
        } else if cfg!(target_arch = "aarch64") {
            "linux/arm64/v8"
        } else if cfg!(target_arch = "x86") {
            "linux/386"
        } else if cfg!(all(target_arch = "mips64", target_endian = "little")) {
            "linux/mips64le"
        } else if cfg!(all(target_arch = "powerpc64", target_endian = "little")) {
            "linux/ppc64le"
        } else if cfg!(all(target_arch = "powerpc64", target_endian = "big")) {
            "linux/ppc64"
        } else if cfg!(target_arch = "s390x") {
            "linux/s390x"
        } else if cfg!(target_arch = "arm") {
            "linux/arm/v7"
        } else {
            return;
        };
        if cfg!(target_os = "linux") {
            assert_eq!(Platform::host().to_string(), expect);
        }
    }

    #[test]
    fn variants_are_strict() {
        let v7 = Platform::parse("linux/arm/v7").unwrap();
        let v6 = Platform::parse("linux/arm/v6").unwrap();
        let arm64 = Platform::parse("linux/arm64").unwrap();
        assert!(!v7.runs_on(&arm64));
        assert!(!arm64.runs_on(&v7));
        assert!(!v6.runs_on(&v7));
        assert!(v7.runs_on(&v7));
        let any_linux = Platform { os: "linux".into(), ..Platform::default() };
        assert!(any_linux.runs_on(&arm64));
    }

    #[test]
    fn host_arch_accounts_for_byte_order() {
        assert_eq!(host_arch("powerpc64", true), "ppc64le");
        assert_eq!(host_arch("powerpc64", false), "ppc64");
        assert_eq!(host_arch("mips64", true), "mips64le");
        assert_eq!(host_arch("mips64", false), "mips64");
        assert_eq!(host_arch("s390x", false), "s390x");
        assert_eq!(host_arch("x86_64", true), "x86_64");
        let host = Platform::host();
        assert!(!host.architecture.is_empty());
        assert_eq!(Platform::parse(&host.to_string()).unwrap(), host);
    }

    #[test]
    fn malformed_is_an_error() {
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("/amd64").is_err());
        assert!(Platform::parse("linux/arm/v7/x").is_err());
    }
}
