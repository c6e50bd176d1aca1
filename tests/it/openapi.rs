//! schemathesis (PyPI) drives every operation of the served OpenAPI document with generated
//! requests: no 5xx, and every response matches the documented status, type and schema.

use std::process::Command;

use super::support::*;

#[test]
fn schemathesis_finds_no_server_error_and_no_response_off_schema() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let token = create_token(dir.path(), "admin");
    let report = dir.path().join("schemathesis.txt");
    let status = Command::new("schemathesis")
        .args(["run", &server.url("/api/v1/openapi.json")])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"])
        .args(["--phases", "examples,coverage,fuzzing", "--max-examples", "5", "--workers", "1", "--max-time", "100"])
        .args(["--seed", "20261124"])
        .env("NO_COLOR", "1")
        .stdout(std::fs::File::create(&report).unwrap())
        .stderr(std::process::Stdio::inherit())
        .status()
        .expect("run schemathesis (installed by the README's test command)");
    if !status.success() {
        // Print the failures without the (very long) generated request lines.
        let text = std::fs::read_to_string(&report).unwrap_or_default();
        let short: Vec<String> = text
            .lines()
            .filter(|l| !l.contains("curl "))
            .map(|l| l.chars().take(300).collect())
            .collect();
        panic!(
            "schemathesis failed:\n{}",
            short[short.len().saturating_sub(120)..].join("\n")
        );
    }
}
