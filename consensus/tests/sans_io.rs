//! `consensus` stays sans-IO: no runtime, network, storage or randomness crate anywhere in
//! its dependency tree, and no clock, thread, file, socket, process or random API in its
//! source. (DESIGN.md: the driver in `node/` is the only event loop.)

use std::collections::BTreeSet;
use std::path::Path;

/// The normal (non-dev, non-build) dependency tree of tally-consensus, as `cargo tree`
/// reports it.
fn dependency_names() -> BTreeSet<String> {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "tally-consensus",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--frozen",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn no_io_runtime_or_randomness_crates_in_the_tree() {
    let deps = dependency_names();
    assert!(deps.contains("tally-crypto"), "the tree was read: {deps:?}");
    let forbidden = [
        "tokio",
        "libp2p",
        "rocksdb",
        "librocksdb-sys",
        "rand",
        "getrandom",
        "async-std",
        "mio",
        "hyper",
        "tally-storage",
        "tally-p2p",
        "tally-node",
    ];
    let found: Vec<&&str> = forbidden.iter().filter(|f| deps.contains(**f)).collect();
    assert!(found.is_empty(), "consensus depends on {found:?}");
}

#[test]
fn no_clock_thread_file_socket_or_random_api_in_the_source() {
    let forbidden = [
        "std::time",
        "Instant::",
        "SystemTime",
        "std::thread",
        "std::fs",
        "std::net",
        "std::process",
        "std::io::",
        "std::env",
        "tokio",
        "getrandom",
        "SecretKey::generate",
        "thread_rng",
        "println!",
        "eprintln!",
    ];
    let mut offences = Vec::new();
    let mut stack = vec![Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")).to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for (i, line) in text.lines().enumerate() {
                    let code = line.split("//").next().unwrap();
                    for f in forbidden {
                        if code.contains(f) {
                            offences.push(format!("{}:{}: {f}", path.display(), i + 1));
                        }
                    }
                }
            }
        }
    }
    assert!(offences.is_empty(), "{offences:#?}");
}
