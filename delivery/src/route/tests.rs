//! Router tests: config parsing and refusals, every field against the
//! record's own JSON, and random routes against a brute-force reference
//! that reads the serialised record.

use std::{net::IpAddr, time::Instant};

use lbwitness_trail::record::{
    Endpoint, Event, Ingress, Interface, Network, Observer, Vlan,
    audit::{File, Process, User},
    samples,
};
use proptest::prelude::*;

use super::*;

fn groups(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// The example from issue #4, with the actions spelled as records spell them.
const EXAMPLE: &str = r#"
[[routes]]
name = "security"
groups = ["siem"]
[routes.match]
"event.action" = ["tcp-rst", "config-reload", "gap", "agent-start", "agent-stop", "file-change", "key-rotation"]

[[routes]]
name = "web"
groups = ["siem", "bus"]
[routes.match]
"destination.port" = [443, "8000-8099"]
"source.ip" = ["10.0.0.0/8", "2001:db8::/32"]
"event.kind" = "event"

[routing]
default = ["archive"]
"#;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    #[serde(default)]
    routes: Vec<RouteFile>,
    routing: RoutingFile,
}

fn router(toml_text: &str, names: &[&str]) -> Result<Router, RouteError> {
    let doc: Doc = toml::from_str(toml_text).expect("test TOML parses");
    Router::try_new(&doc.routes, &doc.routing, &groups(names))
}

fn flow(src: [u8; 4], dst_port: u16) -> Record {
    samples::flow(src.into(), dst_port)
}

#[test]
fn example_config_routes_as_documented() {
    let r = router(EXAMPLE, &["archive", "siem", "bus"]).unwrap();
    assert!(r.warnings().is_empty(), "{:?}", r.warnings());
    let (archive, siem, bus) = (1, 2, 4);
    // Flow from 10/8 to 443: the web route (siem + bus), not security.
    assert_eq!(r.route(&flow([10, 1, 2, 3], 443)), siem | bus);
    assert_eq!(r.route(&flow([10, 1, 2, 3], 8050)), siem | bus);
    // Wrong source or port: no route, so the default.
    assert_eq!(r.route(&flow([192, 0, 2, 1], 443)), archive);
    assert_eq!(r.route(&flow([10, 1, 2, 3], 8100)), archive);
    // An RST from 10/8 to 443 matches both routes: the union.
    let mut rst = samples::lifecycle("tcp-rst");
    rst.source.as_mut().unwrap().ip = "10.9.9.9".parse().unwrap();
    rst.destination.as_mut().unwrap().port = Some(443);
    assert_eq!(r.route(&rst), siem | bus);
    assert_eq!(r.route(&samples::lifecycle("tcp-rst")), siem);
    assert_eq!(r.route(&samples::audit("key-rotation")), siem);
    assert_eq!(r.route(&samples::audit("checkpoint")), archive);
}

#[test]
fn a_route_without_match_takes_everything() {
    let text = "[[routes]]\nname = \"all\"\ngroups = [\"b\"]\n[routing]\ndefault = [\"a\"]\n";
    let r = router(text, &["a", "b"]).unwrap();
    assert_eq!(r.route(&flow([1, 2, 3, 4], 1)), 2);
    assert_eq!(r.default_mask(), 1);
}

#[test]
fn misspelt_values_warn() {
    let text = r#"
[[routes]]
name = "security"
groups = ["siem"]
[routes.match]
"event.action" = ["connection-reset", "gap"]
"event.kind" = "alert"
[routing]
default = ["siem"]
"#;
    let r = router(text, &["siem"]).unwrap();
    let values: Vec<_> = r.warnings().iter().map(|w| w.value.as_str()).collect();
    assert_eq!(values, ["connection-reset", "alert"]);
    let text = r.warnings()[0].to_string();
    assert!(
        text.contains("route `security`") && text.contains("tcp-rst"),
        "{text}"
    );
}

/// Each refusal, with the words the user needs in its message.
#[test]
fn invalid_configs_are_refused_with_the_place() {
    let route = |m: &str| {
        format!(
            "[[routes]]\nname = \"r\"\ngroups = [\"a\"]\n[routes.match]\n{m}\n[routing]\ndefault = [\"a\"]\n"
        )
    };
    let cases: Vec<(String, Vec<&str>, &str)> = vec![
        (
            route("\"event.colour\" = \"x\""),
            vec!["a"],
            "`event.colour` is not a field",
        ),
        (
            route("\"event.action\" = []"),
            vec!["a"],
            "match key `event.action` has no values",
        ),
        (
            route("\"source.ip\" = \"10.0.0.0/40\""),
            vec!["a"],
            "`source.ip`: \"10.0.0.0/40\" has a prefix length",
        ),
        (
            route("\"source.ip\" = 10"),
            vec!["a"],
            "must be a quoted address",
        ),
        (
            route("\"destination.port\" = 70000"),
            vec!["a"],
            "`destination.port`: 70000 is not a port",
        ),
        (
            route("\"destination.port\" = \"9-1\""),
            vec!["a"],
            "low end 9 is above",
        ),
        (
            route(""),
            vec!["b"],
            "route `r`: no collector group is named `a`; defined groups: b",
        ),
        (route(""), vec!["a", "a"], "group `a` is defined twice"),
        (
            "[routing]\ndefault = []\n".into(),
            vec!["a"],
            "`routing.default` is empty",
        ),
        (
            "[routing]\ndefault = [\"z\"]\n".into(),
            vec!["a"],
            "routing.default: no collector group is named `z`",
        ),
        (
            "[[routes]]\nname = \"r\"\ngroups = []\n[routing]\ndefault = [\"a\"]\n".into(),
            vec!["a"],
            "route `r`: `groups` is empty",
        ),
        (
            format!(
                "{}{}",
                route("").replace("[routing]\ndefault = [\"a\"]\n", ""),
                route("")
            ),
            vec!["a"],
            "route `r` is defined twice",
        ),
    ];
    for (text, names, want) in cases {
        let err = router(&text, &names).expect_err(&text).to_string();
        assert!(err.contains(want), "{err:?} should contain {want:?}");
    }
    let many: Vec<String> = (0..65).map(|i| i.to_string()).collect();
    let err = Router::try_new(
        &[],
        &RoutingFile {
            default: vec!["0".into()],
        },
        &many,
    )
    .unwrap_err();
    assert!(matches!(err, RouteError::TooManyGroups { count: 65 }));
    let ok: Vec<String> = (0..64).map(|i| i.to_string()).collect();
    let r = Router::try_new(
        &[],
        &RoutingFile {
            default: vec!["63".into()],
        },
        &ok,
    )
    .unwrap();
    assert_eq!(r.route(&flow([1, 1, 1, 1], 1)), 1 << 63);
}

#[test]
fn toml_shapes_are_checked() {
    for (text, want) in [
        (
            "[[routes]]\nname = \"r\"\ngroups = [\"a\"]\nmatch = { \"event.kind\" = [[\"x\"]] }\n",
            "a string or an integer",
        ),
        (
            "[[routes]]\nname = \"r\"\ngroups = [\"a\"]\nmatch = { \"event.kind\" = true }\n",
            "a string, an integer, or a list",
        ),
        (
            "[[routes]]\nname = \"r\"\ngroups = [\"a\"]\nmatches = {}\n",
            "unknown field `matches`",
        ),
    ] {
        let err = toml::from_str::<Doc>(&format!("{text}[routing]\ndefault = [\"a\"]\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{err}");
    }
}

#[test]
fn field_names_round_trip_and_unknown_lists_all() {
    for f in Field::all() {
        assert_eq!(f.name().parse::<Field>().unwrap(), f);
    }
    let err = "tags".parse::<Field>().unwrap_err().to_string();
    assert!(
        err.contains("`tags`") && err.contains("destination.port") && err.contains("user.name"),
        "{err}"
    );
}

/// The agent's tests run the same check over every record it builds.
#[test]
fn field_values_are_the_serialised_values() {
    let records = [
        samples::flow(samples::SOURCE.into(), 80),
        samples::lifecycle("tcp-rst"),
        samples::audit("checkpoint"),
        full(&Parts::default()),
    ];
    for r in &records {
        for f in Field::all() {
            let ours: Vec<String> = f.values(r).map(|v| v.to_string()).collect();
            assert_eq!(
                ours,
                samples::json_values(r, f.name()),
                "{f} of {}",
                r.event.action
            );
        }
    }
}

/// Inputs for a synthetic record: indices into small pools, so that random
/// routes hit them often.
#[derive(Clone, Debug, Default)]
struct Parts {
    event: [usize; 6],
    network: Option<[usize; 5]>,
    source: Option<(usize, Option<u16>)>,
    destination: Option<(usize, Option<u16>)>,
    ingress: Option<usize>,
    file: Option<[usize; 3]>,
}

const ACTS: [&str; 4] = ["flow", "gap", "tcp-rst", "file-change"];
const DATASETS: [&str; 3] = ["lbwitness.flow", "lbwitness.audit", "other"];
const KINDS: [&str; 3] = ["event", "state", "alert"];
const CATEGORIES: [&[&str]; 3] = [&[], &["network"], &["file", "configuration"]];
const TYPES: [&[&str]; 3] = [&["info"], &["connection", "end"], &["end", "error"]];
const REASONS: [Option<&str>; 3] = [None, Some("idle-timeout"), Some("restart")];
const WORDS: [&str; 4] = ["tcp", "udp", "6", "eth0"];
const IPS: [&str; 6] = [
    "10.1.2.3",
    "10.200.0.1",
    "192.0.2.9",
    "2001:db8::1",
    "2001:db9::1",
    "::1",
];
const PORTS: [u16; 4] = [80, 443, 8080, 0];

fn pick<T: Copy>(pool: &[T], i: usize) -> T {
    pool[i % pool.len()]
}

fn full(p: &Parts) -> Record {
    let [a, d, k, c, t, rs] = p.event;
    let mut event = Event::new(
        pick(&DATASETS, d),
        pick(&ACTS, a),
        pick(&KINDS, k),
        pick(&CATEGORIES, c),
        pick(&TYPES, t),
    );
    event.reason = pick(&REASONS, rs);
    let observer = Observer {
        hostname: pick(&WORDS, a + k).into(),
        ingress: p.ingress.map(|i| Ingress {
            interface: Interface {
                id: pick(&WORDS, i).into(),
                name: pick(&WORDS, i + 1).into(),
            },
        }),
        product: "lbwitness",
        kind: "sensor",
    };
    let mut r = Record::new(event, "t".into(), observer);
    let endpoint = |(ip, port): (usize, Option<u16>)| Endpoint {
        bytes: None,
        ip: pick(&IPS, ip).parse().unwrap(),
        nat: None,
        packets: None,
        port,
    };
    r.source = p.source.map(endpoint);
    r.destination = p.destination.map(endpoint);
    r.network = p.network.map(|[tr, ty, cid, iana, vlan]| Network {
        bytes: None,
        community_id: pick(&WORDS, cid).into(),
        iana_number: pick(&WORDS, iana).into(),
        inner: None,
        packets: None,
        transport: [None, Some("tcp"), Some("udp")][tr % 3],
        ip_type: pick(&["ipv4", "ipv6"], ty),
        vlan: (vlan % 2 == 0).then(|| Vlan {
            id: pick(&WORDS, vlan).into(),
        }),
    });
    if let Some([path, proc, user]) = p.file {
        let path = pick(&WORDS, path).to_string();
        r.file = Some(File {
            directory: String::new(),
            hash: None,
            mtime: None,
            name: String::new(),
            path,
            size: None,
        });
        r.process = Some(Process {
            executable: None,
            name: (proc % 2 == 0).then(|| pick(&WORDS, proc).into()),
            pid: 1,
            thread: None,
        });
        r.user = Some(User {
            id: "0".into(),
            name: (user % 2 == 0).then(|| pick(&WORDS, user).into()),
        });
    }
    r
}

fn parts() -> impl Strategy<Value = Parts> {
    let idx = || 0usize..12;
    let ep = || {
        proptest::option::of((
            idx(),
            proptest::option::of(proptest::sample::select(PORTS.to_vec())),
        ))
    };
    (
        proptest::array::uniform6(idx()),
        proptest::option::of(proptest::array::uniform5(idx())),
        ep(),
        ep(),
        proptest::option::of(idx()),
        proptest::option::of(proptest::array::uniform3(idx())),
    )
        .prop_map(
            |(event, network, source, destination, ingress, file)| Parts {
                event,
                network,
                source,
                destination,
                ingress,
                file,
            },
        )
}

/// Candidate values for a field, including some that never occur.
fn candidates(f: Field) -> Vec<MatchValue> {
    let s = |v: &[&str]| {
        v.iter()
            .map(|s| MatchValue::Str(s.to_string()))
            .collect::<Vec<_>>()
    };
    match f.kind() {
        field::Kind::Ip => s(&[
            "10.0.0.0/8",
            "10.1.2.3",
            "2001:db8::/32",
            "::/0",
            "0.0.0.0/0",
            "192.0.2.0/25",
            "::1/128",
        ]),
        field::Kind::Port => {
            let mut v = s(&["80", "8000-8099", "0-79", "444-65535"]);
            v.extend([MatchValue::Int(443), MatchValue::Int(0)]);
            v
        }
        field::Kind::Str => {
            let mut v = s(&ACTS);
            v.extend(s(&DATASETS).into_iter().chain(s(&KINDS)).chain(s(&WORDS)));
            v.extend(s(&[
                "network",
                "file",
                "info",
                "end",
                "idle-timeout",
                "ipv6",
                "nope",
            ]));
            v.push(MatchValue::Int(6));
            v
        }
    }
}

fn routes() -> impl Strategy<Value = Vec<RouteFile>> {
    let fields: Vec<Field> = Field::all().collect();
    let one = (
        1u64..16,
        proptest::collection::vec(
            (
                proptest::sample::select(fields),
                proptest::collection::vec(any::<prop::sample::Index>(), 1..4),
            ),
            0..4,
        ),
    );
    proptest::collection::vec(one, 0..6).prop_map(|routes| {
        routes
            .into_iter()
            .enumerate()
            .map(|(i, (groups, keys))| RouteFile {
                name: format!("r{i}"),
                groups: (0..4)
                    .filter(|b| groups & 1 << b != 0)
                    .map(|b| format!("g{b}"))
                    .collect(),
                matches: keys
                    .into_iter()
                    .map(|(f, picks)| {
                        let c = candidates(f);
                        (
                            f.name().to_owned(),
                            MatchValues(picks.iter().map(|i| i.get(&c).clone()).collect()),
                        )
                    })
                    .collect(),
            })
            .collect()
    })
}

/// Whether `value` (a record value as serialised) is matched by `want` for
/// a field of `kind`, computed independently of the matcher.
fn reference_match(kind: field::Kind, value: &str, want: &MatchValue) -> bool {
    let want = match want {
        MatchValue::Str(s) => s.clone(),
        MatchValue::Int(i) => i.to_string(),
    };
    match kind {
        field::Kind::Str => value == want,
        field::Kind::Port => {
            let v: u32 = value.parse().unwrap();
            let (lo, hi) = want.split_once('-').unwrap_or((&want, &want));
            (lo.parse::<u32>().unwrap()..=hi.parse().unwrap()).contains(&v)
        }
        field::Kind::Ip => {
            let (net, len) = want.split_once('/').unwrap_or((&want, "128"));
            let bytes = |ip: IpAddr| match ip {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            };
            let (net, ip) = (bytes(net.parse().unwrap()), bytes(value.parse().unwrap()));
            let len = len.parse::<usize>().unwrap().min(net.len() * 8);
            net.len() == ip.len()
                && (0..len).all(|b| (net[b / 8] ^ ip[b / 8]) & (0x80 >> (b % 8)) == 0)
        }
    }
}

fn reference_route(routes: &[RouteFile], default: u64, r: &Record) -> u64 {
    let mut mask = 0;
    for route in routes {
        let all = route.matches.iter().all(|(key, MatchValues(wants))| {
            let kind = key.parse::<Field>().unwrap().kind();
            samples::json_values(r, key)
                .iter()
                .any(|v| wants.iter().any(|w| reference_match(kind, v, w)))
        });
        if all {
            mask |= route
                .groups
                .iter()
                .map(|g| 1u64 << g[1..].parse::<u32>().unwrap())
                .fold(0, |a, b| a | b);
        }
    }
    if mask == 0 { default } else { mask }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn route_masks_match_the_reference(routes in routes(), records in proptest::collection::vec(parts(), 1..8)) {
        let groups = groups(&["g0", "g1", "g2", "g3", "g4"]);
        let router = Router::try_new(&routes, &RoutingFile { default: vec!["g4".into()] }, &groups).unwrap();
        for p in &records {
            let r = full(p);
            prop_assert_eq!(router.route(&r), reference_route(&routes, 1 << 4, &r), "{:?}", p);
        }
    }
}

/// `cargo test --release -p lbwitness route::tests::route_cost -- --ignored --nocapture`
#[test]
#[ignore = "timing; run in release"]
fn route_cost() {
    let r = router(EXAMPLE, &["archive", "siem", "bus"]).unwrap();
    let records: Vec<Record> = (0..1024u32)
        .map(|i| {
            flow(
                [10, 0, (i >> 8) as u8, i as u8],
                [443, 80, 8080, 22][i as usize % 4],
            )
        })
        .collect();
    let n = 10_000_000u32;
    let start = Instant::now();
    let mut acc = 0u64;
    for i in 0..n {
        acc = acc.wrapping_add(r.route(std::hint::black_box(&records[i as usize % records.len()])));
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(n);
    println!("route(): {ns:.1} ns/record over flow records ({acc})");
}
