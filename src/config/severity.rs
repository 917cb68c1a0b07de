//! Alert severity: the five levels Matano and Panther share, plus `notice`.

use serde::Deserialize;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Notice,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 6] = [
        Severity::Info,
        Severity::Notice,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Notice => "notice",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        let lower = s.trim().to_ascii_lowercase();
        Severity::ALL.into_iter().find(|v| v.as_str() == lower)
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_serde_agree_for_every_level() {
        for level in Severity::ALL {
            let yaml: Severity = serde_yaml::from_str(level.as_str()).unwrap();
            assert_eq!(yaml, level);
            assert_eq!(Severity::parse(&level.as_str().to_uppercase()), Some(level));
            assert_eq!(serde_json::to_value(level).unwrap(), level.as_str());
        }
        assert_eq!(Severity::parse("urgent"), None);
    }

    #[test]
    fn levels_are_ordered_by_urgency() {
        assert!(Severity::Info < Severity::Notice && Severity::High < Severity::Critical);
    }
}
