//! Genesis validation: one test case per mistake, the hash, and the testnet generator.

use serde_json::{Value, json};
use tally_crypto::SecretKey;
use tally_genesis::testnet::{NetworkInfo, TestnetOptions, generate};
use tally_genesis::{Genesis, GenesisError, NodeConfig, Protocol};

fn key(i: u8) -> String {
    SecretKey::from_seed(&[i; 32]).public_key().to_hex()
}

fn base(protocol: &str, n: u8) -> Value {
    json!({
        "chain_id": "test-chain",
        "consensus": { "protocol": protocol },
        "validators": (0..n).map(|i| json!({
            "name": format!("v{i}"),
            "public_key": key(i + 1),
            "p2p": format!("127.0.0.1:{}", 27000 + i as u16),
        })).collect::<Vec<_>>(),
        "accounts": [{ "address": key(100), "balance": 1000 }]
    })
}

type Mutation = Box<dyn Fn(&mut Value)>;
type Expect = fn(&GenesisError) -> bool;

fn parse(v: &Value) -> Result<Genesis, GenesisError> {
    Genesis::from_json(&v.to_string())
}

#[test]
fn valid_genesis_for_each_protocol() {
    for (p, n) in [
        ("pbft", 4),
        ("pbft", 7),
        ("raft", 1),
        ("raft", 3),
        ("multipaxos", 5),
    ] {
        let g = parse(&base(p, n)).unwrap_or_else(|e| panic!("{p}/{n}: {e}"));
        assert_eq!(g.validators.len(), n as usize);
    }
}

#[test]
fn each_mistake_has_its_error() {
    let cases: Vec<(&str, Mutation, Expect)> = vec![
        (
            "empty chain id",
            Box::new(|g| g["chain_id"] = json!("")),
            |e| matches!(e, GenesisError::EmptyChainId),
        ),
        (
            "bad chain id",
            Box::new(|g| g["chain_id"] = json!("a b")),
            |e| matches!(e, GenesisError::Parse(m) if m.contains("chain id")),
        ),
        (
            "pbft with 3",
            Box::new(|g| {
                g["validators"].as_array_mut().unwrap().pop();
            }),
            |e| matches!(e, GenesisError::TooFewValidators { n: 3, min: 4, .. }),
        ),
        (
            "duplicate name",
            Box::new(|g| g["validators"][1]["name"] = json!("v0")),
            |e| matches!(e, GenesisError::DuplicateValidatorName { .. }),
        ),
        (
            "bad name",
            Box::new(|g| g["validators"][1]["name"] = json!("has space")),
            |e| matches!(e, GenesisError::InvalidValidatorName { .. }),
        ),
        (
            "duplicate key",
            Box::new(|g| g["validators"][2]["public_key"] = json!(key(1))),
            |e| matches!(e, GenesisError::DuplicateValidatorKey { .. }),
        ),
        (
            "invalid key",
            Box::new(|g| {
                let mut identity = "01".to_string();
                identity.push_str(&"00".repeat(31));
                g["validators"][2]["public_key"] = json!(identity);
            }),
            |e| matches!(e, GenesisError::InvalidValidatorKey { .. }),
        ),
        (
            "key not hex",
            Box::new(|g| g["validators"][2]["public_key"] = json!("xyz")),
            |e| matches!(e, GenesisError::Parse(_)),
        ),
        (
            "address without port",
            Box::new(|g| g["validators"][0]["p2p"] = json!("127.0.0.1")),
            |e| matches!(e, GenesisError::BadAddress { .. }),
        ),
        (
            "address with bad port",
            Box::new(|g| g["validators"][0]["p2p"] = json!("127.0.0.1:99999")),
            |e| matches!(e, GenesisError::BadAddress { .. }),
        ),
        (
            "address with bad host",
            Box::new(|g| g["validators"][0]["p2p"] = json!("bad_host!:1")),
            |e| matches!(e, GenesisError::BadAddress { .. }),
        ),
        (
            "unbracketed ipv6",
            Box::new(|g| g["validators"][0]["p2p"] = json!("::1:26600")),
            |e| matches!(e, GenesisError::BadAddress { .. }),
        ),
        (
            "duplicate address",
            Box::new(|g| g["validators"][1]["p2p"] = json!("127.0.0.1:27000")),
            |e| matches!(e, GenesisError::DuplicateAddress { .. }),
        ),
        (
            "duplicate account",
            Box::new(|g| {
                let a = g["accounts"][0].clone();
                g["accounts"].as_array_mut().unwrap().push(a);
            }),
            |e| matches!(e, GenesisError::DuplicateAccount { .. }),
        ),
        (
            "supply overflow",
            Box::new(|g| {
                g["accounts"][0]["balance"] = json!(u64::MAX);
                g["accounts"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"address": key(101), "balance": 1}));
            }),
            |e| matches!(e, GenesisError::SupplyOverflow),
        ),
        (
            "watermark below checkpoint",
            Box::new(|g| {
                g["consensus"]["checkpoint_interval"] = json!(100);
                g["consensus"]["watermark_window"] = json!(50);
            }),
            |e| {
                matches!(
                    e,
                    GenesisError::BadParameter {
                        field: "watermark_window",
                        ..
                    }
                )
            },
        ),
        (
            "zero batch delay",
            Box::new(|g| g["consensus"]["batch_delay_ms"] = json!(0)),
            |e| {
                matches!(
                    e,
                    GenesisError::BadParameter {
                        field: "batch_delay_ms",
                        ..
                    }
                )
            },
        ),
        (
            "election range",
            Box::new(|g| {
                g["consensus"]["raft_election_timeout_ms"] = json!({"min": 500, "max": 400})
            }),
            |e| {
                matches!(
                    e,
                    GenesisError::BadParameter {
                        field: "raft_election_timeout_ms",
                        ..
                    }
                )
            },
        ),
        (
            "paxos quorums on pbft",
            Box::new(|g| g["consensus"]["paxos_q1"] = json!(3)),
            |e| matches!(e, GenesisError::BadParameter { .. }),
        ),
        (
            "unknown field",
            Box::new(|g| g["consensus"]["batch_bytes"] = json!(3)),
            |e| matches!(e, GenesisError::Parse(m) if m.contains("batch_bytes")),
        ),
        (
            "unknown protocol",
            Box::new(|g| g["consensus"]["protocol"] = json!("hotstuff")),
            |e| matches!(e, GenesisError::Parse(_)),
        ),
    ];
    for (what, mutate, expected) in cases {
        let mut g = base("pbft", 4);
        mutate(&mut g);
        match parse(&g) {
            Err(e) if expected(&e) => {}
            other => panic!("{what}: unexpected {other:?}"),
        }
    }
}

#[test]
fn paxos_quorums_must_intersect() {
    let mut g = base("multipaxos", 5);
    g["consensus"]["paxos_q1"] = json!(2);
    g["consensus"]["paxos_q2"] = json!(3);
    assert!(matches!(
        parse(&g),
        Err(GenesisError::QuorumsDoNotIntersect { q1: 2, q2: 3, n: 5 })
    ));
    g["consensus"]["paxos_q2"] = json!(4);
    assert!(parse(&g).is_ok());
    g["consensus"]["paxos_q1"] = json!(6);
    assert!(parse(&g).is_err());
}

#[test]
fn hash_ignores_formatting_and_binds_every_field() {
    let g = parse(&base("pbft", 4)).unwrap();
    let reformatted =
        Genesis::from_json(&serde_json::to_string_pretty(&base("pbft", 4)).unwrap()).unwrap();
    assert_eq!(g.hash(), reformatted.hash());
    // Defaults written out explicitly hash the same as defaults left implicit.
    let explicit = Genesis::from_json(&g.to_json()).unwrap();
    assert_eq!(g.hash(), explicit.hash());
    let changes: Vec<Mutation> = vec![
        Box::new(|g| g["chain_id"] = json!("test-chain2")),
        Box::new(|g| g["consensus"]["batch_delay_ms"] = json!(11)),
        Box::new(|g| g["consensus"]["view_change_timeout_ms"] = json!(2001)),
        Box::new(|g| g["validators"][0]["p2p"] = json!("127.0.0.1:1")),
        Box::new(|g| g["validators"][0]["name"] = json!("w")),
        Box::new(|g| g["accounts"][0]["balance"] = json!(1001)),
        Box::new(|g| g["validators"].as_array_mut().unwrap().swap(0, 1)),
    ];
    for change in changes {
        let mut v = base("pbft", 4);
        change(&mut v);
        assert_ne!(parse(&v).unwrap().hash(), g.hash(), "{v}");
    }
}

#[test]
fn testnet_writes_a_loadable_network() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("net");
    let mut opts = TestnetOptions::new(4, Protocol::Pbft, out.clone());
    opts.base_port = 31700;
    let info = generate(&opts).unwrap();
    let loaded = NetworkInfo::load(&out.join("network.json")).unwrap();
    assert_eq!(loaded, info);
    let genesis = Genesis::load(&out.join("genesis.json")).unwrap();
    assert_eq!(genesis.hash().to_hex(), info.genesis_hash);
    assert_eq!(genesis.validators.len(), 4);
    let mut ports = std::collections::HashSet::new();
    for (i, node) in info.nodes.iter().enumerate() {
        assert!(node.home.is_absolute());
        let config = NodeConfig::load(&node.home).unwrap();
        assert_eq!(config.name, node.name);
        assert_eq!(Genesis::load(&config.genesis_file).unwrap(), genesis);
        let key = tally_crypto::keyfile::load(&config.key_file).unwrap();
        assert_eq!(key.public_key(), genesis.validators[i].public_key);
        assert!(node.rpc.starts_with("http://127.0.0.1:"));
        for a in [
            &config.p2p.listen,
            &config.rpc.listen,
            &config.metrics.listen,
        ] {
            assert!(ports.insert(a.clone()), "port clash on {a}");
        }
    }
    for a in &info.accounts {
        assert!(a.key_file.is_absolute());
        assert_eq!(
            tally_crypto::keyfile::load(&a.key_file)
                .unwrap()
                .public_key(),
            a.address
        );
        assert!(
            genesis
                .accounts
                .iter()
                .any(|g| g.address == a.address && g.balance == a.balance)
        );
    }
    // A second run into the same folder is refused rather than overwriting keys.
    assert!(generate(&opts).is_err());
}

/// The watermark window is bounded by the validator count so that the largest VIEW-CHANGE
/// and NEW-VIEW fit in a consensus message; the default (256) fits up to the 128-validator
/// limit, and a genesis asking for more than the bound is refused with the bound.
#[test]
fn watermark_window_is_bounded_by_the_validator_count() {
    use tally_genesis::{CONSENSUS_MESSAGE_BYTES_MAX, max_watermark_window};
    let mut last = u64::MAX;
    for n in [4usize, 7, 16, 31, 64, 100, 128] {
        let w = max_watermark_window(n);
        eprintln!("n = {n}: watermark_window at most {w}");
        assert!(w >= 256, "n = {n}: the default window must fit ({w})");
        assert!(w <= last, "fewer validators allow a larger window");
        last = w;
        use tally_consensus::pbft::messages::{
            worst_case_new_view_bytes, worst_case_view_change_bytes,
        };
        assert!(worst_case_new_view_bytes(n, w) <= CONSENSUS_MESSAGE_BYTES_MAX);
        assert!(
            worst_case_new_view_bytes(n, w + 1) > CONSENSUS_MESSAGE_BYTES_MAX
                || worst_case_view_change_bytes(n, w + 1) > CONSENSUS_MESSAGE_BYTES_MAX
        );
    }
    let mut g = base("pbft", 4);
    g["consensus"]["watermark_window"] = json!(max_watermark_window(4) + 1);
    let e = parse(&g).unwrap_err();
    assert!(
        matches!(&e, GenesisError::BadParameter { field: "watermark_window", reason } if reason.contains("at most 132102")),
        "{e}"
    );
    g["consensus"]["watermark_window"] = json!(max_watermark_window(4));
    parse(&g).unwrap();
}

/// The RPC limits and authentication settings of `config.toml`: defaults when absent, each
/// inconsistent setting refused with the field named, and the token file's own rules.
#[test]
fn rpc_limits_and_auth_in_the_node_config() {
    use std::os::unix::fs::PermissionsExt;
    use tally_genesis::config::RpcAuth;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let base = NodeConfig::new(
        "v0",
        "127.0.0.1:1".into(),
        "127.0.0.1:2".into(),
        "127.0.0.1:3".into(),
    );
    base.write(home).unwrap();
    let loaded = NodeConfig::load(home).unwrap();
    assert_eq!(loaded.rpc.auth, RpcAuth::None);
    assert_eq!(loaded.rpc.load_token().unwrap(), None);
    assert_eq!(loaded.rpc.requests_per_second_per_ip, 1000);

    let with = |edit: &dyn Fn(&mut NodeConfig)| {
        let mut c = base.clone();
        edit(&mut c);
        c.write(home).unwrap();
        NodeConfig::load(home)
    };
    let refused = |edit: &dyn Fn(&mut NodeConfig), field: &str| {
        let e = with(edit).unwrap_err().to_string();
        assert!(e.contains(field), "{e}");
    };
    refused(&|c| c.rpc.auth = RpcAuth::Writes, "rpc.auth_token_file");
    refused(
        &|c| c.rpc.auth_token_file = Some("token".into()),
        "rpc.auth_token_file",
    );
    refused(&|c| c.rpc.request_timeout_ms = 5, "rpc.request_timeout_ms");
    refused(&|c| c.rpc.max_connections_per_ip = 0, "rpc");
    refused(&|c| c.rpc.subscriber_buffer = 1, "rpc");

    let token = home.join("token");
    let loaded = with(&|c| {
        c.rpc.auth = RpcAuth::All;
        c.rpc.auth_token_file = Some("token".into());
    })
    .unwrap();
    assert_eq!(loaded.rpc.auth_token_file.as_deref(), Some(token.as_path()));
    assert!(
        loaded.rpc.load_token().is_err(),
        "a missing file is refused"
    );
    std::fs::write(&token, "0123456789abcdef0123\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = loaded.rpc.load_token().unwrap_err().to_string();
    assert!(e.contains("group or others"), "{e}");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        loaded.rpc.load_token().unwrap().as_deref(),
        Some("0123456789abcdef0123")
    );
    std::fs::write(&token, "short\n").unwrap();
    assert!(loaded.rpc.load_token().is_err(), "a short token is refused");
}
