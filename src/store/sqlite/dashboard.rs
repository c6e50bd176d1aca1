//! What the dashboard reads from the embedded store beside the metrics: features known,
//! an account's latest events and its records.
