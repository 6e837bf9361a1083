// Package shadow is the device shadow: per device a desired and a reported
// JSON document, the change time of every key (metadata) and a version,
// kept in PostgreSQL (the source of truth), and the MQTT messages that
// tell the device about a change, written to an outbox table in the same
// transaction as the change.
//
// # Contracts
//
//   - Desired changes through JSON merge patches (RFC 7386: an object
//     member merges, null deletes, anything else replaces) or by replacing
//     desired.config whole; reported changes through the device's
//     shadow/update, also a merge patch.
//   - The version rises by one on every change of desired or reported and
//     never otherwise; a write names the version it was based on
//     (If-Match, a report's "version") and is refused with a
//     *ConflictError (errors.Is ErrConflict) when another write came
//     first. Conflicting writers are refused, never merged silently.
//   - The delta is the part of desired that differs from reported:
//     members missing from reported or with another value, recursively
//     through objects; numbers compare by value (1 equals 1.0).
//   - Limits (Limits) are checked on every incoming document and on the
//     result of the change, before anything is written: a *LimitError
//     (errors.Is ErrLimit) names the limit. A document that is not a JSON
//     object is ErrMalformed. Nothing is written when a check fails.
//   - In the transaction of every change: a retained message on
//     devices/<id>/shadow/update/delta holding the current delta whenever
//     it changed (an empty payload, which clears the retained message,
//     when the delta became empty) and a retained message on
//     devices/<id>/config holding desired.config whenever it changed.
//     Every message carries the version. The outbox is published in id
//     order per device, at least once (Relay).
//   - Device reports are answered on devices/<id>/shadow/update/accepted
//     or .../rejected (Code: stale_version, malformed, too_large), and
//     shadow/get on devices/<id>/shadow/get/accepted, also through the
//     outbox.
//
// The tables are created by migration 0009_shadow; a Store connects as a
// member of the registry role and never creates objects.
package shadow
