//! The files an operator hands the node: a genesis document (parsed and validated), a node
//! config, a key file. No input panics; a genesis that validates hashes the same twice.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(g) = tally_genesis::Genesis::from_json(text) {
        assert_eq!(g.hash(), g.clone().hash());
    }
    let _ = toml::from_str::<tally_genesis::config::NodeConfig>(text);
    let _ = tally_crypto::keyfile::parse(std::path::Path::new("fuzz.key"), text);
});
