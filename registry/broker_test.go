package registry

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iotpipe/iotpipe/internal/certs"
)

// The deny section is rewritten, everything before the marker is kept,
// the file mode is kept, and an id that could bend the file is refused.
func TestWriteACLDenies(t *testing.T) {
	path := filepath.Join(t.TempDir(), "acl")
	head := "user iotpipe-bridge\ntopic read devices/#\n\npattern write devices/%u/#\n"
	if err := os.WriteFile(path, []byte(head), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteACLDenies(path, []string{"a", "b"}); err != nil {
		t.Fatal(err)
	}
	if err := WriteACLDenies(path, []string{"b"}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	want := strings.TrimRight(head, "\n") + "\n\n" + ACLMarker + "\nuser b\ntopic deny #\n"
	if string(got) != want {
		t.Fatalf("ACL file:\n%s\nwant:\n%s", got, want)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode().Perm())
	}
	if err := WriteACLDenies(path, []string{"x\ntopic readwrite #"}); !errors.Is(err, certs.ErrBadID) {
		t.Fatalf("id with a newline: %v", err)
	}
	if err := WriteACLDenies(path, nil); err != nil {
		t.Fatal(err)
	}
	got, _ = os.ReadFile(path)
	if strings.Contains(string(got), "user b") || !strings.HasPrefix(string(got), head[:20]) {
		t.Fatalf("after clearing:\n%s", got)
	}
}

func TestSignalBrokerBadPIDFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pid")
	_ = os.WriteFile(path, []byte("garbage\n"), 0o600)
	if _, err := SignalBroker(path); err == nil || !strings.Contains(err.Error(), "not a process id") {
		t.Fatalf("garbage pid: %v", err)
	}
	if _, err := SignalBroker(filepath.Join(t.TempDir(), "none")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing pid file: %v", err)
	}
}
