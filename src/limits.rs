//! Every hard limit of bellwether as a named constant, units last.
//!
//! Each bound here has a test at the limit (accepted) and one past it (rejected).

/// Largest single Segment call (`/v1/track` ...), and largest item inside a batch,
/// after gzip decompression. Segment documents "32 KB per call".
pub const CALL_BYTES_MAX: usize = 32 * 1024;

/// Largest `/v1/batch` or `/v1/import` request body after decompression.
/// Segment documents "500 KB per batch request".
pub const BATCH_BYTES_MAX: usize = 500 * 1024;

/// Most messages in one batch request. 500 KB of minimal messages is far more than any
/// Segment library sends (they flush at 100 to 500), so this bounds work per request.
pub const BATCH_MESSAGES_MAX: usize = 2_500;

/// Longest `userId`, `anonymousId`, `groupId`, `previousId` or `messageId`, in bytes.
pub const ID_BYTES_MAX: usize = 256;

/// Longest `event` (track) or `name` (page, screen) in bytes.
pub const EVENT_NAME_BYTES_MAX: usize = 256;

/// Default bound of the ingest queue: bytes of accepted request bodies waiting for the
/// writer. Past it `/v1` answers 503 so clients back off and retry.
pub const QUEUE_BYTES_MAX_DEFAULT: u64 = 64 * 1024 * 1024;

/// Most messages the writer puts in one transaction (one fsync).
pub const COMMIT_MESSAGES_MAX: usize = 20_000;

/// Longest dedup window a config may ask for.
pub const DEDUP_WINDOW_DAYS_MAX: u32 = 365;

/// Rows one `events` listing returns at most (API and CLI).
pub const EVENTS_LIST_ROWS_MAX: usize = 10_000;

/// Largest config file read at start.
pub const CONFIG_BYTES_MAX: u64 = 1024 * 1024;

/// Most write keys a config may define.
pub const WRITE_KEYS_MAX: usize = 1_000;

/// Longest write key and longest source name, in bytes.
pub const WRITE_KEY_BYTES_MAX: usize = 256;
pub const SOURCE_NAME_BYTES_MAX: usize = 64;

/// Longest free-text record field (a comment, a title), in bytes.
pub const RECORD_TEXT_BYTES_MAX: usize = 10_000;

/// Most row errors one import report lists (the count of all errors is always given).
pub const IMPORT_ERRORS_MAX: usize = 100;

/// Most rows one import file may hold.
pub const IMPORT_ROWS_MAX: usize = 5_000_000;

/// Largest import body over HTTP (`POST /api/v1/import/<kind>`). Larger files: the CLI.
pub const IMPORT_BODY_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Largest JSON body of one record over the REST API.
pub const RECORD_BODY_BYTES_MAX: usize = 64 * 1024;

/// Most records one API list page returns.
pub const API_PAGE_ROWS_MAX: usize = 1_000;

/// How much of a body past its limit is still read (and dropped) before answering 413, so
/// the client, still sending, reads the 413 instead of a reset connection.
pub const OVERSIZE_DRAIN_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Deepest nesting of objects and arrays in one message. SQLite's JSON functions stop at
/// 1000 and serde_json's Value at 128; real Segment payloads are a few levels deep.
pub const JSON_DEPTH_MAX: usize = 32;

/// Ids followed from an id to the person it stands for (a cycle of alias calls ends here).
pub const LINK_HOPS_MAX: usize = 16;
/// Ids gathered as standing for one person (their group calls and events count for it).
pub const IDENTITY_IDS_MAX: usize = 1_000;
