//! `/js/activity.js` in headless Chromium (Debian's, driven by playwright-core): pings only
//! while visible and recently active, at most once a minute, stored as track events.

use serde_json::json;

use super::support::*;

#[test]
fn activity_script_pings_at_most_once_a_minute_only_while_active_and_visible() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let token = create_token(dir.path(), "read");
    let script = get(&server, "/js/activity.js", None);
    assert_eq!(script.status, 200);
    assert_eq!(
        script.content_type.as_deref(),
        Some("application/javascript; charset=utf-8")
    );

    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("activity-browser.png");
    let report = browser_report(
        "activity_browser.mjs",
        &[
            "--base",
            &server.base,
            "--write-key",
            KEY,
            "--user",
            "browser-u1",
            "--screenshot",
            screenshot.to_str().unwrap(),
        ],
    );
    assert_eq!(report["pings"], json!(4));
    // Every ping the page sent was stored for the configured user.
    let mut stored = Vec::new();
    for _ in 0..500 {
        stored = stored_events(&server, &token)
            .into_iter()
            .filter(|e| e["event"] == json!("Active Ping"))
            .collect();
        if stored.len() >= 4 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(stored.len(), 4);
    assert!(stored.iter().all(|e| e["user_id"] == json!("browser-u1")));
}

use std::path::Path;
