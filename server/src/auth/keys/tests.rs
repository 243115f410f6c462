//! Key requests: what is refused before the database.

use super::*;
use chrono::TimeDelta;
use strata_core::auth::Scope;

fn request(name: &str, grants: Vec<Grant>) -> CreateKey {
    CreateKey {
        name: name.into(),
        grants,
        expires_at: None,
    }
}

fn field(result: Result<(), InvalidKey>) -> String {
    let InvalidKey { field, message } = result.expect_err("invalid");
    assert!(!message.is_empty());
    field
}

#[test]
fn a_sound_key_passes() {
    let now = Utc::now();
    let mut key = request(
        "ci.bot-1_x",
        vec![
            Grant::new(Scope::Read, "account-"),
            Grant::new(Scope::Write, ""),
        ],
    );
    key.expires_at = Some(now + TimeDelta::seconds(1));
    assert!(validate(&key, now).is_ok());
}

#[test]
fn each_broken_rule_names_its_field() {
    let now = Utc::now();
    let read = || vec![Grant::new(Scope::Read, "")];
    assert_eq!(field(validate(&request("", read()), now)), "name");
    assert_eq!(field(validate(&request("a b", read()), now)), "name");
    assert_eq!(
        field(validate(&request(&"a".repeat(101), read()), now)),
        "name"
    );
    assert_eq!(field(validate(&request("k", vec![]), now)), "grants");
    let many = vec![Grant::new(Scope::Read, ""); MAX_GRANTS + 1];
    assert_eq!(field(validate(&request("k", many), now)), "grants");
    for bad in ["a b", "$audit", "ü", &"a".repeat(201)] {
        let grants = vec![
            Grant::new(Scope::Read, ""),
            Grant::new(Scope::Read, "ok-"),
            Grant::new(Scope::Write, bad),
        ];
        assert_eq!(
            field(validate(&request("k", grants), now)),
            "grants[2].streams",
            "{bad:?}"
        );
    }
    let mut key = request("k", read());
    key.expires_at = Some(now);
    assert_eq!(field(validate(&key, now)), "expires_at");
}

#[test]
fn messages_say_what_to_do() {
    let err = validate(&request("a b", vec![]), Utc::now()).unwrap_err();
    assert!(
        err.to_string().starts_with("name: key name \"a b\""),
        "{err}"
    );
    let taken = KeyError::NameTaken { name: "ci".into() };
    assert!(taken.to_string().contains("choose another name"), "{taken}");
}
