//! `[privacy]`: whether records show client addresses or their pseudonyms,
//! and which networks are not clients.

use serde::Deserialize;

use crate::privacy::prefix::Prefix;

/// `[privacy]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyFile {
    /// Show a keyed pseudonym (in `100::/64`) in place of every client
    /// address, in every record. Default off.
    pub pseudonymise_clients: Option<bool>,
    /// Networks that are not clients and are shown as they are: the
    /// backends, and VIPs a failover may move to this host. This host's
    /// own addresses are never pseudonymised.
    pub keep_networks: Option<Vec<String>>,
}

/// `[privacy]`, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrivacySettings {
    /// See [`PrivacyFile::pseudonymise_clients`].
    pub pseudonymise_clients: bool,
    /// See [`PrivacyFile::keep_networks`].
    pub keep_networks: Vec<Prefix>,
}

impl PrivacySettings {
    /// Validates `file`; an error is `(key, problem)`.
    pub fn try_new(file: PrivacyFile) -> Result<Self, (String, String)> {
        let pseudonymise_clients = file.pseudonymise_clients.unwrap_or(false);
        let mut keep_networks = Vec::new();
        for (i, text) in file.keep_networks.unwrap_or_default().iter().enumerate() {
            let key = || format!("privacy.keep_networks[{i}]");
            let prefix: Prefix = text.parse().map_err(|problem| (key(), problem))?;
            if prefix.is_everything() {
                return Err((
                    key(),
                    format!(
                        "is `{text}`, which keeps every address of its family: no client \
                         would be pseudonymised. List the backend networks only, or turn \
                         privacy.pseudonymise_clients off"
                    ),
                ));
            }
            keep_networks.push(prefix);
        }
        if !pseudonymise_clients && !keep_networks.is_empty() {
            return Err((
                "privacy.keep_networks".to_owned(),
                "is set, but privacy.pseudonymise_clients is off, so every address is shown \
                 anyway; set pseudonymise_clients = true, or drop keep_networks"
                    .to_owned(),
            ));
        }
        Ok(Self {
            pseudonymise_clients,
            keep_networks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<PrivacySettings, (String, String)> {
        PrivacySettings::try_new(toml::from_str(text).map_err(|e| (String::new(), e.to_string()))?)
    }

    #[test]
    fn off_by_default() {
        assert_eq!(check("").unwrap(), PrivacySettings::default());
        assert!(!check("").unwrap().pseudonymise_clients);
    }

    #[test]
    fn on_with_backend_networks() {
        let s = check(
            "pseudonymise_clients = true\nkeep_networks = [\"198.51.100.0/24\", \"2001:db8::/32\", \"192.0.2.1\"]",
        )
        .unwrap();
        assert!(s.pseudonymise_clients);
        let shown: Vec<String> = s.keep_networks.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["198.51.100.0/24", "2001:db8::/32", "192.0.2.1/32"]);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key, says) in [
            (
                "pseudonymise_clients = true\nkeep_networks = [\"10.0.0.0/8\", \"10.0.0.1/8\"]",
                "privacy.keep_networks[1]",
                "10.0.0.0/8",
            ),
            (
                "pseudonymise_clients = true\nkeep_networks = [\"0.0.0.0/0\"]",
                "privacy.keep_networks[0]",
                "every address",
            ),
            (
                "pseudonymise_clients = true\nkeep_networks = [\"backends\"]",
                "privacy.keep_networks[0]",
                "not an address",
            ),
            (
                "keep_networks = [\"10.0.0.0/8\"]",
                "privacy.keep_networks",
                "is off",
            ),
        ] {
            let (k, problem) = check(text).unwrap_err();
            assert_eq!(k, key, "{text}");
            assert!(problem.contains(says), "{problem}");
        }
        let (_, problem) = check("pseudonymise = true").unwrap_err();
        assert!(problem.contains("unknown field"), "{problem}");
    }
}
