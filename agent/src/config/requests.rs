//! `[requests]`: which processes are the load balancer, how much of each
//! read and write the kernel copies, and what request records may show.

use serde::Deserialize;

use crate::requests::{http::QueryMode, records::Privacy};

/// The load balancers traced unless the config names others.
pub const DEFAULT_PROCESSES: &[&str] = &["haproxy", "nginx", "envoy"];

/// Bytes the kernel copies from each read and write by default. A request
/// head as wrk, curl or a browser without cookies sends it fits (80-400
/// bytes); a head that does not fit loses that connection's framing
/// (counted), never a wrong record.
pub const DEFAULT_CAPTURE_BYTES: u32 = 256;

/// Most bytes per read or write the kernel programs can copy.
pub const MAX_CAPTURE_BYTES: u32 = 1024;

/// The request events' ring buffer: 8 MiB, about 6 000 requests (1-1.5 KB
/// of events each) the agent can fall behind by before the kernel drops.
pub const DEFAULT_RING_BUFFER_BYTES: u32 = 8 << 20;

/// `requests.query` as written.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueryFile {
    /// [`QueryMode::None`].
    None,
    /// [`QueryMode::Keys`].
    Keys,
    /// [`QueryMode::All`].
    All,
}

/// `[requests]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestsFile {
    /// Capture requests at all. Default on.
    pub enabled: Option<bool>,
    /// Executable names (matched against the executable's file name) or
    /// absolute paths of the load-balancer processes. Default haproxy,
    /// nginx and envoy, unless `cgroups` is given.
    pub processes: Option<Vec<String>>,
    /// cgroups whose processes (and those of every cgroup below) are the
    /// load balancer, as `/proc/<pid>/cgroup` and `systemctl status` show
    /// them: `/system.slice/haproxy.service`. Default none.
    pub cgroups: Option<Vec<String>>,
    /// Bytes copied from each read and write, 64 to 1024.
    pub capture_bytes: Option<u32>,
    /// The request events' ring buffer, a power of two.
    pub ring_buffer_bytes: Option<u32>,
    /// `none` (default), `keys` or `all`: what of a query string a record keeps.
    pub query: Option<QueryFile>,
    /// `url.path` is cut to this many bytes (default 512).
    pub max_path_bytes: Option<usize>,
    /// `user_agent.original` is cut to this many bytes (default 256).
    pub max_user_agent_bytes: Option<usize>,
    /// Exact mode: the load balancer adds `X-LBW: <client ip>:<client
    /// port>[:...]` to every request it forwards (README, "Exact mode"),
    /// and a request maps only to the backend request carrying its
    /// client's address. Default off.
    pub exact_tag: Option<bool>,
    /// Absolute paths of the libssl builds to probe for TLS plaintext
    /// (e.g. a load balancer's own OpenSSL); default: the system's
    /// `libssl.so.3` where the dynamic loader finds it.
    pub tls_libraries: Option<Vec<String>>,
}

/// `[requests]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestSettings {
    /// Whether requests are captured.
    pub enabled: bool,
    /// See [`RequestsFile::processes`].
    pub processes: Vec<String>,
    /// See [`RequestsFile::cgroups`], without trailing `/`.
    pub cgroups: Vec<String>,
    /// See [`RequestsFile::capture_bytes`].
    pub capture_bytes: u32,
    /// See [`RequestsFile::ring_buffer_bytes`].
    pub ring_buffer_bytes: u32,
    /// What request records may show.
    pub privacy: Privacy,
    /// See [`RequestsFile::exact_tag`].
    pub exact_tag: bool,
    /// See [`RequestsFile::tls_libraries`]; empty for the default.
    pub tls_libraries: Vec<std::path::PathBuf>,
}

impl RequestSettings {
    /// Validates `file`; an error is `(key, problem)`.
    pub fn try_new(file: RequestsFile) -> Result<Self, (&'static str, String)> {
        let cgroups = file
            .cgroups
            .unwrap_or_default()
            .into_iter()
            .map(|c| cgroup(&c).map_err(|why| ("requests.cgroups", format!("has `{c}`: {why}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let processes = file.processes.unwrap_or_else(|| {
            if cgroups.is_empty() {
                DEFAULT_PROCESSES.iter().map(|s| (*s).to_owned()).collect()
            } else {
                Vec::new()
            }
        });
        for p in &processes {
            let path_like = p.contains('/');
            if p.is_empty() || (path_like && !p.starts_with('/')) || p.contains('\0') {
                return Err((
                    "requests.processes",
                    format!("has `{p}`: give an executable's file name or its absolute path"),
                ));
            }
        }
        let tls_libraries = file.tls_libraries.unwrap_or_default();
        if let Some(bad) = tls_libraries
            .iter()
            .find(|p| !p.starts_with('/') || p.contains('\0'))
        {
            return Err((
                "requests.tls_libraries",
                format!("has `{bad}`: give the library's absolute path"),
            ));
        }
        let capture_bytes = file.capture_bytes.unwrap_or(DEFAULT_CAPTURE_BYTES);
        if !(64..=MAX_CAPTURE_BYTES).contains(&capture_bytes) {
            return Err((
                "requests.capture_bytes",
                format!("is {capture_bytes}; allowed 64 to {MAX_CAPTURE_BYTES}"),
            ));
        }
        let ring_buffer_bytes = file.ring_buffer_bytes.unwrap_or(DEFAULT_RING_BUFFER_BYTES);
        if !ring_buffer_bytes.is_power_of_two() || !(65_536..=1 << 30).contains(&ring_buffer_bytes)
        {
            return Err((
                "requests.ring_buffer_bytes",
                format!("is {ring_buffer_bytes}; must be a power of two from 65536 to 1073741824"),
            ));
        }
        let bounded = |v: Option<usize>, default: usize, key: &'static str| {
            let v = v.unwrap_or(default);
            if (1..=8192).contains(&v) {
                Ok(v)
            } else {
                Err((key, format!("is {v}; allowed 1 to 8192")))
            }
        };
        Ok(Self {
            tls_libraries: tls_libraries.into_iter().map(Into::into).collect(),
            exact_tag: file.exact_tag.unwrap_or(false),
            enabled: file.enabled.unwrap_or(true),
            processes,
            cgroups,
            capture_bytes,
            ring_buffer_bytes,
            privacy: Privacy {
                query: match file.query {
                    None | Some(QueryFile::None) => QueryMode::None,
                    Some(QueryFile::Keys) => QueryMode::Keys,
                    Some(QueryFile::All) => QueryMode::All,
                },
                max_path_bytes: bounded(file.max_path_bytes, 512, "requests.max_path_bytes")?,
                max_user_agent_bytes: bounded(
                    file.max_user_agent_bytes,
                    256,
                    "requests.max_user_agent_bytes",
                )?,
            },
        })
    }
}

/// A configured cgroup path, normalised (no trailing `/`), or why not.
fn cgroup(c: &str) -> Result<String, &'static str> {
    let trimmed = c.trim_end_matches('/');
    if !c.starts_with('/') || c.contains('\0') {
        return Err(
            "give the path as /proc/<pid>/cgroup shows it, e.g. /system.slice/haproxy.service",
        );
    }
    if trimmed.is_empty() {
        return Err(
            "the root cgroup holds every process on the host, the agent's too; name the load balancer's own",
        );
    }
    if trimmed.starts_with("/sys/fs/cgroup/") {
        return Err(
            "give the path below the cgroup mount, as /proc/<pid>/cgroup shows it, without /sys/fs/cgroup",
        );
    }
    if trimmed
        .split('/')
        .skip(1)
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err("has an empty, `.` or `..` component");
    }
    Ok(trimmed.to_owned())
}

impl Default for RequestSettings {
    fn default() -> Self {
        Self::try_new(RequestsFile::default())
            .unwrap_or_else(|_| unreachable!("defaults are valid"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_trace_the_usual_load_balancers_privately() {
        let s = RequestSettings::default();
        assert!(s.enabled);
        assert_eq!(s.processes, ["haproxy", "nginx", "envoy"]);
        assert_eq!(s.capture_bytes, 256);
        assert_eq!(s.privacy.query, QueryMode::None);
    }

    #[test]
    fn cgroups_alone_trace_only_their_processes() {
        let s = RequestSettings::try_new(RequestsFile {
            cgroups: Some(vec!["/system.slice/haproxy.service/".into()]),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.cgroups, ["/system.slice/haproxy.service"]);
        assert!(s.processes.is_empty(), "no default names beside cgroups");
        let both = RequestSettings::try_new(RequestsFile {
            cgroups: Some(vec!["/lb.slice".into()]),
            processes: Some(vec!["haproxy".into()]),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(both.processes, ["haproxy"]);
    }

    #[test]
    fn bad_values_name_their_key() {
        let bad = [
            RequestsFile {
                capture_bytes: Some(2048),
                ..Default::default()
            },
            RequestsFile {
                processes: Some(vec!["bin/haproxy".into()]),
                ..Default::default()
            },
            RequestsFile {
                ring_buffer_bytes: Some(100_000),
                ..Default::default()
            },
            RequestsFile {
                max_path_bytes: Some(0),
                ..Default::default()
            },
            RequestsFile {
                tls_libraries: Some(vec!["libssl.so.3".into()]),
                ..Default::default()
            },
            RequestsFile {
                cgroups: Some(vec!["system.slice/haproxy.service".into()]),
                ..Default::default()
            },
            RequestsFile {
                cgroups: Some(vec!["/".into()]),
                ..Default::default()
            },
            RequestsFile {
                cgroups: Some(vec!["/sys/fs/cgroup/system.slice".into()]),
                ..Default::default()
            },
            RequestsFile {
                cgroups: Some(vec!["/a/../b".into()]),
                ..Default::default()
            },
        ];
        let keys: Vec<_> = bad
            .into_iter()
            .map(|f| RequestSettings::try_new(f).unwrap_err().0)
            .collect();
        assert_eq!(
            keys,
            [
                "requests.capture_bytes",
                "requests.processes",
                "requests.ring_buffer_bytes",
                "requests.max_path_bytes",
                "requests.tls_libraries",
                "requests.cgroups",
                "requests.cgroups",
                "requests.cgroups",
                "requests.cgroups"
            ]
        );
    }
}
