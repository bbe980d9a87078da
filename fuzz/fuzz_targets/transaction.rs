//! Transaction decoding: no input makes it panic; whatever it accepts is canonical (encoding
//! the decoded transaction gives back exactly the input), and the signing body is stable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_ledger::SignedTransaction;

fuzz_target!(|data: &[u8]| {
    if let Ok(tx) = SignedTransaction::decode(data) {
        assert_eq!(tx.encoded(), data, "accepted a non-canonical encoding");
        let again = SignedTransaction::decode(tx.encoded()).expect("re-decodes");
        assert_eq!(again.hash(), tx.hash());
        // The signature check itself must not panic either (valid or not).
        let _ = tally_ledger::check_transactions(&tx.tx().chain_id, &[data.to_vec()]);
    }
});
