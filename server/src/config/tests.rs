//! Flag parsing and validation.

use super::*;

fn parse(args: &[&str]) -> NodeArgs {
    let mut all = vec!["strata", "serve"];
    all.extend_from_slice(args);
    match Cli::try_parse_from(all).unwrap().command {
        Command::Serve(serve) => serve.node,
        _ => unreachable!(),
    }
}

#[test]
fn defaults_are_valid() {
    let config = parse(&[]).validate().unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:7700");
    assert_eq!(config.advertised_url, None);
    assert!(config.node_id.starts_with("node-"));
    assert_eq!(config.lease_ttl, Duration::from_secs(5));
    assert!(!config.serves_tls());
}

#[test]
fn jwt_flags_need_a_key_set_an_issuer_an_audience_and_auth_keys() {
    let jwt = [
        "--jwt-jwks",
        "keys.json",
        "--jwt-issuer",
        "i",
        "--jwt-audience",
        "a",
    ];
    let settings = parse(&jwt).validate().unwrap().security.jwt.unwrap();
    assert_eq!(settings.grants_claim, "strata_grants");
    assert_eq!(
        settings.jwks,
        crate::auth::jwt::JwksSource::File("keys.json".into())
    );
    assert_eq!(parse(&[]).validate().unwrap().security.jwt, None);
    for (args, flag) in [
        (&jwt[..4], "--jwt-audience"),
        (
            &["--jwt-jwks", "k", "--jwt-audience", "a"][..],
            "--jwt-issuer",
        ),
        (&["--jwt-issuer", "i"][..], "--jwt-issuer"),
        (&["--jwt-grants-claim", "g"][..], "--jwt-grants-claim"),
        (&[&jwt[..], &["--auth", "none"]].concat()[..], "--jwt-jwks"),
        (
            &[&jwt[..], &["--jwt-grants-claim", ""]].concat()[..],
            "--jwt-grants-claim",
        ),
    ] {
        let err = parse(args).validate().unwrap_err();
        assert!(err.to_string().starts_with(flag), "{args:?}: {err}");
    }
}

#[test]
fn bad_values_name_their_flag() {
    for (args, flag) in [
        (&["--listen", "nowhere"][..], "--listen"),
        (&["--node-id", "a b"][..], "--node-id"),
        (&["--advertised-url", "ftp://x"][..], "--advertised-url"),
        (&["--lease-ttl-ms", "10"][..], "--lease-ttl-ms"),
        (&["--max-batch-events", "0"][..], "--max-batch-events"),
        (
            &["--pool-size", "2", "--committers", "2"][..],
            "--committers",
        ),
        (&["--tls-cert", "cert.pem"][..], "--tls-cert"),
        (&["--tls-key", "key.pem"][..], "--tls-key"),
        (
            &["--tls-cert", "/nonexistent/c.pem", "--tls-key", "k.pem"][..],
            "--tls-cert",
        ),
        (
            &["--cors-origins", "*,https://app.example"][..],
            "--cors-origins",
        ),
    ] {
        let err = parse(args).validate().unwrap_err();
        assert!(err.to_string().starts_with(flag), "{args:?}: {err}");
    }
}
