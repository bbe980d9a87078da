//! Key files.
//!
//! A key file is one JSON object (see `docs/keys.md`):
//!
//! ```json
//! {"type": "tally-ed25519-secret-key", "public_key": "<64 hex>", "secret_seed": "<64 hex>"}
//! ```
//!
//! `secret_seed` is the RFC 8032 32-byte private key; `public_key` is derived from it and is
//! checked on load. Files are written with mode 0600 through a temporary file and a rename, so
//! a crash never leaves half a key. A file that group or others may read is refused on load.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{CryptoError, PublicKey, SecretKey};

pub const KEY_FILE_TYPE: &str = "tally-ed25519-secret-key";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: String,
    public_key: PublicKey,
    secret_seed: String,
}

fn error(path: &Path, reason: impl ToString) -> CryptoError {
    CryptoError::KeyFile {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Writes `key` to `path` with mode 0600. Refuses to overwrite an existing file unless
/// `overwrite` is set.
pub fn write(path: &Path, key: &SecretKey, overwrite: bool) -> Result<(), CryptoError> {
    if !overwrite && path.exists() {
        return Err(error(path, "already exists (refusing to overwrite a key)"));
    }
    let seed_hex = Zeroizing::new(hex::encode(key.seed().as_ref()));
    let file = KeyFile {
        kind: KEY_FILE_TYPE.to_string(),
        public_key: key.public_key(),
        secret_seed: seed_hex.to_string(),
    };
    let mut text = Zeroizing::new(serde_json::to_string_pretty(&file).map_err(|e| error(path, e))?);
    text.push('\n');
    drop(file);

    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| error(&tmp, e))?;
    // `mode` only applies when the file is created; make sure of it for a leftover tmp file.
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(|e| error(&tmp, e))?;
    f.write_all(text.as_bytes()).map_err(|e| error(&tmp, e))?;
    f.sync_all().map_err(|e| error(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| error(path, e))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| error(dir, e))?;
    }
    Ok(())
}

/// Loads a secret key. Refuses a file that group or others can read or write.
pub fn load(path: &Path) -> Result<SecretKey, CryptoError> {
    let meta = fs::metadata(path).map_err(|e| error(path, e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CryptoError::KeyFileInsecure {
            path: path.display().to_string(),
            mode,
        });
    }
    let text = Zeroizing::new(fs::read_to_string(path).map_err(|e| error(path, e))?);
    parse(path, &text)
}

/// Parses the text of a key file (`path` names it in errors): the type, the seed, and the
/// public key it must derive to.
pub fn parse(path: &Path, text: &str) -> Result<SecretKey, CryptoError> {
    let file: KeyFile = serde_json::from_str(text).map_err(|e| error(path, e))?;
    if file.kind != KEY_FILE_TYPE {
        return Err(error(
            path,
            format!("type is {:?}, expected {KEY_FILE_TYPE:?}", file.kind),
        ));
    }
    let seed = Zeroizing::new(
        crate::parse_hex_array::<32>(&file.secret_seed, "secret seed")
            .map_err(|e| error(path, e))?,
    );
    let key = SecretKey::from_seed(&seed);
    if key.public_key() != file.public_key {
        return Err(error(
            path,
            "public_key does not match the secret seed (the file is corrupt or edited)",
        ));
    }
    Ok(key)
}

/// Reads only the public key of a key file (no permission check: nothing secret is used).
pub fn load_public(path: &Path) -> Result<PublicKey, CryptoError> {
    let text = Zeroizing::new(fs::read_to_string(path).map_err(|e| error(path, e))?);
    let file: KeyFile = serde_json::from_str(&text).map_err(|e| error(path, e))?;
    Ok(file.public_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_with_mode_0600_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.json");
        let key = SecretKey::generate();
        write(&path, &key, false).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load(&path).unwrap().public_key(), key.public_key());
        assert_eq!(load_public(&path).unwrap(), key.public_key());
        // No overwrite without asking.
        assert!(write(&path, &SecretKey::generate(), false).is_err());
        assert_eq!(load(&path).unwrap().public_key(), key.public_key());
    }

    #[test]
    fn readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.json");
        write(&path, &SecretKey::generate(), false).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            match load(&path) {
                Err(CryptoError::KeyFileInsecure { mode: m, .. }) => assert_eq!(m, mode),
                other => panic!("mode {mode:o}: expected refusal, got {other:?}"),
            }
        }
    }

    #[test]
    fn tampered_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.json");
        write(&path, &SecretKey::generate(), false).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let other = SecretKey::generate().public_key().to_hex();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let tampered = text.replace(v["public_key"].as_str().unwrap(), &other);
        fs::write(&path, tampered).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(load(&path), Err(CryptoError::KeyFile { .. })));
        fs::write(&path, "not json").unwrap();
        assert!(matches!(load(&path), Err(CryptoError::KeyFile { .. })));
    }
}
