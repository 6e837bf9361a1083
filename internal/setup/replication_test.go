package setup

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckReplication(t *testing.T) {
	for _, tc := range []struct {
		name           string
		rf, misr, live int
		unsafe         bool
		warn           string // substring of the warning; "" for none
	}{
		{"recommended", 3, 2, 3, false, ""},
		{"recommended, more brokers", 3, 2, 5, false, ""},
		{"single broker", 1, 1, 1, false, ""},
		{"misr above rf", 2, 3, 3, true, ""},
		{"rf above live brokers", 3, 2, 2, true, ""},
		{"rf above live brokers, single", 3, 2, 1, true, ""},
		{"misr equals rf", 3, 3, 3, true, ""},
		{"misr equals rf 2", 2, 2, 3, true, ""},
		{"rf 1 on a cluster", 1, 1, 3, false, "replication factor 1 on 3 brokers"},
		{"misr 1 with replicas", 3, 1, 3, false, "min.insync.replicas 1"},
		{"rf 2 misr 1", 2, 1, 2, false, "min.insync.replicas 1"},
		{"live unknown", 5, 3, -1, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			warn, err := checkReplication(tc.rf, tc.misr, tc.live, "")
			if tc.unsafe {
				if !errors.Is(err, ErrUnsafeReplication) {
					t.Fatalf("err = %v, want ErrUnsafeReplication", err)
				}
				msg := err.Error()
				for _, want := range []string{"--replication-factor", "IOTPIPE_REPLICATION_FACTOR", "--min-insync-replicas", "IOTPIPE_MIN_INSYNC_REPLICAS"} {
					if !strings.Contains(msg, want) {
						t.Errorf("message %q does not name %s", msg, want)
					}
				}
				if strings.Contains(msg, "\n") {
					t.Errorf("message is not one line: %q", msg)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if tc.warn == "" && warn != "" || !strings.Contains(warn, tc.warn) {
				t.Fatalf("warning %q, want one containing %q", warn, tc.warn)
			}
		})
	}
}

func TestValidateReplication(t *testing.T) {
	for _, tc := range []struct {
		rf, misr int
		ok       bool
	}{
		{-1, -1, true}, {3, -1, true}, {-1, 2, true}, {3, 2, true}, {1, 1, true},
		{0, -1, false}, {-2, -1, false}, {3, 0, false}, {40000, -1, false},
		{2, 3, false}, {3, 3, false},
	} {
		err := ValidateReplication(tc.rf, tc.misr)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateReplication(%d, %d) = %v, want ok=%v", tc.rf, tc.misr, err, tc.ok)
		}
	}
}
