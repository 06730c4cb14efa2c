//! Property tests: hostile bytes into every parser (manifests, indexes,
//! configs, references, archives, HTTP responses) never panic, and accepted
//! references round-trip through their canonical form.

mod common;

use common::*;
use proptest::prelude::*;
use shoal_image::manifest::{parse_any, parse_config, parse_index, parse_manifest, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use shoal_image::{plan_import, platforms_of, Archive, Reference, Registry, RegistryOptions};
use shoal_shared::platform::Platform;
use std::io::{Read, Write};
use std::net::TcpListener;

const ALPHABET: &[char] =
    &['a', 'b', 'z', 'A', 'Z', '0', '9', ':', '/', '@', '.', '_', '-', '[', ']', ' ', 'é', '\u{0}', 's', 'h', '2', '5', '6'];

fn reference_like() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(prop::sample::select(ALPHABET), 0..80).prop_map(|v| v.into_iter().collect()),
        any::<String>(),
        (
            prop::sample::select(vec!["", "localhost/", "127.0.0.1:5000/", "docker.io/", "a.b/"]),
            "[a-z0-9._-]{1,20}",
            prop::option::of("[A-Za-z0-9._-]{0,10}")
        )
            .prop_map(|(h, n, t)| match t {
                Some(t) => format!("{h}{n}:{t}"),
                None => format!("{h}{n}"),
            }),
    ]
}

fn valid_manifest_json() -> Vec<u8> {
    let mut l = Layout::default();
    let (m, ..) = l.image("linux", "amd64", "", &[("f", b"x")], true);
    l.blob(&m.digest).to_vec()
}

fn mutate(mut base: Vec<u8>, edits: &[(usize, u8)], cut: usize) -> Vec<u8> {
    for (i, b) in edits {
        if !base.is_empty() {
            let n = base.len();
            base[i % n] = *b;
        }
    }
    base.truncate(cut.max(1).min(base.len()));
    base
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn references_never_panic_and_round_trip(s in reference_like()) {
        if let Ok(r) = Reference::parse(&s) {
            let canon = r.to_string();
            let again = Reference::parse(&canon).unwrap();
            prop_assert_eq!(&again, &r);
            let fam = Reference::parse(&r.familiar()).unwrap();
            prop_assert_eq!(fam, r);
        }
    }

    #[test]
    fn manifest_parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_index(&bytes);
        let _ = parse_manifest(&bytes);
        let _ = parse_config(&bytes);
        for t in ["", OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST, "application/json", "x"] {
            let _ = parse_any(t, &bytes);
        }
    }

    #[test]
    fn mutated_manifests_never_panic(edits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..8), cut in any::<usize>()) {
        let bytes = mutate(valid_manifest_json(), &edits, cut);
        let _ = parse_any("", &bytes);
        let _ = parse_manifest(&bytes);
    }

    #[test]
    fn json_shaped_configs_never_panic(v in json_value(3)) {
        let bytes = serde_json::to_vec(&v).unwrap();
        let _ = parse_config(&bytes);
        let _ = parse_index(&bytes);
        let _ = parse_manifest(&bytes);
    }
}

fn json_value(depth: u32) -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        prop::sample::select(vec!["os", "linux", "arm", "sha256:00", "", "layers"]).prop_map(|s| serde_json::json!(s)),
    ];
    leaf.prop_recursive(depth, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "architecture",
                    "os",
                    "variant",
                    "config",
                    "rootfs",
                    "diff_ids",
                    "Cmd",
                    "Env",
                    "Labels",
                    "ExposedPorts",
                    "manifests",
                    "layers",
                    "digest",
                    "size",
                    "mediaType",
                    "platform"
                ])
                .prop_map(String::from),
                inner,
                0..5
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn hostile_archives_never_panic(edits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..6), cut in any::<usize>(), raw in prop::collection::vec(any::<u8>(), 0..2048)) {
        let dir = TempDir::new("fuzz");
        let mut l = Layout::default();
        let (m, ..) = l.image("linux", "amd64", "", &[("f", b"x")], false);
        let idx = l.index(&[(&m, "linux/amd64")]);
        let path = dir.path().join("a.tar");
        l.write_oci_archive(&path, &[(&idx, &[("io.containerd.image.name", "x:1")])]);
        let good = std::fs::read(&path).unwrap();
        for bytes in [mutate(good.clone(), &edits, cut), raw.clone(), gzip(&mutate(good, &edits, usize::MAX))] {
            std::fs::write(&path, &bytes).unwrap();
            if let Ok(a) = Archive::open(&path) {
                for (_, root) in a.images() {
                    let _ = platforms_of(&a, &root);
                    if let Ok(plan) = plan_import(&a, "x", &root, &Platform::parse("linux/amd64").unwrap()) {
                        for l in &plan.layers {
                            if let Ok(mut r) = shoal_image::ImageSource::open_blob(&a, l) {
                                let _ = r.read_to_end(&mut Vec::new());
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn hostile_http_responses_never_panic(head in prop::collection::vec(prop::sample::select(vec![
        "HTTP/1.1 200 OK\r\n", "HTTP/1.1 401 Unauthorized\r\n", "HTTP/1.1 302 Found\r\n", "HTTP/1.0 404 x\r\n",
        "Content-Length: 5\r\n", "Content-Length: 99999999999999999999\r\n", "Transfer-Encoding: chunked\r\n",
        "Location: /v2/x/manifests/1\r\n", "Location: https://elsewhere/\r\n", "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:1/t\"\r\n",
        "WWW-Authenticate: Basic\r\n", "Content-Type: application/vnd.oci.image.index.v1+json\r\n", "\r\n", "zz\r\n", "{}", "0\r\n\r\n",
        "garbage", "\n",
    ]), 0..10), tail in prop::collection::vec(any::<u8>(), 0..64)) {
        let mut resp = head.concat().into_bytes();
        resp.extend_from_slice(&tail);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            listener.set_nonblocking(false).unwrap();
            // Serve the same bytes to every connection until the client is done.
            for conn in listener.incoming().take(8) {
                let Ok(mut c) = conn else { return };
                let mut buf = [0u8; 4096];
                let _ = c.set_read_timeout(Some(std::time::Duration::from_millis(200)));
                let _ = c.read(&mut buf);
                let _ = c.write_all(&resp);
                if buf.starts_with(b"GET /done") {
                    return;
                }
            }
        });
        let client = Registry::new(RegistryOptions { read_timeout_ms: 300, connect_timeout_ms: 300, ..Default::default() });
        let r = Reference::parse(&format!("127.0.0.1:{port}/x:1")).unwrap();
        if let Ok(root) = client.resolve(&r) {
            let _ = platforms_of(&client.source(&r), &root);
        }
        // Wake the server so its thread ends.
        if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = c.write_all(b"GET /done HTTP/1.1\r\n\r\n");
        }
        let _ = server.join();
    }
}
