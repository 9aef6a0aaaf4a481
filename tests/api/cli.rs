//! The command line: workspaces, tokens, config checking, and the store lock.

use std::process::{Command, Output};

use serde_json::json;

use crate::helpers::BinaryServer;

fn scanhop(data: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_scanhop"))
        .args(args)
        .env("SCANHOP__STORAGE__PATH", data)
        .env("SCANHOP__LOG__LEVEL", "warn")
        .output()
        .expect("run scanhop")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

#[actix_rt::test]
async fn workspaces_and_tokens_are_managed_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let token = stdout(&scanhop(
        data,
        &["workspace", "create", "--name", "Acme", "--plan", "pro"],
    ));
    assert!(token.starts_with("sk_"), "{token}");
    let list = stdout(&scanhop(data, &["workspace", "list"]));
    let ws_id = list.split('\t').next().unwrap().to_owned();
    assert!(
        ws_id.starts_with("ws_") && list.contains("Acme\tpro"),
        "{list}"
    );
    let pk = stdout(&scanhop(
        data,
        &[
            "token",
            "create",
            "--workspace",
            &ws_id,
            "--kind",
            "publishable",
            "--name",
            "web",
        ],
    ));
    assert!(pk.starts_with("pk_"));
    let tokens = stdout(&scanhop(data, &["token", "list", "--workspace", &ws_id]));
    assert_eq!(tokens.lines().count(), 2);
    assert!(
        !tokens.contains(&token) && !tokens.contains(&pk),
        "tokens are never listed"
    );
    let pk_id = tokens
        .lines()
        .find(|l| l.contains("publishable"))
        .unwrap()
        .split('\t')
        .next()
        .unwrap()
        .to_owned();
    assert!(stdout(&scanhop(data, &["token", "revoke", &pk_id])).contains("revoked"));
    assert!(stdout(&scanhop(data, &["token", "list", "--workspace", &ws_id])).contains("revoked"));
    assert!(
        !scanhop(
            data,
            &["workspace", "create", "--name", "X", "--plan", "platinum"]
        )
        .status
        .success()
    );
    assert!(
        !scanhop(data, &["token", "create", "--workspace", "ws_nope"])
            .status
            .success()
    );

    // The server uses the CLI's workspace (no default workspace is made then).
    let server = BinaryServer::start(data, &[]);
    assert!(server.token.is_none(), "the store already had a workspace");
    let c = awc::Client::default();
    let mut r = c
        .get(format!("{}/v1/workspace", server.base))
        .insert_header(("Authorization", format!("Bearer {token}")))
        .send()
        .await
        .unwrap();
    let ws: serde_json::Value = r.json().await.unwrap();
    assert_eq!(ws["name"], "Acme");
    assert_eq!(ws["retention_days"], 365);
    let r = c
        .post(format!("{}/v1/links", server.base))
        .insert_header(("Authorization", format!("Bearer {pk}")))
        .send_json(&json!({"destination": "https://example.com/"}))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "revoked from the CLI");

    // While the server holds the store, CLI commands fail at once, clearly.
    let locked = scanhop(data, &["workspace", "list"]);
    assert!(!locked.status.success());
    let err = String::from_utf8_lossy(&locked.stderr);
    assert!(err.contains("in use by another process"), "{err}");
}

#[test]
fn check_config_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let ok = scanhop(dir.path(), &["check-config"]);
    assert!(stdout(&ok).contains("valid"));
    let bad = Command::new(env!("CARGO_BIN_EXE_scanhop"))
        .arg("check-config")
        .env("SCANHOP__STORAGE__DURABILITY", "eventually")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("storage.durability"));
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "[server]\nbindd = \"x\"\n").unwrap();
    let bad = Command::new(env!("CARGO_BIN_EXE_scanhop"))
        .args(["--config", file.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("server.bindd"));
    // A bad value stops `serve` too, before anything is opened.
    let serve = Command::new(env!("CARGO_BIN_EXE_scanhop"))
        .arg("serve")
        .env("SCANHOP__SERVER__REDIRECT_STATUS", "200")
        .output()
        .unwrap();
    assert!(!serve.status.success());
    assert!(String::from_utf8_lossy(&serve.stderr).contains("server.redirect_status"));
}
