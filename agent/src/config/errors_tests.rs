//! Every value is validated when the file is parsed, and each error names
//! the file, the line and the key.

use std::path::Path;

use super::{Config, ConfigError, LineCol, Overrides};

const HEAD: &str = "[capture]\ninterfaces = [\"veth0\"]\n";

fn load(body: &str) -> Result<Config, ConfigError> {
    Config::from_text(
        Path::new("/etc/lbw.toml"),
        &format!("{HEAD}{body}"),
        Overrides::default(),
    )
}

/// Loads `body` after [`HEAD`], expecting an error at `line` (of the
/// whole file) about `key`; returns its text.
#[track_caller]
fn refused(body: &str, line: usize, key: &str) -> String {
    let err = load(body).expect_err("refused");
    let text = err.to_string();
    let (at, got_key) = match &err {
        ConfigError::Invalid { at, key, path, .. } => {
            assert_eq!(path.as_deref(), Some(Path::new("/etc/lbw.toml")), "{text}");
            (*at, Some(key.clone()))
        }
        ConfigError::Parse { at, key, .. } => (*at, key.clone()),
        ConfigError::Read { .. } => panic!("{text}"),
    };
    assert_eq!(at.map(|a: LineCol| a.line), Some(line), "{text}");
    assert_eq!(got_key.as_deref(), Some(key), "{text}");
    assert!(
        text.starts_with(&format!("config file /etc/lbw.toml, line {line}, column "))
            && text.contains(&format!("`{key}`")),
        "{text}"
    );
    assert!(!text.contains('\n'), "one line: {text}");
    text
}

fn syslog(address: &str) -> String {
    format!(
        "[[groups]]\nname = \"siem\"\nkind = \"syslog\"\n[[groups.endpoints]]\naddress = \"{address}\"\n"
    )
}

fn nats(endpoint: &str) -> String {
    format!("[[groups]]\nname = \"archive\"\nkind = \"nats\"\n[[groups.endpoints]]\n{endpoint}")
}

#[test]
fn collector_addresses_are_checked() {
    // Lines 3-7 are the group; the address is on line 7.
    for bad in [
        "collector.example",
        "collector.example:99999",
        "c:0",
        ":514",
    ] {
        let text = refused(&syslog(bad), 7, "groups[0].endpoints[0].address");
        assert!(text.contains(bad) && text.contains("host:port"), "{text}");
    }
    load(&syslog("collector.example:6514")).unwrap();
    load(&syslog("[::1]:2514")).unwrap();
}

#[test]
fn nats_settings_are_checked() {
    let urls = "urls = [\"nats://127.0.0.1:4222\", \"http://b:4222\"]\n";
    let text = refused(&nats(urls), 7, "groups[0].endpoints[0].urls[1]");
    assert!(text.contains("unknown scheme `http`"), "{text}");

    let good = "urls = [\"nats://127.0.0.1:4222\"]\n";
    let text = refused(
        &nats(&format!("{good}stream = \"LB.W\"\n")),
        8,
        "groups[0].endpoints[0].stream",
    );
    assert!(text.contains("`LB.W`"), "{text}");
    let text = refused(
        &nats(&format!("{good}user = \"agent\"\n")),
        8,
        "groups[0].endpoints[0].user",
    );
    assert!(text.contains("`user` needs `password`"), "{text}");
    refused(
        &nats(&format!("{good}password = \"x\"\n")),
        8,
        "groups[0].endpoints[0].password",
    );
    refused(
        &nats(&format!("{good}subject = \"a..b\"\n")),
        8,
        "groups[0].endpoints[0].subject",
    );
    // The secret is not echoed.
    let text = refused(
        &nats(&format!("{good}password = \"hunter2\"\n")),
        8,
        "groups[0].endpoints[0].password",
    );
    assert!(!text.contains("hunter2"), "{text}");
    load(&nats(&format!(
        "{good}stream = \"LBW\"\nuser = \"a\"\npassword = \"b\"\n"
    )))
    .unwrap();
}

#[test]
fn nats_credential_files_are_read_at_load() {
    let good = "urls = [\"nats://127.0.0.1:4222\"]\n";
    let text = refused(
        &nats(&format!("{good}nkey_seed_file = \"/nonexistent/lbw.nk\"\n")),
        8,
        "groups[0].endpoints[0].nkey_seed_file",
    );
    assert!(
        text.contains("/nonexistent/lbw.nk") && text.contains("cannot read it"),
        "{text}"
    );
    let text = refused(
        &nats(&format!("{good}creds_file = \"/nonexistent/lbw.creds\"\n")),
        8,
        "groups[0].endpoints[0].creds_file",
    );
    assert!(text.contains("cannot read it"), "{text}");
}

#[test]
fn unreadable_ca_files_are_named_once() {
    let ca = "/nonexistent/lbw-ca.pem";
    let text = refused(
        &nats(&format!(
            "urls = [\"tls://127.0.0.1:4222\"]\n[groups.endpoints.tls]\nca_file = \"{ca}\"\n"
        )),
        9,
        "groups[0].endpoints[0].tls.ca_file",
    );
    assert_eq!(text.matches(ca).count(), 1, "{text}");
    assert_eq!(text.matches("cannot read").count(), 1, "{text}");

    let text = refused(
        &format!(
            "{}transport = \"tls\"\n[groups.endpoints.tls]\nca_file = \"{ca}\"\n",
            syslog("c.example:6514")
        ),
        10,
        "groups[0].endpoints[0].tls.ca_file",
    );
    assert_eq!(text.matches(ca).count(), 1, "{text}");
}

#[test]
fn hash_fields_must_be_record_fields() {
    let group = |field: &str| {
        format!(
            "[[groups]]\nname = \"g\"\nkind = \"stdout\"\nstrategy = \"consistent_hash\"\n\
             hash_field = \"{field}\"\nendpoints = [{{}}]\n"
        )
    };
    let text = refused(&group("source.ipp"), 7, "groups[0].hash_field");
    assert!(text.contains("did you mean `source.ip`?"), "{text}");
    let text = refused(&group("nothing"), 7, "groups[0].hash_field");
    assert!(text.contains("no record carries"), "{text}");
    for good in ["source.ip", "network.community_id", "destination.port"] {
        load(&group(good)).unwrap();
    }
    // Left out: reported at the group.
    let text = refused(
        "[[groups]]\nname = \"g\"\nkind = \"stdout\"\nstrategy = \"consistent_hash\"\nendpoints = [{}]\n",
        3,
        "groups[0].hash_field",
    );
    assert!(text.contains("required"), "{text}");
}

#[test]
fn endpoint_keys_and_types_are_located() {
    let text = refused(
        &nats("urls = [\"nats://a:4222\"]\npasswrd = \"x\"\n"),
        8,
        "groups[0].endpoints[0].passwrd",
    );
    assert!(text.contains("unknown field `passwrd`"), "{text}");
    refused(
        &nats("urls = [\"nats://a:4222\"]\nsubject = 5\n"),
        8,
        "groups[0].endpoints[0].subject",
    );
    refused(
        &format!("{}facility = \"local9\"\n", syslog("c:1")),
        8,
        "groups[0].endpoints[0].facility",
    );
}

#[test]
fn other_values_are_located() {
    refused(
        "[flows]\nidle_timeout_secs = 0\n",
        4,
        "flows.idle_timeout_secs",
    );
    let text = refused(
        "[flows]\nidle_timeout_secs = \"soon\"\n",
        4,
        "flows.idle_timeout_secs",
    );
    assert!(text.contains("invalid type"), "{text}");
    refused("bogus = 1\n", 3, "capture.bogus");
    refused(
        "[audit]\nwatch_files = [\"/etc/a\", \"rel\"]\n",
        4,
        "audit.watch_files[1]",
    );
    refused("[spool]\nmax_bytes = 10\n", 4, "spool.max_bytes");
    // A key left at its default is reported at its table.
    refused(
        "[flows]\nidle_timeout_secs = 1\n",
        3,
        "flows.closed_timeout_secs",
    );
}

#[test]
fn syntax_errors_have_a_line() {
    let err = load("[flows\nx = 1\n").unwrap_err().to_string();
    assert!(
        err.starts_with("config file /etc/lbw.toml, line 3, column "),
        "{err}"
    );
}

#[test]
fn command_line_values_are_not_blamed_on_the_file() {
    let err = Config::from_text(
        Path::new("/etc/lbw.toml"),
        HEAD,
        Overrides {
            interfaces: vec!["a/b".into()],
            ..Overrides::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("config: `--iface` has `a/b`"), "{err}");
}

#[test]
fn connector_errors_say_it_once_with_their_chain() {
    // `run` builds connectors again and prints errors with their chain
    // (`{:#}`): a cause that is both in the message and its `source()`
    // would print twice.
    let ca = "/nonexistent/lbw-chain-ca.pem";
    let mut nats = lbwitness_delivery::sink::nats::NatsSettings::new(["tls://127.0.0.1:4222"]);
    nats.tls = Some(lbwitness_delivery::sink::tls::TlsSettings {
        ca_file: Some(ca.into()),
        ..Default::default()
    });
    let Err(e) = lbwitness_delivery::sink::nats::connector(&nats) else {
        panic!("a missing CA file is refused")
    };
    let text = format!("{:#}", anyhow::Error::new(e));
    assert_eq!(text.matches(ca).count(), 1, "{text}");

    let syslog: lbwitness_delivery::sink::syslog::SyslogSettings = toml::from_str(&format!(
        "address = \"c.example:6514\"\ntransport = \"tls\"\n[tls]\nca_file = \"{ca}\"\n"
    ))
    .unwrap();
    let Err(e) = lbwitness_delivery::sink::syslog::connector(&syslog) else {
        panic!("a missing CA file is refused")
    };
    let text = format!("{:#}", anyhow::Error::new(e));
    assert_eq!(text.matches(ca).count(), 1, "{text}");
}

#[test]
fn route_errors_point_at_the_route() {
    // Lines 3-6: the group; 7-9 a good route; the bad route from line 10.
    let with_route = |route: &str| {
        format!(
            "[[groups]]\nname = \"g\"\nkind = \"stdout\"\nendpoints = [{{}}]\n\
             [[routes]]\nname = \"ok\"\ngroups = [\"g\"]\n\
             [[routes]]\nname = \"bad\"\n{route}"
        )
    };
    let text = refused(&with_route("groups = [\"nope\"]\n"), 12, "routes[1].groups");
    assert!(text.contains("`nope`"), "{text}");
    refused(
        &with_route("groups = [\"g\"]\n[routes.match]\n\"source.ipp\" = [\"10.0.0.1\"]\n"),
        14,
        "routes[1].match.\"source.ipp\"",
    );
    let text = refused(
        &with_route("groups = [\"g\"]\n[routes.match]\n\"source.port\" = [\"http\"]\n"),
        14,
        "routes[1].match.\"source.port\"",
    );
    assert!(text.contains("http"), "{text}");
    refused(
        "[[groups]]\nname = \"g\"\nkind = \"stdout\"\nendpoints = [{}]\n\
         [routing]\ndefault = [\"h\"]\n",
        8,
        "routing.default",
    );
}
