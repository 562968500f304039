use super::*;

fn parse(toml_text: &str) -> Result<NatsSettings, String> {
    toml::from_str(toml_text).map_err(|e| e.to_string())
}

#[test]
fn defaults_and_unknown_keys() {
    let s = parse(r#"urls = ["nats://127.0.0.1:4222"]"#).unwrap();
    assert_eq!(s, NatsSettings::new(["nats://127.0.0.1:4222"]));
    assert_eq!(s.subject, "lbwitness.audit");
    let err = parse("urls = []\nsubjct = \"x\"").unwrap_err();
    assert!(err.contains("subjct"), "{err}");
}

#[test]
fn validation_names_the_problem() {
    let with = |f: fn(&mut NatsSettings)| {
        let mut s = NatsSettings::new(["nats://h:4222"]);
        f(&mut s);
        Validated::try_new(&s)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    assert_eq!(with(|_| {}), Ok(()));
    assert!(
        with(|s| s.urls.clear())
            .unwrap_err()
            .contains("at least one")
    );
    assert!(
        with(|s| s.urls.push("ftp://h".into()))
            .unwrap_err()
            .contains("tls://host:port")
    );
    for (subject, why) in [
        ("", "empty"),
        ("a b", "spaces"),
        ("a..b", "empty token"),
        ("a.", "empty token"),
        ("a.>", "wildcards"),
        ("a.*.b", "wildcards"),
        ("$JS.API.X", "reserved"),
    ] {
        let mut s = NatsSettings::new(["h"]);
        s.subject = subject.into();
        let err = Validated::try_new(&s).err().expect(subject).to_string();
        assert!(err.contains(why), "{subject}: {err}");
    }
    assert!(
        with(|s| s.stream = Some("a.b".into()))
            .unwrap_err()
            .contains("stream")
    );
    assert!(with(|s| s.stream = Some(String::new())).is_err());
    assert!(
        with(|s| s.user = Some("u".into()))
            .unwrap_err()
            .contains("needs `password`")
    );
    assert!(
        with(|s| s.password = Some("p".into()))
            .unwrap_err()
            .contains("needs `user`")
    );
    let both = with(|s| {
        s.user = Some("u".into());
        s.password = Some("p".into());
        s.token = Some("t".into());
    });
    assert!(both.unwrap_err().contains("not both"));
}

#[test]
fn tls_table_parses_like_syslogs() {
    let s = parse(
        "urls = [\"nats://a:4222\"]\n[tls]\nca_file = \"/etc/lbw/ca.pem\"\n\
         server_name = \"nats.example\"\nclient_cert = \"/etc/lbw/agent.pem\"\n\
         client_key = \"/etc/lbw/agent.key\"",
    )
    .unwrap();
    let tls = s.tls.unwrap();
    assert_eq!(
        tls.ca_file.as_deref(),
        Some(std::path::Path::new("/etc/lbw/ca.pem"))
    );
    assert_eq!(tls.server_name.as_deref(), Some("nats.example"));
    assert!(tls.client_cert.is_some() && tls.client_key.is_some());
    let err = parse("urls = [\"a\"]\n[tls]\ncafile = \"x\"").unwrap_err();
    assert!(err.contains("cafile"), "{err}");
}

/// A usable CA file, or `None` where the system bundle is missing.
fn system_ca() -> Option<std::path::PathBuf> {
    let path = std::path::Path::new(crate::sink::tls::SYSTEM_CA_FILE);
    path.exists().then(|| path.to_owned())
}

#[test]
fn tls_is_on_with_a_table_or_a_tls_url_and_names_follow_the_host() {
    let plain = Validated::try_new(&NatsSettings::new(["nats://a:4222"])).unwrap();
    assert!(plain.tls.is_none());
    let Some(ca) = system_ca() else { return };
    let by_url = Validated::try_new(&NatsSettings::new(["nats://a:4222", "tls://b:4222"]))
        .unwrap()
        .tls
        .expect("a tls:// URL turns TLS on for the endpoint");
    let learned = ServerAddr {
        host: "10.0.0.9".into(),
        port: 4222,
    };
    assert_eq!(
        by_url.for_server(&learned).unwrap().server_name_text,
        "10.0.0.9"
    );
    let mut s = NatsSettings::new(["nats://a:4222", "nats://b:4222"]);
    s.tls = Some(TlsSettings {
        ca_file: Some(ca.clone()),
        server_name: Some("nats.example".into()),
        ..TlsSettings::default()
    });
    let fixed = Validated::try_new(&s).unwrap().tls.unwrap();
    assert_eq!(
        fixed.for_server(&learned).unwrap().server_name_text,
        "nats.example"
    );
    let mut s = NatsSettings::new(["tls://a:4222"]);
    s.tls = Some(TlsSettings {
        ca_file: Some(ca),
        server_name: Some("bad name!".into()),
        ..TlsSettings::default()
    });
    let err = Validated::try_new(&s).err().unwrap().to_string();
    assert!(err.contains("server_name \"bad name!\""), "{err}");
}

#[test]
fn tls_files_are_read_at_start() {
    let mut s = NatsSettings::new(["nats://a:4222"]);
    s.tls = Some(TlsSettings {
        ca_file: Some("/nonexistent/ca.pem".into()),
        ..TlsSettings::default()
    });
    let err = Validated::try_new(&s).err().unwrap().to_string();
    assert!(
        err.contains("tls://a:4222") && err.contains("/nonexistent/ca.pem"),
        "{err}"
    );
    s.tls = Some(TlsSettings {
        client_cert: Some("/x.pem".into()),
        ..TlsSettings::default()
    });
    let err = Validated::try_new(&s).err().unwrap().to_string();
    assert!(err.contains("client_key"), "{err}");
}

#[test]
fn debug_hides_secrets() {
    let mut s = NatsSettings::new(["h"]);
    s.password = Some("hunter2".into());
    s.token = Some("s3cret".into());
    let text = format!("{s:?}");
    assert!(
        !text.contains("hunter2") && !text.contains("s3cret"),
        "{text}"
    );
}

/// A file holding `contents` under the temp dir, removed on drop.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("lbw-nats-settings-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn nkey_seed_files_are_read_and_checked_at_start() {
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().unwrap();
    let good = TempFile::new("user.nk", &format!("{seed}\n{}\n", user.public_key()));
    let mut s = NatsSettings::new(["nats://a:4222"]);
    s.nkey_seed_file = Some(good.0.clone());
    match Validated::try_new(&s).unwrap().auth {
        Auth::NKey(read) => assert_eq!(read, seed),
        _ => panic!("an NKey seed file gives NKey authentication"),
    }
    assert!(
        !format!("{s:?}").contains(&seed),
        "Debug shows the path only"
    );

    let check = |path: std::path::PathBuf, want: &str| {
        let mut s = NatsSettings::new(["nats://a:4222"]);
        s.nkey_seed_file = Some(path.clone());
        let err = Validated::try_new(&s).err().expect("refused");
        assert_eq!(err.setting(&s), "nkey_seed_file");
        let text = err.to_string();
        assert!(
            text.contains(want) && text.contains(&path.display().to_string()),
            "{text}"
        );
        text
    };
    check("/nonexistent/lbw.nk".into(), "cannot read it");
    let garbage = TempFile::new("garbage.nk", "SUNOTASEED\n");
    check(garbage.0.clone(), "not an NKey seed");
    let empty = TempFile::new("empty.nk", "\n");
    check(empty.0.clone(), "is empty");
    let account = nkeys::KeyPair::new_account();
    let wrong = TempFile::new("account.nk", &account.seed().unwrap());
    let text = check(wrong.0.clone(), "wrong kind");
    assert!(!text.contains(&account.seed().unwrap()), "{text}");
}

#[test]
fn creds_files_are_read_and_checked_at_start() {
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().unwrap();
    let creds = format!(
        "-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.c2ln\n------END NATS USER JWT------\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    );
    let good = TempFile::new("user.creds", &creds);
    let mut s = NatsSettings::new(["nats://a:4222"]);
    s.creds_file = Some(good.0.clone());
    assert!(matches!(
        Validated::try_new(&s).unwrap().auth,
        Auth::Creds(_)
    ));

    let bad = TempFile::new("bad.creds", "just some text\n");
    s.creds_file = Some(bad.0.clone());
    let err = Validated::try_new(&s).err().unwrap();
    assert_eq!(err.setting(&s), "creds_file");
    assert!(
        err.to_string().contains("not a NATS credentials file"),
        "{err}"
    );
    s.creds_file = Some("/nonexistent/lbw.creds".into());
    let err = Validated::try_new(&s).err().unwrap().to_string();
    assert!(err.contains("cannot read it"), "{err}");

    // One way to authenticate at a time.
    s.creds_file = Some(good.0.clone());
    s.token = Some("t".into());
    let err = Validated::try_new(&s).err().unwrap();
    assert_eq!(err.setting(&s), "creds_file");
    assert!(err.to_string().contains("not several"), "{err}");
    s.creds_file = None;
    s.nkey_seed_file = Some(good.0.clone());
    let err = Validated::try_new(&s).err().unwrap();
    assert_eq!(err.setting(&s), "nkey_seed_file");
}
