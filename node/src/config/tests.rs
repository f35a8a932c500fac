//! Resolving flags, environment and file into a node configuration.

use std::path::PathBuf;

use clap::Parser;

use super::resolve::id_from_hostname;
use super::*;

#[test]
fn ids_from_statefulset_host_names() {
    assert_eq!(id_from_hostname("baton-0").ok(), Some(1));
    assert_eq!(id_from_hostname("baton-prod-2").ok(), Some(3));
    for bad in ["baton", "baton-", "baton-x", "baton-1x"] {
        let err = id_from_hostname(bad)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("does not end in -N"), "{bad}: {err}");
    }
    let err = args(&["--id", "2", "--id-from-hostname"])
        .resolve()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("exclude each other"), "{err}");
}

fn args(list: &[&str]) -> Args {
    Args::parse_from(std::iter::once("baton-node").chain(list.iter().copied()))
}

#[test]
fn no_flags_is_the_embedded_single_node_default() -> anyhow::Result<()> {
    let config = args(&[]).resolve()?;
    assert_eq!(config.id, 1);
    assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(config.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    assert_eq!(
        config.http.map(|h| h.to_string()).as_deref(),
        Some(DEFAULT_HTTP)
    );
    assert_eq!(config.bootstrap, Bootstrap::SingleNode);
    Ok(())
}

#[test]
fn initial_members_set_the_advertised_address() -> anyhow::Result<()> {
    let config = args(&["--id", "2", "--initial-members", "1=a:1, 2=b:2,3=c:3"]).resolve()?;
    assert_eq!(config.advertise.as_deref(), Some("b:2"));
    let Bootstrap::InitialMembers(m) = config.bootstrap else {
        panic!("not static")
    };
    assert_eq!(m.len(), 3);
    Ok(())
}

#[test]
fn bad_membership_flags_are_refused_with_the_reason() {
    let cases = [
        (
            vec!["--id", "3", "--initial-members", "1=a:1,2=b:2"],
            "does not list this node's id 3",
        ),
        (
            vec!["--initial-members", "1=a:1,1=b:2"],
            "names node 1 twice",
        ),
        (vec!["--initial-members", "1=a:1,2=a:1"], "same address"),
        (vec!["--initial-members", "x=a:1"], "not a positive node id"),
        (vec!["--initial-members", "1=a"], "no port"),
        (vec!["--join", "http://a:1"], "scheme"),
        (vec!["--listen", "0.0.0.0:7400"], "--advertise is required"),
        (vec!["--heartbeat-ms", "300"], "more than twice"),
        (
            vec!["--join", "a:1", "--restore-from", "b.bak"],
            "exclude each other",
        ),
        (
            vec!["--restore-revision-bump", "5"],
            "only with --restore-from",
        ),
        (
            vec!["--restore-from", "b.bak", "--restore-revision-bump", "0"],
            "at least 1",
        ),
        (
            vec![
                "--restore-from",
                "b.bak",
                "--restore-revision-bump",
                "1000000000000001",
            ],
            "is more than",
        ),
        (vec!["--admin-token", "short"], "use at least 16"),
        (
            vec!["--admin-token", "sixteen chars and spaces"],
            "without spaces",
        ),
        (
            vec![
                "--tls-cert",
                "/nonexistent/c.pem",
                "--tls-key",
                "k",
                "--tls-ca",
                "ca",
            ],
            "--tls-cert: cannot read /nonexistent/c.pem",
        ),
    ];
    for (flags, expected) in cases {
        let err = args(&flags)
            .resolve()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains(expected),
            "{flags:?}: expected {expected:?} in {err:?}"
        );
    }
}

#[test]
fn a_restore_jumps_by_the_default_or_the_given_margin() -> anyhow::Result<()> {
    let config = args(&["--restore-from", "b.bak"]).resolve()?;
    assert_eq!(config.restore_revision_bump, DEFAULT_RESTORE_REVISION_BUMP);
    let config = args(&["--restore-from", "b.bak", "--restore-revision-bump", "42"]).resolve()?;
    assert_eq!(config.restore_revision_bump, 42);

    let dir = tempfile::tempdir()?;
    let path = dir.path().join("baton.toml");
    std::fs::write(
        &path,
        "restore-from = \"b.bak\"\nrestore-revision-bump = 7\n",
    )?;
    let config = args(&["--config", path.to_str().unwrap_or_default()]).resolve()?;
    assert_eq!(config.restore_revision_bump, 7);
    Ok(())
}

#[test]
fn config_file_fills_what_flags_leave_out() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("baton.toml");
    std::fs::write(
        &path,
        "id = 7\nlisten = \"127.0.0.1:9000\"\ndata-dir = \"/var/lib/baton\"\n",
    )?;
    let config = args(&["--config", path.to_str().unwrap_or_default(), "--id", "8"]).resolve()?;
    assert_eq!(config.id, 8, "the flag wins over the file");
    assert_eq!(config.listen.to_string(), "127.0.0.1:9000");
    assert_eq!(config.data_dir, PathBuf::from("/var/lib/baton"));

    std::fs::write(&path, "idd = 7\n")?;
    let err = args(&["--config", path.to_str().unwrap_or_default()])
        .resolve()
        .err();
    assert!(format!("{err:?}").contains("unknown field"), "{err:?}");
    Ok(())
}

#[test]
fn debug_output_names_security_settings_but_not_secrets() -> anyhow::Result<()> {
    let config = args(&["--admin-token", "a-secret-of-sixteen-chars"]).resolve()?;
    let shown = format!("{config:?}");
    assert!(shown.contains("admin_token: Some(\"set\")"), "{shown}");
    assert!(!shown.contains("a-secret"), "{shown}");
    Ok(())
}

#[test]
fn peer_addresses() {
    for ok in ["127.0.0.1:7400", "node-1.baton.svc:7400", "[::1]:7400"] {
        assert_eq!(parse_peer_addr(ok), Ok(()), "{ok}");
    }
    for bad in [
        "",
        "127.0.0.1",
        "127.0.0.1:0",
        "host:99999",
        ":7400",
        "a b:1",
        "[zz]:1",
        "http://a:1",
    ] {
        assert!(parse_peer_addr(bad).is_err(), "{bad}");
    }
}
