package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestProblems(t *testing.T) {
	var kafka Problems
	kafka.Check(true, "Brokers", "no broker")
	var p Problems
	p.Nested("Kafka", kafka.Err())
	p.Nested("S3", errors.New("unreachable"))
	p.Check(false, "Fine", "never")
	p.Add("RetryMax", "must be at least {RetryMin} (%s)", "1s")
	err := fmt.Errorf("stage config: %w", p.Err())

	var got []string
	for _, fe := range Fields(err) {
		got = append(got, fe.Field)
	}
	if strings.Join(got, ",") != "Kafka.Brokers,S3,RetryMax" {
		t.Fatalf("fields %v", got)
	}
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "Kafka.Brokers" {
		t.Fatalf("errors.As: %v", fe)
	}
	last := Fields(err)[2]
	if s := last.Error(); s != "RetryMax: must be at least RetryMin (1s)" {
		t.Errorf("Error() = %q", s)
	}
	if s := last.Reason(func(f string) string { return "--" + strings.ToLower(f) }); s != "must be at least --retrymin (1s)" {
		t.Errorf("Reason = %q", s)
	}
	var none Problems
	if none.Err() != nil {
		t.Error("no problem, but an error")
	}
}
