package shadow

// Requests from the device: shadow/update (a report) and shadow/get,
// applied inside the caller's transaction (the shadow consumer's, which
// also stores its Kafka offsets there) and answered through the outbox.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Code is the reason code of a rejected report.
type Code string

// Reason codes on devices/<id>/shadow/update/rejected.
const (
	CodeStaleVersion Code = "stale_version"
	CodeMalformed    Code = "malformed"
	CodeTooLarge     Code = "too_large"
	CodeNoDevice     Code = "unknown_device"
)

// Outcome says what a device request did.
type Outcome struct {
	Accepted bool
	Code     Code // when rejected
	Err      error
	Version  int64 // the shadow's version after the request
	Changed  bool  // reported changed (the version rose)
}

// report is the payload of devices/<id>/shadow/update.
type report struct {
	State struct {
		Reported json.RawMessage `json:"reported"`
		Desired  json.RawMessage `json:"desired"`
	} `json:"state"`
	// Version, when present, must be the shadow's current version.
	Version     *int64 `json:"version"`
	ClientToken string `json:"client_token"`
}

// ApplyReport applies a device's shadow/update payload to its shadow in
// tx and writes the answer (accepted or rejected) and any delta change to
// the outbox. A rejected report changes nothing but the answer; the
// returned error is only for database failures (tx must then be rolled
// back).
func (s *Store) ApplyReport(ctx context.Context, tx pgx.Tx, id string, payload []byte) (Outcome, error) {
	now := s.now()
	var rep report
	reject := func(code Code, err error, version int64) (Outcome, error) {
		b, _ := json.Marshal(map[string]any{"code": code, "message": err.Error(), "version": version,
			"timestamp": now.Unix(), "client_token": rep.ClientToken})
		o := Outcome{Code: code, Err: err, Version: version}
		return o, s.enqueue(ctx, tx, Message{DeviceID: id, Topic: RejectedTopic(id), Payload: b, Version: version})
	}
	if s.limits.MaxBytes > 0 && len(payload) > 2*s.limits.MaxBytes {
		return reject(CodeTooLarge, &LimitError{Limit: "size", Max: 2 * s.limits.MaxBytes, Got: len(payload), What: "report"}, -1)
	}
	if _, err := DecodeObject(payload, Limits{}, "report"); err != nil {
		return reject(CodeMalformed, err, -1)
	}
	if err := json.Unmarshal(payload, &rep); err != nil {
		return reject(CodeMalformed, fmt.Errorf("report: %w: %v", ErrMalformed, err), -1)
	}
	if len(rep.State.Desired) > 0 {
		return reject(CodeMalformed, fmt.Errorf("report: %w: a device may not write state.desired", ErrMalformed), -1)
	}
	if len(rep.State.Reported) == 0 {
		return reject(CodeMalformed, fmt.Errorf("report: %w: no state.reported object", ErrMalformed), -1)
	}
	patch, err := DecodeObject(rep.State.Reported, s.limits, "state.reported")
	if err != nil {
		if errors.Is(err, ErrLimit) {
			return reject(CodeTooLarge, err, -1)
		}
		return reject(CodeMalformed, err, -1)
	}
	sh, err := s.load(ctx, tx, id, true)
	if errors.Is(err, ErrNoDevice) {
		return Outcome{Code: CodeNoDevice, Err: err, Version: -1}, nil // nobody to answer: no such device
	}
	if err != nil {
		return Outcome{}, err
	}
	if rep.Version != nil && *rep.Version != sh.Version {
		return reject(CodeStaleVersion, &ConflictError{Expected: *rep.Version, Current: sh.Version}, sh.Version)
	}
	// Merge into a copy: a report over the limits leaves nothing behind.
	reported, meta := copyObject(sh.State.Reported), copyObject(sh.Metadata.Reported)
	changed := Merge(reported, meta, patch, now.Unix())
	if changed {
		if err := checkDoc(reported, s.limits, "reported"); err != nil {
			return reject(CodeTooLarge, err, sh.Version)
		}
		sh.State.Reported, sh.Metadata.Reported = reported, meta
		sh.Version++
		sh.ReportedAt = &now
		oldDelta := sh.State.Delta
		sh.State.Delta = Delta(sh.State.Desired, sh.State.Reported)
		if err := s.save(ctx, tx, sh, now); err != nil {
			return Outcome{}, err
		}
		if err := s.enqueueChanges(ctx, tx, sh, sh.State.Desired, oldDelta, now); err != nil {
			return Outcome{}, err
		}
	}
	b, _ := json.Marshal(map[string]any{
		"version": sh.Version, "timestamp": now.Unix(), "client_token": rep.ClientToken,
		"state":    map[string]any{"reported": patch},
		"metadata": map[string]any{"reported": reportedMeta(patch, sh.Metadata.Reported)},
	})
	if err := s.enqueue(ctx, tx, Message{DeviceID: id, Topic: AcceptedTopic(id), Payload: b, Version: sh.Version}); err != nil {
		return Outcome{}, err
	}
	return Outcome{Accepted: true, Version: sh.Version, Changed: changed}, nil
}

// reportedMeta is the metadata of the keys a report set.
func reportedMeta(patch, meta Object) Object {
	out := Object{}
	for k, v := range patch {
		if v == nil {
			continue
		}
		if vo, ok := v.(Object); ok {
			if mo, ok := meta[k].(Object); ok {
				out[k] = reportedMeta(vo, mo)
				continue
			}
		}
		if m, ok := meta[k]; ok {
			out[k] = m
		}
	}
	return out
}

// AnswerGet writes the whole shadow to devices/<id>/shadow/get/accepted
// (payload: optional {"client_token": "..."}).
func (s *Store) AnswerGet(ctx context.Context, tx pgx.Tx, id string, payload []byte) (Outcome, error) {
	var req struct {
		ClientToken string `json:"client_token"`
	}
	_ = json.Unmarshal(payload, &req) // an empty or odd payload still gets the shadow
	sh, err := s.load(ctx, tx, id, false)
	if errors.Is(err, ErrNoDevice) {
		return Outcome{Code: CodeNoDevice, Err: err, Version: -1}, nil
	}
	if err != nil {
		return Outcome{}, err
	}
	b, _ := json.Marshal(struct {
		*Shadow
		Timestamp   int64  `json:"timestamp"`
		ClientToken string `json:"client_token,omitempty"`
	}{sh, time.Now().Unix(), req.ClientToken})
	if err := s.enqueue(ctx, tx, Message{DeviceID: id, Topic: GetAcceptedTopic(id), Payload: b, Version: sh.Version}); err != nil {
		return Outcome{}, err
	}
	return Outcome{Accepted: true, Version: sh.Version}, nil
}
