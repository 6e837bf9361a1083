// Package config holds what every stage's configuration shares: the typed
// error that names the field at fault.
//
// Contract: a stage's (*Config).Validate returns nil or an error tree in
// which every problem is a *FieldError whose Field is the Go path of the
// field below the Config ("Window.Lateness", "Kafka.Brokers"). Commands find
// them with Fields (or errors.As for the first) and map each path to the
// flag and IOTPIPE_* variable bound to that field, so the message a user
// reads names the setting, never a Go field.
package config

import (
	"errors"
	"fmt"
	"strings"
)

// FieldError says that the value of one Config field is not acceptable.
type FieldError struct {
	// Field is the Go path of the field below the validated Config,
	// e.g. "Window.Lateness".
	Field string
	// Err says why, without naming the field.
	Err error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason(nil) }

// Reason is why the value is refused. A reason may name another field as
// {Path}; name renders it (a command gives the flag), nil leaves the path.
func (e *FieldError) Reason(name func(field string) string) string {
	msg := e.Err.Error()
	out := make([]byte, 0, len(msg))
	for {
		i := strings.IndexByte(msg, '{')
		j := strings.IndexByte(msg[i+1:], '}')
		if i < 0 || j < 0 {
			break
		}
		field := msg[i+1 : i+1+j]
		if name != nil {
			field = name(field)
		}
		out = append(append(out, msg[:i]...), field...)
		msg = msg[i+2+j:]
	}
	return string(append(out, msg...))
}
func (e *FieldError) Unwrap() error { return e.Err }

// Problems collects the FieldErrors of one Validate call. A reason that
// names another field writes it {Path} (e.g. "must be at least
// {RetryMin}") so that a command can show that field's flag instead.
type Problems struct{ errs []error }

// Add records that field is invalid, for the reason format says.
func (p *Problems) Add(field, format string, args ...any) {
	p.errs = append(p.errs, &FieldError{Field: field, Err: fmt.Errorf(format, args...)})
}

// Check records field as invalid with the reason why when bad holds.
func (p *Problems) Check(bad bool, field, why string) {
	if bad {
		p.errs = append(p.errs, &FieldError{Field: field, Err: errors.New(why)})
	}
}

// Nested records the problems err reports about a nested config (the
// result of its Validate) under prefix: a FieldError "Brokers" of the
// Kafka config becomes "Kafka.Brokers"; any other error is attributed to
// prefix itself.
func (p *Problems) Nested(prefix string, err error) {
	if err == nil {
		return
	}
	fields := Fields(err)
	if len(fields) == 0 {
		p.errs = append(p.errs, &FieldError{Field: prefix, Err: err})
		return
	}
	for _, fe := range fields {
		p.errs = append(p.errs, &FieldError{Field: prefix + "." + fe.Field, Err: fe.Err})
	}
}

// Err returns the problems joined (errors.Join), or nil when there are
// none.
func (p *Problems) Err() error { return errors.Join(p.errs...) }

// Fields returns every FieldError in err's tree (errors.Join trees and
// %w chains), in order.
func Fields(err error) []*FieldError {
	var out []*FieldError
	var walk func(error)
	walk = func(e error) {
		if e == nil {
			return
		}
		if fe, ok := e.(*FieldError); ok {
			out = append(out, fe)
			return
		}
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, x := range u.Unwrap() {
				walk(x)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	walk(err)
	return out
}
