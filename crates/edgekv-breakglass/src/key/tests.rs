use super::*;

fn pair(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    (dir.join("breakglass.key"), dir.join("breakglass.pub"))
}

#[test]
fn key_files_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = pair(dir.path());
    let public_hex = generate_key_files(&private, &public).unwrap();
    assert_eq!(public_hex.len(), 64);
    assert_eq!(public_hex, public_hex.to_lowercase());

    let signing = SigningKey::load(&private).unwrap();
    let verifying = VerifyingKey::load(&public).unwrap();
    assert_eq!(signing.verifying_key(), verifying);
    assert_eq!(verifying.to_hex(), public_hex);
    assert_eq!(VerifyingKey::from_hex(&public_hex).unwrap(), verifying);

    // The file's key line is the seed / public key in lowercase hex.
    let text = std::fs::read_to_string(&public).unwrap();
    assert_eq!(text.lines().nth(1), Some(public_hex.as_str()));
}

#[test]
fn signing_with_a_loaded_key_verifies_with_the_loaded_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = pair(dir.path());
    generate_key_files(&private, &public).unwrap();
    let order = Order {
        action: crate::Action::Rollback,
        environment: "production".into(),
        node: "all".into(),
        build: String::new(),
        issued_ms: 1_000,
        not_after_ms: 2_000,
        nonce: nonce(),
        lifts: String::new(),
    };
    let signed = SigningKey::load(&private).unwrap().sign(&order);
    let verifier = crate::Verifier::new(VerifyingKey::load(&public).unwrap(), 10_000);
    assert_eq!(
        verifier.verify(&signed, 1_500, "production", "edge-9"),
        Ok(order)
    );
}

#[cfg(unix)]
#[test]
fn private_key_file_is_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = pair(dir.path());
    generate_key_files(&private, &public).unwrap();
    let mode = std::fs::metadata(&private).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn generation_refuses_to_overwrite_a_private_key() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = pair(dir.path());
    generate_key_files(&private, &public).unwrap();
    let before = (
        std::fs::read(&private).unwrap(),
        std::fs::read(&public).unwrap(),
    );
    let err = generate_key_files(&private, &public).unwrap_err();
    assert!(
        matches!(&err, KeyError::Exists { path } if *path == private),
        "{err}"
    );
    assert!(err.to_string().contains("breakglass.key"), "{err}");
    let after = (
        std::fs::read(&private).unwrap(),
        std::fs::read(&public).unwrap(),
    );
    assert_eq!(before, after);
}

#[test]
fn generation_refuses_one_path_for_both_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("both");
    assert!(matches!(
        generate_key_files(&path, &path),
        Err(KeyError::Format { .. })
    ));
    assert!(!path.exists());
}

#[test]
fn failed_public_write_removes_the_new_private_key() {
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("breakglass.key");
    let public = dir.path().join("missing-dir").join("breakglass.pub");
    let err = generate_key_files(&private, &public).unwrap_err();
    assert!(matches!(err, KeyError::Io { .. }), "{err}");
    assert!(!private.exists());
}

#[test]
fn key_file_layout_is_tolerant_of_comment_and_whitespace() {
    let hex_key =
        VerifyingKey(ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key()).to_hex();
    for text in [
        hex_key.clone(),
        format!("{hex_key}\n"),
        format!("{hex_key}  \r\n\n"),
        format!("# a comment\n{hex_key}\n"),
    ] {
        let bytes = parse_key_text(&text, "test").unwrap();
        assert_eq!(hex::encode(bytes), hex_key, "{text:?}");
    }
    assert!(VerifyingKey::from_hex(&format!(" {hex_key}\n")).is_ok());
}

#[test]
fn bad_key_files_give_key_errors() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };

    let bad_hex = write("bad-hex", &format!("{}\n", "zz".repeat(32)));
    let err = SigningKey::load(&bad_hex).unwrap_err();
    assert!(matches!(err, KeyError::BadHex { .. }), "{err}");
    assert!(err.to_string().contains("bad-hex"), "{err}");
    assert!(matches!(
        VerifyingKey::load(&bad_hex),
        Err(KeyError::BadHex { .. })
    ));

    let short = write("short", &format!("# comment\n{}\n", "ab".repeat(31)));
    assert!(matches!(
        SigningKey::load(&short),
        Err(KeyError::WrongLength { len: 31, .. })
    ));
    assert!(matches!(
        VerifyingKey::load(&short),
        Err(KeyError::WrongLength { len: 31, .. })
    ));
    let long = write("long", &"ab".repeat(33));
    assert!(matches!(
        SigningKey::load(&long),
        Err(KeyError::WrongLength { len: 33, .. })
    ));

    let empty = write("empty", "# only a comment\n\n");
    assert!(matches!(
        SigningKey::load(&empty),
        Err(KeyError::Format { .. })
    ));
    let two = write("two", &format!("{0}\n{0}\n", "ab".repeat(32)));
    assert!(matches!(
        SigningKey::load(&two),
        Err(KeyError::Format { .. })
    ));

    let missing = dir.path().join("missing.key");
    let err = SigningKey::load(&missing).unwrap_err();
    assert!(matches!(err, KeyError::Io { .. }), "{err}");
    assert!(err.to_string().contains("missing.key"), "{err}");

    assert!(matches!(
        VerifyingKey::from_hex("abc"),
        Err(KeyError::BadHex { .. })
    ));
    assert!(matches!(
        VerifyingKey::from_hex(&"ab".repeat(16)),
        Err(KeyError::WrongLength { len: 16, .. })
    ));
}

#[test]
fn bytes_off_the_curve_are_not_a_public_key() {
    // About half of all 32-byte strings do not decode to a curve point; find one.
    let off_curve = (0..=255u8)
        .map(|b| [b; 32])
        .find(|bytes| ed25519_dalek::VerifyingKey::from_bytes(bytes).is_err())
        .unwrap();
    assert!(matches!(
        VerifyingKey::from_hex(&hex::encode(off_curve)),
        Err(KeyError::NotAPublicKey { .. })
    ));
}

#[test]
fn debug_does_not_show_the_private_key() {
    let seed = [9u8; 32];
    let key = SigningKey(ed25519_dalek::SigningKey::from_bytes(&seed));
    let shown = format!("{key:?}");
    assert!(!shown.contains(&hex::encode(seed)), "{shown}");
    assert!(shown.contains(&key.verifying_key().to_hex()), "{shown}");
}

#[test]
fn nonces_are_128_bits_of_hex_and_differ() {
    let a = nonce();
    assert_eq!(a.len(), 32);
    assert!(
        a.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert_ne!(a, nonce());
}
