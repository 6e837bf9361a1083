// Package api is the iotpipe api stage: the device registry, device
// shadows, device configuration and threshold alert rules over a versioned
// REST API (/v1/...), and the relay that publishes the shadow outbox to
// devices over MQTT.
//
// # Contracts
//
//   - Routing is the standard library's; the route table (API.Routes)
//     and openapi.json (OpenAPI 3.1, served at /v1/openapi.json) describe
//     the same routes, roles and responses (checked by a test).
//   - Every error is an RFC 9457 problem details object
//     (application/problem+json) with a machine-readable code.
//   - Authentication: bearer tokens (iotp_<id>_<secret>) of the
//     api_tokens table, stored as SHA-256 of the secret, refused once
//     revoked or expired. Authorisation: each route needs a role
//     (viewer < operator < admin). Requests per token are rate-limited
//     (429 with Retry-After); a token's limiter is dropped once idle for
//     the time its bucket takes to refill, which changes no answer.
//   - Writes to a shadow or a device need If-Match with the ETag (the
//     version) read before: 428 without it, 412 when another write came
//     first (version_conflict, with the current version). Of concurrent
//     writes with the same If-Match exactly one succeeds.
//   - Alert rules (/v1/alert-rules) are validated by package
//     alerting/rules: a rule the alert stage could not evaluate (missing or
//     invalid metric, bad operator, clear threshold on the wrong side of
//     the trigger, bad recipient or duration) is 422 invalid_rule with
//     every field at fault in "errors". Changes need If-Match as above;
//     each commits a NOTIFY iotpipe_alert_rules (table trigger), so a
//     running alert stage reloads its rules.
//   - Documents over a limit (size, depth, keys) are 413 too_large and
//     change nothing; a body that is not a JSON object is 400 malformed.
//   - List endpoints are ordered by id and paged with limit/after (the
//     page's next cursor): a page never skips or repeats an item that
//     existed throughout the walk.
//   - Every shadow change commits its MQTT messages to the outbox in the
//     same transaction; the Relay publishes them at QoS 1, in order per
//     device, at least once, also after a crash between commit and
//     publish (see Relay).
//   - Run serves HTTPS with the configured certificate (plain HTTP only
//     with Insecure); on cancel it stops taking requests, lets those in
//     flight finish within ShutdownTimeout, stops the relay and returns
//     nil.
package api
